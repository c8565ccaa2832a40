"""Loaders for real feedback data formats and writers of world-generated sets in the same formats.

- ``tia2``: the TIA2 benchmark (Kim et al., ICLR 2024): ``load_tia2``, ``write_tia2``,
  ``per_prompt_alignment``, ``evaluate_tia2`` and ``build_shapes_tia2``.
"""
from .tia2 import (
    SUBSETS,
    TIA2FormatError,
    TIA2Record,
    build_shapes_tia2,
    evaluate_tia2,
    load_images,
    load_tia2,
    per_prompt_alignment,
    rendered_images,
    sample_prompts,
    write_tia2,
)

__all__ = ["SUBSETS", "TIA2FormatError", "TIA2Record", "build_shapes_tia2", "evaluate_tia2", "load_images",
           "load_tia2", "per_prompt_alignment", "rendered_images", "sample_prompts", "write_tia2"]
