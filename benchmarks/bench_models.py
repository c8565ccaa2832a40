"""Throughput of the shipped tiny models: sampling, UNet training, CLIP scoring, captioning, the oracle on samples.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_models.py [--threads 1] [--repeats 3] [--device cpu]
                                                             [--record [--note TEXT]]
Each figure is the best of ``--repeats`` timed passes after one warm-up pass, in images/s:
  sampling   shapes-sd pipeline, batch 16, 20 DDIM steps, classifier-free guidance at the card's scale
  training   UNet + text encoder training steps (batch 64, cached latents, EMA), as in pretrain_unet
  scoring    shapes-clip similarity of 64 (prompt, image) pairs per call (text and image towers)
  captioning greedy captions of 64 renders per call, each captioner
  oracle     world.judge on the generated images (one at a time)
``--record`` writes the figures, the machine and this command into each card's ``benchmarks`` entry
and regenerates data/models/README.md.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads its thread pool

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import date  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from feedbacklab import world  # noqa: E402
from feedbacklab.models import load_captioner, load_clip, load_generator, models_dir  # noqa: E402
from feedbacklab.models import data as wdata  # noqa: E402
from feedbacklab.models.evaluate import eval_prompts, models_readme  # noqa: E402
from feedbacklab.models.generator import generate, prepare_latents, train_unet  # noqa: E402
from feedbacklab.models.registry import hardware, read_card, update_card  # noqa: E402


def best_rate(fn: Callable[[int], int], repeats: int) -> float:
    """Images/s of ``fn(pass_index) -> images done``: one warm-up pass, then the best of ``repeats`` passes."""
    fn(0)
    best = 0.0
    for i in range(1, repeats + 1):
        t0 = time.perf_counter()
        n = fn(i)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def bench_generator(device: str, repeats: int, batch: int = 16, steps: int = 20, train_batch: int = 64,
                    train_steps: int = 10) -> list[dict]:
    """Sampling, oracle-on-samples and UNet training throughput of shapes-sd."""
    guidance = read_card(models_dir() / "shapes-sd")["quality"]["guidance_scale"]
    pipe = load_generator("shapes-sd", device=device)
    prompts = [p for _, p in eval_prompts(batch * (repeats + 1), seed=5)]
    samples: list[np.ndarray] = []

    def sample(i: int) -> int:
        samples.append(generate(pipe, prompts[i * batch:(i + 1) * batch], guidance_scale=guidance,
                                num_inference_steps=steps, seed=i, batch_size=batch))
        return batch

    rows = [{"what": "sampling", "images_per_s": best_rate(sample, repeats),
             "setup": f"batch {batch}, {steps} DDIM steps, CFG guidance {guidance}, 64 px, fp32"}]
    images = np.concatenate(samples)

    def judge_all(i: int) -> int:
        for p, im in zip(prompts, images):
            world.judge(p, im)
        return len(images)

    rows.append({"what": "oracle on generated images", "images_per_s": best_rate(judge_all, repeats),
                 "setup": f"world.judge, one image at a time, {len(images)} shapes-sd samples"})
    train_pipe = load_generator("shapes-sd", device="cpu")  # the training functions run on CPU
    data = prepare_latents(train_pipe, 1024, seed=0, cache=None, log=lambda m: None)

    def train(i: int) -> int:
        return train_batch * train_unet(train_pipe, data, steps=train_steps, batch_size=train_batch, seed=i,
                                        log=lambda m: None).step

    rows.append({"what": "UNet + text encoder training (CPU)", "images_per_s": best_rate(train, repeats),
                 "setup": f"batch {train_batch}, {train_steps} steps per pass, cached latents, AdamW + EMA, fp32"})
    return rows


def bench_clip(device: str, repeats: int, batch: int = 64) -> list[dict]:
    """shapes-clip scoring: cosine similarity of ``batch`` (prompt, image) pairs per call."""
    clip = load_clip("shapes-clip", device=device)
    specs = wdata.sample_specs(batch, seed=11)
    images = wdata.to_tensor(wdata.render_specs(specs, size=64, seed=11)[0])
    prompts = [world.prompt(s) for s in specs]
    rate = best_rate(lambda i: len(clip.similarity(prompts, images)), repeats)
    return [{"what": "scoring", "images_per_s": rate, "setup": f"batch {batch} (prompt, image) pairs, both towers"}]


def bench_captioner(name: str, device: str, repeats: int, batch: int = 64) -> list[dict]:
    """Greedy captioning of ``batch`` renders per call."""
    cap = load_captioner(name, device=device)
    images = wdata.to_tensor(wdata.render_specs(wdata.sample_specs(batch, seed=12), size=64, seed=12)[0])
    rate = best_rate(lambda i: len(cap.caption(images, batch_size=batch)), repeats)
    return [{"what": "captioning", "images_per_s": rate, "setup": f"batch {batch}, greedy, up to 20 tokens"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per figure (best is kept)")
    parser.add_argument("--device", default="cpu", help="sampling/scoring device; training runs on CPU")
    parser.add_argument("--record", action="store_true", help="write the figures into the cards and README")
    parser.add_argument("--note", default="", help="with --record: a remark on the machine (e.g. shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict[str, list[dict]] = {}
    results["shapes-sd"] = bench_generator(args.device, args.repeats)
    results["shapes-clip"] = bench_clip(args.device, args.repeats)
    for name in ("shapes-captioner", "shapes-captioner-crop"):
        results[name] = bench_captioner(name, args.device, args.repeats)
    machine = hardware() + ("" if args.device == "cpu" else f", device {args.device}")
    print(f"# {machine}")
    for name, rows in results.items():
        for r in rows:
            print(f"{name:22s} {r['what']:30s} {r['images_per_s']:9.1f} images/s  ({r['setup']})")
    if args.record:
        command = (f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} python benchmarks/bench_models.py "
                   f"--threads {args.threads} --repeats {args.repeats} --device {args.device} --record")
        for name, rows in results.items():
            update_card(models_dir() / name, benchmarks={
                "command": command, "hardware": machine, "date": date.today().isoformat(), "note": args.note,
                "results": [{**r, "images_per_s": round(r["images_per_s"], 1)} for r in rows]})
        (models_dir() / "README.md").write_text(models_readme())
        print(f"recorded in the cards and {models_dir() / 'README.md'}")


if __name__ == "__main__":
    main()
