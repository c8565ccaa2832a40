"""The tiny genuine text-to-image generator: a real ``diffusers.StableDiffusionPipeline``.

AutoencoderKL (64×64 RGB → 16×16×4 latents) + UNet2DConditionModel over latents + CLIPTextModel
+ CLIPTokenizer (CLIP BPE from open_clip) + DDIMScheduler. Training follows latent diffusion
(Rombach et al. 2022): the VAE first, then the UNet and text encoder on pre-encoded latents with
v-prediction on a zero-terminal-SNR schedule (Lin et al. 2024), classifier-free-guidance dropout
(Ho & Salimans 2022) and an EMA of the weights.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from feedbacklab.models import data as wdata
from feedbacklab.models.registry import hardware, read_card, update_card
from feedbacklab.models.tokenizer import build_clip_tokenizer

Log = Callable[[str], None]


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of the tiny pipeline (defaults: the shipped ``shapes-sd``)."""

    image_size: int = 64
    vae_channels: tuple[int, ...] = (16, 32, 64)
    vae_groups: int = 4  # GroupNorm groups: 16 groups on 16 channels washes colours out
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_layers_per_block: int = 1
    unet_heads: int = 4
    unet_groups: int = 8
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_length: int = 16
    prediction_type: str = "v_prediction"
    zero_terminal_snr: bool = True
    pooled_text_embedding: bool = True  # diffusers addition_embed_type="text": attention-pooled prompt → time embedding

    @classmethod
    def tiny(cls) -> GeneratorConfig:
        """A minimal config for unit tests and smoke runs (32 px, seconds to build and train)."""
        return cls(image_size=32, vae_channels=(8, 16), vae_groups=4, unet_channels=(16, 32),
                   unet_layers_per_block=1, unet_heads=2, unet_groups=4, text_width=16, text_layers=1,
                   text_heads=2, max_length=16)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GeneratorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown GeneratorConfig keys {sorted(unknown)}; accepted: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    @property
    def latent_size(self) -> int:
        """Latent side: the VAE halves the image side in every block but the last."""
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


def build_vae(cfg: GeneratorConfig):
    """An untrained AutoencoderKL whose posterior starts narrow (quant_conv log-variance half scaled down)."""
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                        up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=cfg.vae_channels,
                        layers_per_block=1, latent_channels=cfg.latent_channels, norm_num_groups=cfg.vae_groups,
                        sample_size=cfg.image_size)
    with torch.no_grad():  # start from a near-deterministic posterior: std ≈ e^-3
        c = cfg.latent_channels
        vae.quant_conv.weight[c:] *= 0.01
        vae.quant_conv.bias[c:] = -6.0
    return vae


def build_unet(cfg: GeneratorConfig):
    """An untrained latent UNet2DConditionModel with cross-attention below the top level."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    extra = {"addition_embed_type": "text", "addition_embed_type_num_heads": cfg.text_heads} \
        if cfg.pooled_text_embedding else {}
    return UNet2DConditionModel(sample_size=cfg.latent_size, in_channels=cfg.latent_channels,
                                out_channels=cfg.latent_channels, down_block_types=down, up_block_types=up,
                                block_out_channels=cfg.unet_channels, layers_per_block=cfg.unet_layers_per_block,
                                cross_attention_dim=cfg.text_width, attention_head_dim=cfg.unet_heads,
                                norm_num_groups=cfg.unet_groups, **extra)


def build_text_encoder(cfg: GeneratorConfig):
    """An untrained CLIPTextModel over the 49,408-token CLIP BPE vocabulary (pools at EOS 49407)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from feedbacklab.models.tokenizer import BOS_ID, CLIP_VOCAB_SIZE, EOS_ID

    conf = CLIPTextConfig(vocab_size=CLIP_VOCAB_SIZE, hidden_size=cfg.text_width,
                          intermediate_size=4 * cfg.text_width, num_hidden_layers=cfg.text_layers,
                          num_attention_heads=cfg.text_heads, max_position_embeddings=cfg.max_length,
                          bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID, projection_dim=cfg.text_width)
    return CLIPTextModel(conf)


def scheduler_kwargs(cfg: GeneratorConfig) -> dict[str, Any]:
    """SD's scaled-linear β schedule, with v-prediction and zero terminal SNR when configured."""
    return dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                prediction_type=cfg.prediction_type, rescale_betas_zero_snr=cfg.zero_terminal_snr,
                timestep_spacing="trailing", clip_sample=False)


def build_pipeline(cfg: GeneratorConfig | None = None):
    """A complete untrained tiny ``StableDiffusionPipeline`` (no safety checker, no feature extractor)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    cfg = cfg or GeneratorConfig()
    return StableDiffusionPipeline(
        vae=build_vae(cfg), text_encoder=build_text_encoder(cfg), tokenizer=build_clip_tokenizer(cfg.max_length),
        unet=build_unet(cfg), scheduler=DDIMScheduler(**scheduler_kwargs(cfg), set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_pipeline(pipe, out_dir: str | Path, cfg: GeneratorConfig) -> Path:
    """``save_pretrained`` (safetensors) plus the architecture in card.json."""
    out = Path(out_dir)
    pipe.save_pretrained(out, safe_serialization=True)
    update_card(out, name=out.name, kind="generator", config=cfg.to_dict())
    return out


def load_pipeline(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """``StableDiffusionPipeline.from_pretrained(path)`` with no network (local directories only)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if dtype is None and torch.device(device).type == "cpu":
        upcast_half(pipe)
    return pipe.to(device)


def upcast_half(pipe) -> None:
    """Half-precision checkpoints (shapes-sd-noisy-counts is stored in float16) run in float32 on CPU."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module) and any(p.dtype in (torch.float16, torch.bfloat16) for p in module.parameters()):
            module.to(torch.float32)


def _seed_all(seed: int) -> torch.Generator:
    """Seed python-side torch state and return a CPU generator for data order."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)


def _log_default(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------- VAE stage
def train_vae(vae, images: torch.Tensor, steps: int, batch_size: int = 32, lr: float = 1e-3, kl_weight: float = 1e-6,
              seed: int = 0, time_budget_s: float | None = None, log: Log = _log_default,
              log_every: int = 50) -> dict[str, float]:
    """Train ``vae`` on ``images`` (N, 3, H, W) in [0, 1] with L1 + MSE reconstruction and a small KL (β-VAE).

    Stops after ``steps`` or ``time_budget_s`` seconds; the learning rate decays linearly with progress.
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"steps must be >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    gen = _seed_all(seed)
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    t0, loss_avg, step = time.time(), float("nan"), 0
    while step < steps and (time_budget_s is None or time.time() - t0 < time_budget_s):
        progress = max(step / max(steps, 1), (time.time() - t0) / time_budget_s if time_budget_s else 0.0)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - min(progress, 1.0)))
        idx = torch.randint(len(images), (batch_size,), generator=gen)
        x = images[idx] * 2 - 1
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        loss_avg = loss.item() if step == 0 else 0.95 * loss_avg + 0.05 * loss.item()
        step += 1
        if step % log_every == 0 or step == steps:
            el = time.time() - t0
            log(f"vae step {step}/{steps} loss {loss_avg:.4f} {batch_size * step / el:.0f} img/s {el:.0f}s")
    vae.eval()
    return {"steps": step, "batch_size": batch_size, "final_loss": round(loss_avg, 5), "wall_s": round(time.time() - t0, 1)}


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std (unscaled) of ``images`` (N, 3, H, W) in [0, 1]."""
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        post = vae.encode(images[i:i + batch_size] * 2 - 1).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def reconstruction_psnr(vae, images: torch.Tensor) -> float:
    """PSNR (dB) of deterministic (posterior-mean) VAE reconstructions of ``images`` in [0, 1]."""
    mean, _ = encode_latents(vae, images)
    rec = torch.cat([vae.decode(mean[i:i + 256]).sample for i in range(0, len(mean), 256)])
    mse = F.mse_loss((rec.clamp(-1, 1) + 1) / 2, images).item()
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def pretrain_vae(out_dir: str | Path, steps: int = 1500, batch_size: int = 32, n_images: int = 8000,
                 lr: float = 1e-3, seed: int = 0, time_budget_s: float | None = None,
                 config: GeneratorConfig | None = None, log: Log = _log_default) -> dict[str, Any]:
    """Stage 1: build a fresh pipeline, train its VAE on seen world images, set the latent scale, save to ``out_dir``."""
    cfg = config or GeneratorConfig()
    t0 = time.time()
    specs = wdata.sample_specs(n_images + 256, seed=seed)
    images = wdata.to_tensor(wdata.render_specs(specs, size=cfg.image_size, seed=seed)[0])
    train, held = images[:n_images], images[n_images:]
    pipe = build_pipeline(cfg)
    stats = train_vae(pipe.vae, train, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                      time_budget_s=time_budget_s, log=log)
    mean, _ = encode_latents(pipe.vae, train[:2048])
    scale = float(1.0 / mean.std())
    pipe.vae.register_to_config(scaling_factor=scale)
    psnr = reconstruction_psnr(pipe.vae, held)
    log(f"vae: held-out PSNR {psnr:.2f} dB, latent scaling factor {scale:.4f}")
    save_pipeline(pipe, out_dir, cfg)
    vae_card = {**stats, "n_images": n_images, "lr": lr, "seed": seed, "split": "seen",
                "family_mix": wdata.FAMILY_MIX, "scaling_factor": scale, "heldout_psnr_db": round(psnr, 2),
                "total_wall_s": round(time.time() - t0, 1), "hardware": hardware()}
    update_card(out_dir, vae_training=vae_card)
    return vae_card


# ------------------------------------------------------------------------------ UNet + text stage
@dataclass
class UNetTrainState:
    """Everything needed to resume UNet/text-encoder training (saved with ``torch.save``, loaded weights-only)."""

    step: int = 0
    elapsed_s: float = 0.0
    losses: list[float] = field(default_factory=list)


def _tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def _vae_fingerprint(vae) -> float:
    return float(sum(p.double().sum() for p in vae.parameters()))


def prepare_latents(pipe, n_images: int, seed: int, cache: Path | None, log: Log = _log_default) -> dict[str, torch.Tensor]:
    """Render ``n_images`` seen world images, encode them once, tokenize their prompts; cached in ``cache``."""
    from feedbacklab import world

    fp = _vae_fingerprint(pipe.vae)
    if cache is not None and cache.is_file():
        data = torch.load(cache, weights_only=True)
        if float(data["vae_fingerprint"]) == fp and len(data["input_ids"]) == n_images:
            log(f"latents: loaded {n_images} from {cache}")
            return data
    t0 = time.time()
    specs = wdata.sample_specs(n_images, seed=seed + 1)
    images = wdata.to_tensor(wdata.render_specs(specs, size=pipe.vae.config.sample_size, seed=seed + 10_000)[0])
    mean, std = encode_latents(pipe.vae, images)
    data = {"mean": mean, "std": std, "input_ids": _tokenize(pipe.tokenizer, [world.prompt(s) for s in specs]),
            "vae_fingerprint": torch.tensor(fp, dtype=torch.float64)}
    log(f"latents: rendered and encoded {n_images} images in {time.time() - t0:.1f}s")
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, cache)
    return data


def train_unet(pipe, data: dict[str, torch.Tensor], steps: int, batch_size: int = 64, lr: float = 1e-3,
               cfg_dropout: float = 0.1, ema_decay: float = 0.999, seed: int = 0, time_budget_s: float | None = None,
               state_path: Path | None = None, checkpoint_every_s: float = 300.0,
               on_checkpoint: Callable[[Any, UNetTrainState], None] | None = None,
               log: Log = _log_default, log_every: int = 50) -> UNetTrainState:
    """Jointly train ``pipe.unet`` and ``pipe.text_encoder`` on cached latents (v- or ε-prediction MSE).

    Each step: z = (μ + σ·ε)·scale, prompt dropped to "" with probability ``cfg_dropout``, t ~ U{0..999},
    loss = ‖model(√ᾱ z + √(1-ᾱ) n, t, text) − target‖², target v = √ᾱ n − √(1-ᾱ) z (Salimans & Ho 2022).
    Resumes from ``state_path`` when it exists; stops at ``steps`` or after ``time_budget_s`` more seconds.
    On exit the EMA weights are copied into ``pipe``.
    """
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    if steps < 0 or batch_size < 1 or not 0.0 <= cfg_dropout < 1.0:
        raise ValueError(f"need steps >= 0, batch_size >= 1, 0 <= cfg_dropout < 1; got {steps}, {batch_size}, {cfg_dropout}")
    unet, text = pipe.unet, pipe.text_encoder
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    scale = float(pipe.vae.config.scaling_factor)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    ema = EMAModel(params, decay=ema_decay, use_ema_warmup=True, power=0.75)
    state = UNetTrainState()
    if state_path is not None and state_path.is_file():
        saved = torch.load(state_path, weights_only=True)
        unet.load_state_dict(saved["unet"])
        text.load_state_dict(saved["text_encoder"])
        opt.load_state_dict(saved["optimizer"])
        ema.load_state_dict(saved["ema"])
        state = UNetTrainState(step=int(saved["step"]), elapsed_s=float(saved["elapsed_s"]), losses=list(saved["losses"]))
        log(f"unet: resumed from {state_path} at step {state.step} ({state.elapsed_s:.0f}s trained)")
    gen = _seed_all(seed + state.step)
    uncond = _tokenize(pipe.tokenizer, [""])[0]
    mean, std, ids = data["mean"], data["std"], data["input_ids"]

    def checkpoint() -> None:
        if state_path is not None:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"unet": unet.state_dict(), "text_encoder": text.state_dict(), "optimizer": opt.state_dict(),
                        "ema": ema.state_dict(), "step": state.step, "elapsed_s": state.elapsed_s,
                        "losses": state.losses}, state_path)
        if on_checkpoint is not None:
            ema.store(params)
            ema.copy_to(params)
            on_checkpoint(pipe, state)
            ema.restore(params)

    unet.train()
    text.train()
    t_start, t_ckpt, loss_avg, start_step = time.time(), time.time(), float("nan"), state.step
    base_elapsed = state.elapsed_s
    while state.step < steps and (time_budget_s is None or time.time() - t_start < time_budget_s):
        idx = torch.randint(len(ids), (batch_size,), generator=gen)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        tok = ids[idx].clone()
        tok[torch.rand(batch_size, generator=gen) < cfg_dropout] = uncond
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch_size,), generator=gen)
        noisy = noise_sched.add_noise(z, noise, t)
        target = noise_sched.get_velocity(z, noise, t) if noise_sched.config.prediction_type == "v_prediction" else noise
        pred = unet(noisy, t, text(tok)[0]).sample
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (state.step + 1) / 200)
        opt.step()
        ema.step(params)
        state.step += 1
        state.elapsed_s = base_elapsed + time.time() - t_start
        loss_avg = loss.item() if np.isnan(loss_avg) else 0.98 * loss_avg + 0.02 * loss.item()
        if state.step % log_every == 0:
            state.losses.append(round(loss_avg, 5))
            rate = batch_size * (state.step - start_step) / (time.time() - t_start)
            log(f"unet step {state.step}/{steps} loss {loss_avg:.4f} {rate:.0f} img/s {state.elapsed_s:.0f}s")
        if time.time() - t_ckpt > checkpoint_every_s:
            checkpoint()
            t_ckpt = time.time()
    checkpoint()
    ema.copy_to(params)
    unet.eval()
    text.eval()
    return state


def pretrain_unet(out_dir: str | Path, steps: int = 100_000, batch_size: int = 64, n_images: int = 30_000,
                  lr: float = 1e-3, cfg_dropout: float = 0.1, ema_decay: float = 0.999, seed: int = 0,
                  time_budget_s: float | None = None, work_dir: str | Path | None = None,
                  checkpoint_every_s: float = 300.0, log: Log = _log_default) -> dict[str, Any]:
    """Stage 2: load the stage-1 pipeline from ``out_dir``, train UNet + text encoder, save EMA weights back.

    Training state (for resuming) and the latent cache go to ``work_dir`` (default ``out_dir/../.work/<name>``);
    the pipeline in ``out_dir`` is refreshed at every checkpoint.
    """
    out = Path(out_dir)
    card = read_card(out)
    if "config" not in card:
        raise FileNotFoundError(f"{out} has no card.json with a config: run the VAE stage (pretrain_vae) first")
    cfg = GeneratorConfig.from_dict(card["config"])
    work = Path(work_dir) if work_dir is not None else out.parent.parent / "cache" / "pretrain" / out.name
    pipe = load_pipeline(out)
    data = prepare_latents(pipe, n_images, seed, work / f"latents_{n_images}_{seed}.pt", log=log)
    run = {"batch_size": batch_size, "n_images": n_images, "lr": lr, "cfg_dropout": cfg_dropout,
           "ema_decay": ema_decay, "seed": seed, "split": "seen", "family_mix": wdata.FAMILY_MIX,
           "prediction_type": cfg.prediction_type, "hardware": hardware()}

    done = card.get("unet_training", {})
    previous = done.get("phases") or ([{"lr": done["lr"], "from_step": 0, "to_step": done["steps"]}] if done else [])
    first_step = previous[-1]["to_step"] if previous else 0

    def save(p, st: UNetTrainState) -> None:
        p.save_pretrained(out, safe_serialization=True)
        phases = previous + [{"lr": lr, "from_step": first_step, "to_step": st.step}]
        update_card(out, unet_training={**run, "steps": st.step, "wall_s": round(st.elapsed_s, 1), "phases": phases,
                                        "loss_curve_every_50_steps": st.losses})

    state = train_unet(pipe, data, steps=steps, batch_size=batch_size, lr=lr, cfg_dropout=cfg_dropout,
                       ema_decay=ema_decay, seed=seed, time_budget_s=time_budget_s, state_path=work / "unet_state.pt",
                       checkpoint_every_s=checkpoint_every_s, on_checkpoint=save, log=log)
    return {**run, "steps": state.step, "wall_s": round(state.elapsed_s, 1)}


# ----------------------------------------------------------------------------------------- sampling
@torch.no_grad()
def generate(pipe, prompts: Sequence[str], guidance_scale: float = 4.0, num_inference_steps: int = 20,
             seed: int = 0, batch_size: int = 32) -> np.ndarray:
    """Sample one image per prompt with the pipeline's own ``__call__``; uint8 (N, H, W, 3)."""
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    out = []
    for i in range(0, len(prompts), batch_size):
        gen = torch.Generator(device=pipe.device).manual_seed(seed + i)
        res = pipe(list(prompts[i:i + batch_size]), num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, height=size, width=size, generator=gen, output_type="np")
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)

