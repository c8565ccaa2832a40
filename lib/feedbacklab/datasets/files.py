"""File helpers the dataset loaders share: JSON, and the parquet files of Hugging Face dataset releases (lazy
batches, column checks from the footer, image cells, writers with the ``datasets`` features metadata)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np


def read_json(path: str | Path, what: str, error: type[ValueError]) -> Any:
    """The parsed JSON of ``path``; a missing file is a FileNotFoundError naming ``what``, bad JSON an ``error``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None


def parquet_files(path: str | Path, split: str | None = None) -> list[Path]:
    """The ``.parquet`` files at ``path`` (a file, or a folder searched recursively), sorted by relative path.

    ``split`` keeps the files of one split in a folder: a name ``metadata-{split}.parquet``, a name starting
    ``{split}-`` / ``{split}_`` (``train-00000-of-00002-….parquet``) or a folder named ``split`` on the way.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"no parquet file or folder at {path}")
    files = sorted(path.rglob("*.parquet"), key=lambda f: f.relative_to(path).parts)
    if split is not None:
        def in_split(f: Path) -> bool:
            stem = f.stem
            return (stem in (split, f"metadata-{split}") or stem.startswith((f"{split}-", f"{split}_"))
                    or split in f.relative_to(path).parts[:-1])
        kept = [f for f in files if in_split(f)]
        if not kept:
            raise FileNotFoundError(f"no parquet file of split {split!r} under {path}; found "
                                    f"{[str(f.relative_to(path)) for f in files][:20]}")
        files = kept
    if not files:
        raise FileNotFoundError(f"no .parquet files under {path}")
    return files


def check_columns(files: Sequence[Path], required: Sequence[str], error: type[ValueError], dataset: str,
                  any_of: Sequence[str] = ()) -> None:
    """Raise ``error`` naming the first file (read from its footer only) that lacks a required column.

    ``any_of``: at least one of these columns must be present too.
    """
    import pyarrow.parquet as pq

    for f in files:
        names = pq.read_schema(f).names
        missing = [c for c in required if c not in names]
        if any_of and not set(any_of) & set(names):
            missing.append(" or ".join(any_of))
        if missing:
            raise error(f"{f}: missing columns {missing}; {dataset} files need {list(required)}"
                        + (f" and one of {list(any_of)}" if any_of else "") + f" (the file has {names})")


def iter_parquet_rows(files: Sequence[Path], columns: Sequence[str], desc: str, progress: bool = True,
                      batch_size: int = 64) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """``(file, row number in file, row dict)`` for every row, reading only ``columns`` (those a file has)
    batch by batch, with a tqdm bar over all rows."""
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    total = sum(pq.read_metadata(f).num_rows for f in files)
    with tqdm(total=total, desc=desc, unit="row", disable=not progress) as bar:
        for f in files:
            with pq.ParquetFile(f) as pf:
                names = set(pf.schema_arrow.names)
                n = 0
                for batch in pf.iter_batches(batch_size=batch_size, columns=[c for c in columns if c in names]):
                    for row in batch.to_pylist():
                        yield f, n, row
                        n += 1
                    bar.update(batch.num_rows)


def image_bytes(value: Any) -> tuple[bytes | None, str]:
    """``(bytes, path)`` of an image cell: a ``datasets.Image`` struct ``{bytes, path}`` or plain bytes."""
    if isinstance(value, Mapping):
        return value.get("bytes"), value.get("path") or ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), ""
    return None, ""


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, WebP, …) → uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def image_tensor(image: np.ndarray, size: int | None = None) -> Any:
    """uint8 (H, W, 3) → float (3, H, W) torch tensor in [0, 1]; with ``size``, first resized to (size, size) by
    PIL's bicubic filter (a release's images come in several sizes, and a training batch stacks them)."""
    import torch
    from PIL import Image

    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}")
    array = np.asarray(image, dtype=np.uint8)
    if size is not None and array.shape[:2] != (size, size):
        array = np.asarray(Image.fromarray(array).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 255


def encode_image(image: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """uint8 (H, W, 3) → encoded bytes (``quality`` applies to JPEG)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format=fmt, **({"quality": quality} if
                                                                                fmt.upper() == "JPEG" else {}))
    return buf.getvalue()


def _hf_feature(t: Any) -> dict[str, Any]:
    import pyarrow as pa

    if pa.types.is_struct(t) and {f.name for f in t} == {"bytes", "path"}:
        return {"_type": "Image"}
    return {"dtype": {"double": "float64", "float": "float32"}.get(str(t), str(t)), "_type": "Value"}


def write_parquet(rows: Sequence[Mapping[str, Any]], schema: Any, path: str | Path) -> Path:
    """Write ``rows`` as one parquet file with ``schema`` and the ``huggingface`` features metadata that
    ``datasets`` writes (so it decodes an ``{bytes, path}`` column as images)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise ValueError("no rows to write")
    features = {f.name: _hf_feature(f.type) for f in schema}
    schema = schema.with_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), path)
    return path
