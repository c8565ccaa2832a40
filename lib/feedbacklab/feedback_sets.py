"""Labelled feedback sets for any generator: sample images, judge them, collect annotator labels.

Lee et al. (2023) §3.1: many images per prompt from the base model, each labelled good (1) / bad (0)
by people. Here a panel of simulated annotators (``feedback.make_panel``) labels each image from the
oracle's judgement; the oracle's own verdict is stored beside the labels for evaluation only.

A set is cached on disk (``images.npy`` uint8 (N, H, W, 3) + ``records.json``) under a key hashing the
generator's weights, prompts, images per prompt, seed, sampler settings and panel, so a rerun with the
same inputs reuses it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

FORMAT_VERSION = 2  # 2: records carry n_objects


@dataclass(frozen=True)
class SamplerConfig:
    """Sampling settings passed to the diffusers pipeline (part of a set's cache key)."""

    num_inference_steps: int = 20
    guidance_scale: float = 4.0
    eta: float = 0.0
    height: int | None = None   # None: the pipeline's default (the UNet's sample size × VAE factor)
    width: int | None = None

    def __post_init__(self):
        if self.num_inference_steps < 1 or self.guidance_scale < 0 or self.eta < 0:
            raise ValueError("num_inference_steps must be >= 1, guidance_scale and eta >= 0")


def image_seed(seed: int, prompt_index: int, sample: int) -> int:
    """The sampling seed of image ``sample`` of prompt ``prompt_index``: the same for any generator."""
    return int(np.random.SeedSequence([seed, prompt_index, sample]).generate_state(1)[0])


@torch.no_grad()
def sample_images(pipe: Any, prompts: Sequence[str], seeds: Sequence[int], sampler: SamplerConfig | None = None,
                  batch_size: int = 32, progress: bool = True, desc: str = "sampling") -> torch.Tensor:
    """One image per (prompt, seed) from a diffusers pipeline → (N, 3, H, W) float in [0, 1] on CPU.

    Each image's initial noise comes from its own CPU generator, so results do not depend on batching. With
    ``eta > 0`` a DDIM scheduler's steps run through ``finetune.ddim_logprob.nan_safe_ddim_steps``: diffusers' own
    step returns NaN images at η = 1 on the shipped zero-SNR schedule on some CPUs (diffusers #5969)."""
    from tqdm.auto import tqdm

    from feedbacklab.finetune.ddim_logprob import nan_safe_ddim_steps

    sampler = sampler or SamplerConfig()
    if len(prompts) != len(seeds):
        raise ValueError(f"got {len(prompts)} prompts and {len(seeds)} seeds; need one seed per prompt")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    pipe.set_progress_bar_config(disable=True)
    out = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress):
        chunk = slice(start, start + batch_size)
        generators = [torch.Generator().manual_seed(int(s)) for s in seeds[chunk]]
        with nan_safe_ddim_steps(pipe.scheduler) if sampler.eta > 0 else contextlib.nullcontext():
            images = pipe(prompt=list(prompts[chunk]), generator=generators, output_type="pt",
                          **dataclasses.asdict(sampler)).images
        out.append(images.float().clamp(0, 1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 3, 1, 1)


def generator_fingerprint(pipe: Any) -> str:
    """A hash of the pipeline's class, scheduler config and every UNet, text-encoder and VAE weight."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(pipe).__name__.encode())
    h.update(json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str).encode())
    for name in ("unet", "text_encoder", "vae"):
        module = getattr(pipe, name, None)
        for key, tensor in (module.state_dict().items() if module is not None else ()):
            h.update(f"{name}.{key}".encode())
            h.update(tensor.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


def panel_config(panel: Any) -> list[dict[str, Any]] | None:
    """A JSON description of an annotator panel (ids, seeds, noise), part of the cache key."""
    if panel is None:
        return None
    return [{"id": a.id, "seed": a.seed, "noise": dataclasses.asdict(a.noise)} for a in panel]


@dataclass
class FeedbackSet:
    """Generated images (uint8 (N, H, W, 3)) with one record per image; ``path`` is its cache directory."""

    images: np.ndarray
    records: list[dict[str, Any]]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def prompts(self) -> list[str]:
        return [r["prompt"] for r in self.records]

    @property
    def labels(self) -> np.ndarray:
        """Majority-vote annotator labels (N,) int; an error for an unlabelled set."""
        if any(r.get("label") is None for r in self.records):
            raise ValueError("this feedback set has no annotator labels (it was generated with panel=None)")
        return np.array([r["label"] for r in self.records], dtype=int)

    @property
    def truth(self) -> np.ndarray:
        """The oracle's verdict (N,) int: 1 when every attribute of the prompt is right."""
        return np.array([int(r["aligned"]) for r in self.records], dtype=int)

    def tensors(self, index: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
        """Images as float (N, 3, H, W) in [0, 1] (a subset with ``index``)."""
        from feedbacklab.models.data import to_tensor

        images = self.images if index is None else self.images[np.asarray(index)]
        return to_tensor(np.ascontiguousarray(images))

    def subset(self, index: Sequence[int] | np.ndarray) -> "FeedbackSet":
        """The images and records at ``index`` (not cached)."""
        index = np.asarray(index, dtype=int)
        return FeedbackSet(self.images[index], [self.records[i] for i in index])


def judge_record(prompt: str, image: np.ndarray, panel: Any = None, item_id: str | None = None) -> dict[str, Any]:
    """The oracle's judgement of one uint8 image as a JSON record, with the panel's labels when given."""
    from feedbacklab import world
    from feedbacklab.feedback.annotators import latent_scores
    from feedbacklab.feedback.consolidate import majority_vote

    j = world.judge(prompt, image)
    record = {"prompt": prompt, "aligned": bool(j.aligned), "attributes": {k: bool(v) for k, v in j.attributes.items()},
              "plausibility": float(j.plausibility), "aesthetics": float(j.aesthetics),
              "n_artifacts": len(j.artifact_points),
              "n_objects": len(j.scene.objects), "latent": latent_scores(j), "labels": None, "label": None}
    if panel is not None:
        labels = [b.label for b in panel.binary(j, item_id)]
        record.update(labels=labels, label=int(majority_vote([labels])[0]), vote_share=float(np.mean(labels)))
    return record


def _cache_key(generator_id: str, prompts: Sequence[str], n_per_prompt: int, seed: int, sampler: SamplerConfig,
               panel: Any) -> tuple[str, dict[str, Any]]:
    meta = {"format": FORMAT_VERSION, "generator": generator_id, "prompts": list(prompts),
            "n_per_prompt": n_per_prompt, "seed": seed, "sampler": dataclasses.asdict(sampler),
            "panel": panel_config(panel)}
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20], meta


def load_feedback_set(path: str | Path) -> FeedbackSet:
    """Read a set written by :func:`generate_feedback_set` from its directory."""
    path = Path(path)
    if not (path / "images.npy").is_file() or not (path / "records.json").is_file():
        raise FileNotFoundError(f"{path} is not a feedback set (needs images.npy and records.json)")
    records = json.loads((path / "records.json").read_text())
    images = np.load(path / "images.npy", allow_pickle=False)
    if len(images) != len(records):
        raise ValueError(f"{path}: {len(images)} images but {len(records)} records")
    return FeedbackSet(images, records, path)


def generate_feedback_set(pipe: Any, prompts: Sequence[str], n_per_prompt: int, panel: Any = None, *, seed: int = 0,
                          sampler: SamplerConfig | None = None, batch_size: int = 32,
                          cache_dir: str | Path | None = None, generator_id: str | None = None,
                          progress: bool = True) -> FeedbackSet:
    """``n_per_prompt`` images per prompt from ``pipe``, judged by the oracle and labelled by ``panel`` (or not: None).

    With ``cache_dir`` the set is stored under ``cache_dir/feedback-<key>`` and reused when the key matches;
    ``generator_id`` replaces the (weight-hashing) :func:`generator_fingerprint` in the key."""
    from tqdm.auto import tqdm

    from feedbacklab.models.data import to_uint8

    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a non-empty sequence of strings")
    if not isinstance(n_per_prompt, int) or n_per_prompt < 1:
        raise ValueError(f"n_per_prompt must be a positive int, got {n_per_prompt!r}")
    sampler = sampler or SamplerConfig()
    key, meta = _cache_key(generator_id or generator_fingerprint(pipe), prompts, n_per_prompt, seed, sampler, panel)
    path = Path(cache_dir) / f"feedback-{key}" if cache_dir is not None else None
    if path is not None and (path / "records.json").is_file():
        return load_feedback_set(path)

    index = [(i, k) for i, _ in enumerate(prompts) for k in range(n_per_prompt)]
    all_prompts = [prompts[i] for i, _ in index]
    seeds = [image_seed(seed, i, k) for i, k in index]
    images = to_uint8(sample_images(pipe, all_prompts, seeds, sampler, batch_size, progress, "generating"))
    records = []
    for n, ((i, k), s) in enumerate(tqdm(list(zip(index, seeds)), desc="judging", disable=not progress)):
        item_id = f"{key}-{n}"
        records.append({"index": n, "item_id": item_id, "prompt_index": i, "sample": k, "seed": s,
                        **judge_record(all_prompts[n], images[n], panel, item_id)})
    result = FeedbackSet(images, records, path)
    if path is not None:
        _write(result, path, meta)
    return result


def _write(fs: FeedbackSet, path: Path, meta: dict[str, Any]) -> None:
    """Write images, records and meta into ``path`` atomically (a temporary directory renamed into place)."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    np.save(tmp / "images.npy", fs.images, allow_pickle=False)
    (tmp / "records.json").write_text(json.dumps(fs.records))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if path.exists():  # written meanwhile by another process with the same key: keep theirs
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, path)
    fs.path = path


def split_indices(records: Sequence[dict[str, Any]], heldout_prompt_fraction: float = 0.2, val_fraction: float = 0.2,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Reward-model splits: ``heldout_prompts`` (every image of a random share of prompts), then the
    other prompts' images split by image into ``train`` and ``val``."""
    if not (0 <= heldout_prompt_fraction < 1 and 0 <= val_fraction < 1):
        raise ValueError("heldout_prompt_fraction and val_fraction must be in [0, 1)")
    rng = np.random.default_rng(seed)
    prompts = sorted({r["prompt"] for r in records})
    n_held = int(round(heldout_prompt_fraction * len(prompts)))
    held = set(rng.permutation(prompts)[:n_held].tolist())
    rest = np.array([i for i, r in enumerate(records) if r["prompt"] not in held], dtype=int)
    rest = rng.permutation(rest)
    n_val = int(round(val_fraction * len(rest)))
    return {"train": np.sort(rest[n_val:]), "val": np.sort(rest[:n_val]),
            "heldout_prompts": np.array([i for i, r in enumerate(records) if r["prompt"] in held], dtype=int)}


def group_sizes(n_groups: int, k_range: tuple[int, int] = (4, 9), seed: int = 0) -> list[int]:
    """A number of images per ranked group, uniform in ``k_range`` (ImageReward: 4–9 images per prompt)."""
    lo, hi = (int(k) for k in k_range)
    if not 2 <= lo <= hi:
        raise ValueError(f"k_range must be (lo, hi) with 2 <= lo <= hi, got {k_range}")
    return [int(k) for k in np.random.default_rng([seed, 7]).integers(lo, hi + 1, size=n_groups)]


def rank_feedback_set(fs: FeedbackSet, panel: Any, sizes: Sequence[int] | None = None) -> tuple[list, np.ndarray]:
    """The panel ranks the first ``sizes[i]`` images of each prompt of ``fs`` on overall quality (``Panel.rank``).

    Returns every annotator's ``Ranking`` (item ids are the records' ``item_id``) and the indices of the ranked
    images in ``fs``. ``sizes`` defaults to every image of each prompt."""
    from feedbacklab import world

    by_prompt: dict[int, list[int]] = {}
    for n, r in enumerate(fs.records):
        by_prompt.setdefault(r["prompt_index"], []).append(n)
    groups = list(by_prompt.values())
    sizes = [len(g) for g in groups] if sizes is None else list(sizes)
    if len(sizes) != len(groups):
        raise ValueError(f"got {len(sizes)} group sizes for {len(groups)} prompts")
    rankings, used = [], []
    for members, k in zip(groups, sizes):
        if not 2 <= k <= len(members):
            raise ValueError(f"a group of {k} images: need 2 <= k <= {len(members)} (the images generated per prompt)")
        chosen = members[:k]
        judgements = [world.judge(fs.records[i]["prompt"], fs.images[i]) for i in chosen]
        rankings += panel.rank(judgements, [fs.records[i]["item_id"] for i in chosen])
        used += chosen
    return rankings, np.array(used, dtype=int)


def rich_feedback(fs: FeedbackSet, panel: Any = None, records: Sequence[Any] | None = None) -> tuple[list, list]:
    """RichHF's annotation of every image of ``fs``: each annotator's ``Panel.rich`` records (Likert scores,
    points on implausible and misaligned regions, misaligned keywords), and their consolidation
    (``feedback.consolidate_rich``: one ``RichLabel`` per image, item ids from the records). The oracle's
    verdict rides along in ``RichLabel.extra`` (``aligned``, ``n_artifacts``, ``plausibility``) for evaluation.

    ``records`` instead of ``panel``: people's records of those kinds (``human_feedback_set``), one item per image."""
    from feedbacklab import world
    from feedbacklab.feedback.rich import consolidate_rich

    if (panel is None) == (records is None):
        raise ValueError("rich_feedback needs a panel of annotators (feedback.make_panel) or the people's records, "
                         "not both")
    if panel is not None and len(panel) < 1:
        raise ValueError("rich_feedback needs a panel of at least one annotator")
    if records is None:
        records = []
        for r, image in zip(fs.records, fs.images):
            records += panel.rich(world.judge(r["prompt"], image), r["item_id"])
    labels = consolidate_rich(records)
    order = {r["item_id"]: n for n, r in enumerate(fs.records)}
    if sorted(order) != sorted(lab.item_id for lab in labels):
        raise ValueError("rich_feedback: the records must label every image of the set and nothing else")
    labels.sort(key=lambda lab: order[lab.item_id])
    for label, r in zip(labels, fs.records):
        label.extra = {"aligned": bool(r["aligned"]), "n_artifacts": int(r["n_artifacts"]),
                       "plausibility": float(r["plausibility"])}
    return labels, records


def annotation_task(fs: FeedbackSet, name: str, kinds: Sequence[str], index: Sequence[int] | None = None) -> Any:
    """The images of ``fs`` (those at ``index``) as a ``widgets.AnnotationTask`` for people to annotate.

    One item per image, its id the record's ``item_id``; with ``"ranking"`` one item per prompt holding that
    prompt's images. ``widgets.save_task`` writes it; ``human_feedback_set`` reads the answers back."""
    from feedbacklab.widgets.task import task_from_arrays

    index = list(range(len(fs))) if index is None else [int(i) for i in index]
    if not index:
        raise ValueError("annotation_task needs at least one image")
    if "ranking" not in kinds:
        return task_from_arrays(name, kinds, [fs.records[i]["prompt"] for i in index], [fs.images[i] for i in index],
                                [fs.records[i]["item_id"] for i in index])
    groups: dict[int, list[int]] = {}
    for i in index:
        groups.setdefault(fs.records[i]["prompt_index"], []).append(i)
    return task_from_arrays(name, kinds, [fs.records[g[0]]["prompt"] for g in groups.values()],
                            [[fs.images[i] for i in g] for g in groups.values()],
                            [f"prompt{p:04d}" for p in groups])


HUMAN_KINDS = {"binary": ("binary",), "ranking": ("ranking",), "rich": ("likert", "points", "keywords")}


def human_feedback_set(task: Any, store_path: str | Path, feedback: str = "binary") -> tuple[FeedbackSet, list]:
    """People's answers from the annotation app's store, as the simulated panel's feedback set would be.

    ``task`` is the ``widgets.AnnotationTask`` (or its JSON path) the people annotated, ``store_path`` its SQLite
    store. Returns a ``FeedbackSet`` of the annotated images (task order; records judged by the oracle, for
    evaluation only) and the stored records of the ``feedback`` kind: ``"binary"`` (each record's ``labels`` are
    the annotators' 0/1, ``label`` their majority, ties 0), ``"ranking"`` (``Ranking`` records over image ids;
    ``label`` 1 for images in the better half of their group by mean rank, for baselines that need a 0/1 label) or
    ``"rich"`` (Likert, points and keyword records, for ``rich_feedback(fs, records=...)``). ShapesWorld prompts
    only: the oracle must read them (real data has its own loaders in ``feedbacklab.datasets``)."""
    from feedbacklab.feedback.consolidate import consolidate_binary
    from feedbacklab.feedback.records import Ranking
    from feedbacklab.widgets.store import load_human_feedback
    from feedbacklab.widgets.task import AnnotationTask, load_task

    if feedback not in HUMAN_KINDS:
        raise ValueError(f"unknown feedback {feedback!r}; accepted: {sorted(HUMAN_KINDS)}")
    task = task if isinstance(task, AnnotationTask) else load_task(task)
    missing = [k for k in HUMAN_KINDS[feedback] if k not in task.kinds]
    if missing:
        raise ValueError(f"task {task.name!r} asks for {list(task.kinds)}, not {missing} ({feedback} feedback needs "
                         f"{list(HUMAN_KINDS[feedback])})")
    records, images = [], {}
    for kind in HUMAN_KINDS[feedback]:
        got, images = load_human_feedback(task, store_path, kind)
        records += got
    if not records:
        raise ValueError(f"the store {store_path} holds no {feedback} answers for task {task.name!r}: annotate first "
                         "(make annotate TASK=... STORE=...)")
    answered = {i for r in records for i in (r.item_ids if isinstance(r, Ranking) else (r.item_id,))}
    prompt_of = {iid: item.prompt for item in task.items for iid in item.image_ids}
    ids = [iid for item in task.items for iid in item.image_ids if iid in answered]
    prompt_index = {p: n for n, p in enumerate(dict.fromkeys(prompt_of[i] for i in ids))}
    sample: dict[str, int] = {}
    fs_records = []
    for n, iid in enumerate(ids):
        p = prompt_of[iid]
        try:
            rec = judge_record(p, images[iid])
        except ValueError as exc:
            raise ValueError(f"image {iid!r}: its prompt {p!r} is not a ShapesWorld prompt the oracle reads ({exc}); "
                             "human feedback on other prompts goes through feedbacklab.datasets") from None
        fs_records.append({"index": n, "item_id": iid, "prompt_index": prompt_index[p],
                           "sample": sample.setdefault(p, 0), **rec, "source": f"human:{task.name}"})
        sample[p] += 1
    by_id = {r["item_id"]: r for r in fs_records}
    if feedback == "binary":
        majority = consolidate_binary(records)  # ties 0, as the simulated panel's majority vote
        votes: dict[str, list[int]] = {}
        for r in records:
            votes.setdefault(r.item_id, []).append(int(r.label))
        for iid, v in votes.items():
            by_id[iid].update(labels=v, label=majority[iid], vote_share=float(np.mean(v)))
    elif feedback == "ranking":
        from feedbacklab.evaluation import consolidated_preference

        preference = consolidated_preference(records)  # minus the mean rank over annotators
        for r in records:
            group = sorted(r.item_ids, key=lambda i: -preference[i])
            for k, iid in enumerate(group):
                by_id[iid]["label"] = int(k < len(group) / 2)
    fs = FeedbackSet(np.stack([images[i] for i in ids]), fs_records)
    return fs, records


@dataclass
class CorrectionFeedback:
    """RLHF-V's correctional feedback on a set of captions: one annotator's correction per caption.

    ``corrections[i]`` corrects ``captions[i]`` (None: the caption is not world text, so nobody can edit it);
    ``hallucinated[i]`` is the oracle's verdict that the caption contradicts its image.
    """

    captions: list[str]
    corrections: list[Any]
    hallucinated: np.ndarray  # (N,) bool

    @property
    def changed(self) -> list[int]:
        """Indices of captions the annotator changed: the (y_w, y_l) pairs."""
        return [i for i, c in enumerate(self.corrections) if c is not None and c.changed]

    def summary(self) -> dict[str, float]:
        """Counts for the notebook's table: captions, hallucinated ones, pairs, missed corrections."""
        missed = int(sum(h and (c is None or not c.changed) for h, c in zip(self.hallucinated, self.corrections)))
        return {"captions": len(self.captions), "hallucinated": int(self.hallucinated.sum()),
                "share_needing_correction": float(self.hallucinated.mean()), "pairs": len(self.changed),
                "hallucinated_left_uncorrected": missed,
                "changed_segments_per_pair": float(np.mean([len(self.corrections[i].original_spans)
                                                            for i in self.changed])) if self.changed else 0.0}


def correction_feedback(captions: Sequence[str], images: np.ndarray, panel: Any, id_prefix: str = "cap") -> CorrectionFeedback:
    """The oracle reads each image and finds the caption's wrong segments; annotators take turns correcting.

    ``images`` uint8 (N, H, W, 3). Caption ``i`` goes to annotator ``i mod len(panel)`` (RLHF-V has one
    annotator per response), whose ``correct`` edits the wrong segments towards the true scene and may miss some.
    """
    from feedbacklab import world

    if len(captions) != len(images) or not len(captions):
        raise ValueError(f"need one image per caption (>0), got {len(captions)} captions and {len(images)} images")
    annotators = list(panel)
    corrections, hallucinated = [], []
    for i, (caption, image) in enumerate(zip(captions, images)):
        try:
            j = world.judge(caption, image)
        except ValueError:  # not world text: hallucinated by definition, but there is no segment to edit
            corrections.append(None)
            hallucinated.append(True)
            continue
        hallucinated.append(not j.aligned)
        corrections.append(annotators[i % len(annotators)].correct(j, f"{id_prefix}-{i}"))
    return CorrectionFeedback(list(captions), corrections, np.array(hallucinated, dtype=bool))
