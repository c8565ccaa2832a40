"""ShapesWorld: the embedded synthetic world whose truth is known (see DESIGN.md, "The embedded default").

- grammar: prompts <-> `Spec` (`prompt`, `parse`, `sample_spec`, `is_unseen`, `contrastive_prompts`)
- renderer: `render(spec, size, seed) -> (uint8 HxWx3 image, Scene)`
- scene: `Scene`, `SceneObject`, `Artifact`, `describe`
- perception: `perceive(image) -> Scene` (the oracle's eyes)
- oracle: `judge(prompt, image) -> Judgement` (the oracle's verdict; rules in its docstring)
- captions: `check_caption(caption, scene) -> CaptionCheck` (hallucinated claims and coverage of a caption)
- corrupt: controlled corruptions with ground truth (`corrupt.apply(kind, image, scene, rng, strength)`)
- validate: the oracle's validation tables (`validate.oracle_validation(n, size, seed)`)
"""
from . import corrupt, validate
from .captions import CaptionCheck, check_caption
from .grammar import (BACKGROUNDS, COLORS, COUNT_WORDS, FAMILIES, RELATIONS, SHAPES, UNSEEN_PAIRS,
                      PromptError, Spec, contrastive_prompts, contrastive_specs, is_unseen, parse, prompt,
                      sample_spec)
from .oracle import Judgement, judge
from .perception import perceive
from .renderer import render
from .scene import Artifact, DescribeError, Scene, SceneObject, describe

__all__ = [
    "BACKGROUNDS", "COLORS", "COUNT_WORDS", "FAMILIES", "RELATIONS", "SHAPES", "UNSEEN_PAIRS",
    "PromptError", "Spec", "contrastive_prompts", "contrastive_specs", "is_unseen", "parse", "prompt",
    "sample_spec", "render", "Artifact", "DescribeError", "Scene", "SceneObject", "describe", "perceive",
    "judge", "Judgement", "corrupt", "validate", "CaptionCheck", "check_caption",
]
