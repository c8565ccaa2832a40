"""Loaders for real feedback data formats and writers of world-generated sets in the same formats.

- ``tia2``: the TIA2 benchmark (Kim et al., ICLR 2024): ``load_tia2``, ``write_tia2``,
  ``per_prompt_alignment``, ``evaluate_tia2`` and ``build_shapes_tia2``.
- ``richhf``: RichHF-18K (Liang et al., CVPR 2024) TFRecords without TensorFlow:
  ``read_richhf_tfrecord`` (labels, prompts, Pick-a-Pic images) and ``write_richhf_tfrecord``.
"""
from .richhf import (
    RICHHF_FEATURES,
    RichHFFormatError,
    RichHFSet,
    read_richhf_tfrecord,
    richhf_tokens,
    write_image_dir,
    write_richhf_tfrecord,
)
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

__all__ = ["RICHHF_FEATURES", "SUBSETS", "RichHFFormatError", "RichHFSet", "TIA2FormatError", "TIA2Record",
           "build_shapes_tia2", "evaluate_tia2", "load_images", "load_tia2", "per_prompt_alignment",
           "read_richhf_tfrecord", "rendered_images", "richhf_tokens", "sample_prompts", "write_image_dir",
           "write_richhf_tfrecord", "write_tia2"]
