"""Prompt-free rewards computed from the image alone: DDPO's JPEG compressibility and a brightness toy reward.

Black et al. (2023) fine-tune for JPEG compressibility (smaller file = higher reward) and incompressibility
before any learned reward, because their truth is known exactly; ddpo-pytorch's ``jpeg_compressibility``
encodes the uint8 image as JPEG at quality 95 and returns minus the size in kB. Brightness (mean pixel value)
is the easiest reward a generator can satisfy, used to check that a fine-tuning method moves at all.
"""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch

from .base import RewardModel, check_score_inputs
from .registry import register


class JpegCompressibility(RewardModel):
    """``r = −(JPEG size in kB)`` at ``quality`` (ddpo-pytorch: 95); ``incompressible=True`` flips the sign."""

    name = "jpeg-compressibility"

    def __init__(self, quality: int = 95, incompressible: bool = False):
        super().__init__()
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
        self.quality, self.sign = int(quality), (1.0 if incompressible else -1.0)
        if incompressible:
            self.name = "jpeg-incompressibility"

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) ∓ kB; not differentiable (the encoder is not)."""
        from PIL import Image

        check_score_inputs(prompts, images)
        arrays = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        sizes = []
        for a in arrays:
            buffer = io.BytesIO()
            Image.fromarray(a).save(buffer, format="JPEG", quality=self.quality)
            sizes.append(buffer.tell() / 1000.0)
        return self.sign * torch.tensor(sizes, dtype=torch.float32)


class Brightness(RewardModel):
    """``r = mean pixel value`` in [0, 1]: a toy reward any generator can raise (differentiable)."""

    name = "brightness"

    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        check_score_inputs(prompts, images)
        return images.float().mean(dim=(1, 2, 3))


@register("jpeg-compressibility")
def _jpeg_compressibility(quality: int = 95) -> RewardModel:
    return JpegCompressibility(quality)


@register("jpeg-incompressibility")
def _jpeg_incompressibility(quality: int = 95) -> RewardModel:
    return JpegCompressibility(quality, incompressible=True)


@register("brightness")
def _brightness() -> RewardModel:
    return Brightness()
