"""ImageRewardDB (Xu et al., NeurIPS 2023), read lazily with pyarrow, and sets written in its schema.

Hub id ``THUDM/ImageRewardDB`` (now also ``zai-org/ImageRewardDB``). One row per image; the images of one
prompt form a group that annotators ranked. The columns, as the release's loading script declares them
(``ImageRewardDB.py``, ``datasets.Features``) and the dataset card lists them:

- ``image``: ``datasets.Image()`` — in parquet a struct ``{bytes, path}`` (bytes may be null when ``path``
  names a file on disk); plain binary is read too;
- ``prompt_id`` (str, e.g. ``"000864-0061"``), ``prompt`` (str), ``classification`` (str, e.g. ``"People"``);
- ``image_amount_in_total`` (int8): how many images the prompt has in the release;
- ``rank`` (int8): the image's rank within its prompt group, 1 = best;
- ``overall_rating``, ``image_text_alignment_rating``, ``fidelity_rating`` (int8, 1-7 Likert);
- ``image_path`` (str, e.g. ``"images/train/train_1/0280642d-….webp"``): in the card's JSON records and
  the ``metadata-*.parquet`` tables, relative to the repository root; the loading script's features omit it.

Repository layout: ``images/{train,validation,test}/{split}_{n}.zip`` (lossless WebP files plus one JSON of
records per zip) and ``metadata-train.parquet``, ``metadata-validation.parquet``, ``metadata-test.parquet``
(the same records without image bytes, "to access the dataset without downloading the zip files").
``load_imagerewarddb`` reads either kind of parquet: files with an ``image`` column (what ``datasets`` writes
when the builder's output is saved, e.g. ``Dataset.to_parquet``) and the metadata tables, whose
``image_path`` it resolves against the parquet file's folder (the repository root, zips extracted in place).

Sources (the ``search`` tool's stored copies):
https://huggingface.co/datasets/THUDM/ImageRewardDB (card: data fields, the JSON example, metadata tables),
https://huggingface.co/datasets/THUDM/ImageRewardDB/commit/732c478d540468439f22066258d851607a969793 (the
script's features and dtypes), https://huggingface.co/datasets/THUDM/ImageRewardDB/tree/c493721e19e296eb615420036f2a2eed08412bb4
(the file tree), and opendilab/LightRFT ``lightrft/datasets/image_reward_db.py`` (groups by ``prompt_id``;
a smaller ``rank`` is better; ``image_path`` joined to the root).

``ImageRewardGroup.to_ranking`` orders a group by ``rank``; equal ranks keep the release's row order.
The parquet helpers (``parquet_files``, ``check_columns``, ``iter_parquet_rows``, ``image_bytes``, ``decode_image``,
``encode_image``, ``write_parquet``) live in ``datasets.files``, shared with ``datasets.pickapic``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from feedbacklab.feedback.records import Ranking

from .files import (check_columns, decode_image, encode_image, image_bytes, image_tensor, iter_parquet_rows,
                    parquet_files, write_parquet)

RATING_COLUMNS = ("overall_rating", "image_text_alignment_rating", "fidelity_rating")
REQUIRED_COLUMNS = ("prompt_id", "prompt", "rank") + RATING_COLUMNS
OPTIONAL_COLUMNS = ("classification", "image_amount_in_total", "image_path")
IMAGE_SOURCES = ("image", "image_path")  # one of them is needed when images are loaded
ANNOTATOR_ID = "imagerewarddb"


class ImageRewardDBFormatError(ValueError):
    """A file or row that does not follow the ImageRewardDB schema; the message names the file (and row)."""


# ---- ImageRewardDB ----

@dataclass(frozen=True)
class ImageRewardGroup:
    """The images of one prompt in release order, their ranks (1 = best) and 1-7 ratings.

    ``item_ids`` are the ``image_path`` values, or ``<prompt_id>/<k>`` (k = position in the group) where the
    file has none; ``ratings`` maps each of ``RATING_COLUMNS`` to one value per image; ``images`` are
    uint8 (H, W, 3) arrays, ``None`` when loaded with ``load_images=False`` (not compared by ``==``).
    """

    prompt_id: str
    prompt: str
    item_ids: tuple[str, ...]
    ranks: tuple[int, ...]
    ratings: dict[str, tuple[int | None, ...]]
    classification: str = ""
    image_amount_in_total: int | None = None
    images: tuple[np.ndarray, ...] | None = field(default=None, compare=False, repr=False)

    def to_ranking(self) -> Ranking:
        """A ``Ranking`` (annotator ``"imagerewarddb"``): indices sorted by rank, ties in release order."""
        order = sorted(range(len(self.ranks)), key=lambda i: self.ranks[i])
        return Ranking(ANNOTATOR_ID, self.prompt, self.item_ids, tuple(order))


def rankings_from_imagerewarddb(groups: Sequence[ImageRewardGroup]) -> list[Ranking]:
    """One ``Ranking`` per group."""
    return [g.to_ranking() for g in groups]


def ranking_inputs(groups: Sequence[ImageRewardGroup], size: int) -> tuple[list[Ranking], dict[str, Any]]:
    """What ``rewards.fit_ranking_reward`` takes, from release groups: one ``Ranking`` per group and each image as
    a float (3, size, size) tensor in [0, 1] keyed by its item id (resized with PIL's bicubic filter: the release's
    images come in several sizes, the reward trains on one stacked batch). Training the ranking reward on the
    release's train split is the paper's own setting (8k prompts; its Table 3 tests on 466 others)."""
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    images: dict[str, Any] = {}
    for g in groups:
        if g.images is None:
            raise ImageRewardDBFormatError(f"prompt {g.prompt_id!r} was loaded without images "
                                           "(load_imagerewarddb(..., load_images=True) is needed to train on it)")
        images.update({item: image_tensor(img, size) for item, img in zip(g.item_ids, g.images)})
    return rankings_from_imagerewarddb(groups), images


def _int(value: Any, what: str, where: str) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ImageRewardDBFormatError(f"{where}: {what} must be an integer, got {value!r}") from None


def _load_image(row: dict[str, Any], root: Path, where: str) -> np.ndarray:
    data, name = image_bytes(row.get("image"))
    if data:
        return decode_image(data)
    rel = name or row.get("image_path")
    if not rel:
        raise ImageRewardDBFormatError(f"{where}: no image bytes and no image path")
    file = Path(rel) if Path(rel).is_absolute() else root / rel
    if not file.is_file():
        raise FileNotFoundError(f"{where}: image {rel!r} not found under {root}; extract the release's "
                                "images/<split>/<split>_<n>.zip in place next to the metadata parquet, "
                                "or load with load_images=False")
    return decode_image(file.read_bytes())


def load_imagerewarddb(path: str | Path, split: str | None = None, limit: int | None = None,
                       load_images: bool = True, progress: bool = True) -> list[ImageRewardGroup]:
    """Read ImageRewardDB parquet (one file, or a folder of them in sorted order) into prompt groups.

    Every file's columns are checked (from the footers) before any row is read. Rows are read in batches,
    with only the needed columns (no ``image`` column when ``load_images=False``); groups come in order of
    their first row. ``limit`` keeps the first ``limit`` groups and stops reading at the first row of the
    next one, so it assumes a group's rows are contiguous, as in the release.
    """
    files = parquet_files(path, split)
    check_columns(files, REQUIRED_COLUMNS, ImageRewardDBFormatError, "ImageRewardDB",
                  IMAGE_SOURCES if load_images else ())
    columns = list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS) + (["image"] if load_images else [])
    groups: dict[str, dict[str, Any]] = {}
    with contextlib.closing(iter_parquet_rows(files, columns, "ImageRewardDB", progress)) as rows:
        for f, n, row in rows:
            where = f"{f.name} row {n}"
            pid = row["prompt_id"]
            if pid is None or row["prompt"] is None:
                raise ImageRewardDBFormatError(f"{where}: prompt_id and prompt must not be null")
            pid = str(pid)
            if pid not in groups:
                if limit is not None and len(groups) >= limit:
                    break
                groups[pid] = {"prompt": row["prompt"], "classification": row.get("classification") or "",
                               "total": _int(row.get("image_amount_in_total"), "image_amount_in_total", where),
                               "ids": [], "ranks": [], "ratings": {c: [] for c in RATING_COLUMNS}, "images": []}
            g = groups[pid]
            if row["prompt"] != g["prompt"]:
                raise ImageRewardDBFormatError(f"{where}: prompt differs from the earlier rows of prompt_id {pid!r}")
            rank = _int(row["rank"], "rank", where)
            if rank is None:
                raise ImageRewardDBFormatError(f"{where}: rank is null")
            item_id = row.get("image_path") or f"{pid}/{len(g['ids'])}"
            if item_id in g["ids"]:
                raise ImageRewardDBFormatError(f"{where}: image {item_id!r} appears twice in prompt {pid!r}")
            g["ids"].append(item_id)
            g["ranks"].append(rank)
            for c in RATING_COLUMNS:
                g["ratings"][c].append(_int(row[c], c, where))
            if load_images:
                g["images"].append(_load_image(row, f.parent, where))
    return [ImageRewardGroup(pid, g["prompt"], tuple(g["ids"]), tuple(g["ranks"]),
                             {c: tuple(v) for c, v in g["ratings"].items()}, g["classification"], g["total"],
                             tuple(g["images"]) if load_images else None)
            for pid, g in groups.items()]


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      ("prompt_id", pa.string()), ("prompt", pa.string()), ("classification", pa.string()),
                      ("image_amount_in_total", pa.int8()), ("rank", pa.int8())]
                     + [(c, pa.int8()) for c in RATING_COLUMNS] + [("image_path", pa.string())])


def _image_cell(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        return {"bytes": encode_image(value, "PNG"), "path": None}
    data, name = image_bytes(value)
    return {"bytes": data, "path": name or None}


def write_imagerewarddb(groups_or_rows: Sequence[ImageRewardGroup | Mapping[str, Any]], path: str | Path) -> Path:
    """Write groups (or row dicts in the release's columns) as one ImageRewardDB parquet file.

    Images are stored as PNG in the ``{bytes, path}`` struct (arrays are encoded; bytes pass through);
    a group's ``item_ids`` become ``image_path``; missing optional fields are null.
    """
    rows: list[dict[str, Any]] = []
    for item in groups_or_rows:
        if isinstance(item, ImageRewardGroup):
            images = item.images if item.images is not None else [None] * len(item.item_ids)
            for k, (item_id, rank, image) in enumerate(zip(item.item_ids, item.ranks, images)):
                rows.append({"image": _image_cell(image), "prompt_id": item.prompt_id, "prompt": item.prompt,
                             "classification": item.classification,
                             "image_amount_in_total": (item.image_amount_in_total
                                                       if item.image_amount_in_total is not None else len(item.ranks)),
                             "rank": rank, **{c: item.ratings[c][k] for c in RATING_COLUMNS}, "image_path": item_id})
        else:
            rows.append({**item, "image": _image_cell(item.get("image"))})
    return write_parquet(rows, _schema(), path)
