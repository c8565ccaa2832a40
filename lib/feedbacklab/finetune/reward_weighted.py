"""Reward-weighted likelihood fine-tuning of a diffusion model (Lee et al. 2023, Eq. 3), optionally KL-regularised.

``L(θ) = E_{(y,z)∼D_model}[ −r_φ(y,z) · log p_θ(y|z) ] + β · E_{(y,z)∼D_pre}[ −log p_θ(y|z) ]
        + β_KL · E_{(y,z)∼D_model, t, ε}[ ‖f_θ(x_t, t, z) − f_base(x_t, t, z)‖² ]``,
with ``−log p_θ`` replaced by the per-sample denoising loss, so the objective is
``mean(r · denoise_loss on model samples) + β · mean(denoise_loss on pre-training pairs) + β_KL · kl_loss``.
The last term is the KL-style regulariser of TextNorm's supervised fine-tuning (Kim et al. 2024 §5, code t2i-ft):
the squared gap between the UNet's prediction f (ε or v) and the frozen base UNet's on the model batch's own
noised latents x_t, timesteps and text states; β_KL = 0 (the default) leaves it out.
Only the UNet trains (fully, or a LoRA adapter for SD-scale models); VAE and text encoder are frozen.
"""
from __future__ import annotations

import json
import math
from copy import deepcopy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from feedbacklab.device import resolve_device
from feedbacklab.finetune import distributed
from feedbacklab.finetune.options import UNetOptions



@dataclass
class RewardWeightedConfig(UNetOptions):
    """Hyper-parameters of reward-weighted fine-tuning; defaults suit the tiny ShapesWorld generator."""

    beta: float = 1.0                      # weight of the pre-training denoising term (0 = no D_pre term)
    learning_rate: float = 1e-4            # AdamW; use ~1e-4 for LoRA on SD, ~1e-5 for full SD fine-tuning
    epochs: int = 4                        # passes over D_model
    batch_size: int = 32                   # model samples per step
    pretrain_batch_size: int = 32          # D_pre pairs per step (ignored when beta == 0)
    reward_clip: tuple[float, float] | None = (0.0, 1.0)  # clamp r_φ into this range before weighting
    uncond_prob: float = 0.1               # drop the prompt ("") so classifier-free guidance keeps working
    timestep_range: tuple[float, float] = (0.0, 1.0)  # train on t ~ U(lo·T, hi·T); like diffusers' --timestep_bias_strategy range
    max_grad_norm: float = 1.0
    ema_decay: float | None = 0.99         # return an EMA of the weights (diffusers' --use_ema; the base UNet is an EMA too);
                                           # without it artifacts rose 6.9% → 9.7% (scripts/lee2023_finetune_sweep.py); None: off
    weight_decay: float = 0.0
    kl_beta: float = 0.0                   # β_KL of mean‖f_θ(x_t,t,z) − f_base(x_t,t,z)‖² on D_model (TextNorm, Kim et al.
                                           # 2024 §5; t2i-ft's --kl_coeff); 0: off, no frozen base, no extra forward

    def __post_init__(self):
        self.check_unet_options()
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if not self.kl_beta >= 0:
            raise ValueError(f"kl_beta must be >= 0, got {self.kl_beta}")
        if self.learning_rate <= 0 or self.epochs < 1 or self.batch_size < 1 or self.pretrain_batch_size < 1:
            raise ValueError("learning_rate must be > 0; epochs, batch_size and pretrain_batch_size >= 1")
        if not 0.0 <= self.uncond_prob < 1.0:
            raise ValueError(f"uncond_prob must be in [0, 1), got {self.uncond_prob}")
        if self.reward_clip is not None:
            self.reward_clip = tuple(float(v) for v in self.reward_clip)
            if len(self.reward_clip) != 2 or self.reward_clip[0] > self.reward_clip[1]:
                raise ValueError(f"reward_clip must be (low, high) with low <= high or None, got {self.reward_clip}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        lo, hi = (float(v) for v in self.timestep_range)
        if not 0.0 <= lo < hi <= 1.0:
            raise ValueError(f"timestep_range must be (lo, hi) with 0 <= lo < hi <= 1, got {self.timestep_range}")
        self.timestep_range = (lo, hi)


@dataclass
class FinetuneResult:
    """The fine-tuned pipeline (modified in place), per-step losses, and where it was saved."""

    pipe: Any
    history: list[dict[str, float]]
    checkpoint: Path | None


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``‖a − b‖²`` in fp32, mean over all but the batch dim → (B,)."""
    return F.mse_loss(a.float(), b.float(), reduction="none").flatten(1).mean(1)


def _denoise(unet: Callable[..., Any], scheduler: Any, latents: torch.Tensor, text_embeds: torch.Tensor,
             noise: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-sample denoising loss (B,), noised latents x_t, UNet prediction): x_t and the prediction feed the KL term."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {kind!r}; accepted: 'epsilon', 'v_prediction'")
    pred = unet(noisy, timesteps, encoder_hidden_states=text_embeds).sample
    return _per_sample_mse(pred, target), noisy, pred


def denoising_loss(unet: torch.nn.Module, scheduler: Any, latents: torch.Tensor, text_embeds: torch.Tensor,
                   noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Per-sample diffusion loss ``‖target − unet(x_t, t, z)‖²`` (mean over latent dims) → (B,); ε or v target."""
    return _denoise(unet, scheduler, latents, text_embeds, noise, timesteps)[0]


def reward_weighted_loss(model_losses: torch.Tensor, rewards: torch.Tensor,
                         pretrain_losses: torch.Tensor | None = None, beta: float = 0.0) -> torch.Tensor:
    """``mean(r · ℓ_model) + β · mean(ℓ_pre)`` — Lee et al. 2023, Eq. 3 with ``−log p_θ`` = denoising loss."""
    if model_losses.shape != rewards.shape or model_losses.ndim != 1:
        raise ValueError(f"model_losses {tuple(model_losses.shape)} and rewards {tuple(rewards.shape)} must both be (B,)")
    loss = (rewards.to(model_losses.dtype) * model_losses).mean()
    if beta > 0:
        if pretrain_losses is None or pretrain_losses.numel() == 0:
            raise ValueError("beta > 0 needs pre-training losses (pass D_pre pairs)")
        loss = loss + beta * pretrain_losses.mean()
    return loss


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) in [0, 1] → VAE posterior mean and std (N, C, h, w), unscaled, on the VAE's device."""
    device, dtype = vae.device, vae.dtype
    posts = [vae.encode(images[i : i + batch_size].to(device, dtype) * 2 - 1).latent_dist
             for i in range(0, images.shape[0], batch_size)]
    return torch.cat([p.mean for p in posts]).float(), torch.cat([p.std for p in posts]).float()


def sample_latents(mean: torch.Tensor, std: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    """A fresh posterior sample ``(μ + σ·ε)·scale`` per call, as latent-diffusion training draws it."""
    return (mean + std * torch.randn(mean.shape, generator=generator).to(mean.device)) * scale


@torch.no_grad()
def encode_prompts(pipe: Any, prompts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct prompts (sorted, "" first) and their (P, L, D) text-encoder states, via ``pipe.encode_prompt``."""
    unique = sorted(set(prompts) | {""})
    embeds = pipe.encode_prompt(unique, pipe.text_encoder.device, 1, False)[0]
    return unique, embeds.float()


def _autocast(device: torch.device, mode: str) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use GradScaler) for ``mode`` on ``device``; mixed precision only on CUDA."""
    if device.type != "cuda" or mode == "no":
        return None, False
    if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16, False
    return torch.float16, True


def _add_lora(unet: torch.nn.Module, config: RewardWeightedConfig) -> list[torch.nn.Parameter]:
    """Attach a peft LoRA adapter to the UNet (as diffusers' train_text_to_image_lora); return its parameters."""
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                                target_modules=list(config.lora_target_modules)))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # LoRA weights train in fp32 even when the UNet is half precision
        p.data = p.data.float()
    return params


def _frozen_base(unet: torch.nn.Module, use_lora: bool) -> Callable[..., Any]:
    """f_base of the KL term: with LoRA the same UNet with its adapter disabled (no copy), else a frozen deepcopy."""
    if not use_lora:
        return deepcopy(unet).eval().requires_grad_(False)

    def base(*args: Any, **kwargs: Any) -> Any:
        unet.disable_adapters()
        try:
            return unet(*args, **kwargs)
        finally:
            unet.enable_adapters()
    return base


def prepare_unet_training(pipe: Any, config: Any) -> tuple[torch.device, torch.dtype | None, bool, torch.Generator, list]:
    """Seed, move ``pipe`` to the config's device (this process's, data-parallel), freeze VAE and text encoder, and
    make the UNet (or a LoRA adapter) trainable; returns (device, autocast dtype, use grad scaler, CPU generator,
    trainable params)."""
    device = distributed.setup(resolve_device(config.device))
    amp_dtype, use_scaler = _autocast(device, config.mixed_precision)
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    pipe.to(device)
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    if config.use_lora:
        params = _add_lora(pipe.unet, config)
    else:  # trainable weights stay fp32 (autocast supplies the mixed precision), as in diffusers' training scripts
        pipe.unet.to(torch.float32).requires_grad_(True)
        params = list(pipe.unet.parameters())
    return device, amp_dtype, use_scaler, gen, params


def optimizer_step(loss: torch.Tensor, opt: Any, scaler: Any, params: list, max_grad_norm: float, ema: Any = None) -> None:
    """Backward (grad-scaled on CUDA fp16), sum the gradients over processes (data-parallel), clip the gradient
    norm, step, and update the EMA when there is one."""
    opt.zero_grad(set_to_none=True)
    if loss.requires_grad:  # False only on a process whose part of the batch was empty: the others' gradients count
        scaler.scale(loss).backward()
    distributed.sum_gradients(params)
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    scaler.step(opt)
    scaler.update()
    if ema is not None:
        ema.step(params)


def save_finetuned(pipe: Any, output_dir: str | Path, config: RewardWeightedConfig) -> Path:
    """Full fine-tuning: ``pipe.save_pretrained``; LoRA: only the adapter via ``save_lora_weights``. Only the main
    process writes (data-parallel)."""
    out = Path(output_dir)
    if not distributed.is_main_process():
        return out
    out.mkdir(parents=True, exist_ok=True)
    if config.use_lora:
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
        type(pipe).save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)
    else:
        pipe.save_pretrained(out, safe_serialization=True)
    (out / "finetune_config.json").write_text(json.dumps(asdict(config), indent=2))
    return out


def finish_training(pipe: Any, params: list, ema: Any, history: list[dict[str, float]], output_dir: str | Path | None,
                    config: Any) -> FinetuneResult:
    """Copy the EMA weights in (when there is one), freeze the UNet, and save it to ``output_dir`` (the main process
    writes, the others wait for it)."""
    if ema is not None:  # the averaged weights are the result, as in the base model's own training
        ema.copy_to(params)
    pipe.unet.eval().requires_grad_(False)
    checkpoint = None
    if output_dir is not None:
        checkpoint = save_finetuned(pipe, output_dir, config)
        distributed.barrier()
    return FinetuneResult(pipe, history, checkpoint)


def reward_weighted_finetune(pipe: Any, model_images: torch.Tensor, model_prompts: Sequence[str],
                             rewards: torch.Tensor, pretrain_images: torch.Tensor | None = None,
                             pretrain_prompts: Sequence[str] | None = None,
                             config: RewardWeightedConfig | None = None, output_dir: str | Path | None = None,
                             progress: bool = True) -> FinetuneResult:
    """Fine-tune ``pipe.unet`` on D_model (images (N, 3, H, W) in [0, 1], prompts, rewards r_φ) and D_pre (Eq. 3),
    plus ``config.kl_beta`` times the KL-style term to the UNet as it was before training (module docstring).

    Works for any diffusers pipeline with ``unet``/``vae``/``text_encoder``/``scheduler``; saves to ``output_dir``."""
    from diffusers import DDPMScheduler
    from tqdm.auto import trange

    config = config or RewardWeightedConfig()
    n = len(model_prompts)
    if model_images.shape[0] != n or torch.as_tensor(rewards).shape != (n,):
        raise ValueError(f"need one image and one reward per model prompt: {tuple(model_images.shape)}, "
                         f"{n} prompts, rewards {tuple(torch.as_tensor(rewards).shape)}")
    if config.beta > 0 and (pretrain_images is None or pretrain_prompts is None or len(pretrain_prompts) == 0):
        raise ValueError("beta > 0 needs pretrain_images and pretrain_prompts (D_pre); pass them or set beta=0")
    distributed.check_divisible(batch_size=config.batch_size,
                                **({"pretrain_batch_size": config.pretrain_batch_size} if config.beta > 0 else {}))
    device, amp_dtype, use_scaler, gen, params = prepare_unet_training(pipe, config)
    unet = pipe.unet
    base_unet = _frozen_base(unet, config.use_lora) if config.kl_beta > 0 else None
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    r = torch.as_tensor(rewards, dtype=torch.float32)
    if config.reward_clip is not None:
        r = r.clamp(*config.reward_clip)
    scale = float(pipe.vae.config.scaling_factor)
    n_t = scheduler.config.num_train_timesteps
    t_lo, t_hi = int(config.timestep_range[0] * n_t), max(int(config.timestep_range[1] * n_t), int(config.timestep_range[0] * n_t) + 1)
    x_model = encode_latents(pipe.vae, model_images)
    all_prompts = list(model_prompts) + list(pretrain_prompts or []) if config.beta > 0 else list(model_prompts)
    vocab, text = encode_prompts(pipe, all_prompts)
    pos = {p: i for i, p in enumerate(vocab)}
    z_model = torch.tensor([pos[p] for p in model_prompts])
    if config.beta > 0:
        x_pre = encode_latents(pipe.vae, pretrain_images)
        z_pre = torch.tensor([pos[p] for p in pretrain_prompts])

    def batch_loss(latents: torch.Tensor, prompt_idx: torch.Tensor, base: Callable[..., Any] | None = None,
                   part: slice | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(per-sample denoising loss (B,), and with a ``base`` the per-sample KL term (B,), else None). The random
        draws are the whole batch's; this process runs its ``part`` of it (default: its shard) and gathers the rest."""
        n = len(prompt_idx)
        part = distributed.shard(n) if part is None else part
        drop = torch.rand(n, generator=gen) < config.uncond_prob
        prompt_idx = prompt_idx.masked_fill(drop, pos[""])[part]
        noise = torch.randn(latents.shape, generator=gen)[part].to(device)
        t = torch.randint(t_lo, t_hi, (n,), generator=gen)[part].to(device)
        z = text[prompt_idx.to(device)]
        losses = kl = torch.zeros(0, device=device)
        if len(t):  # a process's part of the batch can be empty (data-parallel)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                losses, noisy, pred = _denoise(unet, scheduler, latents[part], z, noise, t)
                if base is not None:
                    with torch.no_grad():
                        base_pred = base(noisy, t, encoder_hidden_states=z).sample
                    kl = _per_sample_mse(pred, base_pred)
        return distributed.gather(losses, n, part), distributed.gather(kl, n, part) if base is not None else None

    opt = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    ema = None
    if config.ema_decay is not None:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=True, power=0.75)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    steps_per_epoch = math.ceil(n / config.batch_size)
    history: list[dict[str, float]] = []
    unet.train()
    for step in trange(config.epochs * steps_per_epoch, desc="reward-weighted fine-tuning",
                       disable=not progress or not distributed.is_main_process()):
        if step % steps_per_epoch == 0:
            order = torch.randperm(n, generator=gen)
        b = order[(step % steps_per_epoch) * config.batch_size :][: config.batch_size]
        weights, mask = r[b].to(device), (r[b] > 0).to(device)
        keep = b[r[b] > 0]  # zero-weight samples add nothing to Eq. 3: skip their forward pass
        model_losses = torch.zeros(len(b), device=device)
        kl = None  # stays None with kl_beta == 0 or no forward pass this step
        if len(keep):
            model_losses[mask], kl = batch_loss(sample_latents(*(x[keep.to(x.device)] for x in x_model), scale, gen),
                                                z_model[keep], base_unet, distributed.selected_shard(r[b] > 0))
            kl = kl.mean() if kl is not None else None
        pre_losses = None
        if config.beta > 0:
            p = torch.randint(0, len(z_pre), (config.pretrain_batch_size,), generator=gen)
            pre_losses = batch_loss(sample_latents(*(x[p.to(x.device)] for x in x_pre), scale, gen), z_pre[p])[0]
        loss = reward_weighted_loss(model_losses, weights, pre_losses, config.beta)
        if kl is not None:
            loss = loss + config.kl_beta * kl
        if len(keep) or config.beta > 0:  # else every weight in the batch is 0: no gradient, no step
            optimizer_step(loss, opt, scaler, params, config.max_grad_norm, ema)
        history.append({"step": step, "loss": loss.item(), "weighted_model_loss": (weights * model_losses).mean().item(),
                        "model_loss": model_losses[mask].mean().item() if len(keep) else float("nan"),
                        "pretrain_loss": pre_losses.mean().item() if pre_losses is not None else float("nan"),
                        "kl_loss": kl.item() if kl is not None else float("nan")})
    return finish_training(pipe, params, ema, history, output_dir, config)
