"""RichHF's inpainting application (Liang et al. 2024, §5): mask what the heatmap calls implausible, regenerate it.

A predicted implausibility heatmap is thresholded and dilated into a binary mask (:func:`mask_from_heatmap`);
diffusers' ``StableDiffusionInpaintPipeline``, built from a text-to-image pipeline's own components
(:func:`inpaint_pipeline`), draws ``n_candidates`` regenerations of the masked region per image, and a scorer (e.g.
a predicted plausibility) keeps the best (:func:`inpaint_best`). :func:`random_mask_like` is the control: a mask of
the same area placed at random.

Masks are binary (H, W) or (N, H, W); images float (N, 3, H, W) in [0, 1], as everywhere in the library.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

ScoreFn = Callable[[Sequence[str], torch.Tensor], torch.Tensor]  # (prompts, (M, 3, H, W) in [0, 1]) → (M,)
Mask = np.ndarray | torch.Tensor

INPAINT_STREAM = 1  # SeedSequence spawn key of candidate seeds: apart from sample_images' image_seed streams


def _check_map(x: Any, name: str) -> np.ndarray:
    """``x`` (numpy or torch, 2-D or 3-D) as a numpy array; a ValueError naming what is accepted otherwise."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{name} must be a numpy array or torch tensor of shape (H, W) or (N, H, W), got {type(x)}")
    if x.ndim not in (2, 3):
        raise ValueError(f"{name} must have shape (H, W) or (N, H, W), got {tuple(x.shape)}")
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _like(mask: np.ndarray, template: Mask) -> Mask:
    """A numpy bool mask as the kind of ``template``: numpy bool, or a torch bool tensor on its device."""
    return torch.from_numpy(mask).to(template.device) if isinstance(template, torch.Tensor) else mask


def disc(radius: int) -> np.ndarray:
    """A disc structuring element, bool (2r+1, 2r+1): the offsets with dy² + dx² <= r²."""
    d = np.arange(-radius, radius + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= radius ** 2


def mask_from_heatmap(heatmap: Mask, threshold: float = 0.5, dilation: int = 2, relative: bool = False) -> Mask:
    """Binary mask of the pixels where ``heatmap >= threshold``, dilated by a disc of radius ``dilation`` pixels.

    ``heatmap`` is (H, W) or batched (N, H, W) on RichHF's [0, 1] scale (rescale maps on another scale first);
    ``threshold`` is an absolute level on that scale, or with ``relative`` a share of each map's own maximum (the
    map's peak region, whatever its height; an all-zero map stays empty). Returns bool of the same shape and kind
    (numpy or torch)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1] (heatmaps are on a [0, 1] scale), got {threshold!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 0:
        raise ValueError(f"dilation must be an int >= 0 (a radius in pixels), got {dilation!r}")
    h = _check_map(heatmap, "heatmap")
    if np.isnan(h).any():
        raise ValueError("heatmap contains NaN")
    if relative:
        peak = h.max(axis=(-2, -1), keepdims=True)
        mask = (h >= threshold * peak) & (peak > 0)
    else:
        mask = h >= threshold
    if dilation > 0:
        from scipy.ndimage import binary_dilation

        footprint = disc(int(dilation))
        mask = binary_dilation(mask, footprint if mask.ndim == 2 else footprint[None])
    return _like(mask, heatmap)


def _check_binary(m: np.ndarray, name: str) -> np.ndarray:
    if m.dtype != bool and not np.isin(m, (0, 1)).all():
        raise ValueError(f"{name} must be binary (bool, or numbers that are all 0 or 1)")
    return m.astype(bool)


def random_mask_like(mask: Mask, seed: int, step: int = 1) -> Mask:
    """The control mask: ``mask`` rolled (cyclically shifted) by a random offset, so its area and shape are kept.

    Batched masks (N, H, W) get one offset each, drawn from ``SeedSequence([seed, i])``. Offsets are multiples of
    ``step``: pass the pipeline's ``vae_scale_factor`` to keep the number of latent cells covered equal too."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an int >= 1, got {step!r}")
    m = _check_binary(_check_map(mask, "mask"), "mask")
    batch = m if m.ndim == 3 else m[None]
    out = np.empty_like(batch)
    for i, one in enumerate(batch):
        rng = np.random.default_rng([seed, i])
        dy, dx = (int(rng.integers(0, -(-n // step))) * step for n in one.shape)
        out[i] = np.roll(one, (dy, dx), axis=(0, 1))
    return _like(out if m.ndim == 3 else out[0], mask)


def inpaint_pipeline(pipe: Any) -> Any:
    """A ``StableDiffusionInpaintPipeline`` sharing ``pipe``'s modules (no copies); one is returned as is.

    With a 4-channel (text-to-image) UNet diffusers takes its legacy path: the image is VAE-encoded, the mask
    nearest-resized to the latent grid, and after every denoising step the latents outside the mask are replaced
    by the original's latents noised to the next timestep (the original's own latents after the last step). A
    9-channel inpainting UNet is instead conditioned on the mask and the masked image's latents."""
    from diffusers import StableDiffusionInpaintPipeline

    if isinstance(pipe, StableDiffusionInpaintPipeline):
        return pipe
    parts = pipe.components
    names = ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "safety_checker", "feature_extractor",
             "image_encoder")
    out = StableDiffusionInpaintPipeline(**{n: parts.get(n) for n in names}, requires_safety_checker=False)
    out.set_progress_bar_config(disable=True)
    return out


@dataclass(frozen=True)
class InpaintConfig:
    """RichHF inpainting settings: the mask (threshold, dilation), the inpainting sampler and best-of-K selection."""

    num_inference_steps: int = 20   # DDIM steps (as SamplerConfig); the pipeline runs int(steps · strength) of them
    guidance_scale: float = 4.0     # classifier-free guidance (as SamplerConfig)
    strength: float = 1.0           # 1: the masked region starts from pure noise; < 1: from the original, noised
    n_candidates: int = 4           # inpaintings drawn per image; the best-scored one is kept
    threshold: float = 0.5          # heatmap level (on [0, 1]) at and above which a pixel is masked
    relative: bool = False          # threshold as a share of each map's maximum instead of an absolute level
    dilation: int = 2               # mask dilation radius in pixels (half a latent cell at 64 px)
    batch_size: int = 32            # candidates per pipeline call

    def __post_init__(self):
        ints = {"num_inference_steps": 1, "n_candidates": 1, "batch_size": 1, "dilation": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if not 0 < self.strength <= 1 or int(self.num_inference_steps * self.strength) < 1:
            raise ValueError(f"strength must be in (0, 1] with int(num_inference_steps * strength) >= 1, "
                             f"got strength {self.strength} at {self.num_inference_steps} steps")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def mask(self, heatmap: Mask) -> Mask:
        """:func:`mask_from_heatmap` with this config's threshold and dilation."""
        return mask_from_heatmap(heatmap, self.threshold, self.dilation, self.relative)


@dataclass
class InpaintResult:
    """Best-of-K inpaintings; rows of images that were not inpainted (empty mask) hold the input, NaN and -1."""

    images: torch.Tensor            # (N, 3, H, W) in [0, 1]: the best candidate, or the input where not inpainted
    scores: torch.Tensor            # (N,) the kept candidate's score
    candidate_scores: torch.Tensor  # (N, K) every candidate's score
    best: torch.Tensor              # (N,) int64 index of the kept candidate
    inpainted: torch.Tensor         # (N,) bool: the mask was non-empty and candidates were drawn


def candidate_seed(seed: int, image_index: int, candidate: int) -> int:
    """The generator seed of candidate ``candidate`` of image ``image_index`` (independent of batching).

    Its own ``SeedSequence`` stream: inpainting with the seed that generated the images replays none of their noise."""
    ss = np.random.SeedSequence([seed, image_index, candidate], spawn_key=(INPAINT_STREAM,))
    return int(ss.generate_state(1)[0])


def latent_cells(masks: torch.Tensor, factor: int) -> torch.Tensor:
    """The region regenerated: each latent cell (factor × factor pixels) a mask touches; (N, H, W) → (N, 1, H, W).

    diffusers nearest-resizes the mask to the latent grid, which reads one pixel per cell and can drop thin
    masks; a cell-constant mask makes that resize exact."""
    cells = F.max_pool2d(masks[:, None].float(), factor)
    return F.interpolate(cells, scale_factor=factor, mode="nearest")


def _check_inputs(images: Any, prompts: Sequence[str], masks: Any, factor: int) -> torch.Tensor:
    """Validate images (N, 3, H, W) in [0, 1], N prompts and N binary masks (H, W); return the masks, bool tensor."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a float tensor (N, 3, H, W) in [0, 1], got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)}")
    if not images.is_floating_point() or (images.numel() and not bool(((images >= 0) & (images <= 1)).all())):
        raise ValueError("images must be floats in [0, 1]")
    n, _, h, w = images.shape
    if h % factor or w % factor:
        raise ValueError(f"image height and width must be multiples of the VAE factor {factor}, got {h}x{w}")
    if isinstance(prompts, str) or len(prompts) != n or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a sequence of {n} strings, one per image")
    m = _check_map(masks, "masks")
    if m.shape != (n, h, w):
        raise ValueError(f"masks must have shape (N, H, W) = {(n, h, w)} to match the images, got {m.shape}")
    return torch.from_numpy(_check_binary(m, "masks"))


@torch.no_grad()
def inpaint_best(pipe: Any, images: torch.Tensor, prompts: Sequence[str], masks: Mask, score_fn: ScoreFn,
                 config: InpaintConfig | None = None, seed: int = 0, progress: bool = True) -> InpaintResult:
    """For each image, draw ``n_candidates`` inpaintings of its masked region; keep the one ``score_fn`` rates highest.

    Each candidate has its own seeded CPU generator (:func:`candidate_seed`), so results do not depend on batching.
    Outside the mask every pixel is the original's exactly: the decoded candidate is pasted in through the mask as
    given (what diffusers' ``apply_overlay`` does), which undoes the VAE round trip there. The latents regenerated
    are every latent cell the mask touches. Images with an empty mask are returned unchanged, unsampled."""
    from tqdm.auto import tqdm

    config = config or InpaintConfig()
    ipipe = inpaint_pipeline(pipe)
    masks = _check_inputs(images, prompts, masks, ipipe.vae_scale_factor)
    images = images.float().cpu()
    n, k, (h, w) = len(images), config.n_candidates, images.shape[-2:]
    inpainted = masks.flatten(1).any(1)
    cells = latent_cells(masks, ipipe.vae_scale_factor)  # (N, 1, H, W)
    out, best = images.clone(), torch.full((n,), -1, dtype=torch.long)
    candidate_scores = torch.full((n, k), float("nan"))
    jobs = [(i, c) for i in torch.nonzero(inpainted).flatten().tolist() for c in range(k)]
    for start in tqdm(range(0, len(jobs), config.batch_size), desc="inpainting", disable=not progress):
        chunk = jobs[start:start + config.batch_size]
        idx = [i for i, _ in chunk]
        chunk_prompts = [prompts[i] for i in idx]
        generators = [torch.Generator().manual_seed(candidate_seed(seed, i, c)) for i, c in chunk]
        drawn = ipipe(prompt=chunk_prompts, image=images[idx], mask_image=cells[idx], generator=generators,
                      height=h, width=w, num_inference_steps=config.num_inference_steps,
                      guidance_scale=config.guidance_scale, strength=config.strength, output_type="pt").images
        candidates = torch.where(masks[idx][:, None], drawn.float().clamp(0, 1).cpu(), images[idx])
        scores = torch.as_tensor(score_fn(chunk_prompts, candidates)).detach().float().cpu()
        if scores.shape != (len(chunk),) or not torch.isfinite(scores).all():
            raise ValueError(f"score_fn must return {len(chunk)} finite scores (shape ({len(chunk)},)), "
                             f"got shape {tuple(scores.shape)}")
        for (i, c), image, score in zip(chunk, candidates, scores):
            candidate_scores[i, c] = score
            if best[i] < 0 or score > candidate_scores[i, best[i]]:
                best[i], out[i] = c, image
    chosen = candidate_scores.gather(1, best.clamp(min=0)[:, None])[:, 0]
    return InpaintResult(images=out, scores=torch.where(inpainted, chosen, float("nan")),
                         candidate_scores=candidate_scores, best=best, inpainted=inpainted)
