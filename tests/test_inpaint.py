"""RichHF inpainting: heatmap → mask, the random-mask control, best-of-K inpainting on the shipped tiny pipeline."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from feedbacklab.feedback_sets import SamplerConfig, sample_images
from feedbacklab.inpaint import (InpaintConfig, inpaint_best, inpaint_pipeline, latent_cells, mask_from_heatmap,
                                 random_mask_like)

torch.set_num_threads(1)

PROMPTS = ["two red circles on a white background", "one blue square on a black background",
           "three green triangles on a gray background"]
CONFIG = InpaintConfig(num_inference_steps=2, n_candidates=2, batch_size=4)


def _brightness(prompts, images):  # (M, 3, H, W) in [0, 1] → (M,)
    return images.mean((1, 2, 3))


@pytest.fixture(scope="module")
def pipe():
    from feedbacklab.models import load_generator

    torch.set_num_threads(1)
    return load_generator("shapes-sd", device="cpu")


@pytest.fixture(scope="module")
def inputs(pipe):
    """Three 64 px images; the first two masked (a block, a thin line), the third with an empty mask."""
    images = sample_images(pipe, PROMPTS, [1, 2, 3], SamplerConfig(num_inference_steps=2), progress=False)
    masks = np.zeros((3, 64, 64), dtype=bool)
    masks[0, 20:36, 24:40] = True
    masks[1, 10:50, 30] = True
    return images, masks


@pytest.fixture(scope="module")
def result(pipe, inputs):
    images, masks = inputs
    return inpaint_best(pipe, images, PROMPTS, masks, _brightness, CONFIG, seed=0, progress=False)


def test_mask_from_heatmap_thresholds_then_dilates_by_a_disc():
    heat = np.zeros((9, 9))
    heat[3:5, 3:5] = 0.8
    heat[3, 3] = 0.5    # exactly at the threshold: masked
    heat[7, 7] = 0.49   # below: not masked
    expected = np.zeros((9, 9), dtype=bool)
    expected[3:5, 3:5] = True
    assert np.array_equal(mask_from_heatmap(heat, 0.5, dilation=0), expected)
    for y, x in [(2, 3), (2, 4), (5, 3), (5, 4), (3, 2), (4, 2), (3, 5), (4, 5)]:  # radius 1: the 4-neighbours
        expected[y, x] = True
    mask = mask_from_heatmap(heat, 0.5, dilation=1)
    assert mask.dtype == bool and np.array_equal(mask, expected)


def test_mask_from_heatmap_keeps_the_kind_and_the_batch():
    heat = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = mask_from_heatmap(heat, 0.9, dilation=2)
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.shape == (2, 16, 16)
    for i in range(2):
        assert np.array_equal(mask[i].numpy(), mask_from_heatmap(heat[i].numpy(), 0.9, dilation=2))


@pytest.mark.parametrize("heat, kw, match", [
    (np.zeros((4, 4)), {"threshold": -0.1}, "threshold must be a number in \\[0, 1\\]"),
    (np.zeros((4, 4)), {"threshold": 1.5}, "threshold must be a number in \\[0, 1\\]"),
    (np.zeros((4, 4)), {"dilation": -1}, "dilation must be an int >= 0"),
    (np.zeros(4), {}, "shape \\(H, W\\) or \\(N, H, W\\)"),
    (np.zeros((1, 1, 4, 4)), {}, "shape \\(H, W\\) or \\(N, H, W\\)"),
    (np.full((4, 4), np.nan), {}, "NaN"),
])
def test_mask_from_heatmap_rejects_bad_inputs(heat, kw, match):
    with pytest.raises(ValueError, match=match):
        mask_from_heatmap(heat, **kw)


def test_random_mask_like_keeps_the_area_and_the_latent_cells(inputs):
    _, masks = inputs
    control = random_mask_like(masks, seed=0, step=4)
    assert control.shape == masks.shape and control.dtype == bool
    assert np.array_equal(control.sum((1, 2)), masks.sum((1, 2)))
    assert not np.array_equal(control, masks)
    assert np.array_equal(control, random_mask_like(masks, seed=0, step=4))
    area = lambda m: latent_cells(torch.from_numpy(m), 4).sum((1, 2, 3))  # noqa: E731
    assert torch.equal(area(control), area(masks))
    one = random_mask_like(torch.from_numpy(masks[0]), seed=3)
    assert isinstance(one, torch.Tensor) and int(one.sum()) == int(masks[0].sum())
    with pytest.raises(ValueError, match="binary"):
        random_mask_like(np.full((4, 4), 0.5), seed=0)


@pytest.mark.parametrize("kw", [{"num_inference_steps": 0}, {"n_candidates": 0}, {"batch_size": 0},
                                {"dilation": -1}, {"guidance_scale": -1.0}, {"strength": 0.0},
                                {"strength": 1.5}, {"strength": 0.1, "num_inference_steps": 5},
                                {"threshold": 1.1}])
def test_inpaint_config_rejects_bad_fields(kw):
    with pytest.raises(ValueError):
        InpaintConfig(**kw)


def test_latent_cells_fill_every_cell_a_mask_touches():
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 2:14, 6] = True  # a one-pixel line: diffusers' nearest resize to 4x4 cells would read none of it
    cells = latent_cells(masks, 4)
    expected = torch.zeros(1, 1, 16, 16)
    expected[..., 4:8] = 1.0
    assert torch.equal(cells, expected)
    assert torch.equal(F.interpolate(cells, size=(4, 4)), F.max_pool2d(masks[:, None].float(), 4))


def test_inpaint_pipeline_shares_the_modules(pipe):
    from diffusers import StableDiffusionInpaintPipeline

    ipipe = inpaint_pipeline(pipe)
    assert isinstance(ipipe, StableDiffusionInpaintPipeline) and inpaint_pipeline(ipipe) is ipipe
    assert ipipe.unet is pipe.unet and ipipe.vae is pipe.vae and ipipe.text_encoder is pipe.text_encoder
    assert ipipe.config.requires_safety_checker is False and ipipe.unet.config.in_channels == 4


def test_pixels_outside_the_mask_come_back_exactly(inputs, result):
    images, masks = inputs
    outside = ~torch.from_numpy(masks)[:, None].expand_as(images)
    assert torch.equal(result.images[outside], images[outside])
    inside = ~outside[0]
    assert (result.images[0][inside] - images[0][inside]).abs().mean() > 1e-2  # regenerated
    assert result.images.shape == images.shape and 0 <= result.images.min() and result.images.max() <= 1


def test_the_kept_candidate_is_the_best_scored(result):
    assert result.candidate_scores.shape == (3, 2)
    assert torch.equal(result.best[:2], result.candidate_scores[:2].argmax(1))
    assert torch.equal(result.scores[:2], result.candidate_scores[:2].max(1).values)
    assert torch.allclose(_brightness(None, result.images[:2]), result.scores[:2])


def test_an_empty_mask_returns_the_image_unchanged(inputs, result):
    images, _ = inputs
    assert result.inpainted.tolist() == [True, True, False]
    assert torch.equal(result.images[2], images[2])
    assert result.best[2] == -1 and torch.isnan(result.scores[2]) and torch.isnan(result.candidate_scores[2]).all()


def test_same_seed_same_output_whatever_the_batch_size(pipe, inputs, result):
    images, masks = inputs
    again = inpaint_best(pipe, images, PROMPTS, masks, _brightness, dataclasses.replace(CONFIG, batch_size=1),
                         seed=0, progress=False)
    assert torch.allclose(again.images, result.images, atol=1e-5)
    assert torch.equal(again.best, result.best)
    other = inpaint_best(pipe, images[:1], PROMPTS[:1], masks[:1], _brightness, CONFIG, seed=1, progress=False)
    assert not torch.allclose(other.images[0], result.images[0], atol=1e-3)


def test_inpaint_best_checks_its_inputs_first(pipe, inputs):
    images, masks = inputs
    never = lambda p, x: pytest.fail("score_fn called")  # noqa: E731
    cases = [((images * 2, PROMPTS, masks), "in \\[0, 1\\]"),
             ((images[:, :1], PROMPTS, masks), "\\(N, 3, H, W\\)"),
             ((images, PROMPTS[:2], masks), "3 strings"),
             ((images, PROMPTS, masks[:, :32]), "masks must have shape"),
             ((images, PROMPTS, masks * 0.5), "binary"),
             ((images[:, :, :62, :62], PROMPTS, masks[:, :62, :62]), "multiples of the VAE factor")]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            inpaint_best(pipe, *args, never, CONFIG, progress=False)
    with pytest.raises(ValueError, match="score_fn must return"):
        inpaint_best(pipe, images[:1], PROMPTS[:1], masks[:1], lambda p, x: x.mean((2, 3)), CONFIG, progress=False)


def test_relative_threshold_masks_each_maps_peak():
    from feedbacklab.inpaint import mask_from_heatmap

    maps = np.zeros((3, 8, 8), dtype=np.float32)
    maps[0, 2, 2], maps[0, 2, 3] = 0.2, 0.1      # a low map: its peak and the half-peak pixel
    maps[1, 5, 5] = 0.9
    m = mask_from_heatmap(maps, 0.5, 0, relative=True)
    assert m[0].sum() == 2 and m[0, 2, 2] and m[0, 2, 3]
    assert m[1].sum() == 1 and m[1, 5, 5]
    assert not m[2].any()                        # an all-zero map stays empty
    assert not mask_from_heatmap(maps, 0.5, 0)[0].any()
