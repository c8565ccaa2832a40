"""Fast numpy rendering for widgets: images, overlays and marks as PNG bytes for ``ipywidgets.Image``.

Matplotlib is too slow for a widget that must answer a click in well under 200 ms, so widgets draw with numpy and
encode with Pillow. Images are uint8 (H, W, 3); every function returns a new array and leaves its input unchanged.
Colours are RGB triples of 0..255.
"""
from __future__ import annotations

import functools
import io
from typing import Iterable, Sequence

import numpy as np

Color = Sequence[int]


def _check_image(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {arr.dtype} {arr.shape}")
    return arr


def _check_color(color: Color) -> np.ndarray:
    rgb = np.asarray(color)
    if rgb.shape != (3,) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(f"a colour is three integers in 0..255, got {color!r}")
    return rgb.astype(np.uint8)


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """uint8 (H, W, 3) → (scale H, scale W, 3) by pixel repetition (crisp small images)."""
    arr = _check_image(image)
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    scale = int(scale)
    return arr if scale == 1 else arr.repeat(scale, axis=0).repeat(scale, axis=1)


def png(image: np.ndarray, scale: int = 1) -> bytes:
    """uint8 (H, W, 3) → PNG bytes, enlarged ``scale`` times by pixel repetition (crisp small images)."""
    from PIL import Image

    arr = enlarge(image, scale)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def colormap_lut(cmap: str = "magma") -> np.ndarray:
    """A (256, 3) uint8 lookup table of a matplotlib colormap (computed once per name)."""
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown colormap {cmap!r}; any name of matplotlib.colormaps, "
                         "e.g. 'magma', 'viridis'") from None
    lut = (colormap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    lut.flags.writeable = False
    return lut


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float, threshold: float = 0.0,
            cmap: str = "magma") -> np.ndarray:
    """Tint ``image`` with ``heatmap`` (H, W) in [0, 1] through ``cmap`` at opacity ``alpha``.

    Pixels whose heatmap value is not above ``threshold`` keep their colour (so with the default 0 an empty map
    leaves the image as it is); values outside [0, 1] are clipped.
    """
    arr = _check_image(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != arr.shape[:2]:
        raise ValueError(f"heatmap shape {heat.shape} does not match the image's {arr.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    mask = heat > threshold
    out = arr.copy()
    if mask.any() and alpha > 0:
        tint = colormap_lut(cmap)[(heat[mask] * 255).round().astype(np.intp)]  # (M, 3)
        blended = (1.0 - alpha) * arr[mask] + alpha * tint
        out[mask] = blended.round().astype(np.uint8)
    return out


def draw_points(image: np.ndarray, points_xy: Iterable[Sequence[float]], radius: float, color: Color) -> np.ndarray:
    """Paint a disc of ``radius`` in ``color`` at each point; (x, y) = (column, row) pixels, as ``PointAnnotation``.

    A pixel is painted when its (column, row) index lies within ``radius`` of the point: exactly the pixels set by
    ``feedbacklab.feedback.consolidate.disc_map``.
    """
    arr = _check_image(image)
    rgb = _check_color(color)
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius!r}")
    h, w = arr.shape[:2]
    out = arr.copy()
    for x, y in points_xy:
        r0, r1 = max(0, int(np.floor(y - radius))), min(h, int(np.ceil(y + radius)) + 1)
        c0, c1 = max(0, int(np.floor(x - radius))), min(w, int(np.ceil(x + radius)) + 1)
        if r0 >= r1 or c0 >= c1:
            continue
        rows, cols = np.mgrid[r0:r1, c0:c1]
        disc = (cols - x) ** 2 + (rows - y) ** 2 <= radius ** 2
        out[r0:r1, c0:c1][disc] = rgb
    return out


def frame(image: np.ndarray, color: Color, width: int = 2) -> np.ndarray:
    """The image with a border of ``width`` pixels in ``color`` drawn inside its edges (marks a pick or a verdict)."""
    arr = _check_image(image)
    rgb = _check_color(color)
    if width < 0 or int(width) != width:
        raise ValueError(f"width must be a non-negative integer, got {width!r}")
    out = arr.copy()
    if width:
        out[:width], out[-width:], out[:, :width], out[:, -width:] = rgb, rgb, rgb, rgb
    return out


def hstack(images: Sequence[np.ndarray], gap: int = 4, color: Color = (255, 255, 255)) -> np.ndarray:
    """Images of one height side by side, ``gap`` pixels of ``color`` between them."""
    arrs = [_check_image(a) for a in images]
    if not arrs or len({a.shape[0] for a in arrs}) != 1:
        raise ValueError(f"hstack needs at least one image, all of one height; got {[a.shape for a in arrs]}")
    spacer = np.empty((arrs[0].shape[0], gap, 3), np.uint8)
    spacer[:] = _check_color(color)
    parts = [p for a in arrs for p in (spacer, a)][1:]
    return np.concatenate(parts, axis=1)
