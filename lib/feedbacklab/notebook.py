"""Helpers every notebook calls, and the conventions the runner relies on.

A notebook of the workbook:

1. has exactly one cell tagged ``parameters`` holding flat, documented defaults,
   among them ``output_dir`` (the runner injects ``reports/<profile>/<name>/``)
   and sizes chosen with :func:`by_profile`, e.g.
   ``n_images = by_profile(2000, smoke=50)  # images per family``;
   under nbval, ``FEEDBACKLAB_PROFILE=smoke`` selects the tiny sizes, and
   papermill's injected cell (which comes after) still wins;
2. calls ``out = setup(seed, output_dir)`` right after the parameters cell;
3. ends with ``write_metrics(out, metrics, claims)``, which writes
   ``<output_dir>/metrics.json`` and shows the paper-vs-this-run table.

``metrics.json`` (read back by the runner for ``reports/<profile>/index.html``)::

    {
      "metrics": {"<name>": <finite number or null>, ...},   # flat, str -> number
      "claims": [{"claim": str,                 # the paper's claim, in words
                  "paper": str | number,        # the paper's number
                  "this_run": str | number,     # this run's number
                  "holds": true | false | null}, ...],
      "key_metrics": ["<name>", ...],           # optional: shown in the index row
      "profile": "<FEEDBACKLAB_PROFILE or null>"
    }

Any other top-level key is ignored by the runner. All strings are HTML-escaped
when the index is rendered.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PROFILES_DIR = NOTEBOOKS_DIR / "profiles"
REPORTS_DIR = REPO_ROOT / "reports"
PROFILE_ENV = "FEEDBACKLAB_PROFILE"
PROFILES_DIR_ENV = "FEEDBACKLAB_PROFILES_DIR"
METRICS_FILE = "metrics.json"
CLAIM_FIELDS = ("claim", "paper", "this_run", "holds")

Number = int | float


class ProfileError(ValueError):
    """An unknown profile name (in the environment or in ``by_profile``)."""


class MetricsError(ValueError):
    """A metrics/claims payload that does not follow the metrics.json convention."""


@dataclass(frozen=True)
class Claim:
    """One row of the paper-vs-this-run table."""

    claim: str
    paper: str | Number
    this_run: str | Number
    holds: bool | None = None


def profiles_dir() -> Path:
    """The profiles directory: ``$FEEDBACKLAB_PROFILES_DIR`` if set, else ``notebooks/profiles``."""
    return Path(os.environ.get(PROFILES_DIR_ENV) or PROFILES_DIR)


def known_profiles(directory: Path | None = None) -> list[str]:
    """Names of the profiles present (``<name>.yaml`` files), sorted."""
    directory = profiles_dir() if directory is None else Path(directory)
    return sorted(p.stem for p in directory.glob("*.yaml"))


def current_profile() -> str | None:
    """The profile selected by ``$FEEDBACKLAB_PROFILE`` (None when unset); validated."""
    name = os.environ.get(PROFILE_ENV) or None
    if name is not None:
        _check_profiles([name], f"${PROFILE_ENV}")
    return name


def by_profile(default: Any, **per_profile: Any) -> Any:
    """``per_profile[$FEEDBACKLAB_PROFILE]`` when given for the current profile, else ``default``.

    Keys must name profiles of the active profiles directory or of the repository's.
    """
    _check_profiles(per_profile, "by_profile()", also=known_profiles(PROFILES_DIR))
    name = current_profile()
    return per_profile[name] if name in per_profile else default


def _check_profiles(names, where: str, also: list[str] = ()) -> None:
    known = sorted(set(known_profiles()) | set(also))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ProfileError(
            f"{where}: unknown profile(s) {unknown}; known profiles (the *.yaml files in "
            f"{profiles_dir()}{' and ' + str(PROFILES_DIR) if also else ''}): {known}"
        )


def setup(seed: int, output_dir: str | os.PathLike, threads: int | None = None) -> Path:
    """Seed python, numpy and torch with ``seed``, create ``output_dir``, set torch threads."""
    import numpy as np
    import torch

    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if threads is not None:
        if not isinstance(threads, numbers.Integral) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        torch.set_num_threads(int(threads))
    random.seed(seed)
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(seed)
    out = Path(output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def validate_metrics(metrics: Any) -> dict[str, Number | None]:
    """Check a flat ``{str: finite number or None}`` dict; return it with plain python numbers."""
    if not isinstance(metrics, dict):
        raise MetricsError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
    clean: dict[str, Number | None] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise MetricsError(f"metric names must be non-empty strings, got {key!r}")
        clean[key] = _number(value, f"metric {key!r}", allow_none=True)
    return clean


def validate_claims(claims: Any) -> list[dict[str, Any]]:
    """Check claim rows (``Claim`` or dicts with exactly claim/paper/this_run/holds); return dicts."""
    if not isinstance(claims, (list, tuple)):
        raise MetricsError(f"claims must be a list of Claim or dict, got {type(claims).__name__}")
    rows = []
    for i, row in enumerate(claims):
        if isinstance(row, Claim):
            row = asdict(row)
        if not isinstance(row, dict):
            raise MetricsError(f"claims[{i}] must be a Claim or dict, got {type(row).__name__}")
        if set(row) != set(CLAIM_FIELDS):
            raise MetricsError(
                f"claims[{i}] has fields {sorted(row)}; expected exactly {list(CLAIM_FIELDS)}"
            )
        if not isinstance(row["claim"], str) or not row["claim"]:
            raise MetricsError(f"claims[{i}].claim must be a non-empty string, got {row['claim']!r}")
        holds = row["holds"]
        if holds is not None and not isinstance(holds, (bool, _np_bool())):
            raise MetricsError(f"claims[{i}].holds must be true, false or null, got {holds!r}")
        rows.append({
            "claim": row["claim"],
            "paper": _text_or_number(row["paper"], f"claims[{i}].paper"),
            "this_run": _text_or_number(row["this_run"], f"claims[{i}].this_run"),
            "holds": None if holds is None else bool(holds),
        })
    return rows


def validate_payload(payload: Any) -> dict[str, Any]:
    """Check a whole metrics.json payload; return it with metrics, claims and key_metrics cleaned."""
    if not isinstance(payload, dict) or "metrics" not in payload:
        raise MetricsError('metrics.json must be an object with a "metrics" key (and "claims")')
    clean = dict(payload)
    clean["metrics"] = validate_metrics(payload["metrics"])
    clean["claims"] = validate_claims(payload.get("claims", []))
    key = payload.get("key_metrics")
    if key is not None:
        if not isinstance(key, (list, tuple)) or any(k not in clean["metrics"] for k in key):
            raise MetricsError(
                f"key_metrics must list names among the metrics {sorted(clean['metrics'])}, got {key!r}"
            )
        clean["key_metrics"] = list(key)
    return clean


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a metrics.json file (or the one inside a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise MetricsError(f"{path} is not valid JSON: {err}") from err
    return validate_payload(payload)


def write_metrics(
    output_dir: str | os.PathLike,
    metrics: dict[str, Any],
    claims: list[Claim | dict[str, Any]],
    key_metrics: list[str] | None = None,
) -> "pd.DataFrame":
    """Validate and write ``<output_dir>/metrics.json``; return the claims table (path in ``.attrs``).

    Also lets pandas show table cells in full, so long claims and prompts are not cut.
    """
    import pandas as pd

    payload = validate_payload({
        "metrics": metrics,
        "claims": claims,
        **({"key_metrics": key_metrics} if key_metrics is not None else {}),
        "profile": os.environ.get(PROFILE_ENV) or None,
    })
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / METRICS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    pd.set_option("display.max_colwidth", None)
    table = pd.DataFrame(payload["claims"], columns=list(CLAIM_FIELDS))
    table.attrs["path"] = path
    return table


def _np_bool() -> type:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return bool
    return np.bool_


def _number(value: Any, what: str, allow_none: bool = False) -> Number | None:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, _np_bool())) or not isinstance(value, numbers.Real):
        accepted = "a finite number or None" if allow_none else "a finite number"
        raise MetricsError(f"{what} must be {accepted}, got {value!r} ({type(value).__name__})")
    number = int(value) if isinstance(value, numbers.Integral) else float(value)
    if not math.isfinite(number):
        raise MetricsError(f"{what} must be finite, got {value!r} (use None for 'not measured')")
    return number


def _text_or_number(value: Any, what: str) -> str | Number:
    if isinstance(value, str):
        return value
    try:
        return _number(value, what)
    except MetricsError:
        raise MetricsError(f"{what} must be a string or a finite number, got {value!r}") from None
