"""An annotation task: the items a person annotates and the feedback kinds asked for each.

A task is a JSON file (``load_task``) listing items — an id, a prompt, one image (k >= 2 for a ranking), a caption
to correct — with image paths relative to the file. Everything is checked when the task is built, so a bad task
fails with a message before the app opens, never halfway through a session.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

FEEDBACK_KINDS = ("binary", "likert", "ranking", "points", "keywords", "correction")


class TaskError(ValueError):
    """An annotation task (or its JSON file) is malformed."""


@dataclass(frozen=True)
class TaskItem:
    """One thing to annotate: a prompt, its image(s) and, for a correction, the caption."""

    item_id: str
    prompt: str
    images: tuple[Any, ...]                # paths (relative to the task's root) or uint8 (H, W, 3) arrays
    image_ids: tuple[str, ...] = ()        # one per image; default item_id, or item_id/k for several
    caption: str | None = None
    tokens: tuple[str, ...] = ()           # prompt tokens for keyword labels; default the RichHF tokenisation

    def __post_init__(self) -> None:
        object.__setattr__(self, "item_id", str(self.item_id))
        object.__setattr__(self, "images", tuple(self.images))
        ids = tuple(str(i) for i in self.image_ids) or (
            (self.item_id,) if len(self.images) == 1 else tuple(f"{self.item_id}/{k}" for k in range(len(self.images))))
        object.__setattr__(self, "image_ids", ids)
        if not self.tokens:
            from feedbacklab.datasets.richhf import richhf_tokens

            object.__setattr__(self, "tokens", tuple(richhf_tokens(self.prompt)))


@dataclass
class AnnotationTask:
    """A named list of items and the feedback kinds asked for each (validated on construction)."""

    name: str
    kinds: tuple[str, ...]
    items: list[TaskItem]
    point_radius: float | None = None       # pixels; None: 0.08 of the image side, as the simulated annotators
    root: Path | None = None
    _cache: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.kinds = tuple(self.kinds)
        self.root = Path(self.root) if self.root is not None else None
        self.validate()

    def validate(self) -> None:
        """Raise ``TaskError`` naming what is wrong and what is accepted."""
        if not self.name or not isinstance(self.name, str):
            raise TaskError(f"a task needs a non-empty name, got {self.name!r}")
        unknown = [k for k in self.kinds if k not in FEEDBACK_KINDS]
        if unknown or not self.kinds:
            raise TaskError(f"unknown feedback kind(s) {unknown or '(none given)'}; accepted: {', '.join(FEEDBACK_KINDS)}")
        if not self.items:
            raise TaskError(f"task {self.name!r} has no items")
        seen: set[str] = set()
        for item in self.items:
            if item.item_id in seen:
                raise TaskError(f"duplicate item id {item.item_id!r}: every item needs its own id")
            seen.add(item.item_id)
            if not item.images:
                raise TaskError(f"item {item.item_id!r} lists no image")
            if len(item.image_ids) != len(item.images) or len(set(item.image_ids)) != len(item.image_ids):
                raise TaskError(f"item {item.item_id!r}: image_ids must be distinct, one per image")
            if "ranking" in self.kinds and len(item.images) < 2:
                raise TaskError(f"item {item.item_id!r}: a ranking needs at least two images, got {len(item.images)}")
            if "ranking" not in self.kinds and len(item.images) != 1:
                raise TaskError(f"item {item.item_id!r}: kinds {self.kinds} take one image per item, got {len(item.images)}")
            if "correction" in self.kinds and not item.caption:
                raise TaskError(f"item {item.item_id!r}: a correction task needs a 'caption' to correct")
            for img in item.images:
                if isinstance(img, np.ndarray):
                    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                        raise TaskError(f"item {item.item_id!r}: an array image must be uint8 (H, W, 3), got {img.dtype} {img.shape}")
                elif not self._path(img).is_file():
                    raise TaskError(f"item {item.item_id!r}: image file {self._path(img)} does not exist")

    def _path(self, image: Any) -> Path:
        p = Path(image)
        return p if p.is_absolute() or self.root is None else self.root / p

    def image(self, item: TaskItem, k: int = 0) -> np.ndarray:
        """Image ``k`` of ``item`` as uint8 (H, W, 3)."""
        img = item.images[k]
        if isinstance(img, np.ndarray):
            return img
        key = (item.item_id, k)
        if key not in self._cache:
            from PIL import Image

            self._cache[key] = np.asarray(Image.open(self._path(img)).convert("RGB"), dtype=np.uint8)
        return self._cache[key]

    def images_by_id(self) -> dict[str, np.ndarray]:
        """Every image of the task by its image id (what records' ``item_id`` refers to)."""
        return {iid: self.image(item, k) for item in self.items for k, iid in enumerate(item.image_ids)}

    def item(self, item_id: str) -> TaskItem:
        for it in self.items:
            if it.item_id == item_id:
                return it
        raise TaskError(f"task {self.name!r} has no item {item_id!r}")


def _require(d: dict, key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise TaskError(f"{where}: missing key {key!r}")
    if not isinstance(d[key], types):
        raise TaskError(f"{where}: {key!r} must be {types}, got {type(d[key]).__name__}")
    return d[key]


def load_task(path: str | Path) -> AnnotationTask:
    """Read a task JSON file; image paths are relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise TaskError(f"task file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TaskError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: expected an object with 'name', 'kinds' and 'items'")
    items = []
    for n, d in enumerate(_require(data, "items", list, str(path))):
        where = f"{path}: item {n}"
        if not isinstance(d, dict):
            raise TaskError(f"{where}: expected an object, got {type(d).__name__}")
        if "image" in d and "images" in d:
            raise TaskError(f"{where}: give 'image' or 'images', not both")
        images = [_require(d, "image", str, where)] if "image" in d else _require(d, "images", list, where)
        items.append(TaskItem(str(_require(d, "id", (str, int), where)), _require(d, "prompt", str, where),
                              tuple(images), tuple(d.get("image_ids", ())), d.get("caption"), tuple(d.get("tokens", ()))))
    return AnnotationTask(_require(data, "name", str, str(path)), tuple(_require(data, "kinds", list, str(path))), items,
                          data.get("point_radius"), path.parent)


def save_task(task: AnnotationTask, path: str | Path) -> Path:
    """Write ``task`` as JSON; array images are written as PNG files in ``<path stem>_images/``."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = []
    for item in task.items:
        files = []
        for k, img in enumerate(item.images):
            if isinstance(img, np.ndarray):
                rel = Path(f"{path.stem}_images") / f"{item.image_ids[k].replace('/', '_')}.png"
                (path.parent / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path.parent / rel)
                files.append(rel.as_posix())
            else:
                files.append(str(task._path(img).resolve()))
        d = {"id": item.item_id, "prompt": item.prompt, "images": files, "image_ids": list(item.image_ids),
             "tokens": list(item.tokens)}
        if item.caption is not None:
            d["caption"] = item.caption
        items.append(d)
    path.write_text(json.dumps({"name": task.name, "kinds": list(task.kinds), "point_radius": task.point_radius,
                                "items": items}, indent=1))
    return path


def task_from_arrays(name: str, kinds: Sequence[str], prompts: Sequence[str], images: Sequence[Any],
                     item_ids: Sequence[str] | None = None, captions: Sequence[str] | None = None,
                     point_radius: float | None = None) -> AnnotationTask:
    """A task from in-memory images: ``images[i]`` is one uint8 array, or a list of them for a ranking."""
    if len(prompts) != len(images) or (captions is not None and len(captions) != len(prompts)):
        raise TaskError(f"prompts, images (and captions) need one entry per item: {len(prompts)} vs {len(images)}")
    ids = list(item_ids) if item_ids is not None else [f"item{i:04d}" for i in range(len(prompts))]
    items = [TaskItem(ids[i], prompts[i], tuple(images[i]) if isinstance(images[i], (list, tuple)) else (images[i],),
                      caption=None if captions is None else captions[i]) for i in range(len(prompts))]
    return AnnotationTask(name, tuple(kinds), items, point_radius)


def demo_task(directory: str | Path, kinds: Sequence[str] = ("binary", "points"), n: int = 8, seed: int = 0,
              size: int = 64) -> Path:
    """Write a small ShapesWorld task (renders of seen-split prompts; captions from the world for corrections) to
    ``directory/task.json`` and return its path: what ``make annotate`` opens when no task is given."""
    from feedbacklab import world
    from feedbacklab.models import data as wdata

    k = 3 if "ranking" in kinds else 1
    specs = wdata.sample_specs(n * k, seed=seed, split="seen")
    arrays, scenes = wdata.render_specs(specs, size=size, seed=seed)
    prompts = [world.describe(scenes[i * k]) for i in range(n)]
    images = [list(arrays[i * k:(i + 1) * k]) if k > 1 else arrays[i] for i in range(n)]
    task = task_from_arrays(f"demo-{'-'.join(kinds)}", kinds, prompts, images,
                            captions=prompts if "correction" in kinds else None)
    return save_task(task, Path(directory) / "task.json")
