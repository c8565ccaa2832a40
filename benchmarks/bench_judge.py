"""Throughput of ShapesWorld on one core: render and judge images/s (target: judge >= 500/s at 64 px).

Usage: python benchmarks/bench_judge.py [--n 2000] [--sizes 64 32]
Images are a mix of the three prompt families; half are clean, half carry a random corruption, so
the judge sees artifacts and denoising paths too. Prints one line per (stage, size).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, set before numpy loads its BLAS

import argparse  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from feedbacklab import world  # noqa: E402
from feedbacklab.world import corrupt  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="images per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 32])
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed passes")
    args = parser.parse_args()
    rng = random.Random(0)
    specs = [world.sample_spec(rng, world.FAMILIES[i % 3], split="any") for i in range(args.n)]
    prompts = [world.prompt(s) for s in specs]
    for size in args.sizes:
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rendered = [world.render(s, size=size, seed=i) for i, s in enumerate(specs)]
            best = min(best, time.perf_counter() - t0)
        print(f"render  {size:3d}px  {args.n / best:8.0f} images/s")
        images = []
        for i, (image, scene) in enumerate(rendered):
            if i % 2:
                kind = corrupt.KINDS[i // 2 % len(corrupt.KINDS)]
                image, _ = corrupt.apply(kind, image, scene, np.random.default_rng(i), 0.5)
            images.append(image)
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for text, image in zip(prompts, images):
                world.judge(text, image)
            best = min(best, time.perf_counter() - t0)
        print(f"judge   {size:3d}px  {args.n / best:8.0f} images/s  (half corrupted)")
        t0 = time.perf_counter()
        for text, image in zip(prompts, images[::2]):
            world.judge(text, image)
        print(f"judge   {size:3d}px  {len(images[::2]) / (time.perf_counter() - t0):8.0f} images/s  (clean only)")


if __name__ == "__main__":
    main()
