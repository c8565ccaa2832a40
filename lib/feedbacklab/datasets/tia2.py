"""TIA2 (Kim et al., ICLR 2024): the public format, its loader, and a ShapesWorld benchmark in the same format.

A TIA2 file is a JSON object keyed by image file name; each value is
``{"image": str, "caption": str, "human_labels": [a, b, c]}`` with each label 1 (matches the prompt),
0 (does not) or -1 (the annotator gave no valid label: about 4 % of the public composition labels,
under 1 % of comprehensive). An image is aligned when at least two of its three labels are 1 (an
abstention is not a yes); a prompt's human alignment rate is the share of its aligned images (the
``"human"`` field of the public score files). Reward models are scored per prompt (AUROC, AUPRC,
AP@5/10/25 against that label; Spearman and Kendall against the share of 1s) and the per-prompt
values are averaged over prompts (``evaluate_tia2``).

The TextNorm release (kykim0/TextNorm) lays out its files per subset as in :data:`RELEASE_FILES`.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from feedbacklab import metrics

from .files import read_json

SUBSETS = ("counting", "composition", "comprehensive")
RELEASE_FILES = {"labels": "human_annotations/human_labels_{subset}.json",
                 "prompts": "prompts/prompt_set_{subset}.json",
                 "scores": "alignment_scores/alignment_scores_{subset}.json"}
# World prompt families per subset: counting varies the count of one object; composition pairs two
# objects; comprehensive mixes every family (count, composition and spatial prompts).
SUBSET_FAMILIES = {"counting": ("attribute",), "composition": ("composition",),
                   "comprehensive": ("attribute", "composition", "spatial")}
PAPER_PROMPTS = {"counting": 150, "composition": 300, "comprehensive": 100}  # 50 images each in the paper
N_LABELS = 3
ABSTAIN = -1  # an annotator who gave no valid label (public files); neither a 1 nor a 0
LABEL_VALUES = (0, 1, ABSTAIN)
ImageSource = Callable[[str, int, int], Sequence[np.ndarray]]  # images_for(prompt, n, seed) -> uint8 HxWx3 list


class TIA2FormatError(ValueError):
    """A TIA2 release file (labels, prompt set, score file) or record is malformed; the message names the entry."""


def check_subset(subset: str) -> str:
    """``subset`` if it is a TIA2 subset name; a ValueError listing the accepted names otherwise."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; accepted TIA2 subsets: {SUBSETS}")
    return subset


def release_path(root: str | Path, kind: str, subset: str) -> Path:
    """Path of a TextNorm release file under ``root``: ``kind`` is ``labels``, ``prompts`` or ``scores``."""
    if kind not in RELEASE_FILES:
        raise ValueError(f"unknown release file kind {kind!r}; accepted: {tuple(RELEASE_FILES)}")
    return Path(root) / RELEASE_FILES[kind].format(subset=check_subset(subset))


@dataclass(frozen=True)
class TIA2Record:
    """One image of the benchmark: its key (file name), image path, prompt and three labels in {1, 0, -1}.

    ``labels`` keeps abstentions (-1) as they are in the file; ``majority`` is 1 when at least two of
    the three labels are 1, so an abstention counts against alignment like a 0 does.
    """

    key: str
    image: str
    prompt: str
    labels: tuple[int, ...]
    majority: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", _check_labels(self.labels, self.key))
        object.__setattr__(self, "majority", int(self.labels.count(1) * 2 > len(self.labels)))

    @property
    def mean_label(self) -> float:
        """Share of the three annotators who said the image matches (an abstention is not a yes)."""
        return self.labels.count(1) / len(self.labels)

    @property
    def n_abstained(self) -> int:
        """How many annotators gave no valid label (-1)."""
        return self.labels.count(ABSTAIN)


def _check_labels(labels: Any, key: str) -> tuple[int, ...]:
    if not isinstance(labels, (list, tuple)) or len(labels) != N_LABELS:
        raise TIA2FormatError(f"entry {key!r}: 'human_labels' must be a list of {N_LABELS} labels, got {labels!r}")
    if any(isinstance(v, bool) or v not in LABEL_VALUES for v in labels):
        raise TIA2FormatError(f"entry {key!r}: 'human_labels' must each be 1, 0 or -1 (no valid label), "
                              f"got {labels!r}")
    return tuple(int(v) for v in labels)


def _record(key: str, value: Any) -> TIA2Record:
    if not isinstance(value, dict):
        raise TIA2FormatError(f"entry {key!r}: expected an object with image, caption, human_labels, "
                              f"got {type(value).__name__}")
    missing = [k for k in ("image", "caption", "human_labels") if k not in value]
    if missing:
        raise TIA2FormatError(f"entry {key!r}: missing key(s) {missing}")
    for name in ("image", "caption"):
        if not isinstance(value[name], str) or not value[name].strip():
            raise TIA2FormatError(f"entry {key!r}: {name!r} must be a non-empty string, got {value[name]!r}")
    return TIA2Record(key, value["image"], value["caption"], _check_labels(value["human_labels"], key))


def load_tia2(path: str | Path) -> list[TIA2Record]:
    """Read a TIA2 label file (public or ShapesWorld) into one record per image, in file order."""
    path = Path(path)
    data = read_json(path, "TIA2 file", TIA2FormatError)
    if not isinstance(data, dict):
        raise TIA2FormatError(f"{path}: a TIA2 file is a JSON object keyed by image file name, "
                              f"got a JSON {type(data).__name__}")
    records = []
    for key, value in data.items():
        try:
            records.append(_record(key, value))
        except TIA2FormatError as e:
            raise TIA2FormatError(f"{path}: {e}") from None
    return records


def write_tia2(records: Sequence[TIA2Record], path: str | Path) -> Path:
    """Write records in the public TIA2 format (keys are the records' ``key``); return the path."""
    data = {}
    for r in records:
        if r.key in data:
            raise TIA2FormatError(f"duplicate entry {r.key!r}")
        data[r.key] = {"image": r.image, "caption": r.prompt, "human_labels": list(_check_labels(r.labels, r.key))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n")
    return path


def per_prompt_alignment(records: Sequence[TIA2Record]) -> dict[str, float]:
    """For each prompt (in order of appearance), the share of its images with at least two labels of 1."""
    votes: dict[str, list[int]] = {}
    for r in records:
        votes.setdefault(r.prompt, []).append(r.majority)
    return {p: float(np.mean(v)) for p, v in votes.items()}


def load_images(records: Sequence[TIA2Record], root: str | Path) -> list[np.ndarray]:
    """The records' images as uint8 (H, W, 3) arrays, read from ``root / record.image``."""
    from PIL import Image

    root = Path(root)
    out = []
    for r in records:
        path = root / r.image
        if not path.is_file():
            raise FileNotFoundError(f"image of entry {r.key!r} not found: {path}")
        with Image.open(path) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


def evaluate_tia2(records: Sequence[TIA2Record], scores: Sequence[float] | np.ndarray,
                  ks: Sequence[int] = (5, 10, 25)) -> dict[str, metrics.GroupedMetric]:
    """Per-prompt metrics of a reward's scores, averaged over prompts (TIA2 protocol).

    Keys: ``auroc``, ``auprc``, ``ap{k}`` (majority labels) and ``spearman``, ``kendall`` (share of 1s
    among the three labels; the public score files' correlations do not match majority labels).
    AUROC and AUPRC skip prompts whose images are all aligned or all misaligned (the curve says
    nothing there; AUPRC would be a free 1.0); those and prompts where a metric is otherwise
    undefined (a constant score) are left out of its mean and counted in ``n_undefined``.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    if len(scores) != len(records):
        raise ValueError(f"{len(scores)} scores for {len(records)} records")
    prompts = [r.prompt for r in records]
    majority = np.array([r.majority for r in records])
    mean = np.array([r.mean_label for r in records])
    out = {"auroc": metrics.per_group(metrics.auroc, scores, majority, prompts, skip_single_class=True),
           "auprc": metrics.per_group(metrics.auprc, scores, majority, prompts, skip_single_class=True)}
    for k in ks:
        out[f"ap{k}"] = metrics.per_group(metrics.ap_at_k, scores, majority, prompts, k=k)
    out["spearman"] = metrics.per_group(metrics.spearman, scores, mean, prompts)
    out["kendall"] = metrics.per_group(metrics.kendall, scores, mean, prompts)
    return out


# ---------------------------------------------------------------- ShapesWorld benchmark

def sample_prompts(subset: str, n: int, seed: int = 0, split: str = "any") -> list[str]:
    """``n`` distinct world prompts for a TIA2 subset (families cycle in ``comprehensive``)."""
    from feedbacklab import world

    check_subset(subset)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    families = SUBSET_FAMILIES[subset]
    rng, out = random.Random(seed), {}
    for _ in range(200 * n):
        out.setdefault(world.prompt(world.sample_spec(rng, families[len(out) % len(families)], split)), None)
        if len(out) == n:
            return list(out)
    raise ValueError(f"only {len(out)} distinct {subset} prompts exist in split {split!r}; asked for {n}")


def rendered_images(p_misaligned: float = 0.5, size: int = 64) -> ImageSource:
    """A demo image source (tests, notebook demo; not the real benchmark): exact renders of the prompt,
    or, with probability ``p_misaligned``, of a contrastive prompt that differs in one attribute."""
    from feedbacklab import world

    if not 0.0 <= p_misaligned <= 1.0:
        raise ValueError(f"p_misaligned is a probability, got {p_misaligned!r}")

    def images_for(prompt: str, n: int, seed: int) -> list[np.ndarray]:
        rng = random.Random(seed)
        alternatives = world.contrastive_prompts(prompt)
        out = []
        for _ in range(n):
            text = rng.choice(alternatives) if alternatives and rng.random() < p_misaligned else prompt
            out.append(world.render(world.parse(text), size=size, seed=rng.randrange(2 ** 31))[0])
        return out

    return images_for


def generator_images(pipe: Any, sampler: Any = None, batch_size: int = 32) -> ImageSource:
    """The benchmark's image source for a diffusers pipeline: ``n`` samples of the prompt, image i seeded
    ``seed + i`` (``feedback_sets.sample_images``), as uint8 (H, W, 3) arrays."""
    from feedbacklab.feedback_sets import sample_images

    def images_for(prompt: str, n: int, seed: int) -> list[np.ndarray]:
        x = sample_images(pipe, [prompt] * n, [seed + i for i in range(n)], sampler, batch_size, progress=False)
        return list((x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))

    return images_for


def _check_image(image: Any, prompt: str, i: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images_for({prompt!r}) image {i}: expected uint8 (H, W, 3), "
                         f"got {image.dtype} {image.shape}")
    return image


def build_shapes_tia2(out_dir: str | Path, images_for: ImageSource, n_prompts: Mapping[str, int] | None = None,
                      n_images: int = 50, panel: Any = None, seed: int = 0, split: str = "any",
                      judge: Callable[[str, np.ndarray], Any] | None = None,
                      p_abstain: float = 0.0) -> dict[str, Path]:
    """Write a TIA2-shaped ShapesWorld benchmark; return the label file of each subset.

    For each subset in ``n_prompts`` (default: the paper's sizes / 10), ``n_images`` images per
    prompt come from the caller's ``images_for(prompt, n, seed)`` (e.g. a generator); each is
    judged by the oracle and labelled by a panel of 3 simulated annotators. Layout:
    ``out_dir/<subset>/human_labels_<subset>.json`` with PNGs ``image_<p>_<i>.png`` beside it, plus
    ``oracle_<subset>.json`` (the oracle's verdict per image, for evaluation only). With
    ``p_abstain > 0`` each label is independently replaced by -1 (no valid label) with that
    probability, as in the public files (about 0.04 for composition); the default 0 writes none.
    """
    from PIL import Image

    from feedbacklab.feedback import make_panel

    if judge is None:
        from feedbacklab import world
        judge = world.judge
    panel = panel if panel is not None else make_panel(n=N_LABELS, seed=seed)
    if len(panel) != N_LABELS:
        raise ValueError(f"TIA2 has {N_LABELS} labels per image; the panel has {len(panel)} annotators")
    n_prompts = dict(n_prompts) if n_prompts is not None else {s: PAPER_PROMPTS[s] // 10 for s in SUBSETS}
    unknown = set(n_prompts) - set(SUBSETS)
    if unknown:
        raise ValueError(f"unknown subsets {sorted(unknown)}; accepted: {SUBSETS}")
    if not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    if isinstance(p_abstain, bool) or not isinstance(p_abstain, (int, float)) or not 0.0 <= p_abstain < 1.0:
        raise ValueError(f"p_abstain is a probability in [0, 1), got {p_abstain!r}")
    out_dir = Path(out_dir)
    files = {}
    for s_index, subset in enumerate(SUBSETS):
        if subset not in n_prompts:
            continue
        folder = out_dir / subset
        folder.mkdir(parents=True, exist_ok=True)
        records, oracle = [], {}
        abstain = np.random.default_rng([seed, s_index, 1])
        for p_index, prompt in enumerate(sample_prompts(subset, n_prompts[subset], seed=seed + s_index, split=split)):
            image_seed = int(np.random.SeedSequence([seed, s_index, p_index]).generate_state(1)[0])
            images = list(images_for(prompt, n_images, image_seed))
            if len(images) != n_images:
                raise ValueError(f"images_for({prompt!r}) returned {len(images)} images, asked for {n_images}")
            for i, image in enumerate(images):
                image = _check_image(image, prompt, i)
                key = f"image_{p_index}_{i}.png"
                Image.fromarray(image).save(folder / key)
                j = judge(prompt, image)
                labels = tuple(r.label for r in panel.binary(j, item_id=f"{subset}/{key}"))
                if p_abstain > 0:
                    labels = tuple(ABSTAIN if u < p_abstain else v for v, u in zip(labels, abstain.random(N_LABELS)))
                records.append(TIA2Record(key, key, prompt, labels))
                oracle[key] = {"aligned": int(bool(j.aligned)), "plausibility": float(j.plausibility)}
        files[subset] = write_tia2(records, folder / f"human_labels_{subset}.json")
        (folder / f"oracle_{subset}.json").write_text(json.dumps(oracle, indent=1) + "\n")
    return files
