"""Controlled corruptions of rendered images, each returning its ground truth (`CorruptionTruth`).

Every corruption has the signature `kind(image, scene, rng, strength=0.5) -> (image, CorruptionTruth)`
with `image` uint8 HxWx3, `scene` the true Scene of a clean render (not modified), `rng` a
`numpy.random.Generator` or `random.Random`, and `strength` in [0, 1]. `apply(kind, ...)` dispatches.

- photometric (whole image; artifacts list empty; strength mapping):
  noise: Gaussian, sigma = 40 s (0..255 units) · blur: Gaussian, sigma = 2 s * size/64 px ·
  jpeg: quality = round(95 - 90 s) · color_jitter: brightness, contrast and saturation factors
  1 +- 0.4 s and a hue rotation of +-0.06 s turns (signs random).
- artifacts (true Artifact with kind and location):
  malformed: an object's outline warped by a sinusoidal field of amplitude 0.3 s sqrt(area) ·
  off_palette: a lumpy blob of a non-palette colour, radius (0.03 + 0.07 s) size, in free space ·
  fragment: a detached chip of an object's colour, area (0.002 + 0.004 s) size^2, beside it ·
  fused: a same-colour copy of an object overlapping it at offset (0.95 - 0.25 s) of its diameter ·
  color_bleed: a soft halo of an object's colour over the background, peak alpha 0.25 + 0.2 s.
- alignment (true scene changes; strength unused): extra_object, missing_object, wrong_color.

Structural (artifact and alignment) corruptions assume a clean render: they remove or recolour an
object by inverting its exact coverage. Photometric ones can be stacked after any of them.
"""
from __future__ import annotations

import copy
import io
import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from .grammar import BACKGROUNDS, COLORS, SHAPES
from .renderer import GAP_FRACTION, coverage, inside, paint, shape_bbox, shape_extent, to_uint8
from .scene import Artifact, BBox, Scene, SceneObject

PHOTOMETRIC: tuple[str, ...] = ("noise", "blur", "jpeg", "color_jitter")
ARTIFACT_KINDS: tuple[str, ...] = ("malformed", "off_palette", "fragment", "fused", "color_bleed")
ALIGNMENT: tuple[str, ...] = ("extra_object", "missing_object", "wrong_color")
KINDS: tuple[str, ...] = PHOTOMETRIC + ARTIFACT_KINDS + ALIGNMENT

# Candidate off-palette colours; for each background only those far from every bg->palette mixture are used.
OFF_PALETTE_CANDIDATES: dict[str, tuple[int, int, int]] = {
    "cyan": (0, 205, 215), "orange": (250, 135, 0), "pink": (255, 160, 200), "brown": (125, 70, 20),
    "teal": (0, 120, 120), "lime": (170, 250, 0), "navy": (20, 20, 110), "olive": (120, 120, 0),
}
OFF_PALETTE_MARGIN = 90.0  # min RGB distance of an off-palette colour from every bg->palette segment


class CorruptionError(ValueError):
    """A corruption cannot be applied (unknown kind, bad strength, or nothing to corrupt)."""


@dataclass
class CorruptionTruth:
    """Ground truth of one corruption: what was done, where (artifacts) and the scene that is now true."""

    kind: str
    strength: float
    artifacts: list[Artifact] = field(default_factory=list)
    scene: Scene | None = None
    changed: list[int] = field(default_factory=list)  # indices into scene.objects of touched objects


def _segment_distance(p: np.ndarray, bg: np.ndarray, c: np.ndarray) -> float:
    v = c - bg
    a = float(np.clip((p - bg) @ v / (v @ v), 0.0, 1.0))
    return float(np.linalg.norm(p - bg - a * v))


def off_palette_colors(background: str) -> dict[str, tuple[int, int, int]]:
    """Candidate colours at least OFF_PALETTE_MARGIN from every bg->palette mixture on `background`."""
    bg = np.array(BACKGROUNDS[background], float)
    out = {}
    for name, rgb in OFF_PALETTE_CANDIDATES.items():
        p = np.array(rgb, float)
        if min(_segment_distance(p, bg, np.array(c, float)) for c in COLORS.values()) >= OFF_PALETTE_MARGIN:
            out[name] = rgb
    return out


def _generator(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, random.Random):
        return np.random.default_rng(rng.getrandbits(64))
    raise TypeError(f"rng must be numpy.random.Generator or random.Random, got {type(rng).__name__}")


def _check(image: np.ndarray, scene: Scene, strength: float) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        raise TypeError("image must be a uint8 HxWx3 numpy array (world convention)")
    if not isinstance(scene, Scene) or scene.size != image.shape[0]:
        raise CorruptionError("scene must be the world.Scene of this image (same size)")
    if not 0.0 <= float(strength) <= 1.0:
        raise CorruptionError(f"strength must be in [0, 1], got {strength}")


def _truth(kind: str, strength: float, scene: Scene) -> CorruptionTruth:
    return CorruptionTruth(kind, float(strength), [], copy.deepcopy(scene), [])


# ----------------------------------------------------------------------------------------- photometric
def noise(image, scene, rng, strength=0.5):
    """Additive Gaussian noise, sigma = 40 * strength."""
    _check(image, scene, strength)
    g = _generator(rng)
    out = image.astype(np.float32) + g.normal(0.0, 40.0 * strength, image.shape).astype(np.float32)
    return to_uint8(out), _truth("noise", strength, scene)


def blur(image, scene, rng, strength=0.5):
    """Gaussian blur, sigma = 2 * strength * size / 64 pixels."""
    _check(image, scene, strength)
    sigma = 2.0 * strength * image.shape[0] / 64
    out = ndimage.gaussian_filter(image.astype(np.float32), sigma=(sigma, sigma, 0), mode="nearest")
    return to_uint8(out), _truth("blur", strength, scene)


def jpeg(image, scene, rng, strength=0.5):
    """JPEG round trip at quality round(95 - 90 * strength) (PIL, 4:2:0 chroma subsampling)."""
    _check(image, scene, strength)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(round(95 - 90 * strength)))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return out.copy(), _truth("jpeg", strength, scene)


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)


def color_jitter(image, scene, rng, strength=0.5):
    """Brightness, contrast, saturation factors 1 +- 0.4 s and hue rotation +-0.06 s turns (random signs)."""
    _check(image, scene, strength)
    g = _generator(rng)
    sign = g.choice([-1.0, 1.0], size=4)
    bright, contrast, sat = 1 + sign[:3] * 0.4 * strength
    theta = 2 * np.pi * 0.06 * strength * sign[3]
    yiq = image.astype(np.float32).reshape(-1, 3) @ _YIQ.T
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], dtype=np.float32)
    yiq[:, 1:] = yiq[:, 1:] @ rot.T * sat
    yiq[:, 0] = (yiq[:, 0] - yiq[:, 0].mean()) * contrast + yiq[:, 0].mean()
    out = (yiq @ np.linalg.inv(_YIQ).T * bright).reshape(image.shape)
    return to_uint8(out), _truth("color_jitter", strength, scene)


# -------------------------------------------------------------------------------------------- helpers
def _object_coverage(obj: SceneObject, size: int) -> tuple[BBox, np.ndarray]:
    box = shape_bbox(obj.shape, *obj.center, obj.area, size)
    return box, coverage(lambda x, y: inside(obj.shape, x, y, *obj.center, obj.area), box)


def _remove(image: np.ndarray, obj: SceneObject, bg: np.ndarray) -> None:
    """Erase a rendered object exactly (p - alpha (c - bg)); in place on a float image."""
    (x0, y0, x1, y1), cov = _object_coverage(obj, image.shape[0])
    image[y0:y1, x0:x1] -= cov[..., None] * (np.asarray(COLORS[obj.color], np.float32) - bg)


def _region(test, centre: tuple[float, float], radius: float, size: int) -> tuple[BBox, np.ndarray]:
    """Coverage of the region `test` within radius of centre, clipped to the image."""
    cx, cy = centre
    box = (max(int(np.floor(cx - radius)), 0), max(int(np.floor(cy - radius)), 0),
           min(int(np.ceil(cx + radius)) + 1, size), min(int(np.ceil(cy + radius)) + 1, size))
    return box, coverage(test, box)


def _extent(box: BBox, alpha: np.ndarray, level: float = 0.1) -> tuple[tuple[float, float], BBox]:
    """Alpha-weighted centre and tight bbox (alpha > level, or > half the peak for faint ones) of a painted region."""
    ys, xs = np.nonzero(alpha > min(level, 0.5 * float(alpha.max())))
    w = alpha[ys, xs]
    centre = (float((w * (xs + 0.5)).sum() / w.sum() + box[0]), float((w * (ys + 0.5)).sum() / w.sum() + box[1]))
    return centre, (int(xs.min() + box[0]), int(ys.min() + box[1]), int(xs.max() + box[0] + 1),
                    int(ys.max() + box[1] + 1))


def _clearance(scene: Scene, points: np.ndarray, radius: float, skip: int | None = None) -> np.ndarray:
    """Free space between discs of `radius` at `points` and every object's circumcircle (skip one)."""
    clear = np.full(len(points), np.inf)
    for i, o in enumerate(scene.objects):
        if i != skip:
            d = np.hypot(points[:, 0] - o.center[0], points[:, 1] - o.center[1])
            clear = np.minimum(clear, d - shape_extent(o.shape, o.area) - radius)
    return clear


def _free_spot(scene: Scene, radius: float, g: np.random.Generator) -> tuple[float, float]:
    """A centre for a disc of `radius` inside the image, clear of all objects (the clearest of 256 draws)."""
    size = scene.size
    lo, hi = radius + 1.0, size - radius - 1.0
    pts = g.uniform(lo, max(hi, lo + 1e-3), size=(256, 2))
    clear = _clearance(scene, pts, radius)
    ok = np.flatnonzero(clear >= GAP_FRACTION * size)
    i = ok[0] if ok.size else int(np.argmax(clear))
    return float(pts[i, 0]), float(pts[i, 1])


def _pick(scene: Scene, g: np.random.Generator, kind: str) -> int:
    if not scene.objects:
        raise CorruptionError(f"{kind} needs at least one object in the scene")
    return int(g.integers(len(scene.objects)))


def _blob_test(cx: float, cy: float, radius: float, g: np.random.Generator, lumpiness: float = 0.25):
    """Inside-test of a lumpy star-shaped blob r(theta) = R (1 + sum_k a_k sin(k theta + phi_k))."""
    amps = g.uniform(0.3, 1.0, 3) * lumpiness / 2
    phases = g.uniform(0, 2 * np.pi, 3)

    def test(x, y):
        dx, dy = x - cx, y - cy
        th = np.arctan2(dy, dx)
        r = radius * (1 + sum(a * np.sin(k * th + p) for a, k, p in zip(amps, (2, 3, 5), phases)))
        return dx * dx + dy * dy <= r * r
    return test


def _finish(image: np.ndarray, truth: CorruptionTruth) -> tuple[np.ndarray, CorruptionTruth]:
    return to_uint8(image), truth


# ------------------------------------------------------------------------------------------ artifacts
def malformed(image, scene, rng, strength=0.5):
    """Warp one object's outline by a smooth sinusoidal displacement of amplitude 0.3 s sqrt(area)."""
    _check(image, scene, strength)
    g = _generator(rng)
    i = _pick(scene, g, "malformed")
    obj = scene.objects[i]
    out, bg = image.astype(np.float32), np.asarray(BACKGROUNDS[scene.background], np.float32)
    _remove(out, obj, bg)
    amp = 0.3 * strength * np.sqrt(obj.area)
    wave = 2 * np.pi / (0.8 * np.sqrt(obj.area))
    ph = g.uniform(0, 2 * np.pi, 2)

    def test(x, y):
        return inside(obj.shape, x + amp * np.sin(wave * y + ph[0]), y + amp * np.sin(wave * x + ph[1]),
                      *obj.center, obj.area)
    box, cov = _region(test, obj.center, shape_extent(obj.shape, obj.area) + amp + 1, scene.size)
    paint(out, box, cov, COLORS[obj.color])
    truth = _truth("malformed", strength, scene)
    centre, bbox = _extent(box, cov, 0.5)
    truth.artifacts.append(Artifact("malformed", centre, bbox))
    truth.scene.objects[i] = SceneObject(obj.color, obj.shape, centre, bbox, float(cov.sum()))
    truth.changed.append(i)
    return _finish(out, truth)


def off_palette(image, scene, rng, strength=0.5):
    """A lumpy blob of an off-palette colour, radius (0.03 + 0.07 s) * size, placed in free space."""
    _check(image, scene, strength)
    g = _generator(rng)
    colours = list(off_palette_colors(scene.background).values())
    colour = colours[int(g.integers(len(colours)))]
    radius = (0.03 + 0.07 * strength) * scene.size
    centre = _free_spot(scene, radius * 1.25, g)
    box, cov = _region(_blob_test(*centre, radius, g), centre, radius * 1.3, scene.size)
    out = image.astype(np.float32)
    paint(out, box, cov, colour)
    truth = _truth("off_palette", strength, scene)
    truth.artifacts.append(Artifact("off_palette", *_extent(box, cov, 0.5)))
    return _finish(out, truth)


def fragment(image, scene, rng, strength=0.5):
    """A detached chip of an object's colour, area (0.002 + 0.004 s) * size^2, just beside that object."""
    _check(image, scene, strength)
    g = _generator(rng)
    i = _pick(scene, g, "fragment")
    obj = scene.objects[i]
    radius = np.sqrt((0.002 + 0.004 * strength) * scene.size ** 2 / np.pi)
    dist = shape_extent(obj.shape, obj.area) + radius + max(2.0, GAP_FRACTION * scene.size / 2)
    angles = g.uniform(0, 2 * np.pi, 64)
    pts = np.stack([obj.center[0] + dist * np.cos(angles), obj.center[1] + dist * np.sin(angles)], 1)
    inside_img = np.all((pts >= radius + 1) & (pts <= scene.size - radius - 1), axis=1)
    score = np.where(inside_img, _clearance(scene, pts, radius, skip=i), -np.inf)
    centre = tuple(pts[int(np.argmax(score))])
    box, cov = _region(_blob_test(*centre, radius, g, lumpiness=0.15), centre, radius * 1.3, scene.size)
    out = image.astype(np.float32)
    paint(out, box, cov, COLORS[obj.color])
    truth = _truth("fragment", strength, scene)
    truth.artifacts.append(Artifact("fragment", *_extent(box, cov, 0.5)))
    truth.changed.append(i)
    return _finish(out, truth)


def fused(image, scene, rng, strength=0.5):
    """Fuse a same-colour copy onto an object at offset (0.95 - 0.25 s) * its equivalent diameter."""
    _check(image, scene, strength)
    g = _generator(rng)
    i = _pick(scene, g, "fused")
    obj = scene.objects[i]
    r = shape_extent(obj.shape, obj.area)
    offset = (0.95 - 0.25 * strength) * 2 * np.sqrt(obj.area / np.pi)
    angles = g.uniform(0, 2 * np.pi, 64)
    pts = np.stack([obj.center[0] + offset * np.cos(angles), obj.center[1] + offset * np.sin(angles)], 1)
    inside_img = np.all((pts >= r + 1) & (pts <= scene.size - r - 1), axis=1)
    score = np.where(inside_img, _clearance(scene, pts, r, skip=i), -np.inf)
    cx2, cy2 = pts[int(np.argmax(score))]

    def test(x, y):
        return inside(obj.shape, x, y, *obj.center, obj.area) | inside(obj.shape, x, y, cx2, cy2, obj.area)
    mid = ((obj.center[0] + cx2) / 2, (obj.center[1] + cy2) / 2)
    box, cov = _region(test, mid, offset / 2 + r + 1, scene.size)
    out, bg = image.astype(np.float32), np.asarray(BACKGROUNDS[scene.background], np.float32)
    _remove(out, obj, bg)
    paint(out, box, cov, COLORS[obj.color])
    truth = _truth("fused", strength, scene)
    centre, bbox = _extent(box, cov, 0.5)
    truth.artifacts.append(Artifact("fused", centre, bbox))
    truth.scene.objects[i] = SceneObject(obj.color, obj.shape, centre, bbox, float(cov.sum()))
    truth.changed.append(i)
    return _finish(out, truth)


def color_bleed(image, scene, rng, strength=0.5):
    """A soft halo of an object's colour over the background (peak alpha 0.25 + 0.2 s), shifted to one side."""
    _check(image, scene, strength)
    g = _generator(rng)
    i = _pick(scene, g, "color_bleed")
    obj = scene.objects[i]
    r = shape_extent(obj.shape, obj.area)
    angle = g.uniform(0, 2 * np.pi)
    hx, hy = obj.center[0] + 0.4 * r * np.cos(angle), obj.center[1] + 0.4 * r * np.sin(angle)
    reach = 1.9 * r
    box = (max(int(hx - reach), 0), max(int(hy - reach), 0),
           min(int(hx + reach) + 2, scene.size), min(int(hy + reach) + 2, scene.size))
    ys, xs = np.mgrid[box[1]:box[3], box[0]:box[2]] + 0.5
    halo = (0.25 + 0.2 * strength) * np.clip(1.0 - np.hypot(xs - hx, ys - hy) / reach, 0.0, 1.0) ** 0.7
    out = image.astype(np.float32)
    bg = np.asarray(BACKGROUNDS[scene.background], np.float32)
    patch = out[box[1]:box[3], box[0]:box[2]]
    halo = (halo * (np.abs(patch - bg).max(axis=2) < 2)).astype(np.float32)  # background pixels only
    paint(out, box, halo, COLORS[obj.color])
    truth = _truth("color_bleed", strength, scene)
    truth.artifacts.append(Artifact("color_bleed", *_extent(box, halo, 0.1)))
    truth.changed.append(i)
    return _finish(out, truth)


# ------------------------------------------------------------------------------------------ alignment
def extra_object(image, scene, rng, strength=0.5):
    """Add one random palette object (median size of the scene's objects) in free space."""
    _check(image, scene, strength)
    g = _generator(rng)
    colour = list(COLORS)[int(g.integers(len(COLORS)))]
    shape = SHAPES[int(g.integers(len(SHAPES)))]
    area = float(np.median([o.area for o in scene.objects])) if scene.objects else 0.05 * scene.size ** 2
    cx, cy = _free_spot(scene, shape_extent(shape, area), g)
    box = shape_bbox(shape, cx, cy, area, scene.size)
    cov = coverage(lambda x, y: inside(shape, x, y, cx, cy, area), box)
    out = image.astype(np.float32)
    paint(out, box, cov, COLORS[colour])
    truth = _truth("extra_object", strength, scene)
    truth.scene.objects.append(SceneObject(colour, shape, (cx, cy), box, area))
    truth.changed.append(len(truth.scene.objects) - 1)
    return _finish(out, truth)


def missing_object(image, scene, rng, strength=0.5):
    """Erase one object exactly (the background shows through)."""
    _check(image, scene, strength)
    g = _generator(rng)
    i = _pick(scene, g, "missing_object")
    out = image.astype(np.float32)
    _remove(out, scene.objects[i], np.asarray(BACKGROUNDS[scene.background], np.float32))
    truth = _truth("missing_object", strength, scene)
    del truth.scene.objects[i]
    return _finish(out, truth)


def wrong_color(image, scene, rng, strength=0.5):
    """Repaint one object in another palette colour (p + alpha (c_new - c_old))."""
    _check(image, scene, strength)
    g = _generator(rng)
    i = _pick(scene, g, "wrong_color")
    obj = scene.objects[i]
    others = [c for c in COLORS if c != obj.color]
    new = others[int(g.integers(len(others)))]
    (x0, y0, x1, y1), cov = _object_coverage(obj, scene.size)
    out = image.astype(np.float32)
    out[y0:y1, x0:x1] += cov[..., None] * (np.asarray(COLORS[new], np.float32) - np.asarray(COLORS[obj.color],
                                                                                            np.float32))
    truth = _truth("wrong_color", strength, scene)
    truth.scene.objects[i] = SceneObject(new, obj.shape, obj.center, obj.bbox, obj.area)
    truth.changed.append(i)
    return _finish(out, truth)


_FUNCS = {f.__name__: f for f in (noise, blur, jpeg, color_jitter, malformed, off_palette, fragment, fused,
                                  color_bleed, extra_object, missing_object, wrong_color)}


def apply(kind: str, image: np.ndarray, scene: Scene, rng, strength: float = 0.5
          ) -> tuple[np.ndarray, CorruptionTruth]:
    """Apply corruption `kind` (one of KINDS) at `strength` in [0, 1]; returns (image, ground truth)."""
    if kind not in _FUNCS:
        raise CorruptionError(f"unknown corruption {kind!r}; expected one of {KINDS}")
    return _FUNCS[kind](image, scene, rng, strength)
