"""The inspection widgets headless: numpy drawing, the heatmap inspector, the best-of-n browser, explore bundles."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from feedbacklab.feedback import SCORE_ASPECTS, PointAnnotation, RichLabel, disc_map
from feedbacklab.widgets import render
from feedbacklab.widgets.bundles import (BundleError, demo_bundles, load_best_of_n_bundle, load_rich_bundle,
                                         save_best_of_n_bundle, save_rich_bundle)
from feedbacklab.widgets.inspect import VERDICT_CEILING, BestOfNBrowser, HeatmapInspector

H = W = 16


def image(value=(200, 200, 200), h=H, w=W):
    out = np.empty((h, w, 3), np.uint8)
    out[:] = value
    return out


def label(i, prompt, keywords=None, scores=None, hot=None, size=H):
    maps = {"implausible": np.zeros((size, size), np.float32), "misaligned": np.zeros((size, size), np.float32)}
    if hot is not None:
        maps["implausible"] = disc_map([hot], 3, size, size) * 0.5
    tokens = tuple(prompt.split())
    return RichLabel(f"item-{i}", prompt, scores or {a: 0.5 for a in SCORE_ASPECTS}, maps, tokens,
                     keywords or (0,) * len(tokens))


@pytest.fixture()
def rich():
    prompts = ["two red circles", "one blue square", "three red squares", "a green circle"]
    overall = [0.2, 0.5, 0.8, 1.0]
    labels = [label(i, p, keywords=(0, 1, 0) if i == 0 else None, hot=(5, 6) if i % 2 == 0 else None,
                    scores={**{a: 0.5 for a in SCORE_ASPECTS}, "overall": s}) for i, (p, s) in enumerate(zip(prompts, overall))]
    images = np.stack([image((40 * i, 100, 200)) for i in range(4)])
    predictions = {"heatmaps": {"implausible": np.full((4, H, W), 0.7, np.float32)},
                   "scores": np.tile(np.array([0.1, 0.2, 0.3, 0.4]), (4, 1)),
                   "keywords": [(1, 0, 0), (0, 0, 0), (0, 0, 1), (0, 0, 0)]}
    points = [[PointAnnotation("ann-a", lab.item_id, lab.prompt, "implausible", [(5, 6)], 3, H, W),
               PointAnnotation("ann-b", lab.item_id, lab.prompt, "misaligned", [], 3, H, W)] for lab in labels]
    return images, labels, predictions, points


# ----------------------------------------------------------------------------- render


def test_overlay_tints_only_pixels_above_threshold():
    img = image((10, 120, 230))
    heat = np.zeros((H, W), np.float32)
    heat[2:5, 3:9] = 0.8
    heat[10, 10] = 0.2
    out = render.overlay(img, heat, alpha=0.5, threshold=0.3)
    changed = (out != img).any(axis=-1)
    assert changed[2:5, 3:9].all() and changed.sum() == 18  # the 0.2 pixel and the zeros are below the threshold
    tint = render.colormap_lut("magma")[round(0.8 * 255)]
    assert np.array_equal(out[3, 4], np.round(0.5 * img[3, 4] + 0.5 * tint).astype(np.uint8))
    assert np.array_equal(render.overlay(img, heat, alpha=0.5), np.where(heat[..., None] > 0, render.overlay(img, heat, 0.5, 0.1), img))
    assert np.array_equal(render.overlay(img, heat, alpha=0.0), img)
    with pytest.raises(ValueError, match="heatmap shape"):
        render.overlay(img, heat[:8], alpha=0.5)
    with pytest.raises(ValueError, match="unknown colormap"):
        render.overlay(img, heat, 0.5, cmap="no-such-map")


@pytest.mark.parametrize("points, radius", [([(5, 6)], 3), ([(0.4, 15.2), (10.5, 3.25)], 2.5), ([(20, 20)], 2), ([(8, 8)], 0)])
def test_draw_points_paints_exactly_the_disc_map_pixels(points, radius):
    img = image((1, 2, 3))
    out = render.draw_points(img, points, radius, (250, 10, 20))
    disc = disc_map(points, radius, H, W) > 0
    painted = (out != img).any(axis=-1)
    assert np.array_equal(painted, disc)
    assert (out[disc] == (250, 10, 20)).all()
    assert np.array_equal(img, image((1, 2, 3)))  # the input is left as it was


def test_frame_and_png():
    img = image((0, 0, 0))
    out = render.frame(img, (0, 255, 0), 2)
    border = np.ones((H, W), bool)
    border[2:-2, 2:-2] = False
    assert (out[border] == (0, 255, 0)).all() and (out[~border] == 0).all()
    decoded = np.asarray(Image.open(io.BytesIO(render.png(out, scale=3))))
    assert decoded.shape == (3 * H, 3 * W, 3) and np.array_equal(decoded[::3, ::3], out)
    with pytest.raises(ValueError, match="uint8"):
        render.png(out.astype(float))


# ----------------------------------------------------------------------------- heatmap inspector


def test_inspector_navigation_wraps_and_jump_clamps(rich):
    w = HeatmapInspector(*rich)
    assert w.index == 0 and "4 of 4 match" in w.status.value
    for expected in (1, 2, 3, 0):
        w.next_button.click()
        assert w.index == expected and w.jump.value == expected
    w.prev_button.click()
    assert w.index == 3
    w.jump.value = 1
    assert w.index == 1
    w.jump.value = 99  # BoundedIntText clamps to N - 1
    assert w.index == 3
    w.show(-5)
    assert w.index == 0


def test_inspector_filters(rich):
    w = HeatmapInspector(*rich)
    w.prompt_filter.value = "RED"
    assert w.matches == [0, 2] and w.index == 0
    w.next_button.click()
    assert w.index == 2
    w.next_button.click()
    assert w.index == 0
    w.prompt_filter.value = "red squares"
    assert w.matches == [2] and w.index == 2
    w.prompt_filter.value = "purple"
    assert w.index is None and w.status.value == "0 of 4 match" and "no item matches" in w.tokens.value
    w.next_button.click()
    assert w.index is None
    w.prompt_filter.value = ""
    w.filter_aspect.value = "overall"
    w.score_range.value = (0.45, 0.85)
    assert w.matches == [1, 2]
    w.show(3)  # a jump may leave the filter
    assert "outside the filters" in w.status.value
    w.next_button.click()
    assert w.index == 1


def test_inspector_image_follows_the_controls(rich):
    w = HeatmapInspector(*rich)
    seen = {bytes(w.image.value)}
    for control, value in ((w.opacity, 0.2), (w.threshold, 0.6), (w.source, "predicted"), (w.opacity, 0.9),
                           (w.show_points, False)):
        control.value = value
        seen.add(bytes(w.image.value))
    assert len(seen) == 6
    w.source.value = "both"
    assert w.view().shape == (4 * H, 2 * 4 * W + 4, 3)
    w.region.value = "misaligned"  # no predicted misaligned map: the plain image, said in the title
    assert [t for t, _ in w.panels()] == ["consolidated misaligned", "no predicted misaligned map"]
    assert np.array_equal(w.panels()[1][1], render.enlarge(w.images[0], 4))


def test_inspector_draws_each_annotators_points(rich):
    w = HeatmapInspector(*rich)
    color = w.annotator_colors["ann-a"]
    with_points = w.view()
    assert (with_points == color).all(axis=-1).any()
    w.show_points.value = False
    assert not (w.view() == color).all(axis=-1).any()
    assert "ann-a" not in w.tokens.value


def test_inspector_tokens_and_scores_html(rich):
    images, labels, predictions, points = rich
    labels[1] = label(1, "one <b>blue</b> square", keywords=(0, 1, 0))
    predictions["keywords"][1] = (0, 0, 1)
    w = HeatmapInspector(images, labels, predictions, points)
    html = w.tokens.value
    assert '<mark class="fl-kw-consolidated" style="background:#ffd24d">red</mark>' in html
    assert '<mark class="fl-kw-predicted" style="background:#8fd3ff">two</mark>' in html
    assert "ann-a" in html
    assert "<td>overall</td><td>0.200</td><td>0.400</td><td>+0.200</td>" in w.scores.value
    w.next_button.click()
    assert "&lt;b&gt;blue&lt;/b&gt;</mark>" in w.tokens.value and "<b>blue" not in w.tokens.value
    plain = HeatmapInspector(images, labels)
    assert "predicted" not in plain.tokens.value and "<th>predicted</th>" not in plain.scores.value
    assert plain.source.options == ("consolidated",) and plain.show_points.disabled


def test_inspector_static_figure(rich):
    w = HeatmapInspector(*rich)
    w.source.value = "both"
    fig = w.static_figure()
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "predicted implausible"
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_inspector_rejects_bad_input(rich):
    images, labels, predictions, points = rich
    with pytest.raises(ValueError, match="labels must be 4 RichLabel"):
        HeatmapInspector(images, labels[:3])
    with pytest.raises(ValueError, match=r"images must be a non-empty uint8 array"):
        HeatmapInspector(images.astype(np.float32), labels)
    bad = {**predictions, "heatmaps": {"implausible": np.zeros((4, 8, 8))}}
    with pytest.raises(ValueError, match=r"predictions\['heatmaps'\]\['implausible'\] has shape \(4, 8, 8\); expected \(N, H, W\) = \(4, 16, 16\)"):
        HeatmapInspector(images, labels, bad)
    with pytest.raises(ValueError, match="labels\\[0\\] .* has heatmaps of shape \\(16, 16\\), the images are \\(8, 8\\)"):
        HeatmapInspector(images[:, :8, :8], labels)
    with pytest.raises(ValueError, match=r"predictions\['keywords'\]\[0\] must be one 0/1 per token"):
        HeatmapInspector(images, labels, {**predictions, "keywords": [(1,)] * 4})
    with pytest.raises(ValueError, match=r"must be \(N, 4\) = \(4, 4\)"):
        HeatmapInspector(images, labels, {**predictions, "scores": np.zeros((4, 3))})
    with pytest.raises(ValueError, match="keys among"):
        HeatmapInspector(images, labels, {"maps": {}})
    with pytest.raises(ValueError, match="only PointAnnotation records"):
        HeatmapInspector(images, labels, None, [["not a record"]] * 4)


# ----------------------------------------------------------------------------- best of n


@pytest.fixture()
def best_of_n():
    prompts = ["a red circle"] * 5 + ["two blue squares"] * 3
    images = np.stack([image((30 * i, 0, 0)) for i in range(8)])
    scores = {"reward": np.array([0.1, 0.9, 0.5, 0.7, 0.3, 2.0, 1.0, 3.0]),
              "other": np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 1.0, 2.0])}
    verdict = np.array([0, 0, 1, 1, 0, 1, 1, 0], bool)
    return prompts, images, scores, verdict


def test_best_of_n_sorts_by_the_reward(best_of_n):
    prompts, images, scores, verdict = best_of_n
    w = BestOfNBrowser(prompts, images, scores, verdict)
    assert [list(g) for g in w.groups] == [[0, 1, 2, 3, 4], [5, 6, 7]]
    assert w.n.value == 5 and list(w.ranked("reward")) == list(np.argsort(-scores["reward"][:5]))
    w.n.value = 3
    assert list(w.ranked("reward")) == list(np.argsort(-scores["reward"][:3])) == [1, 2, 0]
    w.reward_a.value = "other"
    assert list(w.ranked("other")) == [0, 1, 2]
    w.prompt.value = 1
    assert w.n.max == 3 and list(w.ranked("other")) == [5 + i for i in np.argsort(-scores["other"][5:], kind="stable")]
    w.n.value = 2
    w.prompt.value = 0
    assert w.n.max == 5 and w.n.value == 2


def test_best_of_n_pick_against_the_oracle(best_of_n):
    w = BestOfNBrowser(*best_of_n)
    # first 5: "reward" picks #1 (not aligned); the oracle's pick is the first aligned image, #2
    assert w.pick("reward") == 1 and w.oracle_pick() == 2
    assert w.summary_lines() == ["reward picks #1 (score 0.9): pick is aligned: no; the oracle picks #2", "2 of 5 images aligned"]
    w.n.value = 4
    w.reward_b.value = "other"
    assert w.summary_lines()[:2] == ["reward picks #1 (score 0.9): pick is aligned: no; the oracle picks #2",
                                    "other picks #0 (score 5): pick is aligned: no; the oracle picks #2"]
    assert "<b>other</b>" in w.grid_b.value and w.grid_a.value.count("<figure") == 4
    w.prompt.value = 1
    w.reward_a.value = "reward"
    w.reward_b.value = None
    assert w.summary_lines() == ["reward picks #2 (score 3): pick is aligned: no; the oracle picks #0", "2 of 3 images aligned"]
    w.n.value = 2
    assert w.summary_lines()[0] == "reward picks #0 (score 2): pick is aligned: yes; the oracle's pick too"
    assert w.grid_b.value == ""
    assert "pick is aligned: yes" in w.summary.value


def test_best_of_n_pick_rates_and_no_verdict(best_of_n):
    prompts, images, scores, verdict = best_of_n
    w = BestOfNBrowser(prompts, images, scores, verdict)
    assert w.pick_rates() == {"first image": 0.5, "reward": 0.0, "other": 0.0, VERDICT_CEILING: 1.0}
    assert w.pick_rates(1) == {"first image": 0.5, "reward": 0.5, "other": 0.5, VERDICT_CEILING: 0.5}
    blind = BestOfNBrowser(prompts, images, scores)
    assert blind.oracle_pick() is None and blind.summary_lines()[-1] == "no verdict given: the pick cannot be checked"
    with pytest.raises(ValueError, match="needs a verdict"):
        blind.pick_rates()


def test_best_of_n_groups_and_static_figure(best_of_n):
    prompts, images, scores, verdict = best_of_n
    w = BestOfNBrowser(prompts, images, scores, verdict, groups=[7, 7, 3, 3, 7, 1, 1, 1])
    assert [list(g) for g in w.groups] == [[0, 1, 4], [2, 3], [5, 6, 7]]
    assert [label for label, _ in w.prompt.options] == ["a red circle (3) [0]", "a red circle (2) [1]", "two blue squares (3)"]
    w.reward_b.value = "other"
    fig = w.static_figure()
    assert len(fig.axes) == 2 * 3
    tile = w.tile(2)
    assert (tile[0, 0] == (40, 170, 70)).all() and (w.tile(0)[0, 0] == (210, 40, 40)).all()


def test_best_of_n_rejects_bad_input(best_of_n):
    prompts, images, scores, verdict = best_of_n
    with pytest.raises(ValueError, match="scores must be a non-empty dict"):
        BestOfNBrowser(prompts, images, {})
    with pytest.raises(ValueError, match="prompts must be a list of 8 strings"):
        BestOfNBrowser(prompts[:7], images, scores)
    with pytest.raises(ValueError, match=r"scores\['reward'\] must be a named \(N,\) = \(8,\) array"):
        BestOfNBrowser(prompts, images, {"reward": scores["reward"][:5]})
    with pytest.raises(ValueError, match="verdict must be None or"):
        BestOfNBrowser(prompts, images, scores, np.arange(8))
    with pytest.raises(ValueError, match="mixes prompts"):
        BestOfNBrowser(prompts, images, scores, verdict, groups=[0] * 8)
    with pytest.raises(ValueError, match="images must be a non-empty uint8 array"):
        BestOfNBrowser(prompts, images[..., 0], scores)


# ----------------------------------------------------------------------------- bundles


def test_best_of_n_bundle_round_trip(tmp_path, best_of_n):
    prompts, images, scores, verdict = best_of_n
    side = save_best_of_n_bundle(tmp_path / "explore", prompts, images, scores, verdict.astype(int),
                                 groups=np.array([0] * 5 + [1] * 3), meta={"notebook": "20"})
    assert sorted(p.name for p in side.parent.iterdir()) == ["best_of_n.json", "best_of_n.npz"]
    b = load_best_of_n_bundle(tmp_path / "explore")
    assert b.prompts == prompts and np.array_equal(b.images, images) and list(b.scores) == ["reward", "other"]
    assert all(np.array_equal(b.scores[k], scores[k]) for k in scores)
    assert b.verdict.dtype == bool and np.array_equal(b.verdict, verdict)
    assert b.groups == [0] * 5 + [1] * 3 and b.meta == {"notebook": "20"}
    assert BestOfNBrowser.from_bundle(b).pick("reward") == 1
    save_best_of_n_bundle(tmp_path / "plain", prompts, images, {"r": scores["reward"]})
    plain = load_best_of_n_bundle(tmp_path / "plain")
    assert plain.verdict is None and plain.groups is None


def test_rich_bundle_round_trip(tmp_path, rich):
    images, labels, predictions, points = rich
    labels[0].extra = {"aligned": True}
    save_rich_bundle(tmp_path, images, labels, predictions, points, meta={"heatmaps_from": "multi-head"})
    b = load_rich_bundle(tmp_path)
    assert np.array_equal(b.images, images) and b.meta == {"heatmaps_from": "multi-head"}
    for got, want in zip(b.labels, labels):
        assert (got.item_id, got.prompt, got.tokens, got.keywords, got.scores, got.extra) == \
               (want.item_id, want.prompt, want.tokens, want.keywords, want.scores, want.extra)
        assert all(np.array_equal(got.heatmaps[k], want.heatmaps[k]) for k in want.heatmaps)
    assert list(b.predictions["heatmaps"]) == ["implausible"]
    assert np.array_equal(b.predictions["heatmaps"]["implausible"], predictions["heatmaps"]["implausible"])
    assert np.allclose(b.predictions["scores"]["overall"], 0.4) and b.predictions["keywords"] == predictions["keywords"]
    assert b.raw_points == points
    save_rich_bundle(tmp_path / "bare", images, labels)
    bare = load_rich_bundle(tmp_path / "bare")
    assert bare.predictions is None and bare.raw_points is None
    assert HeatmapInspector.from_bundle(b).source.options == ("consolidated", "predicted", "both")


def test_bundle_errors(tmp_path, rich, best_of_n):
    with pytest.raises(BundleError, match="holds no best_of_n bundle \\(missing best_of_n.npz, best_of_n.json\\)"):
        load_best_of_n_bundle(tmp_path / "nothing")
    save_best_of_n_bundle(tmp_path, *best_of_n)
    with pytest.raises(BundleError, match="holds no rich bundle"):
        load_rich_bundle(tmp_path)
    side = tmp_path / "best_of_n.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), "version": 99}))
    with pytest.raises(BundleError, match="expected kind 'best_of_n' version 1"):
        load_best_of_n_bundle(tmp_path)
    images, labels, _, _ = rich
    labels[0].extra = {"not json": object()}
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        save_rich_bundle(tmp_path / "rich", images, labels)


def test_demo_bundles_open_in_both_widgets():
    best_of_n, rich = demo_bundles(n_prompts=2, images_per_prompt=3, seed=0, size=32)
    assert len(best_of_n.images) == len(rich.images) == 6 and rich.images.shape[1:] == (32, 32, 3)
    browser = BestOfNBrowser.from_bundle(best_of_n)
    assert len(browser.groups) == 2 and set(browser.scores) == {"annotator vote share", "oracle overall"}
    inspector = HeatmapInspector.from_bundle(rich)
    assert inspector.raw_points is not None and len(inspector.annotator_colors) == 3
    inspector.next_button.click()
    assert inspector.index == 1
