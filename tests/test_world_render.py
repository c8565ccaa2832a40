"""Tests of the ShapesWorld renderer (feedbacklab.world.render)."""
import itertools
import random

import numpy as np
import pytest

from feedbacklab import world
from feedbacklab.world.grammar import spatial_relation
from feedbacklab.world.renderer import coverage, inside, shape_bbox


def _specs(n, seed=0):
    rng = random.Random(seed)
    return [world.sample_spec(rng, world.FAMILIES[i % 3], split="any") for i in range(n)]


@pytest.mark.parametrize("size", [64, 32])
def test_render_returns_uint8_image_and_true_scene(size):
    for i, spec in enumerate(_specs(60)):
        image, scene = world.render(spec, size=size, seed=i)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert scene.size == size and len(scene.objects) == spec.count and scene.artifacts == []
        assert [(o.color, o.shape) for o in scene.objects] == list(spec.objects)
        if spec.background is not None:
            assert scene.background == spec.background
        assert scene.background in world.BACKGROUNDS
        # the corners are background (objects keep a margin)
        assert (image[0, 0] == world.BACKGROUNDS[scene.background]).all()
        for o in scene.objects:
            x0, y0, x1, y1 = o.bbox
            assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
            assert x0 <= o.center[0] <= x1 and y0 <= o.center[1] <= y1
            # the object's colour is present (fully covered pixels) at its centroid
            cx, cy = int(o.center[0]), int(o.center[1])
            assert np.abs(image[cy, cx].astype(int) - world.COLORS[o.color]).max() <= 1


def test_render_is_seeded_and_varies():
    spec = world.parse("three red squares on a gray background")
    a, sa = world.render(spec, seed=5)
    b, sb = world.render(spec, seed=5)
    c, sc = world.render(spec, seed=6)
    assert np.array_equal(a, b) and sa == sb
    assert not np.array_equal(a, c)
    areas = {round(o.area, 3) for s in range(20) for o in world.render(spec, seed=s)[1].objects}
    centres = {tuple(np.round(o.center, 2)) for s in range(20) for o in world.render(spec, seed=s)[1].objects}
    assert len(areas) > 30 and len(centres) > 30


@pytest.mark.parametrize("size", [64, 32])
def test_objects_do_not_overlap_and_keep_a_gap(size):
    for i, spec in enumerate(_specs(80, seed=1)):
        _, scene = world.render(spec, size=size, seed=i)
        for a, b in itertools.combinations(scene.objects, 2):
            ax0, ay0, ax1, ay1 = a.bbox
            bx0, by0, bx1, by1 = b.bbox
            # compare exact supersampled masks on the union box
            box = (min(ax0, bx0), min(ay0, by0), max(ax1, bx1), max(ay1, by1))
            ca = coverage(lambda x, y: inside(a.shape, x, y, *a.center, a.area), box)
            cb = coverage(lambda x, y: inside(b.shape, x, y, *b.center, b.area), box)
            assert (ca * cb).sum() == 0


def test_spatial_relation_holds_in_render():
    for i, spec in enumerate(_specs(90, seed=2)):
        if spec.family == "spatial":
            _, scene = world.render(spec, seed=i)
            assert spatial_relation(scene.objects[0].center, scene.objects[1].center) == spec.relation


def test_anti_aliasing_and_area_match_geometry():
    spec = world.parse("one blue circle on a white background")
    image, scene = world.render(spec, size=64, seed=3)
    obj = scene.objects[0]
    bg = np.array(world.BACKGROUNDS["white"], float)
    fg = np.array(world.COLORS["blue"], float)
    alpha = ((image - bg) @ (fg - bg)) / ((fg - bg) @ (fg - bg))
    partial = (alpha > 0.05) & (alpha < 0.95)
    assert partial.sum() > 10  # anti-aliased edge pixels exist
    assert abs(alpha.sum() - obj.area) / obj.area < 0.02  # coverage integrates to the analytic area
    assert abs(obj.area - np.pi * (np.sqrt(obj.area / np.pi)) ** 2) < 1e-9


@pytest.mark.parametrize("shape, expected", [("circle", np.pi * 100), ("square", 400.0),
                                             ("triangle", np.sqrt(3) / 4 * 900)])
def test_coverage_integrates_to_area(shape, expected):
    box = shape_bbox(shape, 32.3, 31.7, expected, 64)
    cov = coverage(lambda x, y: inside(shape, x, y, 32.3, 31.7, expected), box, supersample=16)
    assert abs(cov.sum() - expected) / expected < 0.01
    assert cov.max() == 1.0


def test_triangle_centroid_is_its_centre_of_mass():
    area = 300.0
    box = shape_bbox("triangle", 30.0, 30.0, area, 64)
    cov = coverage(lambda x, y: inside("triangle", x, y, 30.0, 30.0, area), box, supersample=16)
    ys, xs = np.mgrid[box[1]:box[3], box[0]:box[2]] + 0.5
    assert abs((cov * xs).sum() / cov.sum() - 30.0) < 0.05
    assert abs((cov * ys).sum() / cov.sum() - 30.0) < 0.05


def test_render_rejects_bad_input():
    with pytest.raises(TypeError):
        world.render("two red circles on a white background")
    with pytest.raises(ValueError):
        world.render(world.parse("one red circle on a white background"), size=8)


def test_describe_round_trips_true_scenes():
    for i, spec in enumerate(_specs(60, seed=4)):
        _, scene = world.render(spec, seed=i)
        family = "spatial" if spec.family == "spatial" else None
        assert world.parse(world.describe(scene, family=family)) == spec


def test_describe_rejects_inexpressible_scenes():
    _, scene = world.render(world.parse("a red circle and a blue square on a white background"), seed=0)
    scene.objects.append(scene.objects[0])
    with pytest.raises(world.DescribeError):
        world.describe(scene)
    scene.objects = []
    with pytest.raises(world.DescribeError):
        world.describe(scene)


# ------------------------------------------------------------------------------------------ corruptions
from feedbacklab.world import corrupt  # noqa: E402
from feedbacklab.world.perception import OBJECT_MIN_FRACTION, SPECK_FRACTION  # noqa: E402


def _clean(seed=0, text="three red circles on a gray background", size=64):
    return world.render(world.parse(text), size=size, seed=seed)


@pytest.mark.parametrize("kind", corrupt.PHOTOMETRIC)
def test_photometric_corruptions_keep_the_scene_and_are_seeded(kind):
    image, scene = _clean()
    a, ta = corrupt.apply(kind, image, scene, np.random.default_rng(1), 0.6)
    b, _ = corrupt.apply(kind, image, scene, np.random.default_rng(1), 0.6)
    assert a.dtype == np.uint8 and a.shape == image.shape and np.array_equal(a, b)
    assert not np.array_equal(a, image)
    assert ta.scene == scene and ta.artifacts == [] and ta.kind == kind and ta.strength == 0.6
    if kind in ("noise", "blur", "color_jitter"):
        same, _ = corrupt.apply(kind, image, scene, np.random.default_rng(1), 0.0)
        assert np.array_equal(same, image)


def test_photometric_strength_orders_the_damage():
    image, scene = _clean(seed=2)
    for kind in ("noise", "blur", "jpeg"):
        err = [np.abs(corrupt.apply(kind, image, scene, np.random.default_rng(0), s)[0].astype(float) - image).mean()
               for s in (0.2, 0.5, 1.0)]
        assert err[0] < err[1] < err[2], kind


def test_missing_object_restores_the_background_exactly():
    image, scene = _clean(seed=3)
    out, truth = corrupt.missing_object(image, scene, random.Random(0))
    gone = [o for o in scene.objects if o not in truth.scene.objects]
    assert len(gone) == 1 and len(truth.scene.objects) == 2
    x0, y0, x1, y1 = gone[0].bbox
    assert np.abs(out[y0:y1, x0:x1].astype(int) - world.BACKGROUNDS["gray"]).max() <= 1


def test_wrong_color_repaints_one_object():
    image, scene = _clean(seed=4)
    out, truth = corrupt.wrong_color(image, scene, np.random.default_rng(5))
    (i,) = truth.changed
    new = truth.scene.objects[i].color
    assert new != "red" and [o.color for o in truth.scene.objects].count("red") == 2
    cx, cy = map(int, scene.objects[i].center)
    assert np.abs(out[cy, cx].astype(int) - world.COLORS[new]).max() <= 1


def test_extra_object_lands_in_free_space():
    image, scene = _clean(seed=5)
    out, truth = corrupt.extra_object(image, scene, np.random.default_rng(6))
    new = truth.scene.objects[-1]
    assert len(truth.scene.objects) == 4 and truth.changed == [3]
    for o in scene.objects:
        box = (0, 0, 64, 64)
        overlap = (coverage(lambda x, y: inside(o.shape, x, y, *o.center, o.area), box)
                   * coverage(lambda x, y: inside(new.shape, x, y, *new.center, new.area), box)).sum()
        assert overlap == 0


def test_fragment_size_sits_between_speck_and_object():
    for size in (64, 32):
        for s in (0.0, 1.0):
            image, scene = _clean(seed=6, size=size)
            out, truth = corrupt.fragment(image, scene, np.random.default_rng(7), s)
            changed = np.any(out != image, axis=2)
            area = np.abs(out.astype(float) - image).max(axis=2)[changed].sum() / np.abs(
                np.subtract(world.COLORS["red"], world.BACKGROUNDS["gray"])).max()
            assert SPECK_FRACTION * size**2 <= area < OBJECT_MIN_FRACTION * size**2, (size, s, area)
            (t,) = truth.artifacts
            assert t.kind == "fragment" and truth.scene == scene


def test_off_palette_colours_are_far_from_every_palette_mixture():
    for bg in world.BACKGROUNDS:
        colours = corrupt.off_palette_colors(bg)
        assert len(colours) >= 2
        b = np.array(world.BACKGROUNDS[bg], float)
        for rgb in colours.values():
            for c in world.COLORS.values():
                v = np.array(c, float) - b
                a = np.clip((np.array(rgb) - b) @ v / (v @ v), 0, 1)
                assert np.linalg.norm(np.array(rgb) - b - a * v) >= corrupt.OFF_PALETTE_MARGIN


@pytest.mark.parametrize("kind", corrupt.ARTIFACT_KINDS)
def test_artifact_truth_lies_inside_the_changed_pixels(kind):
    image, scene = _clean(seed=8)
    out, truth = corrupt.apply(kind, image, scene, np.random.default_rng(9), 0.7)
    (t,) = truth.artifacts
    assert t.kind == kind
    x0, y0, x1, y1 = t.bbox
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and x0 <= t.center[0] <= x1 and y0 <= t.center[1] <= y1
    changed = np.any(out != image, axis=2)
    assert changed[y0:y1, x0:x1].any()


def test_corruption_errors():
    image, scene = _clean()
    with pytest.raises(corrupt.CorruptionError):
        corrupt.apply("sparkle", image, scene, random.Random(0))
    with pytest.raises(corrupt.CorruptionError):
        corrupt.apply("noise", image, scene, random.Random(0), strength=1.5)
    with pytest.raises(TypeError):
        corrupt.apply("noise", image, scene, 0)
    with pytest.raises(TypeError):
        corrupt.apply("noise", image.astype(float), scene, random.Random(0))
    empty, empty_scene = world.render(world.parse("one red circle on a white background"), seed=0)
    _, truth = corrupt.missing_object(empty, empty_scene, random.Random(0))
    with pytest.raises(corrupt.CorruptionError):
        corrupt.malformed(empty, truth.scene, random.Random(0))
