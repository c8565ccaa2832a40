"""Execution: run a profile's jobs in order, skip the current ones, record each run's state, render its HTML and
keep ``reports/<profile>/index.html`` up to date before and after every notebook.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..notebook import METRICS_FILE, NOTEBOOKS_DIR, PROFILE_ENV, PROFILES_DIR_ENV, REPORTS_DIR, MetricsError, read_metrics
from ..report_html import Row, atomic_write_text, notebook_to_html, write_index
from .executors import KERNEL_NAME, Executor, ensure_kernel, papermill_executor
from .memory import PeakMemory
from .planning import Job, is_current, plan, read_state, select
from .profiles import ConfigError, declared_parameters, load_profile


@dataclass
class BatchResult:
    """What a batch did: every row of the index, and which notebooks ran or failed."""

    index: Path
    rows: list[Row]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables (inherited by the kernel process), restoring them afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _error_text(err: BaseException) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        return f"{err.ename}: {err.evalue}\n(in cell [{err.exec_count}])"
    return f"{type(err).__name__}: {err}"


def _row(job: Job, status: str, duration_s: float | None = None, error: str | None = None,
         note: str | None = None, peak_memory_mb: float | None = None) -> Row:
    """An index row with the job's outputs as found on disk (links, metrics, claims)."""
    row = Row(job.name, status, duration_s, error=error, note=note, peak_memory_mb=peak_memory_mb)
    if job.html.is_file():
        row.html = job.html.relative_to(job.report_dir).as_posix()
    if job.executed.is_file():
        row.ipynb = job.executed.relative_to(job.report_dir).as_posix()
    metrics_path = job.output_dir / METRICS_FILE
    if metrics_path.is_file():
        try:
            payload = read_metrics(metrics_path)
            row.metrics, row.claims = payload["metrics"], payload["claims"]
            row.key_metrics = payload.get("key_metrics")
        except MetricsError as err:
            row.note = f"unreadable {METRICS_FILE}: {err}"
    elif status == "ok":
        row.note = f"the notebook wrote no {METRICS_FILE}"
    return row


def _row_from_state(job: Job) -> Row:
    """A row for a notebook not run in this batch, from its state file."""
    state = read_state(job)
    if not state:
        return _row(job, "not run")
    if state.get("status") == "ok":
        status = "cached" if is_current(job) else "stale"
        note = None if status == "cached" else "inputs changed since this run"
        return _row(job, status, state.get("duration_s"), note=note, peak_memory_mb=state.get("peak_memory_mb"))
    return _row(job, "failed", state.get("duration_s"), error=state.get("error"),
                peak_memory_mb=state.get("peak_memory_mb"))


def _clear_outputs(job: Job) -> None:
    job.state.unlink(missing_ok=True)
    for path in (job.executed, job.html):
        path.unlink(missing_ok=True)
    shutil.rmtree(job.output_dir, ignore_errors=True)
    job.output_dir.mkdir(parents=True, exist_ok=True)


def run_profile(
    profile: str,
    only: Sequence[str] = (),
    force: bool = False,
    *,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    profiles_dir: Path | None = None,
    reports_dir: Path = REPORTS_DIR,
    lib_dir: Path | None = None,
    kernel_name: str = KERNEL_NAME,
    executor: Executor | None = None,
    out: TextIO | None = None,
    check: bool = True,
    overrides: dict[str, Any] | None = None,
    report_dir: Path | None = None,
) -> BatchResult:
    """Run a profile's notebooks (or ``only`` those), skipping unchanged successful ones unless ``force``.

    With ``check`` the pre-flight check (``feedbacklab.preflight``) runs first: every model, path, GPU and disk
    need of the selected notebooks must resolve, else ConfigError lists them all and nothing runs. ``overrides``
    and ``report_dir``: one run of a sweep (``feedbacklab.sweeps``), see :func:`plan`."""
    out = out or sys.stdout
    profiles_dir = Path(profiles_dir) if profiles_dir is not None else Path(notebooks_dir) / "profiles"
    prof = load_profile(profile, profiles_dir)
    jobs = plan(prof, notebooks_dir, reports_dir, lib_dir, overrides, report_dir)
    selected = select(jobs, only)
    if check:
        from .. import preflight

        problems = preflight.check_jobs(selected, {j.name: declared_parameters(j.notebook) for j in selected},
                                        prof.requires, Path(reports_dir) / prof.name)
        if problems:
            raise ConfigError(preflight.format_problems(prof.name, problems))
    if executor is None:
        ensure_kernel(kernel_name)
        executor = papermill_executor(kernel_name)
    report_dir = Path(report_dir) if report_dir is not None else Path(reports_dir) / prof.name
    report_dir.mkdir(parents=True, exist_ok=True)
    result = BatchResult(report_dir / "index.html", [])
    todo = {j.name for j in selected if force or not is_current(j)}
    rows = {j.name: (Row(j.name, "pending") if j.name in todo
                     else _row_from_state(j)) for j in jobs}

    def publish() -> None:
        result.rows = [rows[j.name] for j in jobs]
        write_index(result.index, prof.name, result.rows, prof.description)

    publish()
    env = {PROFILE_ENV: prof.name, PROFILES_DIR_ENV: str(Path(profiles_dir).resolve())}
    for i, job in enumerate(selected, 1):
        print(f"[{i}/{len(selected)}] {job.name} ... ", end="", file=out, flush=True)
        if job.name not in todo:
            result.skipped.append(job.name)
            if not job.html.is_file():
                _render(job)
                rows[job.name] = _row_from_state(job)
                publish()
            print("skipped (unchanged since last ok run)", file=out, flush=True)
            continue
        _clear_outputs(job)
        rows[job.name] = Row(job.name, "running")
        publish()
        start = time.perf_counter()
        error = None
        peak = PeakMemory()
        try:
            with _environ(**env), peak:
                executor(job)
        except KeyboardInterrupt:
            rows[job.name] = _row(job, "interrupted", time.perf_counter() - start,
                                  note="interrupted: rerun the same command to resume here")
            publish()
            print("interrupted", file=out, flush=True)
            raise
        except Exception as err:  # noqa: BLE001 - any failure is recorded and the batch goes on
            error = _error_text(err)
        duration = time.perf_counter() - start
        note = _render(job)
        status = "failed" if error else "ok"
        atomic_write_text(job.state, json.dumps({
            "status": status, "key": job.key, "duration_s": round(duration, 3), "error": error,
            "peak_memory_mb": round(peak.mb, 1),
            "parameters": job.parameters, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, indent=2, default=str))
        rows[job.name] = _row(job, status, duration, error=error, note=note, peak_memory_mb=round(peak.mb, 1))
        (result.failed if error else result.ran).append(job.name)
        publish()
        first_line = f": {error.splitlines()[0]}" if error else ""
        print(f"{status} {duration:.1f}s{first_line}", file=out, flush=True)
    return result


def _render(job: Job) -> str | None:
    """Render the executed notebook to HTML; return a note when that is impossible."""
    if not job.executed.is_file():
        return "no executed notebook was written"
    try:
        notebook_to_html(job.executed, job.html)
    except Exception as err:  # noqa: BLE001 - a broken render must not stop the batch
        return f"HTML rendering failed: {type(err).__name__}: {err}"
    return None
