"""DDPO side by side: ``feedbacklab.finetune.ddpo_finetune`` (λ = 0) against trl 0.23.1's ``DDPOTrainer``.

Usage: OMP_NUM_THREADS=1 python benchmarks/ddpo_vs_trl.py [--profile smoke|cpu|gpu] [--out reports/bench/ddpo_vs_trl]
(``make bench-ddpo PROFILE=cpu``). Both run on the same shipped pipeline (``data/models/shapes-sd``), the same
prompts, rewards (JPEG compressibility, DDPO's own, and the learned ``clip-score`` on ``shapes-clip``), samples per
round, DDIM steps, guidance, η, learning rate, clip range, batch sizes and seeds. Each run is its own process,
so peak memory (max RSS; CUDA: max allocated) is that run's. One wrapper counts reward queries and records every
reward for both, so the curves share their x-axis (reward queries, the DDPO paper's).

It prints, per reward: the mean reward after equal reward queries (one curve per implementation, mean over
seeds), wall seconds per round and per reward query, and peak memory, each as ours ÷ trl; then a demonstration of
the KL penalty (ours with λ > 0 against λ = 0, KL to the base measured in both). ``summary.json`` holds it all.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads its thread pool

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "data" / "models" / "shapes-sd"

# One shared setting per profile; the trl DDPOConfig gets the same values under its own names.
PROFILES = {
    "smoke": dict(rounds=2, samples_per_round=8, sample_batch_size=8, train_batch_size=8, num_inference_steps=5,
                  n_prompts=4, eval_images_per_prompt=2, seeds=[0], kl_coef=0.1),
    "cpu": dict(rounds=8, samples_per_round=32, sample_batch_size=16, train_batch_size=16, num_inference_steps=10,
                n_prompts=8, eval_images_per_prompt=4, seeds=[0, 1], kl_coef=0.1),
    "gpu": dict(rounds=20, samples_per_round=128, sample_batch_size=32, train_batch_size=32, num_inference_steps=20,
                n_prompts=16, eval_images_per_prompt=8, seeds=[0, 1, 2], kl_coef=0.1),
}
SHARED = dict(guidance_scale=4.0,   # the evaluation guidance of every notebook (SamplerConfig)
              eta=1.0, learning_rate=3e-4, clip_range=1e-4, adv_clip_max=5.0, inner_epochs=1, timestep_fraction=1.0,
              gradient_accumulation_steps=1, max_grad_norm=1.0, per_prompt_stat_tracking=True, stat_buffer_size=16,
              stat_min_count=16)
REWARDS = ("jpeg-compressibility", "clip-score")


def bench_prompts(n: int) -> list[str]:
    from feedbacklab.evaluation import eval_prompts

    return eval_prompts(n, seed=0, family="attribute")


class RecordingReward:
    """The reward both implementations call: counts queries and keeps every reward, in call order."""

    def __init__(self, name: str):
        from feedbacklab.rewards import load_reward

        self.model = load_reward(name)
        self.rewards: list[float] = []
        self.seconds = 0.0

    def __call__(self, images, prompts, metadata=None):
        t0 = time.perf_counter()
        r = self.model.score(list(prompts), images.float().cpu()).float()
        self.seconds += time.perf_counter() - t0
        self.rewards += r.tolist()
        return r, {}


def evaluate(pipe, model, setting: dict, prompts: list[str]) -> float:
    """Mean reward of the current policy on a fixed evaluation set: every prompt × the same initial noises
    (common random numbers for both implementations: every image's initial and step noise comes from its own
    seeded generator), the training policy's DDIM η, steps and guidance. Evaluation queries are not training
    queries and are not counted."""
    from feedbacklab.feedback_sets import SamplerConfig, sample_images

    train = pipe.unet.training
    pipe.unet.eval()
    n = setting["eval_images_per_prompt"]
    eval_prompts = [p for p in prompts for _ in range(n)]
    seeds = [10_000 + i for i in range(len(eval_prompts))]
    images = sample_images(pipe, eval_prompts, seeds, SamplerConfig(num_inference_steps=setting["num_inference_steps"],
                                                                    guidance_scale=SHARED["guidance_scale"], eta=SHARED["eta"]),
                           batch_size=setting["sample_batch_size"], progress=False)
    pipe.unet.train(train)
    return float(model.score(eval_prompts, images).mean())


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run_ours(setting: dict, reward: RecordingReward, prompts: list[str], seed: int, kl_coef: float, device: str) -> list[float]:
    from feedbacklab.finetune import DDPOConfig, ddpo_finetune
    from feedbacklab.models.generator import load_pipeline

    pipe = load_pipeline(PIPELINE, device=device)
    cfg = DDPOConfig(rounds=setting["rounds"], samples_per_round=setting["samples_per_round"],
                     sample_batch_size=setting["sample_batch_size"], train_batch_size=setting["train_batch_size"],
                     num_inference_steps=setting["num_inference_steps"], seed=seed, kl_coef=kl_coef, track_kl=True if kl_coef > 0 or setting.get("track_kl") else None,
                     device=device, mixed_precision="no", **SHARED)
    times, kls, evals = [], [], [evaluate(pipe, reward.model, setting, prompts)]

    def on_round(rnd, row, traj):
        times.append(row["wall_s"])
        kls.append(row["kl"])
        evals.append(evaluate(pipe, reward.model, setting, prompts))

    ddpo_finetune(pipe, prompts, reward, cfg, progress=False, callback=on_round)
    del reward.rewards[:2]  # the 2-image probe that checks the reward's output before any sampling, not a training query
    return times, kls, evals


def patch_trl_nan(scheduler, steps: int) -> bool:
    """trl 0.23.1's DDIM step, like diffusers', takes ``sqrt(1 − ᾱ_prev − σ_t²)`` of an exact 0 at η = 1 on a zero-SNR
    schedule's first step, which rounds below 0 on some CPUs: NaN latents, NaN rewards, NaN training (diffusers
    #5969). When a probe of that step is NaN here, shrink trl's variance by a relative 1e-6 so the argument stays
    >= 0 (the direction term becomes ~1e-3 x ε̂ instead of 0; σ_t changes by 5e-7) and say so; else leave trl alone."""
    import torch
    from trl.models import modeling_sd_base as sd_base

    probe = scheduler.__class__.from_config(scheduler.config)
    probe.set_timesteps(steps)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    if not torch.isnan(sd_base.scheduler_step(probe, x, probe.timesteps[0], x, eta=SHARED["eta"]).latents).any():
        return False
    original = sd_base._get_variance
    sd_base._get_variance = lambda self, t, prev: original(self, t, prev) * (1 - 1e-6)
    return True


def run_trl(setting: dict, reward: RecordingReward, prompts: list[str], seed: int, device: str) -> list[float]:
    import random

    import accelerate
    from trl import DDPOConfig as TrlConfig
    from trl import DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    accelerate.PartialState(cpu=device == "cpu")  # trl 0.23.1 needs the state before its trainer (ENVIRONMENT.md)
    rng = random.Random(seed)
    s = setting
    cfg = TrlConfig(num_epochs=s["rounds"], seed=seed, log_with=None, mixed_precision="no", save_freq=10**9,
                    sample_num_steps=s["num_inference_steps"], sample_eta=SHARED["eta"],
                    sample_guidance_scale=SHARED["guidance_scale"], sample_batch_size=s["sample_batch_size"],
                    sample_num_batches_per_epoch=s["samples_per_round"] // s["sample_batch_size"],
                    train_batch_size=s["train_batch_size"], train_learning_rate=SHARED["learning_rate"],
                    train_gradient_accumulation_steps=SHARED["gradient_accumulation_steps"],
                    train_max_grad_norm=SHARED["max_grad_norm"], train_num_inner_epochs=SHARED["inner_epochs"],
                    train_adv_clip_max=SHARED["adv_clip_max"], train_clip_range=SHARED["clip_range"],
                    train_timestep_fraction=SHARED["timestep_fraction"],
                    per_prompt_stat_tracking=SHARED["per_prompt_stat_tracking"],
                    per_prompt_stat_tracking_buffer_size=SHARED["stat_buffer_size"],
                    per_prompt_stat_tracking_min_count=SHARED["stat_min_count"],
                    project_kwargs={"project_dir": str(Path(os.environ.get("TMPDIR", "/tmp")) / f"trl-ddpo-{os.getpid()}")})
    pipe = DefaultDDPOStableDiffusionPipeline(str(PIPELINE), use_lora=False)
    pipe.set_progress_bar_config(disable=True)
    run_trl.patched = patch_trl_nan(pipe.scheduler, s["num_inference_steps"])
    trainer = DDPOTrainer(cfg, reward, lambda: (rng.choice(prompts), {}), pipe)
    times, step, evals = [], 0, [evaluate(pipe.sd_pipeline, reward.model, setting, prompts)]
    for epoch in range(s["rounds"]):
        t0 = time.perf_counter()
        step = trainer.step(epoch, step)
        times.append(time.perf_counter() - t0)
        evals.append(evaluate(pipe.sd_pipeline, reward.model, setting, prompts))
    return times, [float("nan")] * len(times), evals


def worker(args) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    setting = json.loads(args.setting)
    prompts = bench_prompts(setting["n_prompts"])
    reward = RecordingReward(args.reward)
    t0 = time.perf_counter()
    if args.impl == "trl":
        times, kls, evals = run_trl(setting, reward, prompts, args.seed, args.device)
    else:
        times, kls, evals = run_ours(setting, reward, prompts, args.seed, args.kl_coef, args.device)
    n = setting["samples_per_round"]
    if len(reward.rewards) != n * setting["rounds"]:
        raise RuntimeError(f"{args.impl}: expected {n * setting['rounds']} reward queries, counted {len(reward.rewards)}")
    means = np.asarray(reward.rewards).reshape(setting["rounds"], n).mean(1)
    Path(args.result).write_text(json.dumps({
        "impl": args.impl, "reward": args.reward, "seed": args.seed, "kl_coef": args.kl_coef,
        "reward_mean": means.tolist(), "queries": [n * (r + 1) for r in range(setting["rounds"])], "eval_reward": evals,
        "round_s": times, "kl": kls, "reward_s": reward.seconds, "total_s": time.perf_counter() - t0,
        "peak_memory_mb": peak_memory_mb(), "trl_nan_patched": bool(getattr(run_trl, "patched", False))}))


def launch(impl: str, reward: str, seed: int, setting: dict, out: Path, device: str, kl_coef: float = 0.0) -> dict:
    tag = f"{impl}-{reward}-seed{seed}" + (f"-kl{kl_coef:g}" if kl_coef else "") + ("-trackkl" if setting.get("track_kl") else "")
    result = out / f"{tag}.json"
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--reward", reward, "--seed", str(seed),
           "--setting", json.dumps(setting), "--result", str(result), "--device", device, "--kl-coef", str(kl_coef)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{tag} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    print(f"  {tag}: {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(result.read_text())


def summarise(runs: list[dict], setting: dict) -> dict:
    """Per reward: mean curves over seeds (evaluation reward after each budget of training queries, and the
    on-policy reward of each round's samples), and ours ÷ trl for time and memory."""
    out = {}
    n = setting["samples_per_round"]
    for reward in REWARDS:
        by = {impl: [r for r in runs if r["reward"] == reward and r["impl"] == impl] for impl in ("ours", "trl")}
        if not by["ours"] or not by["trl"]:
            continue
        ev = {impl: np.array([r["eval_reward"] for r in rs]) for impl, rs in by.items()}
        on = {impl: np.array([r["reward_mean"] for r in rs]) for impl, rs in by.items()}
        diff = ev["ours"] - ev["trl"]                                   # paired by seed (same evaluation noise)
        k = len(diff)
        half = (stats.t.ppf(0.975, k - 1) * diff.std(0, ddof=1) / np.sqrt(k)) if k > 1 else np.full(diff.shape[1], np.nan)
        round_s = {impl: float(np.mean([np.mean(r["round_s"][1:] or r["round_s"]) for r in rs])) for impl, rs in by.items()}
        mem = {impl: float(np.mean([r["peak_memory_mb"] for r in rs])) for impl, rs in by.items()}
        out[reward] = {
            "eval_queries": [n * r for r in range(setting["rounds"] + 1)],
            "eval_ours": ev["ours"].mean(0).tolist(), "eval_trl": ev["trl"].mean(0).tolist(),
            "eval_ours_minus_trl": diff.mean(0).tolist(), "eval_ours_minus_trl_seed_std": diff.std(0).tolist(),
            "ours_ge_trl_at_every_budget": bool((diff.mean(0) >= 0).all()),
            "eval_ours_minus_trl_ci95": [[float(m - h), float(m + h)] for m, h in zip(diff.mean(0), half)],
            "ours_not_below_trl_at_any_budget": bool(k > 1 and (diff.mean(0) + half >= 0).all()),
            "n_seeds": k, "trl_nan_patched": any(r.get("trl_nan_patched", False) for r in by["trl"]),
            "onpolicy_queries": by["ours"][0]["queries"],
            "onpolicy_ours": on["ours"].mean(0).tolist(), "onpolicy_trl": on["trl"].mean(0).tolist(),
            "round_s": round_s, "query_s": {k: v / n for k, v in round_s.items()},
            "time_ratio": round_s["ours"] / round_s["trl"], "peak_memory_mb": mem,
            "memory_ratio": mem["ours"] / mem["trl"]}
    return out


def print_summary(summary: dict) -> None:
    setting = summary["setting"]
    for reward, s in summary["compare"].items():
        print(f"\n{reward} (mean over seeds {setting['seeds']}; rounds of {setting['samples_per_round']} queries)")
        print("  training queries     " + " ".join(f"{q:>8d}" for q in s["eval_queries"]))
        print("  eval reward, ours    " + " ".join(f"{v:8.4f}" for v in s["eval_ours"]))
        print("  eval reward, trl     " + " ".join(f"{v:8.4f}" for v in s["eval_trl"]))
        print("  ours − trl           " + " ".join(f"{v:+8.4f}" for v in s["eval_ours_minus_trl"]))
        print("  ± seed std           " + " ".join(f"{v:8.4f}" for v in s["eval_ours_minus_trl_seed_std"]))
        print("  on-policy, ours      " + " " * 9 + " ".join(f"{v:8.4f}" for v in s["onpolicy_ours"]))
        print("  on-policy, trl       " + " " * 9 + " ".join(f"{v:8.4f}" for v in s["onpolicy_trl"]))
        print("  95% CI (paired, t)   " + " ".join(f"[{lo:+.3f},{hi:+.3f}]" for lo, hi in s["eval_ours_minus_trl_ci95"]))
        print(f"  ours >= trl at every budget (eval, mean over {s['n_seeds']} seeds): {s['ours_ge_trl_at_every_budget']}; "
              f"never significantly below trl (CI upper >= 0 at every budget): {s['ours_not_below_trl_at_any_budget']}")
        if s["trl_nan_patched"]:
            print("  trl's DDIM step returned NaN here (diffusers #5969); its variance was shrunk by 1e-6 (patch_trl_nan)")
        print(f"  wall s/round ours {s['round_s']['ours']:.2f}, trl {s['round_s']['trl']:.2f}; s/query ours "
              f"{s['query_s']['ours']:.4f}, trl {s['query_s']['trl']:.4f}; ours/trl {s['time_ratio']:.3f}")
        print(f"  peak memory MB ours {s['peak_memory_mb']['ours']:.0f}, trl {s['peak_memory_mb']['trl']:.0f}; "
              f"ours/trl {s['memory_ratio']:.3f}")
    print("\nKL demonstration (ours, clip-score): eval reward after each round, and the mean per-step KL to the base")
    for d in summary["kl_demo"]:
        print(f"  λ={d['kl_coef']:<4g} eval reward " + " ".join(f"{v:.4f}" for v in d["eval_reward"]))
        print("         KL          " + " " * 7 + " ".join(f"{v:.2e}" for v in d["kl"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench" / "ddpo_vs_trl"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=("ours", "trl"))
    ap.add_argument("--reward")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting")
    ap.add_argument("--result")
    ap.add_argument("--kl-coef", type=float, default=0.0)
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds of the side-by-side runs (default: the profile's)")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("trl is not installed: `make install` puts trl==0.23.1 in the dev environment (the last release with DDPOTrainer)")
    if not (PIPELINE / "model_index.json").is_file():
        sys.exit(f"missing the shipped pipeline {PIPELINE}")
    setting = PROFILES[args.profile] | ({"seeds": args.seeds} if args.seeds else {})
    out = Path(args.out) / args.profile
    out.mkdir(parents=True, exist_ok=True)
    print(f"DDPO ours vs trl 0.23.1 — profile {args.profile}: {setting} + {SHARED}", flush=True)
    runs = []
    for reward in REWARDS:
        for seed in setting["seeds"]:
            for impl in ("trl", "ours"):
                runs.append(launch(impl, reward, seed, setting, out, args.device))
    # the KL demonstration: λ = 0 with the KL measured, and λ > 0, on the learned reward
    demo = [launch("ours", "clip-score", setting["seeds"][0], {**setting, "track_kl": True}, out, args.device, 0.0),
            launch("ours", "clip-score", setting["seeds"][0], setting, out, args.device, setting["kl_coef"])]
    summary = {"profile": args.profile, "setting": setting, "shared": SHARED, "compare": summarise(runs, setting),
               "kl_demo": [{k: d[k] for k in ("kl_coef", "eval_reward", "reward_mean", "kl", "queries")} for d in demo]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    print(f"\nwritten {out / 'summary.json'}")


if __name__ == "__main__":
    main()
