"""Tests of the ShapesWorld oracle: perceive, judge, corruption ground truth, validation tables."""
import random

import numpy as np
import pytest
from PIL import Image

from feedbacklab import world
from feedbacklab.world import corrupt, validate
from feedbacklab.world.grammar import contrastive_specs
from feedbacklab.world.renderer import draw, to_uint8


def _cases(n, size, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        spec = world.sample_spec(rng, world.FAMILIES[i % 3], split="any")
        image, scene = world.render(spec, size=size, seed=1000 * seed + i)
        out.append((spec, image, scene))
    return out


def _scene_image(objects, background="white", size=64):
    """uint8 image of explicit (color, shape, cx, cy, area) objects."""
    image, scene = draw(objects, background, size)
    return to_uint8(image), scene


@pytest.mark.parametrize("size", [64, 32])
def test_clean_renders_are_judged_aligned(size):
    for spec, image, _ in _cases(90, size):
        j = world.judge(world.prompt(spec), image)
        assert j.aligned and all(j.attributes.values()), (world.prompt(spec), j.attributes)
        assert j.misaligned_tokens == [] and j.misaligned_points == [] and j.artifact_points == []
        assert j.plausibility == 1.0 and j.aesthetics > 0.9 and j.size == size
        expected = {"count", "color", "shape"} | ({"relation"} if spec.family == "spatial" else {"background"})
        assert set(j.attributes) == expected and j.tokens == world.prompt(spec).split(" ")


@pytest.mark.parametrize("size", [64, 32])
def test_perception_matches_the_true_scene(size):
    for _, image, truth in _cases(60, size, seed=1):
        seen = world.perceive(image)
        assert seen.background == truth.background and seen.artifacts == []
        assert len(seen.objects) == len(truth.objects)
        for t in truth.objects:
            p = min(seen.objects, key=lambda o: np.hypot(o.center[0] - t.center[0], o.center[1] - t.center[1]))
            assert (p.color, p.shape) == (t.color, t.shape)
            assert np.hypot(p.center[0] - t.center[0], p.center[1] - t.center[1]) < 0.3
            assert abs(p.area - t.area) / t.area < 0.05
            assert max(abs(a - b) for a, b in zip(p.bbox, t.bbox)) <= 2  # thin apexes: solid vs touched px


def test_contrastive_prompts_flip_exactly_the_changed_attribute():
    rng = random.Random(3)
    for spec, image, _ in _cases(60, 64, seed=2):
        changed, other = rng.choice(contrastive_specs(spec))
        j = world.judge(world.prompt(other), image)
        assert {a for a, ok in j.attributes.items() if not ok} == {changed}
        assert not j.aligned and j.misaligned_tokens


def test_attribute_prompt_rules_by_hand():
    prompt = "two red circles on a white background"
    two = [("red", "circle", 16, 16, 120.0), ("red", "circle", 46, 16, 120.0)]
    image, _ = _scene_image(two + [("blue", "square", 30, 46, 120.0)])
    j = world.judge(prompt, image)  # an extra object: only the count is wrong
    assert j.attributes == {"count": False, "color": True, "shape": True, "background": True}
    assert j.misaligned_tokens == [0]
    assert np.allclose(j.misaligned_points, [(30, 46)], atol=0.3)
    image, _ = _scene_image([two[0], ("blue", "circle", 46, 16, 120.0)])
    j = world.judge(prompt, image)  # one wrong colour: colour wrong, pointed at the blue circle
    assert j.attributes == {"count": True, "color": False, "shape": True, "background": True}
    assert j.misaligned_tokens == [1] and np.allclose(j.misaligned_points, [(46, 16)], atol=0.3)
    image, _ = _scene_image([two[0]], background="gray")
    j = world.judge(prompt, image)  # one missing copy: count (and background) wrong only
    assert j.attributes == {"count": False, "color": True, "shape": True, "background": False}
    assert j.misaligned_tokens == [0, 5] and j.misaligned_points == []
    image, _ = _scene_image([])
    j = world.judge(prompt, image)  # nothing at all
    assert j.attributes == {"count": False, "color": False, "shape": False, "background": True}
    assert j.misaligned_tokens == [0, 1, 2]


def test_composition_and_spatial_rules_by_hand():
    image, _ = _scene_image([("red", "circle", 16, 32, 150.0)])
    j = world.judge("a red circle and a blue square on a white background", image)
    assert j.attributes == {"count": False, "color": False, "shape": False, "background": True}
    assert j.misaligned_tokens == [5, 6]  # the missing blue square's words
    image, _ = _scene_image([("red", "circle", 46, 32, 150.0), ("blue", "square", 16, 32, 150.0)])
    j = world.judge("a red circle to the left of a blue square", image)
    assert j.attributes == {"count": True, "color": True, "shape": True, "relation": False}
    assert j.tokens[j.misaligned_tokens[0]] == "left" and j.misaligned_tokens == [5]
    assert np.allclose(j.misaligned_points, [(46, 32)], atol=0.3)
    assert world.judge("a red circle to the right of a blue square", image).aligned
    image, _ = _scene_image([("blue", "square", 40, 32, 150.0)])
    j = world.judge("a red circle above a blue square", image)
    assert j.attributes["relation"] is False and j.misaligned_tokens == [1, 2, 3]
    assert np.allclose(j.misaligned_points, [(40, 32 - 64 / 3)], atol=0.3)  # where the circle should be


def test_judge_accepts_pil_tensor_and_float_images():
    torch = pytest.importorskip("torch")
    spec, image, _ = _cases(1, 64, seed=4)[0]
    text = world.prompt(spec)
    ref = world.judge(text, image)
    variants = [Image.fromarray(image), image.astype(np.float32) / 255,
                torch.from_numpy(image).permute(2, 0, 1).float() / 255, torch.from_numpy(image).float() / 255]
    for v in variants:
        j = world.judge(text, v)
        assert j.attributes == ref.attributes and j.aligned
        assert abs(j.aesthetics - ref.aesthetics) < 1e-3


@pytest.mark.parametrize("bad, error", [
    (np.zeros((64, 64), np.uint8), ValueError), (np.zeros((64, 64, 3)) + 2.0, ValueError),
    (np.zeros((64, 48, 3), np.uint8), ValueError), ("image.png", TypeError),
    (np.zeros((64, 64, 3), np.int32), TypeError),
])
def test_bad_images_raise(bad, error):
    with pytest.raises(error):
        world.perceive(bad)


def test_bad_prompt_raises_prompt_error():
    with pytest.raises(world.PromptError):
        world.judge("two red circles", np.zeros((64, 64, 3), np.uint8))


@pytest.mark.parametrize("kind", corrupt.ARTIFACT_KINDS)
def test_artifacts_are_detected_where_they_were_made(kind):
    found = 0
    cases = _cases(24, 64, seed=5)
    for i, (spec, image, scene) in enumerate(cases):
        out, truth = corrupt.apply(kind, image, scene, np.random.default_rng(i), strength=0.75)
        assert len(truth.artifacts) == 1
        t = truth.artifacts[0]
        j = world.judge(world.prompt(spec), out)
        near = [a for a in j.scene.artifacts if a.kind == kind and validate._hit(a, t, 3.2)]
        found += bool(near)
        assert j.plausibility < 1.0 or not j.scene.artifacts
    assert found / len(cases) >= 0.9


@pytest.mark.parametrize("kind, attribute", [("extra_object", "count"), ("missing_object", "count"),
                                             ("wrong_color", "color")])
def test_alignment_corruptions_are_flagged(kind, attribute):
    for i, (spec, image, scene) in enumerate(_cases(24, 64, seed=6)):
        out, truth = corrupt.apply(kind, image, scene, random.Random(i))
        j = world.judge(world.prompt(spec), out)
        assert not j.attributes[attribute] and not j.aligned
        seen = sorted((o.color, o.shape) for o in j.scene.objects)
        assert seen == sorted((o.color, o.shape) for o in truth.scene.objects)


def _mean_scores(kind, strengths, cases):
    out = []
    for s in strengths:
        js = [world.judge(world.prompt(spec), corrupt.apply(kind, image, scene, np.random.default_rng(i), s)[0])
              for i, (spec, image, scene) in enumerate(cases)]
        out.append((np.mean([j.aesthetics for j in js]), np.mean([j.plausibility for j in js])))
    return np.array(out)


@pytest.mark.parametrize("kind", corrupt.PHOTOMETRIC)
def test_aesthetics_fall_monotonically_with_photometric_strength(kind):
    scores = _mean_scores(kind, (0.0, 0.25, 0.5, 0.75, 1.0), _cases(12, 64, seed=7))
    assert scores[0, 0] > 0.95 or kind == "jpeg"
    assert np.all(np.diff(scores[:, 0]) < 0), scores[:, 0]


@pytest.mark.parametrize("kind", ["malformed", "off_palette", "fragment", "color_bleed"])
def test_plausibility_falls_monotonically_with_artifact_strength(kind):
    scores = _mean_scores(kind, (0.5, 0.75, 1.0), _cases(12, 64, seed=8))
    assert np.all(np.diff(scores[:, 1]) < 0) and scores[0, 1] < 1.0, scores[:, 1]


def test_plausibility_falls_with_the_number_of_artifacts():
    spec, image, scene = _cases(1, 64, seed=9)[0]
    text = world.prompt(spec)
    once, _ = corrupt.apply("fragment", image, scene, np.random.default_rng(0), 0.5)
    twice, _ = corrupt.apply("off_palette", once, scene, np.random.default_rng(1), 0.5)
    p = [world.judge(text, im).plausibility for im in (image, once, twice)]
    assert p[0] == 1.0 and p[0] > p[1] > p[2]


def test_oracle_validation_tables():
    df = validate.oracle_validation(n=24, size=32, seed=0, n_corrupt=6)
    assert list(df.columns) == validate.COLUMNS
    assert set(df.table) == {"clean", "photometric", "artifacts", "alignment"}
    overall = df[(df.table == "clean") & (df.attribute == "all")].set_index("metric").value
    assert overall["accuracy_true"] == 1.0 and overall["accuracy_contrastive"] == 1.0
    breaks = validate.breaking_strength(df)
    assert set(breaks.index) >= set(corrupt.PHOTOMETRIC)
    recall = df[(df.table == "artifacts") & (df.metric == "recall") & (df.strength == 1.0)]
    assert (recall.value >= 0.5).all()


def test_unrecognised_background_is_none_and_judged_wrong():
    canvas = np.full((64, 64, 3), world.COLORS["red"], np.uint8)
    assert world.perceive(canvas).background is None
    j = world.judge("one red square on a white background", canvas)
    assert j.attributes["background"] is False and 5 in j.misaligned_tokens
    with pytest.raises(world.DescribeError):
        world.describe(j.scene)


@pytest.mark.parametrize("image", [
    np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8),
    np.repeat(np.linspace(0, 255, 48)[None, :, None], 48, 0).repeat(3, 2).astype(np.uint8),
    np.zeros((32, 32, 3), np.uint8),
])
def test_any_rgb_image_is_read_without_error(image):
    j = world.judge("two red circles on a white background", image)
    assert 0.0 <= j.plausibility <= 1.0 and 0.0 <= j.aesthetics <= 1.0
    assert all(0 <= p[0] <= image.shape[1] and 0 <= p[1] <= image.shape[0] for p in j.artifact_points)


def test_pure_noise_is_implausible_and_unaesthetic():
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    j = world.judge("two red circles on a white background", image)
    assert j.plausibility < 0.1 and j.aesthetics < 0.3 and not j.aligned
