"""RichHF's consolidated label of one image: two heatmaps, misaligned keywords and four scores.

``consolidate_rich`` turns several annotators' ``Panel.rich`` records into one ``RichLabel`` per item
(RichHF Sec. 3): points → discs of the effective radius → one map per annotator → the mean over
annotators; keywords by majority vote; scores by the mean, normalised ``(s - 1) / 4``. The RichHF-18K
loader (``feedbacklab.datasets.richhf``) returns the same type, so the same code trains on either.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .consolidate import consolidate_heatmaps, consolidate_keywords, consolidate_scores
from .records import SCORE_ASPECTS, KeywordLabels, LikertScores, PointAnnotation, Record

MAP_KINDS = ("implausible", "misaligned")  # heatmap names, the same as ``POINT_KINDS``


@dataclass
class RichLabel:
    """One item's consolidated rich feedback.

    ``scores`` maps each of ``SCORE_ASPECTS`` to [0, 1], higher is better; ``heatmaps`` maps each of
    ``MAP_KINDS`` to a float32 (H, W) map in [0, 1] at image resolution; ``keywords`` holds one 0/1 per
    token of ``tokens`` (the prompt split on spaces), 1 = misaligned.
    """

    item_id: str
    prompt: str
    scores: dict[str, float]
    heatmaps: dict[str, np.ndarray]
    tokens: tuple[str, ...]
    keywords: tuple[int, ...]
    extra: dict = field(default_factory=dict)  # e.g. the oracle's truth for this item (evaluation only)

    def __post_init__(self) -> None:
        missing = [a for a in SCORE_ASPECTS if a not in self.scores]
        if missing:
            raise ValueError(f"RichLabel {self.item_id!r}: scores lack {missing}; need {SCORE_ASPECTS}")
        for a in SCORE_ASPECTS:
            if not 0.0 <= float(self.scores[a]) <= 1.0:
                raise ValueError(f"RichLabel {self.item_id!r}: score {a}={self.scores[a]!r} is outside [0, 1]")
        if set(self.heatmaps) != set(MAP_KINDS):
            raise ValueError(f"RichLabel {self.item_id!r}: heatmaps must be exactly {MAP_KINDS}, got {sorted(self.heatmaps)}")
        shapes = {np.shape(m) for m in self.heatmaps.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"RichLabel {self.item_id!r}: heatmaps must be 2-D and of one size, got {sorted(shapes)}")
        if len(self.tokens) != len(self.keywords):
            raise ValueError(f"RichLabel {self.item_id!r}: {len(self.tokens)} tokens but {len(self.keywords)} keyword labels")
        self.tokens = tuple(self.tokens)
        self.keywords = tuple(int(k) for k in self.keywords)
        self.heatmaps = {k: np.asarray(m, dtype=np.float32) for k, m in self.heatmaps.items()}


def consolidate_rich(records: Iterable[Record]) -> list[RichLabel]:
    """One ``RichLabel`` per item from ``Panel.rich`` records (scores, both point kinds, keywords).

    Every item needs at least one record of each kind; items come in order of first appearance.
    """
    records = list(records)
    likert = [r for r in records if isinstance(r, LikertScores)]
    points = [r for r in records if isinstance(r, PointAnnotation)]
    keywords = [r for r in records if isinstance(r, KeywordLabels)]
    scores = consolidate_scores(likert)
    maps = {kind: consolidate_heatmaps(points, kind) for kind in MAP_KINDS}
    words = consolidate_keywords(keywords)
    tokens = {r.item_id: r.tokens for r in keywords}
    prompts = {r.item_id: r.prompt for r in likert}
    items = list(dict.fromkeys(r.item_id for r in records))
    out = []
    for item in items:
        lacking = [name for name, d in (("likert", scores), ("implausible points", maps["implausible"]),
                                        ("misaligned points", maps["misaligned"]), ("keywords", words)) if item not in d]
        if lacking:
            raise ValueError(f"item {item!r} has no {', '.join(lacking)} records; consolidate_rich needs Panel.rich output")
        out.append(RichLabel(item, prompts[item], scores[item], {k: maps[k][item] for k in MAP_KINDS},
                             tokens[item], words[item]))
    return out


def stack_labels(labels: Sequence[RichLabel]) -> dict[str, np.ndarray]:
    """Arrays for training: ``scores`` (N, 4) in ``SCORE_ASPECTS`` order and one (N, H, W) map per kind."""
    if not labels:
        raise ValueError("stack_labels needs at least one label")
    out = {"scores": np.array([[lab.scores[a] for a in SCORE_ASPECTS] for lab in labels], dtype=np.float32)}
    for kind in MAP_KINDS:
        out[kind] = np.stack([lab.heatmaps[kind] for lab in labels]).astype(np.float32)
    return out
