"""Planning and state: a profile's notebooks become jobs (paths, parameters, an inputs key), and each job's state
file says whether its last run succeeded with the same inputs (then a rerun skips it).

The inputs key hashes the notebook file, its parameters and the ``feedbacklab`` sources; the state file
``reports/<profile>/.state/<name>.json`` is removed when a job starts and written atomically when it ends.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .profiles import OUTPUT_DIR_PARAM, ConfigError, Profile, declared_parameters

LIB_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Job:
    """One notebook to run under a profile, with every path and its inputs key."""

    name: str
    notebook: Path
    parameters: dict[str, Any]
    report_dir: Path  # reports/<profile>/
    key: str

    @property
    def executed(self) -> Path:
        return self.report_dir / f"{self.name}.ipynb"

    @property
    def html(self) -> Path:
        return self.report_dir / f"{self.name}.html"

    @property
    def output_dir(self) -> Path:
        return self.report_dir / self.name

    @property
    def state(self) -> Path:
        return self.report_dir / ".state" / f"{self.name}.json"


def file_hash(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def source_hash(lib_dir: Path | None = None) -> str:
    """sha256 over every ``.py`` file under ``lib_dir`` (default: the feedbacklab package), sorted."""
    lib_dir = Path(lib_dir or LIB_DIR)
    digest = hashlib.sha256()
    for path in sorted(Path(lib_dir).rglob("*.py")):
        digest.update(path.relative_to(lib_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def inputs_key(notebook_sha: str, parameters: dict[str, Any], lib_sha: str) -> str:
    """The key a successful run is recorded under: notebook hash, parameters, library hash."""
    blob = json.dumps({"notebook": notebook_sha, "parameters": parameters, "lib": lib_sha},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def plan(profile: Profile, notebooks_dir: Path, reports_dir: Path, lib_dir: Path | None = None,
         overrides: dict[str, Any] | None = None, report_dir: Path | None = None) -> list[Job]:
    """Validate every notebook of ``profile`` and return its jobs; ConfigError lists all problems.

    ``overrides`` (a sweep's seed and grid point) beat the profile's values in every notebook that declares them;
    each must be declared by at least one. ``report_dir`` replaces ``reports_dir/<profile>`` (a sweep's run)."""
    notebooks_dir = Path(notebooks_dir)
    report_dir = Path(report_dir) if report_dir is not None else Path(reports_dir) / profile.name
    overrides = dict(overrides or {})
    available = sorted(p.stem for p in notebooks_dir.glob("*.ipynb"))
    problems: list[str] = []
    declared: dict[str, dict[str, Any]] = {}
    for name, params in profile.notebooks:
        path = notebooks_dir / f"{name}.ipynb"
        if not path.is_file():
            problems.append(f"unknown notebook {name!r}: no {path}; notebooks in {notebooks_dir}: {available}")
            continue
        try:
            declared[name] = declared_parameters(path)
        except ConfigError as err:
            problems.append(str(err))
            continue
        accepted = sorted(declared[name])
        if OUTPUT_DIR_PARAM not in declared[name]:
            problems.append(f"{path}: the parameters cell must declare '{OUTPUT_DIR_PARAM}'; it declares {accepted}")
        for p in sorted(set(params) - set(declared[name])):
            problems.append(f"{profile.path}: notebook {name!r} does not declare parameter {p!r}; "
                            f"it declares {accepted}")
    if declared and len(declared) == len(profile.notebooks):  # (vacuous with no notebooks yet)
        for p in sorted(profile.shared):
            if not any(p in d for d in declared.values()):
                problems.append(f"{profile.path}: shared parameter {p!r} is declared by none of the "
                                f"profile's notebooks {[n for n, _ in profile.notebooks]}")
    if OUTPUT_DIR_PARAM in overrides:
        problems.append(f"'{OUTPUT_DIR_PARAM}' is set by the runner and cannot be swept")
    for p in sorted(overrides):
        if declared and len(declared) == len(profile.notebooks) and not any(p in d for d in declared.values()):
            problems.append(f"swept parameter {p!r} is declared by none of the profile's notebooks "
                            f"{[n for n, _ in profile.notebooks]}")
    if problems:
        raise ConfigError("profile " + repr(profile.name) + " is not runnable:\n  - " + "\n  - ".join(problems))
    lib_sha = source_hash(lib_dir)
    jobs = []
    for name, params in profile.notebooks:
        path = notebooks_dir / f"{name}.ipynb"
        merged = ({k: v for k, v in profile.shared.items() if k in declared[name]} | params
                  | {k: v for k, v in overrides.items() if k in declared[name]})
        merged[OUTPUT_DIR_PARAM] = os.path.relpath(report_dir / name, path.parent)
        jobs.append(Job(name, path, merged, report_dir, inputs_key(file_hash(path), merged, lib_sha)))
    return jobs


def select(jobs: list[Job], only: Sequence[str] = ()) -> list[Job]:
    """The jobs named in ``only`` (all when empty), in profile order; unknown names are an error."""
    names = [j.name for j in jobs]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise ConfigError(f"--only {unknown}: not in this profile; its notebooks are {names}")
    return [j for j in jobs if not only or j.name in only]


def read_state(job: Job) -> dict[str, Any] | None:
    """The job's last recorded run, or None (never ran, interrupted, or unreadable)."""
    try:
        return json.loads(job.state.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def is_current(job: Job) -> bool:
    """True when the last run succeeded with the same inputs and its executed notebook exists."""
    state = read_state(job)
    return bool(state) and state.get("status") == "ok" and state.get("key") == job.key and job.executed.is_file()
