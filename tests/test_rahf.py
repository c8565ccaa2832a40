"""RichHF / RAHF: consolidation, the keyword sequence, both RAHF variants, the CNN baseline, metrics, filtering."""
import numpy as np
import pytest
import torch

from feedbacklab import world
from feedbacklab.evaluation import rich_feedback_metrics
from feedbacklab.feedback import (KeywordLabels, LikertScores, PointAnnotation, RichLabel, consolidate_rich,
                                  disc_map, make_panel)
from feedbacklab.feedback_sets import FeedbackSet, rich_feedback
from feedbacklab.finetune import select_best_per_prompt, select_random_per_prompt
from feedbacklab.models.data import to_tensor
from feedbacklab.models.rahf import (RAHF, RAHFError, RichTrainConfig, build_rahf, calibrate_keyword_margin,
                                     fit_rich_model, keyword_labels, keyword_sequence, rich_loss, rich_targets,
                                     train_rahf)
from feedbacklab.models.rich_cnn import RichCNN
from feedbacklab.rewards import load_reward

PROMPTS = ["two red circles on a gray background", "a blue square and a red circle on a white background",
           "a red circle to the left of a blue square"]
TINY = dict(d_model=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_ff=64, head_channels=(16, 8),
            score_channels=8, head_size=16)


@pytest.fixture(scope="module")
def data():
    """Six rendered images of the three families with a 3-annotator panel's consolidated rich labels."""
    torch.manual_seed(0)
    panel = make_panel(3, seed=0)
    images, labels = [], []
    for i in range(6):
        p = PROMPTS[i % 3]
        image = world.render(world.parse(p), seed=i)[0]
        images.append(image)
        labels += consolidate_rich(panel.rich(world.judge(p, image), f"item-{i}"))
    return to_tensor(np.stack(images)), labels


# ---------------------------------------------------------------- consolidation

def test_consolidate_rich_hand_made_case():
    """Two annotators: discs averaged, keywords by majority (tie -> 0), scores mean-normalised (s - 1) / 4."""
    p, toks = "one red circle on a white background", tuple("one red circle on a white background".split())
    recs = [LikertScores("a", "x", p, 5, 3, 1, 4), LikertScores("b", "x", p, 3, 3, 2, 4),
            PointAnnotation("a", "x", p, "implausible", [(2, 2)], 1, 6, 6),
            PointAnnotation("b", "x", p, "implausible", [(2, 2), (5, 5)], 1, 6, 6),
            PointAnnotation("a", "x", p, "misaligned", [], 1, 6, 6),
            PointAnnotation("b", "x", p, "misaligned", [], 1, 6, 6),
            KeywordLabels("a", "x", p, toks, (1, 1, 0, 0, 0, 0, 0)), KeywordLabels("b", "x", p, toks, (1, 0, 0, 0, 0, 0, 0))]
    (lab,) = consolidate_rich(recs)
    assert lab.scores == {"plausibility": 0.75, "alignment": 0.5, "aesthetics": 0.125, "overall": 0.75}
    expected = (disc_map([(2, 2)], 1, 6, 6) + disc_map([(2, 2), (5, 5)], 1, 6, 6)) / 2
    np.testing.assert_array_equal(lab.heatmaps["implausible"], expected)
    assert lab.heatmaps["implausible"][2, 2] == 1.0 and lab.heatmaps["implausible"][5, 5] == 0.5
    assert lab.heatmaps["implausible"][2, 3] == 1.0 and lab.heatmaps["implausible"][0, 0] == 0.0
    assert lab.heatmaps["misaligned"].sum() == 0
    assert lab.keywords == (1, 0, 0, 0, 0, 0, 0)


def test_consolidate_rich_needs_every_kind():
    p = "one red circle on a white background"
    with pytest.raises(ValueError, match="no implausible points"):
        consolidate_rich([LikertScores("a", "x", p, 5, 3, 1, 4)])


def test_rich_label_rejects_bad_fields():
    maps = {"implausible": np.zeros((4, 4)), "misaligned": np.zeros((4, 4))}
    ok = {"plausibility": 1, "alignment": 1, "aesthetics": 1, "overall": 1}
    with pytest.raises(ValueError, match="outside"):
        RichLabel("x", "p", {**ok, "overall": 1.5}, maps, ("p",), (0,))
    with pytest.raises(ValueError, match="one size"):
        RichLabel("x", "p", ok, {**maps, "misaligned": np.zeros((5, 4))}, ("p",), (0,))
    with pytest.raises(ValueError, match="keyword labels"):
        RichLabel("x", "p", ok, maps, ("p", "q"), (0,))


def test_rich_feedback_of_a_set_carries_the_oracle_truth():
    images = np.stack([world.render(world.parse(p), seed=i)[0] for i, p in enumerate(PROMPTS)])
    from feedbacklab.feedback_sets import judge_record

    records = [{"item_id": f"i{i}", **judge_record(p, images[i])} for i, p in enumerate(PROMPTS)]
    labels, raw = rich_feedback(FeedbackSet(images, records), make_panel(3, seed=1))
    assert [lab.item_id for lab in labels] == ["i0", "i1", "i2"] and len(raw) == 3 * 3 * 4
    assert [lab.extra["aligned"] for lab in labels] == [r["aligned"] for r in records]
    with pytest.raises(ValueError, match="panel"):
        rich_feedback(FeedbackSet(images, records), None)


# ---------------------------------------------------------------- keyword sequence

def test_keyword_sequence_round_trip():
    tokens, labels = "two red circles on a gray background".split(), (1, 0, 1, 0, 0, 0, 1)
    seq = keyword_sequence(tokens, labels)
    assert seq == ["two", "<mis>", "red", "circles", "<mis>", "on", "a", "gray", "background", "<mis>"]
    assert keyword_labels(seq) == labels
    assert keyword_labels(keyword_sequence(tokens, (0,) * 7)) == (0,) * 7
    with pytest.raises(RAHFError):
        keyword_sequence(tokens, (1, 0))


# ---------------------------------------------------------------- RAHF

@pytest.mark.parametrize("variant", ["multi-head", "augmented-prompt"])
def test_rahf_shapes_and_a_training_step_lowers_the_loss(data, variant):
    images, labels = data
    torch.manual_seed(0)
    model = build_rahf(variant, PROMPTS, device="cpu", **TINY)
    feats = model.features(images)
    targets = rich_targets(labels)
    config = RichTrainConfig()
    out = model(feats, targets["prompts"], targets["tokens"], targets["keywords"])
    assert out["heatmaps"]["implausible"].shape == (6, 64, 64) and out["heatmaps"]["misaligned"].shape == (6, 64, 64)
    assert out["scores"].shape == (6, 4) and ((out["scores"] > 0) & (out["scores"] < 1)).all()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    idx = torch.arange(6)
    losses = []
    for _ in range(8):
        out = model(feats, targets["prompts"], targets["tokens"], targets["keywords"])
        loss, terms = rich_loss(out, targets, idx, config)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] and np.isfinite(list(terms.values())).all()
    pred = model.predict(images, targets["prompts"])
    assert [len(k) for k in pred["keywords"]] == [len(lab.tokens) for lab in labels]
    assert pred["scores"].shape == (6, 4) and pred["heatmaps"]["implausible"].shape == (6, 64, 64)


def test_augmented_prompt_computes_only_the_requested_tasks(data):
    images, labels = data
    model = build_rahf("augmented-prompt", PROMPTS, device="cpu", **TINY)
    out = model(model.features(images[:2]), PROMPTS[:2], tasks=["misaligned", "overall"])
    assert list(out["heatmaps"]) == ["misaligned"] and out["score_aspects"] == ("overall",)
    assert out["scores"].shape == (2, 1)
    with pytest.raises(RAHFError, match="unknown RAHF tasks"):
        model(model.features(images[:2]), PROMPTS[:2], tasks=["colour"])


def test_rahf_bad_inputs_fail_early(data):
    images, labels = data
    with pytest.raises(RAHFError, match="unknown RAHF variant"):
        build_rahf("two-towers", PROMPTS, device="cpu")
    model = build_rahf("multi-head", PROMPTS, device="cpu", **{**TINY, "map_size": 32})
    with pytest.raises(RAHFError, match="map_size"):
        fit_rich_model(model, images, labels, RichTrainConfig(epochs=1), progress=False)
    with pytest.raises(RAHFError, match="one RichLabel each"):
        fit_rich_model(model, images[:2], labels, RichTrainConfig(epochs=1), progress=False)
    with pytest.raises(RAHFError, match="tasks_per_step"):
        RichTrainConfig(tasks_per_step="two")


def test_rahf_fit_save_load_and_reward(data, tmp_path):
    images, labels = data
    model = build_rahf("augmented-prompt", PROMPTS, device="cpu", **TINY)
    hist = fit_rich_model(model, images, labels, RichTrainConfig(epochs=2, batch_size=4, tasks_per_step="one-per-kind"),
                          val_images=images[:2], val_labels=labels[:2], progress=False)
    assert len(hist) == 2 and "val_loss" in hist[-1]
    before = model.predict(images, PROMPTS * 2)
    model.save(tmp_path / "rahf")
    loaded = RAHF.load(tmp_path / "rahf", device="cpu")
    after = loaded.predict(images, PROMPTS * 2)
    np.testing.assert_allclose(after["scores"], before["scores"], atol=1e-6)
    np.testing.assert_allclose(after["heatmaps"]["misaligned"], before["heatmaps"]["misaligned"], atol=1e-6)
    assert after["keywords"] == before["keywords"]
    reward = load_reward(tmp_path / "rahf", aspect="plausibility", device="cpu")
    x = images[:3].clone().requires_grad_(True)
    r = reward.score(PROMPTS, x)
    np.testing.assert_allclose(r.detach().numpy(), before["scores"][:3, 0], atol=1e-5)
    r.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="aspect"):
        load_reward(tmp_path / "rahf", aspect="beauty", device="cpu")


def test_rich_cnn_shapes(data):
    images, labels = data
    cnn = RichCNN("resnet18", map_size=64)
    pred = cnn.predict(images)
    assert pred["scores"].shape == (6, 4) and pred["heatmaps"]["implausible"].shape == (6, 64, 64)
    assert pred["keywords"] is None
    with pytest.raises(RAHFError, match="architecture"):
        RichCNN("vgg16")


# ---------------------------------------------------------------- metrics and baselines

def test_rich_feedback_metrics_perfect_and_constant(data):
    _, labels = data
    from feedbacklab.feedback import stack_labels

    arrays = stack_labels(labels)
    perfect = {"scores": arrays["scores"], "heatmaps": {k: arrays[k] for k in ("implausible", "misaligned")},
               "keywords": [lab.keywords for lab in labels]}
    m = rich_feedback_metrics(perfect, labels)
    nonempty = [lab for lab in labels if lab.heatmaps["misaligned"].max() > 0]
    if nonempty:
        assert m["misaligned_cc"] == pytest.approx(1.0) and m["misaligned_kld"] == pytest.approx(0.0, abs=1e-6)
    assert m["misaligned_mse"] == 0.0
    constant = {"heatmaps": {"implausible": np.full_like(arrays["implausible"], 0.1)}}
    c = rich_feedback_metrics(constant, labels)
    assert "plausibility_plcc" not in c and c["implausible_mse"] > 0
    with pytest.raises(ValueError, match="shape"):
        rich_feedback_metrics({"scores": arrays["scores"][:, :2]}, labels)


def test_clip_gradient_map_shape_and_range(data):
    images, _ = data
    g = load_reward("clip-score", device="cpu").gradient_map(PROMPTS * 2, images)
    assert g.shape == (6, 64, 64) and float(g.min()) >= 0 and torch.allclose(g.flatten(1).amax(1), torch.ones(6))


def test_filter_selection():
    prompts = ["a", "a", "a", "b", "b", "c"]
    scores = np.array([[0.2, 0.9], [0.8, 0.8], [0.1, 0.1], [0.3, 0.3], [0.4, 0.1], [0.9, 0.95]])
    assert select_best_per_prompt(scores, prompts).tolist() == [1, 3, 5]
    assert select_best_per_prompt(scores, prompts, threshold=0.5).tolist() == [1, 5]
    assert select_best_per_prompt(scores[:, 0], prompts, threshold=0.5).tolist() == [1, 5]
    control = select_random_per_prompt(prompts, 2, seed=0)
    assert len(control) == 2 and len({prompts[i] for i in control}) == 2
    with pytest.raises(ValueError, match="n_keep"):
        select_random_per_prompt(prompts, 4)
    with pytest.raises(ValueError, match="scores"):
        select_best_per_prompt(scores[:3], prompts)


def test_keyword_margin_calibration_extremes(data, tmp_path):
    """A huge margin marks nothing, a very negative one marks every word; calibration keeps the better on F1."""
    images, labels = data
    model = build_rahf("multi-head", PROMPTS, device="cpu", **TINY)
    out = model(model.features(images), [lab.prompt for lab in labels])
    prompts = [lab.prompt for lab in labels]
    assert all(not any(k) for k in model.decode_keywords(*out["_keyword_states"], prompts, margin=1e9))
    assert all(all(k) for k in model.decode_keywords(*out["_keyword_states"], prompts, margin=-1e9))
    f1 = calibrate_keyword_margin(model, images, labels, margins=[1e9, -1e9])
    n_true = sum(sum(lab.keywords) for lab in labels)
    n_tokens = sum(len(lab.keywords) for lab in labels)
    assert f1[-1e9] == pytest.approx(2 * n_true / (n_true + n_tokens))   # recall 1, precision n_true / n_tokens
    assert model.config.keyword_margin == -1e9 and model.predict(images, prompts)["keywords"] == [(1,) * len(lab.keywords) for lab in labels]
    model.save(tmp_path / "m")
    assert RAHF.load(tmp_path / "m", device="cpu").config.keyword_margin == -1e9


def test_heatmap_bce_loss_hand_case_and_unsaturated_gradient():
    """The "bce" heatmap term is pixel cross-entropy on the logits against the soft map; MSE on the sigmoid has a
    vanishing gradient at a saturated empty prediction, BCE a gradient of p - y (why MSE maps stay empty)."""
    target = torch.tensor([[[0.0, 1.0], [1.0 / 3.0, 0.0]]])
    targets = {"heatmaps": {"implausible": target, "misaligned": torch.zeros_like(target)},
               "scores": torch.zeros(1, 4)}
    grads = {}
    for loss_name in ("mse", "bce"):
        logits = torch.full((1, 2, 2), -10.0, requires_grad=True)
        out = {"heatmap_logits": {"implausible": logits}, "heatmaps": {"implausible": torch.sigmoid(logits)},
               "scores": torch.zeros(1, 4)}
        config = RichTrainConfig(heatmap_loss=loss_name, heatmap_weight=1.0, score_weight=0.0, keyword_weight=0.0)
        loss, terms = rich_loss(out, targets, slice(None), config)
        p = torch.sigmoid(torch.tensor(-10.0))
        by_hand = [((p - y) ** 2) if loss_name == "mse" else -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
                   for y in target.flatten()]
        assert float(loss) == pytest.approx(float(sum(by_hand) / 4), rel=1e-5)
        assert terms["heatmap"] == pytest.approx(float(loss))
        loss.backward()
        grads[loss_name] = float(logits.grad[0, 0, 1])   # a pixel with target 1
    assert grads["bce"] == pytest.approx((float(torch.sigmoid(torch.tensor(-10.0))) - 1.0) / 4, rel=1e-5)
    assert abs(grads["mse"]) < 1e-4 * abs(grads["bce"])
    with pytest.raises(RAHFError, match="heatmap_loss"):
        RichTrainConfig(heatmap_loss="l1")


def test_rahf_and_cnn_return_the_logits_of_their_maps(data):
    images, labels = data
    for model in (build_rahf("multi-head", PROMPTS, device="cpu", **TINY), RichCNN("resnet18", map_size=64)):
        out = model(model.features(images[:2]), PROMPTS[:2])
        for kind, m in out["heatmaps"].items():
            assert torch.allclose(torch.sigmoid(out["heatmap_logits"][kind]), m)


def test_train_rahf_is_build_fit_calibrate_at_the_labels_resolution(data):
    """The notebook's one-call recipe equals its three steps; heatmaps come out at the labels' size."""
    images, labels = data
    config = RichTrainConfig(epochs=1, batch_size=4, seed=3)
    model, hist = train_rahf("multi-head", images, labels, config, images[:3], labels[:3], device="cpu", **TINY)
    torch.manual_seed(3)
    by_hand = build_rahf("multi-head", [lab.prompt for lab in labels], device="cpu", **TINY)
    hand_hist = fit_rich_model(by_hand, images, labels, config, val_images=images[:3], val_labels=labels[:3], progress=False)
    calibrate_keyword_margin(by_hand, images[:3], labels[:3])
    assert model.config.map_size == 64 and model.config.keyword_margin == by_hand.config.keyword_margin
    assert hist[0]["val_loss"] == pytest.approx(hand_hist[0]["val_loss"], rel=1e-6)
    for (name, a), b in zip(model.state_dict().items(), by_hand.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
    small = [RichLabel(lab.item_id, lab.prompt, lab.scores, {k: m[::2, ::2] for k, m in lab.heatmaps.items()},
                       lab.tokens, lab.keywords) for lab in labels]
    half, _ = train_rahf("augmented-prompt", images, small, config, images[:2], small[:2], device="cpu", **TINY)
    assert half.config.map_size == 32 and half.predict(images[:2], PROMPTS[:2])["heatmaps"]["implausible"].shape == (2, 32, 32)


def test_train_rahf_keeps_every_word_of_long_prompts_and_refuses_bad_labels(data):
    images, labels = data
    long_prompt = " ".join(["a red circle and"] * 12) + " a blue square"   # 51 words
    tokens = tuple(long_prompt.split())
    long = [RichLabel(lab.item_id, long_prompt, lab.scores, lab.heatmaps, tokens, (0,) * (len(tokens) - 1) + (1,))
            for lab in labels]
    model, _ = train_rahf("augmented-prompt", images, long, RichTrainConfig(epochs=1), images[:2], long[:2], device="cpu", **TINY)
    assert model.config.max_words >= len(tokens) + 3   # "implausibility heatmap :" and every prompt word
    ids, _ = model._prompt_ids([long_prompt], ["implausible"])
    assert ids.shape[1] == len(tokens) + 3
    with pytest.raises(RAHFError, match="needs training and validation labels, got 6 and 0"):
        train_rahf("multi-head", images, labels, RichTrainConfig(epochs=1), images[:0], [], device="cpu", **TINY)
    oblong = [RichLabel(lab.item_id, lab.prompt, lab.scores, {k: m[:, :32] for k, m in lab.heatmaps.items()},
                        lab.tokens, lab.keywords) for lab in labels]
    with pytest.raises(RAHFError, match=r"one square size, got \[\(64, 32\)\]"):
        train_rahf("multi-head", images, oblong, RichTrainConfig(epochs=1), images[:2], oblong[:2], device="cpu", **TINY)
