"""TextNorm's published per-prompt scores: ``alignment_scores/alignment_scores_<subset>.json``.

The file (kykim0/TextNorm) is a JSON object keyed by prompt; each value holds ``"human"`` (the
prompt's human alignment rate, as ``tia2.per_prompt_alignment``) and one object per reward model
(``clip``, ``blip2``, ``imagereward``, ``pickscore``, ``textnorm_ur`` or ``textnorm_mean``) with that
reward's per-prompt metrics (``auroc``, ``auprc``, ``ap5``, ``ap10``, ``ap25``, ``spearman``,
``kendall``: the keys of ``tia2.evaluate_tia2``) and, for TextNorm, the hyper-parameters chosen for the
prompt (``scale``, ``lambda``). The paper's table is the mean of each metric over prompts.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedbacklab.metrics import GroupedMetric

from .files import read_json
from .tia2 import TIA2FormatError

METRIC_PATTERN = re.compile(r"auroc|auprc|ap\d+|spearman|kendall")  # keys of evaluate_tia2; the rest are parameters


@dataclass(frozen=True)
class AlignmentScores:
    """One score file, tidy: human rates, per-reward metrics per prompt with their means, and parameters."""

    human: dict[str, float]                                # prompt -> human alignment rate
    metrics: dict[str, dict[str, GroupedMetric]]  # reward -> metric -> per-prompt values and mean
    params: dict[str, dict[str, dict[str, float]]]        # reward -> parameter ("scale", "lambda") -> per prompt

    @property
    def rewards(self) -> list[str]:
        """Reward names in file order."""
        return list(self.metrics)

    def means(self) -> dict[str, dict[str, float]]:
        """reward -> metric -> mean over the prompts where it is defined (the paper's table)."""
        return {reward: {m: g.mean for m, g in by_metric.items()} for reward, by_metric in self.metrics.items()}


def _number(value: Any, where: str) -> float:
    """A JSON number as float; null reads as nan (undefined for the prompt)."""
    if value is None:
        return float("nan")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TIA2FormatError(f"{where} must be a number (or null), got {value!r}")
    return float(value)


def load_alignment_scores(path: str | Path) -> AlignmentScores:
    """Read a TextNorm score file; NaN or null values are undefined for that prompt (left out of the mean
    and counted in ``n_undefined``). A reward missing for a prompt is absent from that prompt's values."""
    path = Path(path)
    data = read_json(path, "alignment score file", TIA2FormatError)
    if not isinstance(data, dict):
        raise TIA2FormatError(f"{path}: a score file is a JSON object keyed by prompt, "
                              f"got a JSON {type(data).__name__}")
    human: dict[str, float] = {}
    values: dict[str, dict[str, dict[str, float]]] = {}
    params: dict[str, dict[str, dict[str, float]]] = {}
    for prompt, entry in data.items():
        where = f"{path}: prompt {prompt!r}"
        if not isinstance(entry, dict):
            raise TIA2FormatError(f"{where}: expected an object with 'human' and one object per reward, "
                                  f"got {type(entry).__name__}")
        if "human" not in entry:
            raise TIA2FormatError(f"{where}: missing key 'human' (the prompt's human alignment rate)")
        human[prompt] = _number(entry["human"], f"{where}: 'human'")
        for reward, fields in entry.items():
            if reward == "human":
                continue
            if not isinstance(fields, dict):
                raise TIA2FormatError(f"{where}: reward {reward!r} must be an object of metrics, "
                                      f"got {type(fields).__name__}")
            for name, value in fields.items():
                target = values if METRIC_PATTERN.fullmatch(name) else params
                value = _number(value, f"{where}: {reward}.{name}")
                target.setdefault(reward, {}).setdefault(name, {})[prompt] = value
    grouped = {reward: {m: GroupedMetric.of(v) for m, v in by_metric.items()} for reward, by_metric in values.items()}
    return AlignmentScores(human, grouped, params)
