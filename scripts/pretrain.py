#!/usr/bin/env python
"""Train one tiny base model component into a directory (thin CLI over ``feedbacklab.models``).

Examples (the shipped models were built with exactly these, 1 torch thread on a shared 2-core CPU):
  python scripts/pretrain.py vae  --out data/models/shapes-sd --steps 1000 --batch-size 16 --time-budget 600 --threads 1
  python scripts/pretrain.py unet --out data/models/shapes-sd --time-budget 2400 --n-images 20000 --threads 1
  python scripts/pretrain.py unet --out data/models/shapes-sd --time-budget 330 --n-images 20000 --lr 3e-4 --threads 1
      (the second unet call resumes from data/cache/pretrain/shapes-sd and anneals the learning rate)
  python scripts/pretrain.py clip --out data/models/shapes-clip --steps 1500 --n-images 10000 --hard-negatives 6 \
      --focus count,relation --cosine --threads 1
  python scripts/pretrain.py captioner --out data/models/shapes-captioner --steps 2000 --n-images 20000 --threads 1
  python scripts/pretrain.py captioner --out data/models/shapes-captioner-crop --steps 2000 --n-images 20000 --crop --threads 1
  python scripts/pretrain.py evaluate --out data/models/shapes-sd --clip data/models/shapes-clip --guidance 4.5 --n-eval 600
  python scripts/pretrain.py evaluate-clip --out data/models/shapes-clip
  python scripts/noisy_caption_generator.py --wrong-count 0.5 --steps 600 --out data/models/shapes-sd-noisy-counts
  python scripts/pretrain.py evaluate --out data/models/shapes-sd-noisy-counts --guidance 4.5 --n-eval 600
"""
from __future__ import annotations

import argparse
import json

import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("component", choices=["vae", "unet", "clip", "captioner", "evaluate", "evaluate-clip"])
    ap.add_argument("--out", required=True, help="model directory to write (or evaluate)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the component's)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--n-images", type=int, default=None, help="distinct rendered training images")
    ap.add_argument("--time-budget", type=float, default=None, help="stop after this many seconds of training")
    ap.add_argument("--lr", type=float, default=None, help="learning rate (default: the component's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--hard-negatives", type=int, default=4, help="clip: one-attribute edits per image")
    ap.add_argument("--focus", default="", help="clip: attributes whose every edit is a hard negative, e.g. count,relation")
    ap.add_argument("--cosine", action="store_true", help="clip: cosine learning-rate decay to 0 at --steps")
    ap.add_argument("--quality-captions", type=float, default=0.0,
                    help="clip: share of captions that also state the image's quality (models.clip.quality_caption)")
    ap.add_argument("--quality-negatives", type=int, default=2, help="clip: other quality captions as hard negatives")
    ap.add_argument("--crop", action="store_true", help="captioner: random-crop augmentation, captions unchanged")
    ap.add_argument("--clip", default=None, help="evaluate: a CLIP model to score retrieval on generated images")
    ap.add_argument("--guidance", type=float, default=None, help="evaluate: guidance scale")
    ap.add_argument("--n-eval", type=int, default=600, help="evaluate: generated samples (seen + unseen)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    opt = {k: v for k, v in {"steps": a.steps, "batch_size": a.batch_size, "n_images": a.n_images,
                              "time_budget_s": a.time_budget, "lr": a.lr}.items() if v is not None}
    if a.component == "vae":
        from feedbacklab.models.generator import pretrain_vae
        res = pretrain_vae(a.out, seed=a.seed, **opt)
    elif a.component == "unet":
        from feedbacklab.models.generator import pretrain_unet
        res = pretrain_unet(a.out, seed=a.seed, **opt)
    elif a.component == "clip":
        from feedbacklab.models.clip import pretrain_clip
        res = pretrain_clip(a.out, seed=a.seed, hard_negatives=a.hard_negatives, cosine=a.cosine,
                            quality_captions=a.quality_captions, quality_negatives=a.quality_negatives,
                            focus_attributes=tuple(f for f in a.focus.split(",") if f), **opt)
    elif a.component == "captioner":
        from feedbacklab.models.captioner import pretrain_captioner
        res = pretrain_captioner(a.out, crop=a.crop, seed=a.seed, **opt)
    elif a.component == "evaluate-clip":
        from feedbacklab.models.evaluate import evaluate_shipped_clip
        res = evaluate_shipped_clip(a.out)
    else:
        from feedbacklab.models.evaluate import evaluate_shipped_generator
        res = evaluate_shipped_generator(a.out, clip_dir=a.clip, n=a.n_eval, guidance_scale=a.guidance, seed=a.seed)
    print(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
