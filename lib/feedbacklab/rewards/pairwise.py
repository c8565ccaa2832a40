"""Pairwise preference training data and loss (ImageReward, Xu et al. 2023, Eq. 1).

Every ranking of k images of one prompt expands into its k(k−1)/2 ordered pairs (winner, loser); the loss
over them is ``L = −E[log σ(r(z, y_i) − r(z, y_j))]`` for ``y_i ≻ y_j``. Any list of
:class:`~feedbacklab.feedback.Ranking` records trains a reward — simulated ones, a user's own, or the
annotation app's — so long as each ranked item id has an image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F


def pairwise_loss(r_win: torch.Tensor, r_lose: torch.Tensor) -> torch.Tensor:
    """``mean(−log σ(r_win − r_lose))`` over (P,) scores of preferred and rejected images."""
    if r_win.shape != r_lose.shape or r_win.ndim != 1:
        raise ValueError(f"r_win and r_lose must be 1-D of the same shape, got {tuple(r_win.shape)}, {tuple(r_lose.shape)}")
    if r_win.numel() == 0:
        raise ValueError("pairwise_loss needs at least one pair")
    return -F.logsigmoid(r_win - r_lose).mean()


@dataclass
class PairIndex:
    """Rankings as index tensors: the distinct images (``item_ids``), their prompts, and every ordered pair."""

    item_ids: list[str]
    prompts: list[str]          # one per item
    win: torch.Tensor           # (P,) long indices into item_ids
    lose: torch.Tensor          # (P,) long
    group: torch.Tensor         # (P,) long: which ranking each pair came from

    def __len__(self) -> int:
        return int(self.win.numel())

    @classmethod
    def from_rankings(cls, rankings: Sequence, images: Mapping[str, torch.Tensor] | Sequence[str] | None = None
                      ) -> "PairIndex":
        """Index ``rankings`` (``Ranking`` records); with ``images`` check that every ranked id has an image."""
        from feedbacklab.feedback import Ranking, ranking_pairs

        rankings = list(rankings)
        if not rankings:
            raise ValueError("need at least one Ranking to train on")
        ids: dict[str, int] = {}
        prompts: list[str] = []
        win, lose, group = [], [], []
        for g, ranking in enumerate(rankings):
            if not isinstance(ranking, Ranking):
                raise TypeError(f"rankings[{g}] is a {type(ranking).__name__}, not a feedbacklab.feedback.Ranking")
            if len(ranking.item_ids) < 2:
                raise ValueError(f"rankings[{g}] (prompt {ranking.prompt!r}) ranks {len(ranking.item_ids)} image; "
                                 "a ranking needs at least 2 images")
            for item in ranking.item_ids:
                if item not in ids:
                    ids[item] = len(ids)
                    prompts.append(ranking.prompt)
                elif prompts[ids[item]] != ranking.prompt:
                    raise ValueError(f"image {item!r} is ranked under two prompts: {prompts[ids[item]]!r} and {ranking.prompt!r}")
            for w, lo in ranking_pairs(ranking):
                win.append(ids[w])
                lose.append(ids[lo])
                group.append(g)
        if images is not None:
            missing = [i for i in ids if i not in images]
            if missing:
                raise KeyError(f"{len(missing)} ranked item ids have no image, e.g. {missing[:3]}; "
                               "pass images keyed by every Ranking.item_ids entry")
        as_long = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
        return cls(list(ids), prompts, as_long(win), as_long(lose), as_long(group))


def stack_images(images: Mapping[str, torch.Tensor], item_ids: Sequence[str]) -> torch.Tensor:
    """Images keyed by id → (N, 3, H, W) float in [0, 1], in ``item_ids`` order."""
    out = torch.stack([torch.as_tensor(images[i]) for i in item_ids])
    if out.ndim != 4 or out.shape[1] != 3 or not out.is_floating_point():
        raise ValueError(f"images must be float (3, H, W) tensors in [0, 1]; stacked to {tuple(out.shape)} {out.dtype}")
    return out
