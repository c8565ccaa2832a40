"""The RLHF-V release (Yu et al., CVPR 2024), read with pyarrow, and world-generated sets written in its schema.

Hub id ``openbmb/RLHF-V-Dataset`` (formerly ``HaoyeZhang/RLHF-V-Dataset``): one parquet file,
``RLHF-V-Dataset.parquet``, one row per correction with the columns

- ``ds_name`` (str), ``idx`` (int64), ``image_path`` (str), ``origin_dataset`` (str);
- ``image``: a struct ``{bytes, path}`` (the encoded image; ``datasets`` turns it into a PIL image);
- ``text``: a JSON string ``{"question": …, "chosen": …, "rejected": …}`` — chosen is the annotator's
  correction, rejected the model's original answer;
- ``origin_split``: a JSON string of metadata (the answering model, the question type).

RLAIF-V (``openbmb/RLAIF-V-Dataset``) has ``question`` / ``chosen`` / ``rejected`` as plain columns; both load.
Neither stores *which* segments were corrected, which dense DPO needs: ``segment_spans`` recomputes them with a
word-level diff (``difflib`` over whitespace-separated words), the step Muffin's users write themselves.
"""
from __future__ import annotations

import difflib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .files import image_tensor

TEXT_KEYS = ("question", "chosen", "rejected")


class RLHFVFormatError(ValueError):
    """A file or record that does not follow the RLHF-V (or RLAIF-V) parquet schema."""


@dataclass(frozen=True)
class RLHFVRecord:
    """One correction: the question, the chosen (corrected) and rejected (original) answers, the image bytes."""

    idx: int
    question: str
    chosen: str
    rejected: str
    image_bytes: bytes | None
    image_path: str = ""
    ds_name: str = ""
    origin_dataset: str = ""
    origin_split: dict[str, Any] = field(default_factory=dict)
    chosen_spans: tuple[tuple[int, int], ...] = ()    # changed character ranges of ``chosen``
    rejected_spans: tuple[tuple[int, int], ...] = ()  # the ranges of ``rejected`` they replaced

    def image_array(self) -> np.ndarray:
        """The image as uint8 (H, W, 3)."""
        from PIL import Image

        if not self.image_bytes:
            raise RLHFVFormatError(f"record {self.idx} carries no image bytes (image_path {self.image_path!r})")
        return np.asarray(Image.open(io.BytesIO(self.image_bytes)).convert("RGB"))


def segment_spans(rejected: str, chosen: str) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]:
    """Character spans of the changed segments: ``(spans in rejected, spans in chosen)``, paired.

    Words are maximal runs of non-space characters; segments come from a minimal word diff, so on single-spaced
    text they are the same segments as ``feedback.caption_edits``. An insertion has an empty span on the rejected
    side, a deletion on the chosen side.
    """
    a = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", rejected)]
    b = [(m.start(), m.end(), m.group()) for m in re.finditer(r"\S+", chosen)]

    def span(words: list[tuple[int, int, str]], i1: int, i2: int, text: str) -> tuple[int, int]:
        if i1 < i2:
            return words[i1][0], words[i2 - 1][1]
        pos = words[i1][0] if i1 < len(words) else len(text.rstrip())
        return pos, pos

    ops = difflib.SequenceMatcher(None, [w for *_, w in a], [w for *_, w in b], autojunk=False).get_opcodes()
    changed = [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in ops if tag != "equal"]
    return (tuple(span(a, i1, i2, rejected) for i1, i2, _, _ in changed),
            tuple(span(b, j1, j2, chosen) for _, _, j1, j2 in changed))


def _text_fields(row: dict[str, Any], where: str) -> dict[str, str]:
    if "text" in row and row["text"] is not None:
        try:
            text = json.loads(row["text"]) if isinstance(row["text"], str) else dict(row["text"])
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise RLHFVFormatError(f"{where}: 'text' is not a JSON object with {TEXT_KEYS}: {exc}") from exc
    else:
        text = row
    missing = [k for k in TEXT_KEYS if not isinstance(text.get(k), str)]
    if missing:
        raise RLHFVFormatError(f"{where}: missing {missing}; each record needs the question and the chosen and "
                               "rejected answers, in a JSON 'text' column (RLHF-V) or as columns (RLAIF-V)")
    return {k: text[k] for k in TEXT_KEYS}


def _image(value: Any) -> tuple[bytes | None, str]:
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path") or ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), ""
    return None, ""


def load_rlhfv(path: str | Path, limit: int | None = None) -> list[RLHFVRecord]:
    """Read an RLHF-V (or RLAIF-V) parquet file into records, with the changed segments computed."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no RLHF-V parquet file at {path}; download RLHF-V-Dataset.parquet from the hub "
                                "dataset openbmb/RLHF-V-Dataset (or pass a directory's .parquet file)")
    table = pq.read_table(path)
    if "text" not in table.column_names and not set(TEXT_KEYS) <= set(table.column_names):
        raise RLHFVFormatError(f"{path}: columns {table.column_names}; expected RLHF-V's 'text' (JSON) or "
                               f"RLAIF-V's {list(TEXT_KEYS)}")
    rows = table.slice(0, limit).to_pylist() if limit is not None else table.to_pylist()
    records = []
    for n, row in enumerate(rows):
        idx = int(row["idx"]) if row.get("idx") is not None and str(row["idx"]).lstrip("-").isdigit() else n
        text = _text_fields(row, f"{path.name} row {n} (idx {idx})")
        if text["chosen"] == text["rejected"]:
            raise RLHFVFormatError(f"{path.name} row {n} (idx {idx}): chosen and rejected answers are identical")
        rejected_spans, chosen_spans = segment_spans(text["rejected"], text["chosen"])
        image_bytes, image_name = _image(row.get("image"))
        origin = row.get("origin_split")
        try:
            origin = json.loads(origin) if isinstance(origin, str) and origin else (origin or {})
        except json.JSONDecodeError:
            origin = {"raw": origin}
        records.append(RLHFVRecord(idx, text["question"], text["chosen"], text["rejected"], image_bytes,
                                   row.get("image_path") or image_name, row.get("ds_name") or "",
                                   row.get("origin_dataset") or "", origin if isinstance(origin, dict) else {"raw": origin},
                                   chosen_spans, rejected_spans))
    return records


def write_rlhfv(path: str | Path, records: Sequence[RLHFVRecord]) -> Path:
    """Write records as one RLHF-V parquet file (the release's columns and encodings)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not records:
        raise ValueError("no records to write")
    schema = pa.schema([("ds_name", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("text", pa.string()), ("origin_dataset", pa.string()), ("origin_split", pa.string()),
                        ("idx", pa.int64()), ("image_path", pa.string())])
    rows = [{"ds_name": r.ds_name, "image": {"bytes": r.image_bytes, "path": r.image_path},
             "text": json.dumps({"question": r.question, "chosen": r.chosen, "rejected": r.rejected}),
             "origin_dataset": r.origin_dataset, "origin_split": json.dumps(r.origin_split), "idx": int(r.idx),
             "image_path": r.image_path} for r in records]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) → PNG bytes, the encoding ``write_rlhfv`` stores."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def records_from_corrections(corrections: Sequence[Any], images: np.ndarray, question: str = "Describe the image.",
                             ds_name: str = "shapesworld", model: str = "shapes-captioner-crop") -> list[RLHFVRecord]:
    """World ``CaptionCorrection`` records (changed ones) with their uint8 images as RLHF-V records."""
    if len(corrections) != len(images):
        raise ValueError(f"need one image per correction, got {len(corrections)} and {len(images)}")
    out = []
    for c, img in zip(corrections, images):
        if c is None or c.corrected == c.original:
            continue
        rejected_spans, chosen_spans = segment_spans(c.original, c.corrected)
        out.append(RLHFVRecord(len(out), question, c.corrected, c.original, png_bytes(img), f"{c.item_id}.png",
                               ds_name, "ShapesWorld renders",
                               {"model": model, "annotator": c.annotator_id, "type": "detailed description"},
                               chosen_spans, rejected_spans))
    return out


def summarize_rlhfv(records: Sequence[RLHFVRecord]) -> dict[str, float]:
    """What an RLHF-V-format set holds, beside the paper's 1.4k pairs: pairs, changed segments per pair, the words of
    the chosen and rejected answers, and the share of their characters the corrections changed."""
    if not records:
        raise ValueError("summarize_rlhfv needs at least one record")
    changed = [sum(e - s for s, e in r.rejected_spans) / max(len(r.rejected), 1) for r in records]
    return {"pairs": float(len(records)),
            "changed_segments_per_pair": float(np.mean([len(r.rejected_spans) for r in records])),
            "words_chosen": float(np.mean([len(r.chosen.split()) for r in records])),
            "words_rejected": float(np.mean([len(r.rejected.split()) for r in records])),
            "share_of_rejected_changed": float(np.mean(changed))}


def to_preference_pairs(records: Sequence[RLHFVRecord], question: bool | str = False, size: int | None = None) -> list:
    """``finetune.PreferencePair`` per record (image as float (3, H, W) in [0, 1]); ``question`` True keeps each
    record's instruction, False drops it (captioners, which take none), and a string replaces it for every pair
    (a decoder-only VLM's ``LoadedVLM.question``: its prompt with the image placeholders the model needs).
    ``size`` resizes every image to (size, size) with PIL's bicubic filter: the real release's images come in many
    sizes, and a training batch stacks them."""
    from feedbacklab.finetune.preference import PreferencePair

    def instruction(r: RLHFVRecord) -> str:
        return question if isinstance(question, str) else (r.question if question else "")

    return [PreferencePair(image_tensor(r.image_array(), size), r.chosen, r.rejected, r.chosen_spans,
                           r.rejected_spans, instruction(r), str(r.idx)) for r in records]
