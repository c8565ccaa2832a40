"""The oracle's truth as a reward: the perfect-reward diagnostic (notebook 10's), for any optimiser.

Optimising the truth itself separates a reward's errors from a method's limits: if a fine-tuning method cannot
raise the oracle's own alignment score in a budget, a learned reward will not either. ``aspect`` is one of the
latent qualities of ``feedback.latent_scores`` (alignment: 1 when aligned, else a capped share of right
attributes; plausibility; aesthetics; overall). Not differentiable (the oracle reads the rendered image).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .base import RewardModel, check_score_inputs
from .registry import register

ORACLE_ASPECTS = ("alignment", "plausibility", "aesthetics", "overall")


class OracleReward(RewardModel):
    """``r(z, y)`` = the oracle's latent ``aspect`` of image y for prompt z, in [0, 1]."""

    name = "oracle"

    def __init__(self, aspect: str = "alignment"):
        super().__init__()
        if aspect not in ORACLE_ASPECTS:
            raise ValueError(f"unknown oracle aspect {aspect!r}; accepted: {ORACLE_ASPECTS}")
        self.aspect = aspect

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        from feedbacklab import world
        from feedbacklab.feedback.annotators import latent_scores

        prompts = check_score_inputs(prompts, images)
        arrays = (images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        return torch.tensor([latent_scores(world.judge(p, a))[self.aspect] for p, a in zip(prompts, arrays)],
                            dtype=torch.float32)


@register("oracle")
def _oracle(aspect: str = "alignment") -> RewardModel:
    return OracleReward(aspect)
