"""Pick-a-Pic v2 (Kirstain et al., NeurIPS 2023), read lazily with pyarrow, and pairs written in its schema.

Hub id ``yuvalkirstain/pickapic_v2``: parquet shards (``data/{split}-NNNNN-of-MMMMM-<hash>.parquet``, and the
hub's conversion ``default/{split}/NNNN.parquet``) of the splits ``train`` (959,040 rows), ``validation``,
``test``, ``validation_unique``, ``test_unique``. One row per comparison of two images of one caption, with
the features of the dataset card:

- ``caption`` (str); ``jpg_0``, ``jpg_1`` (binary: the JPEG bytes — "we have in jpg_0 and jpg_1 the image
  bytes"); ``image_0_uid``, ``image_1_uid``, ``image_0_url``, ``image_1_url`` (str);
- ``label_0``, ``label_1`` (float64): 1/0 for a preference, 0.5/0.5 for a tie;
- ``has_label`` (bool: the user picked something), ``are_different`` (bool: the two images differ),
  ``best_image_uid`` (str), ``model_0``, ``model_1`` (str), ``ranking_id``, ``user_id`` (int64),
  ``created_at`` (timestamp[ns]), ``num_example_per_prompt`` (int64), ``__index_level_0__`` (int64).

Sources (the ``search`` tool's stored copies): https://huggingface.co/datasets/yuvalkirstain/pickapic_v2/blob/main/README.md
(features, splits, the note on ``jpg_0``/``jpg_1``),
https://huggingface.co/datasets/yuvalkirstain/pickapic_v2/tree/f935705d28085295ef050ccc20269fd4f4ffeb57/default/validation
(shards) and yuvalkirstain/PickScore ``trainer/datasetss/clip_hf_dataset.py`` (the authors' loader: the same
column names; filters ``keep_only_different`` on ``are_different`` and ``keep_only_with_label`` on
``has_label``; ``label_0 == 1`` means image 0 won; an image cell may also be a ``{bytes, ...}`` dict).

``load_pickapic`` skips rows with ``has_label`` false (no choice was made) or ``are_different`` false (the two
images are the same), and ties when ``include_ties=False``; ``PickAPicSet.skipped`` counts them and the
count is logged. Other label pairs than 1/0, 0/1 and 0.5/0.5 on a labelled row are a ``PickAPicFormatError``.
"""
from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from feedbacklab.feedback.records import Ranking

from .files import (check_columns, decode_image, encode_image, image_bytes, iter_parquet_rows,
                            parquet_files, write_parquet)

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("caption", "label_0", "label_1", "image_0_uid", "image_1_uid", "user_id", "ranking_id",
                    "has_label", "are_different")
IMAGE_COLUMNS = ("jpg_0", "jpg_1")  # required too when images are loaded
OPTIONAL_COLUMNS = ("best_image_uid", "model_0", "model_1")
LABELS = ((1.0, 0.0), (0.0, 1.0), (0.5, 0.5))


class PickAPicFormatError(ValueError):
    """A file or row that does not follow the Pick-a-Pic v2 schema; the message names the file (and row)."""


@dataclass(frozen=True)
class PickAPicPair:
    """One labelled comparison: the caption, both images' uids and uint8 (H, W, 3) images, the labels.

    ``images`` are ``None`` when loaded with ``load_images=False`` (not compared by ``==``).
    """

    caption: str
    image_0_uid: str
    image_1_uid: str
    label_0: float
    label_1: float
    user_id: int
    ranking_id: int
    model_0: str = ""
    model_1: str = ""
    best_image_uid: str = ""
    images: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False, repr=False)

    @property
    def tie(self) -> bool:
        """Whether the user rated both images the same (0.5 / 0.5)."""
        return self.label_0 == self.label_1

    @property
    def winner(self) -> int | None:
        """0 or 1, the preferred image; ``None`` for a tie."""
        return None if self.tie else int(self.label_1 > self.label_0)

    def to_ranking(self) -> Ranking:
        """A k = 2 ``Ranking`` (annotator ``str(user_id)``, items the two uids); a tie has none (ValueError)."""
        if self.winner is None:
            raise ValueError(f"ranking {self.ranking_id} is a tie; it has no order (load with include_ties=False "
                             "or use rankings_from_pickapic, which skips ties)")
        return Ranking(str(self.user_id), self.caption, (self.image_0_uid, self.image_1_uid),
                       (self.winner, 1 - self.winner))


@dataclass
class PickAPicSet:
    """What ``load_pickapic`` returns: the pairs, how many rows were read, how many were skipped and why."""

    pairs: list[PickAPicPair]
    n_rows: int
    skipped: dict[str, int]  # "no_label", "not_different", "tie"

    def __len__(self) -> int:
        return len(self.pairs)

    def __iter__(self) -> Iterator[PickAPicPair]:
        return iter(self.pairs)

    def __getitem__(self, i: int) -> PickAPicPair:
        return self.pairs[i]


def rankings_from_pickapic(pairs: Sequence[PickAPicPair]) -> list[Ranking]:
    """The ``Ranking`` of every pair that is not a tie."""
    return [p.to_ranking() for p in pairs if not p.tie]


def _labels(row: dict[str, Any], where: str) -> tuple[float, float]:
    try:
        labels = (float(row["label_0"]), float(row["label_1"]))
    except (TypeError, ValueError):
        labels = (row["label_0"], row["label_1"])
    if labels not in LABELS:
        raise PickAPicFormatError(f"{where}: labels (label_0, label_1) = {labels}; expected one of {LABELS}")
    return labels


def _image(value: Any, column: str, where: str) -> np.ndarray:
    data, _ = image_bytes(value)
    if not data:
        raise PickAPicFormatError(f"{where}: {column} holds no image bytes")
    return decode_image(data)


def load_pickapic(path: str | Path, limit: int | None = None, load_images: bool = True, include_ties: bool = True,
                  progress: bool = True, split: str | None = None) -> PickAPicSet:
    """Read Pick-a-Pic v2 parquet (one file, or a folder of them in sorted order; ``split`` picks one split's
    shards) into pairs, batch by batch, reading only the needed columns (no JPEG columns without images).

    Every file's columns are checked (from the footers) before any row is read. ``limit`` caps the number
    of pairs returned; reading stops there.
    """
    files = parquet_files(path, split)
    check_columns(files, REQUIRED_COLUMNS + (IMAGE_COLUMNS if load_images else ()), PickAPicFormatError,
                  "Pick-a-Pic v2")
    columns = REQUIRED_COLUMNS + OPTIONAL_COLUMNS + (IMAGE_COLUMNS if load_images else ())
    pairs: list[PickAPicPair] = []
    skipped = {"no_label": 0, "not_different": 0, "tie": 0}
    n_rows = 0
    with contextlib.closing(iter_parquet_rows(files, columns, "Pick-a-Pic", progress)) as rows:
        for f, n, row in rows:
            if limit is not None and len(pairs) >= limit:
                break
            n_rows += 1
            where = f"{f.name} row {n} (ranking_id {row['ranking_id']})"
            if not row["has_label"]:
                skipped["no_label"] += 1
                continue
            if not row["are_different"]:
                skipped["not_different"] += 1
                continue
            label_0, label_1 = _labels(row, where)
            if label_0 == label_1 and not include_ties:
                skipped["tie"] += 1
                continue
            if row["user_id"] is None or row["ranking_id"] is None:
                raise PickAPicFormatError(f"{where}: user_id and ranking_id must not be null")
            images = ((_image(row["jpg_0"], "jpg_0", where), _image(row["jpg_1"], "jpg_1", where))
                      if load_images else None)
            pairs.append(PickAPicPair(row["caption"] or "", str(row["image_0_uid"]), str(row["image_1_uid"]),
                                      label_0, label_1, int(row["user_id"]), int(row["ranking_id"]),
                                      row.get("model_0") or "", row.get("model_1") or "",
                                      row.get("best_image_uid") or "", images))
    logger.info("Pick-a-Pic: %d pairs from %d rows; skipped %s", len(pairs), n_rows, skipped)
    return PickAPicSet(pairs, n_rows, skipped)


def _schema() -> Any:
    import pyarrow as pa

    s, i64 = pa.string(), pa.int64()
    return pa.schema([("are_different", pa.bool_()), ("best_image_uid", s), ("caption", s),
                      ("created_at", pa.timestamp("ns")), ("has_label", pa.bool_()), ("image_0_uid", s),
                      ("image_0_url", s), ("image_1_uid", s), ("image_1_url", s), ("jpg_0", pa.binary()),
                      ("jpg_1", pa.binary()), ("label_0", pa.float64()), ("label_1", pa.float64()),
                      ("model_0", s), ("model_1", s), ("ranking_id", i64), ("user_id", i64),
                      ("num_example_per_prompt", i64), ("__index_level_0__", i64)])


def _jpeg(value: Any) -> bytes | None:
    if isinstance(value, np.ndarray):
        return encode_image(value, "JPEG")
    return image_bytes(value)[0]


def _row(pair: PickAPicPair) -> dict[str, Any]:
    images = pair.images if pair.images is not None else (None, None)
    best = pair.best_image_uid or ("" if pair.winner is None else (pair.image_0_uid, pair.image_1_uid)[pair.winner])
    return {"are_different": True, "best_image_uid": best, "caption": pair.caption, "has_label": True,
            "image_0_uid": pair.image_0_uid, "image_1_uid": pair.image_1_uid, "jpg_0": images[0],
            "jpg_1": images[1], "label_0": pair.label_0, "label_1": pair.label_1, "model_0": pair.model_0,
            "model_1": pair.model_1, "ranking_id": pair.ranking_id, "user_id": pair.user_id}


def write_pickapic(pairs_or_rows: Sequence[PickAPicPair | Mapping[str, Any]], path: str | Path) -> Path:
    """Write pairs (or row dicts in the release's columns) as one Pick-a-Pic v2 parquet file.

    Image arrays are stored as JPEG (quality 95), bytes pass through; ``num_example_per_prompt`` counts the
    written rows per caption and ``__index_level_0__`` numbers them, unless a row dict gives them.
    """
    rows = [_row(p) if isinstance(p, PickAPicPair) else dict(p) for p in pairs_or_rows]
    per_caption = Counter(r.get("caption") for r in rows)
    for n, r in enumerate(rows):
        r["jpg_0"], r["jpg_1"] = _jpeg(r.get("jpg_0")), _jpeg(r.get("jpg_1"))
        r.setdefault("num_example_per_prompt", per_caption[r.get("caption")])
        r.setdefault("__index_level_0__", n)
    return write_parquet(rows, _schema(), path)
