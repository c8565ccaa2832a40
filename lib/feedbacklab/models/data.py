"""World-generated training data shared by the tiny models: specs → rendered images and prompts."""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np
import torch

#: Share of each prompt family in training data (attribute prompts dominate, as in the issue).
FAMILY_MIX: dict[str, float] = {"attribute": 0.6, "composition": 0.2, "spatial": 0.2}


def sample_specs(n: int, seed: int, family_mix: Mapping[str, float] = FAMILY_MIX, split: str = "seen") -> list:
    """``n`` world specs, families drawn with ``family_mix`` weights, from ``split`` ("seen" for training)."""
    from feedbacklab import world

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    unknown = set(family_mix) - set(world.FAMILIES)
    if unknown or not family_mix:
        raise ValueError(f"family_mix keys must be among {world.FAMILIES}, got {sorted(family_mix)}")
    rng = random.Random(seed)
    families, weights = list(family_mix), list(family_mix.values())
    return [world.sample_spec(rng, rng.choices(families, weights)[0], split=split) for _ in range(n)]


def render_specs(specs: Sequence, size: int = 64, seed: int = 0) -> tuple[np.ndarray, list]:
    """Render each spec (render seed ``seed + i``); return uint8 images (N, H, W, 3) and true scenes."""
    from feedbacklab import world

    images, scenes = [], []
    for i, spec in enumerate(specs):
        image, scene = world.render(spec, size=size, seed=seed + i)
        images.append(image)
        scenes.append(scene)
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8), scenes


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, H, W) in [0, 1]."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] → uint8 (N, H, W, 3)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a float tensor of shape (N, 3, H, W), got {tuple(images.shape)}")
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
