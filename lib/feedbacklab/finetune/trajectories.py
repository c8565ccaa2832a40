"""Sampling with trajectories: a diffusers Stable Diffusion pipeline's own components, every DDIM step recorded.

DDPO treats denoising as a T-step decision process, so each sample keeps its whole chain ``x_T … x_0``, the
log-probability of each step under the sampling policy and the timesteps. Classifier-free guidance works as in
the pipeline (one batched UNet call for the unconditional and conditional branches), with the same guidance
scale as evaluation; the prompt embeddings come from ``pipe.encode_prompt``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from feedbacklab.finetune.ddim_logprob import ddim_step_with_logprob


@dataclass
class Trajectories:
    """N sampled chains: ``latents`` (N, T+1, C, h, w) from x_T to x_0, ``log_probs`` (N, T) of each step,
    ``timesteps`` (T,), ``images`` (N, 3, H, W) in [0, 1] on CPU, and the prompt of each sample."""

    prompts: list[str]
    latents: torch.Tensor
    log_probs: torch.Tensor
    timesteps: torch.Tensor
    images: torch.Tensor

    def __len__(self) -> int:
        return len(self.prompts)


def check_ddim_pipeline(pipe: Any) -> None:
    """A clear error, before any work, when ``pipe`` lacks what DDPO needs (a DDIM scheduler, a UNet, a VAE)."""
    from diffusers import DDIMScheduler

    missing = [name for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if getattr(pipe, name, None) is None]
    if missing:
        raise TypeError(f"DDPO needs a diffusers Stable Diffusion pipeline with unet, vae, text_encoder, tokenizer and "
                        f"scheduler; {type(pipe).__name__} has no {', '.join(missing)}")
    if not isinstance(pipe.scheduler, DDIMScheduler):
        raise TypeError(f"DDPO's policy is the DDIM step with eta > 0, but the pipeline's scheduler is "
                        f"{type(pipe.scheduler).__name__}; set pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config) "
                        "(it keeps the beta schedule and prediction type) and evaluate with the same scheduler")


def guided_output(unet: torch.nn.Module, latents: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor,
                  uncond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """The UNet's classifier-free-guided prediction ``u + g·(c − u)`` (one batched call), or the conditional one
    when ``guidance_scale`` ≤ 1, as ``StableDiffusionPipeline`` does. ``timesteps`` is a scalar or one per sample."""
    t = timesteps.reshape(-1).to(latents.device)
    if t.numel() == 1:
        t = t.expand(latents.shape[0])
    if guidance_scale <= 1.0:
        return unet(latents, t, encoder_hidden_states=cond).sample.float()
    out = unet(torch.cat([latents, latents]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, cond])).sample
    out_uncond, out_cond = out.float().chunk(2)
    return out_uncond + guidance_scale * (out_cond - out_uncond)


@torch.no_grad()
def decode_images(pipe: Any, latents: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Final latents → images (N, 3, H, W) float in [0, 1] on CPU, through the pipeline's VAE."""
    scale = float(pipe.vae.config.scaling_factor)
    out = [(pipe.vae.decode((latents[i:i + batch_size] / scale).to(pipe.vae.dtype)).sample.float() / 2 + 0.5).clamp(0, 1).cpu()
           for i in range(0, latents.shape[0], batch_size)]
    return torch.cat(out)


@torch.no_grad()
def sample_trajectories(pipe: Any, prompts: Sequence[str], generator: torch.Generator, num_inference_steps: int = 50,
                        guidance_scale: float = 5.0, eta: float = 1.0, batch_size: int = 8,
                        reduction: str = "sum", text_cache: dict[str, torch.Tensor] | None = None,
                        autocast_dtype: torch.dtype | None = None) -> Trajectories:
    """Sample one image per prompt with DDIM at ``eta`` > 0 and record its chain and step log-probabilities.

    All randomness (initial noise x_T, every step's noise) comes from the CPU ``generator``, so a seed fixes the
    result whatever the device. ``text_cache`` maps prompt → (L, D) text states (filled on the way; "" is the
    unconditional one). ``reduction`` is the log-probability's ("sum" or "mean" over latent dimensions)."""
    from diffusers import DDIMScheduler

    check_ddim_pipeline(pipe)
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: nothing to sample")
    unet = pipe.unet
    device = unet.device
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_inference_steps, device="cpu")
    text = text_embeddings(pipe, prompts, text_cache)
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    chains, log_probs, images = [], [], []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        cond = torch.stack([text[p] for p in batch]).to(device)
        uncond = text[""].to(device).expand_as(cond)
        x = (torch.randn((len(batch),) + shape, generator=generator) * scheduler.init_noise_sigma).to(device)
        chain, lps = [x.cpu()], []
        for t in scheduler.timesteps:
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = guided_output(unet, scheduler.scale_model_input(x, t), t, cond, uncond, guidance_scale)
            step = ddim_step_with_logprob(scheduler, out, t, x.float(), eta, generator=generator, reduction=reduction)
            x = step.prev_sample
            chain.append(x.cpu())
            lps.append(step.log_prob.cpu())
        chains.append(torch.stack(chain, dim=1))
        log_probs.append(torch.stack(lps, dim=1))
        images.append(decode_images(pipe, x))
    return Trajectories(prompts, torch.cat(chains), torch.cat(log_probs), scheduler.timesteps.clone(), torch.cat(images))


def skip_trajectories(pipe: Any, generator: torch.Generator, n: int, num_inference_steps: int, batch_size: int) -> None:
    """Advance ``generator`` as :func:`sample_trajectories` sampling ``n`` images would (each batch's x_T, then
    every step's noise), without sampling them: a data-parallel process skips the other processes' samples."""
    c = pipe.unet.config
    for start in range(0, n, batch_size):
        for _ in range(num_inference_steps + 1):
            torch.randn((min(batch_size, n - start), c.in_channels, c.sample_size, c.sample_size), generator=generator)


@torch.no_grad()
def text_embeddings(pipe: Any, prompts: Sequence[str], cache: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """prompt → its (L, D) text-encoder states via ``pipe.encode_prompt`` (CFG off), "" included; cached."""
    cache = {} if cache is None else cache
    todo = sorted((set(prompts) | {""}) - set(cache))
    if todo:
        embeds = pipe.encode_prompt(todo, pipe.text_encoder.device, 1, False)[0].float()
        cache.update(zip(todo, embeds))
    return cache
