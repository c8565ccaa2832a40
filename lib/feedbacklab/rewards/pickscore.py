"""PickScore v1 (Kirstain et al. 2023, Pick-a-Pic): a CLIP-H fine-tuned on human picks, behind the reward interface.

Score as the official code (github.com/yuvalkirstain/PickScore, the model card's ``calc_probs``):
``logit_scale.exp() * cos(image_embeds, text_embeds)``. The model is ``yuvalkirstain/PickScore_v1`` and the
processor ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` on the hub; offline, pass ``model=<dir>`` (and
``processor=<dir>`` unless the model directory holds one).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .base import RewardModel, check_score_inputs
from .hub import load_model, load_pretrained
from .registry import register

MODEL_ID = "yuvalkirstain/PickScore_v1"
PROCESSOR_ID = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
MAX_TEXT_LENGTH = 77
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def has_processor(name: str) -> bool:
    """Whether ``name`` is a local directory holding a saved processor."""
    return any((Path(name) / f).is_file() for f in PROCESSOR_FILES)


def _features(out: Any) -> torch.Tensor:
    """Projected CLIP features: transformers 5 wraps them in an output's ``pooler_output``, 4 returns the tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class PickScore(RewardModel):
    """``r(y, z) = exp(logit_scale) · cos(E_img(y), E_txt(z))`` with PickScore's CLIP (about 20 for a good match)."""

    name = "PickScore_v1"

    def __init__(self, model: Any, processor: Any):
        super().__init__()
        self.model = model
        self.processor = processor

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) PickScores."""
        prompts = check_score_inputs(prompts, images)
        dev = self.device
        # float pixels already in [0, 1]: the processor resizes, crops and normalises but must not divide by 255
        pixels = self.processor.image_processor(images=list(images.detach().float().clamp(0, 1).cpu()),
                                                do_rescale=False, return_tensors="pt")["pixel_values"]
        text = self.processor.tokenizer(prompts, padding=True, truncation=True, max_length=MAX_TEXT_LENGTH,
                                        return_tensors="pt")
        img = _features(self.model.get_image_features(pixel_values=pixels.to(dev)))
        txt = _features(self.model.get_text_features(input_ids=text["input_ids"].to(dev),
                                                     attention_mask=text["attention_mask"].to(dev)))
        cos = (F.normalize(img.float(), dim=-1) * F.normalize(txt.float(), dim=-1)).sum(-1)
        return self.model.logit_scale.exp().float() * cos


@register("PickScore_v1")
def pickscore_v1(model: str = MODEL_ID, processor: str | None = None, device: str = "auto",
                 local_files_only: bool = False) -> PickScore:
    """PickScore from a hub id or a local ``save_pretrained`` directory of a ``CLIPModel`` (``model``) and its
    ``processor`` (default: the model directory when it holds one, else the hub's CLIP-H processor)."""
    from transformers import AutoProcessor, CLIPModel

    from feedbacklab.device import resolve_device

    hint = "pass model=<directory of a saved CLIPModel> and processor=<directory of its processor>"
    net = load_model(PickScore.name, CLIPModel, str(model), "clip", hint, resolve_device(device), local_files_only)
    processor = str(processor or (model if has_processor(str(model)) else PROCESSOR_ID))
    return PickScore(net, load_pretrained(PickScore.name, AutoProcessor, processor, "processor", hint,
                                          local_files_only))
