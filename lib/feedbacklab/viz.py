"""Figures for the notebooks: image grids, the oracle's reading drawn on an image, heatmap overlays.

Images may be uint8 (H, W, 3) arrays, PIL images or float tensors (3, H, W) / (B, 3, H, W) in [0, 1];
`to_uint8` converts at this edge. Every function returns the matplotlib Figure, so reports embed it
as a static image (exported HTML cannot show widgets offline).
"""
from __future__ import annotations

import textwrap
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle, Rectangle

from .world.perception import as_image


def to_uint8(image) -> np.ndarray:
    """One image in any library convention → uint8 (H, W, 3)."""
    return np.round(as_image(image)).astype(np.uint8)


def _images(images) -> list[np.ndarray]:
    """A list of images or a batch ((B, 3, H, W) tensor, (B, H, W, 3) array) → list of uint8 images."""
    return [to_uint8(im) for im in images]


def image_grid(images, titles: Sequence[str] | None = None, ncols: int = 8, scale: float = 1.6,
               suptitle: str | None = None) -> plt.Figure:
    """A grid of images with optional short titles (one per image)."""
    ims = _images(images)
    if not ims:
        raise ValueError("image_grid needs at least one image")
    if titles is not None and len(titles) != len(ims):
        raise ValueError(f"got {len(titles)} titles for {len(ims)} images")
    ncols = min(ncols, len(ims))
    nrows = -(-len(ims) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + 0.3 * bool(suptitle)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, im in enumerate(ims):
        ax = axes.flat[i]
        ax.imshow(im, interpolation="nearest")
        if titles is not None:
            ax.set_title(titles[i], fontsize=6, wrap=True)
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def draw_judgement(ax: plt.Axes, image, judgement, point_radius: float | None = None,
                   caption: str | None = None) -> None:
    """The image with the oracle's reading: perceived object boxes (cyan), misaligned points (red
    circles) and artifact points (yellow crosses), titled with the caption and the verdict."""
    im = to_uint8(image)
    ax.imshow(im, interpolation="nearest")
    ax.axis("off")
    radius = point_radius if point_radius is not None else im.shape[0] / 12
    for obj in judgement.scene.objects:
        x0, y0, x1, y1 = obj.bbox
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, lw=0.8, ec="cyan"))
    for x, y in judgement.misaligned_points:
        ax.add_patch(Circle((x, y), radius, fill=False, lw=1.2, ec="red"))
    for x, y in judgement.artifact_points:
        ax.plot([x], [y], marker="x", color="yellow", markersize=6, mew=1.5)
    wrong = [k for k, ok in judgement.attributes.items() if not ok]
    verdict = "aligned" if judgement.aligned else "wrong: " + ",".join(wrong)
    title = f"{verdict}\nplaus {judgement.plausibility:.2f}"
    ax.set_title(f"{caption}\n{title}" if caption else title, fontsize=6)


def judgement_grid(images, judgements, ncols: int = 6, scale: float = 2.0,
                   captions: Sequence[str] | None = None) -> plt.Figure:
    """`draw_judgement` for many images; optional captions head each panel."""
    ims = _images(images)
    if len(ims) != len(judgements):
        raise ValueError(f"got {len(judgements)} judgements for {len(ims)} images")
    ncols = min(ncols, len(ims))
    nrows = -(-len(ims) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, (scale + 0.4) * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (im, j) in enumerate(zip(ims, judgements)):
        draw_judgement(axes.flat[i], im, j, caption=captions[i] if captions is not None else None)
    fig.tight_layout()
    return fig


def heatmap_overlay(ax: plt.Axes, image, heatmap: np.ndarray, alpha: float = 0.5, cmap: str = "magma") -> None:
    """A (H, W) heatmap in [0, 1] blended over its image."""
    im = to_uint8(image)
    if heatmap.shape != im.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match image {im.shape[:2]}")
    ax.imshow(im, interpolation="nearest")
    ax.imshow(heatmap, cmap=cmap, alpha=alpha, vmin=0.0, vmax=max(1e-6, float(heatmap.max())),
              interpolation="bilinear")
    ax.axis("off")


def heatmap_grid(images, maps: dict[str, np.ndarray], titles: Sequence[str] | None = None, scale: float = 1.5,
                 alpha: float = 0.6) -> plt.Figure:
    """One column per image: the image, then one row per named stack of (N, H, W) maps overlaid on it
    (e.g. "consolidated" and each model's prediction)."""
    ims = _images(images)
    names = list(maps)
    if any(len(maps[n]) != len(ims) for n in names):
        raise ValueError(f"every map stack needs {len(ims)} maps (one per image)")
    fig, axes = plt.subplots(1 + len(names), len(ims), figsize=(scale * len(ims), scale * (1 + len(names))),
                             squeeze=False)
    for c, im in enumerate(ims):
        axes[0, c].imshow(im)
        axes[0, c].axis("off")
        if titles is not None:
            axes[0, c].set_title(textwrap.fill(str(titles[c]), 18), fontsize=6)
        for r, name in enumerate(names, 1):
            heatmap_overlay(axes[r, c], im, np.asarray(maps[name][c]), alpha=alpha)
    for r, name in enumerate(["image", *names]):
        axes[r, 0].text(-0.08, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    return fig


def mark_tokens(tokens: Sequence[str], labels: Sequence[int]) -> str:
    """A prompt with its misaligned tokens (label 1) in brackets: ``two [red] circles``."""
    if len(tokens) != len(labels):
        raise ValueError(f"{len(tokens)} tokens but {len(labels)} labels")
    return " ".join(f"[{t}]" if lab else t for t, lab in zip(tokens, labels))
