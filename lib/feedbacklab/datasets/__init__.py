"""Loaders for real feedback data formats and writers of world-generated sets in the same formats.

- ``tia2``: the TIA2 benchmark (Kim et al., ICLR 2024): ``load_tia2``, ``write_tia2``,
  ``per_prompt_alignment``, ``evaluate_tia2``, ``build_shapes_tia2`` and the release layout ``release_path``.
- ``prompt_sets``: TextNorm's contrastive prompt sets: ``load_prompt_set``, ``write_prompt_set``,
  ``world_prompt_set``.
- ``alignment_scores``: TextNorm's published per-prompt metrics: ``load_alignment_scores``.
- ``richhf``: RichHF-18K (Liang et al., CVPR 2024) TFRecords without TensorFlow:
  ``read_richhf_tfrecord`` (labels, prompts, Pick-a-Pic images), ``read_richhf_splits`` (train/dev/test at
  one size) and ``write_richhf_tfrecord``.
- ``rlhfv``: the RLHF-V release (Yu et al., CVPR 2024) parquet: ``load_rlhfv``, ``write_rlhfv``,
  ``segment_spans`` (the changed segments the release does not store), ``to_preference_pairs``.
- ``imagerewarddb``: ImageRewardDB (Xu et al., NeurIPS 2023) parquet, read lazily: ``load_imagerewarddb`` (prompt
  groups, ``ImageRewardGroup.to_ranking``), ``rankings_from_imagerewarddb``,
  ``ranking_inputs`` (a split as the ranking reward's training input), ``write_imagerewarddb``.
- ``pickapic``: Pick-a-Pic v2 (Kirstain et al., NeurIPS 2023) parquet, read lazily: ``load_pickapic`` (pairs, ties,
  skip counts), ``rankings_from_pickapic``, ``write_pickapic``.
"""
from .alignment_scores import AlignmentScores, load_alignment_scores
from .imagerewarddb import (ImageRewardDBFormatError, ImageRewardGroup, load_imagerewarddb,
                            ranking_inputs, rankings_from_imagerewarddb, write_imagerewarddb)
from .pickapic import (PickAPicFormatError, PickAPicPair, PickAPicSet, load_pickapic, rankings_from_pickapic,
                       write_pickapic)
from .prompt_sets import check_prompt_set, load_prompt_set, world_prompt_set, write_prompt_set
from .richhf import (
    RICHHF_FEATURES,
    RichHFFormatError,
    RICHHF_SPLITS,
    RichHFSet,
    read_richhf_splits,
    read_richhf_tfrecord,
    richhf_tokens,
    summarize_richhf,
    write_image_dir,
    write_richhf_tfrecord,
)
from .rlhfv import (RLHFVFormatError, RLHFVRecord, load_rlhfv, records_from_corrections, segment_spans,
                    summarize_rlhfv, to_preference_pairs, write_rlhfv)
from .tia2 import (
    SUBSETS,
    TIA2FormatError,
    TIA2Record,
    build_shapes_tia2,
    check_subset,
    evaluate_tia2,
    load_images,
    load_tia2,
    per_prompt_alignment,
    release_path,
    rendered_images,
    generator_images,
    sample_prompts,
    write_tia2,
)

__all__ = ["RICHHF_SPLITS", "summarize_richhf", "summarize_rlhfv", "RLHFVFormatError", "RLHFVRecord", "load_rlhfv", "records_from_corrections", "segment_spans",
           "to_preference_pairs", "write_rlhfv", "AlignmentScores", "RICHHF_FEATURES", "SUBSETS", "RichHFFormatError", "RichHFSet", "TIA2FormatError",
           "TIA2Record", "build_shapes_tia2", "check_prompt_set", "check_subset", "evaluate_tia2",
           "load_alignment_scores", "load_images", "load_prompt_set", "load_tia2", "per_prompt_alignment",
           "generator_images", "read_richhf_splits", "read_richhf_tfrecord", "release_path", "rendered_images", "richhf_tokens", "sample_prompts",
           "world_prompt_set", "write_image_dir", "write_prompt_set", "write_richhf_tfrecord", "write_tia2",
           "ImageRewardDBFormatError", "ImageRewardGroup", "load_imagerewarddb", "ranking_inputs", "rankings_from_imagerewarddb",
           "write_imagerewarddb", "PickAPicFormatError", "PickAPicPair", "PickAPicSet", "load_pickapic",
           "rankings_from_pickapic", "write_pickapic"]
