"""An annotation study on ShapesWorld items: every feedback kind from a panel, and its agreement.

Items mix what human raters see in the papers: clean renders, renders with one structural or
photometric corruption, and prompts that are right or differ in one attribute from the image. A
panel of simulated annotators labels each item every way (binary, Likert, points, keywords) and
ranks groups of k images of one prompt; the study reports the agreement statistics of RichHF (maxdiff),
TIA2 / Lee et al. (Fleiss' kappa) and ImageReward (Kendall's W, pairwise agreement).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .. import world
from ..world import corrupt
from .agreement import binary_agreement, ranking_agreement, score_agreement
from .annotators import Panel
from .consolidate import consolidate_heatmaps
from .records import SCORE_ASPECTS, BinaryLabel, KeywordLabels, LikertScores, PointAnnotation, Ranking


@dataclass
class StudyItem:
    """One image shown to the panel, with the prompt it was shown with and the oracle's verdict."""

    item_id: str
    prompt: str
    image: np.ndarray            # uint8 (H, W, 3)
    corruption: str | None
    judgement: world.Judgement


def _corrupted_render(spec: world.Spec, seed: int, size: int, rng: random.Random, p_corrupt: float
                      ) -> tuple[np.ndarray, str | None]:
    """A render of spec; with probability p_corrupt one random corruption (kind and strength uniform)."""
    image, scene = world.render(spec, size=size, seed=seed)
    if rng.random() >= p_corrupt:
        return image, None
    kind = rng.choice(corrupt.KINDS)
    try:
        image, _ = corrupt.apply(kind, image, scene, rng, strength=rng.uniform(0.2, 1.0))
    except corrupt.CorruptionError:  # e.g. no object to remove: keep the clean render
        return image, None
    return image, kind


def study_items(n: int, seed: int = 0, size: int = 64, p_corrupt: float = 0.6,
                p_contrastive: float = 0.4) -> list[StudyItem]:
    """n items, families cycled, each possibly corrupted; with p_contrastive the prompt shown is a
    one-attribute edit of the rendered one (so the image is misaligned with it)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    items = []
    for i in range(n):
        spec = world.sample_spec(rng, world.FAMILIES[i % len(world.FAMILIES)], split="any")
        image, kind = _corrupted_render(spec, seed * 1_000_003 + i, size, rng, p_corrupt)
        shown = world.prompt(spec)
        if rng.random() < p_contrastive:
            shown = rng.choice(world.contrastive_prompts(shown))
        items.append(StudyItem(f"item_{i:05d}", shown, image, kind, world.judge(shown, image)))
    return items


def ranking_groups(n_groups: int, k: int = 4, seed: int = 0, size: int = 64, p_corrupt: float = 0.6,
                   p_contrastive: float = 0.4) -> list[list[StudyItem]]:
    """ImageReward-style groups: k images for one prompt (renders of it or of its one-attribute edits,
    possibly corrupted), to be ranked best to worst."""
    if n_groups < 1 or k < 2:
        raise ValueError(f"need n_groups >= 1 and k >= 2, got {n_groups}, {k}")
    rng = random.Random(seed + 7919)
    groups = []
    for g in range(n_groups):
        spec = world.sample_spec(rng, world.FAMILIES[g % len(world.FAMILIES)], split="any")
        shown = world.prompt(spec)
        group = []
        for i in range(k):
            drawn = world.parse(rng.choice(world.contrastive_prompts(shown))) if rng.random() < p_contrastive else spec
            image, kind = _corrupted_render(drawn, (seed + 1) * 7_000_003 + g * k + i, size, rng, p_corrupt)
            group.append(StudyItem(f"group_{g:04d}_{i}", shown, image, kind, world.judge(shown, image)))
        groups.append(group)
    return groups


@dataclass
class StudyResult:
    items: list[StudyItem]
    binary: list[BinaryLabel]
    likert: list[LikertScores]
    points: list[PointAnnotation]
    keywords: list[KeywordLabels]
    rankings: list[Ranking]
    agreement: dict[str, float]   # flat: fleiss_kappa, maxdiff_perfect_<aspect>, maxdiff_good_<aspect>, kendalls_w, ...
    maxdiff_counts: dict[str, dict[int, int]]   # aspect -> {maxdiff value: items}

    def heatmaps(self, region: str) -> dict[str, np.ndarray]:
        """Consolidated point heatmaps per item for `region` ("implausible" or "misaligned")."""
        return consolidate_heatmaps(self.points, region)


def run_study(items: list[StudyItem], groups: list[list[StudyItem]], panel: Panel) -> StudyResult:
    """Collect every feedback kind from `panel` on `items` (and rankings of each group of `groups`)
    and compute the agreement statistics."""
    binary, likert, points, keywords = [], [], [], []
    for it in items:
        binary += panel.binary(it.judgement, it.item_id)
        likert += panel.likert(it.judgement, it.item_id)
        for region in ("implausible", "misaligned"):
            points += panel.points(it.judgement, region, it.item_id)
        keywords += panel.keywords(it.judgement, it.item_id)
    rankings, per_group = [], []
    for group in groups:
        ranked = panel.rank([it.judgement for it in group], [it.item_id for it in group])
        rankings += ranked
        per_group.append(ranking_agreement(ranked))
    agreement = {"fleiss_kappa": binary_agreement(binary)}
    counts = {}
    for aspect in SCORE_ASPECTS:
        summary = score_agreement(likert, aspect)
        agreement[f"maxdiff_perfect_{aspect}"] = summary.share_perfect
        agreement[f"maxdiff_good_{aspect}"] = summary.share_good
        counts[aspect] = summary.counts
    for key in ("kendalls_w", "pairwise"):  # mean over groups; nan groups (all tied) left out
        agreement[f"ranking_{key}"] = float(np.nanmean([g[key] for g in per_group])) if per_group else float("nan")
    return StudyResult(items, binary, likert, points, keywords, rankings, agreement, counts)
