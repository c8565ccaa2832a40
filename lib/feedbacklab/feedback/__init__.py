"""Simulated human feedback: record types, annotators, consolidation and agreement.

Typical use::

    panel = make_panel(n=3, noise={"flip_prob": 0.1}, seed=0)
    labels = panel.binary(world.judge(prompt, image), item_id="img_0.png")
    consolidate_binary(labels)          # {"img_0.png": 1}
"""
from .agreement import (
    MaxdiffSummary,
    binary_agreement,
    fleiss_kappa,
    fleiss_kappa_counts,
    kendalls_w,
    maxdiff,
    maxdiff_histogram,
    pairwise_rank_agreement,
    ranking_agreement,
    score_agreement,
)
from .annotators import (
    MISALIGNED_CAP,
    OVERALL_WEIGHTS,
    Annotator,
    NoiseConfig,
    Panel,
    as_noise,
    caption_edits,
    changed_token_count,
    closest_description,
    equivalent_captions,
    item_key,
    latent_scores,
    make_correction,
    make_panel,
)
from .consolidate import (
    consolidate_binary,
    consolidate_heatmaps,
    consolidate_keywords,
    consolidate_scores,
    disc_map,
    group_by_item,
    majority_vote,
    normalized_mean,
    points_heatmap,
    ranking_pairs,
)
from .rich import MAP_KINDS, RichLabel, consolidate_rich, stack_labels
from .records import (
    POINT_KINDS,
    RECORD_TYPES,
    SCORE_ASPECTS,
    BinaryLabel,
    CaptionCorrection,
    KeywordLabels,
    LikertScores,
    PointAnnotation,
    Ranking,
    Record,
    RecordError,
    load_records,
    records_from_json,
    records_to_json,
    save_records,
)

__all__ = [name for name in dir() if not name.startswith("_")
           and name not in {"agreement", "annotators", "consolidate", "records", "rich"}]
