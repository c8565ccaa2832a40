"""A DDIM step that also returns its log-probability: the one new formula of DDPO (Black et al. 2023, §4.2).

With η > 0 the DDIM update (Song et al. 2021, Eq. 12) is a Gaussian policy
``π_θ(x_{t−1} | x_t, z) = N(μ_θ(x_t, t, z), σ_t² I)``, ``σ_t = η · sqrt((1 − ᾱ_{t−1})/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_{t−1}))``
(Eq. 16), ``μ_θ = sqrt(ᾱ_{t−1}) · x̂_0 + sqrt(1 − ᾱ_{t−1} − σ_t²) · ε̂``. :func:`ddim_step_with_logprob` computes
exactly what ``diffusers.DDIMScheduler.step`` computes — the same prediction types (ε, v, x_0), clipping or
thresholding, and previous timestep ``t − T_train / n_steps`` (so every ``timestep_spacing`` and the zero-SNR
rescaled schedules of the shipped generators work), ``ᾱ_{−1}`` = the scheduler's ``final_alpha_cumprod`` — and
adds the step's mean, σ_t and the log-density of the sample under it (a step with σ_t = 0, the last one of a
``set_alpha_to_one=True`` scheduler, has none and is refused). Timesteps may differ per sample, so the
DDPO update can score many recorded steps in one batched UNet call.

The log-probability is the sum over latent dimensions (the true density) or, with ``reduction="mean"``, the
mean over them as ddpo-pytorch and trl return it (their clip range 1e-4 is tuned for the mean). trl 0.23.1
clamps the previous timestep at 0 before choosing ``ᾱ_{t−1}``, so on a scheduler with ``set_alpha_to_one=True``
its last step differs from diffusers'; this module follows diffusers.

One deliberate difference: the direction term ``sqrt(1 − ᾱ_{t−1} − σ_t²)`` is clamped at 0. At η = 1 on a zero-SNR
schedule (the shipped generators'), the first step makes that argument an exact 0, which rounds below 0 on some
CPUs, and diffusers' step returns NaN latents for the whole batch (diffusers issue #5969).
:func:`nan_safe_ddim_steps` routes a pipeline's own ``scheduler.step`` through this step for η > 0, so plain
sampling with η > 0 (``feedback_sets.sample_images``) does not hit it either.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

REDUCTIONS = ("sum", "mean")


@dataclass
class DDIMStepOutput:
    """``prev_sample`` x_{t−1}; its ``log_prob`` (B,); the step's ``mean`` μ and ``std`` σ_t (broadcast to x)."""

    prev_sample: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor


def _per_sample(values: torch.Tensor, index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[index]`` reshaped (B, 1, 1, …) to broadcast over ``like``, on its device and dtype."""
    out = values.to(index.device)[index].to(like.device, torch.float32)
    return out.reshape(out.shape + (1,) * (like.ndim - out.ndim))


def step_std(scheduler, timestep: torch.Tensor | int, eta: float) -> torch.Tensor:
    """σ_t of DDIM's Eq. 16 for each ``timestep`` (scalar or (B,)), as ``DDIMScheduler._get_variance`` with η."""
    t = torch.as_tensor(timestep, dtype=torch.long).reshape(-1).cpu()
    prev = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.cpu()
    a_t = alphas[t]
    a_prev = torch.where(prev >= 0, alphas[prev.clamp(min=0)], torch.as_tensor(scheduler.final_alpha_cumprod))
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    return eta * variance.clamp(min=0).sqrt()


def check_stochastic(scheduler, timesteps: torch.Tensor | int, eta: float) -> torch.Tensor:
    """σ_t of each step from ``timesteps``; a clear error when one is 0 (that step has no log-probability)."""
    t = torch.as_tensor(timesteps, dtype=torch.long).reshape(-1).cpu()
    sigma = step_std(scheduler, t, eta)
    if not (sigma > 0).all():
        raise ValueError(f"the DDIM step from timestep {int(t[sigma <= 0][0])} has sigma_t = 0 (with set_alpha_to_one=True "
                         "the last step is deterministic): it has no log-probability; use set_alpha_to_one=False, as "
                         "Stable Diffusion's schedulers do")
    return sigma


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """log N(x; mean, std² I) per sample → (B,): summed over the other dimensions, or their mean."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    std = std.expand_as(mean)
    lp = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    dims = tuple(range(1, lp.ndim))
    return lp.sum(dims) if reduction == "sum" else lp.mean(dims)


def gaussian_step_kl(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """KL(N(μ_θ, σ²I) ‖ N(μ_ref, σ²I)) = ‖μ_θ − μ_ref‖² / (2σ_t²) per sample → (B,); same reduction as the log-prob."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    kl = (mean - ref_mean) ** 2 / (2 * std.expand_as(mean) ** 2)
    dims = tuple(range(1, kl.ndim))
    return kl.sum(dims) if reduction == "sum" else kl.mean(dims)


def ddim_step_with_logprob(scheduler, model_output: torch.Tensor, timestep: torch.Tensor | int, sample: torch.Tensor,
                           eta: float = 1.0, prev_sample: torch.Tensor | None = None,
                           generator: torch.Generator | list[torch.Generator] | None = None,
                           reduction: str = "sum") -> DDIMStepOutput:
    """One DDIM step x_t → x_{t−1} of ``scheduler`` (a ``DDIMScheduler`` after ``set_timesteps``) with its policy.

    ``timestep`` is a scalar or one per sample. Without ``prev_sample`` a new one is drawn as
    ``μ + σ_t · noise`` (noise from ``generator``, a CPU generator or one per sample); with it, only its
    log-probability under the current model is computed (the DDPO update's case). ``eta`` must be > 0: at η = 0
    the step is deterministic and has no density."""
    if eta <= 0:
        raise ValueError(f"eta must be > 0 for the DDIM step to be a stochastic policy with a log-probability, got {eta}")
    if getattr(scheduler, "num_inference_steps", None) is None:
        raise ValueError("the scheduler has no timesteps yet: call scheduler.set_timesteps(num_inference_steps) first")
    if prev_sample is not None and generator is not None:
        raise ValueError("pass either prev_sample (score a recorded step) or generator (draw a new one), not both")
    cfg = scheduler.config
    t = torch.as_tensor(timestep, dtype=torch.long, device="cpu").reshape(-1)
    if t.numel() == 1:
        t = t.expand(sample.shape[0])
    if t.numel() != sample.shape[0]:
        raise ValueError(f"timestep must be a scalar or one per sample ({sample.shape[0]}), got {t.numel()}")
    prev_t = t - cfg.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.cpu().float()
    final = torch.as_tensor(float(scheduler.final_alpha_cumprod))
    a_t = _per_sample(alphas, t, sample)
    a_prev = _per_sample(torch.where(prev_t >= 0, alphas[prev_t.clamp(min=0)], final), torch.arange(len(t)), sample)
    b_t = 1 - a_t
    x, out = sample.float(), model_output.float()
    if cfg.prediction_type == "epsilon":
        x0, eps = (x - b_t.sqrt() * out) / a_t.sqrt(), out
    elif cfg.prediction_type == "sample":
        x0, eps = out, (x - a_t.sqrt() * out) / b_t.sqrt()
    elif cfg.prediction_type == "v_prediction":
        x0, eps = a_t.sqrt() * x - b_t.sqrt() * out, a_t.sqrt() * out + b_t.sqrt() * x
    else:
        raise ValueError(f"unsupported prediction_type {cfg.prediction_type!r}; accepted: 'epsilon', 'sample', 'v_prediction'")
    if cfg.thresholding:
        x0 = scheduler._threshold_sample(x0)
    elif cfg.clip_sample:
        x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
    sigma = check_stochastic(scheduler, t, eta)
    std = _per_sample(sigma, torch.arange(len(t)), sample)
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
    if prev_sample is None:
        gens = generator if isinstance(generator, list) else [generator] * len(t)
        if len(gens) != len(t):
            raise ValueError(f"got {len(gens)} generators for {len(t)} samples")
        if generator is None or not isinstance(generator, list):
            noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32)
        else:
            noise = torch.stack([torch.randn(mean.shape[1:], generator=g, dtype=torch.float32) for g in gens])
        prev_sample = mean.detach() + std * noise.to(mean.device)
    log_prob = gaussian_log_prob(prev_sample.detach().float(), mean, std, reduction)
    return DDIMStepOutput(prev_sample.to(sample.dtype), log_prob, mean, std)


@contextmanager
def nan_safe_ddim_steps(scheduler) -> Iterator[None]:
    """Within the block, ``scheduler.step(..., eta > 0)`` of a ``DDIMScheduler`` is :func:`ddim_step_with_logprob`'s
    sample (the same mean, σ_t and per-generator noise as diffusers', with the direction term clamped at 0: no NaN
    at η = 1 on zero-SNR schedules, diffusers #5969). Deterministic steps (η = 0), explicit ``variance_noise`` and
    ``use_clipped_model_output`` go to diffusers' own step; other schedulers are left alone."""
    from diffusers import DDIMScheduler
    from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

    if not isinstance(scheduler, DDIMScheduler):
        yield
        return
    original = scheduler.step

    def step(model_output: torch.Tensor, timestep: int, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator=None, variance_noise: torch.Tensor | None = None,
             return_dict: bool = True):
        if eta <= 0 or variance_noise is not None or use_clipped_model_output:
            return original(model_output, timestep, sample, eta=eta, use_clipped_model_output=use_clipped_model_output,
                            generator=generator, variance_noise=variance_noise, return_dict=return_dict)
        prev = ddim_step_with_logprob(scheduler, model_output, timestep, sample, eta, generator=generator).prev_sample
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=None) if return_dict else (prev,)

    scheduler.step = step
    try:
        yield
    finally:
        del scheduler.step  # the class's own method again
