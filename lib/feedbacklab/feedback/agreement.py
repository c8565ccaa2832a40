"""Agreement between annotators: RichHF's ``maxdiff``, Fleiss' kappa, Kendall's W, pairwise rank agreement."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from .consolidate import group_by_item
from .records import BinaryLabel, LikertScores, Ranking


@dataclass(frozen=True)
class MaxdiffSummary:
    """Histogram of ``maxdiff = max - min`` of the scores per item (RichHF Fig. 3)."""

    counts: dict[int, int]   # maxdiff value (0..4 for Likert 1-5) -> number of items
    n_items: int
    share_perfect: float     # maxdiff == 0
    share_good: float        # maxdiff <= 1


def maxdiff(scores: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Per item (row), max minus min of its annotators' scores (columns)."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be (n_items, n_annotators) with >= 1 annotator, got shape {scores.shape}")
    return scores.max(axis=1) - scores.min(axis=1)


def maxdiff_histogram(scores: np.ndarray | Sequence[Sequence[float]], max_value: int = 4) -> MaxdiffSummary:
    """``maxdiff`` counts for 0..max_value and the shares of perfect (0) and good (<= 1) agreement."""
    d = maxdiff(scores)
    n = len(d)
    counts = {v: int(np.sum(d == v)) for v in range(max_value + 1)}
    share = (lambda mask: float(mask.mean()) if n else float("nan"))
    return MaxdiffSummary(counts, n, share(d == 0), share(d <= 1))


def score_agreement(records: Sequence[LikertScores], aspect: str, n_annotators: int | None = None) -> MaxdiffSummary:
    """``maxdiff_histogram`` of one aspect over items; every item needs the same number of annotators, or give
    ``n_annotators`` to count only the items scored by exactly that many (people's stores are uneven)."""
    groups = group_by_item(records)
    if n_annotators is not None:
        groups = {k: rs for k, rs in groups.items() if len(rs) == n_annotators}
    sizes = {len(rs) for rs in groups.values()}
    if len(sizes) > 1:
        raise ValueError(f"items have different numbers of annotators: {sorted(sizes)}")
    return maxdiff_histogram([[r.score(aspect) for r in rs] for rs in groups.values()])


def fleiss_kappa_counts(table: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from an (n_items, n_categories) table of rater counts (same number of raters per item).

    kappa = (P - Pe) / (1 - Pe); nan when Pe = 1 (every rating in one category).
    """
    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(f"table must be (n_items, n_categories), got shape {table.shape}")
    raters = table.sum(axis=1)
    if not np.all(raters == raters[0]) or raters[0] < 2:
        raise ValueError("every item needs the same number (>= 2) of ratings")
    n = raters[0]
    p_j = table.sum(axis=0) / table.sum()
    p_i = (np.sum(table ** 2, axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_i.mean(), np.sum(p_j ** 2)
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))


def fleiss_kappa(labels: np.ndarray | Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa of an (n_items, n_raters) array of categorical labels."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (n_items, n_raters), got shape {labels.shape}")
    categories, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    table = np.stack([(inverse == c).sum(axis=1) for c in range(len(categories))], axis=1)
    return fleiss_kappa_counts(table)


def binary_agreement(records: Sequence[BinaryLabel]) -> float:
    """Fleiss' kappa of binary labels grouped by item (same number of annotators per item)."""
    groups = group_by_item(records)
    sizes = {len(rs) for rs in groups.values()}
    if len(sizes) > 1:
        raise ValueError(f"items have different numbers of annotators: {sorted(sizes)}")
    return fleiss_kappa([[r.label for r in rs] for rs in groups.values()])


def kendalls_w(ranks: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Kendall's coefficient of concordance W of an (m_raters, n_items) array of scores or ranks.

    Each row is re-ranked (average ranks for ties); W = 12 S / (m^2 (n^3 - n) - m sum T), with
    T = sum(t^3 - t) over tie groups. 1 = identical rankings; nan when every rater ties every item.
    """
    ranks = np.asarray(ranks, dtype=float)
    if ranks.ndim != 2 or ranks.shape[0] < 2 or ranks.shape[1] < 2:
        raise ValueError(f"ranks must be (m_raters >= 2, n_items >= 2), got shape {ranks.shape}")
    m, n = ranks.shape
    r = np.stack([rankdata(row) for row in ranks])
    totals = r.sum(axis=0)
    s = np.sum((totals - totals.mean()) ** 2)
    ties = sum(float(np.sum(c ** 3 - c)) for c in (np.unique(row, return_counts=True)[1] for row in ranks))
    denominator = m ** 2 * (n ** 3 - n) - m * ties
    return float("nan") if denominator == 0 else float(12.0 * s / denominator)


def pairwise_rank_agreement(ranks: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Share of (rater pair, item pair) cases where both raters order the two items the same way.

    Rows are raters, columns items, lower value = better. Item pairs that either rater ties are
    skipped; nan if nothing is left.
    """
    ranks = np.asarray(ranks, dtype=float)
    if ranks.ndim != 2 or ranks.shape[0] < 2:
        raise ValueError(f"ranks must be (m_raters >= 2, n_items), got shape {ranks.shape}")
    iu = np.triu_indices(ranks.shape[1], k=1)
    signs = [np.sign(row[:, None] - row[None, :])[iu] for row in ranks]
    agree = total = 0
    for a, b in combinations(signs, 2):
        valid = (a != 0) & (b != 0)
        agree += int(np.sum(a[valid] == b[valid]))
        total += int(valid.sum())
    return agree / total if total else float("nan")


def ranking_agreement(rankings: Sequence[Ranking]) -> dict[str, float]:
    """Kendall's W and pairwise agreement of several annotators' rankings of the same images."""
    if len(rankings) < 2:
        raise ValueError("ranking_agreement needs at least 2 rankings")
    ids = rankings[0].item_ids
    if any(set(r.item_ids) != set(ids) for r in rankings):
        raise ValueError("rankings must rank the same items")
    ranks = np.array([[dict(zip(r.item_ids, r.ranks))[i] for i in ids] for r in rankings])
    return {"kendalls_w": kendalls_w(ranks), "pairwise": pairwise_rank_agreement(ranks)}
