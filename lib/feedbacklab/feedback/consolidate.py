"""Consolidate several annotators' feedback into one label per item (RichHF Sec. 3; TIA2).

- binary and keyword labels: majority vote;
- Likert scores: mean, normalised to [0, 1] by ``(s - 1) / 4``;
- points: one disc of the effective radius per point, one map per annotator (union of its discs),
  then the average over annotators: a float heatmap in [0, 1].
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence, TypeVar

import numpy as np

from .records import SCORE_ASPECTS, BinaryLabel, KeywordLabels, LikertScores, PointAnnotation, Ranking, Record

R = TypeVar("R", bound=Record)


def majority_vote(labels: np.ndarray | Sequence[Sequence[int]], tie: int = 0) -> np.ndarray:
    """Majority of 0/1 labels along the last axis (annotators); an exact tie gives ``tie``."""
    labels = np.asarray(labels)
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("majority_vote takes 0/1 labels")
    if tie not in (0, 1):
        raise ValueError(f"tie must be 0 or 1, got {tie!r}")
    if labels.shape[-1] == 0:
        raise ValueError("majority_vote needs at least one annotator (last axis is empty)")
    ones = labels.sum(axis=-1)
    zeros = labels.shape[-1] - ones
    return np.where(ones > zeros, 1, np.where(ones < zeros, 0, tie)).astype(int)


def normalized_mean(scores: np.ndarray | Sequence[Sequence[float]], low: int = 1, high: int = 5) -> np.ndarray:
    """Mean over annotators (last axis) of Likert scores, mapped to [0, 1]: ``(mean - low) / (high - low)``."""
    scores = np.asarray(scores, dtype=float)
    if scores.size and (scores.min() < low or scores.max() > high):
        raise ValueError(f"scores must lie in [{low}, {high}]")
    return (scores.mean(axis=-1) - low) / (high - low)


def disc_map(points: Iterable[tuple[float, float]], radius: float, height: int, width: int) -> np.ndarray:
    """A float (height, width) map: 1 on pixels whose index (col, row) is within ``radius`` of a point, else 0."""
    rows, cols = np.mgrid[0:height, 0:width]
    out = np.zeros((height, width), dtype=np.float32)
    for x, y in points:
        out[(cols - x) ** 2 + (rows - y) ** 2 <= radius ** 2] = 1.0
    return out


def points_heatmap(annotations: Sequence[PointAnnotation]) -> np.ndarray:
    """RichHF heatmap of one item: each annotator's disc map, averaged over annotators (float HxW in [0, 1])."""
    if not annotations:
        raise ValueError("points_heatmap needs at least one annotation")
    shapes = {(a.height, a.width) for a in annotations}
    if len(shapes) != 1:
        raise ValueError(f"annotations of one item must share the image size, got {sorted(shapes)}")
    (h, w), = shapes
    return np.mean([disc_map(a.points, a.radius, h, w) for a in annotations], axis=0).astype(np.float32)


def group_by_item(records: Iterable[R]) -> dict[str, list[R]]:
    """Records grouped by ``item_id``, in order of first appearance."""
    groups: dict[str, list[R]] = defaultdict(list)
    for r in records:
        groups[r.item_id].append(r)
    return dict(groups)


def consolidate_binary(records: Iterable[BinaryLabel], tie: int = 0) -> dict[str, int]:
    """Majority label per item."""
    return {item: int(majority_vote([r.label for r in rs], tie=tie)) for item, rs in group_by_item(records).items()}


def consolidate_scores(records: Iterable[LikertScores]) -> dict[str, dict[str, float]]:
    """Per item and aspect, the normalised mean score ``(mean - 1) / 4``."""
    return {item: {a: float(normalized_mean([r.score(a) for r in rs])) for a in SCORE_ASPECTS}
            for item, rs in group_by_item(records).items()}


def consolidate_keywords(records: Iterable[KeywordLabels], tie: int = 0) -> dict[str, tuple[int, ...]]:
    """Per item, the per-token majority of misaligned-keyword labels."""
    out = {}
    for item, rs in group_by_item(records).items():
        if len({r.tokens for r in rs}) != 1:
            raise ValueError(f"keyword labels of item {item!r} disagree on the prompt tokens")
        out[item] = tuple(int(v) for v in majority_vote(np.array([r.labels for r in rs]).T, tie=tie))
    return out


def consolidate_heatmaps(records: Iterable[PointAnnotation], region: str) -> dict[str, np.ndarray]:
    """Per item, the averaged heatmap of the point annotations of one ``region`` kind."""
    return {item: points_heatmap(rs)
            for item, rs in group_by_item(r for r in records if r.region == region).items()}


def ranking_pairs(ranking: Ranking) -> list[tuple[str, str]]:
    """Every ordered pair (winner id, loser id) implied by a ranking: k(k-1)/2 pairs (ImageReward's loss data)."""
    ids = ranking.ranked_ids
    return [(ids[i], ids[j]) for i in range(len(ids)) for j in range(i + 1, len(ids))]
