"""Evaluation metrics of the five papers, on numpy arrays (torch tensors are converted).

Classification (TIA2): ``auroc``, ``auprc``, ``ap_at_k``. Correlation (TIA2, RichHF): ``spearman``,
``kendall``, ``plcc``, ``srcc``. Rankings (ImageReward): ``pairwise_accuracy``, ``recall_at_k``,
``filter_at_k``. Heatmaps (RichHF; Bylinskii et al. 2018): ``nss``, ``kld``, ``auc_judd``, ``sim``,
``cc``, ``heatmap_mse``. Keywords (RichHF): ``keyword_prf``. Hallucination (RLHF-V):
``hallucination_rates``. ``per_group`` averages any of them per prompt (TIA2).

Undefined cases return ``nan`` rather than raising (documented per function), so per-prompt
averages can skip them; malformed input (wrong shapes, non-binary labels) raises ``ValueError``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

ArrayLike = Any  # numpy array, sequence or torch tensor

# Regulariser of the MIT saliency benchmark (Bylinskii et al. 2018, footnote 3): MATLAB's eps.
KLD_EPS = 2.2204e-16


def _array(x: ArrayLike, dtype=float) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _scores_labels(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s, y = _array(scores).ravel(), _array(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1 (1 = positive / aligned)")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y.astype(int)


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = _array(a).ravel(), _array(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"inputs differ in length: {a.size} vs {b.size}")
    return a, b


# ------------------------------------------------------------------ classification (TIA2)

def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (sklearn ``roc_auc_score``); ties count half. nan if fewer than two classes."""
    s, y = _scores_labels(scores, labels)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def auprc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the precision-recall curve as average precision (sklearn ``average_precision_score``).

    nan when there is no positive; 1.0 when every label is positive.
    """
    s, y = _scores_labels(scores, labels)
    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, s))


def ap_at_k(scores: ArrayLike, labels: ArrayLike, k: int) -> float:
    """Average precision of the top k (TIA2's AP@k): mean of precision@i over the positives ranked i <= k.

    Normalised by the number of positives within the top k, as in the public TIA2 score files;
    0.0 when the top k hold no positive. Ties in scores keep input order (stable sort).
    """
    s, y = _scores_labels(scores, labels)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    top = y[np.argsort(-s, kind="stable")][:k]
    hits = np.flatnonzero(top)
    if hits.size == 0:
        return 0.0
    precision_at_hit = np.arange(1, hits.size + 1) / (hits + 1)
    return float(precision_at_hit.mean())


# ------------------------------------------------------------------ correlation

def _correlation(fn: Callable, a: ArrayLike, b: ArrayLike) -> float:
    a, b = _pair(a, b)
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(a, b)[0])


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman's rank correlation (scipy); nan if either input is constant or shorter than 2."""
    return _correlation(stats.spearmanr, a, b)


def kendall(a: ArrayLike, b: ArrayLike) -> float:
    """Kendall's tau-b (scipy, tie-corrected); nan if either input is constant or shorter than 2."""
    return _correlation(stats.kendalltau, a, b)


def plcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Pearson linear correlation coefficient (RichHF's PLCC); nan if either input is constant."""
    return _correlation(stats.pearsonr, pred, target)


def srcc(pred: ArrayLike, target: ArrayLike) -> float:
    """Spearman rank correlation coefficient (RichHF's SRCC), the same as ``spearman``."""
    return spearman(pred, target)


# ------------------------------------------------------------------ rankings (ImageReward)

def _group_indices(groups: ArrayLike, n: int) -> dict[Hashable, np.ndarray]:
    """Item indices per group key, in order of first appearance."""
    keys = list(np.asarray(groups, dtype=object).ravel())
    if len(keys) != n:
        raise ValueError(f"groups has {len(keys)} entries for {n} items")
    index: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        index.setdefault(key, []).append(i)
    return {key: np.array(idx) for key, idx in index.items()}


def _groups(n: int, groups: ArrayLike | None) -> list[np.ndarray]:
    return [np.arange(n)] if groups is None else list(_group_indices(groups, n).values())


def pairwise_accuracy(scores: ArrayLike, human: ArrayLike, groups: ArrayLike | None = None) -> float:
    """Share of human-ordered pairs that the scores order the same way (ImageReward's preference accuracy).

    ``human`` is a preference value per item (higher = preferred, e.g. minus the human rank); pairs
    are formed within each group (prompt) when ``groups`` is given. Pairs the human ties are
    skipped; pairs the model ties count 1/2. nan when no pair is left.
    """
    s, h = _pair(scores, human)
    correct = total = 0.0
    for idx in _groups(len(s), groups):
        ds = np.sign(s[idx][:, None] - s[idx][None, :])
        dh = np.sign(h[idx][:, None] - h[idx][None, :])
        upper = np.triu(np.ones_like(dh, dtype=bool), k=1) & (dh != 0)
        correct += np.sum(ds[upper] == dh[upper]) + 0.5 * np.sum(ds[upper] == 0)
        total += upper.sum()
    return float(correct / total) if total else float("nan")


def _hit_in_top_k(scores: np.ndarray, targets: np.ndarray, k: int) -> float:
    """P(some target is in the top k of ``scores``) under a uniformly random order of tied scores."""
    k = min(k, len(scores))
    threshold = np.sort(scores)[::-1][k - 1]
    above, at = scores > threshold, scores == threshold
    if np.any(above & targets):
        return 1.0
    e, q, need = int(at.sum()), int((at & targets).sum()), k - int(above.sum())
    return 1.0 - math.comb(e - q, need) / math.comb(e, need)


def _check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def recall_at_k(scores: ArrayLike, human: ArrayLike, k: int, groups: ArrayLike | None = None) -> float:
    """Best-of-n Recall@k: whether the human-best image is within the model's top k, averaged over groups.

    ``human`` is a preference value (higher = better); several human-best images count as a hit if
    any is in the top k. Model ties at the cut-off count by their probability under a random
    tie-break.
    """
    _check_k(k)
    s, h = _pair(scores, human)
    hits = [_hit_in_top_k(s[idx], h[idx] == h[idx].max(), k) for idx in _groups(len(s), groups)]
    return float(np.mean(hits)) if hits else float("nan")


def filter_at_k(scores: ArrayLike, human: ArrayLike, k: int, groups: ArrayLike | None = None) -> float:
    """Best-of-n Filter@k: whether the model's top-1 image is within the human top k, averaged over groups.

    The human top k are the images with fewer than k strictly better ones (ties at the cut-off
    are in). Several model-best images count by their share inside the human top k.
    """
    _check_k(k)
    s, h = _pair(scores, human)
    hits = []
    for idx in _groups(len(s), groups):
        hs, ss = h[idx], s[idx]
        human_top = np.array([np.sum(hs > v) < k for v in hs])
        best = ss == ss.max()
        hits.append(float(np.mean(human_top[best])))
    return float(np.mean(hits)) if hits else float("nan")


# ------------------------------------------------------------------ heatmaps (RichHF, Bylinskii et al. 2018)

def _maps(pred: ArrayLike, gt: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, g = _array(pred), _array(gt)
    if p.shape != g.shape or p.ndim != 2:
        raise ValueError(f"pred and gt must be 2-D maps of the same shape, got {p.shape} and {g.shape}")
    if np.isnan(p).any() or np.isnan(g).any():
        raise ValueError("heatmaps contain NaN")
    return p, g


def _density(m: np.ndarray, name: str) -> np.ndarray:
    if m.min() < 0:
        raise ValueError(f"{name} must be non-negative to be read as a distribution")
    total = m.sum()
    return m / total if total > 0 else np.full_like(m, 1.0 / m.size)


def heatmap_mse(pred: ArrayLike, gt: ArrayLike) -> float:
    """Mean squared pixel error; defined for empty ground truth (RichHF reports it on all items)."""
    p, g = _maps(pred, gt)
    return float(np.mean((p - g) ** 2))


def nss(pred: ArrayLike, gt: ArrayLike, threshold: float = 0.0) -> float:
    """Normalized Scanpath Saliency: mean of the standardised prediction at fixations (``gt > threshold``).

    Standardised with the population std (ddof=0, as pysaliency). nan when gt has no fixation;
    0.0 when the prediction is constant (no information).
    """
    p, g = _maps(pred, gt)
    fix = g > threshold
    if not fix.any():
        return float("nan")
    std = p.std()
    if std == 0:
        return 0.0
    return float(((p[fix] - p.mean()) / std).mean())


def kld(pred: ArrayLike, gt: ArrayLike, eps: float = KLD_EPS) -> float:
    """KL divergence of the prediction from the ground truth, both normalised to sum 1 (MIT benchmark).

    ``sum_i Q_i log(eps + Q_i / (eps + P_i))`` with Q = gt, P = pred. nan when gt is empty; an
    all-zero prediction is read as uniform.
    """
    p, g = _maps(pred, gt)
    if g.sum() <= 0:
        return float("nan")
    q, p = _density(g, "gt"), _density(p, "pred")
    return float(np.sum(q * np.log(eps + q / (eps + p))))


def sim(pred: ArrayLike, gt: ArrayLike) -> float:
    """Similarity (histogram intersection) of the two maps normalised to sum 1: ``sum_i min(P_i, Q_i)``.

    nan when gt is empty; an all-zero prediction is read as uniform.
    """
    p, g = _maps(pred, gt)
    if g.sum() <= 0:
        return float("nan")
    return float(np.minimum(_density(p, "pred"), _density(g, "gt")).sum())


def cc(pred: ArrayLike, gt: ArrayLike) -> float:
    """Pearson correlation between the two maps. nan when gt is constant; 0.0 when only pred is."""
    p, g = _maps(pred, gt)
    if np.ptp(g) == 0:
        return float("nan")
    if np.ptp(p) == 0:
        return 0.0
    return float(np.corrcoef(p.ravel(), g.ravel())[0, 1])


def auc_judd(pred: ArrayLike, gt: ArrayLike, threshold: float = 0.0) -> float:
    """AUC-Judd: ROC area of the prediction separating fixations (``gt > threshold``) from other pixels.

    Thresholds are the predicted values at fixations; the true-positive rate counts fixations
    with prediction >= threshold, the false-positive rate the other pixels >= threshold; the curve
    runs from (0, 0) to (1, 1) (MIT benchmark, without its random jitter: ties count as above).
    nan when gt has no fixation or every pixel is one.
    """
    p, g = _maps(pred, gt)
    fix = (g > threshold).ravel()
    values = p.ravel()
    n_fix, n_pix = int(fix.sum()), values.size
    if n_fix == 0 or n_fix == n_pix:
        return float("nan")
    thresholds = np.sort(np.unique(values[fix]))[::-1]
    fix_sorted, all_sorted = np.sort(values[fix]), np.sort(values)
    above_fix = n_fix - np.searchsorted(fix_sorted, thresholds, side="left")
    above_all = n_pix - np.searchsorted(all_sorted, thresholds, side="left")
    tp = np.concatenate([[0.0], above_fix / n_fix, [1.0]])
    fp = np.concatenate([[0.0], (above_all - above_fix) / (n_pix - n_fix), [1.0]])
    return float(np.trapezoid(tp, fp))


# ------------------------------------------------------------------ keywords (RichHF)

def _tokens(x: ArrayLike | Sequence[Sequence[int]]) -> np.ndarray:
    """Flatten 0/1 token labels given flat or as per-prompt lists of different lengths."""
    if not hasattr(x, "detach") and not isinstance(x, np.ndarray):
        x = list(x)
        if x and np.ndim(x[0]) > 0:
            return np.concatenate([_array(r, int).ravel() for r in x])
    return _array(x, int).ravel()


def keyword_prf(pred: ArrayLike | Sequence[Sequence[int]], true: ArrayLike | Sequence[Sequence[int]]
                ) -> tuple[float, float, float]:
    """Token-level precision, recall and F1 of the misaligned class (label 1), pooled over all tokens.

    Accepts flat 0/1 arrays or per-prompt lists of different lengths. P is nan without predicted
    positives, R nan without true positives, F1 = 2TP / (2TP + FP + FN) nan only when both are absent.
    """
    p, t = _tokens(pred), _tokens(true)
    if p.shape != t.shape:
        raise ValueError(f"pred and true have different numbers of tokens: {p.size} vs {t.size}")
    if not (np.isin(p, (0, 1)).all() and np.isin(t, (0, 1)).all()):
        raise ValueError("keyword labels must be 0/1 (1 = misaligned)")
    p, t = p.astype(bool), t.astype(bool)
    tp, fp, fn = int(np.sum(p & t)), int(np.sum(p & ~t)), int(np.sum(~p & t))
    nan = float("nan")
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan
    return float(precision), float(recall), float(f1)


# ------------------------------------------------------------------ hallucination (RLHF-V)

def hallucination_rates(hallucinated: ArrayLike, mentioned: ArrayLike) -> tuple[float, float]:
    """Object HalBench rates from per-response counts: (response-level, mention-level).

    Response-level = share of responses with at least one hallucinated object; mention-level =
    hallucinated object mentions / all object mentions (nan without mentions).
    """
    h, m = _array(hallucinated, int).ravel(), _array(mentioned, int).ravel()
    if h.shape != m.shape or h.size == 0:
        raise ValueError("hallucinated and mentioned need one count per response, same length, not empty")
    if (h < 0).any() or (h > m).any():
        raise ValueError("need 0 <= hallucinated <= mentioned for every response")
    mention_level = h.sum() / m.sum() if m.sum() else float("nan")
    return float(np.mean(h > 0)), float(mention_level)


# ------------------------------------------------------------------ per-prompt averaging (TIA2)

@dataclass(frozen=True)
class GroupedMetric:
    """A metric computed per group (prompt) and averaged over the groups where it is defined."""

    mean: float                       # nan-skipping mean over groups; nan if no group is defined
    per_group: dict[Hashable, float]  # value per group, in order of first appearance (nan: left out)
    n_undefined: int                  # groups left out: the metric was nan (e.g. AUROC with one class) or skipped

    @classmethod
    def of(cls, values: dict[Hashable, float]) -> "GroupedMetric":
        """Per-group values (nan = undefined) with their mean over the defined groups."""
        defined = [v for v in values.values() if not math.isnan(v)]
        return cls(float(np.mean(defined)) if defined else float("nan"), dict(values), len(values) - len(defined))


def per_group(metric: Callable[..., float], scores: ArrayLike, labels: ArrayLike, groups: ArrayLike,
              skip_single_class: bool = False, **kwargs: Any) -> GroupedMetric:
    """``metric(scores[g], labels[g], **kwargs)`` for each group g, averaged over groups (TIA2 protocol).

    Groups where the metric is nan are left out of the mean and counted in ``n_undefined``. With
    ``skip_single_class`` a group whose labels are all one class is left out the same way (nan in
    ``per_group``) without calling the metric: AUPRC is 1.0 on an all-positive group whatever the scores.
    """
    s, y = _array(scores).ravel(), _array(labels).ravel()
    if len(s) != len(y):
        raise ValueError(f"scores and labels differ in length: {len(s)} vs {len(y)}")
    index = _group_indices(groups, len(s))
    values = {key: float("nan") if skip_single_class and np.ptp(y[idx]) == 0
              else float(metric(s[idx], y[idx], **kwargs)) for key, idx in index.items()}
    return GroupedMetric.of(values)
