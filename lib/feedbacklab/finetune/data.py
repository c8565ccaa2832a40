"""Training pairs the fine-tuning methods share: ShapesWorld's stand-in for pre-training data (D_pre)."""
from __future__ import annotations

import torch


def pretraining_pairs(n: int, seed: int = 0, size: int = 64, split: str = "seen") -> tuple[torch.Tensor, list[str]]:
    """``n`` rendered world images (N, 3, H, W) in [0, 1] with their true prompts, drawn with the base models'
    pre-training family mix (``models.data.FAMILY_MIX``) from ``split``: the generator's "pre-training data"."""
    from feedbacklab import world
    from feedbacklab.models import data as wdata

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    specs = wdata.sample_specs(n, seed=seed, split=split)
    images, _ = wdata.render_specs(specs, size=size, seed=seed)
    return wdata.to_tensor(images), [world.prompt(s) for s in specs]
