"""Score-filtered fine-tuning (RichHF Sec. 5.1): train the generator on its own best samples.

For each prompt, keep the sample a predictor scores highest when that score clears a threshold
(:func:`select_best_per_prompt`); fine-tune on the kept set with the pre-training term, i.e. the
reward-weighted objective (``reward_weighted_finetune``) with weight 1 on kept images and no others.
:func:`select_random_per_prompt` is the control: one random sample per prompt for as many prompts as the
filter kept, so a gain over it is attributable to the predictions rather than to more training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .reward_weighted import FinetuneResult, RewardWeightedConfig, reward_weighted_finetune


def _groups(prompts: Sequence[str]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return groups


def select_best_per_prompt(scores: Any, prompts: Sequence[str], threshold: float | None = None) -> np.ndarray:
    """Indices of the top-scored sample of each prompt, only where its score is >= ``threshold`` (None: always).

    ``scores`` is (N,) or (N, k) — several predicted scores (e.g. plausibility and overall) must each clear the
    threshold, and the sample is ranked by their mean. Ties keep the first sample."""
    s = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=float)
    s = s[:, None] if s.ndim == 1 else s
    if s.ndim != 2 or len(s) != len(prompts):
        raise ValueError(f"scores must be (N,) or (N, k) with N = {len(prompts)} prompts, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    keep = []
    for members in _groups(prompts).values():
        best = members[int(np.argmax(s[members].mean(axis=1)))]
        if threshold is None or (s[best] >= threshold).all():
            keep.append(best)
    return np.array(sorted(keep), dtype=int)


def select_top_k_per_prompt(scores: Any, prompts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """TextNorm's SFT data (Kim et al. §5): each prompt's ``k`` top-scored samples, and reward-weighted-regression
    weights — the score min–max scaled within the prompt's selection (all 1 when the selection ties)."""
    s = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=float).reshape(-1)
    if len(s) != len(prompts):
        raise ValueError(f"scores must be (N,) with N = {len(prompts)} prompts, got shape {s.shape}")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    idx, weights = [], []
    for members in _groups(prompts).values():
        top = np.asarray(members)[np.argsort(-s[members], kind="stable")[:k]]
        v = s[top]
        idx += top.tolist()
        weights += ((v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else np.ones_like(v)).tolist()
    return np.array(idx, dtype=int), np.array(weights, dtype=np.float32)


def select_random_per_prompt(prompts: Sequence[str], n_keep: int, seed: int = 0) -> np.ndarray:
    """The control selection: ``n_keep`` random prompts, one random sample of each."""
    groups = list(_groups(prompts).values())
    if not 0 <= n_keep <= len(groups):
        raise ValueError(f"n_keep must be in [0, {len(groups)}] (the number of prompts), got {n_keep}")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(groups), size=n_keep, replace=False)
    return np.array(sorted(int(rng.choice(groups[g])) for g in chosen), dtype=int)


def filtered_finetune(pipe: Any, images: torch.Tensor, prompts: Sequence[str], keep: Sequence[int] | np.ndarray,
                      pretrain_images: torch.Tensor | None = None, pretrain_prompts: Sequence[str] | None = None,
                      config: RewardWeightedConfig | None = None, output_dir: str | Path | None = None,
                      progress: bool = True) -> FinetuneResult:
    """Fine-tune ``pipe.unet`` on the samples ``keep`` of ``images`` (N, 3, H, W) in [0, 1] and ``prompts``,
    with ``config.beta`` times the denoising loss on D_pre (``pretrain_images``/``pretrain_prompts``)."""
    keep = np.asarray(keep, dtype=int)
    if keep.size == 0:
        raise ValueError("the filter kept no sample: lower the threshold or sample more images per prompt")
    if keep.min() < 0 or keep.max() >= len(prompts) or len(images) != len(prompts):
        raise ValueError(f"keep must index the {len(prompts)} samples, and images must match prompts ({len(images)})")
    kept = torch.as_tensor(keep)
    return reward_weighted_finetune(pipe, images[kept], [prompts[i] for i in keep], torch.ones(len(keep)),
                                    pretrain_images, pretrain_prompts, config, output_dir, progress)
