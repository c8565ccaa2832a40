"""Tests of the ShapesWorld prompt grammar (feedbacklab.world.grammar)."""
import itertools
import random

import numpy as np
import pytest

from feedbacklab import world
from feedbacklab.world.grammar import contrastive_specs, spatial_relation


def test_vocabulary_sizes():
    assert len(world.COLORS) >= 5 and len(world.BACKGROUNDS) >= 4
    assert world.SHAPES == ("circle", "square", "triangle")
    assert world.COUNT_WORDS == ("one", "two", "three", "four")
    assert not set(world.COLORS) & set(world.BACKGROUNDS)


def test_palette_and_backgrounds_are_far_apart():
    colours = {**world.COLORS, **world.BACKGROUNDS}
    for (a, x), (b, y) in itertools.combinations(colours.items(), 2):
        assert np.linalg.norm(np.subtract(x, y)) >= 95, (a, b)


@pytest.mark.parametrize("text, spec", [
    ("one red circle on a white background", world.Spec("attribute", (("red", "circle"),), "white")),
    ("three blue squares on a beige background", world.Spec("attribute", (("blue", "square"),) * 3, "beige")),
    ("a red circle and a blue square on a white background",
     world.Spec("composition", (("red", "circle"), ("blue", "square")), "white")),
    ("a red circle to the left of a blue square",
     world.Spec("spatial", (("red", "circle"), ("blue", "square")), None, "left")),
    ("a green triangle below a yellow circle",
     world.Spec("spatial", (("green", "triangle"), ("yellow", "circle")), None, "below")),
])
def test_parse_known_prompts(text, spec):
    assert world.parse(text) == spec
    assert world.prompt(spec) == text
    assert spec.count == len(spec.objects)


@pytest.mark.parametrize("family", world.FAMILIES)
@pytest.mark.parametrize("split", ["seen", "unseen", "any"])
def test_sample_parse_prompt_round_trip(family, split):
    rng = random.Random(7)
    for _ in range(300):
        spec = world.sample_spec(rng, family=family, split=split)
        assert spec.family == family
        text = world.prompt(spec)
        assert world.parse(text) == spec and world.prompt(world.parse(text)) == text
        if split == "seen":
            assert not world.is_unseen(spec)
        elif split == "unseen":
            assert world.is_unseen(spec)


def test_sampling_is_seeded():
    a = [world.prompt(world.sample_spec(random.Random(3), f)) for f in world.FAMILIES]
    b = [world.prompt(world.sample_spec(random.Random(3), f)) for f in world.FAMILIES]
    assert a == b


def test_seen_split_still_covers_every_colour_and_shape():
    rng = random.Random(0)
    seen = {spec.objects[0] for spec in (world.sample_spec(rng) for _ in range(2000))}
    assert {c for c, _ in seen} == set(world.COLORS)
    assert {s for _, s in seen} == set(world.SHAPES)
    assert not seen & world.UNSEEN_PAIRS
    assert len(world.UNSEEN_PAIRS) >= 2


@pytest.mark.parametrize("text, position, word", [
    ("two red circle on a white background", 2, "circle"),
    ("one red circles on a white background", 2, "circles"),
    ("three pink circles on a white background", 1, "pink"),
    ("a red circle left of a blue square", 3, "left"),
    ("a red circle and a blue square on a white background now", 11, "now"),
    ("a red circle to the left of", 7, None),
    ("five red circles on a white background", 0, "five"),
    ("two red circles on a white  background", 6, ""),
    ("Two red circles on a white background", 0, "Two"),
    ("a red circle to the left of a blue square on a white background", 10, "on"),
])
def test_parse_errors_name_word_and_position(text, position, word):
    with pytest.raises(world.PromptError) as err:
        world.parse(text)
    assert err.value.position == position and err.value.word == word
    assert f"position {position}" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError):
        world.parse(None)


@pytest.mark.parametrize("bad", [
    dict(family="attribute", objects=(("red", "circle"), ("blue", "circle")), background="white"),
    dict(family="attribute", objects=(("red", "circle"),) * 5, background="white"),
    dict(family="attribute", objects=(("pink", "circle"),), background="white"),
    dict(family="composition", objects=(("red", "circle"),), background="white"),
    dict(family="spatial", objects=(("red", "circle"), ("blue", "square")), background=None, relation="near"),
    dict(family="spatial", objects=(("red", "circle"), ("blue", "square")), background="white",
         relation="left"),
    dict(family="poem", objects=(("red", "circle"),), background="white"),
])
def test_invalid_specs_raise(bad):
    with pytest.raises(ValueError):
        world.Spec(**bad)


def _differences(a, b):
    """Attributes in which two specs of one family differ; attribute prompts share one (color, shape)."""
    diffs = {"count"} if a.count != b.count else set()
    diffs |= {"background"} if a.background != b.background else set()
    diffs |= {"relation"} if a.relation != b.relation else set()
    pairs = [(a.objects[0], b.objects[0])] if a.family == "attribute" else list(zip(a.objects, b.objects))
    changed = [attr for x, y in pairs for k, attr in enumerate(("color", "shape")) if x[k] != y[k]]
    return sorted(diffs) + changed


@pytest.mark.parametrize("family", world.FAMILIES)
def test_contrastive_prompts_differ_in_exactly_one_attribute(family):
    rng = random.Random(11)
    for _ in range(40):
        spec = world.sample_spec(rng, family, split="any")
        text = world.prompt(spec)
        variants = world.contrastive_prompts(text)
        assert len(variants) == len(set(variants)) and text not in variants
        for v, (attr, vspec) in zip(variants, contrastive_specs(spec)):
            other = world.parse(v)
            assert other == vspec and other.family == family
            assert _differences(spec, other) == [attr]


def test_contrastive_prompts_cover_all_attribute_values():
    variants = world.contrastive_prompts("two red circles on a white background")
    expected = 3 + (len(world.COLORS) - 1) + 2 + (len(world.BACKGROUNDS) - 1)
    assert len(variants) == expected
    assert "four red circles on a white background" in variants
    spatial = world.contrastive_prompts("a red circle to the left of a blue square")
    assert {"a red circle to the right of a blue square", "a red circle above a blue square",
            "a red circle below a blue square"} <= set(spatial)


def test_spatial_relation_dominant_axis():
    assert spatial_relation((1, 5), (9, 6)) == "left"
    assert spatial_relation((9, 5), (1, 6)) == "right"
    assert spatial_relation((5, 1), (6, 9)) == "above"
    assert spatial_relation((5, 9), (6, 1)) == "below"
    assert spatial_relation((0, 0), (3, 3)) is None
