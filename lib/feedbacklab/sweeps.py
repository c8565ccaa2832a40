"""Seed sweeps and parameter sweeps over a profile: every notebook once per seed and grid point, then each
notebook's key metrics across seeds as mean and 95 % confidence interval — the figures a paper reports with
error bars.

``python -m feedbacklab sweep --profile cpu --seeds 0 1 2 [--grid ft_epochs=8,16]`` runs, for every grid point
and seed, the profile into ``reports/<profile>/sweep/<run>/`` (``<run>`` e.g. ``seed1`` or
``ft_epochs=8-seed1``) through ``runner.run_profile``, so each run skips or resumes exactly as a plain run does;
then ``reports/<profile>/sweep/index.html`` and ``sweep.json`` hold the aggregate table (one row per notebook,
grid point and metric) with links to every run's own index. Everything (the grid's parameters included) is
validated before the first run starts. ``--executor ray`` runs the runs as Ray tasks, locally or on a cluster.
"""
from __future__ import annotations

import html
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import runner
from .notebook import METRICS_FILE, NOTEBOOKS_DIR, REPORTS_DIR, MetricsError, read_metrics
from .report_html import atomic_write_text

SWEEP_DIR = "sweep"


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``["lr=1e-4,3e-4", "use_lora=true,false"]`` → ``{"lr": [0.0001, 0.0003], ...}`` (values read as YAML)."""
    import yaml

    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise runner.ConfigError(f"grid entry {item!r}: expected NAME=V1,V2,… (e.g. ft_epochs=8,16)")
        if name.strip() in grid:
            raise runner.ConfigError(f"grid parameter {name.strip()!r} is given twice")
        grid[name.strip()] = [yaml.safe_load(v) for v in values.split(",")]
    return grid


@dataclass(frozen=True)
class Run:
    """One run of a sweep: a seed and a grid point."""

    seed: int
    point: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return "-".join([f"{k}={_slug(v)}" for k, v in self.point] + [f"seed{self.seed}"])

    @property
    def point_name(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.point) or "(profile values)"

    @property
    def overrides(self) -> dict[str, Any]:
        return {"seed": self.seed, **dict(self.point)}


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return "".join(c if c.isalnum() or c in "._" else "_" for c in text)[:40]


def plan_runs(seeds: Sequence[int], grid: dict[str, list[Any]] | None = None) -> list[Run]:
    """Every (grid point, seed), grid points in the order given, seeds inner."""
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) for s in seeds):
        raise runner.ConfigError(f"seeds must be distinct integers, at least one; got {list(seeds)}")
    grid = grid or {}
    if "seed" in grid:
        raise runner.ConfigError("'seed' is swept by --seeds, not by the grid")
    points = [tuple(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [()]
    return [Run(s, p) for p in points for s in seeds]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, standard deviation and the t-interval half-width of ``values`` (nan for fewer than two)."""
    from scipy import stats

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    mean = sum(xs) / n if n else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "std": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


@dataclass
class SweepResult:
    """What a sweep did: the runs, each run's batch result, the aggregate rows and where they were written."""

    index: Path
    runs: list[Run]
    results: dict[str, runner.BatchResult] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [f"{run}/{nb}" for run, r in self.results.items() for nb in r.failed]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def aggregate(sweep_dir: Path, runs: Sequence[Run], jobs: Sequence[runner.Job]) -> list[dict[str, Any]]:
    """Per notebook, grid point and metric (the notebook's ``key_metrics``, else every number): mean and 95 % CI
    over the seeds whose run of that notebook wrote ``metrics.json``."""
    rows = []
    for job in jobs:
        by_point: dict[str, list[dict[str, Any]]] = {}
        keys: list[str] | None = None
        for run in runs:
            path = sweep_dir / run.name / job.name / METRICS_FILE
            try:
                payload = read_metrics(path)
            except (OSError, MetricsError):
                continue
            by_point.setdefault(run.point_name, []).append(payload["metrics"])
            keys = keys or payload.get("key_metrics") or [k for k, v in payload["metrics"].items()
                                                         if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for point, metrics in by_point.items():
            for key in keys or []:
                rows.append({"notebook": job.name, "point": point, "metric": key,
                             **mean_ci([m.get(key) for m in metrics if isinstance(m.get(key), (int, float))])})
    return rows


def write_sweep_index(path: Path, profile: str, runs: Sequence[Run], rows: Sequence[dict[str, Any]],
                      results: dict[str, runner.BatchResult]) -> Path:
    """``sweep/index.html``: the aggregate table and a link to each run's index (with its failures)."""
    fmt = (lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}")  # noqa: E731
    body = "".join(
        f"<tr><td>{html.escape(r['notebook'])}</td><td>{html.escape(r['point'])}</td><td>{html.escape(r['metric'])}</td>"
        f"<td>{r['n']}</td><td>{fmt(r['mean'])}</td><td>[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]</td></tr>"
        for r in rows)
    links = "".join(
        f"<li><a href='{html.escape(run.name)}/index.html'>{html.escape(run.name)}</a>"
        + (f" — failed: {html.escape(', '.join(results[run.name].failed))}" if run.name in results
           and results[run.name].failed else "") + "</li>" for run in runs)
    page = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(profile)} sweep</title>"
            f"<h1>Profile <code>{html.escape(profile)}</code>: {len(runs)} runs</h1>"
            "<h2>Across seeds: mean and 95 % confidence interval (t)</h2><table border='1' cellpadding='4'>"
            "<tr><th>notebook</th><th>grid point</th><th>metric</th><th>seeds</th><th>mean</th><th>95 % CI</th></tr>"
            f"{body}</table><h2>Runs</h2><ul>{links}</ul>")
    atomic_write_text(path, page)
    atomic_write_text(path.with_name("sweep.json"), json.dumps(rows, indent=1, default=str))
    return path


def _run_one(profile: str, only: Sequence[str], force: bool, kwargs: dict[str, Any]) -> runner.BatchResult:
    """One run of a sweep: ``runner.run_profile`` (also the body of a Ray task)."""
    return runner.run_profile(profile, only, force, **kwargs)


def resources(prof: runner.Profile) -> dict[str, float]:
    """What one run asks a Ray cluster for: the profile's ``requires.cpus`` / ``gpus``, else 1 CPU, and 1 GPU
    when the profile's device is CUDA."""
    cuda = str(prof.shared.get("device", "")).startswith("cuda") or any(
        str(p.get("device", "")).startswith("cuda") for _, p in prof.notebooks)
    return {"num_cpus": float(prof.requires.get("cpus", 1)), "num_gpus": float(prof.requires.get("gpus", 1 if cuda else 0))}


def connect_ray(address: str | None, num_cpus: int | None = None) -> Any:
    """``ray.init`` locally (``address`` None) or on a cluster; a clear error when Ray is missing or nobody answers."""
    try:
        import ray
    except ImportError as exc:
        raise runner.ConfigError("the ray executor needs the package ray (pip install 'ray==2.60.0')") from exc
    if ray.is_initialized():
        return ray
    if address not in (None, "auto", "local"):
        _probe(address)
    try:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)
    except (ConnectionError, RuntimeError, ValueError, SystemExit) as exc:  # ray exits when the GCS never answers
        raise runner.ConfigError(f"no Ray cluster answers at {address!r} ({type(exc).__name__}: {str(exc)[:200]}); "
                                 "give the head node's address (ray://host:10001 or host:6379), or none for a local "
                                 "instance") from exc
    return ray


def _probe(address: str, timeout_s: float = 3.0) -> None:
    """A TCP connect to ``[ray://]host:port`` first: Ray itself waits about a minute before it gives up."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise runner.ConfigError(f"Ray address {address!r}: expected host:port or ray://host:port")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise runner.ConfigError(f"no Ray cluster answers at {address!r} ({type(exc).__name__}: {exc}); give the "
                                 "head node's address (ray://host:10001 or host:6379), or none for a local "
                                 "instance") from exc


def run_sweep(profile: str, seeds: Sequence[int], grid: dict[str, list[Any]] | None = None,
              only: Sequence[str] = (), force: bool = False, *, notebooks_dir: Path = NOTEBOOKS_DIR,
              reports_dir: Path = REPORTS_DIR, check: bool = True, executor_kind: str = "local",
              ray_address: str | None = None, ray_cpus: int | None = None, **run_kwargs: Any) -> SweepResult:
    """Run ``profile`` once per seed and grid point, then aggregate (see the module docstring).

    ``executor_kind="ray"`` runs each run as a Ray task (``ray.init()`` locally with ``ray_cpus``, or on the cluster
    at ``ray_address``), asking for :func:`resources`; each task writes its own run folder, so skip and resume work
    as in the default sequential ``"local"`` executor."""
    if executor_kind not in ("local", "ray"):
        raise runner.ConfigError(f"unknown executor {executor_kind!r}; accepted: 'local', 'ray'")
    runs = plan_runs(seeds, grid)
    profiles_dir = run_kwargs.pop("profiles_dir", None) or Path(notebooks_dir) / "profiles"
    prof = runner.load_profile(profile, Path(profiles_dir))
    sweep_dir = Path(reports_dir) / prof.name / SWEEP_DIR
    jobs = {}
    for run in runs:  # every run planned (and so validated) before the first one starts
        jobs[run.name] = runner.select(runner.plan(prof, notebooks_dir, reports_dir, run_kwargs.get("lib_dir"),
                                                   run.overrides, sweep_dir / run.name), only)
    first = jobs[runs[0].name]
    if check:
        from . import preflight

        problems = preflight.check_jobs(first, {j.name: runner.declared_parameters(j.notebook) for j in first},
                                        prof.requires, sweep_dir)
        if problems:
            raise runner.ConfigError(preflight.format_problems(prof.name, problems))
    result = SweepResult(sweep_dir / "index.html", runs)
    kwargs = {run.name: dict(run_kwargs, notebooks_dir=notebooks_dir, profiles_dir=profiles_dir,
                             reports_dir=reports_dir, check=False, overrides=run.overrides,
                             report_dir=sweep_dir / run.name) for run in runs}

    def finished(run: Run, batch: runner.BatchResult) -> None:
        result.results[run.name] = batch
        result.rows = aggregate(sweep_dir, runs, first)
        write_sweep_index(result.index, prof.name, runs, result.rows, result.results)

    if executor_kind == "local":
        for k, run in enumerate(runs, 1):
            print(f"== run {k}/{len(runs)}: {run.name}", file=run_kwargs.get("out"), flush=True)
            finished(run, _run_one(profile, only, force, kwargs[run.name]))
        return result
    if "executor" in run_kwargs or "out" in run_kwargs:
        raise runner.ConfigError("the ray executor runs notebooks with papermill in its workers: "
                                 "executor= and out= are for the local executor")
    ray = connect_ray(ray_address, ray_cpus)
    task = ray.remote(_run_one).options(**resources(prof))
    pending = {task.remote(profile, only, force, kwargs[run.name]): run for run in runs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        run = pending.pop(done[0])
        finished(run, ray.get(done[0]))
    return result
