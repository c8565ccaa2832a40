"""Profiles → papermill runs → HTML → ``reports/<profile>/index.html``.

A profile is ``notebooks/profiles/<name>.yaml`` (schema in the header of each
profile file): shared ``parameters`` plus an ordered list of ``notebooks``, each
a bare name or ``{name, parameters}``. Everything is validated before anything
runs: the profile and notebooks exist, each notebook has exactly one cell tagged
``parameters`` declaring ``output_dir``, and every profile parameter is declared
by the notebook(s) it is given to (read with papermill's ``inspect_notebook``).

Each notebook runs with the ``feedbacklab`` kernel in its own directory, with
``FEEDBACKLAB_PROFILE=<profile>`` in the kernel's environment, into
``reports/<profile>/<name>.ipynb`` (+ ``.html``, + ``<name>/metrics.json``).
A per-notebook state file ``reports/<profile>/.state/<name>.json`` is removed
when the notebook starts and written atomically when it ends; a rerun skips a
notebook whose state says ``ok`` for the same inputs (notebook file hash,
parameters, hash of the ``feedbacklab`` sources), so an interrupted batch picks
up where it stopped. ``index.html`` is rewritten before and after every notebook.
"""
from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import nbformat
import yaml

from .notebook import (
    METRICS_FILE,
    NOTEBOOKS_DIR,
    PROFILE_ENV,
    PROFILES_DIR_ENV,
    REPORTS_DIR,
    MetricsError,
    read_metrics,
)
from .report_html import Row, atomic_write_text, notebook_to_html, write_index

LIB_DIR = Path(__file__).resolve().parent
KERNEL_NAME = "feedbacklab"
KERNEL_DISPLAY_NAME = "Python (feedbacklab)"
OUTPUT_DIR_PARAM = "output_dir"
PROFILE_KEYS = ("description", "parameters", "notebooks", "requires")
REQUIRES_KEYS = ("disk_gb", "gpu_memory_gb", "cpus", "gpus")  # pre-flight: disk_gb; Ray sweeps: cpus, gpus per run
ENTRY_KEYS = ("name", "parameters")


class ConfigError(ValueError):
    """A profile, notebook or parameter problem found before anything runs."""


class KernelError(RuntimeError):
    """The ``feedbacklab`` kernelspec cannot be made to point at this interpreter."""


@dataclass(frozen=True)
class Profile:
    """A parsed profile file."""

    name: str
    path: Path
    description: str
    shared: dict[str, Any]
    notebooks: tuple[tuple[str, dict[str, Any]], ...]  # (name, per-notebook parameters), in order
    requires: dict[str, Any] = field(default_factory=dict)  # REQUIRES_KEYS, for the pre-flight check


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


# ---------------------------------------------------------------- profiles


def list_profiles(profiles_dir: Path) -> list[str]:
    """Names of the profiles in ``profiles_dir`` (``<name>.yaml``), sorted."""
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def load_profile(name: str, profiles_dir: Path) -> Profile:
    """Read and check the structure of ``<profiles_dir>/<name>.yaml`` (yaml.safe_load)."""
    known = list_profiles(profiles_dir)
    path = Path(profiles_dir) / f"{name}.yaml"
    if name not in known:
        raise ConfigError(f"unknown profile {name!r}; known profiles in {profiles_dir}: {known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    data = {} if data is None else data
    if not isinstance(data, dict) or set(data) - set(PROFILE_KEYS):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{path}: expected a mapping with keys among {list(PROFILE_KEYS)}, got {found}")
    shared = _param_dict(data.get("parameters"), f"{path}: parameters")
    entries = data.get("notebooks") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'notebooks' must be a list, got {type(entries).__name__}")
    notebooks = tuple(_entry(e, f"{path}: notebooks[{i}]") for i, e in enumerate(entries))
    names = [n for n, _ in notebooks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: notebooks listed more than once: {duplicates}")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise ConfigError(f"{path}: 'description' must be a string")
    requires = data.get("requires") or {}
    if not isinstance(requires, dict) or set(requires) - set(REQUIRES_KEYS):
        raise ConfigError(f"{path}: 'requires' must be a mapping with keys among {list(REQUIRES_KEYS)}, got {requires!r}")
    return Profile(name, path, description, shared, notebooks, requires)


def _entry(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        name, params = entry, {}
    elif isinstance(entry, dict) and "name" in entry and not set(entry) - set(ENTRY_KEYS):
        name, params = entry["name"], _param_dict(entry.get("parameters"), f"{where}.parameters")
    else:
        raise ConfigError(
            f"{where}: expected a notebook name or a mapping with keys {list(ENTRY_KEYS)}, got {entry!r}"
        )
    if not isinstance(name, str) or not name or Path(name).name != name or name.endswith(".ipynb"):
        raise ConfigError(f"{where}: notebook name must be a file stem like '10_lee2023', got {name!r}")
    return name, params


def _param_dict(params: Any, where: str) -> dict[str, Any]:
    params = {} if params is None else params
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ConfigError(f"{where}: expected a mapping of parameter name -> value, got {params!r}")
    if OUTPUT_DIR_PARAM in params:
        raise ConfigError(f"{where}: '{OUTPUT_DIR_PARAM}' is set by the runner, remove it from the profile")
    return dict(params)


# --------------------------------------------------------------- notebooks


_DECLARED: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}


def declared_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares in its single ``parameters`` cell (cached by path, mtime and size).

    papermill's ``inspect_notebook`` skips lines with more than one ``=``, such as
    ``n = by_profile(2000, smoke=50)``; names assigned at the top level of the cell
    (found with ``ast``) complete its answer.
    """
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    if key not in _DECLARED:
        _DECLARED[key] = _read_declared_parameters(Path(path))
    return {k: dict(v) for k, v in _DECLARED[key].items()}


def _read_declared_parameters(path: Path) -> dict[str, dict[str, Any]]:
    import papermill as pm

    nb = nbformat.read(str(path), as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ConfigError(f"{path}: needs exactly one cell tagged 'parameters', found {len(tagged)} (cells {tagged})")
    source = nb.cells[tagged[0]].source
    try:
        tree = ast.parse(source)
        with _quiet_papermill():
            params = pm.inspect_notebook(str(path))
    except SyntaxError as err:
        raise ConfigError(f"{path}: the parameters cell is not valid Python: {err}") from err
    except ValueError as err:  # e.g. no kernelspec metadata to pick a translator
        raise ConfigError(f"{path}: papermill cannot read its parameters: {err}") from err
    lines = source.splitlines()
    for node in tree.body:
        for name in _assigned_names(node):
            trailing = lines[node.end_lineno - 1][node.end_col_offset:].strip()
            params.setdefault(name, {
                "name": name, "inferred_type_name": "None",
                "default": ast.get_source_segment(source, node.value),
                "help": trailing[1:].strip() if trailing.startswith("#") else "",
            })
    return params


def _assigned_names(node: ast.stmt) -> list[str]:
    """Names bound by a top-level ``x = ...`` / ``x: T = ...`` / ``a, b = ...`` statement."""
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets = [node.target]
    else:
        return []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


class _DropPapermillNoise(logging.Filter):
    """Drops papermill's warnings about what ``declared_parameters`` already handles."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Unable to parse line", "Passed unknown parameter"))


@contextmanager
def _quiet_papermill() -> Iterator[None]:
    loggers = [logging.getLogger("papermill"), logging.getLogger("papermill.translators")]
    noise = _DropPapermillNoise()
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


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


# ------------------------------------------------------------------ kernel


def ensure_kernel(name: str = KERNEL_NAME, prefix: str = sys.prefix) -> Path:
    """Make sure kernelspec ``name`` runs ``sys.executable``; register it under ``prefix`` if not."""
    from ipykernel.kernelspec import install

    if _kernel_python(name) == os.path.abspath(sys.executable):
        return _kernel_dir(name)
    install(kernel_name=name, prefix=prefix, display_name=KERNEL_DISPLAY_NAME)
    found = _kernel_python(name)
    if found != os.path.abspath(sys.executable):
        raise KernelError(
            f"kernel {name!r} resolves to {_kernel_dir(name)} running {found}, not {sys.executable}, "
            f"even after registering it under {prefix}; remove the other one with "
            f"`jupyter kernelspec remove {name}` and rerun"
        )
    return _kernel_dir(name)


def _kernel_python(name: str) -> str | None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec(name).argv
    except NoSuchKernel:
        return None
    return os.path.abspath(argv[0]) if argv else None


def _kernel_dir(name: str) -> Path:
    from jupyter_client.kernelspec import KernelSpecManager

    return Path(KernelSpecManager().get_kernel_spec(name).resource_dir)


# --------------------------------------------------------------- execution

Executor = Callable[[Job], None]


def papermill_executor(kernel_name: str = KERNEL_NAME) -> Executor:
    """Run a job with papermill in the notebook's directory; raises PapermillExecutionError on error."""
    import papermill as pm
    import zmq
    from traitlets.config import Config

    # CurveZMQ-encrypt the kernel's sockets when possible (and silence ipykernel's plain-TCP warning).
    config = Config({"KernelManager": {"transport_encryption": "auto"}}) if zmq.has("curve") else Config()

    def execute(job: Job) -> None:
        with _quiet_papermill():
            pm.execute_notebook(
                str(job.notebook), str(job.executed), parameters=job.parameters,
                kernel_name=kernel_name, language="python", cwd=str(job.notebook.parent),
                progress_bar=False, log_output=False, config=config,
            )

    return execute


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


def _row(job: Job, status: str, duration_s: float | None = None,
         error: str | None = None, note: str | None = None) -> Row:
    """An index row with the job's outputs as found on disk (links, metrics, claims)."""
    row = Row(job.name, status, duration_s, error=error, note=note)
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
        return _row(job, status, state.get("duration_s"), note=note)
    return _row(job, "failed", state.get("duration_s"), error=state.get("error"))


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
        from . import preflight

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
        try:
            with _environ(**env):
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
            "parameters": job.parameters, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }, indent=2, default=str))
        rows[job.name] = _row(job, status, duration, error=error, note=note)
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
