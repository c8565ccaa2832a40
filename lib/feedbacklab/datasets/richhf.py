"""RichHF-18K (Liang et al., CVPR 2024): read and write its TFRecords without TensorFlow.

The release (github.com/google-research-datasets/richhf-18k: ``train`` / ``dev`` / ``test.tfrecord``,
15,810 / 995 / 955 records) holds one ``tf.train.Example`` per Pick-a-Pic v1 image. Images and prompts
are not in it: they come from Pick-a-Pic by ``filename``. Each feature holds exactly one value:

==========================  =======  ===========================================================
feature                     kind     content
==========================  =======  ===========================================================
filename                    bytes    UTF-8 Pick-a-Pic file name; its stem is the Pick-a-Pic uid
aesthetics_score            float    in [0, 1], higher is better
artifact_score              float    in [0, 1], higher is better (= plausibility)
misalignment_score          float    in [0, 1], higher is better (= text-image alignment)
overall_score               float    in [0, 1], higher is better
artifact_map                bytes    encoded 8-bit grey image, 512x512, 0..255 = heatmap intensity
misalignment_map            bytes    the same for misaligned regions
prompt_misalignment_label   bytes    "0 1 1 ..." one label per prompt token: 0 = misaligned, 1 = aligned
==========================  =======  ===========================================================

Sources:

- google-research/google-research ``richhf_18k/parse_tfrecord_file.py`` (the official parser): the
  feature names and kinds (``bytes_list`` / ``float_list``, ``value[0]``); the maps are decoded with
  ``tf.image.decode_image(..., channels=1)`` ("Both heatmaps are 512x512 with values between [0, 255]");
  "0: misaligned token, 1: aligned token". The same answers from a maintainer in the dataset's issues
  #11 (all heatmaps are 512x512) and #12 (what ``prompt_misalignment_label`` means).
- ``richhf_18k/match_label_to_token.py``: the tokens are the prompt split at any of ``,.?!":;`` and
  space, empty pieces dropped (``richhf_tokens``), and there is exactly one label per token.
- youweiliang/RichHF (the first author's PyTorch reproduction of RAHF): ``get_dataset.py`` takes the
  Pick-a-Pic uid as ``filename.split('/')[-1].split('.')[0]`` and marks the tokens labelled 0 as the
  misaligned ones; ``train.py`` feeds ``artifact_score`` as *plausibility*, ``misalignment_score`` as
  *alignment*, ``aesthetics_score`` and ``overall_score`` unchanged into an MSE against sigmoid heads
  (``model.py``), and the maps through PIL + ``ToTensor`` (/255). So the scores are already in [0, 1]
  with higher = better, whatever the feature names suggest. (The paper averages the annotators' 5-point
  ratings and normalises them; ``consolidate_rich`` does the same with ``(s - 1) / 4``.)
- Not verifiable here (the stored release is a Git LFS pointer): the image format of the maps.
  ``decode_image`` accepts PNG, JPEG, GIF and BMP; we write 8-bit grey PNG and read anything PIL decodes.

Mapping to ``RichLabel``: ``item_id`` = ``filename``; ``scores`` = the four scores (no conversion; values
outside [0, 1] are refused); ``heatmaps`` = {"implausible": artifact_map, "misaligned": misalignment_map}
as float32 (H, W) = bytes / 255; ``tokens`` = ``richhf_tokens(prompt)``; ``keywords`` = 1 - label
(``RichLabel`` uses 1 = misaligned, the file 1 = aligned).

Prompts are joined by filename from a mapping or a JSON ``{filename: prompt}`` file; a key may also be
the file's base name or its stem (the Pick-a-Pic uid), so a uid -> caption table from Pick-a-Pic's
metadata plugs in as it is. The official parser reads every feature without a prompt (only token
matching needs one), so without prompts the labels get ``prompt=""`` and one empty token per label.

``write_richhf_tfrecord`` writes world-generated labels in the same schema and encodings, but its maps
at the labels' own resolution (e.g. 64x64, not 512x512); the prompts go to a sidecar
``<name>.prompts.json`` beside the file. ``RichLabel.extra`` is not written. Decoded real maps take
2 MiB per record at 512x512: pass ``map_size`` (and ``image_size``) for a whole split.
"""
from __future__ import annotations

import io
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from feedbacklab.feedback.rich import RichLabel

from .files import read_json

SCORE_FEATURES = {"plausibility": "artifact_score", "alignment": "misalignment_score",
                  "aesthetics": "aesthetics_score", "overall": "overall_score"}  # SCORE_ASPECTS -> feature
MAP_FEATURES = {"implausible": "artifact_map", "misaligned": "misalignment_map"}  # MAP_KINDS -> feature
LABEL_FEATURE = "prompt_misalignment_label"
RICHHF_FEATURES = {"filename": "bytes_list", "aesthetics_score": "float_list", "artifact_score": "float_list",
                   "misalignment_score": "float_list", "overall_score": "float_list",
                   "artifact_map": "bytes_list", "misalignment_map": "bytes_list", LABEL_FEATURE: "bytes_list"}
SCHEMA = ", ".join(f"{name} ({kind.removesuffix('_list')})" for name, kind in RICHHF_FEATURES.items())
_DELIMITERS = re.compile(r'[,.?!":; ]')

Size = int | tuple[int, int]


class RichHFFormatError(ValueError):
    """A RichHF TFRecord, its prompts or its maps do not fit the schema; the message names the record."""


@dataclass
class RichHFSet:
    """What ``read_richhf_tfrecord`` returns: one label per record, in file order, and their images."""

    labels: list[RichLabel]
    images: np.ndarray | None = None  # uint8 (N, H, W, 3) like FeedbackSet.images; None without images_dir

    def tensors(self):
        """The images as a float (N, 3, H, W) torch tensor in [0, 1], what the rich-feedback models take."""
        import torch

        if self.images is None:
            raise ValueError("this RichHF set has no images: read it with images_dir (a folder of its image files)")
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float() / 255


def summarize_richhf(labels: Sequence[RichLabel]) -> dict[str, float]:
    """What a RichHF-18K split holds, for a table beside the paper's: items, the mean of each score (in [0, 1],
    higher is better), the share of items with any implausible / misaligned region, and of misaligned tokens."""
    if not labels:
        raise ValueError("summarize_richhf needs at least one label")
    out: dict[str, float] = {"items": float(len(labels))}
    for aspect in labels[0].scores:
        out[f"mean_{aspect}"] = float(np.mean([lab.scores[aspect] for lab in labels]))
    for kind in labels[0].heatmaps:
        out[f"share_with_{kind}_region"] = float(np.mean([lab.heatmaps[kind].max() > 0 for lab in labels]))
    tokens = [k for lab in labels for k in lab.keywords]
    out["share_misaligned_tokens"] = float(np.mean(tokens)) if tokens else float("nan")
    return out


@dataclass(frozen=True)
class _Row:
    filename: str
    scores: dict[str, float]
    maps: dict[str, bytes]  # MAP_KINDS -> encoded image
    keywords: tuple[int, ...]  # 1 = misaligned


def richhf_tokens(prompt: str) -> tuple[str, ...]:
    """The prompt's tokens as RichHF-18K labels them: split at spaces and ``,.?!":;``, empty pieces dropped."""
    return tuple(t for t in _DELIMITERS.split(prompt) if t)


def write_image_dir(images: np.ndarray, filenames: Sequence[str], directory: str | Path) -> Path:
    """Save uint8 (N, H, W, 3) images as PNG files named ``filenames`` in ``directory``: a stand-in for the
    Pick-a-Pic image folder that ``read_richhf_tfrecord(..., images_dir=directory)`` joins by filename."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) != len(filenames):
        raise ValueError(f"need uint8 images (N, H, W, 3) and one filename each; got {images.shape} {images.dtype} "
                         f"and {len(filenames)} filenames")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, filenames):
        Image.fromarray(image).save(directory / name)
    return directory


def write_richhf_tfrecord(labels: Sequence[RichLabel], path: str | Path, filenames: Sequence[str] | None = None,
                          prompts_path: str | Path | None = None) -> Path:
    """Write labels as a RichHF-18K TFRecord and their prompts as JSON ``{filename: prompt}``; return ``path``.

    ``filenames`` default to the item ids; ``prompts_path`` to ``path`` with suffix ``.prompts.json``
    (read back with ``read_richhf_tfrecord(path, prompts=that)``). Every label is checked and encoded
    before anything is written.
    """
    from tfrecord import TFRecordWriter

    if not labels:
        raise ValueError("write_richhf_tfrecord needs at least one label")
    names = [lab.item_id for lab in labels] if filenames is None else [str(f) for f in filenames]
    if len(names) != len(labels):
        raise ValueError(f"{len(names)} filenames for {len(labels)} labels")
    duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
    if duplicates:
        raise ValueError(f"duplicate filenames {duplicates[:5]}: the filename is the record's key")
    records = [_features(lab, name) for lab, name in zip(labels, names)]
    path = Path(path)
    prompts_path = path.with_suffix(".prompts.json") if prompts_path is None else Path(prompts_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = TFRecordWriter(str(path))
    try:
        for record in records:
            writer.write(record)
    finally:
        writer.close()
    prompts_path.parent.mkdir(parents=True, exist_ok=True)
    prompts_path.write_text(json.dumps({n: lab.prompt for n, lab in zip(names, labels)}, indent=1) + "\n")
    return path


def _features(lab: RichLabel, filename: str) -> dict[str, tuple[object, str]]:
    tokens = richhf_tokens(lab.prompt)
    if tokens != lab.tokens:
        raise ValueError(f"label {lab.item_id!r}: tokens {lab.tokens} are not the RichHF tokens of its prompt "
                         f"{tokens} (split at spaces and ,.?!\":;); the file holds one label per such token")
    out: dict[str, tuple[object, str]] = {"filename": (filename.encode(), "byte")}
    out.update({feat: (float(lab.scores[aspect]), "float") for aspect, feat in SCORE_FEATURES.items()})
    out.update({feat: (_encode_map(lab.heatmaps[kind], f"label {lab.item_id!r} map {kind!r}"), "byte")
                for kind, feat in MAP_FEATURES.items()})
    out[LABEL_FEATURE] = (" ".join(str(1 - k) for k in lab.keywords).encode(), "byte")
    return out


def _encode_map(heatmap: np.ndarray, what: str) -> bytes:
    m = np.asarray(heatmap, dtype=np.float64)
    if not np.isfinite(m).all() or m.min() < -1e-6 or m.max() > 1 + 1e-6:
        raise ValueError(f"{what}: heatmap values must lie in [0, 1], got [{m.min()}, {m.max()}]")
    buf = io.BytesIO()
    Image.fromarray(np.rint(np.clip(m, 0, 1) * 255).astype(np.uint8)).save(buf, format="PNG")  # 8-bit grey
    return buf.getvalue()


def read_richhf_tfrecord(path: str | Path, prompts: Mapping[str, str] | str | Path | None = None,
                         images_dir: str | Path | None = None, image_size: Size | None = None,
                         map_size: Size | None = None, limit: int | None = None) -> RichHFSet:
    """Read a RichHF-18K TFRecord into ``RichLabel``s, with prompts and (from ``images_dir``) images.

    ``prompts``: a mapping or a JSON file ``{filename | base name | uid: prompt}``. ``image_size`` and
    ``map_size`` (side or (H, W)) resize images and maps; with images, both must end up one size.
    ``limit``: read only the first ``limit`` records (the rest of the file is not read).
    Schema, prompts, files and sizes are all checked before any map or image is decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RichHF TFRecord not found: {path}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int (records to read) or None (all), got {limit!r}")
    image_hw, map_hw = _hw(image_size, "image_size"), _hw(map_size, "map_size")
    rows = _read_rows(path, limit)
    map_shapes = [_map_shape(row, path) for row in rows]
    texts = _prompts_and_tokens(rows, _load_prompts(prompts))
    image_paths = None
    if images_dir is not None:
        image_paths = _image_paths(rows, Path(images_dir))
        _check_sizes(rows, image_paths, image_hw, [map_hw or s for s in map_shapes])
    from tqdm.auto import tqdm

    quiet = len(rows) < 1000  # a progress bar only where decoding takes a while (a whole split: 16k records)
    labels = [RichLabel(row.filename, prompt, row.scores,
                        {kind: _decode_map(data, map_hw, f"{path}: {row.filename!r} {MAP_FEATURES[kind]}")
                         for kind, data in row.maps.items()}, tokens, row.keywords)
              for row, (prompt, tokens) in zip(tqdm(rows, desc=f"{path.name}: maps", disable=quiet), texts)]
    images = None if image_paths is None else np.stack(
        [_load_image(p, image_hw) for p in tqdm(image_paths, desc=f"{path.name}: images", disable=quiet)])
    return RichHFSet(labels, images)


RICHHF_SPLITS = ("train", "dev", "test")


def read_richhf_splits(folder: str | Path, prompts: Mapping[str, str] | str | Path | None = None,
                       images_dir: str | Path | None = None, size: Size | None = None,
                       limits: Mapping[str, int | None] | None = None) -> dict[str, RichHFSet]:
    """The release's three splits, ``<folder>/{train,dev,test}.tfrecord``, read as ``read_richhf_tfrecord``
    does, images and maps at one ``size`` (what a model trains on). ``limits``: {split: first n records}.
    Every file is checked to exist before any is read."""
    folder = Path(folder)
    limits = dict(limits or {})
    unknown = set(limits) - set(RICHHF_SPLITS)
    if unknown:
        raise ValueError(f"limits name unknown split(s) {sorted(unknown)}; accepted: {list(RICHHF_SPLITS)}")
    missing = [f"{s}.tfrecord" for s in RICHHF_SPLITS if not (folder / f"{s}.tfrecord").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: the RichHF-18K release (google-research/richhf_18k) "
                                "holds train.tfrecord, dev.tfrecord and test.tfrecord")
    prompt_of = _load_prompts(prompts)
    return {s: read_richhf_tfrecord(folder / f"{s}.tfrecord", prompt_of, images_dir, size, size, limits.get(s))
            for s in RICHHF_SPLITS}


def _hw(size: Size | None, name: str) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
        raise ValueError(f"{name} must be a positive int or (height, width), got {size!r}")
    return hw


def _read_rows(path: Path, limit: int | None = None) -> list[_Row]:
    from google.protobuf.message import DecodeError
    from tfrecord import TFRecordWriter, example_pb2
    from tfrecord.reader import tfrecord_iterator

    with open(path, "rb") as f:
        head = f.read(12)  # the first record's length (8 bytes) and its masked crc32c (4 bytes)
    if not head:
        raise RichHFFormatError(f"{path}: empty file, no records")
    if len(head) < 12 or TFRecordWriter.masked_crc(head[:8]) != head[8:]:
        raise RichHFFormatError(f"{path} is not a TFRecord file (its first length checksum does not match)")
    rows = []
    try:
        for i, raw in enumerate(tfrecord_iterator(str(path))):
            if limit is not None and i >= limit:
                break
            try:
                example = example_pb2.Example.FromString(bytes(raw))
            except DecodeError:
                raise RichHFFormatError(f"{path}: record {i} is not a tf.train.Example") from None
            rows.append(_row(example.features.feature, f"{path}: record {i}"))
    except RuntimeError as e:  # the iterator's "Failed to read the record ..."
        raise RichHFFormatError(f"{path}: truncated TFRecord after {len(rows)} records ({e})") from None
    return rows


def _row(feats, where: str) -> _Row:
    if "filename" in feats and len(feats["filename"].bytes_list.value) == 1:
        where += f" ({feats['filename'].bytes_list.value[0].decode(errors='replace')!r})"
    missing = [name for name in RICHHF_FEATURES if name not in feats]
    if missing:
        raise RichHFFormatError(f"{where} lacks feature(s) {missing}; the RichHF-18K schema is: {SCHEMA}")
    values = {}
    for name, kind in RICHHF_FEATURES.items():
        got = feats[name].WhichOneof("kind")  # bytes_list, float_list, int64_list or None
        if got != kind or len(getattr(feats[name], kind).value) != 1:
            found = f"{len(getattr(feats[name], got).value)} {got} values" if got else "an empty feature"
            raise RichHFFormatError(f"{where}: feature {name!r} must hold one {kind} value, got {found}; "
                                    f"the RichHF-18K schema is: {SCHEMA}")
        values[name] = getattr(feats[name], kind).value[0]
    scores = {aspect: float(values[feat]) for aspect, feat in SCORE_FEATURES.items()}
    for aspect, score in scores.items():
        if not (math.isfinite(score) and 0.0 <= score <= 1.0):
            raise RichHFFormatError(f"{where}: {SCORE_FEATURES[aspect]}={score} is outside [0, 1]; RichHF-18K "
                                    "scores are normalised ratings, higher is better")
    text = values[LABEL_FEATURE].decode(errors="replace")
    if any(t not in ("0", "1") for t in text.split()):
        raise RichHFFormatError(f"{where}: {LABEL_FEATURE} must be space-separated 0/1, got {text!r}")
    return _Row(values["filename"].decode(), scores, {kind: values[feat] for kind, feat in MAP_FEATURES.items()},
                tuple(1 - int(t) for t in text.split()))


def _map_shape(row: _Row, path: Path) -> tuple[int, int]:
    """(H, W) shared by the row's two maps, read from the image headers only."""
    shapes = {}
    for kind, data in row.maps.items():
        try:
            with Image.open(io.BytesIO(data)) as im:
                shapes[MAP_FEATURES[kind]] = (im.height, im.width)
        except OSError:
            raise RichHFFormatError(f"{path}: {row.filename!r} {MAP_FEATURES[kind]} is not an image") from None
    if len(set(shapes.values())) != 1:
        raise RichHFFormatError(f"{path}: {row.filename!r} maps differ in size (H, W): {shapes}")
    return next(iter(shapes.values()))


def _load_prompts(prompts: Mapping[str, str] | str | Path | None) -> Mapping[str, str] | None:
    if prompts is None or isinstance(prompts, Mapping):
        return prompts
    path = Path(prompts)
    data = read_json(path, "prompts file", RichHFFormatError)
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise RichHFFormatError(f"{path}: a prompts file is a JSON object {{filename: prompt}}")
    return data


def _keys(filename: str) -> tuple[str, ...]:
    """What a filename may be keyed by: itself, its base name, its stem (the Pick-a-Pic uid)."""
    p = PurePosixPath(filename)
    return tuple(dict.fromkeys((filename, p.name, p.stem)))


def _prompts_and_tokens(rows: list[_Row], prompt_of: Mapping[str, str] | None) -> list[tuple[str, tuple[str, ...]]]:
    if prompt_of is None:
        return [("", ("",) * len(row.keywords)) for row in rows]
    found = [next((prompt_of[k] for k in _keys(row.filename) if k in prompt_of), None) for row in rows]
    missing = [row.filename for row, prompt in zip(rows, found) if prompt is None]
    if missing:
        raise RichHFFormatError(f"{len(missing)} of {len(rows)} records have no prompt, e.g. {missing[0]!r} "
                                f"(looked up as {list(_keys(missing[0]))})")
    out = []
    for row, prompt in zip(rows, found):
        tokens = richhf_tokens(prompt)
        if len(tokens) != len(row.keywords):
            raise RichHFFormatError(f"{row.filename!r}: {len(row.keywords)} misalignment labels but its prompt "
                                    f"{prompt!r} has {len(tokens)} tokens {tokens}")
        out.append((prompt, tokens))
    return out


def _image_paths(rows: list[_Row], root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"images directory not found: {root}")
    out = []
    for row in rows:
        candidates = [root / k for k in dict.fromkeys((row.filename, PurePosixPath(row.filename).name))]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"image {row.filename!r} not found in {root}")
        out.append(found)
    return out


def _check_sizes(rows: list[_Row], image_paths: list[Path], image_hw: tuple[int, int] | None,
                 map_hws: list[tuple[int, int]]) -> None:
    """Images must stack (one size after ``image_size``) and each map must be the size of its image."""
    sizes = []
    for p in image_paths:
        with Image.open(p) as im:  # reads the header only
            sizes.append((im.height, im.width))
    if image_hw is None and len(set(sizes)) > 1:
        raise ValueError(f"images differ in size (H, W) {sorted(set(sizes))[:4]}; pass image_size to resize them")
    for row, size, map_hw in zip(rows, sizes, map_hws):
        if map_hw != (image_hw or size):
            raise ValueError(f"{row.filename!r}: maps are {map_hw} but its image is {image_hw or size} (H, W); "
                             "pass map_size and/or image_size to bring them to one size")


def _decode_map(data: bytes, size: tuple[int, int] | None, what: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L")  # as decode_image(..., channels=1)
            if size is not None and (im.height, im.width) != size:
                im = im.resize(size[::-1], Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.float32) / 255.0  # (H, W) in [0, 1]
    except OSError as e:
        raise RichHFFormatError(f"{what}: cannot decode the map ({e})") from None


def _load_image(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if size is not None and (im.height, im.width) != size:
            im = im.resize(size[::-1], Image.Resampling.BICUBIC)
        return np.asarray(im, dtype=np.uint8)  # (H, W, 3)
