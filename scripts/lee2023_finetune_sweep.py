"""How far can reward-weighted fine-tuning (Lee et al. 2023, Eq. 3) move the shipped generator with a *perfect*
reward? Fine-tunes shapes-sd on its own samples weighted by the oracle's truth (0/1), one run per config, and
prints the oracle's aligned rate and count confusion before and after.

This separates the two ways notebook 10 can miss the paper's alignment gain: a reward that ranks badly, or a
fine-tuning that cannot move the model even with the right weights. Example (the sweep in the README):

    OMP_NUM_THREADS=1 .venv/bin/python scripts/lee2023_finetune_sweep.py \\
        --configs '[{"beta": 0.0}, {"beta": 1.0}, {"beta": 0.0, "epochs": 48}]'

Each config is a JSON object of `RewardWeightedConfig` fields; unset fields take the defaults below.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

DEFAULTS = {"learning_rate": 3e-4, "epochs": 16, "pretrain_batch_size": 16}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", required=True, help="JSON list of RewardWeightedConfig overrides, one run each")
    ap.add_argument("--generator", default="shapes-sd")
    ap.add_argument("--prompts", type=int, default=64, help="seen 'count colour circles on a background' prompts")
    ap.add_argument("--images-per-prompt", type=int, default=10, help="D_model samples per prompt")
    ap.add_argument("--feedback-guidance", type=float, default=4.0, help="guidance of the D_model samples")
    ap.add_argument("--eval-images", type=int, default=5, help="evaluation samples per prompt (fresh seeds)")
    ap.add_argument("--eval-guidance", type=float, default=4.0, help="guidance of the evaluation samples")
    ap.add_argument("--d-model", choices=("samples", "renders"), default="samples",
                    help="samples: the generator's own images weighted as --weights says; renders: true renders of the "
                         "same prompts, weight 1 (the best D_model any reward could select)")
    ap.add_argument("--weights", choices=("oracle", "uniform"), default="oracle",
                    help="oracle: the oracle's 0/1 truth (a perfect reward); uniform: 1 for every sample (no reward)")
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps of every sample")
    ap.add_argument("--cache", default="reports/cache/lee2023_sweep", help="where generated sets are cached")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from feedbacklab.finetune import RewardWeightedConfig

    configs = json.loads(args.configs)
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise SystemExit("--configs must be a JSON list of objects, e.g. '[{\"beta\": 0.0}]'")
    for c in configs:  # validate every config before any sampling
        RewardWeightedConfig(**{**DEFAULTS, **c})

    from feedbacklab import evaluation as ev
    from feedbacklab.feedback_sets import SamplerConfig, generate_feedback_set
    from feedbacklab.finetune import pretraining_pairs, reward_weighted_finetune
    from feedbacklab.models import load_generator

    cache = Path(args.cache)
    base = load_generator(args.generator, device="cpu")
    prompts = ev.eval_prompts(args.prompts, "seen", seed=args.seed, shape="circle")
    d_model = generate_feedback_set(base, prompts, args.images_per_prompt, None, seed=args.seed, cache_dir=cache,
                                    sampler=SamplerConfig(args.steps, args.feedback_guidance), progress=False)
    images, model_prompts, weights = d_model.tensors(), d_model.prompts, torch.tensor(d_model.truth, dtype=torch.float32)
    if args.weights == "uniform":
        weights = torch.ones_like(weights)
    if args.d_model == "renders":
        from feedbacklab import world

        size = images.shape[-1]
        images = torch.stack([torch.from_numpy(world.render(world.parse(p), size=size, seed=10_000 + i)[0]).permute(2, 0, 1)
                              for i, p in enumerate(model_prompts)]).float() / 255
        weights = torch.ones(len(model_prompts))
    pre_images, pre_prompts = pretraining_pairs(2000, seed=args.seed)
    sampler = SamplerConfig(args.steps, args.eval_guidance)
    base_set, base_summary = ev.evaluate_generator(base, prompts, args.eval_images, args.seed + 1000, sampler, 32, cache,
                                                   None, progress=False)
    print(f"D_model: {len(d_model)} {args.d_model}, {args.weights} weights, mean weight {weights.mean():.3f}; base aligned "
          f"{base_summary['aligned_rate']:.3f}, artifacts {base_summary['artifact_rate']:.3f}")
    print(ev.count_confusion(base_set.records).round(2).to_string())
    for c in configs:
        cfg = RewardWeightedConfig(device="cpu", seed=args.seed, **{**DEFAULTS, **c})
        t0 = time.time()
        res = reward_weighted_finetune(load_generator(args.generator, device="cpu"), images, model_prompts,
                                       weights, pre_images, pre_prompts, cfg, progress=False)
        ft_set, s = ev.evaluate_generator(res.pipe, prompts, args.eval_images, args.seed + 1000, sampler, 32, None, None,
                                          progress=False)
        gain = ev.paired_gain(base_set.truth, ft_set.truth, seed=args.seed)
        print(f"\n{json.dumps(c)}: {time.time() - t0:.0f}s  aligned {base_summary['aligned_rate']:.3f} → "
              f"{s['aligned_rate']:.3f} (gain {gain['gain']:+.3f}, 95% CI {gain['low']:+.3f}..{gain['high']:+.3f}), "
              f"count {s['count_rate']:.3f}, artifacts {s['artifact_rate']:.3f}")
        print(ev.count_confusion(ft_set.records).round(2).to_string())


if __name__ == "__main__":
    main()
