"""A generator pre-trained on captions that often state the wrong count, as web alt-text does.

Stable Diffusion miscounts largely because its captions rarely state counts correctly; Lee et al. (2023) fix
that with feedback. ``shapes-sd`` was trained on exact captions, so its count errors are capacity errors that
fine-tuning cannot move (scripts/lee2023_finetune_sweep.py). Continuing its training with miscounted captions
gives a ShapesWorld base model whose count errors come from the data, like SD's.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from feedbacklab.models.registry import hardware, read_card, shipped_path

COUNTS = (1, 2, 3, 4)


def miscount_captions(specs: Sequence[Any], wrong_count: float, seed: int = 0) -> list[str]:
    """Prompts of ``specs``; each attribute prompt states another count (uniform) with probability ``wrong_count``.

    Composition and spatial prompts have no count and stay exact."""
    from feedbacklab import world

    if not 0.0 <= wrong_count <= 1.0:
        raise ValueError(f"wrong_count must be a probability in [0, 1], got {wrong_count}")
    rng = random.Random(seed)
    out = []
    for spec in specs:
        if spec.family == "attribute" and rng.random() < wrong_count:
            n = rng.choice([k for k in COUNTS if k != spec.count])
            spec = world.Spec("attribute", (spec.objects[0],) * n, spec.background)
        out.append(world.prompt(spec))
    return out


def pretrain_noisy_captions(out_dir: str | Path, base: str | Path = "shapes-sd", wrong_count: float = 0.5,
                            steps: int = 600, n_images: int = 8000, lr: float = 3e-4, batch_size: int = 64,
                            seed: int = 0, stored_dtype: str = "float16", log=print) -> dict[str, Any]:
    """Continue training ``base`` (UNet + text encoder, its own recipe: v-prediction, CFG dropout, EMA) on fresh
    seen renders with miscounted captions; save the pipeline and a card to ``out_dir`` (refuses a non-empty one).

    Weights are stored in ``stored_dtype`` ("float16" keeps data/models within its 60 MB budget; ``load_generator``
    runs them in float32 on CPU) or "float32"."""
    from feedbacklab import world
    from feedbacklab.models import data as wdata
    from feedbacklab.models import load_generator
    from feedbacklab.models.generator import _tokenize, encode_latents, train_unet

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory (nothing was overwritten)")
    if steps < 1 or n_images < batch_size:
        raise ValueError(f"need steps >= 1 and n_images >= batch_size, got {steps}, {n_images}, {batch_size}")
    miscount_captions([], wrong_count)  # validate before loading anything
    dtypes = {"float16": torch.float16, "float32": torch.float32}
    if stored_dtype not in dtypes:
        raise ValueError(f"stored_dtype must be one of {sorted(dtypes)}, got {stored_dtype!r}")
    pipe = load_generator(base, device="cpu")
    specs = wdata.sample_specs(n_images, seed=seed + 77)
    images = wdata.to_tensor(wdata.render_specs(specs, size=pipe.vae.config.sample_size, seed=seed + 78)[0])
    prompts = miscount_captions(specs, wrong_count, seed=seed + 79)
    share_wrong = sum(p != world.prompt(s) for p, s in zip(prompts, specs)) / len(specs)
    mean, std = encode_latents(pipe.vae, images)
    data = {"mean": mean, "std": std, "input_ids": _tokenize(pipe.tokenizer, prompts)}
    t0 = time.time()
    state = train_unet(pipe, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed + 5, log=log, log_every=100)
    pipe.to(dtypes[stored_dtype]).save_pretrained(out, safe_serialization=True)
    section = {"base": str(base), "wrong_count_probability": wrong_count, "share_of_captions_wrong": share_wrong,
               "steps": state.step, "batch_size": batch_size, "lr": lr, "n_images": n_images, "seed": seed,
               "wall_s": round(time.time() - t0, 1), "hardware": hardware(), "stored_dtype": stored_dtype,
               "loss_curve_every_100_steps": state.losses}
    base_dir = shipped_path(str(base), "generator") or Path(base)
    base_card = read_card(base_dir) if (base_dir / "card.json").is_file() else {}
    card = {"name": out.name, "kind": "generator", "config": base_card.get("config"),
            "noisy_caption_training": section}
    (out / "card.json").write_text(json.dumps(card, indent=2))
    return section
