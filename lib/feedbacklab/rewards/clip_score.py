"""CLIP score: cosine similarity of CLIP image and text embeddings — the baseline reward."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import RewardModel, check_score_inputs
from .clip_backbone import ClipBackbone
from .registry import register


class ClipScore(RewardModel):
    """``r(y, z) = cos(E_img(y), E_txt(z))`` with a frozen CLIP (Hessel et al.'s CLIPScore without rescaling)."""

    name = "clip-score"

    def __init__(self, backbone: ClipBackbone):
        super().__init__()
        self.backbone = backbone

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) cosine similarities in [-1, 1]."""
        prompts = check_score_inputs(prompts, images)
        return (self.backbone.embed_images(images) * self.backbone.embed_texts(prompts)).sum(-1)


@register("clip-score")
def clip_score(clip: Any = "shapes-clip", device: str = "auto") -> ClipScore:
    """CLIP score with the CLIP named ``clip`` (``"shapes-clip"``, ``"ViT-L-14/openai"``), a LoadedClip or a backbone."""
    return ClipScore(ClipBackbone.resolve(clip, device))
