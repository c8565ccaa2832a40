"""The vectorised perception helpers give bit-for-bit what their straightforward formulations give.

Every verdict of the oracle hangs on thresholds of these values, so the comparisons are exact (==, not allclose).
"""
import random

import numpy as np
import pytest
from scipy import ndimage

from feedbacklab import world
from feedbacklab.world import corrupt, perception
from feedbacklab.world.renderer import coverage, inside


def _images():
    """Clean and corrupted renders at three sizes, uniform noise, a float image with NaN pixels, adapted images."""
    rng = random.Random(0)
    out = []
    for i in range(12):
        spec = world.sample_spec(rng, world.FAMILIES[i % 3], split="any")
        image, scene = world.render(spec, size=(64, 32, 48)[i % 3], seed=i)
        out.append(image)
        kind = corrupt.KINDS[i % len(corrupt.KINDS)]
        out.append(corrupt.apply(kind, image, scene, np.random.default_rng(i), 0.75)[0])
    out.append(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    nan = out[0].astype(np.float32) / 255
    nan[[3, 30, 31], [5, 30, 2], [0, 1, 2]] = np.nan
    out.append(nan)
    floats = [perception.as_image(im) for im in out]
    # white-balanced / shifted images (as _prepare's adaptation makes them): non-integer pixel values
    return floats + [im * np.float32([1.03, 0.97, 1.11]) for im in floats[:6]] + [im - 3.3 for im in floats[6:9]]


def _mixture_reference(image, bg):
    """The plain (N, K) formulation: argmin over colours of the residual to each bg->c_k segment."""
    d = image.reshape(-1, 3) - bg
    v = perception._PALETTE - bg
    vv = (v * v).sum(1)
    dots = d @ v.T
    alpha = np.clip(dots / vv, 0.0, 1.0)
    dd = (d * d).sum(1)
    res2 = dd[:, None] - 2 * alpha * dots + alpha * alpha * vv
    k = res2.argmin(1)
    rows = np.arange(k.size)
    h, w = image.shape[:2]
    return (k.reshape(h, w), alpha[rows, k].reshape(h, w),
            np.sqrt(np.maximum(res2[rows, k], 0)).reshape(h, w), np.sqrt(dd).reshape(h, w))


def test_mixture_matches_the_per_pixel_formulation():
    for image in _images():
        for bg in perception._BG:
            for got, want in zip(perception._mixture(image, bg), _mixture_reference(image, bg)):
                assert got.dtype == want.dtype
                np.testing.assert_array_equal(got, want)


def test_nearest_is_argmin_with_ties_and_nan_columns():
    g = np.random.default_rng(2)
    res2 = g.integers(0, 4, (5, 2000)).astype(np.float32)  # many ties
    res2[:, ::7] = np.nan
    np.testing.assert_array_equal(perception._nearest(res2), res2.argmin(axis=0))


def test_templates_match_renderer_coverage():
    g = np.random.default_rng(3)
    for _ in range(150):
        area = float(g.uniform(3, 900))
        cx, cy = (float(v) for v in g.uniform(0, 64, 2))
        r = np.sqrt(area) * 0.8 + 2
        box = (max(int(cx - r), 0), max(int(cy - r), 0), min(int(cx + r) + 1, 64), min(int(cy + r) + 1, 64))
        got = perception._templates(box, cx, cy, area)
        for i, shape in enumerate(perception.SHAPES):
            cov = coverage(lambda x, y: inside(shape, x, y, cx, cy, area), box, perception.TEMPLATE_SUPERSAMPLE)
            want = perception._sharpen(cov)
            assert got[i].dtype == want.dtype
            np.testing.assert_array_equal(got[i], want)


def test_hit_counts_fast_path_matches_plain_sums():
    g = np.random.default_rng(4)
    s = perception.TEMPLATE_SUPERSAMPLE
    for _ in range(50):
        h, w = (int(v) for v in g.integers(1, 30, 2))
        hits = g.random((h * s, w * s)) < g.uniform()
        plain = hits.reshape(h, s, w, s).sum(axis=(1, 3))
        np.testing.assert_array_equal(perception._hit_counts(hits), plain)
        np.testing.assert_array_equal(perception._hit_counts(hits[::-1]), plain[::-1])  # non-contiguous path


@pytest.mark.parametrize("n", [1, 2, 3, 10, 11, 257, 1000])
def test_percentile_and_medians_match_numpy(n):
    g = np.random.default_rng(n)
    for _ in range(30):
        values = (g.random(n) * g.choice([1.0, 255.0])).astype(np.float32)
        assert perception._percentile(values, 90) == np.percentile(values, 90)
        rows = g.normal(0, 20, (3, n)).astype(np.float32)
        np.testing.assert_array_equal(perception._row_medians(rows), np.median(rows.T, axis=0))
    rows[1, n // 2] = np.nan
    np.testing.assert_array_equal(perception._row_medians(rows), np.median(rows.T, axis=0))


def test_box_filter_matches_scipy_morphology():
    g = np.random.default_rng(5)
    eight = np.ones((3, 3), dtype=bool)
    for p in (0.003, 0.05, 0.3, 0.7, 0.97):
        mask = g.random((40, 33)) < p
        for r in (1, 2):
            np.testing.assert_array_equal(perception._box_filter(mask, r),
                                          ndimage.binary_dilation(mask, structure=eight, iterations=r))
        np.testing.assert_array_equal(perception._box_filter(perception._box_filter(mask, 1, np.minimum), 1),
                                      ndimage.binary_opening(mask, structure=eight))
        labels, _ = ndimage.label(mask, structure=eight)
        np.testing.assert_array_equal(perception._box_filter(labels, 1), ndimage.grey_dilation(labels, size=(3, 3)))
