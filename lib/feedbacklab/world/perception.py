"""Oracle perception: read any RGB image back into a `Scene` (background, objects, artifacts).

Pipeline (all vectorised numpy/scipy; no Python loop over pixels; Python loops only over the palette
colours present, their components and the three shape templates):

1. Background: the per-channel median of the 2-pixel border ring, named by the nearest BACKGROUNDS
   colour in (log lightness, chroma / lightness) space, so a global brightness change keeps its name;
   farther than BG_MAX_DISTANCE from every background it is unrecognised (Scene.background = None).
   Chromatic adaptation (von Kries): a light background is scaled back to its reference colour, a dark
   one shifted, so global brightness/white-balance drift does not move object colours.
2. Noise: sigma is estimated from the border ring (MAD of neighbour differences); above
   NOISE_DENOISE a 3x3 median filter is applied before segmentation.
3. Mixture model: every pixel is explained as background mixed with one palette colour k,
   p = bg + alpha * (c_k - bg) (what anti-aliasing, blur and colour halos produce). Each pixel gets
   the colour k whose segment bg->c_k is nearest, its alpha, and the residual distance r.
   Pixels with r > OFF_PALETTE_RESIDUAL and contrast > OFF_PALETTE_CONTRAST are off-palette.
4. Objects: connected components (`scipy.ndimage.label`) of pixels with alpha >= 0.5, per colour.
   Alpha is rescaled so the component's plateau (90th percentile of its solid alpha) is 1 (washed-out
   colours); soft area = sum of alpha over the component and its fringe; centroid alpha-weighted.
   Components with soft area below SPECK_FRACTION * size**2 are ignored (noise specks); below
   OBJECT_MIN_FRACTION * size**2 they are "fragment" artifacts; larger ones are objects.
5. Shape: each template (circle, square, upright triangle; see renderer.inside) is placed at the
   component's centroid with its soft area; the shape whose alpha>=0.5 mask has the highest IoU with
   the component's wins. If the best IoU < MALFORMED_IOU the object is also an artifact: "fused"
   when its mask is elongated (second-moment eigenvalue ratio >= FUSED_ELONGATION), else "malformed".
6. Colour bleed: pixels of a palette colour with smoothed alpha in [BLEED_ALPHA, 0.5) that lie more
   than BLEED_DISTANCE px from every solid pixel of that colour form "color_bleed" artifacts when a
   component exceeds BLEED_MIN_FRACTION * size**2.
Off-palette components (after a 3x3 opening) above the speck size are "off_palette" artifacts;
fragment / bleed detections on such a blob's rim are dropped (one region, one artifact).
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .grammar import BACKGROUNDS, COLORS, SHAPES
from .renderer import inside
from .scene import Artifact, Scene, SceneObject

SPECK_FRACTION = 0.0015        # soft area below this * size^2: ignored (64 px: 6 px, 32 px: 1.5 px)
OBJECT_MIN_FRACTION = 0.008    # soft area below this * size^2: a fragment, not an object (64 px: 33 px)
MALFORMED_IOU = 0.80           # best template IoU below this: malformed or fused
FUSED_ELONGATION = 2.2         # covariance eigenvalue ratio at or above this: fused (else malformed)
OFF_PALETTE_RESIDUAL = 70.0    # RGB distance from every bg->palette segment: off-palette
OFF_PALETTE_CONTRAST = 60.0    # ... and at least this far from the background
BLEED_ALPHA = 0.2              # smoothed alpha above this (and < 0.5) away from solid pixels: colour bleed
BLEED_DISTANCE = 2             # px from the solid region that ordinary anti-aliasing / mild blur reaches
BLEED_MIN_FRACTION = 0.006     # minimum bleed region, * size^2
TEMPLATE_SUPERSAMPLE = 8        # sub-samples per pixel side of the shape templates
SHARPEN = 3.0                  # slope of the alpha sharpening before template IoU
BG_MAX_DISTANCE = 1.5          # feature distance beyond which the background is unrecognised (None)
NOISE_DENOISE = 16.0           # estimated noise sigma (0..255) above which a 3x3 median filter is applied

_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _NAMES], dtype=np.float32)  # (K, 3)
_BG_NAMES = tuple(BACKGROUNDS)
_BG = np.array([BACKGROUNDS[b] for b in _BG_NAMES], dtype=np.float32)
_EIGHT = np.ones((3, 3), dtype=bool)
_SUBSAMPLE_OFFSETS = (np.arange(TEMPLATE_SUPERSAMPLE) + 0.5) / TEMPLATE_SUPERSAMPLE  # as renderer.coverage
_SEGMENTS: dict[tuple[str, bytes, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # see _segments


@dataclass
class Reading:
    """Everything perception measured: the Scene plus per-artifact severity and image-quality statistics."""

    scene: Scene
    severities: list[float] = field(default_factory=list)  # one per scene.artifacts entry, in area fraction
    noise_sigma: float = 0.0        # estimated noise std (0..255) on the background ring
    residual: float = 0.0           # mean distance of raw pixels from the world's mixture model (0..255)
    edge_width: float = 0.0         # median over objects of the alpha-ramp (0.15..0.85) area per perimeter px
    shape_iou: list[float] = field(default_factory=list)  # best template IoU per object


def as_image(image) -> np.ndarray:
    """uint8/float HxWx3 array, PIL image or float tensor (3,H,W)/(H,W,3) in [0,1] -> float32 HxWx3 in 0..255."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().float().numpy()
        if image.ndim == 3 and image.shape[0] == 3 and image.shape[-1] != 3:
            image = image.transpose(1, 2, 0)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"tensor image must be (3,H,W) or (H,W,3), got {image.shape}")
        return np.clip(image, 0.0, 1.0).astype(np.float32) * 255.0
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, PIL image or torch tensor, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be HxWx3, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32)
    if np.issubdtype(image.dtype, np.floating):
        if image.size and (image.min() < -1e-3 or image.max() > 1 + 1e-3):
            raise ValueError("float images must be in [0, 1] (uint8 images are 0..255)")
        return np.clip(image, 0.0, 1.0).astype(np.float32) * 255.0
    raise TypeError(f"unsupported image dtype {image.dtype}; use uint8 0..255 or float in [0, 1]")


def _ring(image: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels of the border ring, as (N, 3)."""
    top, bottom = image[:width].reshape(-1, 3), image[-width:].reshape(-1, 3)
    left, right = image[width:-width, :width].reshape(-1, 3), image[width:-width, -width:].reshape(-1, 3)
    return np.concatenate([top, bottom, left, right])


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """Median of each row of a float32 (C, M) array, exactly as np.median(rows.T, axis=0): the mean of the two
    middle values (summed in float32, then halved), NaN where a row holds a NaN; without np.median's overhead."""
    m = rows.shape[1]
    half = m // 2
    kth = [half - 1, half, m - 1] if m % 2 == 0 else [half, m - 1]
    part = np.partition(rows, kth, axis=1)  # NaNs sort last
    if m % 2:
        median = part[:, half].copy()
    else:
        median = ((part[:, half - 1] + part[:, half]) / np.float64(2)).astype(np.float32)
    median[np.isnan(part[:, -1])] = np.nan
    return median


def _noise_sigma(image: np.ndarray) -> float:
    """Robust noise std from neighbour differences along the top/bottom/left/right border rows (MAD)."""
    across = image[[0, -1, 1, -2]]  # the two outer rows at each edge, (4, W, 3)
    down = image[:, [0, -1, 1, -2]]  # and columns, (H, 4, 3); medians ignore the order of the differences
    diffs = np.concatenate([(across[:, 1:] - across[:, :-1]).reshape(-1, 3),
                            (down[1:] - down[:-1]).reshape(-1, 3)])  # (N, 3)
    channels = np.ascontiguousarray(diffs.T)  # (3, N)
    mad = _row_medians(np.abs(channels - _row_medians(channels)[:, None]))
    return float(1.4826 * mad.mean() / np.sqrt(2.0))


def _bg_features(rgb: np.ndarray) -> np.ndarray:
    """(log lightness, 4 x opponent chroma / lightness): brightness changes move only the first coordinate."""
    rgb = np.atleast_2d(rgb).astype(np.float32)
    light = rgb.mean(-1) + 30.0  # damps chroma noise on dark backgrounds
    c1 = (rgb[:, 0] - rgb[:, 1]) / light
    c2 = ((rgb[:, 0] + rgb[:, 1]) / 2 - rgb[:, 2]) / light
    return np.stack([np.log(light), 4 * c1, 4 * c2], axis=-1)


_BG_FEATURES = _bg_features(_BG)


def _background(image: np.ndarray) -> tuple[str, np.ndarray, float]:
    """(nearest name, measured colour, feature distance) of the background: border-ring median."""
    measured = _row_medians(np.ascontiguousarray(_ring(image).T))  # per channel
    dist = ((_BG_FEATURES - _bg_features(measured)) ** 2).sum(1)
    return _BG_NAMES[int(np.argmin(dist))], measured, float(np.sqrt(dist.min()))


def _adapt(image: np.ndarray, measured: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map the measured background to its reference colour: gain for light backgrounds, offset for dark."""
    if measured.mean() > 50:
        gain = np.clip(reference / np.maximum(measured, 1.0), 0.67, 1.5)
        return image * gain
    return image + (reference - measured)


def _segments(bg: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per background colour and pixel count, cached: the colour tiled flat for n pixels (3n,), so that
    `image.ravel() - tile` is `image - bg`; the segment vectors v = c_k - bg (K, 3); their squared lengths (K,)."""
    key = (bg.dtype.str, bg.tobytes(), n)
    if key not in _SEGMENTS:
        v = _PALETTE - bg
        _SEGMENTS[key] = (np.tile(bg, n), v, (v * v).sum(1))
    return _SEGMENTS[key]


def _squared_norms(d: np.ndarray) -> np.ndarray:
    """Row-wise |d|^2 of (N, 3) vectors, summed in the order (d.d).sum(1) uses: (x^2 + y^2) + z^2."""
    return (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) + d[:, 2] * d[:, 2]


def _project(image: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pixel against every segment bg->c_k: alpha (K, N), squared residual r^2 (K, N), and |p - bg|^2 (N,).

    The arrays are colour-major so every elementwise step runs over whole rows; each element gets exactly
    the arithmetic of the plain (N, K) formulation
    alpha = clip(d.v_k / |v_k|^2, 0, 1), r^2 = |d|^2 - 2 alpha (d.v_k) + alpha^2 |v_k|^2."""
    tile, v, vv = _segments(bg, image.shape[0] * image.shape[1])
    d = (image.reshape(-1) - tile).reshape(-1, 3)
    dots = (d @ v.T).T.copy()  # (K, N): the same matrix product as d @ v.T, stored colour-major
    alpha = dots / vv[:, None]
    np.clip(alpha, 0.0, 1.0, out=alpha)
    dd = _squared_norms(d)
    res2 = 2 * alpha
    res2 *= dots
    np.subtract(dd, res2, out=res2)
    aav = alpha * alpha
    aav *= vv[:, None]
    res2 += aav
    return alpha, res2, dd


def _distances(res2: np.ndarray, dd: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(residual to the nearest segment, contrast |p - bg|) as (h, w) maps."""
    res = res2.min(axis=0)  # the value at argmin
    np.maximum(res, 0, out=res)
    np.sqrt(res, out=res)
    return res.reshape(shape), np.sqrt(dd).reshape(shape)


def _nearest(res2: np.ndarray) -> np.ndarray:
    """Per column of the (K, N) squared residuals, the first index of its minimum: res2.argmin(axis=0).

    A column is either all finite or all NaN (a NaN channel spoils every dot product); an all-NaN column
    gets index 0, as argmin gives it."""
    best = res2.min(axis=0)
    k = np.zeros(res2.shape[1], dtype=np.intp)
    for j in range(res2.shape[0] - 1, -1, -1):  # downwards, so the lowest index of the minimum wins
        k = np.where(res2[j] == best, j, k)
    return k


def _select(alpha: np.ndarray, res2: np.ndarray, dd: np.ndarray,
            shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mixture maps from a projection: nearest palette index k, its alpha, residual distance and contrast."""
    n = res2.shape[1]
    k = _nearest(res2)
    alpha_k = np.take(alpha, k * n + np.arange(n))
    res, contrast = _distances(res2, dd, shape)
    return k.reshape(shape), alpha_k.reshape(shape), res, contrast


def _mixture(image: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: nearest palette index k, alpha along bg->c_k, residual distance, contrast |p - bg|."""
    return _select(*_project(image, bg), image.shape[:2])


def _sharpen(v: np.ndarray) -> np.ndarray:
    """Steepen alpha ramps around 0.5 (x SHARPEN): blur-tolerant yet tie-free comparison of soft masks."""
    return np.clip((v - 0.5) * SHARPEN + 0.5, 0.0, 1.0)


# _sharpen(coverage) for every possible sub-sample count 0..S^2 (coverage = count / S^2 in float32)
_SHARP_COVERAGE = _sharpen(np.arange(TEMPLATE_SUPERSAMPLE ** 2 + 1, dtype=np.uint16).astype(np.float32)
                           / np.float32(TEMPLATE_SUPERSAMPLE * TEMPLATE_SUPERSAMPLE))


def _sample_points(box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample coordinates of `box` as renderer.coverage makes them: x as (1, W*S), y as (H*S, 1)."""
    x0, y0, x1, y1 = box
    xs = (np.arange(x0, x1)[:, None] + _SUBSAMPLE_OFFSETS).ravel()
    ys = (np.arange(y0, y1)[:, None] + _SUBSAMPLE_OFFSETS).ravel()
    return xs[None, :], ys[:, None]


def _hit_counts(hits: np.ndarray) -> np.ndarray:
    """Per-pixel number of true sub-samples of (..., h*S, w*S) boolean hit maps (renderer.coverage's counts)."""
    s = TEMPLATE_SUPERSAMPLE
    *lead, hs, ws = hits.shape
    h, w = hs // s, ws // s
    if s == 8 and hits.flags.c_contiguous:
        # one 64-bit word holds the 8 sub-samples (bytes 0/1) of a pixel column in one sub-row; summing the S
        # words of a pixel adds bytewise (each byte <= 8, no carries), and the multiply adds the 8 bytes up
        words = hits.view(np.uint64).reshape(*lead, h, s, w)
        per_byte = words.sum(axis=-2, dtype=np.uint64)
        return (per_byte * np.uint64(0x0101010101010101)) >> np.uint64(56)
    rows = hits.view(np.uint8).reshape(*lead, h, s, w * s).sum(axis=-2, dtype=np.uint8)
    return rows.reshape(*lead, h, w, s).sum(axis=-1, dtype=np.uint16)


def _templates(box: tuple[int, int, int, int], cx: float, cy: float, area: float) -> np.ndarray:
    """Sharpened coverage of each shape template over `box`, (len(SHAPES), h, w) in SHAPES order:
    _sharpen(renderer.coverage(inside(shape, ...))).

    The inside-tests are renderer.inside on the same sub-sample points; the counts are turned into
    sharpened coverage through a lookup table, which holds the very float32 values coverage + _sharpen give."""
    x, y = _sample_points(box)
    hits = np.stack([inside(shape, x, y, cx, cy, area) for shape in SHAPES])
    return _SHARP_COVERAGE[_hit_counts(hits)]


def _fit_shape(alpha: np.ndarray, box0: tuple[int, int], cx: float, cy: float,
               area: float) -> tuple[str, float]:
    """Best template (shape, soft IoU) for a component's alpha window (offset box0); IoU on sharpened masks."""
    h, w = alpha.shape
    ox, oy = box0
    templates = _templates((ox, oy, ox + w, oy + h), cx, cy, area)
    a = _sharpen(alpha)
    # per template, the same float32 sums as np.minimum(a, t).sum() on its own (h, w) array
    inter = np.minimum(a, templates).sum(axis=(1, 2))
    union = np.maximum(a, templates).sum(axis=(1, 2))
    best, best_iou = SHAPES[0], -1.0
    for i, shape in enumerate(SHAPES):
        iou = float(inter[i] / max(union[i], 1e-6))
        if iou > best_iou:
            best, best_iou = shape, iou
    return best, best_iou


def _elongation(weights: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> float:
    """Ratio of the principal second moments of a weighted pixel set (1 for round/square shapes)."""
    total = weights.sum()
    mx, my = (weights * xs).sum() / total, (weights * ys).sum() / total
    cxx = (weights * (xs - mx) ** 2).sum() / total
    cyy = (weights * (ys - my) ** 2).sum() / total
    cxy = (weights * (xs - mx) * (ys - my)).sum() / total
    tr, det = cxx + cyy, cxx * cyy - cxy * cxy
    disc = np.sqrt(max(tr * tr / 4 - det, 0.0))
    return float((tr / 2 + disc) / max(tr / 2 - disc, 1e-6))


def _bbox(sl: tuple[slice, slice]) -> tuple[int, int, int, int]:
    return sl[1].start, sl[0].start, sl[1].stop, sl[0].stop


def _centre(mask: np.ndarray, sl: tuple[slice, slice]) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean() + sl[1].start + 0.5), float(ys.mean() + sl[0].start + 0.5)


def _box_filter(x: np.ndarray, radius: int, op: np.ufunc = np.maximum) -> np.ndarray:
    """`op` (np.maximum or np.minimum) over the (2r+1) x (2r+1) square around each pixel, outside the image
    counting as 0 / False; separable: rows first, then columns.

    Maximum on a boolean mask is binary_dilation with the 3x3 structure iterated r times (border 0), minimum
    is binary_erosion (border 0); maximum on non-negative labels with r = 1 is grey_dilation(size=(3, 3)),
    whose reflected border only repeats pixels already inside the window."""
    h, w = x.shape
    padded = np.zeros((h + 2 * radius, w + 2 * radius), dtype=x.dtype)
    padded[radius:radius + h, radius:radius + w] = x
    rows = padded[:h].copy()
    for i in range(1, 2 * radius + 1):
        op(rows, padded[i:i + h], out=rows)
    out = rows[:, :w].copy()
    for i in range(1, 2 * radius + 1):
        op(out, rows[:, i:i + w], out=out)
    return out


def _prepare(raw: np.ndarray) -> tuple[str | None, float, float, tuple[np.ndarray, ...]]:
    """Background name (None if unrecognised), noise sigma, raw model residual, mixture maps (k, alpha, res,
    contrast); an unrecognised background is still analysed against the nearest one."""
    name, measured, distance = _background(raw)
    ref = _BG[_BG_NAMES.index(name)]
    sigma = _noise_sigma(raw)
    projection = _project(raw, ref)
    res, contrast = _distances(projection[1], projection[2], raw.shape[:2])
    fg = contrast > OFF_PALETTE_CONTRAST / 2
    # fidelity of the raw pixels to the world's mixture model; background and foreground weigh equally
    residual = 0.5 * float(res[~fg].mean() if (~fg).any() else 0.0) + 0.5 * float(res[fg].mean() if fg.any() else 0.0)
    if sigma > NOISE_DENOISE or np.abs(measured - ref).max() > 0.5:
        img = _adapt(raw, measured, ref)
        if sigma > NOISE_DENOISE:
            img = ndimage.median_filter(img, size=(3, 3, 1))
        maps = _mixture(img, ref)
    else:
        maps = _select(*projection, raw.shape[:2])
    return (name if distance <= BG_MAX_DISTANCE else None), sigma, residual, maps


def _percentile(values: np.ndarray, q: float) -> np.float32:
    """np.percentile(values, q) of a non-empty 1-D float32 array, numpy's default "linear" method with its exact
    arithmetic (virtual index (n-1) q/100, then a + (b-a) g, or b - (b-a)(1-g) when g >= 0.5), minus its overhead."""
    n = values.size
    virtual = (n - 1) * (q / 100)
    if virtual >= n - 1:  # numpy takes the last order statistic (its interpolation weight is then moot)
        return np.max(values)
    lo = int(np.floor(virtual))
    gamma = virtual - lo
    part = np.partition(values, (lo, lo + 1))
    a, b = part[lo], part[lo + 1]
    diff = b - a
    if gamma >= 0.5:
        return b - diff * (1 - gamma)
    return a + diff * gamma


def _read_component(a: np.ndarray, box0: tuple[int, int], bbox: tuple[int, int, int, int], colour: str,
                    reading: Reading, widths: list[float]) -> None:
    """Classify one solid component (alpha window `a` at offset box0): speck, fragment or object (doc 4-5)."""
    size2 = float(reading.scene.size ** 2)
    # a washed-out object (alpha plateau < 1) is an object of a paler colour: rescale its plateau to 1
    a = np.minimum(a / max(float(_percentile(a[a >= 0.5], 90)), 0.5), 1.0)
    area = float(a.sum())
    if area < SPECK_FRACTION * size2:
        return
    x0, y0 = box0
    xs = (np.arange(x0, x0 + a.shape[1]) + 0.5)[None, :]  # pixel-centre coordinates, broadcast over the window
    ys = (np.arange(y0, y0 + a.shape[0]) + 0.5)[:, None]
    cx, cy = float((a * xs).sum() / area), float((a * ys).sum() / area)
    if area < OBJECT_MIN_FRACTION * size2:
        reading.scene.artifacts.append(Artifact("fragment", (cx, cy), bbox))
        reading.severities.append(area / size2)
        return
    shape, iou = _fit_shape(a, box0, cx, cy, area)
    reading.scene.objects.append(SceneObject(colour, shape, (cx, cy), bbox, area))
    reading.shape_iou.append(iou)
    widths.append(np.count_nonzero((a > 0.15) & (a < 0.85)) / _perimeter(shape, area))
    if iou < MALFORMED_IOU:
        elong = _elongation((a >= 0.5).astype(np.float32), xs, ys)
        kind = "fused" if elong >= FUSED_ELONGATION else "malformed"
        reading.scene.artifacts.append(Artifact(kind, (cx, cy), bbox))
        reading.severities.append((1.0 - iou) * area / size2)


def _read_colour(alpha_k: np.ndarray, colour: str, reading: Reading, widths: list[float]) -> None:
    """Objects, fragments and bleed of one palette colour from its alpha map (module doc, 4-6)."""
    solid = alpha_k >= 0.5
    if not solid.any():
        return
    size = reading.scene.size
    labels, _ = ndimage.label(solid, structure=_EIGHT)
    grown = _box_filter(labels, 1)  # component id on its 1-px fringe too (= grey_dilation, size 3x3)
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        y0, y1 = max(sl[0].start - 2, 0), min(sl[0].stop + 2, size)
        x0, x1 = max(sl[1].start - 2, 0), min(sl[1].stop + 2, size)
        region = (grown[y0:y1, x0:x1] == idx) | (labels[y0:y1, x0:x1] == idx)
        _read_component(np.where(region, alpha_k[y0:y1, x0:x1], 0.0), (x0, y0), _bbox(sl), colour, reading,
                        widths)
    _find_bleed(alpha_k, solid, colour, size, reading)


def _read_off_palette(off: np.ndarray, reading: Reading) -> None:
    """Off-palette artifacts: components of the opened off-palette mask above the speck size."""
    if not off.any():
        return
    # opening drops 1-2 px lines (JPEG chroma fringes on edges); real blobs are compact
    off = _box_filter(_box_filter(off, 1, np.minimum), 1)  # = binary_opening(structure=_EIGHT)
    if not off.any():
        return
    size2 = float(reading.scene.size ** 2)
    labels, _ = ndimage.label(off, structure=_EIGHT)
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[sl] == idx
        n = int(np.count_nonzero(comp))
        if n >= SPECK_FRACTION * size2:
            reading.scene.artifacts.append(Artifact("off_palette", _centre(comp, sl), _bbox(sl)))
            reading.severities.append(n / size2)
    _drop_rims(reading)


def _solid_colours(k: np.ndarray, alpha: np.ndarray, on_palette: np.ndarray) -> np.ndarray:
    """Palette indices, in palette order, with at least one solid (alpha >= 0.5, on-palette) pixel; the
    other colours have nothing to read (no component, and bleed is looked for only beside solid pixels)."""
    solid = on_palette & (alpha >= 0.5)
    return np.flatnonzero(np.bincount(k[solid], minlength=len(_NAMES)))


def read(image) -> Reading:
    """Full perception of one image: Scene plus severities and quality statistics (see module doc)."""
    raw = as_image(image)
    size = raw.shape[0]
    if raw.shape[0] != raw.shape[1] or size < 16:
        raise ValueError(f"image must be square and at least 16 px, got {raw.shape[:2]}")
    name, sigma, residual, (k, alpha, res, contrast) = _prepare(raw)
    on_palette = res <= OFF_PALETTE_RESIDUAL
    reading = Reading(Scene(size, name), noise_sigma=sigma, residual=residual)
    widths: list[float] = []
    for ki in _solid_colours(k, alpha, on_palette):
        _read_colour(np.where((k == ki) & on_palette, alpha, 0.0), _NAMES[ki], reading, widths)
    _read_off_palette(~on_palette & (contrast > OFF_PALETTE_CONTRAST), reading)
    reading.edge_width = float(statistics.median(widths)) if widths else 0.0  # = np.median on floats
    return reading


def _find_bleed(alpha_k: np.ndarray, solid: np.ndarray, colour: str, size: int, reading: Reading) -> None:
    """Append colour-bleed artifacts: a faint halo of `colour` detached from its solid pixels (module doc, 6)."""
    smooth = ndimage.uniform_filter(alpha_k, size=3)
    near = _box_filter(solid, BLEED_DISTANCE)  # = binary_dilation(_EIGHT, iterations=BLEED_DISTANCE)
    halo = (smooth >= BLEED_ALPHA) & (alpha_k < 0.5) & ~near
    if not halo.any():
        return
    labels, _ = ndimage.label(halo, structure=_EIGHT)
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        comp = labels[sl] == idx
        n = int(np.count_nonzero(comp))
        if n >= BLEED_MIN_FRACTION * size * size:
            reading.scene.artifacts.append(Artifact("color_bleed", _centre(comp, sl), _bbox(sl)))
            reading.severities.append(n / float(size * size))


def _drop_rims(reading: Reading) -> None:
    """Drop fragment / bleed detections on the anti-aliased rim of an off-palette blob (same region twice)."""
    blobs = [a.bbox for a in reading.scene.artifacts if a.kind == "off_palette"]

    def on_rim(a: Artifact) -> bool:
        return a.kind in ("fragment", "color_bleed") and any(
            x0 - 2 <= a.center[0] <= x1 + 2 and y0 - 2 <= a.center[1] <= y1 + 2 for x0, y0, x1, y1 in blobs)
    keep = [i for i, a in enumerate(reading.scene.artifacts) if not on_rim(a)]
    reading.scene.artifacts = [reading.scene.artifacts[i] for i in keep]
    reading.severities = [reading.severities[i] for i in keep]


def _perimeter(shape: str, area: float) -> float:
    """Perimeter of `shape` with `area`: circle 2 sqrt(pi A), square 4 sqrt(A), triangle 3 sqrt(4A/sqrt3)."""
    if shape == "circle":
        return float(2 * np.sqrt(np.pi * area))
    if shape == "square":
        return float(4 * np.sqrt(area))
    return float(3 * np.sqrt(4 * area / np.sqrt(3.0)))


def perceive(image) -> Scene:
    """Read any RGB image (uint8 HxWx3, PIL, or float tensor in [0,1]) into a Scene (see module doc)."""
    return read(image).scene
