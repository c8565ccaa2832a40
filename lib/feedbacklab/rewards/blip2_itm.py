"""BLIP-2's image-text matching (Li et al. 2023) as a reward: TIA2's BLIP-2 baseline.

``mode="itm"``: the ITM head's probability that image and text match (softmax over its two logits, index 1 =
"match"), in [0, 1]. ``mode="itc"``: the contrastive score, the cosine of the text's [CLS] embedding with the
best-matching query embedding of the image, in [-1, 1]. The model is ``Salesforce/blip2-itm-vit-g`` on the hub;
offline, pass ``model=<dir>`` of a saved ``Blip2ForImageTextRetrieval`` (and its processor).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import RewardModel, check_score_inputs
from .hub import load_model, load_pretrained
from .registry import register

MODEL_ID = "Salesforce/blip2-itm-vit-g"
MODES = ("itm", "itc")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a clear error."""
    if mode not in MODES:
        raise ValueError(f"reward 'blip2-itm': unknown mode {mode!r}; accepted: {list(MODES)}")
    return mode


class Blip2ITM(RewardModel):
    """``r(y, z) = P(match | y, z)`` (``itm``) or ``max_q cos(query_q(y), text(z))`` (``itc``) with a BLIP-2 Q-Former."""

    name = "blip2-itm"

    def __init__(self, model: Any, processor: Any, mode: str = "itm"):
        super().__init__()
        self.model = model
        self.processor = processor
        self.mode = check_mode(mode)

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) match probabilities (``itm``) or cosines (``itc``)."""
        prompts = check_score_inputs(prompts, images)
        # float pixels already in [0, 1]: the processor resizes and normalises but must not divide by 255
        inputs = self.processor(images=list(images.detach().float().clamp(0, 1).cpu()), text=prompts,
                                do_rescale=False, padding=True, truncation=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        out = self.model(**inputs, use_image_text_matching_head=self.mode == "itm")
        if self.mode == "itm":
            return out.logits_per_image.float().softmax(dim=-1)[:, 1]  # (B, 2) logits: [no match, match]
        return out.logits_per_image.float().diagonal()  # (B images, B texts) → image i with its own text


@register("blip2-itm")
def blip2_itm(model: str = MODEL_ID, processor: str | None = None, device: str = "auto",
              local_files_only: bool = False, mode: str = "itm") -> Blip2ITM:
    """BLIP-2 ITM/ITC from a hub id or a local ``save_pretrained`` directory (``processor`` defaults to ``model``)."""
    from transformers import AutoProcessor, Blip2ForImageTextRetrieval

    from feedbacklab.device import resolve_device

    check_mode(mode)  # before the (slow) load
    hint = "pass model=<directory of a saved Blip2ForImageTextRetrieval> (and processor=<dir> if it lacks one)"
    net = load_model(Blip2ITM.name, Blip2ForImageTextRetrieval, str(model), "blip-2", hint, resolve_device(device),
                     local_files_only)
    proc = load_pretrained(Blip2ITM.name, AutoProcessor, str(processor or model), "processor", hint, local_files_only)
    return Blip2ITM(net, proc, mode)
