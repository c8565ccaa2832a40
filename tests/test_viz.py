"""Figures: conversions at the edge, grid shapes, and the oracle's reading drawn where it points."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch

from feedbacklab import viz, world


def test_to_uint8_accepts_every_convention():
    image, _ = world.render(world.parse("one red circle on a white background"), size=32, seed=0)
    as_tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    assert np.array_equal(viz.to_uint8(as_tensor), image)
    assert np.array_equal(viz.to_uint8(image), image)


def test_image_grid_lays_out_every_image():
    batch = torch.rand(5, 3, 16, 16)
    fig = viz.image_grid(batch, [f"t{i}" for i in range(5)], ncols=3)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(shown) == 5
    assert [ax.get_title() for ax in shown] == [f"t{i}" for i in range(5)]
    with pytest.raises(ValueError, match="titles"):
        viz.image_grid(batch, ["only one"])


def test_judgement_grid_marks_misaligned_objects():
    spec = world.parse("two red circles on a white background")
    image, scene = world.render(spec, size=64, seed=1)
    j = world.judge("two blue circles on a white background", image)
    fig = viz.judgement_grid([image], [j], captions=["recoloured"])
    ax = fig.axes[0]
    assert len(ax.patches) == len(j.scene.objects) + len(j.misaligned_points) == 4
    assert ax.get_title().startswith("recoloured\nwrong: color")


def test_heatmap_overlay_checks_shape():
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="heatmap shape"):
        viz.heatmap_overlay(ax, np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4)))
