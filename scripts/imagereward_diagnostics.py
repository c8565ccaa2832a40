"""Why does notebook 20's ranking reward not beat its own starting CLIP similarity on held-out prompts?

Rebuilds notebook 20's cpu-profile data (same prompts, seeds, panel, group sizes; the generated sets are cached),
trains the ranking reward once per config and prints, per run, the epoch early stopping kept, the validation pair
accuracy per epoch and the preference accuracy against the oracle on the held-out test pairs, next to
`clip-score`'s. Three questions, one option each (the runs in the README):

    # training settings, with the panel's or the oracle's own rankings (perfect annotators)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/imagereward_diagnostics.py \\
        --configs '[{}, {"labels": "oracle"}, {"labels": "oracle", "backbone_lr_scale": 0, "learning_rate": 1e-3}]'
    # more data: 3x the training prompts (the test prompts then differ: compare within the run)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/imagereward_diagnostics.py --prompt-scale 3 --configs '[{}, {"labels": "oracle"}]'
    # does the backbone encode what the reward must learn? ridge probes of the oracle's aspects, per block
    OMP_NUM_THREADS=1 .venv/bin/python scripts/imagereward_diagnostics.py --probe
    # what would the target need? clip-score plus w x the oracle's true plausibility / aesthetics (z-scored)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/imagereward_diagnostics.py --bound
    # any of these on another backbone (e.g. a CLIP trained with quality captions, scripts/pretrain.py)
    OMP_NUM_THREADS=1 .venv/bin/python scripts/imagereward_diagnostics.py --probe --clip /tmp/clip-quality

Each config is a JSON object of `RankingTrainConfig` fields plus "labels" ("panel" or "oracle") and
"freeze_fraction"; unset fields take notebook 20's values.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

TRAIN = {"attribute": 48, "composition": 24, "spatial": 24}   # notebook 20's cpu profile
TEST = {"attribute": 12, "composition": 6, "spatial": 6}
DEFAULTS = {"epochs": 12, "learning_rate": 3e-4}


def build(prompt_scale: float, seed: int, cache: str):
    from feedbacklab import evaluation as ev
    from feedbacklab.feedback import NoiseConfig, make_panel
    from feedbacklab.feedback_sets import SamplerConfig, generate_feedback_set, group_sizes, rank_feedback_set
    from feedbacklab.models import load_generator

    sampler = SamplerConfig(num_inference_steps=10, guidance_scale=4.0)
    base = load_generator("shapes-sd-noisy-counts", device="cpu")
    n_train = {f: int(round(n * prompt_scale)) for f, n in TRAIN.items()}
    split = {f: ev.eval_prompts(n_train[f] + TEST[f], "seen", seed=seed, family=f) for f in TRAIN}
    train_p = [p for f, ps in split.items() for p in ps[: n_train[f]]]
    test_p = [p for f, ps in split.items() for p in ps[n_train[f]:]]
    test_set = generate_feedback_set(base, test_p, 8, None, seed=seed + 1, sampler=sampler, batch_size=32, cache_dir=cache)
    panel = make_panel(3, seed=seed)
    train_set = generate_feedback_set(base, train_p, 9, panel, seed=seed, sampler=sampler, batch_size=32, cache_dir=cache)
    sizes = group_sizes(len(train_p), (4, 9), seed=seed)
    labels = {"panel": rank_feedback_set(train_set, panel, sizes),
              "oracle": rank_feedback_set(train_set, make_panel(3, noise=NoiseConfig.none(), seed=seed), sizes)}
    ranked = labels["panel"][1]
    images = dict(zip((train_set.records[i]["item_id"] for i in ranked), train_set.tensors(ranked)))
    return train_p, train_set, ranked, test_set, {k: v[0] for k, v in labels.items()}, images


def run_config(config: dict, train_p, rankings, images, test_set, seed: int, clip: str = "shapes-clip") -> dict:
    from feedbacklab import metrics as M
    from feedbacklab.rewards import RankingTrainConfig, fit_ranking_reward, load_reward

    config = dict(config)
    source, freeze = config.pop("labels", "panel"), config.pop("freeze_fraction", 0.7)
    val_p = set(train_p[::5])
    rs = rankings[source]
    t0 = time.perf_counter()
    reward = load_reward("imagereward", clip=clip, device="cpu", freeze_fraction=freeze)
    hist = fit_ranking_reward(reward, [r for r in rs if r.prompt not in val_p], images,
                              RankingTrainConfig(**(DEFAULTS | {"seed": seed} | config)),
                              val_rankings=[r for r in rs if r.prompt in val_p], val_images=images, progress=False)
    with torch.no_grad():
        s = reward.score(test_set.prompts, test_set.tensors()).numpy()
    truth = np.array([r["latent"]["overall"] for r in test_set.records])
    return {"labels": source, "freeze_fraction": freeze, **config, "best_epoch": reward.config.best_epoch,
            "test_pref_acc_vs_oracle": round(M.pairwise_accuracy(s, truth, test_set.prompts), 4),
            "val_pair_acc": [round(h["val_pair_accuracy"], 3) for h in hist], "seconds": round(time.perf_counter() - t0)}


def probe(train_set, ranked, test_set, clip: str = "shapes-clip") -> None:
    """Ridge probes of each latent aspect on shapes-clip's mean patch tokens after each block and on its embedding,
    fit on the training images, scored by the within-prompt pair accuracy on the test images."""
    from sklearn.linear_model import RidgeCV

    from feedbacklab import metrics as M
    from feedbacklab.rewards import ClipBackbone

    backbone = ClipBackbone.from_name(clip, device="cpu")
    visual = backbone.model.visual

    @torch.no_grad()
    def features(images: torch.Tensor) -> dict[str, np.ndarray]:
        out: dict[str, list] = {}
        for i in range(0, len(images), 128):
            x = visual._embeds(backbone.preprocess(images[i : i + 128]))  # patch + position embeddings, as ClipTokens
            for b, block in enumerate(visual.transformer.resblocks):
                x = block(x)
                out.setdefault(f"block {b}", []).append(x[:, 1:].mean(1))
            out.setdefault("embedding", []).append(backbone.embed_images(images[i : i + 128]))
        return {k: torch.cat(v).float().numpy() for k, v in out.items()}

    f_train, f_test = features(train_set.tensors(ranked)), features(test_set.tensors())
    for aspect in ("alignment", "plausibility", "aesthetics"):
        y_train = np.array([train_set.records[i]["latent"][aspect] for i in ranked])
        y_test = np.array([r["latent"][aspect] for r in test_set.records])
        for name in f_train:
            pred = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(f_train[name], y_train).predict(f_test[name])
            acc = M.pairwise_accuracy(pred, y_test, test_set.prompts)
            print(json.dumps({"probe": aspect, "features": name, "within_prompt_pair_acc": round(acc, 3)}), flush=True)


def bound(test_set, clip: str = "shapes-clip") -> None:
    """Preference accuracy against the oracle of ``clip-score`` plus w × the oracle's true plausibility and/or
    aesthetics (each z-scored): how much a reward that saw those aspects perfectly could gain over CLIP, and the
    within-prompt spread of each aspect (what a backbone must resolve)."""
    from feedbacklab import metrics as M
    from feedbacklab.rewards import load_reward

    prompts = list(test_set.prompts)
    latent = {k: np.array([r["latent"][k] for r in test_set.records]) for k in ("alignment", "plausibility", "aesthetics", "overall")}
    with torch.no_grad():
        clip_s = load_reward("clip-score", clip=clip, device="cpu").score(prompts, test_set.tensors()).numpy()
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    acc = lambda s: round(M.pairwise_accuracy(s, latent["overall"], prompts), 3)  # noqa: E731
    groups = [np.array([i for i, q in enumerate(prompts) if q == p]) for p in dict.fromkeys(prompts)]
    for aspect, v in latent.items():
        print(json.dumps({"aspect": aspect, "mean": round(float(v.mean()), 3),
                          "within_prompt_std": round(float(np.mean([v[g].std() for g in groups])), 3),
                          "pref_acc_ordering_by_it_alone": acc(v)}))
    print(json.dumps({"reward": "clip-score", "pref_acc_vs_oracle": acc(clip_s)}))
    for w in (0.5, 1.0, 2.0):
        for name, extra in (("plausibility", z(latent["plausibility"])), ("aesthetics", z(latent["aesthetics"])),
                            ("plausibility+aesthetics", z(latent["plausibility"]) + z(latent["aesthetics"]))):
            print(json.dumps({"reward": f"clip-score + {w:g} x true {name}", "pref_acc_vs_oracle": acc(z(clip_s) + w * extra)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="[{}]", help="JSON list of configs (see the module docstring), one run each")
    ap.add_argument("--prompt-scale", type=float, default=1.0, help="training prompts x this (test prompts: 24)")
    ap.add_argument("--probe", action="store_true", help="ridge probes of the oracle's aspects instead of training")
    ap.add_argument("--bound", action="store_true", help="clip-score plus the oracle's true aspects: the target's headroom")
    ap.add_argument("--clip", default="shapes-clip", help="the backbone: a shipped name, a directory or an OpenCLIP name")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default="reports/cache/imagereward_diagnostics", help="where generated sets are cached")
    args = ap.parse_args()
    configs = json.loads(args.configs)
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        raise SystemExit(f"--configs must be a JSON list of objects, got {args.configs!r}")
    torch.set_num_threads(1)
    train_p, train_set, ranked, test_set, rankings, images = build(args.prompt_scale, args.seed, args.cache)
    if args.probe:
        return probe(train_set, ranked, test_set, args.clip)
    if args.bound:
        return bound(test_set, args.clip)
    from feedbacklab import metrics as M
    from feedbacklab.rewards import load_reward

    with torch.no_grad():
        clip = load_reward("clip-score", clip=args.clip, device="cpu").score(test_set.prompts, test_set.tensors()).numpy()
    truth = np.array([r["latent"]["overall"] for r in test_set.records])
    print(json.dumps({"train_prompts": len(train_p), "test_prompts": len(set(test_set.prompts)),
                      "clip_score_test_pref_acc_vs_oracle": round(M.pairwise_accuracy(clip, truth, test_set.prompts), 4)}))
    for config in configs:
        print(json.dumps(run_config(config, train_p, rankings, images, test_set, args.seed, args.clip)), flush=True)


if __name__ == "__main__":
    main()
