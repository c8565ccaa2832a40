"""Per-prompt advantage normalisation for DDPO (Black et al. 2023, §5; ddpo-pytorch's ``stat_tracking.py``).

Rewards of different prompts live on different scales ("a red circle" is easier than "three blue stars"), so
each reward is standardised with the mean and std of the *same prompt's* recent rewards: a buffer of the last
``buffer_size`` rewards per prompt; until a prompt has ``min_count`` of them, the whole batch's statistics are
used instead.
"""
from __future__ import annotations

from collections import deque
from typing import Sequence

import numpy as np


class PerPromptStatTracker:
    """Keeps each prompt's recent rewards; :meth:`update` returns the batch's advantages ``(r − μ_p)/(σ_p + 1e-6)``."""

    def __init__(self, buffer_size: int = 16, min_count: int = 16):
        if buffer_size < 1 or min_count < 1:
            raise ValueError(f"buffer_size and min_count must be >= 1, got {buffer_size}, {min_count}")
        if min_count > buffer_size:
            raise ValueError(f"min_count ({min_count}) cannot exceed buffer_size ({buffer_size}): the buffer could never reach it")
        self.buffer_size, self.min_count = buffer_size, min_count
        self.buffers: dict[str, deque] = {}

    def update(self, prompts: Sequence[str], rewards: Sequence[float]) -> np.ndarray:
        """Add this batch's rewards to their prompts' buffers, then normalise each by its prompt's statistics."""
        prompts = list(prompts)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(prompts) != len(rewards):
            raise ValueError(f"got {len(prompts)} prompts for {len(rewards)} rewards; need one prompt per reward")
        advantages = np.empty_like(rewards)
        for prompt in dict.fromkeys(prompts):
            mask = np.array([p == prompt for p in prompts])
            buffer = self.buffers.setdefault(prompt, deque(maxlen=self.buffer_size))
            buffer.extend(rewards[mask].tolist())
            if len(buffer) < self.min_count:
                mean, std = rewards.mean(), rewards.std() + 1e-6
            else:
                mean, std = np.mean(buffer), np.std(buffer) + 1e-6
            advantages[mask] = (rewards[mask] - mean) / std
        return advantages

    def stats(self) -> dict[str, dict[str, float]]:
        """Per prompt: how many rewards are buffered, their mean and std."""
        return {p: {"count": len(b), "mean": float(np.mean(b)), "std": float(np.std(b))} for p, b in self.buffers.items()}


def batch_advantages(rewards: Sequence[float]) -> np.ndarray:
    """Without per-prompt tracking: ``(r − mean)/(std + 1e-8)`` over the whole round (ddpo-pytorch's fallback)."""
    rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
    return (rewards - rewards.mean()) / (rewards.std() + 1e-8)
