"""DDPO (Black et al. 2023): policy-gradient fine-tuning of a diffusion model on any reward, with a KL penalty.

Each round samples ``samples_per_round`` images with DDIM at η > 0 (:mod:`trajectories`), scores them with the
reward, turns rewards into advantages normalised per prompt (:mod:`stat_tracking`), and then, for
``inner_epochs`` passes, updates the UNet with DDPO_IS, the clipped importance-sampling objective summed over
the recorded steps (PPO's; the paper's Eq. 5 with clipping):

    L = mean over (sample, step) of max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε)),   ρ = π_θ(x_{t−1}|x_t, z) / π_old(…)

plus ``λ · KL`` with the per-step KL to the frozen base model ``‖μ_θ − μ_ref‖² / (2σ_t²)`` (:mod:`ddim_logprob`);
λ = 0 is ddpo-pytorch's and trl's DDPOTrainer. All recorded steps of a train batch (a random ``timestep_fraction``
of them, in a random order per sample) accumulate into one optimizer step, as ddpo-pytorch does.

Defaults are ddpo-pytorch's ``config/base.py`` (the paper's code; trl 0.23.1's ``DDPOConfig`` has the same values):
50 DDIM steps, η = 1, guidance 5, AdamW lr 3e-4, betas (0.9, 0.999), weight decay 1e-4, ε = 1e-4, advantages
clipped to ±5, per-prompt tracking with buffer 16 and min count 16, log-probabilities averaged over latent
dimensions. ddpo-pytorch trains a LoRA adapter by default (``use_lora=True`` here; full UNet is the default for
the tiny shipped generators, whose full UNet is smaller than an SD LoRA).
"""
from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from feedbacklab.finetune import distributed
from feedbacklab.finetune.ddim_logprob import REDUCTIONS, check_stochastic, ddim_step_with_logprob, gaussian_step_kl
from feedbacklab.finetune.options import UNetOptions
from feedbacklab.finetune.reward_weighted import FinetuneResult, finish_training, prepare_unet_training
from feedbacklab.finetune.stat_tracking import PerPromptStatTracker, batch_advantages
from feedbacklab.finetune.trajectories import (Trajectories, check_ddim_pipeline, guided_output, sample_trajectories,
                                               skip_trajectories, text_embeddings)

RewardFn = Callable[..., Any]  # fn(images (B, 3, H, W) in [0, 1], prompts[, metadata]) -> (B,) or ((B,), info)


@dataclass
class DDPOConfig(UNetOptions):
    """Hyper-parameters of DDPO_IS; defaults are ddpo-pytorch's ``config/base.py`` unless noted."""

    num_inference_steps: int = 50          # DDIM steps while sampling (sample.num_steps)
    eta: float = 1.0                       # DDIM η; > 0 makes each step a Gaussian policy (sample.eta)
    guidance_scale: float = 5.0            # classifier-free guidance while sampling and training (sample.guidance_scale)
    rounds: int = 100                      # sampling rounds, each followed by the update (num_epochs)
    samples_per_round: int = 256           # images sampled and scored per round (ddpo-pytorch: 8 GPUs × 4 batches × 8)
    sample_batch_size: int = 8             # images per sampling forward pass (sample.batch_size)
    train_batch_size: int = 8              # samples per training forward pass (train.batch_size)
    gradient_accumulation_steps: int = 1   # train batches per optimizer step (train.gradient_accumulation_steps)
    inner_epochs: int = 1                  # passes over a round's samples (train.num_inner_epochs)
    timestep_fraction: float = 1.0         # share of each chain's steps trained on (train.timestep_fraction)
    skip_final_steps: int = 0              # never train on the last N steps (0: all, as ddpo-pytorch / trl). The last
                                           # step's σ_t is tiny (0.03 on the shipped 10-step schedule), so its gradient
                                           # dominates (13x the next step's here) yet it only moves fine detail
    clip_range: float = 1e-4               # ε of the clipped ratio (train.clip_range)
    adv_clip_max: float = 5.0              # advantages clipped to ±this (train.adv_clip_max)
    learning_rate: float = 3e-4            # AdamW (train.learning_rate)
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-4
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    per_prompt_stat_tracking: bool = True  # advantages normalised per prompt (else over the whole round)
    stat_buffer_size: int = 16
    stat_min_count: int = 16
    kl_coef: float = 0.0                   # λ of the per-step KL to the frozen base (0 = ddpo-pytorch / trl)
    track_kl: bool | None = None           # also compute (log) the KL when λ = 0; None: only when λ > 0 (it costs a
                                           # reference forward per trained step)
    logprob_reduction: str = "mean"        # "mean" over latent dims, as ddpo-pytorch / trl (ε is tuned for it); "sum": true density
    timesteps_per_pass: int = 1            # recorded steps per batched UNet call in the update (same gradient; larger
                                           # is faster for small UNets, costs memory); 1 = one call per step as trl
    ema_decay: float | None = None         # EMA of the trained weights, returned at the end (diffusers' EMAModel); None: off

    def __post_init__(self):
        self.check_unet_options()
        self.adam_betas = tuple(float(b) for b in self.adam_betas)
        positive = {"num_inference_steps": self.num_inference_steps, "rounds": self.rounds,
                    "samples_per_round": self.samples_per_round, "sample_batch_size": self.sample_batch_size,
                    "train_batch_size": self.train_batch_size, "gradient_accumulation_steps": self.gradient_accumulation_steps,
                    "inner_epochs": self.inner_epochs, "timesteps_per_pass": self.timesteps_per_pass}
        bad = {k: v for k, v in positive.items() if not isinstance(v, int) or v < 1}
        if bad:
            raise ValueError(f"these must be integers >= 1: {bad}")
        if self.eta <= 0:
            raise ValueError(f"eta must be > 0: at eta = 0 the DDIM step is deterministic and has no log-probability "
                             f"(DDPO's policy needs noise; the paper uses 1.0), got {self.eta}")
        if self.samples_per_round % self.sample_batch_size:
            raise ValueError(f"sample_batch_size ({self.sample_batch_size}) must divide samples_per_round ({self.samples_per_round})")
        if self.samples_per_round % (self.train_batch_size * self.gradient_accumulation_steps):
            raise ValueError(f"train_batch_size × gradient_accumulation_steps ({self.train_batch_size} × "
                             f"{self.gradient_accumulation_steps}) must divide samples_per_round ({self.samples_per_round}), "
                             "so every optimizer step sees the same number of samples")
        if not isinstance(self.skip_final_steps, int) or not 0 <= self.skip_final_steps < self.num_inference_steps:
            raise ValueError(f"skip_final_steps must be an integer in [0, num_inference_steps), got {self.skip_final_steps}")
        if not 0.0 < self.timestep_fraction <= 1.0:
            raise ValueError(f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        if self.clip_range <= 0 or self.adv_clip_max <= 0:
            raise ValueError(f"clip_range and adv_clip_max must be > 0, got {self.clip_range}, {self.adv_clip_max}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate and max_grad_norm must be > 0, weight_decay >= 0")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef (λ) must be >= 0, got {self.kl_coef}")
        if self.logprob_reduction not in REDUCTIONS:
            raise ValueError(f"logprob_reduction must be one of {REDUCTIONS}, got {self.logprob_reduction!r}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0 (<= 1: no classifier-free guidance), got {self.guidance_scale}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        PerPromptStatTracker(self.stat_buffer_size, self.stat_min_count)  # validates both

    @property
    def train_timesteps(self) -> int:
        """How many of each chain's steps are trained on per inner epoch."""
        return max(1, int((self.num_inference_steps - self.skip_final_steps) * self.timestep_fraction))

    @property
    def computes_kl(self) -> bool:
        return self.kl_coef > 0 or bool(self.track_kl)


def ddpo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float,
              adv_clip_max: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DDPO_IS's clipped surrogate for one batch of steps → (loss, {approx_kl, clipfrac, ratio}).

    ``loss = mean(max(−A·ρ, −A·clip(ρ, 1 − ε, 1 + ε)))``, ``ρ = exp(log π_θ − log π_old)``, A clipped to ±adv_clip_max;
    ``approx_kl = ½·mean((log π_θ − log π_old)²)`` and ``clipfrac = mean(|ρ − 1| > ε)``, as ddpo-pytorch logs them."""
    advantages = advantages.clamp(-adv_clip_max, adv_clip_max)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    with torch.no_grad():
        info = {"approx_kl": 0.5 * ((log_prob - old_log_prob) ** 2).mean(),
                "clipfrac": ((ratio - 1.0).abs() > clip_range).float().mean(), "ratio": ratio.mean()}
    return loss, info


def as_reward_fn(reward: Any) -> Callable[[torch.Tensor, list[str]], torch.Tensor]:
    """Any reward as ``fn(images, prompts) -> (B,) float CPU tensor``: a ``RewardModel`` (scored without gradient),
    a ddpo-pytorch / trl style ``fn(images, prompts, metadata) -> (rewards, info)``, or a plain ``fn(images, prompts)``."""
    from feedbacklab.rewards.base import RewardModel

    if isinstance(reward, RewardModel):
        fn, n_args = reward.as_ddpo_fn(), 3
    elif callable(reward):
        fn = reward
        try:
            params = [p for p in inspect.signature(reward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
            n_args = 3 if len(params) >= 3 else 2
        except (TypeError, ValueError):
            n_args = 2
    else:
        raise TypeError(f"reward must be a RewardModel or a callable fn(images, prompts) -> rewards, got {type(reward).__name__}")

    def _fn(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            out = fn(images, prompts, [{} for _ in prompts]) if n_args == 3 else fn(images, prompts)
        if isinstance(out, tuple):
            out = out[0]
        rewards = torch.as_tensor(np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out, dtype=np.float32))
        if rewards.shape != (len(prompts),):
            raise ValueError(f"the reward must return one number per image: shape ({len(prompts)},) for {len(prompts)} "
                             f"images, got {tuple(rewards.shape)}")
        if not torch.isfinite(rewards).all():
            bad = (~torch.isfinite(rewards)).nonzero().flatten().tolist()
            raise ValueError(f"the reward returned NaN or inf for images {bad[:8]} (prompts {[prompts[i] for i in bad[:3]]}); "
                             "DDPO's advantages need finite rewards")
        return rewards

    return _fn


@contextmanager
def _reference(unet: torch.nn.Module, frozen: torch.nn.Module | None):
    """The frozen base model: a copy for full fine-tuning, or the same UNet with its LoRA adapter disabled."""
    if frozen is not None:
        yield frozen
        return
    unet.disable_adapters()
    try:
        yield unet
    finally:
        unet.enable_adapters()


def ddpo_finetune(pipe: Any, prompts: Sequence[str], reward: Any, config: DDPOConfig | None = None,
                  output_dir: str | Path | None = None, progress: bool = True,
                  callback: Callable[[int, dict, Trajectories], None] | None = None) -> FinetuneResult:
    """Fine-tune ``pipe.unet`` with DDPO on ``prompts`` (drawn uniformly each round) for ``reward``.

    ``reward`` is a ``RewardModel``, or a function of images (B, 3, H, W) in [0, 1] and prompts (optionally a third
    metadata argument) returning (B,) rewards or (rewards, info). ``history`` has one row per round: reward mean /
    std, KL to the base, clip fraction, approx-KL, loss, cumulative reward queries and wall seconds.
    ``callback(round, row, trajectories)`` sees each round's samples (data-parallel: this process's). Saves to
    ``output_dir`` when given."""
    from tqdm.auto import trange

    config = config or DDPOConfig()
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty list of strings: DDPO samples its training images from them")
    distributed.check_divisible(sample_batches_per_round=config.samples_per_round // config.sample_batch_size)
    check_ddim_pipeline(pipe)
    reward_fn = as_reward_fn(reward)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    reward_fn(torch.full((2, 3, size, size), 0.5), prompts[:1] * 2)  # a 2-image probe: wrong shape / NaN fail now
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(config.num_inference_steps, device="cpu")
    check_stochastic(scheduler, scheduler.timesteps, config.eta)  # every step must be a policy with a density
    device, amp_dtype, use_scaler, gen, params = prepare_unet_training(pipe, config)
    unet = pipe.unet
    frozen = None
    if config.computes_kl and not config.use_lora:
        frozen = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=config.learning_rate, betas=config.adam_betas, weight_decay=config.weight_decay,
                            eps=config.adam_epsilon)
    ema = None
    if config.ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    tracker = PerPromptStatTracker(config.stat_buffer_size, config.stat_min_count)
    text_cache: dict[str, torch.Tensor] = {}
    text_embeddings(pipe, prompts, text_cache)
    history: list[dict[str, float]] = []
    queries = 0
    mine = distributed.shard(config.samples_per_round)  # the samples of each round this process draws (whole batches)
    bar = trange(config.rounds, desc="DDPO", disable=not progress or not distributed.is_main_process())
    for rnd in bar:
        t0 = time.perf_counter()
        idx = torch.randint(len(prompts), (config.samples_per_round,), generator=gen).tolist()
        round_prompts = [prompts[i] for i in idx]
        unet.eval()
        # draw the other processes' samples' noise too (without sampling them): every process draws the same numbers
        skip_trajectories(pipe, gen, mine.start, config.num_inference_steps, config.sample_batch_size)
        traj = sample_trajectories(pipe, round_prompts[mine], gen, config.num_inference_steps,
                                   config.guidance_scale, config.eta, config.sample_batch_size,
                                   config.logprob_reduction, text_cache, amp_dtype)
        skip_trajectories(pipe, gen, config.samples_per_round - mine.stop, config.num_inference_steps,
                          config.sample_batch_size)
        t1 = time.perf_counter()
        rewards = torch.cat([reward_fn(traj.images[i:i + config.sample_batch_size],
                                       traj.prompts[i:i + config.sample_batch_size])
                             for i in range(0, len(traj), config.sample_batch_size)])
        rewards = distributed.gather(rewards, config.samples_per_round)  # the advantages need every sample's
        queries += len(round_prompts)
        t2 = time.perf_counter()
        adv = (tracker.update(round_prompts, rewards.numpy()) if config.per_prompt_stat_tracking
               else batch_advantages(rewards.numpy()))
        stats = _train_round(unet, frozen, scheduler, traj, mine, torch.as_tensor(adv, dtype=torch.float32),
                             text_cache, config, device, amp_dtype, gen, opt, scaler, params, ema)
        t3 = time.perf_counter()
        row = {"round": rnd, "reward_mean": rewards.mean().item(), "reward_std": rewards.std(unbiased=False).item(),
               **stats, "reward_queries": queries, "sample_s": t1 - t0, "reward_s": t2 - t1, "train_s": t3 - t2,
               "wall_s": t3 - t0}
        history.append(row)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.2g}", clip=f"{row['clipfrac']:.2f}")
        if callback is not None:
            callback(rnd, row, traj)
    return finish_training(pipe, params, ema, history, output_dir, config)


def _train_round(unet, frozen, scheduler, traj: Trajectories, mine: slice, advantages: torch.Tensor, text_cache,
                 config: DDPOConfig, device, amp_dtype, gen, opt, scaler, params, ema) -> dict[str, float]:
    """The update of one round: ``inner_epochs`` shuffled passes of DDPO_IS (+ λ·KL) over the round's samples.

    ``traj`` holds the samples ``mine`` of the round (all of them on one process) and ``advantages`` every sample's:
    a process computes its own samples' part of each batch mean (``share``); the gradients are summed over processes."""
    n, n_steps = config.samples_per_round, len(traj.timesteps) - config.skip_final_steps
    k = config.train_timesteps
    chunk = config.timesteps_per_pass
    sums = {"loss": 0.0, "policy_loss": 0.0, "kl": 0.0, "approx_kl": 0.0, "clipfrac": 0.0}
    count = 0
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext())
    unet.train()
    for _ in range(config.inner_epochs):
        order = torch.randperm(n, generator=gen)
        steps = torch.stack([torch.randperm(n_steps, generator=gen) for _ in range(n)])[:, :k]  # (N, k) per sample
        opt.zero_grad(set_to_none=True)
        for b0 in range(0, n, config.train_batch_size):
            b = order[b0:b0 + config.train_batch_size]
            own = b[(b >= mine.start) & (b < mine.stop)]  # the batch's samples this process drew
            share = len(own) / len(b)                      # their part of each mean over the batch
            count += k
            if len(own):  # else this process has none of the batch's samples: it only joins the step
                cond = torch.stack([text_cache[traj.prompts[i - mine.start]] for i in own.tolist()]).to(device)
                for s0 in range(0, k, chunk):
                    j = steps[own, s0:s0 + chunk]                             # (B, c) step indices
                    c = j.shape[1]
                    rows = own.repeat_interleave(c)
                    cols = j.reshape(-1)
                    x_t = traj.latents[rows - mine.start, cols].to(device)
                    x_prev = traj.latents[rows - mine.start, cols + 1].to(device)
                    t = traj.timesteps[cols]
                    old_lp = traj.log_probs[rows - mine.start, cols].to(device)
                    a = advantages[rows].to(device)
                    cond_c = cond.repeat_interleave(c, dim=0)
                    uncond_c = text_cache[""].to(device).expand_as(cond_c)
                    with autocast:
                        out = guided_output(unet, x_t, t, cond_c, uncond_c, config.guidance_scale)
                    step = ddim_step_with_logprob(scheduler, out, t, x_t, config.eta, prev_sample=x_prev,
                                                  reduction=config.logprob_reduction)
                    policy_loss, info = ddpo_loss(step.log_prob, old_lp, a, config.clip_range, config.adv_clip_max)
                    kl = torch.zeros((), device=device)
                    if config.computes_kl:
                        with torch.no_grad(), _reference(unet, frozen) as ref, autocast:
                            ref_out = guided_output(ref, x_t, t, cond_c, uncond_c, config.guidance_scale)
                        ref_mean = ddim_step_with_logprob(scheduler, ref_out, t, x_t, config.eta, prev_sample=x_prev,
                                                          reduction=config.logprob_reduction).mean
                        kl = gaussian_step_kl(step.mean, ref_mean, step.std, config.logprob_reduction).mean()
                    loss = policy_loss + config.kl_coef * kl if config.kl_coef > 0 else policy_loss
                    # each (sample, step) weighs the same, as in ddpo-pytorch's accumulation over steps and batches
                    weight = c / (k * config.gradient_accumulation_steps) * share
                    scaler.scale(loss * weight).backward()
                    for key, value in (("loss", loss), ("policy_loss", policy_loss), ("kl", kl),
                                       ("approx_kl", info["approx_kl"]), ("clipfrac", info["clipfrac"])):
                        sums[key] += value.item() * c * share
            if (b0 // config.train_batch_size + 1) % config.gradient_accumulation_steps == 0:
                distributed.sum_gradients(params)
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.step(params)
    totals = distributed.sum_across(torch.tensor(list(sums.values()), dtype=torch.float64)).tolist()
    out = {key: value / max(count, 1) for key, value in zip(sums, totals)}
    if not config.computes_kl:
        out["kl"] = math.nan
    return out
