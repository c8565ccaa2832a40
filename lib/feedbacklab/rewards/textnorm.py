"""TextNorm (Kim et al., ICLR 2024): a reward calibrated by its confidence over contrastive prompts.

``r_TN(z, y) = exp(r(z, y)/τ) / Σ_{z' ∈ {z} ∪ C(z)} exp(r(z', y)/τ)`` (PAPERS.md §4): the softmax,
over the prompt ``z`` and its contrastive prompts ``C(z)``, of any base reward ``r``. A reward that
scores an image high for every prompt is not confident about ``z``; TextNorm gives it about
``1/(|C(z)|+1)``. ``C(z)`` comes from a prompt set (``datasets.prompt_sets``) or, by default, from the
ShapesWorld grammar's one-attribute edits (``world.contrastive_prompts``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch

from .base import RewardModel, check_score_inputs
from .registry import load_reward, register


def check_tau(tau: float) -> float:
    """``tau`` as float if it is a finite number > 0; a ValueError otherwise."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"tau is TextNorm's softmax temperature, a finite number > 0; got {tau!r}")
    return float(tau)


class TextNorm(RewardModel):
    """``r_TN(z, y)`` of a base reward: in (0, 1], 1/(|C(z)|+1) when the base reward cannot tell ``z`` apart."""

    name = "textnorm"

    def __init__(self, base: RewardModel, tau: float, contrastive: Mapping[str, Sequence[str]] | None = None):
        super().__init__()
        from feedbacklab.datasets.prompt_sets import check_prompt_set

        if not isinstance(base, RewardModel):
            raise TypeError(f"base must be a RewardModel (e.g. load_reward('clip-score')), got {type(base).__name__}")
        self.base = base
        self.tau = check_tau(tau)
        self.contrastive = None if contrastive is None else check_prompt_set(contrastive, "contrastive")

    def contrastive_set(self, prompt: str) -> list[str]:
        """``C(z)`` as a set (without ``z`` itself or repeats, per the equation's union), in the given order."""
        if self.contrastive is None:
            from feedbacklab.world.grammar import PromptError, contrastive_prompts

            try:
                found = contrastive_prompts(prompt)
            except PromptError as e:
                raise ValueError(f"no contrastive prompts for {prompt!r}: it is outside the ShapesWorld grammar "
                                 f"({e}); pass contrastive= a prompt set") from None
        elif prompt not in self.contrastive:
            raise ValueError(f"prompt {prompt!r} is not in the contrastive prompt set "
                             f"({len(self.contrastive)} prompts); add it or use the world's edits (contrastive=None)")
        else:
            found = self.contrastive[prompt]
        out = [c for c in dict.fromkeys(found) if c != prompt]
        if not out:
            raise ValueError(f"prompt {prompt!r} has an empty contrastive set; TextNorm needs at least one "
                             f"contrastive prompt")
        return out

    def set_scores(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """The base reward of each image against its prompt (column 0) and its contrastive prompts → (B, M),
        −inf where a set is shorter than the longest; one ``base.score_sets`` call over every (image, prompt′) pair."""
        prompts = check_score_inputs(prompts, images)
        if not prompts:
            return images.new_zeros(0, 1)
        sets = [[p] + self.contrastive_set(p) for p in prompts]  # every set checked before scoring
        sizes = torch.tensor([len(s) for s in sets], device=images.device)
        flat = [q for s in sets for q in s]
        rewards = self.base.score_sets(sets, images)  # (Σ|set|,): each image encoded once where the reward allows
        if rewards.shape != (len(flat),):
            raise ValueError(f"base reward {self.base.name!r} returned shape {tuple(rewards.shape)} "
                             f"for {len(flat)} (image, prompt) pairs")
        sizes = sizes.to(rewards.device)
        mask = torch.arange(int(sizes.max()), device=rewards.device) < sizes[:, None]  # (B, max |set|)
        matrix = torch.full(mask.shape, -math.inf, dtype=rewards.dtype, device=rewards.device)
        return matrix.masked_scatter(mask, rewards)  # row i: z_i first, then C(z_i), -inf padding

    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) ``r_TN``; differentiable in ``images`` when the base reward is."""
        prompts = check_score_inputs(prompts, images)
        if not prompts:
            return images.new_zeros(0)
        return textnorm_from_scores(self.set_scores(prompts, images), self.tau)


def textnorm_from_scores(set_scores: torch.Tensor, tau: float) -> torch.Tensor:
    """``r_TN`` from a (B, M) matrix of base rewards (column 0: the prompt; −inf: padding), at temperature τ.

    Scoring once with :meth:`TextNorm.set_scores` and normalising here lets τ be tuned without re-scoring."""
    tau = check_tau(tau)
    logits = torch.as_tensor(set_scores) / tau
    return torch.exp(logits[:, 0] - torch.logsumexp(logits, dim=1))


def select_tau(set_scores: torch.Tensor, labels: Sequence[int], groups: Sequence, taus: Sequence[float]
               ) -> tuple[float, dict[float, float]]:
    """The τ of ``taus`` with the highest mean per-prompt AUROC of ``r_TN`` against binary ``labels`` (the
    paper tunes τ per reward); returns (best τ, {τ: mean AUROC}). Use labelled images outside the test set."""
    from feedbacklab import metrics

    if not len(taus):
        raise ValueError("taus is empty: give the temperatures to try, e.g. (0.01, 0.03, 0.1, 0.3, 1.0)")
    table = {}
    for tau in taus:
        r = textnorm_from_scores(set_scores, tau).detach().cpu().numpy()
        table[float(tau)] = metrics.per_group(metrics.auroc, r, np.asarray(labels), list(groups), skip_single_class=True).mean
    defined = {t: v for t, v in table.items() if not math.isnan(v)}
    if not defined:
        raise ValueError("no prompt has both aligned and misaligned images: AUROC is undefined, cannot select tau")
    return max(defined, key=defined.get), table


@register("textnorm")
def textnorm(base: str | Path | RewardModel = "clip-score", *, tau: float,
             contrastive: Mapping[str, Sequence[str]] | str | Path | None = None, **base_kwargs) -> TextNorm:
    """TextNorm over ``base`` (a RewardModel, or a name/path for ``load_reward`` with ``base_kwargs``);
    ``contrastive`` is a prompt set, a prompt set file, or None for the world's edits."""
    from feedbacklab.datasets.prompt_sets import load_prompt_set

    if not isinstance(base, RewardModel):
        base = load_reward(base, **base_kwargs)
    elif base_kwargs:
        raise TypeError(f"base is already a RewardModel; unexpected arguments {sorted(base_kwargs)}")
    if isinstance(contrastive, (str, Path)):
        contrastive = load_prompt_set(contrastive)
    return TextNorm(base, tau=tau, contrastive=contrastive)
