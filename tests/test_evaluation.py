"""Oracle-based generator evaluation: summaries, diversity, simulated pairwise raters, paired gains."""
import numpy as np
import pytest
import torch

from feedbacklab import evaluation as ev
from feedbacklab.evaluation import (alignment_summary, compare, diversity, eval_prompts, paired_gain,
                                   pairwise_human_eval, reward_metrics)


def _rec(prompt, seed, aligned, attrs, plaus=1.0, n_art=0, align_latent=None):
    return {"prompt": prompt, "seed": seed, "aligned": aligned, "attributes": attrs, "plausibility": plaus,
            "n_artifacts": n_art, "latent": {"alignment": 1.0 if aligned else (align_latent or 0.3),
                                              "plausibility": plaus}}


def test_alignment_summary_hand_computed():
    recs = [_rec("p", 0, True, {"count": True, "color": True, "background": True}),
            _rec("p", 1, False, {"count": False, "color": True, "background": True}, plaus=0.5, n_art=2),
            _rec("q", 2, False, {"count": False, "color": False, "background": True}, plaus=0.7, n_art=1),
            _rec("q", 3, False, {"count": True, "color": True, "background": False})]
    s = alignment_summary(recs)
    assert s["aligned_rate"] == 0.25 and s["count_rate"] == 0.5 and s["color_rate"] == 0.75
    assert s["background_rate"] == 0.75 and s["artifact_rate"] == 0.5
    assert s["plausibility"] == pytest.approx((1 + 0.5 + 0.7 + 1) / 4) and "shape_rate" not in s
    with pytest.raises(ValueError):
        alignment_summary([])


def test_diversity_is_mean_within_prompt_cosine_distance():
    e = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    # group a: identical → 0; group b: orthogonal pair → 1; group c has one image and is skipped
    assert diversity(e[:4], ["a", "a", "b", "b"]) == pytest.approx(0.5)
    assert diversity(e[[0, 3, 4]], ["b", "b", "b"]) == pytest.approx(np.mean([1, 1 - 2 ** -0.5, 1 - 2 ** -0.5]))
    with pytest.raises(ValueError, match="two or more"):
        diversity(e[:2], ["a", "b"])
    with pytest.raises(ValueError, match="group labels"):
        diversity(e, ["a"])


def test_pairwise_eval_noise_free_and_symmetric():
    base = [_rec(f"p{i}", i, False, {}, plaus=0.9) for i in range(20)]
    ft = [_rec(f"p{i}", i, i < 15, {}, plaus=0.9 if i % 2 else 0.4) for i in range(20)]
    res = pairwise_human_eval(base, ft, "alignment", n_raters=9, noise_sd=0.0, tie_margin=0.01)
    assert res["b_win"] == 0.75 and res["tie"] == 0.25 and res["a_win"] == 0.0 and res["b_majority"] == 0.75
    fid = pairwise_human_eval(base, ft, "fidelity", noise_sd=0.0, tie_margin=0.01)
    assert fid["a_win"] == 0.5 and fid["tie"] == 0.5
    noisy = pairwise_human_eval(base, ft, "alignment", noise_sd=0.2, seed=3)
    swapped = pairwise_human_eval(ft, base, "alignment", noise_sd=0.2, seed=3)
    assert noisy["b_win"] + noisy["a_win"] + noisy["tie"] == pytest.approx(1.0)
    assert 0.5 < noisy["b_win"] < 1.0 and swapped["a_win"] > 0.5


def test_pairwise_eval_requires_pairs():
    a = [_rec("p", 0, True, {})]
    with pytest.raises(ValueError, match="paired"):
        pairwise_human_eval(a, [_rec("p", 1, True, {})])
    with pytest.raises(ValueError, match="criterion"):
        pairwise_human_eval(a, a, "beauty")
    with pytest.raises(ValueError, match="same non-zero"):
        pairwise_human_eval(a, a + a)


def test_paired_gain_and_its_interval():
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.3
    b = a | (rng.random(400) < 0.3)
    g = paired_gain(a, b)
    assert g["gain"] == pytest.approx(b.mean() - a.mean()) and g["low"] < g["gain"] < g["high"]
    assert g["low"] > 0
    assert paired_gain([1, 1], [1, 1]) == {"gain": 0.0, "low": 0.0, "high": 0.0}


def test_compare_gives_flat_keys():
    base = [_rec(f"p{i}", i, i < 2, {"count": i < 2}) for i in range(10)]
    ft = [_rec(f"p{i}", i, i < 6, {"count": i < 7}) for i in range(10)]
    out = compare(base, ft)
    assert out["aligned_rate_base"] == 0.2 and out["aligned_rate_ft"] == 0.6
    assert out["aligned_gain"] == pytest.approx(0.4) and out["count_rate_ft"] == 0.7
    assert {"human_alignment_ft_win", "human_fidelity_ft_win", "artifact_rate_ft"} <= set(out)


def test_eval_prompts_are_distinct_and_from_the_split():
    from feedbacklab import world

    seen, unseen = eval_prompts(30, "seen", seed=0), eval_prompts(30, "unseen", seed=0)
    assert len(set(seen)) == 30 and len(set(unseen)) == 30
    assert not any(world.is_unseen(world.parse(p)) for p in seen)
    assert all(world.is_unseen(world.parse(p)) for p in unseen)
    assert eval_prompts(30, "seen", seed=0) == seen
    circles = eval_prompts(64, "seen", seed=1, shape="circle")  # 4 counts x 4 seen colours x 4 backgrounds
    assert len(set(circles)) == 64 and all(world.parse(p).objects[0][1] == "circle" for p in circles)
    assert len(eval_prompts(16, "unseen", shape="circle")) == 16  # green circles are held out
    with pytest.raises(ValueError, match="only 64"):
        eval_prompts(65, "seen", shape="circle")
    with pytest.raises(ValueError):
        eval_prompts(0)
    with pytest.raises(ValueError, match="unknown shape"):
        eval_prompts(3, shape="star")


def test_reward_metrics_against_labels_and_truth():
    from sklearn.metrics import roc_auc_score

    scores = np.array([0.9, 0.2, 0.6, 0.4, 0.7])
    labels, truth = np.array([1, 0, 0, 0, 1]), np.array([1, 0, 1, 1, 0])
    m = reward_metrics(torch.tensor(scores), labels, truth)
    assert m["acc_label"] == pytest.approx(4 / 5) and m["acc_oracle"] == pytest.approx(3 / 5)
    assert m["auroc_label"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["auroc_oracle"] == pytest.approx(roc_auc_score(truth, scores))
    assert set(reward_metrics(scores, truth=truth)) == {"acc_oracle", "auroc_oracle"}
    assert set(reward_metrics(scores, labels, threshold=None)) == {"auroc_label"}
    with pytest.raises(ValueError):
        reward_metrics(scores)


def test_comparison_grid_draws_one_row_per_generator():
    import matplotlib

    matplotlib.use("Agg")
    from feedbacklab.evaluation import comparison_grid

    images = np.zeros((3, 8, 8, 3), np.uint8)
    fig = comparison_grid({"base": images, "fine-tuned": images}, ["a", "b", "c"],
                          marks={"base": [True, False, True]})
    assert len(fig.axes) == 6 and fig.axes[0].get_ylabel() == "base"
    with pytest.raises(ValueError, match="every row"):
        comparison_grid({"base": images[:2]}, ["a", "b", "c"])


def test_reward_report_rows_per_reward_and_set():
    from feedbacklab.evaluation import reward_report
    from feedbacklab.feedback_sets import FeedbackSet

    class Brightness:
        threshold = 0.5

        def score(self, prompts, images):
            return images.mean(dim=(1, 2, 3))

    images = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 100, 200, 255)])
    labelled = FeedbackSet(images, [{"prompt": "p", "aligned": a, "label": l} for a, l in zip((0, 0, 1, 1), (0, 1, 1, 1))])
    unlabelled = FeedbackSet(images, [{"prompt": "p", "aligned": a, "label": None} for a in (0, 1, 0, 1)])
    rows = reward_report({"bright": Brightness()}, {"a": labelled, "b": unlabelled})
    assert [(r["reward"], r["set"], r["n"]) for r in rows] == [("bright", "a", 4), ("bright", "b", 4)]
    assert rows[0]["auroc_oracle"] == 1.0 and rows[0]["acc_label"] == 0.75 and "acc_label" not in rows[1]
    assert rows[1]["auroc_oracle"] == 0.75


def test_count_confusion_rows_are_shares_of_each_asked_count():
    from feedbacklab.evaluation import count_confusion

    recs = [{"prompt": "three red circles on a white background", "n_objects": n} for n in (3, 4, 4, 3)]
    recs.append({"prompt": "one blue square on a black background", "n_objects": 1})
    table = count_confusion(recs)
    assert table.loc[3, 3] == pytest.approx(0.5) and table.loc[3, 4] == pytest.approx(0.5)
    assert table.loc[1, 1] == pytest.approx(1.0) and table.loc[1, 4] == 0
    with pytest.raises(ValueError, match="n_objects"):
        count_confusion([{"prompt": "one blue square on a black background"}])
    with pytest.raises(ValueError, match="attribute prompts"):
        count_confusion([{"prompt": "a yellow circle to the left of a purple triangle", "n_objects": 2}])


def test_set_human_eval_compares_sets_of_four_per_prompt():
    def recs(quality, prompts=("p", "q"), n=8):
        return [{"prompt": p, "latent": {"alignment": quality}} for p in prompts for _ in range(n)]

    res = ev.set_human_eval(recs(0.2), recs(0.8), set_size=4, n_raters=3, noise_sd=0.0)
    assert res == {"b_win": 1.0, "a_win": 0.0, "b_majority": 1.0, "a_majority": 0.0, "n_comparisons": 4}
    flipped = ev.set_human_eval(recs(0.8), recs(0.2), noise_sd=0.0)
    assert flipped["a_win"] == 1.0 and flipped["b_win"] == 0.0
    noisy = ev.set_human_eval(recs(0.5), recs(0.5), noise_sd=0.3, seed=1)
    assert noisy["a_win"] + noisy["b_win"] == pytest.approx(1.0) and 0.0 < noisy["b_win"] < 1.0
    with pytest.raises(ValueError, match="2 x set_size = 8"):
        ev.set_human_eval(recs(0.2, n=7), recs(0.8, n=7))


def test_ranking_accuracy_hand_case_with_mixed_image_sizes():
    from feedbacklab.feedback import Ranking
    from feedbacklab.rewards import load_reward

    brightness = load_reward("brightness")  # mean pixel value: a reward with a known answer
    imgs = {f"i{k}": np.full((8 + 8 * (k % 2), 8, 3), v, np.uint8) for k, v in enumerate((200, 100, 50, 10, 90))}
    rankings = [Ranking("p1", "a", ("i0", "i1", "i2"), (0, 1, 2)),   # people agree with brightness: 3 of 3 pairs
                Ranking("p2", "b", ("i3", "i4"), (0, 1))]            # i3 (10) ranked over i4 (90): 0 of 1
    acc = ev.ranking_accuracy({"brightness": brightness}, rankings, imgs, batch_size=2)
    assert acc["brightness"] == pytest.approx(3 / 4)
    scores = ev.score_images(brightness, ["x"] * 5, [imgs[f"i{k}"] for k in range(5)])
    assert np.argsort(-scores).tolist() == [0, 1, 4, 2, 3]
    with pytest.raises(ValueError, match="without pixels"):
        ev.ranking_accuracy({"b": brightness}, [Ranking("p", "a", ("i0", "zz"), (0, 1))], imgs)


def test_aspect_accuracy_hand_case():
    """Two groups of two images: a reward equal to alignment orders alignment perfectly; pairs an aspect ties
    are skipped; the reward's ties count 1/2."""
    lat = [{"alignment": 1.0, "plausibility": 0.2, "aesthetics": 0.5, "overall": 0.66},
           {"alignment": 0.5, "plausibility": 0.9, "aesthetics": 0.5, "overall": 0.62},
           {"alignment": 1.0, "plausibility": 0.4, "aesthetics": 0.9, "overall": 0.8},
           {"alignment": 1.0, "plausibility": 0.8, "aesthetics": 0.1, "overall": 0.76}]
    records = [{"latent": x} for x in lat]
    groups = ["a", "a", "b", "b"]
    table = ev.aspect_accuracy({"align": [1.0, 0.5, 1.0, 1.0], "plaus": [0.2, 0.9, 0.4, 0.8]}, records, groups)
    assert table.loc["align", "alignment"] == 1.0          # group b ties alignment: skipped
    assert table.loc["align", "plausibility"] == 0.25      # a: wrong (0); b: the reward ties (1/2) → 0.5 / 2
    assert table.loc["align", "aesthetics"] == 0.5          # group a ties aesthetics: only b, where the reward ties
    assert table.loc["plaus", "plausibility"] == 1.0
    assert table.loc["plaus", "overall"] == 0.0            # a: 0.9 > 0.2 but overall .62 < .66; b: .8 > .4, overall .76 < .8
    with pytest.raises(ValueError, match="3 scores for 4 records"):
        ev.aspect_accuracy({"x": [1, 2, 3]}, records, groups)
