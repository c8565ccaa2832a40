"""RAHF's predicted scores as a reward (Liang et al. 2024): ``load_reward("rahf", path=…, aspect="plausibility")``.

A RAHF model (``feedbacklab.models.rahf``) predicts four scores in [0, 1]; this wrapper exposes one of them
(or their mean) behind the reward interface, so best-of-n, filtering and fine-tuning take it like any reward.
``score`` is differentiable with respect to the images.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from feedbacklab.feedback.records import SCORE_ASPECTS

from .base import RewardModel, check_score_inputs, set_rows
from .registry import register

ASPECTS = (*SCORE_ASPECTS, "mean")


class RAHFReward(RewardModel):
    """One of RAHF's predicted scores (``aspect`` in ``ASPECTS``; "mean" averages the four) as ``r(z, y)`` in [0, 1]."""

    name = "rahf"

    def __init__(self, model: Any, aspect: str = "overall"):
        super().__init__()
        if aspect not in ASPECTS:
            raise ValueError(f"unknown RAHF aspect {aspect!r}; accepted: {ASPECTS}")
        self.model, self.aspect = model, aspect

    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) predicted score of ``aspect``."""
        prompts = check_score_inputs(prompts, images)
        self.model.eval()
        tasks = SCORE_ASPECTS if self.aspect == "mean" else (self.aspect,)
        out = self.model(self.model.features(images.to(self.model.device)), prompts, tasks=tasks)
        scores = out["scores"][:, [list(out["score_aspects"]).index(a) for a in tasks]]
        return scores.mean(1)


    def score_sets(self, prompt_sets: Sequence[Sequence[str]], images: torch.Tensor) -> torch.Tensor:
        """The frozen ViT blocks run once per image; the rest once per (image, prompt) pair."""
        rows, flat = set_rows(prompt_sets, images)
        self.model.eval()
        tasks = SCORE_ASPECTS if self.aspect == "mean" else (self.aspect,)
        features = self.model.features(images.to(self.model.device))
        out = self.model(features[rows.to(features.device)], flat, tasks=tasks)
        return out["scores"][:, [list(out["score_aspects"]).index(a) for a in tasks]].mean(1)


@register("rahf", loader=lambda path, **kw: rahf(path=path, **kw))
def rahf(path: str | Path | None = None, model: Any = None, aspect: str = "overall", device: str = "auto") -> RAHFReward:
    """A RAHF reward from a saved model directory (``RAHF.save``) or a ``RAHF`` instance."""
    from feedbacklab.models.rahf import RAHF

    if (path is None) == (model is None):
        raise ValueError("pass exactly one of path (a directory written by RAHF.save) or model (a RAHF)")
    return RAHFReward(RAHF.load(path, device=device) if path is not None else model, aspect)
