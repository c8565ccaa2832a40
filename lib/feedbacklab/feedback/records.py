"""Plain feedback records: one frozen dataclass per feedback kind, JSON round-trippable.

Every record carries the ``annotator_id`` that produced it and the ``item_id`` of the
image (or, for rankings, the ids of the ranked images). Sequences are stored as
tuples and numbers as Python ``int``/``float``, so ``from_dict(to_dict(r)) == r``.
"""
from __future__ import annotations

import dataclasses
import json
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

SCORE_ASPECTS = ("plausibility", "alignment", "aesthetics", "overall")
POINT_KINDS = ("implausible", "misaligned")


class RecordError(ValueError):
    """A feedback record (or its JSON form) is malformed."""


def _binary(value: Any, what: str) -> int:
    if isinstance(value, bool) or value not in (0, 1):
        raise RecordError(f"{what} must be 0 or 1, got {value!r}")
    return int(value)


def _likert(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value) or not 1 <= value <= 5:
        raise RecordError(f"{what} must be an integer 1..5, got {value!r}")
    return int(value)


def _points(points: Iterable[Iterable[float]], what: str) -> tuple[tuple[float, float], ...]:
    out = []
    for p in points:
        p = tuple(float(v) for v in p)
        if len(p) != 2:
            raise RecordError(f"{what}: each point must be (x, y), got {p!r}")
        out.append(p)
    return tuple(out)


def _spans(spans: Iterable[Iterable[int]], what: str) -> tuple[tuple[int, int], ...]:
    out = []
    for s in spans:
        s = tuple(int(v) for v in s)
        if len(s) != 2 or s[0] > s[1] or s[0] < 0:
            raise RecordError(f"{what}: each span must be (start, end) with 0 <= start <= end, got {s!r}")
        out.append(s)
    return tuple(out)


@dataclass(frozen=True)
class Record:
    """Base of every feedback record: JSON conversion through ``to_dict``/``from_dict``."""

    kind: ClassVar[str] = "record"
    annotator_id: str

    def to_dict(self) -> dict:
        """A JSON-ready dict with a ``"kind"`` tag naming the record type."""
        d = dataclasses.asdict(self)
        return {"kind": self.kind, **json.loads(json.dumps(d))}

    @staticmethod
    def from_dict(d: dict) -> "Record":
        """Rebuild a record from ``to_dict`` output; the ``"kind"`` tag picks the class."""
        if not isinstance(d, dict) or "kind" not in d:
            raise RecordError(f"a record dict needs a 'kind' key, got {d!r:.200}")
        cls = RECORD_TYPES.get(d["kind"])
        if cls is None:
            raise RecordError(f"unknown record kind {d['kind']!r}; known: {sorted(RECORD_TYPES)}")
        fields = {k: v for k, v in d.items() if k != "kind"}
        try:
            return cls(**fields)
        except TypeError as e:
            raise RecordError(f"bad fields for {d['kind']!r} record: {e}") from None


@dataclass(frozen=True)
class BinaryLabel(Record):
    """Good/bad label of an image for its prompt (Lee et al. 2023; TIA2): 1 = matches the prompt."""

    kind: ClassVar[str] = "binary"
    item_id: str
    prompt: str
    label: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", _binary(self.label, "BinaryLabel.label"))


@dataclass(frozen=True)
class LikertScores(Record):
    """Four 1-5 scores of one image (RichHF): plausibility, alignment, aesthetics, overall."""

    kind: ClassVar[str] = "likert"
    item_id: str
    prompt: str
    plausibility: int
    alignment: int
    aesthetics: int
    overall: int

    def __post_init__(self) -> None:
        for a in SCORE_ASPECTS:
            object.__setattr__(self, a, _likert(getattr(self, a), f"LikertScores.{a}"))

    def score(self, aspect: str) -> int:
        """The score of one aspect (one of ``SCORE_ASPECTS``)."""
        if aspect not in SCORE_ASPECTS:
            raise RecordError(f"unknown aspect {aspect!r}; accepted: {SCORE_ASPECTS}")
        return getattr(self, aspect)


@dataclass(frozen=True)
class Ranking(Record):
    """A ranking of k images of one prompt (ImageReward): ``order`` lists indices into ``item_ids``, best first."""

    kind: ClassVar[str] = "ranking"
    prompt: str
    item_ids: tuple[str, ...]
    order: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "item_ids", tuple(str(i) for i in self.item_ids))
        object.__setattr__(self, "order", tuple(int(i) for i in self.order))
        if len(set(self.item_ids)) != len(self.item_ids):
            raise RecordError(f"Ranking.item_ids must be distinct, got {self.item_ids}")
        if sorted(self.order) != list(range(len(self.item_ids))):
            raise RecordError(
                f"Ranking.order must be a permutation of 0..{len(self.item_ids) - 1}, got {self.order}")

    @property
    def ranks(self) -> tuple[int, ...]:
        """Rank of each item in ``item_ids`` order, 1 = best."""
        ranks = [0] * len(self.order)
        for position, index in enumerate(self.order):
            ranks[index] = position + 1
        return tuple(ranks)

    @property
    def ranked_ids(self) -> tuple[str, ...]:
        """Item ids best first."""
        return tuple(self.item_ids[i] for i in self.order)


@dataclass(frozen=True)
class PointAnnotation(Record):
    """Points on implausible or misaligned regions (RichHF); each point is a disc of ``radius`` pixels.

    Coordinates are pixels, (x, y) = (column, row), origin top-left; the image is ``height`` x ``width``.
    """

    kind: ClassVar[str] = "points"
    item_id: str
    prompt: str
    region: str  # one of POINT_KINDS
    points: tuple[tuple[float, float], ...]
    radius: float
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.region not in POINT_KINDS:
            raise RecordError(f"PointAnnotation.region must be one of {POINT_KINDS}, got {self.region!r}")
        object.__setattr__(self, "points", _points(self.points, "PointAnnotation.points"))
        object.__setattr__(self, "radius", float(self.radius))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))
        if self.radius < 0 or self.height <= 0 or self.width <= 0:
            raise RecordError("PointAnnotation needs radius >= 0 and a positive height and width")


@dataclass(frozen=True)
class KeywordLabels(Record):
    """Misaligned-keyword labels (RichHF): one 0/1 per prompt token, 1 = misaligned."""

    kind: ClassVar[str] = "keywords"
    item_id: str
    prompt: str
    tokens: tuple[str, ...]
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(str(t) for t in self.tokens))
        object.__setattr__(self, "labels", tuple(_binary(v, "KeywordLabels.labels") for v in self.labels))
        if len(self.tokens) != len(self.labels):
            raise RecordError(
                f"KeywordLabels needs one label per token: {len(self.tokens)} tokens, {len(self.labels)} labels")


@dataclass(frozen=True)
class CaptionCorrection(Record):
    """A caption and its segment-level correction (RLHF-V).

    ``original`` and ``corrected`` are equal outside the changed segments. Spans pair up:
    ``original_spans[i]`` (token index range ``[start, end)`` into ``original.split(" ")``) was
    replaced by ``corrected_spans[i]``; ``*_char_spans`` are the same segments as character ranges.
    An insertion has an empty original span, a deletion an empty corrected span.
    """

    kind: ClassVar[str] = "correction"
    item_id: str
    original: str
    corrected: str
    original_spans: tuple[tuple[int, int], ...]
    corrected_spans: tuple[tuple[int, int], ...]
    original_char_spans: tuple[tuple[int, int], ...]
    corrected_char_spans: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        for name in ("original_spans", "corrected_spans", "original_char_spans", "corrected_char_spans"):
            object.__setattr__(self, name, _spans(getattr(self, name), f"CaptionCorrection.{name}"))
        n = len(self.original_spans)
        if not (len(self.corrected_spans) == len(self.original_char_spans) == len(self.corrected_char_spans) == n):
            raise RecordError("CaptionCorrection span lists must have the same length")

    @property
    def changed(self) -> bool:
        """Whether the annotator changed anything."""
        return bool(self.original_spans)


RECORD_TYPES: dict[str, type[Record]] = {
    cls.kind: cls for cls in (BinaryLabel, LikertScores, Ranking, PointAnnotation, KeywordLabels, CaptionCorrection)
}


def records_to_json(records: Iterable[Record]) -> str:
    """Serialize records to a JSON array (each element tagged with its ``kind``)."""
    return json.dumps([r.to_dict() for r in records])


def records_from_json(text: str) -> list[Record]:
    """Inverse of ``records_to_json``."""
    data = json.loads(text)
    if not isinstance(data, list):
        raise RecordError(f"expected a JSON array of records, got {type(data).__name__}")
    return [Record.from_dict(d) for d in data]


def save_records(records: Iterable[Record], path: str | Path) -> Path:
    """Write records as JSON lines (one record per line) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return path


def load_records(path: str | Path) -> list[Record]:
    """Read records written by ``save_records``."""
    lines = Path(path).read_text().splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(Record.from_dict(json.loads(line)))
            except (json.JSONDecodeError, RecordError) as e:
                raise RecordError(f"{path}:{n}: {e}") from None
    return out
