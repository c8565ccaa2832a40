"""Reward Feedback Learning, ReFL (Xu et al. 2023, ImageReward, Alg. 1), for any differentiable reward.

Each step samples ``x_T ~ N(0, I)``, runs the first ``t ~ U{t_min..t_max}`` of ``num_inference_steps`` DDIM
steps without gradient, takes step ``t`` with gradient through the UNet, decodes its predicted ``x̂_0`` with the
(frozen) VAE and minimises ``λ · mean(ReLU(φ − r(y, x̂_0))) + β · mean(denoise_loss on D_pre)``.

Defaults follow the official ``ImageReward/ReFL.py`` (THUDM/ImageReward @ 1beb4e4, read for this module):
40 steps, ``mid_timestep = random.randint(30, 39)``, ``loss = relu(2 − r) · grad_scale`` with ``grad_scale = 1e-3``
on the standardised ImageReward score, AdamW lr 1e-5, weight decay 1e-2, grad-norm clip 1.0, EMA off. Where we
differ: the official script samples with DDPM and no classifier-free guidance (``guidance_scale=1`` here
reproduces the latter), omits the pre-training term (``beta=0`` reproduces it; users report ReFL ending worse than
the base model, THUDM/ImageReward #34 and #95), and feeds the UNet the step *index* instead of the timestep at
the gradient step (#32); here the gradient step uses ``scheduler.timesteps[t]`` throughout.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from feedbacklab.finetune import distributed
from feedbacklab.finetune.options import UNetOptions
from feedbacklab.finetune.reward_weighted import (FinetuneResult, denoising_loss, encode_latents, encode_prompts,
                                                  finish_training, optimizer_step, prepare_unet_training,
                                                  sample_latents)

RewardFn = Callable[[Sequence[str], torch.Tensor], torch.Tensor]  # (prompts, (B, 3, H, W) in [0, 1]) → (B,)


@dataclass
class ReFLConfig(UNetOptions):
    """Hyper-parameters of ReFL; defaults are the official ImageReward ``ReFL.py`` unless noted."""

    num_inference_steps: int = 40          # DDIM sampling steps (official: 40)
    t_min: int = 30                        # gradient step index t ~ U{t_min..t_max}, both inclusive
    t_max: int = 39                        # (official: random.randint(30, 39))
    guidance_scale: float = 1.0            # classifier-free guidance while sampling; 1 = none (official)
    phi: float = 2.0                       # hinge margin: loss = ReLU(phi − r) (official: 2 on standardised ImageReward)
    lambda_refl: float = 1e-3              # weight of the reward term (official --grad_scale 1e-3)
    beta: float = 1.0                      # weight of the pre-training denoising term (paper's L_pre; 0 = official code)
    learning_rate: float = 1e-5            # AdamW (official); ~1e-4 for LoRA
    weight_decay: float = 1e-2             # AdamW (official --adam_weight_decay)
    steps: int = 100                       # optimizer steps (official --max_train_steps 100)
    batch_size: int = 8                    # prompts per step (official: 2 per GPU × 4 accumulation × 8 GPUs = 64)
    pretrain_batch_size: int = 8           # D_pre pairs per step (ignored when beta == 0)
    uncond_prob: float = 0.1               # pre-training term: drop the prompt ("") so guidance keeps working
    max_grad_norm: float = 1.0             # (official)
    ema_decay: float | None = None         # EMA of the trained weights (diffusers' EMAModel, warm-up); None: off (official)

    def __post_init__(self):
        self.check_unet_options()
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if not 0 <= self.t_min <= self.t_max < self.num_inference_steps:
            raise ValueError(f"need 0 <= t_min <= t_max < num_inference_steps: t_min, t_max must lie in "
                             f"[0, {self.num_inference_steps - 1}], got t_min={self.t_min}, t_max={self.t_max}")
        if self.guidance_scale < 1.0:
            raise ValueError(f"guidance_scale must be >= 1 (1 = no classifier-free guidance), got {self.guidance_scale}")
        if self.lambda_refl < 0 or self.beta < 0:
            raise ValueError(f"lambda_refl and beta must be >= 0, got {self.lambda_refl}, {self.beta}")
        if self.learning_rate <= 0 or self.max_grad_norm <= 0 or self.weight_decay < 0:
            raise ValueError("learning_rate and max_grad_norm must be > 0, weight_decay >= 0")
        if self.steps < 1 or self.batch_size < 1 or self.pretrain_batch_size < 1:
            raise ValueError("steps, batch_size and pretrain_batch_size must be >= 1")
        if not 0.0 <= self.uncond_prob < 1.0:
            raise ValueError(f"uncond_prob must be in [0, 1), got {self.uncond_prob}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")


def refl_loss(rewards: torch.Tensor, phi: float, lambda_refl: float) -> torch.Tensor:
    """``λ · mean(ReLU(φ − r))``: rewards already above the margin φ contribute nothing."""
    return lambda_refl * F.relu(phi - rewards.float()).mean()


def _validate(prompts: list[str], reward_fn: Any, pretrain_images: torch.Tensor | None,
              pretrain_prompts: Sequence[str] | None, config: ReFLConfig) -> None:
    if not prompts:
        raise ValueError("prompts is empty: ReFL samples its training images from these prompts")
    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be callable as reward_fn(prompts, images) -> (B,), got {type(reward_fn).__name__}")
    if (pretrain_images is None) != (pretrain_prompts is None):
        raise ValueError("pass both pretrain_images and pretrain_prompts (D_pre), or neither")
    if pretrain_images is not None:
        if pretrain_images.ndim != 4 or pretrain_images.shape[1] != 3 or pretrain_images.shape[0] != len(pretrain_prompts):
            raise ValueError(f"pretrain_images must be (N, 3, H, W) with one prompt each: got "
                             f"{tuple(pretrain_images.shape)} and {len(pretrain_prompts)} prompts")
    if config.beta > 0 and (pretrain_images is None or len(pretrain_prompts) == 0):
        raise ValueError("beta > 0 needs pretrain_images and pretrain_prompts (D_pre); pass them or set beta=0")


def refl_finetune(pipe: Any, prompts: Sequence[str], reward_fn: RewardFn, pretrain_images: torch.Tensor | None = None,
                  pretrain_prompts: Sequence[str] | None = None, config: ReFLConfig | None = None,
                  output_dir: str | Path | None = None, progress: bool = True) -> FinetuneResult:
    """Fine-tune ``pipe.unet`` by ReFL on ``prompts`` with a differentiable ``reward_fn(prompts, images) -> (B,)``.

    D_pre (``pretrain_images`` (N, 3, H, W) in [0, 1], ``pretrain_prompts``) feeds the ``beta`` term. Works for any
    diffusers pipeline with ``unet``/``vae``/``text_encoder``/``scheduler``; saves to ``output_dir``."""
    from diffusers import DDIMScheduler
    from tqdm.auto import trange

    config = config or ReFLConfig()
    prompts = list(prompts)
    _validate(prompts, reward_fn, pretrain_images, pretrain_prompts, config)
    distributed.check_divisible(batch_size=config.batch_size,
                                **({"pretrain_batch_size": config.pretrain_batch_size} if config.beta > 0 else {}))
    device, amp_dtype, use_scaler, gen, params = prepare_unet_training(pipe, config)
    unet, vae = pipe.unet, pipe.vae
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(config.num_inference_steps, device=device)
    n_train_t = scheduler.config.num_train_timesteps
    scale = float(vae.config.scaling_factor)
    latent_shape = (config.batch_size, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    mine = distributed.shard(config.batch_size)  # this process's samples of each batch (all, on one process)

    vocab, text = encode_prompts(pipe, prompts + list(pretrain_prompts or []))
    pos = {p: i for i, p in enumerate(vocab)}
    z_train = torch.tensor([pos[p] for p in prompts])
    uncond = text[pos[""]].expand(mine.stop - mine.start, -1, -1)
    if config.beta > 0:
        x_pre = encode_latents(vae, pretrain_images)
        z_pre = torch.tensor([pos[p] for p in pretrain_prompts])

    def model_output(latents: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The UNet's (guided) ε or v prediction at ``t``; one batched call for both CFG branches."""
        x = scheduler.scale_model_input(latents, t)
        if config.guidance_scale == 1.0:
            return unet(x, t, encoder_hidden_states=cond).sample.float()
        out_uncond, out_cond = unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample.float().chunk(2)
        return out_uncond + config.guidance_scale * (out_cond - out_uncond)

    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    ema = None
    if config.ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=True, power=0.75)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    history: list[dict[str, float]] = []
    unet.train()
    for step in trange(config.steps, desc="ReFL fine-tuning", disable=not progress or not distributed.is_main_process()):
        idx = torch.randint(len(prompts), (config.batch_size,), generator=gen)[mine]
        batch_prompts = [prompts[i] for i in idx]
        cond = text[z_train[idx].to(device)]
        t_idx = int(torch.randint(config.t_min, config.t_max + 1, (1,), generator=gen))
        latents = torch.randn(latent_shape, generator=gen)[mine].to(device) * scheduler.init_noise_sigma
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            with torch.no_grad():
                for t in scheduler.timesteps[:t_idx]:
                    latents = scheduler.step(model_output(latents, t, cond), t, latents).prev_sample
            t = scheduler.timesteps[t_idx]
            x0 = scheduler.step(model_output(latents, t, cond), t, latents).pred_original_sample
            images = (vae.decode((x0 / scale).to(vae.dtype)).sample.float() / 2 + 0.5).clamp(0, 1)  # (B, 3, H, W)
        rewards = torch.as_tensor(reward_fn(batch_prompts, images))
        if rewards.shape != (len(idx),) or not rewards.requires_grad:
            raise ValueError(f"reward_fn must return a (B,) = ({len(idx)},) tensor differentiable wrt the "
                             f"images; got shape {tuple(rewards.shape)}, requires_grad={rewards.requires_grad}")
        rewards = distributed.gather(rewards, config.batch_size)
        loss = reward_loss = refl_loss(rewards, config.phi, config.lambda_refl)
        pre_loss = None
        if config.beta > 0:
            p = torch.randint(len(z_pre), (config.pretrain_batch_size,), generator=gen)
            z = z_pre[p].masked_fill(torch.rand(len(p), generator=gen) < config.uncond_prob, pos[""])
            x = sample_latents(*(v[p.to(v.device)] for v in x_pre), scale, gen)
            noise = torch.randn(x.shape, generator=gen).to(device)
            timesteps = torch.randint(n_train_t, (len(p),), generator=gen).to(device)
            part = distributed.shard(len(p))
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pre_losses = denoising_loss(unet, scheduler, x[part], text[z[part].to(device)], noise[part],
                                            timesteps[part])
            pre_loss = distributed.gather(pre_losses, len(p)).mean()
            loss = loss + config.beta * pre_loss
        if config.beta > 0 or bool((rewards < config.phi).any()):  # else every hinge is off: no gradient, no step
            optimizer_step(loss, opt, scaler, params, config.max_grad_norm, ema)
        history.append({"step": step, "t": t_idx, "loss": loss.item(), "refl_loss": reward_loss.item(),
                        "reward": rewards.mean().item(),
                        "pretrain_loss": pre_loss.item() if pre_loss is not None else float("nan")})
    return finish_training(pipe, params, ema, history, output_dir, config)
