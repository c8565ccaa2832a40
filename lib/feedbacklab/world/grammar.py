"""ShapesWorld prompt grammar: vocabulary, `Spec`, `prompt`/`parse`, sampling, held-out split.

Three prompt families, all lower case, single spaces, no punctuation:

- attribute:   ``{count} {color} {shape}[s] on a {background} background``
  (``one red circle on a white background``, ``two red circles on a gray background``)
- composition: ``a {color} {shape} and a {color} {shape} on a {background} background``
- spatial:     ``a {color} {shape} {relation} a {color} {shape}`` where relation is
  ``to the left of`` / ``to the right of`` / ``above`` / ``below``; the spatial family names
  no background (the renderer picks one, seeded).

`parse` is the exact inverse of `prompt`; a prompt outside the grammar raises `PromptError`
naming the word and its position.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

# Object palette (RGB). Hues and lightness are well separated so that colours survive blur, noise and
# a tiny VAE's drift (purple is magenta-leaning so it does not drift into blue). Every pair of palette
# and background colours is at least 95 apart in RGB (tested); gray is light enough that every palette
# colour differs from it in luma by >= 35 (JPEG keeps luma edges sharp, chroma ones not).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (175, 45, 200),
}
# Backgrounds: three neutrals and a pale non-palette tint; none is confusable with an object colour.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (148, 148, 148),
    "beige": (225, 205, 160),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four")
FAMILIES: tuple[str, ...] = ("attribute", "composition", "spatial")
RELATIONS: tuple[str, ...] = ("left", "right", "above", "below")
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("to", "the", "left", "of"),
    "right": ("to", "the", "right", "of"),
    "above": ("above",),
    "below": ("below",),
}
SPLITS: tuple[str, ...] = ("seen", "unseen", "any")

# Held-out (color, shape) pairs: a spec is "unseen" iff one of its objects is such a pair. Pretraining
# draws only seen specs. Every colour keeps two seen shapes and every shape keeps four seen colours.
UNSEEN_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("green", "circle"), ("blue", "square")}
)


class PromptError(ValueError):
    """A prompt outside the ShapesWorld grammar; `position` is the 0-based word index, `word` the word."""

    def __init__(self, message: str, position: int, word: str | None):
        super().__init__(message)
        self.position = position
        self.word = word


@dataclass(frozen=True)
class Spec:
    """What a prompt asks for: family, (color, shape) per object, background and (spatial) relation."""

    family: str
    objects: tuple[tuple[str, str], ...]
    background: str | None
    relation: str | None = None

    def __post_init__(self) -> None:
        _check_spec(self)

    @property
    def count(self) -> int:
        """Number of objects the prompt asks for."""
        return len(self.objects)


def _check_spec(spec: Spec) -> None:
    """Raise ValueError if `spec` cannot be written as a prompt of its family."""
    if spec.family not in FAMILIES:
        raise ValueError(f"unknown family {spec.family!r}; expected one of {FAMILIES}")
    if not isinstance(spec.objects, tuple) or not spec.objects:
        raise ValueError("Spec.objects must be a non-empty tuple of (color, shape) pairs")
    for obj in spec.objects:
        if not (isinstance(obj, tuple) and len(obj) == 2):
            raise ValueError(f"object {obj!r} is not a (color, shape) pair")
        if obj[0] not in COLORS:
            raise ValueError(f"unknown color {obj[0]!r}; expected one of {tuple(COLORS)}")
        if obj[1] not in SHAPES:
            raise ValueError(f"unknown shape {obj[1]!r}; expected one of {SHAPES}")
    if spec.family == "spatial":
        if spec.background is not None:
            raise ValueError("spatial specs name no background (background must be None)")
        if spec.relation not in RELATIONS:
            raise ValueError(f"spatial relation {spec.relation!r} not in {RELATIONS}")
    else:
        if spec.background not in BACKGROUNDS:
            raise ValueError(f"unknown background {spec.background!r}; expected one of {tuple(BACKGROUNDS)}")
        if spec.relation is not None:
            raise ValueError(f"{spec.family} specs take no relation (got {spec.relation!r})")
    if spec.family == "attribute":
        if not 1 <= len(spec.objects) <= len(COUNT_WORDS):
            raise ValueError(f"attribute count must be 1..{len(COUNT_WORDS)}, got {len(spec.objects)}")
        if len(set(spec.objects)) != 1:
            raise ValueError("attribute specs repeat one (color, shape) pair")
    elif len(spec.objects) != 2:
        raise ValueError(f"{spec.family} specs have exactly two objects, got {len(spec.objects)}")


def _plural(shape: str) -> str:
    return shape + "s"


def prompt(spec: Spec) -> str:
    """The prompt text of `spec` (exact inverse of `parse`)."""
    if spec.family == "attribute":
        color, shape = spec.objects[0]
        noun = shape if spec.count == 1 else _plural(shape)
        return f"{COUNT_WORDS[spec.count - 1]} {color} {noun} on a {spec.background} background"
    (c1, s1), (c2, s2) = spec.objects
    if spec.family == "composition":
        return f"a {c1} {s1} and a {c2} {s2} on a {spec.background} background"
    return f"a {c1} {s1} {' '.join(RELATION_PHRASES[spec.relation])} a {c2} {s2}"


class _Reader:
    """Word cursor over a prompt that raises PromptError naming the offending word and position."""

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise TypeError(f"prompt must be str, got {type(text).__name__}")
        self.words = text.split(" ")
        self.i = 0
        for j, w in enumerate(self.words):
            if w == "":
                raise PromptError(f"empty word at position {j}: use single spaces, no leading/trailing space",
                                  j, w)

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def fail(self, expected: str) -> PromptError:
        word = self.peek()
        got = "end of prompt" if word is None else repr(word)
        return PromptError(f"could not parse {got} at position {self.i}: expected {expected}", self.i, word)

    def take(self, allowed: tuple[str, ...] | list[str], what: str) -> str:
        word = self.peek()
        if word not in allowed:
            raise self.fail(f"{what} (one of {', '.join(allowed)})")
        self.i += 1
        return word

    def end(self) -> None:
        if self.peek() is not None:
            raise self.fail("end of prompt")


def _read_object(r: _Reader) -> tuple[str, str]:
    r.take(("a",), "article")
    color = r.take(tuple(COLORS), "a color")
    shape = r.take(SHAPES, "a singular shape")
    return color, shape


def _read_background(r: _Reader) -> str:
    r.take(("on",), "'on'")
    r.take(("a",), "'a'")
    bg = r.take(tuple(BACKGROUNDS), "a background")
    r.take(("background",), "'background'")
    return bg


def parse(text: str) -> Spec:
    """Parse a ShapesWorld prompt into its `Spec`; raises PromptError naming the word and position."""
    r = _Reader(text)
    first = r.peek()
    if first in COUNT_WORDS:
        n = COUNT_WORDS.index(r.take(COUNT_WORDS, "a count")) + 1
        color = r.take(tuple(COLORS), "a color")
        nouns = SHAPES if n == 1 else tuple(_plural(s) for s in SHAPES)
        noun = r.take(nouns, "a singular shape" if n == 1 else "a plural shape")
        shape = noun if n == 1 else noun[:-1]
        bg = _read_background(r)
        r.end()
        return Spec("attribute", ((color, shape),) * n, bg)
    if first != "a":
        raise r.fail(f"a count ({', '.join(COUNT_WORDS)}) or 'a'")
    obj1 = _read_object(r)
    if r.peek() == "and":
        r.take(("and",), "'and'")
        obj2 = _read_object(r)
        bg = _read_background(r)
        r.end()
        return Spec("composition", (obj1, obj2), bg)
    head = r.take(("and", "to", "above", "below"), "'and' or a relation")
    if head == "to":
        r.take(("the",), "'the'")
        relation = r.take(("left", "right"), "'left' or 'right'")
        r.take(("of",), "'of'")
    else:
        relation = head
    obj2 = _read_object(r)
    r.end()
    return Spec("spatial", (obj1, obj2), None, relation)


def is_unseen(spec: Spec) -> bool:
    """True iff some object of `spec` is a held-out (color, shape) pair (see UNSEEN_PAIRS)."""
    return any(obj in UNSEEN_PAIRS for obj in spec.objects)


def _pairs(split: str) -> list[tuple[str, str]]:
    allp = [(c, s) for c in COLORS for s in SHAPES]
    if split == "seen":
        return [p for p in allp if p not in UNSEEN_PAIRS]
    if split == "unseen":
        return sorted(UNSEEN_PAIRS)
    return allp


def sample_spec(rng: random.Random, family: str = "attribute", split: str = "seen") -> Spec:
    """Draw a random spec of `family` from `rng`; split "seen" avoids UNSEEN_PAIRS, "unseen" uses >=1."""
    if not isinstance(rng, random.Random):
        raise TypeError(f"rng must be random.Random, got {type(rng).__name__}")
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if family == "attribute":
        pair = rng.choice(_pairs(split))
        return Spec("attribute", (pair,) * rng.randint(1, len(COUNT_WORDS)), rng.choice(tuple(BACKGROUNDS)))
    if split == "unseen":  # one held-out object, the other any distinct pair, in random order
        first = rng.choice(_pairs("unseen"))
        second = rng.choice([p for p in _pairs("any") if p != first])
        objects = (first, second) if rng.random() < 0.5 else (second, first)
    else:
        objects = tuple(rng.sample(_pairs(split), 2))
    if family == "composition":
        return Spec("composition", objects, rng.choice(tuple(BACKGROUNDS)))
    return Spec("spatial", objects, None, rng.choice(RELATIONS))


def _variants(spec: Spec) -> list[Spec]:
    """Specs that differ from `spec` in exactly one attribute value, in a fixed order."""
    out: list[Spec] = []
    if spec.family == "attribute":
        pair = spec.objects[0]
        out += [Spec("attribute", (pair,) * n, spec.background) for n in range(1, 5) if n != spec.count]
        out += [Spec("attribute", ((c, pair[1]),) * spec.count, spec.background) for c in COLORS if c != pair[0]]
        out += [Spec("attribute", ((pair[0], s),) * spec.count, spec.background) for s in SHAPES if s != pair[1]]
    else:
        for i, (color, shape) in enumerate(spec.objects):
            for c in COLORS:
                if c != color:
                    out.append(_replace_object(spec, i, (c, shape)))
            for s in SHAPES:
                if s != shape:
                    out.append(_replace_object(spec, i, (color, s)))
        # two identical objects would make a different (count-like) prompt, not a one-attribute change
        out = [v for v in out if v.objects[0] != v.objects[1]]
    if spec.family == "spatial":
        out += [Spec("spatial", spec.objects, None, rel) for rel in RELATIONS if rel != spec.relation]
    else:
        out += [Spec(spec.family, spec.objects, b, None) for b in BACKGROUNDS if b != spec.background]
    return out


def _replace_object(spec: Spec, i: int, obj: tuple[str, str]) -> Spec:
    objects = tuple(obj if j == i else o for j, o in enumerate(spec.objects))
    return Spec(spec.family, objects, spec.background, spec.relation)


def contrastive_prompts(text: str) -> list[str]:
    """Rule-based prompts that differ from `text` in exactly one attribute (count, color, shape, bg, relation)."""
    return [prompt(v) for v in _variants(parse(text))]


def contrastive_specs(spec: Spec) -> list[tuple[str, Spec]]:
    """(changed attribute, spec) for each one-attribute variant of `spec`; same order as contrastive_prompts."""
    out = []
    for v in _variants(spec):
        out.append((_changed_attribute(spec, v), v))
    return out


def _changed_attribute(a: Spec, b: Spec) -> str:
    if a.count != b.count:
        return "count"
    if a.background != b.background:
        return "background"
    if a.relation != b.relation:
        return "relation"
    if any(x[0] != y[0] for x, y in zip(a.objects, b.objects)):
        return "color"
    return "shape"


def spatial_relation(first: tuple[float, float], second: tuple[float, float]) -> str | None:
    """Relation of point `first` to `second` (image coords, y down): the dominant axis decides; ties -> None."""
    dx, dy = first[0] - second[0], first[1] - second[1]
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) > abs(dx):
        return "above" if dy < 0 else "below"
    return None

