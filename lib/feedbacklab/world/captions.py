"""The oracle's check of a caption against the true scene: which claims are hallucinated, which objects it covers.

A caption is read with the world grammar. Its *object mentions* are its (colour, shape) objects, a count of n
identical objects being n mentions; a mention is hallucinated when no true object is left to match it
(multiset matching, CHAIR, Rohrbach et al. 2018, with colours), so "three red circles" over two red circles
hallucinates one. The other claims a caption makes are its count (attribute captions), the spatial relation
and the background; each is checked against the scene. Object HalBench (RLHF-V, Yu et al. 2024) reports the
share of responses with any hallucination and the share of hallucinated mentions.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import permutations

from .grammar import parse, spatial_relation
from .scene import Scene


@dataclass(frozen=True)
class CaptionCheck:
    """One caption judged against one scene; ``parsed`` is False for text outside the world grammar."""

    parsed: bool
    mentions: int                # object mentions the caption makes
    hallucinated_mentions: int   # mentions no true object matches
    true_objects: int            # objects in the scene
    covered: int                 # true objects some mention matches (coverage numerator)
    count_wrong: bool            # attribute caption states a count other than the scene's
    relation_wrong: bool         # spatial caption states a relation the matched objects do not have
    background_wrong: bool       # caption names a background other than the scene's
    words: int                   # caption length in words

    @property
    def hallucinated(self) -> bool:
        """Any claim the scene contradicts (or unreadable text): the response-level verdict."""
        return (not self.parsed or self.hallucinated_mentions > 0 or self.count_wrong or self.relation_wrong
                or self.background_wrong)

    @property
    def object_hallucinated(self) -> bool:
        """At least one mentioned object is not in the scene (Object HalBench's response-level rule)."""
        return not self.parsed or self.hallucinated_mentions > 0


def _relation_holds(objects: tuple[tuple[str, str], ...], relation: str, scene: Scene) -> bool:
    """Whether some pair of distinct true objects matching the two mentions stands in ``relation``."""
    for i, j in permutations(range(len(scene.objects)), 2):
        a, b = scene.objects[i], scene.objects[j]
        if (a.color, a.shape) == objects[0] and (b.color, b.shape) == objects[1] \
                and spatial_relation(a.center, b.center) == relation:
            return True
    return False


def check_caption(caption: str, scene: Scene) -> CaptionCheck:
    """Judge ``caption`` against the true ``scene`` (see the module docstring for each rule)."""
    truth = Counter((o.color, o.shape) for o in scene.objects)
    words = len(caption.split())
    try:
        spec = parse(caption)
    except ValueError:
        return CaptionCheck(False, 0, 0, len(scene.objects), 0, False, False, False, words)
    said = Counter(spec.objects)
    hallucinated = sum((said - truth).values())
    covered = sum((said & truth).values())
    count_wrong = spec.family == "attribute" and spec.count != len(scene.objects)
    relation_wrong = (spec.family == "spatial" and hallucinated == 0
                      and not _relation_holds(spec.objects, spec.relation, scene))
    background_wrong = spec.background is not None and spec.background != scene.background
    return CaptionCheck(True, spec.count, hallucinated, len(scene.objects), covered, count_wrong, relation_wrong,
                        background_wrong, words)
