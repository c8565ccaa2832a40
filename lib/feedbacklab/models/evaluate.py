"""Quality tables of the tiny models, judged by the ShapesWorld oracle (``world.judge``)."""
from __future__ import annotations

import math
import numbers
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feedbacklab.models import data as wdata
from feedbacklab.models.registry import hardware, read_card, update_card

ATTRIBUTES = ("count", "color", "shape", "background", "relation")


def eval_prompts(n: int, seed: int = 777, unseen_share: float = 1 / 3) -> list[tuple[str, str]]:
    """``n`` (split, prompt) pairs: seen prompts in the training family mix, plus held-out ("unseen") ones."""
    from feedbacklab import world

    n_unseen = int(round(n * unseen_share))
    seen = wdata.sample_specs(n - n_unseen, seed=seed, split="seen")
    unseen = wdata.sample_specs(n_unseen, seed=seed + 1, split="unseen")
    return [("seen", world.prompt(s)) for s in seen] + [("unseen", world.prompt(s)) for s in unseen]


def judge_table(prompts: Sequence[str], images: np.ndarray) -> dict[str, Any]:
    """Oracle table for generated ``images`` (uint8 N×H×W×3): per-attribute accuracy, all-right and artifact rates."""
    from feedbacklab import world

    if len(prompts) != len(images) or not len(prompts):
        raise ValueError(f"need equally many (>0) prompts and images, got {len(prompts)} and {len(images)}")
    js = [world.judge(p, im) for p, im in zip(prompts, images)]
    table: dict[str, Any] = {"n": len(js)}
    for attr in ATTRIBUTES:
        vals = [j.attributes[attr] for j in js if attr in j.attributes]
        if vals:
            table[f"{attr}_acc"] = round(float(np.mean(vals)), 4)
    table["all_right"] = round(float(np.mean([j.aligned for j in js])), 4)
    table["artifact_rate"] = round(float(np.mean([len(j.artifact_points) > 0 for j in js])), 4)
    table["plausibility_mean"] = round(float(np.mean([j.plausibility for j in js])), 4)
    table["aesthetics_mean"] = round(float(np.mean([j.aesthetics for j in js])), 4)
    fams = [world.parse(p).family for p in prompts]
    for fam in dict.fromkeys(fams):
        table[f"all_right_{fam}"] = round(float(np.mean([j.aligned for j, f in zip(js, fams) if f == fam])), 4)
    return table


def evaluate_generator(pipe, n: int = 600, guidance_scale: float = 4.0, num_inference_steps: int = 20,
                       seed: int = 0, batch_size: int = 50) -> dict[str, Any]:
    """Sample ``n`` seen + unseen prompts (one image each) and judge them; returns tables by split, timings."""
    from feedbacklab.models.generator import generate

    pairs = eval_prompts(n, seed=seed + 777)
    prompts = [p for _, p in pairs]
    t0 = time.time()
    images = generate(pipe, prompts, guidance_scale=guidance_scale, num_inference_steps=num_inference_steps,
                      seed=seed, batch_size=batch_size)
    sample_s = time.time() - t0
    out: dict[str, Any] = {"guidance_scale": guidance_scale, "num_inference_steps": num_inference_steps,
                           "scheduler": type(pipe.scheduler).__name__, "seed": seed,
                           "sampling_wall_s": round(sample_s, 1), "images_per_s": round(len(prompts) / sample_s, 1),
                           "hardware": hardware()}
    for split in ("seen", "unseen"):
        idx = [i for i, (s, _) in enumerate(pairs) if s == split]
        out[split] = judge_table([prompts[i] for i in idx], images[idx])
    out["_images"], out["_prompts"], out["_splits"] = images, prompts, [s for s, _ in pairs]
    return out


def rendered_retrieval(clip, n: int = 500, seed: int = 4242, split: str = "seen", corrupt: bool = False) -> dict:
    """CLIP retrieval (true prompt vs its contrastive prompts) on fresh renders, optionally corrupted."""
    from feedbacklab import world
    from feedbacklab.models.clip import corrupt_image, retrieval_accuracy

    specs = wdata.sample_specs(n, seed=seed, split=split)
    arrays, scenes = wdata.render_specs(specs, size=64, seed=seed)
    if corrupt:
        rng = random.Random(seed)
        arrays = np.stack([corrupt_image(a, s, rng) for a, s in zip(arrays, scenes)])
    return retrieval_accuracy(clip, [world.prompt(s) for s in specs], wdata.to_tensor(arrays))


def generated_retrieval(clip, prompts: Sequence[str], images: np.ndarray) -> dict[str, Any]:
    """CLIP retrieval on generated images the oracle judges aligned (there the prompt is the truth)."""
    from feedbacklab import world
    from feedbacklab.models.clip import retrieval_accuracy

    keep = [i for i, (p, im) in enumerate(zip(prompts, images)) if world.judge(p, im).aligned]
    if not keep:
        return {"n": 0}
    return retrieval_accuracy(clip, [prompts[i] for i in keep], wdata.to_tensor(images[keep]))


def evaluate_shipped_generator(out_dir: str | Path, clip_dir: str | Path | None = None, n: int = 600,
                               guidance_scale: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Evaluate the pipeline in ``out_dir`` (and a CLIP on its samples); record the tables in the cards."""
    from feedbacklab.models.generator import load_pipeline

    torch.manual_seed(seed)
    g = guidance_scale if guidance_scale is not None else read_card(out_dir).get("quality", {}).get("guidance_scale", 4.0)
    res = evaluate_generator(load_pipeline(out_dir), n=n, guidance_scale=g, seed=seed)
    images, prompts = res.pop("_images"), res.pop("_prompts")
    res.pop("_splits")
    update_card(out_dir, quality=res)
    if clip_dir is not None:
        from feedbacklab.models import load_clip

        clip = load_clip(clip_dir, device="cpu")
        gen = generated_retrieval(clip, prompts, images)
        card = read_card(clip_dir)
        update_card(clip_dir, retrieval={**card.get("retrieval", {}),
                                         f"generated_oracle_aligned_{Path(out_dir).name}": gen})
        res["clip_generated_retrieval"] = gen
    return res


def evaluate_shipped_clip(clip_dir: str | Path, n: int = 500, seed: int = 4242) -> dict[str, Any]:
    """Retrieval on fresh seen, unseen and corrupted renders; recorded in the CLIP card under ``retrieval``."""
    from feedbacklab.models import load_clip

    clip = load_clip(clip_dir, device="cpu")
    res = {"rendered_seen": rendered_retrieval(clip, n, seed, "seen"),
           "rendered_unseen": rendered_retrieval(clip, n, seed + 1, "unseen"),
           "corrupted_seen": rendered_retrieval(clip, n, seed + 2, "seen", corrupt=True)}
    update_card(clip_dir, retrieval={**read_card(clip_dir).get("retrieval", {}), **res})
    return res


def flatten(tables: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested tables → flat ``{prefix_key_subkey: number}`` for metrics.json; non-numbers and NaN are dropped."""
    flat: dict[str, float] = {}
    for key, value in tables.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            flat[name] = float(value)
    return flat


def _fmt_table(rows: dict[str, dict[str, Any]], keys: Sequence[str]) -> list[str]:
    """Markdown table: one row per entry of ``rows``, one column per key (numbers to 2 decimals)."""
    lines = ["| | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, row in rows.items():
        cells = [f"{row[k]:.2f}" if isinstance(row.get(k), float) else str(row.get(k, "–")) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def models_readme(root: str | Path | None = None) -> str:
    """``data/models/README.md`` text: what is shipped, how to load it, and the quality tables from the cards."""
    from feedbacklab.models.registry import models_dir

    root = Path(root) if root is not None else models_dir()
    out = ["# Shipped tiny base models", "",
           "Trained on ShapesWorld (seen split only) by `scripts/pretrain.py` / notebook 01; each directory has a",
           "`card.json` with config, data spec, steps, wall time, hardware and quality tables. Load with",
           "`feedbacklab.models.load_generator / load_clip / load_captioner(name)`.", ""]
    out += _training_lines(root)
    sd = read_card(root / "shapes-sd")
    if sd:
        out += ["## shapes-sd — `diffusers.StableDiffusionPipeline`", "",
                "`StableDiffusionPipeline.from_pretrained(\"data/models/shapes-sd\")`; "
                "`pipe(prompt, num_inference_steps=20, guidance_scale=g, height=64, width=64)`.", ""]
        q = sd.get("quality")
        if q:
            out += [f"Oracle (`world.judge`) on {q['seen']['n']} seen + {q['unseen']['n']} unseen prompts, "
                    f"{q['num_inference_steps']} DDIM steps, guidance {q['guidance_scale']}, {q['hardware']}:", ""]
            out += _fmt_table({"seen": q["seen"], "unseen": q["unseen"]},
                              ["count_acc", "color_acc", "shape_acc", "background_acc", "relation_acc", "all_right",
                               "artifact_rate"]) + [""]
    noisy = read_card(root / "shapes-sd-noisy-counts")
    if noisy:
        t = noisy.get("noisy_caption_training", {})
        out += ["## shapes-sd-noisy-counts — `shapes-sd` after web-like captions", "",
                f"`shapes-sd` trained {t.get('steps')} more steps (same recipe, lr {t.get('lr')}) on renders whose "
                f"attribute captions state a wrong count with probability {t.get('wrong_count_probability')} "
                "(`feedbacklab.models.noisy_captions`): count errors that come from the data, as Stable Diffusion's do.", ""]
        q = noisy.get("quality")
        if q:
            out += _fmt_table({"seen": q["seen"], "unseen": q["unseen"]},
                              ["count_acc", "color_acc", "shape_acc", "background_acc", "relation_acc", "all_right",
                               "artifact_rate"]) + [""]
    clip = read_card(root / "shapes-clip")
    if clip:
        out += ["## shapes-clip — OpenCLIP custom config", "", f"Load: {clip.get('load', '')}", "",
                "Retrieval: true prompt vs its one-attribute edits (`world.contrastive_specs`), per changed attribute:", ""]
        out += _fmt_table(clip.get("retrieval", {}), ["all", "count", "color", "shape", "background", "relation", "n"])
        out += [""]
    caps = {n: read_card(root / n) for n in ("shapes-captioner", "shapes-captioner-crop")}
    if any(caps.values()):
        out += ["## shapes-captioner, shapes-captioner-crop — `VisionEncoderDecoderModel` (ViT → GPT-2)", "",
                "Identical training except augmentation (`-crop`: random crops, full-scene captions kept).",
                "Hallucination judged against the true scene:", ""]
        rows = {f"{n} ({split})": c["hallucination"][split] for n, c in caps.items() if c
                for split in c.get("hallucination", {})}
        out += _fmt_table(rows, ["response_level", "mention_level", "coverage", "count_error", "n"]) + [""]
    out += _benchmark_lines(root)
    return "\n".join(out) + "\n"


def _training_lines(root: Path) -> list[str]:
    """README section: every card's recorded training stage (steps, data, wall time, hardware)."""
    from feedbacklab.models.reproduce import training_table

    rows = training_table(root)
    if not rows:
        return []
    cols = ["model", "stage", "steps", "batch_size", "n_images", "lr", "wall_s", "hardware"]
    lines = ["## Training record", "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return lines + [""]


def _benchmark_lines(root: Path) -> list[str]:
    """README section: the throughput figures recorded in the cards' ``benchmarks`` entries."""
    from feedbacklab.models.registry import SHIPPED

    benches = {n: b for n in SHIPPED if (b := read_card(root / n).get("benchmarks"))}
    if not benches:
        return []
    lines = ["## Throughput", ""]
    for setup in dict.fromkeys((b["command"], b["hardware"], b.get("note", "")) for b in benches.values()):
        lines += [f"`{setup[0]}` on {setup[1]}" + (f" ({setup[2]})" if setup[2] else "") + ":", ""]
    lines += ["| model | what | images/s | setup |", "|---|---|---|---|"]
    lines += [f"| {n} | {r['what']} | {r['images_per_s']:.1f} | {r['setup']} |"
              for n, b in benches.items() for r in b["results"]]
    return lines + [""]
