"""Metrics against independent references: sklearn/scipy, hand-computed cases, pysaliency's formulas."""
import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

from feedbacklab import metrics as M


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ------------------------------------------------------------------ classification

def test_auroc_and_auprc_match_sklearn(rng):
    for _ in range(5):
        y = rng.integers(0, 2, 40)
        s = np.round(rng.normal(size=40) + y, 1)  # rounding creates ties
        assert M.auroc(s, y) == pytest.approx(roc_auc_score(y, s))
        assert M.auprc(s, y) == pytest.approx(average_precision_score(y, s))


def test_auroc_hand_case_with_tie():
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4 -> 1/2, 0.4>0.1) = 3.5/4
    assert M.auroc([0.8, 0.4, 0.4, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)


def test_single_class_is_undefined():
    assert math.isnan(M.auroc([0.1, 0.5, 0.9], [1, 1, 1]))
    assert math.isnan(M.auroc([0.1, 0.5, 0.9], [0, 0, 0]))
    assert math.isnan(M.auprc([0.1, 0.5], [0, 0]))
    assert math.isnan(M.auroc([], []))  # an empty split (a tiny human-labelled set) is undefined too, not an error
    assert M.auprc([0.1, 0.5], [1, 1]) == 1.0


def test_classification_input_errors():
    with pytest.raises(ValueError, match="0/1"):
        M.auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="length"):
        M.auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        M.auprc([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="k must"):
        M.ap_at_k([0.1, 0.2], [0, 1], 0)


def test_torch_tensors_are_accepted():
    s, y = torch.tensor([0.1, 0.9, 0.4]), torch.tensor([0, 1, 1])
    assert M.auroc(s, y) == 1.0


@pytest.mark.parametrize("relevant_ranks, expected", [
    ((2, 3, 4), (1 / 2 + 2 / 3 + 3 / 4) / 3),   # 0.6389: ap5 of CLIP, "airplane", public TIA2 score file
    ((1, 3, 5), (1 + 2 / 3 + 3 / 5) / 3),       # 0.7556: ap5 of CLIP, "book"
    ((3, 4, 5), (1 / 3 + 2 / 4 + 3 / 5) / 3),   # 0.4778: ap5 of BLIP-2, "book"
    ((1, 2, 3, 4, 5), 1.0),
    ((), 0.0),
])
def test_ap_at_k_hand_cases(relevant_ranks, expected):
    n = 8
    scores = np.arange(n, 0, -1, dtype=float)  # item i has rank i + 1
    labels = np.array([int(i + 1 in relevant_ranks) for i in range(n)])
    assert M.ap_at_k(scores, labels, 5) == pytest.approx(expected)


def test_ap_at_k_ties_keep_input_order_and_large_k():
    # all scores tied: the ranking is the input order
    assert M.ap_at_k([1, 1, 1, 1], [0, 1, 0, 1], 4) == pytest.approx((1 / 2 + 2 / 4) / 2)
    # k larger than the number of items: the whole list
    assert M.ap_at_k([3, 2, 1], [1, 0, 1], 25) == pytest.approx((1 + 2 / 3) / 2)


# ------------------------------------------------------------------ correlation

def test_correlations_match_scipy(rng):
    a = rng.normal(size=30)
    b = np.round(a + rng.normal(size=30), 0)
    assert M.spearman(a, b) == pytest.approx(stats.spearmanr(a, b)[0])
    assert M.srcc(a, b) == pytest.approx(stats.spearmanr(a, b)[0])
    assert M.kendall(a, b) == pytest.approx(stats.kendalltau(a, b)[0])
    assert M.plcc(a, b) == pytest.approx(stats.pearsonr(a, b)[0])


def test_correlations_hand_cases_and_degenerate():
    assert M.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert M.kendall([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert M.plcc([0, 1, 2], [1, 3, 5]) == pytest.approx(1.0)
    for fn in (M.spearman, M.kendall, M.plcc, M.srcc):
        assert math.isnan(fn([1, 1, 1], [1, 2, 3]))
        assert math.isnan(fn([1], [2]))
    with pytest.raises(ValueError, match="length"):
        M.spearman([1, 2], [1, 2, 3])


# ------------------------------------------------------------------ rankings

def test_pairwise_accuracy_hand_case():
    human = [3, 2, 1]           # item 0 best
    assert M.pairwise_accuracy([0.9, 0.5, 0.1], human) == 1.0
    assert M.pairwise_accuracy([0.1, 0.5, 0.9], human) == 0.0
    # model ties items 1 and 2: that pair counts 1/2 -> (1 + 1 + 0.5) / 3
    assert M.pairwise_accuracy([0.9, 0.5, 0.5], human) == pytest.approx(2.5 / 3)
    # human ties are skipped: only the pair (0, 1) is ordered
    assert M.pairwise_accuracy([0.1, 0.5, 0.9], [2, 1, 1]) == 0.0
    assert math.isnan(M.pairwise_accuracy([1, 2], [1, 1]))


def test_pairwise_accuracy_equals_auroc_for_binary_preferences(rng):
    y = rng.integers(0, 2, 30)
    s = np.round(rng.normal(size=30) + y, 1)
    assert M.pairwise_accuracy(s, y) == pytest.approx(roc_auc_score(y, s))


def test_pairwise_accuracy_pairs_only_within_groups():
    scores, human = [1, 2, 10, 20], [2, 1, 2, 1]
    # within groups both pairs are wrong; pooled, the cross-group pair (1, 2) is right and (0, 3) wrong
    assert M.pairwise_accuracy(scores, human, groups=["a", "a", "b", "b"]) == 0.0
    assert M.pairwise_accuracy(scores, human) == pytest.approx(1 / 4)


def _brute_force(metric_on_order, scores):
    """Average of a metric over every order that breaks the score ties (the reference for tie handling)."""
    values = []
    for perm in itertools.permutations(range(len(scores))):
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], perm.index(i)))
        values.append(metric_on_order(order))
    return float(np.mean(values))


@pytest.mark.parametrize("scores, human", [
    ([0.9, 0.5, 0.5, 0.1, 0.5], [1, 5, 2, 3, 4]),
    ([1, 1, 1, 1, 1], [1, 2, 3, 4, 5]),
    ([0.3, 0.3, 0.9, 0.1, 0.2], [5, 1, 2, 5, 3]),  # two human-best items
    ([0.2, 0.8, 0.8, 0.8, 0.1], [2, 4, 4, 1, 4]),  # ties on both sides
])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_recall_and_filter_at_k_match_random_tie_breaking(scores, human, k):
    h = np.array(human, dtype=float)
    best = set(np.flatnonzero(h == h.max()))
    human_top = {i for i in range(len(h)) if np.sum(h > h[i]) < k}
    recall = _brute_force(lambda order: float(bool(best & set(order[:k]))), scores)
    filt = _brute_force(lambda order: float(order[0] in human_top), scores)
    assert M.recall_at_k(scores, human, k) == pytest.approx(recall)
    assert M.filter_at_k(scores, human, k) == pytest.approx(filt)


def test_recall_filter_hand_cases_and_groups():
    scores = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3]
    human = [1, 3, 2, 3, 1, 2]   # group a: best is item 1; group b: best is item 3
    groups = ["a", "a", "a", "b", "b", "b"]
    # a: model order 0, 2, 1 -> best (1) at position 3; b: model order 4, 5, 3 -> best (3) at position 3
    assert M.recall_at_k(scores, human, 1, groups) == 0.0
    assert M.recall_at_k(scores, human, 3, groups) == 1.0
    # model top-1: a -> item 0 (human rank 3), b -> item 4 (human rank 3)
    assert M.filter_at_k(scores, human, 2, groups) == 0.0
    assert M.filter_at_k(scores, human, 3, groups) == 1.0
    with pytest.raises(ValueError, match="k must"):
        M.recall_at_k(scores, human, 0)


# ------------------------------------------------------------------ heatmaps

def test_nss_hand_case():
    pred = np.array([[0.0, 0.0], [0.0, 1.0]])
    gt = np.array([[0.0, 0.0], [0.0, 0.7]])
    # mean 1/4, population std sqrt(3)/4 -> (1 - 1/4) / (sqrt(3)/4) = sqrt(3)
    assert M.nss(pred, gt) == pytest.approx(math.sqrt(3))


def test_kld_and_sim_hand_case():
    gt = np.array([[1.0, 1.0], [0.0, 0.0]])
    pred = np.ones((2, 2))
    assert M.kld(pred, gt) == pytest.approx(math.log(2))     # Q = (.5, .5, 0, 0), P = .25
    assert M.sim(pred, gt) == pytest.approx(0.5)
    assert M.kld(gt, gt) == pytest.approx(0.0, abs=1e-12)
    assert M.sim(gt * 3, gt) == pytest.approx(1.0)


def test_cc_hand_case():
    gt = np.array([[0.0, 1.0], [0.5, 0.2]])
    assert M.cc(gt, gt) == pytest.approx(1.0)
    assert M.cc(1 - gt, gt) == pytest.approx(-1.0)
    assert M.cc(2 * gt + 3, gt) == pytest.approx(1.0)


def test_auc_judd_hand_case():
    pred = np.array([[0.1, 0.4], [0.3, 0.2]])
    gt = np.array([[0.0, 1.0], [0.0, 0.5]])
    # thresholds 0.4, 0.2: (fp, tp) = (0, .5), (.5, 1) -> area .375 + .5
    assert M.auc_judd(pred, gt) == pytest.approx(0.875)
    assert M.auc_judd(gt, gt) == pytest.approx(1.0)


def test_heatmap_mse_hand_case_and_empty_gt():
    pred = np.array([[0.5, 0.0], [0.0, 1.0]])
    assert M.heatmap_mse(pred, np.zeros((2, 2))) == pytest.approx((0.25 + 1.0) / 4)
    assert M.heatmap_mse(np.zeros((3, 3)), np.zeros((3, 3))) == 0.0


def test_saliency_degenerate_inputs():
    empty, pred = np.zeros((4, 4)), np.random.default_rng(1).random((4, 4))
    for fn in (M.nss, M.kld, M.sim, M.cc, M.auc_judd):
        assert math.isnan(fn(pred, empty)), fn.__name__
    gt = np.zeros((4, 4))
    gt[1, 2] = 1
    constant = np.full((4, 4), 0.3)
    assert M.nss(constant, gt) == 0.0
    assert M.cc(constant, gt) == 0.0
    assert M.auc_judd(constant, gt) == pytest.approx(0.5)
    # an all-zero prediction is read as uniform
    assert M.kld(np.zeros((4, 4)), gt) == pytest.approx(M.kld(constant, gt))
    assert M.sim(np.zeros((4, 4)), gt) == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="same shape"):
        M.nss(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="non-negative"):
        M.kld(-pred, gt)


def _pysaliency_file(name):
    """A pure-python module of pysaliency, loaded by path: ``import pysaliency`` itself needs pkg_resources."""
    spec = importlib.util.find_spec("pysaliency")
    if spec is None or spec.origin is None:
        pytest.skip("pysaliency (dev-only cross-check) is not installed")
    try:
        pytest.importorskip("numba")
        file_spec = importlib.util.spec_from_file_location(f"_pysaliency_{name}", Path(spec.origin).parent / f"{name}.py")
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
    except (ImportError, OSError) as e:
        pytest.skip(f"pysaliency {name}.py does not load: {e}")
    return module


class _NumpyWithTrapz:
    """numpy with ``trapz`` (removed in numpy 2.4, still called by pysaliency 0.2.22)."""

    trapz = staticmethod(np.trapezoid)

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_saliency_metrics_match_pysaliency():
    ps = _pysaliency_file("metrics")
    roc = _pysaliency_file("numba_utils")
    roc.np = _NumpyWithTrapz()
    rng = np.random.default_rng(3)
    for _ in range(3):
        pred = rng.random((12, 10)) ** 3
        gt = np.zeros((12, 10))
        ys, xs = rng.integers(0, 12, 5), rng.integers(0, 10, 5)
        gt[ys, xs] = 1.0
        gt_smooth = gt + 0.5 * np.roll(gt, 1, axis=0)
        fy, fx = np.nonzero(gt)
        assert M.nss(pred, gt) == pytest.approx(np.mean(ps.NSS(pred, fx, fy)))
        assert M.cc(pred, gt_smooth) == pytest.approx(ps.CC(pred, gt_smooth))
        assert M.sim(pred, gt_smooth) == pytest.approx(ps.SIM(pred, gt_smooth))
        assert M.kld(pred, gt_smooth) == pytest.approx(ps.MIT_KLDiv(pred, gt_smooth))
        auc, _, _ = roc.general_roc_numba(pred[gt > 0], pred[gt == 0], judd=1)
        assert M.auc_judd(pred, gt) == pytest.approx(auc)


# ------------------------------------------------------------------ keywords, hallucination

def test_keyword_prf_matches_sklearn(rng):
    true = rng.integers(0, 2, 50)
    pred = np.where(rng.random(50) < 0.3, 1 - true, true)
    p, r, f, _ = precision_recall_fscore_support(true, pred, average="binary", pos_label=1)
    assert M.keyword_prf(pred, true) == pytest.approx((p, r, f))


def test_keyword_prf_ragged_and_degenerate():
    pred = [[1, 0, 0], [0, 1], [1]]
    true = [[1, 1, 0], [0, 0], [1]]
    # TP 2, FP 1, FN 1
    assert M.keyword_prf(pred, true) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    p, r, f = M.keyword_prf([0, 0, 0], [0, 1, 0])
    assert math.isnan(p) and r == 0.0 and f == 0.0
    p, r, f = M.keyword_prf([0, 0], [0, 0])
    assert math.isnan(p) and math.isnan(r) and math.isnan(f)
    with pytest.raises(ValueError, match="tokens"):
        M.keyword_prf([[1, 0]], [[1, 0, 0]])


def test_hallucination_rates():
    # responses: 0 of 2 mentions wrong, 1 of 3, 2 of 2
    assert M.hallucination_rates([0, 1, 2], [2, 3, 2]) == pytest.approx((2 / 3, 3 / 7))
    with pytest.raises(ValueError):
        M.hallucination_rates([3], [2])


# ------------------------------------------------------------------ per-prompt averaging

def test_per_group_averages_defined_groups():
    scores = [0.1, 0.9, 0.8, 0.2, 0.5, 0.6]
    labels = [0, 1, 0, 1, 1, 1]
    groups = ["p", "p", "q", "q", "r", "r"]
    result = M.per_group(M.auroc, scores, labels, groups)
    assert result.per_group == {"p": 1.0, "q": 0.0, "r": result.per_group["r"]}
    assert math.isnan(result.per_group["r"]) and result.n_undefined == 1
    assert result.mean == pytest.approx(0.5)
    ap = M.per_group(M.ap_at_k, scores, labels, groups, k=1)
    assert ap.per_group == {"p": 1.0, "q": 0.0, "r": 1.0}
    assert math.isnan(M.per_group(M.auroc, [1, 2], [1, 1], ["a", "a"]).mean)
    with pytest.raises(ValueError, match="groups"):
        M.per_group(M.auroc, scores, labels, groups[:-1])


def test_per_group_skips_single_class_groups_for_auroc_and_auprc():
    # p mixed (ranked wrong: AUROC 0, AUPRC 1/2), q all negative, r all positive
    scores = [0.9, 0.1, 0.8, 0.2, 0.5, 0.6]
    labels = [0, 1, 0, 0, 1, 1]
    groups = ["p", "p", "q", "q", "r", "r"]
    # without skipping, AUPRC gives r (all positive) a free 1.0 that enters the mean
    plain = M.per_group(M.auprc, scores, labels, groups)
    assert plain.per_group["r"] == 1.0 and math.isnan(plain.per_group["q"]) and plain.mean == pytest.approx(0.75)
    for metric, p_value in ((M.auroc, 0.0), (M.auprc, 0.5)):
        result = M.per_group(metric, scores, labels, groups, skip_single_class=True)
        assert result.per_group["p"] == pytest.approx(p_value)
        assert math.isnan(result.per_group["q"]) and math.isnan(result.per_group["r"])
        assert result.n_undefined == 2 and result.mean == pytest.approx(p_value)   # no NaN enters the mean
    # the metric is not called on a skipped group
    calls = []
    M.per_group(lambda s, y: calls.append(len(s)) or 0.5, scores, labels, groups, skip_single_class=True)
    assert calls == [2]
    every = M.per_group(M.auroc, [1, 2], [1, 1], ["a", "a"], skip_single_class=True)
    assert math.isnan(every.mean) and every.n_undefined == 1


def test_grouped_metric_of_values():
    g = M.GroupedMetric.of({"a": 0.5, "b": float("nan"), "c": 1.0})
    assert g.mean == 0.75 and g.n_undefined == 1 and list(g.per_group) == ["a", "b", "c"]
    assert math.isnan(M.GroupedMetric.of({}).mean)
