"""The reward interface: ``score(prompts, images) -> (B,)`` tensor, higher = better.

Every reward in ``feedbacklab.rewards`` (CLIP score, Lee et al. 2023's CLIP+MLP, later
ImageReward-style and TextNorm rewards) subclasses :class:`RewardModel`, so notebooks,
best-of-n and fine-tuning code take any of them interchangeably.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Sequence

import torch


def check_score_inputs(prompts: str | Sequence[str], images: torch.Tensor) -> list[str]:
    """Validate ``score`` inputs; return one prompt per image (a single string is broadcast)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a float torch.Tensor (B, 3, H, W) in [0, 1], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}; divide uint8 by 255")
    if isinstance(prompts, str):
        prompts = [prompts] * images.shape[0]
    prompts = list(prompts)
    if not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a string or a sequence of strings")
    if len(prompts) != images.shape[0]:
        raise ValueError(f"got {len(prompts)} prompts for {images.shape[0]} images; pass one prompt per image or one string")
    return prompts


class RewardModel(torch.nn.Module, abc.ABC):
    """A text-image reward ``r(y, z)``; subclasses implement :meth:`score`."""

    name: str = "reward"
    threshold: float | None = None  # decision threshold on the score's scale (None: the scale has none)

    @abc.abstractmethod
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """Score images (B, 3, H, W) float in [0, 1] against their prompts; returns (B,) float."""

    @property
    def device(self) -> torch.device:
        """Device of the model's first parameter or buffer (CPU when it has none)."""
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")

    def as_ddpo_fn(self) -> Callable[[torch.Tensor, Sequence[str], Any], tuple[torch.Tensor, dict]]:
        """ddpo-pytorch style reward function ``_fn(images, prompts, metadata) -> (rewards, info)``."""

        def _fn(images: torch.Tensor, prompts: Sequence[str], metadata: Any = None) -> tuple[torch.Tensor, dict]:
            with torch.no_grad():
                return self.score(prompts, images), {}

        return _fn
