"""Explore bundles: what the inspection widgets show, checked in memory and stored on disk.

A notebook that produces images with scores or rich feedback saves a bundle at the end of the relevant section
(``<output_dir>/explore``); ``notebooks/90_explore.ipynb`` loads it into a widget. Two kinds, which may share a
directory. Each is one compressed ``.npz`` (arrays; read with ``allow_pickle=False``) and a JSON sidecar
(everything else) written last, so a directory with the sidecar holds a complete bundle.

**Best-of-n** (``BestOfNBrowser``): ``best_of_n.npz`` + ``best_of_n.json``

==============  =======================================================================================
npz key         content
==============  =======================================================================================
images          uint8 (N, H, W, 3), grouped by prompt, each group in its sampling (seed) order
score_<k>       float64 (N,): the k-th reward's scores, k = 0.. in the sidecar's ``rewards`` order
verdict         bool (N,), only when ``has_verdict``: the oracle's (or the annotators' majority) verdict
==============  =======================================================================================

sidecar: ``{"kind": "best_of_n", "version": 1, "n_items": N, "prompts": [N str], "rewards": [names],
"has_verdict": bool, "groups": [N int|str] or null (null: consecutive equal prompts form a group), "meta": {}}``

**Rich feedback** (``HeatmapInspector``): ``rich.npz`` + ``rich.json``

======================  ===============================================================================
npz key                 content
======================  ===============================================================================
images                  uint8 (N, H, W, 3)
label_heatmap_<kind>    float32 (N, H, W) in [0, 1]: the consolidated maps, kind in ``MAP_KINDS``
pred_heatmap_<kind>     float32 (N, H, W): predicted maps (only the kinds that were predicted)
pred_score_<aspect>     float64 (N,): predicted scores (only the aspects that were predicted)
======================  ===============================================================================

sidecar: ``{"kind": "rich", "version": 1, "n_items": N, "labels": [{"item_id", "prompt", "tokens", "keywords",
"scores": {aspect: float}, "extra": {}} ...], "predictions": null or {"heatmaps": [kinds], "scores": [aspects],
"keywords": [[0/1 per token] per item] or null}, "raw_points": null or [[PointAnnotation.to_dict() ...] per item],
"meta": {}}``. ``extra`` and ``meta`` must be JSON-serialisable.

Predictions follow ``RAHF.predict``: ``{"heatmaps": {kind: (N, H, W)}, "scores": (N, 4) in ``SCORE_ASPECTS`` order
or {aspect: (N,)}, "keywords": [per-token 0/1 per item] or None}``; any key may be missing.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from feedbacklab.feedback.records import SCORE_ASPECTS, PointAnnotation, Record
from feedbacklab.feedback.rich import MAP_KINDS, RichLabel

BUNDLE_VERSION = 1
BEST_OF_N_NAME = "best_of_n"
RICH_NAME = "rich"
PREDICTION_KEYS = ("heatmaps", "scores", "keywords")


class BundleError(ValueError):
    """An explore bundle on disk is missing, incomplete or of another format; the message names the file."""


# ----------------------------------------------------------------------------- in memory


@dataclass
class BestOfNBundle:
    """Images grouped by prompt with every reward's scores (see the module docstring)."""

    prompts: list[str]
    images: np.ndarray                      # uint8 (N, H, W, 3)
    scores: dict[str, np.ndarray]           # reward name -> float (N,)
    verdict: np.ndarray | None = None       # bool (N,)
    groups: list | None = None              # N group ids (int or str); None: consecutive equal prompts
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RichBundle:
    """Images with consolidated rich labels, optional predictions and each annotator's points."""

    images: np.ndarray                      # uint8 (N, H, W, 3)
    labels: list[RichLabel]
    predictions: dict[str, Any] | None = None             # normalised as check_predictions returns it
    raw_points: list[list[PointAnnotation]] | None = None  # per item, every annotator's PointAnnotation
    meta: dict[str, Any] = field(default_factory=dict)


def check_images(images: Any) -> np.ndarray:
    """uint8 (N, H, W, 3) with N >= 1, or a ValueError saying what was given."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3 or len(arr) == 0:
        raise ValueError(f"images must be a non-empty uint8 array (N, H, W, 3), got {arr.dtype} {arr.shape}")
    return arr


def check_best_of_n(prompts: Sequence[str], images: Any, scores: Mapping[str, Any], verdict: Any = None,
                    groups: Sequence | None = None) -> BestOfNBundle:
    """Check best-of-n inputs (lengths, types, groups of one prompt); return them as a ``BestOfNBundle``."""
    images = check_images(images)
    n = len(images)
    if isinstance(prompts, str) or len(prompts) != n or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a list of {n} strings, one per image; got {_describe(prompts)}")
    if not isinstance(scores, Mapping) or not scores:
        raise ValueError("scores must be a non-empty dict {reward name: (N,) array}; got "
                         f"{'an empty dict' if isinstance(scores, Mapping) else type(scores).__name__}")
    clean = {}
    for name, s in scores.items():
        arr = _numbers(s)
        if not isinstance(name, str) or not name or arr is None or arr.shape != (n,):
            raise ValueError(f"scores[{name!r}] must be a named (N,) = ({n},) array of numbers, got {_describe(s)}")
        clean[name] = arr
    if verdict is not None:
        v = _numbers(verdict)
        if v is None or v.shape != (n,) or not np.isin(v, (0, 1)).all():
            raise ValueError(f"verdict must be None or (N,) = ({n},) booleans, got {_describe(verdict)}")
        verdict = v.astype(bool)
    if groups is not None:
        groups = [g.item() if isinstance(g, np.generic) else g for g in groups]
        if len(groups) != n or not all(isinstance(g, (int, str)) and not isinstance(g, bool) for g in groups):
            raise ValueError(f"groups must be None or {n} group ids (int or str), one per image; "
                             f"got {_describe(groups)}")
        for g in dict.fromkeys(groups):
            in_group = {p for p, h in zip(prompts, groups) if h == g}
            if len(in_group) != 1:
                raise ValueError(f"group {g!r} mixes prompts {sorted(in_group)}; a group holds one prompt's images")
    return BestOfNBundle(list(prompts), images, clean, verdict, groups)


def check_rich(images: Any, labels: Sequence[RichLabel], predictions: Mapping[str, Any] | None = None,
               raw_points: Sequence[Sequence[PointAnnotation]] | None = None) -> RichBundle:
    """Check rich-feedback inputs (one label per image, maps at image size); return a ``RichBundle``."""
    images = check_images(images)
    n, h, w = images.shape[:3]
    if len(labels) != n or not all(isinstance(lab, RichLabel) for lab in labels):
        raise ValueError(f"labels must be {n} RichLabel (one per image), got {_describe(labels)}")
    for i, lab in enumerate(labels):
        shape = lab.heatmaps[MAP_KINDS[0]].shape
        if shape != (h, w):
            raise ValueError(f"labels[{i}] ({lab.item_id!r}) has heatmaps of shape {shape}, the images are {(h, w)}; "
                             "resize the maps to the image resolution")
    predictions = None if predictions is None else check_predictions(predictions, labels, (n, h, w))
    if raw_points is not None:
        if len(raw_points) != n:
            raise ValueError(f"raw_points must hold one list of PointAnnotation per image ({n}), got {len(raw_points)}")
        raw_points = [list(rs) for rs in raw_points]
        for i, rs in enumerate(raw_points):
            for r in rs:
                if not isinstance(r, PointAnnotation):
                    raise ValueError(f"raw_points[{i}] holds a {type(r).__name__}; "
                                     "only PointAnnotation records belong there")
                if (r.height, r.width) != (h, w):
                    raise ValueError(f"raw_points[{i}]: points of a {r.height}x{r.width} image, the images are {h}x{w}")
    return RichBundle(images, list(labels), predictions, raw_points)


def check_predictions(predictions: Mapping[str, Any], labels: Sequence[RichLabel],
                      shape: tuple[int, int, int]) -> dict[str, Any]:
    """RAHF-style predictions → ``{"heatmaps": {kind: float32 (N, H, W)}, "scores": {aspect: (N,)},
    "keywords": [tuple per item] or None}``; a ValueError names the first entry that does not fit."""
    n = shape[0]
    if not isinstance(predictions, Mapping) or set(predictions) - set(PREDICTION_KEYS):
        raise ValueError(f"predictions must be a dict with keys among {PREDICTION_KEYS}, got {_describe(predictions)}")
    maps = predictions.get("heatmaps") or {}
    if not isinstance(maps, Mapping) or set(maps) - set(MAP_KINDS):
        raise ValueError(f"predictions['heatmaps'] must be a dict with keys among {MAP_KINDS}, got {_describe(maps)}")
    heatmaps = {}
    for kind in (k for k in MAP_KINDS if k in maps):
        arr = np.asarray(maps[kind], dtype=np.float32)
        if arr.shape != shape:
            raise ValueError(f"predictions['heatmaps'][{kind!r}] has shape {arr.shape}; expected (N, H, W) = {shape}, "
                             "one map per image at the images' resolution")
        heatmaps[kind] = arr
    raw_scores = predictions.get("scores")
    scores = {}
    if raw_scores is not None and not isinstance(raw_scores, Mapping):
        arr = np.asarray(raw_scores, dtype=np.float64)
        if arr.shape != (n, len(SCORE_ASPECTS)):
            raise ValueError(f"predictions['scores'] as an array must be (N, 4) = ({n}, 4) in {SCORE_ASPECTS} order, "
                             f"got {arr.shape}")
        raw_scores = dict(zip(SCORE_ASPECTS, arr.T))
    for aspect, s in (raw_scores or {}).items():
        arr = np.asarray(s, dtype=np.float64)
        if aspect not in SCORE_ASPECTS or arr.shape != (n,):
            raise ValueError(f"predictions['scores'][{aspect!r}] must be an aspect of {SCORE_ASPECTS} "
                             f"with (N,) = ({n},) scores, got {arr.shape}")
        scores[aspect] = arr
    keywords = predictions.get("keywords")
    if keywords is not None:
        if len(keywords) != n:
            raise ValueError(f"predictions['keywords'] must hold one label list per image ({n}), got {len(keywords)}")
        keywords = [tuple(int(k) for k in kw) for kw in keywords]
        for i, (kw, lab) in enumerate(zip(keywords, labels)):
            if len(kw) != len(lab.tokens) or set(kw) - {0, 1}:
                raise ValueError(f"predictions['keywords'][{i}] must be one 0/1 per token of {lab.prompt!r} "
                                 f"({len(lab.tokens)}), got {kw}")
    return {"heatmaps": heatmaps, "scores": scores, "keywords": keywords}


def _numbers(x: Any) -> np.ndarray | None:
    """``x`` as a float64 array, or None when it holds something else than numbers."""
    try:
        arr = np.asarray(x)
        return arr.astype(np.float64) if arr.dtype.kind in "biuf" else None
    except (TypeError, ValueError):
        return None


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    if shape is not None:
        return f"{type(x).__name__} of shape {tuple(shape)}"
    try:
        return f"{type(x).__name__} of length {len(x)}"
    except TypeError:
        return repr(x)[:80]


# ----------------------------------------------------------------------------- on disk


def save_best_of_n_bundle(directory: str | os.PathLike, prompts: Sequence[str], images: Any,
                          scores: Mapping[str, Any], verdict: Any = None, *, groups: Sequence | None = None,
                          meta: Mapping[str, Any] | None = None) -> Path:
    """Write a best-of-n bundle into ``directory`` (created); return the sidecar's path."""
    b = check_best_of_n(prompts, images, scores, verdict, groups)
    arrays = {"images": b.images} | {f"score_{k}": s for k, s in enumerate(b.scores.values())}
    if b.verdict is not None:
        arrays["verdict"] = b.verdict
    sidecar = {"kind": BEST_OF_N_NAME, "version": BUNDLE_VERSION, "n_items": len(b.images), "prompts": b.prompts,
               "rewards": list(b.scores), "has_verdict": b.verdict is not None, "groups": b.groups,
               "meta": dict(meta or {})}
    return _write(Path(directory), BEST_OF_N_NAME, arrays, sidecar)


def load_best_of_n_bundle(directory: str | os.PathLike) -> BestOfNBundle:
    """Read what ``save_best_of_n_bundle`` wrote."""
    sidecar, arrays, where = _read(Path(directory), BEST_OF_N_NAME)
    need = ["images", *(f"score_{k}" for k in range(len(sidecar["rewards"])))]
    need += ["verdict"] if sidecar["has_verdict"] else []
    _require(arrays, need, where)
    try:
        b = check_best_of_n(sidecar["prompts"], arrays["images"],
                            {name: arrays[f"score_{k}"] for k, name in enumerate(sidecar["rewards"])},
                            arrays.get("verdict"), sidecar.get("groups"))
    except ValueError as err:
        raise BundleError(f"{where}: {err}") from None
    b.meta = sidecar.get("meta") or {}
    return b


def save_rich_bundle(directory: str | os.PathLike, images: Any, labels: Sequence[RichLabel],
                     predictions: Mapping[str, Any] | None = None,
                     raw_points: Sequence[Sequence[PointAnnotation]] | None = None, *,
                     meta: Mapping[str, Any] | None = None) -> Path:
    """Write a rich-feedback bundle into ``directory`` (created); return the sidecar's path."""
    b = check_rich(images, labels, predictions, raw_points)
    arrays = {"images": b.images}
    arrays |= {f"label_heatmap_{k}": np.stack([lab.heatmaps[k] for lab in b.labels]) for k in MAP_KINDS}
    p = b.predictions
    if p is not None:
        arrays |= {f"pred_heatmap_{k}": m for k, m in p["heatmaps"].items()}
        arrays |= {f"pred_score_{a}": s for a, s in p["scores"].items()}
    sidecar = {
        "kind": RICH_NAME, "version": BUNDLE_VERSION, "n_items": len(b.images),
        "labels": [{"item_id": lab.item_id, "prompt": lab.prompt, "tokens": list(lab.tokens),
                    "keywords": list(lab.keywords), "scores": {a: float(lab.scores[a]) for a in SCORE_ASPECTS},
                    "extra": lab.extra} for lab in b.labels],
        "predictions": None if p is None else {
            "heatmaps": list(p["heatmaps"]), "scores": list(p["scores"]),
            "keywords": None if p["keywords"] is None else [list(k) for k in p["keywords"]]},
        "raw_points": None if b.raw_points is None else [[r.to_dict() for r in rs] for rs in b.raw_points],
        "meta": dict(meta or {}),
    }
    return _write(Path(directory), RICH_NAME, arrays, sidecar)


def load_rich_bundle(directory: str | os.PathLike) -> RichBundle:
    """Read what ``save_rich_bundle`` wrote."""
    sidecar, arrays, where = _read(Path(directory), RICH_NAME)
    pred = sidecar.get("predictions")
    need = ["images", *(f"label_heatmap_{k}" for k in MAP_KINDS)]
    if pred is not None:
        need += [f"pred_heatmap_{k}" for k in pred["heatmaps"]] + [f"pred_score_{a}" for a in pred["scores"]]
    _require(arrays, need, where)
    try:
        labels = [RichLabel(d["item_id"], d["prompt"], d["scores"],
                            {k: arrays[f"label_heatmap_{k}"][i] for k in MAP_KINDS}, tuple(d["tokens"]),
                            tuple(d["keywords"]), d.get("extra") or {})
                  for i, d in enumerate(sidecar["labels"])]
        predictions = None if pred is None else {
            "heatmaps": {k: arrays[f"pred_heatmap_{k}"] for k in pred["heatmaps"]},
            "scores": {a: arrays[f"pred_score_{a}"] for a in pred["scores"]}, "keywords": pred["keywords"]}
        raw = sidecar.get("raw_points")
        raw_points = None if raw is None else [[Record.from_dict(d) for d in rs] for rs in raw]
        b = check_rich(arrays["images"], labels, predictions, raw_points)
    except (ValueError, KeyError, TypeError) as err:
        raise BundleError(f"{where}: {type(err).__name__}: {err}") from None
    b.meta = sidecar.get("meta") or {}
    return b


def _write(directory: Path, name: str, arrays: dict[str, np.ndarray], sidecar: dict[str, Any]) -> Path:
    """The npz, then the sidecar, each through a temporary file renamed into place."""
    try:
        text = json.dumps(sidecar, indent=1, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the {name} bundle's sidecar is not JSON-serialisable "
                         f"(check meta and RichLabel.extra): {err}") from None
    directory.mkdir(parents=True, exist_ok=True)
    npz, side = directory / f"{name}.npz", directory / f"{name}.json"
    side.unlink(missing_ok=True)  # a sidecar without its npz never names a stale one
    tmp = directory / f".{name}.{os.getpid()}.tmp.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, npz)
    tmp = side.with_name(f".{name}.{os.getpid()}.tmp.json")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, side)
    return side


def _read(directory: Path, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray], Path]:
    side, npz = directory / f"{name}.json", directory / f"{name}.npz"
    if not side.is_file() or not npz.is_file():
        missing = [p.name for p in (npz, side) if not p.is_file()]
        raise BundleError(f"{directory} holds no {name} bundle (missing {', '.join(missing)}); "
                          f"save_{name}_bundle writes one")
    try:
        sidecar = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise BundleError(f"{side} is not valid JSON: {err}") from None
    if not isinstance(sidecar, dict) or sidecar.get("kind") != name or sidecar.get("version") != BUNDLE_VERSION:
        got = (sidecar.get("kind"), sidecar.get("version")) if isinstance(sidecar, dict) else type(sidecar).__name__
        raise BundleError(f"{side}: expected kind {name!r} version {BUNDLE_VERSION}, got {got}")
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    n = sidecar.get("n_items")
    if "images" in arrays and len(arrays["images"]) != n:
        raise BundleError(f"{npz}: {len(arrays['images'])} images but the sidecar says {n} items")
    return sidecar, arrays, side


def _require(arrays: dict[str, np.ndarray], keys: Sequence[str], where: Path) -> None:
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise BundleError(f"{where.with_suffix('.npz')} lacks arrays {missing}")


# ----------------------------------------------------------------------------- demo


def demo_bundles(n_prompts: int = 4, images_per_prompt: int = 6, seed: int = 0, size: int = 64,
                 n_annotators: int = 3) -> tuple[BestOfNBundle, RichBundle]:
    """Small bundles from the world alone (no model): renders, half of them corrupted (an artifact or an alignment
    error), judged by the oracle and annotated by a simulated panel.

    Best-of-n: scores "annotator vote share" (the panel's share of good labels) and "oracle overall" (the oracle's
    noise-free overall quality), verdict = the oracle's aligned. Rich: the panel's consolidated labels and raw
    points, no predictions.
    """
    from feedbacklab import world
    from feedbacklab.evaluation import eval_prompts
    from feedbacklab.feedback import make_panel
    from feedbacklab.feedback.consolidate import group_by_item
    from feedbacklab.feedback_sets import FeedbackSet, judge_record, rich_feedback

    if n_prompts < 1 or images_per_prompt < 1:
        raise ValueError(f"n_prompts and images_per_prompt must be >= 1, got {n_prompts}, {images_per_prompt}")
    families = world.FAMILIES
    prompts = [p for i in range(n_prompts) for p in eval_prompts(1, seed=seed + i, family=families[i % len(families)])]
    rng = np.random.default_rng(seed)
    kinds = world.corrupt.ARTIFACT_KINDS + world.corrupt.ALIGNMENT
    panel = make_panel(n_annotators, seed=seed)
    images, records = [], []
    for g, prompt in enumerate(prompts):
        for k in range(images_per_prompt):
            image, scene = world.render(world.parse(prompt), size=size, seed=seed + 1000 * g + k)
            if rng.random() < 0.5:
                try:
                    image, _ = world.corrupt.apply(str(rng.choice(kinds)), image, scene, rng, strength=0.6)
                except world.corrupt.CorruptionError:
                    pass  # nothing this corruption could change in this scene: keep the clean render
            item_id = f"demo-{len(images)}"
            images.append(image)
            records.append({"item_id": item_id, "prompt_index": g, **judge_record(prompt, image, panel, item_id)})
    images = np.stack(images)
    best_of_n = BestOfNBundle(
        [r["prompt"] for r in records], images,
        {"annotator vote share": np.array([r["vote_share"] for r in records]),
         "oracle overall": np.array([r["latent"]["overall"] for r in records])},
        np.array([r["aligned"] for r in records], dtype=bool), [r["prompt_index"] for r in records],
        {"source": "demo_bundles", "seed": seed})
    labels, raw = rich_feedback(FeedbackSet(images, records), panel)
    points = group_by_item(r for r in raw if isinstance(r, PointAnnotation))
    rich = check_rich(images, labels, None, [points.get(r["item_id"], []) for r in records])
    rich.meta = {"source": "demo_bundles", "seed": seed}
    return best_of_n, rich
