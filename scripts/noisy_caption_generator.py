"""Continue-train the shipped generator on renders whose captions often state the wrong count, as web alt-text does.

Thin CLI over ``feedbacklab.models.noisy_captions.pretrain_noisy_captions``; the output directory can be passed
to notebook 10 as ``generator`` and to scripts/lee2023_finetune_sweep.py as ``--generator``:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/noisy_caption_generator.py --wrong-count 0.5 --steps 600 \\
        --out reports/models/shapes-sd-noisy-counts
"""
from __future__ import annotations

import argparse
import json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wrong-count", type=float, default=0.5, help="probability that an attribute caption states another count")
    ap.add_argument("--steps", type=int, default=600, help="training steps of batch 64")
    ap.add_argument("--images", type=int, default=8000, help="rendered training images")
    ap.add_argument("--generator", default="shapes-sd", help="the generator to start from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="directory for the save_pretrained pipeline (must be new or empty)")
    args = ap.parse_args()
    import torch

    from feedbacklab.models.noisy_captions import pretrain_noisy_captions

    torch.set_num_threads(1)
    section = pretrain_noisy_captions(args.out, args.generator, args.wrong_count, args.steps, args.images, seed=args.seed)
    print(json.dumps({k: v for k, v in section.items() if k != "loss_curve_every_100_steps"}))


if __name__ == "__main__":
    main()
