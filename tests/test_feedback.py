"""Simulated annotators, records, consolidation and agreement (feedbacklab.feedback)."""
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from scipy import stats

from feedbacklab import feedback as F
from feedbacklab.feedback import NoiseConfig

NOISELESS = NoiseConfig.none()


@dataclass
class FakeJudgement:
    """A hand-built stand-in for ``world.Judgement`` with the fields annotators read."""

    prompt: str = "two red circles on a blue background"
    attributes: dict = field(default_factory=lambda: {"count": True, "color": True, "background": True})
    aligned: bool = True
    misaligned_tokens: list = field(default_factory=list)
    misaligned_points: list = field(default_factory=list)
    artifact_points: list = field(default_factory=list)
    plausibility: float = 1.0
    aesthetics: float = 0.8
    scene: Any = None
    size: int = 64
    tokens: list = None

    def __post_init__(self):
        self.tokens = self.prompt.split(" ")


def wrong_count(**kw):
    """Three circles drawn for 'two red circles ...': count (token 0) wrong, one extra object, one artifact."""
    return FakeJudgement(attributes={"count": False, "color": True, "background": True}, aligned=False,
                         misaligned_tokens=[0], misaligned_points=[(40.0, 20.0)], artifact_points=[(10.0, 50.0)],
                         plausibility=0.6, **kw)


# ------------------------------------------------------------------ noise-free annotators follow the oracle

def test_noiseless_annotator_reports_the_oracle():
    a = F.Annotator(NOISELESS, seed=3)
    good, bad = FakeJudgement(), wrong_count()
    assert a.binary(good).label == 1 and a.binary(bad).label == 0
    s = a.likert(good)
    # alignment 1 -> 5; plausibility 1 -> 5; aesthetics .8 -> 1 + 3.2 -> 4; overall .5 + .3 + .16 = .96 -> 4.84 -> 5
    assert (s.plausibility, s.alignment, s.aesthetics, s.overall) == (5, 5, 4, 5)
    s = a.likert(bad)
    # alignment .75 * 2/3 = .5 -> 3; plausibility .6 -> 3.4 -> 3; overall .25 + .18 + .16 = .59 -> 3.36 -> 3
    assert (s.plausibility, s.alignment, s.aesthetics, s.overall) == (3, 3, 4, 3)
    assert a.keywords(bad).labels == (1, 0, 0, 0, 0, 0, 0)
    assert a.keywords(good).labels == (0,) * 7
    assert a.points(bad, "misaligned").points == ((40.0, 20.0),)
    assert a.points(bad, "implausible").points == ((10.0, 50.0),)
    assert a.points(good, "implausible").points == ()
    assert a.points(bad, "implausible").radius == pytest.approx(0.08 * 64)


def test_latent_scores_formula():
    latent = F.latent_scores(wrong_count())
    assert latent["alignment"] == pytest.approx(F.MISALIGNED_CAP * 2 / 3)
    assert latent["overall"] == pytest.approx(sum(w * latent[k] for k, w in F.OVERALL_WEIGHTS.items()))
    assert F.latent_scores(FakeJudgement())["alignment"] == 1.0


def test_noiseless_ranking_sorts_by_overall_quality_and_keeps_ties_in_order():
    js = [FakeJudgement(plausibility=p) for p in (0.2, 0.9, 0.5)] + [wrong_count(), FakeJudgement(plausibility=0.9)]
    r = F.Annotator(NOISELESS).rank(js, item_ids=["a", "b", "c", "d", "e"])
    assert r.ranked_ids == ("b", "e", "c", "a", "d")
    assert r.ranks == (4, 1, 3, 5, 2)
    with pytest.raises(ValueError, match="one prompt"):
        F.Annotator().rank([FakeJudgement(), FakeJudgement(prompt="one red circle on a blue background")])
    with pytest.raises(ValueError, match="at least 2"):
        F.Annotator().rank([FakeJudgement()])
    twins = F.Annotator().rank([FakeJudgement(), FakeJudgement()])   # identical judgements get distinct ids
    assert len(set(twins.item_ids)) == 2


# ------------------------------------------------------------------ noise, measured

def test_binary_flip_rate():
    a = F.Annotator({"flip_prob": 0.3}, seed=1)
    labels = np.array([a.binary(FakeJudgement(), item_id=f"img{i}").label for i in range(3000)])
    assert abs((1 - labels.mean()) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 3000)


def test_likert_noise_rounding_and_clipping():
    a = F.Annotator({"score_sigma": 0.5, "score_bias_sd": 0.0}, seed=2)
    j = FakeJudgement(aesthetics=0.5)        # latent 0.5 -> mean score 3
    scores = np.array([a.likert(j, item_id=f"img{i}").aesthetics for i in range(3000)])
    p3 = stats.norm.cdf(0.5, scale=0.5) - stats.norm.cdf(-0.5, scale=0.5)   # 0.683
    assert abs(np.mean(scores == 3) - p3) < 0.03
    assert abs(np.mean(scores == 2) - np.mean(scores == 4)) < 0.03
    loud = F.Annotator({"score_sigma": 3.0}, seed=2)
    s = np.array([loud.likert(j, item_id=f"img{i}").aesthetics for i in range(500)])
    assert s.min() == 1 and s.max() == 5


def test_likert_bias_is_a_constant_per_annotator():
    a = F.Annotator({"score_sigma": 0.0, "score_bias_sd": 1.0}, seed=11)
    j = FakeJudgement(aesthetics=0.5)
    expected = int(np.clip(np.rint(3 + a.bias), 1, 5))
    assert {a.likert(j, item_id=f"i{i}").aesthetics for i in range(50)} == {expected}
    biases = [F.Annotator({"score_bias_sd": 1.0}, seed=s).bias for s in range(200)]
    assert abs(np.std(biases) - 1.0) < 0.15


def test_ranking_follows_bradley_terry_and_plackett_luce():
    t = 0.1
    a = F.Annotator({"rank_temperature": t}, seed=5)
    js = [FakeJudgement(plausibility=1.0, aesthetics=1.0), FakeJudgement(plausibility=0.8, aesthetics=1.0),
          FakeJudgement(plausibility=0.6, aesthetics=1.0)]
    u = np.array([F.latent_scores(j)["overall"] for j in js])
    n = 3000
    rankings = [a.rank(js, item_ids=[f"{i}a", f"{i}b", f"{i}c"]) for i in range(n)]
    a_over_b = np.mean([r.ranks[0] < r.ranks[1] for r in rankings])
    assert abs(a_over_b - 1 / (1 + math.exp(-(u[0] - u[1]) / t))) < 0.03
    first = np.bincount([r.order[0] for r in rankings], minlength=3) / n
    softmax = np.exp(u / t) / np.exp(u / t).sum()
    assert np.abs(first - softmax).max() < 0.03


def test_point_noise_miss_false_alarm_and_jitter():
    j = wrong_count()
    missing = F.Annotator({"point_miss": 1.0, "point_false_alarm": 0.0})
    assert missing.points(j, "misaligned").points == ()
    alarms = F.Annotator({"point_miss": 1.0, "point_false_alarm": 2.0}, seed=4)
    counts = [len(alarms.points(j, "implausible", item_id=f"i{i}").points) for i in range(1000)]
    assert abs(np.mean(counts) - 2.0) < 0.15
    jitter = F.Annotator({"point_miss": 0.0, "point_false_alarm": 0.0, "point_jitter": 0.05}, seed=4)
    pts = np.array([jitter.points(j, "misaligned", item_id=f"i{i}").points[0] for i in range(1000)])
    assert np.all((pts >= 0) & (pts <= 63))
    assert abs(pts[:, 0].std() - 0.05 * 64) < 0.3
    assert abs(pts[:, 0].mean() - 40.0) < 0.4 and abs(pts[:, 1].mean() - 20.0) < 0.4
    with pytest.raises(ValueError, match="region"):
        jitter.points(j, "ugly")


def test_keyword_miss_and_false_alarm_rates():
    j = FakeJudgement(aligned=False, misaligned_tokens=[0, 1, 2, 3], attributes={"count": False})
    a = F.Annotator({"keyword_miss": 0.2, "keyword_false_alarm": 0.1}, seed=9)
    labels = np.array([a.keywords(j, item_id=f"i{i}").labels for i in range(1000)])
    assert abs(1 - labels[:, :4].mean() - 0.2) < 0.03
    assert abs(labels[:, 4:].mean() - 0.1) < 0.03


# ------------------------------------------------------------------ determinism, panels

def test_annotators_are_deterministic_and_order_independent():
    items = [(wrong_count() if i % 3 else FakeJudgement(), f"img{i}") for i in range(20)]
    a, b = F.Annotator(seed=7), F.Annotator(seed=7)
    forward = [a.rich(j, k) + [a.binary(j, k)] for j, k in items]
    backward = [b.rich(j, k) + [b.binary(j, k)] for j, k in reversed(items)][::-1]
    assert forward == backward
    noisy = F.Annotator({"flip_prob": 0.5}, seed=7)
    assert len({noisy.binary(FakeJudgement(), item_id=f"x{i}").label for i in range(30)}) == 2


def test_default_item_id_is_a_content_fingerprint():
    a = F.Annotator()
    assert a.binary(FakeJudgement()).item_id == a.binary(FakeJudgement()).item_id
    assert a.binary(FakeJudgement()).item_id != a.binary(wrong_count()).item_id


def test_make_panel_distinct_seeds_and_reproducible():
    panel = F.make_panel(n=3, seed=0)
    assert len(panel) == 3
    assert len({a.seed for a in panel}) == 3 and len({a.id for a in panel}) == 3
    again = F.make_panel(n=3, seed=0)
    items = [(FakeJudgement(), f"i{i}") for i in range(40)]
    assert [panel.binary(j, k) for j, k in items] == [again.binary(j, k) for j, k in items]
    loud = F.make_panel(n=3, noise={"flip_prob": 0.4}, seed=1)
    votes = np.array([[r.label for r in loud.binary(j, k)] for j, k in items])
    assert (votes.min(axis=1) != votes.max(axis=1)).any()  # annotators disagree somewhere
    mixed = F.make_panel(n=2, noise=[NOISELESS, {"flip_prob": 1.0}])
    assert [r.label for r in mixed.binary(FakeJudgement())] == [1, 0]
    with pytest.raises(ValueError, match="2 noise settings for 3"):
        F.make_panel(n=3, noise=[NOISELESS, NOISELESS])
    assert len(panel.rich(FakeJudgement())) == 3 * 4
    assert len(panel.rank([FakeJudgement(), wrong_count()])) == 3


def test_noise_config_validation():
    with pytest.raises(ValueError, match="flip_prob"):
        NoiseConfig(flip_prob=1.5)
    with pytest.raises(ValueError, match="score_sigma"):
        NoiseConfig(score_sigma=-1)
    with pytest.raises(ValueError, match="unknown noise settings"):
        F.as_noise({"flip": 0.1})
    with pytest.raises(TypeError):
        F.as_noise(0.1)


# ------------------------------------------------------------------ records and JSON

def _one_of_each():
    a = F.Annotator(seed=1)
    j = wrong_count()
    return [a.binary(j, "i0"), a.likert(j, "i0"), a.rank([j, FakeJudgement()], ["i0", "i1"]),
            a.points(j, "implausible", "i0"), a.points(j, "misaligned", "i0"), a.keywords(j, "i0"),
            F.make_correction("a", "i0", "two red circles on a blue background",
                              "three red circles on a green background")]


def test_records_round_trip_through_json(tmp_path):
    records = _one_of_each()
    assert {r.kind for r in records} == set(F.RECORD_TYPES)
    assert F.records_from_json(F.records_to_json(records)) == records
    assert F.load_records(F.save_records(records, tmp_path / "r.jsonl")) == records
    assert all(F.records.Record.from_dict(r.to_dict()) == r for r in records)


def test_record_validation():
    with pytest.raises(F.RecordError, match="0 or 1"):
        F.BinaryLabel("a", "i", "p", 2)
    with pytest.raises(F.RecordError, match="1..5"):
        F.LikertScores("a", "i", "p", 6, 1, 1, 1)
    with pytest.raises(F.RecordError, match="permutation"):
        F.Ranking("a", "p", ("x", "y"), (0, 0))
    with pytest.raises(F.RecordError, match="distinct"):
        F.Ranking("a", "p", ("x", "x"), (0, 1))
    with pytest.raises(F.RecordError, match="region"):
        F.PointAnnotation("a", "i", "p", "pretty", (), 3.0, 8, 8)
    with pytest.raises(F.RecordError, match="one label per token"):
        F.KeywordLabels("a", "i", "p", ("x", "y"), (1,))
    with pytest.raises(F.RecordError, match="unknown record kind"):
        F.records_from_json('[{"kind": "vibes"}]')
    with pytest.raises(F.RecordError, match="bad fields"):
        F.records_from_json('[{"kind": "binary", "annotator_id": "a"}]')


# ------------------------------------------------------------------ caption corrections (pure part)

def _check_spans(c):
    a, b = c.original.split(" "), c.corrected.split(" ")
    tokens = list(a)
    for (i1, i2), (j1, j2) in reversed(list(zip(c.original_spans, c.corrected_spans))):
        tokens[i1:i2] = b[j1:j2]
    assert tokens == b  # replacing the changed segments turns the original into the correction
    for (i1, i2), (s, e) in zip(c.original_spans, c.original_char_spans):
        assert c.original[s:e] == " ".join(a[i1:i2])
    for (j1, j2), (s, e) in zip(c.corrected_spans, c.corrected_char_spans):
        assert c.corrected[s:e] == " ".join(b[j1:j2])


def test_make_correction_replacements():
    c = F.make_correction("a", "i", "two red circles on a blue background", "three red circles on a green background")
    assert c.original_spans == ((0, 1), (5, 6)) and c.corrected_spans == ((0, 1), (5, 6))
    assert c.original_char_spans == ((0, 3), (21, 25)) and c.corrected_char_spans == ((0, 5), (23, 28))
    _check_spans(c)
    assert c.changed


def test_make_correction_deletion_and_no_change():
    c = F.make_correction("a", "i", "a red circle and a blue square on a white background",
                          "one red circle on a white background")
    assert c.original_spans == ((0, 1), (3, 7)) and c.corrected_spans == ((0, 1), (3, 3))
    _check_spans(c)
    same = F.make_correction("a", "i", "one red circle on a white background", "one red circle on a white background")
    assert not same.changed and same.original_spans == ()
    assert F.changed_token_count("a b c", "a x c d") == 2


# ------------------------------------------------------------------ consolidation

def test_majority_vote_and_ties():
    assert F.majority_vote([[1, 1, 0], [0, 0, 1], [1, 1, 1]]).tolist() == [1, 0, 1]
    assert F.majority_vote([[1, 0]]).tolist() == [0]
    assert F.majority_vote([[1, 0]], tie=1).tolist() == [1]
    with pytest.raises(ValueError, match="0/1"):
        F.majority_vote([[2, 1, 0]])


def test_normalized_mean():
    assert F.normalized_mean([[1, 1, 1], [5, 5, 5], [2, 3, 4]]).tolist() == [0.0, 1.0, 0.5]
    with pytest.raises(ValueError, match=r"\[1, 5\]"):
        F.normalized_mean([[0, 3, 3]])


def test_disc_map_geometry():
    m = F.disc_map([(2, 2)], 1.0, 5, 5)
    assert m.sum() == 5 and m[2, 2] == 1 and m[1, 2] == 1 and m[2, 1] == 1 and m[1, 1] == 0
    assert F.disc_map([(32, 32)], 10.0, 64, 64).sum() == 317       # Gauss circle problem, N(10) = 317
    assert F.disc_map([(5, 1)], 0.0, 4, 8)[1, 5] == 1               # (x, y) = (column, row)
    assert F.disc_map([], 4.0, 8, 8).sum() == 0


def test_points_heatmap_averages_annotators():
    p1 = F.PointAnnotation("a", "i", "p", "implausible", ((2, 2),), 1.0, 6, 6)
    p2 = F.PointAnnotation("b", "i", "p", "implausible", ((2, 3),), 1.0, 6, 6)
    p3 = F.PointAnnotation("c", "i", "p", "implausible", (), 1.0, 6, 6)
    h = F.points_heatmap([p1, p2, p3])
    assert h.shape == (6, 6) and h.dtype == np.float32
    assert h[2, 2] == pytest.approx(2 / 3) and h[1, 2] == pytest.approx(1 / 3) and h[0, 0] == 0
    assert F.points_heatmap([p3]).sum() == 0
    with pytest.raises(ValueError, match="size"):
        F.points_heatmap([p1, F.PointAnnotation("b", "i", "p", "implausible", (), 1.0, 7, 7)])


def test_consolidate_records_by_item():
    panel = F.make_panel(3, noise=NOISELESS, seed=0)
    good, bad = FakeJudgement(), wrong_count()
    records = panel.rich(good, "g") + panel.rich(bad, "b")
    binary = panel.binary(good, "g") + panel.binary(bad, "b")
    assert F.consolidate_binary(binary) == {"g": 1, "b": 0}
    scores = F.consolidate_scores([r for r in records if r.kind == "likert"])
    assert scores["g"]["alignment"] == 1.0 and scores["b"]["alignment"] == 0.5
    assert F.consolidate_keywords([r for r in records if r.kind == "keywords"])["b"] == (1, 0, 0, 0, 0, 0, 0)
    heat = F.consolidate_heatmaps([r for r in records if r.kind == "points"], "implausible")
    assert heat["g"].sum() == 0 and heat["b"][50, 10] == 1.0 and heat["b"].max() == 1.0
    r = F.Ranking("a", "p", ("x", "y", "z"), (2, 0, 1))
    assert F.ranking_pairs(r) == [("z", "x"), ("z", "y"), ("x", "y")]


# ------------------------------------------------------------------ agreement

def test_maxdiff_histogram_hand_case():
    h = F.maxdiff_histogram([[3, 3, 3], [2, 3, 4], [1, 2, 2], [5, 1, 3]])
    assert h.counts == {0: 1, 1: 1, 2: 1, 3: 0, 4: 1}
    assert (h.n_items, h.share_perfect, h.share_good) == (4, 0.25, 0.5)


def test_score_agreement_of_noiseless_panel_is_perfect():
    panel = F.make_panel(3, noise=NOISELESS)
    records = [r for i in range(5) for r in panel.likert(wrong_count(), f"i{i}")]
    assert F.score_agreement(records, "overall").share_perfect == 1.0


def test_score_agreement_with_uneven_annotators_counts_the_requested_size_only():
    def scores(item, values):
        return [F.LikertScores(f"a{k}", item, "p", v, v, v, v) for k, v in enumerate(values)]

    records = scores("x", [3, 3, 3]) + scores("y", [1, 5]) + scores("z", [2, 3, 4])
    with pytest.raises(ValueError, match="different numbers of annotators"):
        F.score_agreement(records, "overall")
    three = F.score_agreement(records, "overall", n_annotators=3)
    assert (three.n_items, three.counts[0], three.counts[2]) == (2, 1, 1)
    assert F.score_agreement(records, "overall", n_annotators=2).counts[4] == 1


def test_default_score_noise_gives_richhf_like_agreement():
    # RichHF-18K: about 25% of items with perfect (maxdiff 0) and 85% with good (<= 1) agreement
    rng = np.random.default_rng(0)
    items = [FakeJudgement(plausibility=float(rng.random())) for _ in range(1500)]
    panel = F.make_panel(3, seed=0)
    summary = F.score_agreement([r for i, j in enumerate(items) for r in panel.likert(j, f"i{i}")], "plausibility")
    assert 0.18 < summary.share_perfect < 0.32 and 0.78 < summary.share_good < 0.92
    assert sum(summary.counts.values()) == summary.n_items == 1500


WIKIPEDIA_FLEISS = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]


def test_fleiss_kappa_textbook_case():
    # Fleiss (1971) / Wikipedia worked example: 10 subjects, 14 raters, 5 categories -> 0.210
    assert F.fleiss_kappa_counts(WIKIPEDIA_FLEISS) == pytest.approx(0.20993, abs=1e-4)
    labels = [sum(([c] * n for c, n in enumerate(row)), []) for row in WIKIPEDIA_FLEISS]
    assert F.fleiss_kappa(labels) == pytest.approx(F.fleiss_kappa_counts(WIKIPEDIA_FLEISS))
    assert F.fleiss_kappa([[1, 1, 1], [0, 0, 0]]) == pytest.approx(1.0)
    assert math.isnan(F.fleiss_kappa([[1, 1, 1], [1, 1, 1]]))


def test_fleiss_kappa_matches_statsmodels():
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 60)
    labels = np.where(rng.random((60, 3)) < 0.2, 1 - truth[:, None], truth[:, None])
    table, _ = inter_rater.aggregate_raters(labels)
    assert F.fleiss_kappa(labels) == pytest.approx(inter_rater.fleiss_kappa(table, method="fleiss"))
    records = [F.BinaryLabel(f"a{k}", f"i{i}", "p", int(labels[i, k])) for i in range(60) for k in range(3)]
    assert F.binary_agreement(records) == pytest.approx(F.fleiss_kappa(labels))


def test_kendalls_w_hand_case_and_mean_spearman():
    ranks = np.array([[1, 2, 3, 4], [2, 1, 3, 4], [1, 3, 2, 4]])
    # rank sums 4, 6, 8, 12; S = 35; W = 12 * 35 / (9 * 60)
    assert F.kendalls_w(ranks) == pytest.approx(420 / 540)
    rhos = [stats.spearmanr(ranks[i], ranks[j])[0] for i, j in ((0, 1), (0, 2), (1, 2))]
    m = len(ranks)
    assert np.mean(rhos) == pytest.approx((m * F.kendalls_w(ranks) - 1) / (m - 1))
    assert F.kendalls_w([[1, 1, 2, 3], [1, 1, 2, 3]]) == pytest.approx(1.0)   # tie-corrected
    assert F.kendalls_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)


def test_pairwise_rank_agreement_and_ranking_agreement():
    assert F.pairwise_rank_agreement([[1, 2, 3], [1, 3, 2]]) == pytest.approx(2 / 3)
    assert F.pairwise_rank_agreement([[1, 1, 2], [2, 1, 3]]) == pytest.approx(1.0)  # tied pair skipped
    r1 = F.Ranking("a", "p", ("x", "y", "z"), (0, 1, 2))
    r2 = F.Ranking("b", "p", ("z", "y", "x"), (2, 1, 0))   # the same ranking, items listed in another order
    assert F.ranking_agreement([r1, r2]) == {"kendalls_w": pytest.approx(1.0), "pairwise": 1.0}


# ------------------------------------------------------------------ with the real oracle

def _world_with_judge():
    from feedbacklab import world
    if not hasattr(world, "judge"):
        pytest.skip("feedbacklab.world.judge is not available yet")
    return world


def _image(world, prompt, seed=0):
    return world.render(world.parse(prompt), size=64, seed=seed)[0]


def test_annotators_on_real_judgements():
    world = _world_with_judge()
    prompt = "two red circles on a white background"
    good = world.judge(prompt, _image(world, prompt))
    bad = world.judge(prompt, _image(world, "three red circles on a white background"))
    assert good.aligned and not bad.aligned
    a = F.Annotator(NOISELESS)
    assert a.binary(good).label == 1 and a.binary(bad).label == 0
    assert a.keywords(bad).labels[0] == 1 and sum(a.keywords(good).labels) == 0
    assert a.likert(good).alignment == 5 and a.likert(bad).alignment <= 4
    assert len(a.points(bad, "misaligned").points) >= 1
    assert a.rank([bad, good], ["bad", "good"]).ranked_ids == ("good", "bad")
    panel = F.make_panel(3, seed=0)
    records = panel.rich(bad, "b") + panel.binary(bad, "b") + panel.rank([bad, good], ["b", "g"])
    assert F.records_from_json(F.records_to_json(records)) == records


@pytest.mark.parametrize("drawn, caption, expected, n_changed", [
    ("three red circles on a gray background", "two red circles on a white background",
     "three red circles on a gray background", 2),
    ("a blue square and a red circle on a white background", "a red circle and a green square on a white background",
     "a red circle and a blue square on a white background", 1),       # objects kept in the caption's order
    ("a red circle to the left of a blue square", "a blue square to the left of a red circle",
     "a blue square to the right of a red circle", 1),                 # the relation stated from the caption's side
])
def test_caption_correction_on_real_judgements(drawn, caption, expected, n_changed):
    world = _world_with_judge()
    j = world.judge(caption, _image(world, drawn, seed=1))
    assert not j.aligned
    c = F.Annotator(NOISELESS).correct(j, "img")
    assert c.corrected == expected
    assert F.changed_token_count(caption, c.corrected) == n_changed
    _check_spans(c)
    right = world.judge(drawn, _image(world, drawn, seed=1))
    assert not F.Annotator(NOISELESS).correct(right).changed
    skip_all = F.Annotator({"correction_miss": 1.0}).correct(j, "img")
    assert skip_all.corrected == caption and not skip_all.changed
