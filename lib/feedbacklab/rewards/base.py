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


def set_rows(prompt_sets: Sequence[Sequence[str]], images: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """For :meth:`RewardModel.score_sets`: the image row of each (image, prompt) pair and the flat prompts."""
    prompt_sets = [list(s) for s in prompt_sets]
    if images.ndim != 4 or len(prompt_sets) != images.shape[0]:
        raise ValueError(f"need one prompt set per image: {len(prompt_sets)} sets for images of shape {tuple(images.shape)}")
    flat = [p for s in prompt_sets for p in s]
    if not all(isinstance(p, str) for p in flat):
        raise TypeError("every prompt of every set must be a string")
    rows = torch.repeat_interleave(torch.arange(len(prompt_sets)), torch.tensor([len(s) for s in prompt_sets], dtype=torch.long))
    return rows, flat


class RewardModel(torch.nn.Module, abc.ABC):
    """A text-image reward ``r(y, z)``; subclasses implement :meth:`score`."""

    name: str = "reward"
    threshold: float | None = None  # decision threshold on the score's scale (None: the scale has none)

    @abc.abstractmethod
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """Score images (B, 3, H, W) float in [0, 1] against their prompts; returns (B,) float."""

    def score_sets(self, prompt_sets: Sequence[Sequence[str]], images: torch.Tensor) -> torch.Tensor:
        """Each image scored against every prompt of its set → (Σ |set|,) in order (TextNorm's contrastive sets).

        The default repeats each image once per prompt; rewards whose image encoding does not depend on the
        prompt override it to encode each image once."""
        rows, flat = set_rows(prompt_sets, images)
        return self.score(flat, images[rows.to(images.device)])

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
