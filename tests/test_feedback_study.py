"""The annotation study: item generation is seeded, and agreement statistics behave at the extremes."""
import numpy as np
import pytest

from feedbacklab.feedback import NoiseConfig, Panel, Annotator, make_panel, study


@pytest.fixture(scope="module")
def items():
    return study.study_items(24, seed=3, size=48)


@pytest.fixture(scope="module")
def groups():
    return study.ranking_groups(6, k=4, seed=3, size=48)


def test_items_are_seeded(items):
    again = study.study_items(24, seed=3, size=48)
    assert [i.prompt for i in items] == [i.prompt for i in again]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(items, again))
    assert [i.prompt for i in study.study_items(24, seed=4, size=48)] != [i.prompt for i in items]


def test_groups_share_their_prompt(groups):
    assert all(len(g) == 4 and len({it.prompt for it in g}) == 1 for g in groups)


def test_noise_free_panel_agrees_perfectly(items, groups):
    panel = Panel([Annotator(NoiseConfig.none(), seed=s, annotator_id=f"a{s}") for s in range(3)])
    result = study.run_study(items, groups, panel)
    assert len(result.binary) == len(result.likert) == len(result.keywords) == 3 * len(items)
    assert len(result.points) == 2 * 3 * len(items)
    assert len(result.rankings) == 3 * len(groups)
    assert result.agreement["fleiss_kappa"] == pytest.approx(1.0)
    for aspect in ("plausibility", "alignment", "aesthetics", "overall"):
        assert result.agreement[f"maxdiff_perfect_{aspect}"] == 1.0
        assert sum(result.maxdiff_counts[aspect].values()) == len(items)
    assert result.agreement["ranking_pairwise"] == pytest.approx(1.0)
    # noise-free binary labels are the oracle's verdicts
    assert [r.label for r in result.binary[::3]] == [int(it.judgement.aligned) for it in items]


def test_noisy_panel_agrees_less(items, groups):
    quiet = study.run_study(items, groups, make_panel(3, noise={"flip_prob": 0.02}, seed=0))
    loud = study.run_study(items, groups, make_panel(3, noise={"flip_prob": 0.4, "score_sigma": 1.5,
                                                               "rank_temperature": 1.0}, seed=0))
    assert loud.agreement["fleiss_kappa"] < quiet.agreement["fleiss_kappa"]
    assert loud.agreement["maxdiff_good_overall"] < quiet.agreement["maxdiff_good_overall"]


def test_heatmaps_follow_points(items, groups):
    result = study.run_study(items, groups, make_panel(3, seed=0))
    maps = result.heatmaps("implausible")
    assert set(maps) == {it.item_id for it in items}
    assert all(m.shape == (48, 48) and 0 <= m.min() and m.max() <= 1 for m in maps.values())


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="n must be"):
        study.study_items(0)
    with pytest.raises(ValueError, match="k >= 2"):
        study.ranking_groups(2, k=1)
