"""Contrastive prompt sets (TextNorm, Kim et al. ICLR 2024): ``C(z)`` for each prompt ``z``.

TextNorm's release holds one per TIA2 subset, ``prompts/prompt_set_<subset>.json`` (see
``tia2.release_path``), a JSON object ``{prompt: [contrastive prompt, ...]}``: prompts that differ
from ``z`` in a meaningful way (another count, object or attribute). ``world_prompt_set`` builds the
same mapping for ShapesWorld prompts from the grammar's one-attribute edits.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from .files import read_json
from .tia2 import TIA2FormatError


def check_prompt_set(mapping: Any, where: str = "prompt set") -> dict[str, list[str]]:
    """``mapping`` as ``{prompt: [contrastive prompts]}`` if well formed; else a TIA2FormatError naming the prompt."""
    if not isinstance(mapping, Mapping):
        raise TIA2FormatError(f"{where}: a prompt set is a JSON object {{prompt: [contrastive prompts]}}, "
                              f"got a {type(mapping).__name__}")
    out = {}
    for prompt, contrastive in mapping.items():
        if not isinstance(prompt, str) or not prompt.strip():
            raise TIA2FormatError(f"{where}: prompts must be non-empty strings, got {prompt!r}")
        if not isinstance(contrastive, (list, tuple)):
            raise TIA2FormatError(f"{where}: prompt {prompt!r} must map to a list of contrastive prompts, "
                                  f"got {type(contrastive).__name__}")
        if not contrastive:
            raise TIA2FormatError(f"{where}: prompt {prompt!r} has an empty contrastive set; "
                                  f"TextNorm needs at least one contrastive prompt")
        bad = [c for c in contrastive if not isinstance(c, str) or not c.strip()]
        if bad:
            raise TIA2FormatError(f"{where}: prompt {prompt!r} has contrastive prompts that are not non-empty "
                                  f"strings: {bad!r}")
        out[prompt] = list(contrastive)
    return out


def load_prompt_set(path: str | Path) -> dict[str, list[str]]:
    """Read a prompt set file (TextNorm's public format or one written by :func:`write_prompt_set`)."""
    path = Path(path)
    return check_prompt_set(read_json(path, "prompt set file", TIA2FormatError), str(path))


def write_prompt_set(mapping: Mapping[str, list[str]], path: str | Path) -> Path:
    """Write ``{prompt: [contrastive prompts]}`` in TextNorm's format (checked first); return the path."""
    data = check_prompt_set(mapping)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4) + "\n")
    return path


EDIT_ATTRIBUTES = ("count", "color", "shape", "background", "relation")


def world_prompt_set(prompts: Iterable[str], attributes: Iterable[str] | None = None) -> dict[str, list[str]]:
    """``{prompt: world.contrastive_prompts(prompt)}`` for ShapesWorld prompts: every one-attribute edit
    (count, color, shape, background, relation) is a contrastive prompt; ``attributes`` keeps only the edits
    of those attributes (e.g. ``("count",)``: a counting-specific set). A prompt outside the grammar raises the
    grammar's PromptError; one left without edits raises a TIA2FormatError."""
    from feedbacklab.world.grammar import contrastive_prompts, contrastive_specs, parse, prompt

    if isinstance(prompts, str):
        raise TypeError("prompts must be an iterable of prompt strings, not one string")
    if attributes is None:
        return check_prompt_set({p: contrastive_prompts(p) for p in prompts}, "world prompt set")
    keep = set(attributes)
    if not keep or keep - set(EDIT_ATTRIBUTES):
        raise ValueError(f"attributes must be a non-empty subset of {EDIT_ATTRIBUTES}, got {sorted(keep)}")
    return check_prompt_set({p: [prompt(v) for a, v in contrastive_specs(parse(p)) if a in keep] for p in prompts},
                            f"world prompt set ({', '.join(sorted(keep))} edits)")

