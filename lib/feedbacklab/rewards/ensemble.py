"""Ensembles of K rewards (Kim et al., ICLR 2024, PAPERS.md §4): the mean, and the uncertainty-regularised
``mean − λ·spread`` that trusts what the models agree on.

Each reward is first rescaled over the scored set (``normalize``): the first author's code min-max
scales, so rewards on different scales (cosines, TextNorm probabilities, unbounded logits) weigh the
same in the mean and the spread measures disagreement, not scale. Scores of cached arrays combine with
:func:`ensemble_scores`; reward models combine into one reward with :class:`RewardEnsemble`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .base import RewardModel, check_score_inputs

NORMALIZE = ("minmax", "zscore", None)
SPREADS = ("std", "var")


def normalize_rewards(scores: torch.Tensor, normalize: str | None = "minmax") -> torch.Tensor:
    """Rescale each row of (K, N) scores over its N items: ``minmax`` to [0, 1], ``zscore`` to mean 0 and
    std 1 (population), None unchanged. A constant row becomes 0 (it carries no ranking)."""
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize {normalize!r}; accepted: {NORMALIZE}")
    if normalize is None:
        return scores
    if normalize == "minmax":
        center = scores.amin(dim=1, keepdim=True)
        scale = scores.amax(dim=1, keepdim=True) - center
    else:
        center, scale = scores.mean(dim=1, keepdim=True), scores.std(dim=1, correction=0, keepdim=True)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # no 0/0, so no nan gradient either
    return torch.where(scale > 0, (scores - center) / safe, torch.zeros_like(scores))


def check_ensemble(lam: float, spread: str, normalize: str | None) -> None:
    """A ValueError naming the accepted values if an ensemble setting is wrong."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam < math.inf:
        raise ValueError(f"lam weighs the spread penalty, a number >= 0 (0: the mean ensemble), got {lam!r}")
    if spread not in SPREADS:
        raise ValueError(f"unknown spread {spread!r}; accepted: {SPREADS}")
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize {normalize!r}; accepted: {NORMALIZE}")


def combine_rewards(scores: torch.Tensor, lam: float = 0.0, spread: str = "std",
                    normalize: str | None = "minmax") -> torch.Tensor:
    """(K, N) scores of K rewards on the same N items → (N,) ``mean_k r̃_k − lam · spread_k r̃_k``.

    ``r̃`` is each reward normalised over the N items; ``spread`` is the ``std`` or ``var`` across the K
    rewards (population, ddof 0). ``lam = 0`` is the mean ensemble, ``lam > 0`` uncertainty-regularised.
    """
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"scores must be (K rewards, N items) with K, N >= 1, got shape {tuple(scores.shape)}")
    check_ensemble(lam, spread, normalize)
    r = normalize_rewards(scores, normalize)
    penalty = r.std(dim=0, correction=0) if spread == "std" else r.var(dim=0, correction=0)
    return r.mean(dim=0) - lam * penalty


def ensemble_scores(scores: Mapping[str, Any] | Sequence[Any], lam: float = 0.0, spread: str = "std",
                    normalize: str | None = "minmax") -> np.ndarray:
    """Combine K score arrays of the same N images (a list, a (K, N) array or ``{reward name: scores}``)
    with :func:`combine_rewards`; returns (N,) float64. Arrays of different lengths raise a ValueError."""
    named = dict(scores) if isinstance(scores, Mapping) else {f"reward {k}": s for k, s in enumerate(scores)}
    if not named:
        raise ValueError("an ensemble needs the scores of at least one reward")
    arrays = {name: np.asarray(s.detach().cpu() if hasattr(s, "detach") else s, dtype=float)
              for name, s in named.items()}
    not_1d = {name: a.shape for name, a in arrays.items() if a.ndim != 1}
    if not_1d:
        raise ValueError(f"each reward's scores must be a 1-D array over the images, got shapes {not_1d}")
    lengths = {name: a.size for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"an ensemble combines rewards scored on the same images; the score arrays differ in "
                         f"length: {lengths}")
    if any(np.isnan(a).any() for a in arrays.values()):
        raise ValueError("scores contain NaN")
    return combine_rewards(torch.as_tensor(np.stack(list(arrays.values()))), lam, spread, normalize).numpy()


class RewardEnsemble(RewardModel):
    """K reward models as one reward: :func:`combine_rewards` of their scores on the same prompts and images.

    Normalisation is over the scored batch, so a score depends on the rest of the batch: score a whole
    evaluation set (or a best-of-n group) in one call.
    """

    name = "ensemble"

    def __init__(self, rewards: Sequence[RewardModel], lam: float = 0.0, spread: str = "std",
                 normalize: str | None = "minmax"):
        super().__init__()
        if not rewards or not all(isinstance(r, RewardModel) for r in rewards):
            raise TypeError("rewards must be a non-empty sequence of RewardModels")
        check_ensemble(lam, spread, normalize)
        self.rewards = torch.nn.ModuleList(rewards)
        self.lam, self.spread, self.normalize = lam, spread, normalize

    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) ensemble scores; differentiable when every member is."""
        prompts = check_score_inputs(prompts, images)
        scores = [r.score(prompts, images) for r in self.rewards]
        shapes = {f"{k}: {r.name}": tuple(s.shape) for k, (r, s) in enumerate(zip(self.rewards, scores))}
        if any(shape != (len(prompts),) for shape in shapes.values()):
            raise ValueError(f"every reward must score the same {len(prompts)} images; returned shapes: {shapes}")
        stacked = torch.stack([s.to(scores[0].device, scores[0].dtype) for s in scores])  # (K, B)
        return combine_rewards(stacked, self.lam, self.spread, self.normalize)
