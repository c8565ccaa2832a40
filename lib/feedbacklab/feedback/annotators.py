"""Simulated annotators: turn the oracle's ``Judgement`` into every kind of human feedback.

An ``Annotator`` reads a judgement (``world.judge(prompt, image)``) and answers like a noisy
person. Its noise is explicit (``NoiseConfig``) and its randomness comes only from its seed and
the item: each call draws from ``default_rng([seed, kind, hash(item_id)])``, so the same
annotator gives the same answer for the same item in any order or batch. Pass ``item_id`` (e.g.
the image file name): without one, an item is known by a fingerprint of its judgement
(``item_key``), so two images judged identically get identical noise.

Noise-free answers (``NoiseConfig.none()``) follow the oracle exactly:

- binary label = ``judgement.aligned``;
- Likert score = ``1 + 4 * latent`` rounded, with the latent qualities of ``latent_scores``;
- ranking = by the ``overall`` latent, best first (ties keep input order);
- points = ``artifact_points`` (implausible) / ``misaligned_points`` (misaligned);
- keywords = ``misaligned_tokens``;
- caption correction = the oracle's truthful description, edited minimally.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from .records import (
    POINT_KINDS,
    BinaryLabel,
    CaptionCorrection,
    KeywordLabels,
    LikertScores,
    PointAnnotation,
    Ranking,
    Record,
)

# Weights of the ``overall`` latent quality (alignment matters most, as in all five papers).
OVERALL_WEIGHTS = {"alignment": 0.5, "plausibility": 0.3, "aesthetics": 0.2}
# A misaligned image's alignment latent is this factor times its share of right attributes,
# so a noise-free annotator gives an aligned image 5 and a misaligned one at most 4.
MISALIGNED_CAP = 0.75
_INVERSE_RELATION = {"left": "right", "right": "left", "above": "below", "below": "above"}
_KIND_CODES = {"binary": 1, "likert": 2, "ranking": 3, "implausible": 4, "misaligned": 5, "keywords": 6,
               "correction": 7}


class JudgementLike(Protocol):
    """The fields of ``world.Judgement`` that annotators read."""

    prompt: str
    tokens: list[str]
    attributes: dict[str, bool]
    aligned: bool
    misaligned_tokens: list[int]
    misaligned_points: list[tuple[float, float]]
    artifact_points: list[tuple[float, float]]
    plausibility: float
    aesthetics: float
    scene: Any
    size: int


@dataclass(frozen=True)
class NoiseConfig:
    """How a simulated annotator deviates from the oracle. ``NoiseConfig.none()`` is noise-free.

    Probabilities are per decision; ``point_jitter`` and ``point_radius`` are fractions of the
    image side; ``rank_temperature`` is in units of the [0, 1] latent quality. The score defaults
    give RichHF's agreement (about 25% of items with maxdiff 0 and 85% with maxdiff <= 1) for three
    annotators on items whose latent quality spreads over [0, 1].
    """

    flip_prob: float = 0.1            # binary label flipped with this probability
    score_sigma: float = 0.6          # Gaussian noise (Likert units) added before rounding and clipping to 1..5
    score_bias_sd: float = 0.3        # per-annotator leniency: a constant offset ~ N(0, sd), drawn from the seed
    rank_temperature: float = 0.1     # Plackett-Luce temperature; 0 = rank by true quality
    point_jitter: float = 0.02        # point position noise, sd as a fraction of the image side
    point_miss: float = 0.1           # a true region gets no point with this probability
    point_false_alarm: float = 0.1    # Poisson mean of spurious points per image and region kind
    point_radius: float = 0.08        # effective radius of a point, fraction of the image side
    keyword_miss: float = 0.1         # a misaligned token left unmarked
    keyword_false_alarm: float = 0.03  # an aligned token marked misaligned
    correction_miss: float = 0.05     # a wrong caption segment left uncorrected

    def __post_init__(self) -> None:
        probs = ("flip_prob", "point_miss", "keyword_miss", "keyword_false_alarm", "correction_miss")
        for name in probs:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"NoiseConfig.{name} is a probability in [0, 1], got {v!r}")
        for f in dataclasses.fields(self):
            if f.name not in probs and getattr(self, f.name) < 0:
                raise ValueError(f"NoiseConfig.{f.name} must be >= 0, got {getattr(self, f.name)!r}")

    @classmethod
    def none(cls, point_radius: float = 0.08) -> "NoiseConfig":
        """A noise-free annotator that reports the oracle's judgement exactly."""
        zeros = {f.name: 0.0 for f in dataclasses.fields(cls) if f.name != "point_radius"}
        return cls(**zeros, point_radius=point_radius)


def as_noise(noise: NoiseConfig | Mapping[str, float] | None) -> NoiseConfig:
    """Accept a ``NoiseConfig``, a dict of overrides of the defaults, or None (the defaults)."""
    if noise is None:
        return NoiseConfig()
    if isinstance(noise, NoiseConfig):
        return noise
    if isinstance(noise, Mapping):
        known = {f.name for f in dataclasses.fields(NoiseConfig)}
        unknown = set(noise) - known
        if unknown:
            raise ValueError(f"unknown noise settings {sorted(unknown)}; accepted: {sorted(known)}")
        return NoiseConfig(**noise)
    raise TypeError(f"noise must be a NoiseConfig, a dict of its fields or None, got {type(noise).__name__}")


def item_key(j: JudgementLike) -> str:
    """A short content fingerprint of a judgement, used as item id when none is given."""
    parts = (j.prompt, bool(j.aligned), tuple(int(t) for t in j.misaligned_tokens),
             tuple((round(float(x), 3), round(float(y), 3)) for x, y in j.misaligned_points),
             tuple((round(float(x), 3), round(float(y), 3)) for x, y in j.artifact_points),
             round(float(j.plausibility), 6), round(float(j.aesthetics), 6), sorted(j.attributes.items()))
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def _hash_ints(text: str) -> list[int]:
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def latent_scores(j: JudgementLike) -> dict[str, float]:
    """Noise-free quality in [0, 1] per Likert aspect.

    alignment = 1 if aligned else ``MISALIGNED_CAP`` x share of right attributes; plausibility and
    aesthetics are the judgement's; overall = ``OVERALL_WEIGHTS``-weighted sum of the three.
    """
    if j.aligned:
        alignment = 1.0
    else:
        values = list(j.attributes.values())
        alignment = MISALIGNED_CAP * (sum(map(bool, values)) / len(values) if values else 0.0)
    out = {"plausibility": float(np.clip(j.plausibility, 0, 1)), "alignment": alignment,
           "aesthetics": float(np.clip(j.aesthetics, 0, 1))}
    out["overall"] = sum(w * out[k] for k, w in OVERALL_WEIGHTS.items())
    return out


class Annotator:
    """One simulated person: deterministic given ``seed`` and the items it sees."""

    def __init__(self, noise: NoiseConfig | Mapping[str, float] | None = None, seed: int = 0,
                 annotator_id: str | None = None) -> None:
        self.noise = as_noise(noise)
        self.seed = int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.id = annotator_id if annotator_id is not None else f"annotator-{self.seed}"
        # Leniency: a fixed offset added to every Likert score of this annotator.
        self.bias = float(np.random.default_rng([self.seed, 0]).normal(0.0, 1.0) * self.noise.score_bias_sd)

    def __repr__(self) -> str:
        return f"Annotator(id={self.id!r}, seed={self.seed}, noise={self.noise})"

    def _rng(self, kind: str, key: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, _KIND_CODES[kind], *_hash_ints(key)])

    def binary(self, j: JudgementLike, item_id: str | None = None) -> BinaryLabel:
        """Good (1) / bad (0) for the prompt; the oracle's ``aligned`` flipped with ``flip_prob``."""
        item_id = item_id or item_key(j)
        label = int(bool(j.aligned))
        if self._rng("binary", item_id).random() < self.noise.flip_prob:
            label = 1 - label
        return BinaryLabel(self.id, item_id, j.prompt, label)

    def likert(self, j: JudgementLike, item_id: str | None = None) -> LikertScores:
        """Four 1-5 scores: ``round(1 + 4 * latent + bias + N(0, score_sigma))`` clipped to 1..5."""
        item_id = item_id or item_key(j)
        rng = self._rng("likert", item_id)
        latent = latent_scores(j)
        scores = {}
        for aspect in ("plausibility", "alignment", "aesthetics", "overall"):
            raw = 1.0 + 4.0 * latent[aspect] + self.bias + rng.normal(0.0, 1.0) * self.noise.score_sigma
            scores[aspect] = int(np.clip(np.rint(raw), 1, 5))
        return LikertScores(self.id, item_id, j.prompt, **scores)

    def rank(self, judgements: Sequence[JudgementLike], item_ids: Sequence[str] | None = None) -> Ranking:
        """Rank k images of one prompt by Plackett-Luce on the ``overall`` latent with ``rank_temperature``.

        Sampling sorts ``u_i / T + Gumbel`` (so P(i first) = softmax(u / T)); any two items are then
        ordered with the Bradley-Terry probability ``sigmoid((u_i - u_j) / T)``. T = 0 sorts by u.
        """
        if len(judgements) < 2:
            raise ValueError(f"a ranking needs at least 2 images, got {len(judgements)}")
        prompts = {j.prompt for j in judgements}
        if len(prompts) != 1:
            raise ValueError(f"rank() ranks images of one prompt; got prompts {sorted(prompts)}")
        if item_ids is None:  # fingerprints, with the position appended where two images judge the same
            keys = [item_key(j) for j in judgements]
            item_ids = [k if keys.count(k) == 1 else f"{k}-{i}" for i, k in enumerate(keys)]
        item_ids = list(item_ids)
        if len(item_ids) != len(judgements):
            raise ValueError(f"{len(item_ids)} item ids for {len(judgements)} images")
        utility = np.array([latent_scores(j)["overall"] for j in judgements])
        if self.noise.rank_temperature > 0:
            gumbel = self._rng("ranking", "\x1f".join(item_ids)).gumbel(size=len(utility))
            utility = utility / self.noise.rank_temperature + gumbel
        order = np.argsort(-utility, kind="stable")
        return Ranking(self.id, judgements[0].prompt, tuple(item_ids), tuple(int(i) for i in order))

    def points(self, j: JudgementLike, region: str, item_id: str | None = None) -> PointAnnotation:
        """Points on ``"implausible"`` (artifact) or ``"misaligned"`` regions, with miss, jitter and false alarms."""
        if region not in POINT_KINDS:
            raise ValueError(f"region must be one of {POINT_KINDS}, got {region!r}")
        item_id = item_id or item_key(j)
        rng = self._rng(region, item_id)
        size = int(j.size)
        truth = j.artifact_points if region == "implausible" else j.misaligned_points
        noise = self.noise
        points = []
        for x, y in truth:
            if rng.random() < noise.point_miss:
                continue
            dx, dy = rng.normal(0.0, 1.0, size=2) * noise.point_jitter * size
            points.append((float(np.clip(x + dx, 0, size - 1)), float(np.clip(y + dy, 0, size - 1))))
        for _ in range(rng.poisson(noise.point_false_alarm)):
            points.append(tuple(float(v) for v in rng.uniform(0, size - 1, size=2)))
        return PointAnnotation(self.id, item_id, j.prompt, region, tuple(points), noise.point_radius * size,
                               size, size)

    def keywords(self, j: JudgementLike, item_id: str | None = None) -> KeywordLabels:
        """One 0/1 per prompt token (1 = misaligned), with miss and false-alarm rates."""
        item_id = item_id or item_key(j)
        rng = self._rng("keywords", item_id)
        wrong = set(int(t) for t in j.misaligned_tokens)
        labels = []
        for i in range(len(j.tokens)):
            u = rng.random()
            if i in wrong:
                labels.append(0 if u < self.noise.keyword_miss else 1)
            else:
                labels.append(1 if u < self.noise.keyword_false_alarm else 0)
        return KeywordLabels(self.id, item_id, j.prompt, tuple(j.tokens), tuple(labels))

    def rich(self, j: JudgementLike, item_id: str | None = None) -> list[Record]:
        """RichHF's full annotation of one image: scores, both point sets and keyword labels."""
        item_id = item_id or item_key(j)
        return [self.likert(j, item_id), self.points(j, "implausible", item_id),
                self.points(j, "misaligned", item_id), self.keywords(j, item_id)]

    def correct(self, j: JudgementLike, item_id: str | None = None) -> CaptionCorrection:
        """Correct the wrong segments of a caption (RLHF-V); ``j = world.judge(caption, image)``.

        An aligned caption is left as is; otherwise the caption is edited towards the phrasing of
        ``world.describe(j.scene)`` closest to it, and each changed segment is skipped with
        ``correction_miss``. Unchanged segments stay byte-identical. A scene the grammar cannot
        describe leaves the caption unchanged (``record.changed`` is False).
        """
        item_id = item_id or item_key(j)
        original = j.prompt
        target = None if j.aligned else closest_description(original, j.scene)
        target = original if target is None else target
        a, b = original.split(" "), target.split(" ")
        rng = self._rng("correction", item_id)
        tokens: list[str] = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
            keep_original = tag == "equal" or rng.random() < self.noise.correction_miss
            tokens.extend(a[i1:i2] if keep_original else b[j1:j2])
        return make_correction(self.id, item_id, original, " ".join(tokens))


# ---------------------------------------------------------------- caption corrections

def _char_span(tokens: Sequence[str], start: int, end: int) -> tuple[int, int]:
    offsets = np.cumsum([0] + [len(t) + 1 for t in tokens])  # offsets[i] = first char of token i
    if start == end:
        pos = int(offsets[start]) if start < len(tokens) else max(int(offsets[-1]) - 1, 0)
        return pos, pos
    return int(offsets[start]), int(offsets[end - 1] + len(tokens[end - 1]))


def caption_edits(original: str, corrected: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The changed segments as paired token ranges ``[start, end)`` of ``original`` and ``corrected``.

    Tokens are ``str.split(" ")``; segments come from a minimal token diff (``difflib``).
    """
    a, b = original.split(" "), corrected.split(" ")
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    changed = [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in ops if tag != "equal"]
    return [(i1, i2) for i1, i2, _, _ in changed], [(j1, j2) for _, _, j1, j2 in changed]


def make_correction(annotator_id: str, item_id: str, original: str, corrected: str) -> CaptionCorrection:
    """A ``CaptionCorrection`` record with token and character spans computed from the two captions."""
    orig_spans, corr_spans = caption_edits(original, corrected)
    a, b = original.split(" "), corrected.split(" ")
    return CaptionCorrection(annotator_id, item_id, original, corrected, tuple(orig_spans), tuple(corr_spans),
                             tuple(_char_span(a, s, e) for s, e in orig_spans),
                             tuple(_char_span(b, s, e) for s, e in corr_spans))


def changed_token_count(original: str, corrected: str) -> int:
    """Size of the token edit between two captions: sum over changed segments of the longer side."""
    o, c = caption_edits(original, corrected)
    return sum(max(e1 - s1, e2 - s2) for (s1, e1), (s2, e2) in zip(o, c))


def equivalent_captions(caption: str) -> list[str]:
    """The world-language captions that say the same thing: reordered composition objects, or a
    spatial relation stated from the other object (``A left of B`` = ``B right of A``)."""
    from feedbacklab import world

    spec = world.parse(caption)
    variants = []
    if spec.family == "composition":
        variants = [dataclasses.replace(spec, objects=tuple(p)) for p in itertools.permutations(spec.objects)]
    elif spec.family == "spatial" and spec.count == 2:
        variants = [spec, dataclasses.replace(spec, objects=spec.objects[::-1],
                                              relation=_INVERSE_RELATION[spec.relation])]
    out = [caption]
    for v in variants:
        text = world.prompt(v)
        if text not in out:
            out.append(text)
    return out


def closest_description(caption: str, scene: Any) -> str | None:
    """The truthful caption of ``scene`` (``world.describe``, any family) phrased closest to ``caption``.

    None when the grammar cannot describe the scene (e.g. three distinct objects).
    """
    from feedbacklab import world

    candidates: list[str] = []
    for family in (None, "spatial"):
        try:
            candidates += equivalent_captions(world.describe(scene, family))
        except world.DescribeError:
            continue
    if not candidates:
        return None
    return min(candidates, key=lambda c: changed_token_count(caption, c))


# ---------------------------------------------------------------- panels

class Panel:
    """Several annotators answering the same items; each method returns one record per annotator."""

    def __init__(self, annotators: Sequence[Annotator]) -> None:
        if not annotators:
            raise ValueError("a panel needs at least one annotator")
        ids = [a.id for a in annotators]
        if len(set(ids)) != len(ids):
            raise ValueError(f"annotator ids must be distinct, got {ids}")
        self.annotators = tuple(annotators)

    def __len__(self) -> int:
        return len(self.annotators)

    def __iter__(self):
        return iter(self.annotators)

    def __repr__(self) -> str:
        return f"Panel({list(self.annotators)})"

    def binary(self, j: JudgementLike, item_id: str | None = None) -> list[BinaryLabel]:
        """Each annotator's good/bad label."""
        return [a.binary(j, item_id) for a in self.annotators]

    def likert(self, j: JudgementLike, item_id: str | None = None) -> list[LikertScores]:
        """Each annotator's four 1-5 scores."""
        return [a.likert(j, item_id) for a in self.annotators]

    def rank(self, judgements: Sequence[JudgementLike], item_ids: Sequence[str] | None = None) -> list[Ranking]:
        """Each annotator's ranking of the same images."""
        return [a.rank(judgements, item_ids) for a in self.annotators]

    def points(self, j: JudgementLike, region: str, item_id: str | None = None) -> list[PointAnnotation]:
        """Each annotator's points on one kind of region."""
        return [a.points(j, region, item_id) for a in self.annotators]

    def keywords(self, j: JudgementLike, item_id: str | None = None) -> list[KeywordLabels]:
        """Each annotator's misaligned-keyword labels."""
        return [a.keywords(j, item_id) for a in self.annotators]

    def rich(self, j: JudgementLike, item_id: str | None = None) -> list[Record]:
        """Each annotator's full RichHF annotation (scores, points, keywords), concatenated."""
        return [r for a in self.annotators for r in a.rich(j, item_id)]

    def correct(self, j: JudgementLike, item_id: str | None = None) -> list[CaptionCorrection]:
        """Each annotator's caption correction."""
        return [a.correct(j, item_id) for a in self.annotators]


def make_panel(n: int = 3, noise: NoiseConfig | Mapping[str, float] | Sequence | None = None,
               seed: int = 0) -> Panel:
    """A panel of ``n`` annotators with distinct seeds derived from ``seed``.

    ``noise`` is one setting for all (``NoiseConfig``, dict of overrides, None) or a list of n settings.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(noise, Sequence) and not isinstance(noise, (str, bytes)):
        if len(noise) != n:
            raise ValueError(f"got {len(noise)} noise settings for {n} annotators")
        noises = [as_noise(x) for x in noise]
    else:
        noises = [as_noise(noise)] * n
    seeds = [int(s) for s in np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint64)]
    return Panel([Annotator(noises[i], seeds[i], annotator_id=f"s{seed}-a{i}") for i in range(n)])
