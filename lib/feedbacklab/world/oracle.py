"""The oracle's judgement of a prompt against any image: `judge(prompt, image) -> Judgement`.

How a careful rater judges each attribute (the rules, per family):

- Perceived objects are all palette-coloured blobs of object size, including malformed ones and
  fused blobs (a fused pair counts as ONE object: the rater sees one blob). Fragments, off-palette
  blobs and colour bleed are artifacts, never objects.
- The prompt's objects are matched to perceived objects so that as many colours and shapes agree as
  possible (attribute family: the `count` best-agreeing objects; two-object families: the injective
  assignment with the most agreements, ties broken towards a satisfied relation).
- count: right iff the number of perceived objects equals the prompt's count (extra objects of any
  kind make it wrong, and so do missing ones).
- color / shape: right iff every prompt object has a matched object and every matched object has the
  stated colour / shape. Surplus objects affect only the count. A prompt object with no perceived
  counterpart makes its colour and shape wrong (its words are misaligned).
- background: right iff the perceived background is the stated one (attribute, composition only).
- relation (spatial only): right iff both objects are matched and the first is on the stated side of
  the second along the dominant axis (|dx| > |dy| for left/right, |dy| > |dx| for above/below).
- aligned: all stated attributes right.

Misaligned tokens: the count word (attribute family), the colour / shape word of each wrong or missing
object, the background word, the relation word ("left", "right", "above", "below"). Extra objects in
the two-object families have no word; they are reported as points only.
Misaligned points: centres of matched objects with a wrong colour or shape, of extra objects, of the
first object of a wrong relation, and, in spatial prompts, where a missing object should be (a third of
the image side from its partner, on the stated side). A missing object in the other families has no
definite place and gets no point.

Plausibility (RichHF "plausibility"; artifacts only), with each artifact's severity s_i = the area
fraction it affects (mismatch area (1 - IoU) * A for malformed / fused objects, pixel area otherwise):

    plausibility = exp(-sum_i (ARTIFACT_BASE + ARTIFACT_AREA_WEIGHT * s_i))      (1 with no artifacts)

Aesthetics (photometric quality; artifacts excluded), the product of two factors in [0, 1]:

    fidelity  = exp(-residual / FIDELITY_SCALE)     residual: mean RGB distance of the raw pixels from the
                                                    world's mixture model bg + alpha (c_k - bg) (noise,
                                                    JPEG ringing, colour jitter all raise it)
    sharpness = min(1, SHARP_WIDTH / edge_width)    edge_width: median over objects of the number of
                                                    pixels with alpha in (0.15, 0.85) per unit perimeter,
                                                    i.e. the ramp width in px (blur raises it)
    aesthetics = fidelity * sharpness
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import permutations

import numpy as np

from .grammar import RELATION_PHRASES, Spec, parse, spatial_relation
from .perception import Reading, read
from .scene import Scene, SceneObject

ARTIFACT_BASE = 0.3          # plausibility penalty per artifact
ARTIFACT_AREA_WEIGHT = 6.0   # plus this times the artifact's area fraction
FIDELITY_SCALE = 20.0        # residual (0..255) at which fidelity falls to 1/e
SHARP_WIDTH = 0.9            # edge width (px) of clean renders; wider ramps lower sharpness
MAX_MATCHED = 8              # two-object matching considers at most this many (largest) objects


@dataclass
class Judgement:
    """The oracle's verdict on one (prompt, image) pair; see the module docstring for every rule."""

    prompt: str
    tokens: list[str]
    attributes: dict[str, bool]
    aligned: bool
    misaligned_tokens: list[int]
    misaligned_points: list[tuple[float, float]]
    artifact_points: list[tuple[float, float]]
    plausibility: float
    aesthetics: float
    scene: Scene
    size: int
    quality: dict[str, float] = field(default_factory=dict)  # fidelity, sharpness, noise_sigma, residual, ...


def _plausibility(reading: Reading) -> float:
    """exp(-sum_i (ARTIFACT_BASE + ARTIFACT_AREA_WEIGHT * s_i)) over perceived artifacts."""
    return float(np.exp(-sum(ARTIFACT_BASE + ARTIFACT_AREA_WEIGHT * s for s in reading.severities)))


def _quality(reading: Reading) -> dict[str, float]:
    """Aesthetics factors (module docstring) and the raw statistics behind them."""
    fidelity = float(np.exp(-reading.residual / FIDELITY_SCALE))
    sharpness = 1.0 if reading.edge_width <= 0 else float(min(1.0, SHARP_WIDTH / reading.edge_width))
    return {"fidelity": fidelity, "sharpness": sharpness, "aesthetics": fidelity * sharpness,
            "noise_sigma": reading.noise_sigma, "residual": reading.residual, "edge_width": reading.edge_width}


def _token_positions(spec: Spec) -> dict[str, list[int]]:
    """Token indices of each prompt word class: color_i / shape_i per object, count, background, relation."""
    if spec.family == "attribute":
        return {"count": [0], "color_0": [1], "shape_0": [2], "background": [5]}
    if spec.family == "composition":
        return {"color_0": [1], "shape_0": [2], "color_1": [5], "shape_1": [6], "background": [9]}
    n_rel = len(RELATION_PHRASES[spec.relation])
    rel_word = 3 + (2 if n_rel == 4 else 0)
    return {"color_0": [1], "shape_0": [2], "relation": [rel_word],
            "color_1": [3 + n_rel + 1], "shape_1": [3 + n_rel + 2]}


def _agreement(obj: SceneObject, want: tuple[str, str]) -> int:
    return int(obj.color == want[0]) + int(obj.shape == want[1])


def _match(spec: Spec, objects: list[SceneObject]) -> list[int | None]:
    """Perceived-object index (or None) for each prompt object, maximising agreement (module docstring)."""
    if spec.family == "attribute":
        order = sorted(range(len(objects)), key=lambda i: -_agreement(objects[i], spec.objects[0]))
        taken = order[:spec.count]
        return taken + [None] * (spec.count - len(taken))
    pool = sorted(range(len(objects)), key=lambda i: -objects[i].area)[:MAX_MATCHED]
    slots = pool + [None] * len(spec.objects)
    best, best_score = None, None
    for assign in permutations(slots, len(spec.objects)):
        score = sum(3 + _agreement(objects[i], w) for i, w in zip(assign, spec.objects) if i is not None)
        if spec.family == "spatial" and None not in assign:
            score += 0.5 * (spatial_relation(objects[assign[0]].center, objects[assign[1]].center)
                            == spec.relation)
        if best_score is None or score > best_score:
            best, best_score = list(assign), score
    return best


def _expected_point(spec: Spec, partner: SceneObject, missing_index: int, size: int) -> tuple[float, float]:
    """Where a missing spatial object should be: a third of the image from its partner on the stated side."""
    step = size / 3
    dx, dy = {"left": (-step, 0), "right": (step, 0), "above": (0, -step), "below": (0, step)}[spec.relation]
    if missing_index == 1:  # the partner is object 0, which sits <relation> of object 1
        dx, dy = -dx, -dy
    x, y = partner.center[0] + dx, partner.center[1] + dy
    return float(np.clip(x, 0, size - 1)), float(np.clip(y, 0, size - 1))


def judge_reading(text: str, reading: Reading) -> Judgement:
    """Judge prompt `text` against an existing perception `reading` (see the module docstring)."""
    spec = parse(text)
    scene = reading.scene
    objects = scene.objects
    tokens = text.split(" ")
    pos = _token_positions(spec)
    matched = _match(spec, objects)
    bad_tokens: set[int] = set()
    points: list[tuple[float, float]] = []
    color_ok = shape_ok = True
    used = {i for i in matched if i is not None}
    for j, (want, i) in enumerate(zip(spec.objects, matched)):
        tag = 0 if spec.family == "attribute" else j
        if i is None and spec.family == "attribute" and used:
            continue  # attribute prompts: missing copies only make the count wrong
        if i is None:
            color_ok = shape_ok = False
            bad_tokens.update(pos[f"color_{tag}"] + pos[f"shape_{tag}"])
            if spec.family == "spatial" and matched[1 - j] is not None:
                points.append(_expected_point(spec, objects[matched[1 - j]], j, scene.size))
            continue
        obj = objects[i]
        if obj.color != want[0]:
            color_ok = False
            bad_tokens.update(pos[f"color_{tag}"])
        if obj.shape != want[1]:
            shape_ok = False
            bad_tokens.update(pos[f"shape_{tag}"])
        if obj.color != want[0] or obj.shape != want[1]:
            points.append(obj.center)
    points += [o.center for i, o in enumerate(objects) if i not in used]
    attributes = {"count": len(objects) == spec.count, "color": color_ok, "shape": shape_ok}
    if not attributes["count"] and spec.family == "attribute":
        bad_tokens.update(pos["count"])
    if spec.family == "spatial":
        ok = None not in matched and spatial_relation(objects[matched[0]].center,
                                                      objects[matched[1]].center) == spec.relation
        attributes["relation"] = bool(ok)
        if not ok:
            bad_tokens.update(pos["relation"])
            if None not in matched:
                points.append(objects[matched[0]].center)
    else:
        attributes["background"] = scene.background == spec.background
        if not attributes["background"]:
            bad_tokens.update(pos["background"])
    quality = _quality(reading)
    return Judgement(
        prompt=text, tokens=tokens, attributes=attributes, aligned=all(attributes.values()),
        misaligned_tokens=sorted(bad_tokens), misaligned_points=points,
        artifact_points=[a.center for a in scene.artifacts], plausibility=_plausibility(reading),
        aesthetics=quality["aesthetics"], scene=scene, size=scene.size, quality=quality)


def judge(text: str, image) -> Judgement:
    """Judge prompt `text` against `image` (uint8 HxWx3, PIL, or float tensor in [0,1]); rules in module doc."""
    return judge_reading(text, read(image))
