"""The tiny captioner for RLHF-V: ``VisionEncoderDecoderModel`` (tiny ViT → tiny GPT-2) + a word-level tokenizer.

Two shipped checkpoints differ only in augmentation: ``shapes-captioner`` (none) and
``shapes-captioner-crop`` (random crops whose captions still describe the whole scene: the
vision–language mismatch that RLHF-V, Yu et al. 2024, blames for hallucination).
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from feedbacklab.models import data as wdata
from feedbacklab.models.registry import hardware, update_card
from feedbacklab.models.training import WarmupSteps

Log = Callable[[str], None]
SPECIAL = {"pad": "[PAD]", "bos": "[BOS]", "eos": "[EOS]", "unk": "[UNK]"}
CROP_SIDE = (0.45, 0.8)  # crop side as a share of the image side
CROP_PROB = 0.5


def world_vocabulary() -> list[str]:
    """Every word of world prompts and captions (all families), sorted; specials first."""
    from feedbacklab import world

    words: set[str] = {"background"}
    rng = random.Random(0)
    for i in range(3000):
        words.update(world.prompt(world.sample_spec(rng, world.FAMILIES[i % 3], split="any")).split())
    words.update(world.COLORS)
    words.update(world.BACKGROUNDS)
    words.update(world.COUNT_WORDS)
    words.update(world.SHAPES)
    return list(SPECIAL.values()) + sorted(words)


def build_caption_tokenizer():
    """A ``PreTrainedTokenizerFast`` over a ``tokenizers`` WordLevel model; encodes "w1 … wn [EOS]"."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(world_vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {SPECIAL['eos']}",
                                                       special_tokens=[(SPECIAL["eos"], vocab[SPECIAL["eos"]])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIAL["pad"], bos_token=SPECIAL["bos"],
                                   eos_token=SPECIAL["eos"], unk_token=SPECIAL["unk"], model_max_length=20)


def build_captioner(image_size: int = 64, width: int = 64, seed: int = 0):
    """An untrained tiny ViT encoder + GPT-2 decoder, plus its tokenizer and image processor."""
    from transformers import (GPT2Config, GPT2LMHeadModel, ViTConfig, ViTImageProcessor, ViTModel,
                              VisionEncoderDecoderModel)

    torch.manual_seed(seed)
    tok = build_caption_tokenizer()
    enc = ViTModel(ViTConfig(image_size=image_size, patch_size=8, hidden_size=width, num_hidden_layers=3,
                             num_attention_heads=4, intermediate_size=2 * width))
    dec = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=tok.model_max_length + 2, n_embd=width,
                                     n_layer=2, n_head=4, add_cross_attention=True, bos_token_id=tok.bos_token_id,
                                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model = VisionEncoderDecoderModel(encoder=enc, decoder=dec)
    for conf in (model.config, model.generation_config):
        conf.decoder_start_token_id = tok.bos_token_id
        conf.pad_token_id = tok.pad_token_id
        conf.eos_token_id = tok.eos_token_id
    proc = ViTImageProcessor(do_resize=True, size={"height": image_size, "width": image_size},
                             image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return LoadedCaptioner(model=model, tokenizer=tok, processor=proc)


@dataclass
class LoadedCaptioner:
    """A vision-encoder/text-decoder captioner with its tokenizer and image processor."""

    model: Any
    tokenizer: Any
    processor: Any

    @property
    def image_size(self) -> int:
        """The side its image processor resizes to (what to render images at)."""
        return int(self.processor.size["height"])

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) in [0, 1] → the processor's normalised pixel values."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        arrays = list(wdata.to_uint8(images))
        return self.processor(images=arrays, return_tensors="pt").pixel_values.to(self.model.device)

    @torch.no_grad()
    def caption(self, images: torch.Tensor, max_new_tokens: int = 20, batch_size: int = 128) -> list[str]:
        """Greedy captions, one per image."""
        self.model.eval()
        out: list[str] = []
        for i in range(0, len(images), batch_size):
            ids = self.model.generate(self.pixel_values(images[i:i + batch_size]), max_new_tokens=max_new_tokens,
                                      do_sample=False, num_beams=1)
            out += [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        return out

    def save(self, out_dir: str | Path) -> Path:
        """``save_pretrained`` for model, tokenizer and processor into one directory."""
        out = Path(out_dir)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        self.processor.save_pretrained(out)
        return out


def random_crop(images: torch.Tensor, gen: torch.Generator, side: tuple[float, float] = CROP_SIDE) -> torch.Tensor:
    """Crop each image (B, 3, H, W) to a random square of side ``side`` × H and resize it back to H × W."""
    b, _, h, w = images.shape
    out = torch.empty_like(images)
    for i in range(b):
        s = int(round(h * (side[0] + (side[1] - side[0]) * torch.rand((), generator=gen).item())))
        y = int(torch.randint(0, h - s + 1, (), generator=gen))
        x = int(torch.randint(0, w - s + 1, (), generator=gen))
        out[i] = F.interpolate(images[i:i + 1, :, y:y + s, x:x + s], size=(h, w), mode="bilinear", align_corners=False)[0]
    return out


def train_captioner(cap: LoadedCaptioner, steps: int, batch_size: int = 64, n_images: int = 20_000, lr: float = 1e-3,
                    crop: bool = False, seed: int = 0, time_budget_s: float | None = None, log: Log = print,
                    log_every: int = 100) -> dict[str, Any]:
    """Teacher-forced cross-entropy on (image, ``world.describe(true scene)``); ``crop`` crops half the images."""
    from feedbacklab import world

    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    t0 = time.time()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    specs = wdata.sample_specs(n_images, seed=seed + 3)
    arrays, scenes = wdata.render_specs(specs, size=cap.processor.size["height"], seed=seed + 30_000)
    images = wdata.to_tensor(arrays)
    enc = cap.tokenizer([world.describe(s) for s in scenes], padding="max_length", truncation=True,
                        max_length=cap.tokenizer.model_max_length, return_tensors="pt")
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    dec_mask = torch.cat([torch.ones(n_images, 1, dtype=torch.long), enc.attention_mask[:, :-1]], 1)  # BOS + words
    mean = torch.tensor(cap.processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(cap.processor.image_std).view(1, 3, 1, 1)
    model = cap.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    run = WarmupSteps(opt, lr, 100, steps, batch_size, "captioner", log, log_every, time_budget_s)
    while run.running():
        idx = torch.randint(n_images, (batch_size,), generator=gen)
        x = images[idx]
        if crop:
            which = torch.rand(batch_size, generator=gen) < CROP_PROB
            if which.any():
                x[which] = random_crop(x[which], gen)
        loss = model(pixel_values=(x - mean) / std, labels=labels[idx], decoder_attention_mask=dec_mask[idx]).loss
        run(loss)
    model.eval()
    return {"steps": run.step, "batch_size": batch_size, "n_images": n_images, "lr": lr, "seed": seed,
            "augmentation": (f"random crop (side {CROP_SIDE[0]}-{CROP_SIDE[1]} of the image, p={CROP_PROB}), "
                             "caption of the full scene kept") if crop else "none",
            "split": "seen", "family_mix": wdata.FAMILY_MIX, "captions": "world.describe(true scene)",
            "final_loss": round(run.loss_avg, 4), "wall_s": round(time.time() - t0, 1), "hardware": hardware()}


# ------------------------------------------------------------------------------------ hallucination
def evaluate_captioner(cap: LoadedCaptioner, n: int = 500, seed: int = 12345, split: str = "seen") -> dict[str, float]:
    """Hallucination rates and coverage (``evaluation.caption_quality``) on ``n`` fresh renders of ``split``."""
    from feedbacklab.evaluation import caption_quality

    specs = wdata.sample_specs(n, seed=seed, split=split)
    arrays, scenes = wdata.render_specs(specs, size=cap.processor.size["height"], seed=seed)
    return caption_quality(cap.caption(wdata.to_tensor(arrays)), scenes)


def pretrain_captioner(out_dir: str | Path, steps: int = 2000, batch_size: int = 64, n_images: int = 20_000,
                       lr: float = 1e-3, crop: bool = False, seed: int = 0, time_budget_s: float | None = None,
                       eval_n: int = 500, log: Log = print) -> dict[str, Any]:
    """Build, train, evaluate (hallucination rates) and save one captioner into ``out_dir``."""
    cap = build_captioner(seed=seed)
    stats = train_captioner(cap, steps=steps, batch_size=batch_size, n_images=n_images, lr=lr, crop=crop,
                            seed=seed, time_budget_s=time_budget_s, log=log)
    quality = {"rendered_seen": evaluate_captioner(cap, n=eval_n, split="seen"),
               "rendered_unseen": evaluate_captioner(cap, n=eval_n, split="unseen")} if eval_n else {}
    cap.save(out_dir)
    update_card(out_dir, name=Path(out_dir).name, kind="captioner", training=stats, hallucination=quality,
                config={"encoder": cap.model.config.encoder.to_dict(), "decoder": cap.model.config.decoder.to_dict()},
                load="feedbacklab.models.load_captioner(name_or_path) or VisionEncoderDecoderModel/AutoTokenizer/"
                     "AutoImageProcessor.from_pretrained(dir)")
    return {**stats, "hallucination": quality}
