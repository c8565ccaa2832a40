"""Scene types shared by the renderer, the corruptions and the oracle, and `describe` (scene -> prompt)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .grammar import BACKGROUNDS, COUNT_WORDS, Spec, prompt, spatial_relation

BBox = tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels, x1/y1 exclusive


@dataclass
class SceneObject:
    """One object: palette color, shape, centroid (x, y), pixel bbox and area in pixels."""

    color: str
    shape: str
    center: tuple[float, float]
    bbox: BBox
    area: float


@dataclass
class Artifact:
    """An implausible region: kind ("off_palette", "malformed", "fused", "fragment", "color_bleed") and where."""

    kind: str
    center: tuple[float, float]
    bbox: BBox


@dataclass
class Scene:
    """A true (rendered) or perceived scene: image side, background name, objects, artifacts."""

    size: int
    background: str | None
    objects: list[SceneObject] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)


class DescribeError(ValueError):
    """The scene cannot be written in the ShapesWorld grammar (e.g. no objects, or >2 distinct objects)."""


def describe(scene: Scene, family: str | None = None) -> str:
    """World-language caption of `scene`, parseable by `parse`.

    family=None picks attribute for 1-4 identical objects and composition for two distinct ones;
    family="spatial" describes two objects by the relation of their centres. Scenes the grammar
    cannot express raise DescribeError.
    """
    objs = [(o.color, o.shape) for o in scene.objects]
    distinct = Counter(objs)
    if family == "spatial":
        if len(objs) != 2:
            raise DescribeError(f"spatial captions need exactly 2 objects, scene has {len(objs)}")
        rel = spatial_relation(scene.objects[0].center, scene.objects[1].center)
        if rel is None:
            raise DescribeError("the two objects are diagonal (|dx| == |dy|): no single relation")
        return prompt(Spec("spatial", tuple(objs), None, rel))
    if family not in (None, "attribute", "composition"):
        raise ValueError(f"unknown family {family!r}; expected None, 'attribute', 'composition' or 'spatial'")
    if scene.background not in BACKGROUNDS:
        raise DescribeError(f"background {scene.background!r} is not a ShapesWorld background")
    if family in (None, "attribute") and len(distinct) == 1 and 1 <= len(objs) <= len(COUNT_WORDS):
        return prompt(Spec("attribute", tuple(objs), scene.background))
    if family in (None, "composition") and len(objs) == 2 and len(distinct) == 2:
        return prompt(Spec("composition", tuple(objs), scene.background))
    raise DescribeError(
        f"cannot describe {len(objs)} objects ({dict(distinct)}) as {family or 'attribute/composition'}: "
        "the grammar has 1-4 identical objects or 2 distinct ones")
