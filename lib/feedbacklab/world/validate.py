"""Validation of the oracle against the renderer's ground truth, as long-format pandas tables.

Every table has the columns ``table, corruption, strength, family, attribute, metric, value, n``:

- ``clean_accuracy``: on clean renders, judged against the true prompt (every attribute should be
  right) and against one random contrastive prompt (exactly the changed attribute should be wrong);
  plus perception accuracy (count, background, object colours+shapes, centre error) and the
  false-artifact rate.
- ``photometric_robustness``: the same attribute accuracy under noise / blur / jpeg / color_jitter
  at each strength, plus the false-artifact rate.
- ``artifact_detection``: precision and recall of artifact detection per artifact kind and strength;
  a detection matches a true artifact when its centre lies in the true bbox grown by
  MATCH_MARGIN * size px (or the true centre lies in its bbox). "any kind" ignores the kind label.
- ``alignment_detection``: extra / missing object -> count judged wrong; wrong colour -> colour wrong.

`oracle_validation` runs all four; `breaking_strength` reads off where accuracy first drops.
"""
from __future__ import annotations

import random

import numpy as np
import pandas as pd

from . import corrupt
from .grammar import FAMILIES, Spec, contrastive_specs, prompt, sample_spec
from .oracle import judge_reading
from .perception import read
from .renderer import render
from .scene import Artifact, Scene

MATCH_MARGIN = 0.05
COLUMNS = ["table", "corruption", "strength", "family", "attribute", "metric", "value", "n"]
STRENGTHS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
ARTIFACT_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _cases(n: int, size: int, seed: int) -> list[tuple[Spec, np.ndarray, Scene, tuple[str, Spec]]]:
    """n (spec, image, true scene, (changed attribute, contrastive spec)) with families cycled, split 'any'."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        spec = sample_spec(rng, FAMILIES[i % len(FAMILIES)], split="any")
        image, scene = render(spec, size=size, seed=seed * 1_000_003 + i)
        out.append((spec, image, scene, rng.choice(contrastive_specs(spec))))
    return out


def _attribute_rows(records: list[dict], table: str, corruption: str, strength: float) -> list[dict]:
    """Accuracy rows per (family, attribute, prompt kind) from per-judgement correctness records."""
    df = pd.DataFrame(records)
    rows = []
    for (family, attribute, kind), grp in df.groupby(["family", "attribute", "prompt"]):
        rows.append(dict(table=table, corruption=corruption, strength=strength, family=family,
                         attribute=attribute, metric=f"accuracy_{kind}", value=float(grp.correct.mean()),
                         n=len(grp)))
    for kind, grp in df.groupby("prompt"):
        rows.append(dict(table=table, corruption=corruption, strength=strength, family="all",
                         attribute="all", metric=f"accuracy_{kind}", value=float(grp.correct.mean()),
                         n=len(grp)))
    return rows


def _judge_records(spec: Spec, contrast: tuple[str, Spec], reading) -> list[dict]:
    """Per-attribute correctness of the true and the contrastive prompt's judgement."""
    records = []
    for kind, (changed, other) in (("true", (None, spec)), ("contrastive", contrast)):
        j = judge_reading(prompt(other), reading)
        for attr, verdict in j.attributes.items():
            records.append(dict(family=spec.family, attribute=attr, prompt=kind,
                                correct=verdict == (attr != changed)))
    return records


def _perception_rows(truth: list[Scene], seen: list[Scene], size: int, corruption: str,
                     strength: float, table: str) -> list[dict]:
    """Count / background / object multiset accuracy, centre error and false-artifact rate."""
    count = np.mean([len(t.objects) == len(p.objects) for t, p in zip(truth, seen)])
    bg = np.mean([t.background == p.background for t, p in zip(truth, seen)])
    objs = np.mean([sorted((o.color, o.shape) for o in t.objects) == sorted((o.color, o.shape) for o in p.objects)
                    for t, p in zip(truth, seen)])
    errors = [_centre_error(t, p) for t, p in zip(truth, seen)]
    errors = [e for e in errors if e is not None]
    false_art = np.mean([len(p.artifacts) > 0 for p in seen])
    base = dict(table=table, corruption=corruption, strength=strength, family="all", n=len(truth))
    return [dict(base, attribute="count", metric="perception_accuracy", value=float(count)),
            dict(base, attribute="background", metric="perception_accuracy", value=float(bg)),
            dict(base, attribute="objects", metric="perception_accuracy", value=float(objs)),
            dict(base, attribute="center", metric="mean_error_px",
                 value=float(np.mean(errors)) if errors else float("nan")),
            dict(base, attribute="artifacts", metric="false_artifact_rate", value=float(false_art))]


def _centre_error(truth: Scene, seen: Scene) -> float | None:
    """Mean distance from each true object to the nearest perceived one of the same colour and shape."""
    d = []
    for o in truth.objects:
        same = [p.center for p in seen.objects if (p.color, p.shape) == (o.color, o.shape)]
        if same:
            d.append(min(np.hypot(o.center[0] - c[0], o.center[1] - c[1]) for c in same))
    return float(np.mean(d)) if d else None


def clean_accuracy(n: int = 2000, size: int = 64, seed: int = 0) -> pd.DataFrame:
    """Oracle accuracy on n clean renders: attribute judgements (true and contrastive prompts), perception."""
    cases = _cases(n, size, seed)
    records, truth, seen = [], [], []
    for spec, image, scene, contrast in cases:
        reading = read(image)
        records += _judge_records(spec, contrast, reading)
        truth.append(scene)
        seen.append(reading.scene)
    rows = _attribute_rows(records, "clean", "none", 0.0)
    rows += _perception_rows(truth, seen, size, "none", 0.0, "clean")
    return pd.DataFrame(rows, columns=COLUMNS)


def photometric_robustness(n: int = 500, size: int = 64, seed: int = 1,
                           strengths: tuple[float, ...] = STRENGTHS) -> pd.DataFrame:
    """Attribute accuracy and perception under each photometric corruption at each strength."""
    cases = _cases(n, size, seed)
    rows = []
    for kind in corrupt.PHOTOMETRIC:
        for strength in strengths:
            records, truth, seen = [], [], []
            for i, (spec, image, scene, contrast) in enumerate(cases):
                out, _ = corrupt.apply(kind, image, scene, np.random.default_rng([seed, i]), strength)
                reading = read(out)
                records += _judge_records(spec, contrast, reading)
                truth.append(scene)
                seen.append(reading.scene)
            rows += _attribute_rows(records, "photometric", kind, strength)
            rows += _perception_rows(truth, seen, size, kind, strength, "photometric")
    return pd.DataFrame(rows, columns=COLUMNS)


def _hit(found: Artifact, true: Artifact, margin: float) -> bool:
    x0, y0, x1, y1 = true.bbox
    fx, fy = found.center
    tx, ty = true.center
    gx0, gy0, gx1, gy1 = found.bbox
    return (x0 - margin <= fx <= x1 + margin and y0 - margin <= fy <= y1 + margin) or \
        (gx0 <= tx <= gx1 and gy0 <= ty <= gy1)


def artifact_detection(n: int = 500, size: int = 64, seed: int = 2,
                       strengths: tuple[float, ...] = ARTIFACT_STRENGTHS) -> pd.DataFrame:
    """Precision / recall of artifact detection per kind and strength (kind-specific and 'any kind')."""
    cases = _cases(n, size, seed)
    margin = MATCH_MARGIN * size
    rows = []
    for kind in corrupt.ARTIFACT_KINDS:
        for strength in strengths:
            tp = {"same": 0, "any": 0}
            found_ok = {"same": 0, "any": 0}
            n_found = n_true = 0
            for i, (_, image, scene, _) in enumerate(cases):
                out, gt = corrupt.apply(kind, image, scene, np.random.default_rng([seed, i]), strength)
                found = read(out).scene.artifacts
                n_found += len(found)
                n_true += len(gt.artifacts)
                for mode in ("same", "any"):
                    ok = lambda f, t: _hit(f, t, margin) and (mode == "any" or f.kind == t.kind)  # noqa: E731
                    tp[mode] += sum(any(ok(f, t) for f in found) for t in gt.artifacts)
                    found_ok[mode] += sum(any(ok(f, t) for t in gt.artifacts) for f in found)
            base = dict(table="artifacts", corruption=kind, strength=strength, family="all")
            for mode, label in (("same", kind), ("any", "any kind")):
                rows.append(dict(base, attribute=label, metric="recall", value=tp[mode] / max(n_true, 1),
                                 n=n_true))
                rows.append(dict(base, attribute=label, metric="precision",
                                 value=found_ok[mode] / n_found if n_found else float("nan"), n=n_found))
    return pd.DataFrame(rows, columns=COLUMNS)


def alignment_detection(n: int = 500, size: int = 64, seed: int = 3) -> pd.DataFrame:
    """Share of extra / missing / recoloured-object images whose broken attribute the oracle flags."""
    cases = _cases(n, size, seed)
    expect = {"extra_object": "count", "missing_object": "count", "wrong_color": "color"}
    rows = []
    for kind, attr in expect.items():
        hits = []
        for i, (spec, image, scene, _) in enumerate(cases):
            out, _ = corrupt.apply(kind, image, scene, np.random.default_rng([seed, i]))
            j = judge_reading(prompt(spec), read(out))
            hits.append(not j.attributes[attr] and not j.aligned)
        rows.append(dict(table="alignment", corruption=kind, strength=0.5, family="all", attribute=attr,
                         metric="detected", value=float(np.mean(hits)), n=len(hits)))
    return pd.DataFrame(rows, columns=COLUMNS)


def oracle_validation(n: int = 2000, size: int = 64, seed: int = 0, n_corrupt: int | None = None
                      ) -> pd.DataFrame:
    """All validation tables in one long DataFrame: n clean images, n_corrupt (default n // 4) per cell."""
    m = n_corrupt if n_corrupt is not None else max(n // 4, 1)
    return pd.concat([clean_accuracy(n, size, seed), photometric_robustness(m, size, seed + 1),
                      artifact_detection(m, size, seed + 2), alignment_detection(m, size, seed + 3)],
                     ignore_index=True)


def breaking_strength(table: pd.DataFrame, min_value: float = 0.99, metric: str = "accuracy_true"
                      ) -> pd.Series:
    """Per corruption, the lowest strength where the overall `metric` falls below `min_value` (NaN: never)."""
    rows = table[(table.metric == metric) & (table.family == "all") & (table.attribute == "all")]
    out = {}
    for kind, grp in rows.groupby("corruption"):
        bad = grp[grp.value < min_value].strength
        out[kind] = float(bad.min()) if len(bad) else float("nan")
    return pd.Series(out, name=f"{metric}<{min_value}")
