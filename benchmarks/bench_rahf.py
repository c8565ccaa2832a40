"""Training and prediction throughput of RAHF (both variants) and the CNN baseline, in images/s.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_rahf.py [--images 256] [--batch 32] [--repeats 2] [--device cpu]
Images are ShapesWorld renders labelled by a 3-annotator panel (``consolidate_rich``). Training figures are
optimiser steps on cached frozen-ViT features (as ``fit_rich_model`` runs them); prediction includes the
ViT, every head and the constrained keyword decoding. Each figure is the best of ``--repeats`` timed passes
after one warm-up pass.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads its thread pool

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from feedbacklab import world  # noqa: E402
from feedbacklab.evaluation import eval_prompts  # noqa: E402
from feedbacklab.feedback import consolidate_rich, make_panel  # noqa: E402
from feedbacklab.models.data import to_tensor  # noqa: E402
from feedbacklab.models.rahf import RichTrainConfig, build_rahf, rich_loss, rich_targets  # noqa: E402
from feedbacklab.models.rich_cnn import RichCNN  # noqa: E402


def labelled_renders(n: int, seed: int = 0):
    prompts = [p for f in ("attribute", "composition", "spatial") for p in eval_prompts(n // 3 + 1, seed=seed, family=f)][:n]
    panel = make_panel(3, seed=seed)
    images, labels = [], []
    for i, p in enumerate(prompts):
        img = world.render(world.parse(p), seed=i)[0]
        images.append(img)
        labels += consolidate_rich(panel.rich(world.judge(p, img), f"bench-{i}"))
    return to_tensor(np.stack(images)), labels


def best_rate(fn, repeats: int) -> float:
    fn()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cnn", default="resnet18", help="torchvision ResNet of the CNN baseline")
    args = ap.parse_args()
    torch.manual_seed(0)
    images, labels = labelled_renders(args.images)
    prompts = [lab.prompt for lab in labels]
    targets = rich_targets(labels, args.device)
    cfg = RichTrainConfig()
    models = {v: build_rahf(v, prompts, device=args.device) for v in ("multi-head", "augmented-prompt")}
    models[f"cnn-{args.cnn}"] = RichCNN(args.cnn, map_size=images.shape[-1]).to(args.device)
    print(f"{'model':<18} {'trainable params':>16} {'train img/s':>12} {'predict img/s':>14}")
    for name, model in models.items():
        feats = torch.cat([model.features(images[i : i + 128].to(args.device)) for i in range(0, len(images), 128)])
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def train() -> int:
            model.train()
            for s in range(0, len(labels), args.batch):
                idx = torch.arange(s, min(len(labels), s + args.batch))
                rows = idx.tolist()
                out = model(feats[idx], [prompts[i] for i in rows], [targets["tokens"][i] for i in rows],
                            [targets["keywords"][i] for i in rows])
                loss, _ = rich_loss(out, targets, idx, cfg)
                opt.zero_grad()
                loss.backward()
                opt.step()
            return len(labels)

        def predict() -> int:
            model.predict(images, prompts, batch_size=64)
            return len(labels)

        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"{name:<18} {n_params:>16,} {best_rate(train, args.repeats):>12.1f} {best_rate(predict, args.repeats):>14.1f}",
              flush=True)


if __name__ == "__main__":
    main()
