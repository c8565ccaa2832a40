"""Command line: ``python -m feedbacklab run --profile cpu [--only NAME ...] [--force]``.

Also ``sweep --profile NAME --seeds 0 1 2 [--grid P=V1,V2]`` (seeds and grids, mean and 95 % CI), ``check --profile NAME`` (the pre-flight check: models, dataset paths, GPU, disk), ``list-profiles`` and ``nbval`` (the notebooks under nbval with the smoke
profile, as ``make test`` runs them).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import runner
from .notebook import NOTEBOOKS_DIR, PROFILE_ENV, PROFILES_DIR_ENV, REPORTS_DIR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m feedbacklab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a profile's notebooks into reports/<profile>/")
    run.add_argument("--profile", default="cpu", help="a notebooks/profiles/<name>.yaml (default: cpu)")
    run.add_argument("--only", nargs="+", default=[], metavar="NAME", help="run only these notebooks")
    run.add_argument("--force", action="store_true", help="rerun notebooks whose inputs are unchanged")
    run.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    run.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help=argparse.SUPPRESS)

    lst = sub.add_parser("list-profiles", help="list the profiles and their notebooks")
    lst.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)

    run.add_argument("--no-check", action="store_true", help="skip the pre-flight check of models, paths, GPU, disk")
    swp = sub.add_parser("sweep", help="run a profile once per seed (and grid point), aggregate mean and 95 % CI")
    swp.add_argument("--profile", default="cpu", help="a notebooks/profiles/<name>.yaml (default: cpu)")
    swp.add_argument("--seeds", nargs="+", type=int, required=True, metavar="SEED", help="e.g. --seeds 0 1 2")
    swp.add_argument("--grid", nargs="*", default=[], metavar="NAME=V1,V2", help="parameter values to sweep too")
    swp.add_argument("--only", nargs="+", default=[], metavar="NAME", help="run only these notebooks")
    swp.add_argument("--force", action="store_true", help="rerun runs whose inputs are unchanged")
    swp.add_argument("--no-check", action="store_true", help="skip the pre-flight check")
    swp.add_argument("--executor", choices=("local", "ray"), default="local", help="sequential (default) or Ray tasks")
    swp.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: a local instance)")
    swp.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    swp.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    swp.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help=argparse.SUPPRESS)
    chk = sub.add_parser("check", help="pre-flight: do a profile's model ids, dataset paths, GPU and disk resolve?")
    chk.add_argument("--profile", default="cpu", help="a notebooks/profiles/<name>.yaml (default: cpu)")
    chk.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    chk.add_argument("--reports-dir", type=Path, default=REPORTS_DIR, help=argparse.SUPPRESS)
    nbv = sub.add_parser("nbval", help="check notebooks with pytest --nbval-lax (profile smoke); "
                                       "other arguments go to pytest")
    nbv.add_argument("--notebooks-dir", type=Path, default=NOTEBOOKS_DIR, help=argparse.SUPPRESS)
    return parser


def _raise_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(f"signal {signum}")


def _run(args: argparse.Namespace) -> int:
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # a plain `kill` cleans up like Ctrl-C
    try:
        result = runner.run_profile(
            args.profile, args.only, args.force,
            notebooks_dir=args.notebooks_dir, reports_dir=args.reports_dir, check=not args.no_check,
        )
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume (finished notebooks are skipped)",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.failed:
        print(f"failed: {', '.join(result.failed)}", file=sys.stderr)
    print(result.index)
    return result.exit_code


def _list_profiles(args: argparse.Namespace) -> int:
    profiles_dir = args.notebooks_dir / "profiles"
    for name in runner.list_profiles(profiles_dir):
        prof = runner.load_profile(name, profiles_dir)
        notebooks = ", ".join(n for n, _ in prof.notebooks) or "(no notebooks yet)"
        print(f"{name:8s} {prof.description}\n         notebooks: {notebooks}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from . import sweeps

    result = sweeps.run_sweep(args.profile, args.seeds, sweeps.parse_grid(args.grid), args.only, args.force,
                              notebooks_dir=args.notebooks_dir, reports_dir=args.reports_dir, check=not args.no_check,
                              executor_kind=args.executor, ray_address=args.ray_address, ray_cpus=args.ray_cpus)
    if result.failed:
        print(f"failed: {', '.join(result.failed)}", file=sys.stderr)
    print(result.index)
    return result.exit_code


def _check(args: argparse.Namespace) -> int:
    from . import preflight

    problems = preflight.check_profile(args.profile, args.notebooks_dir, args.reports_dir)
    print(preflight.format_problems(args.profile, problems), file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


def _nbval(args: argparse.Namespace) -> int:
    notebooks = [p for p in args.notebooks_dir.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
    if not notebooks:
        print(f"no notebooks under {args.notebooks_dir}; nothing to check")
        return 0
    runner.ensure_kernel()
    env = dict(os.environ)
    env.setdefault(PROFILE_ENV, "smoke")
    env.setdefault(PROFILES_DIR_ENV, str((args.notebooks_dir / "profiles").resolve()))
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-kernel-name", runner.KERNEL_NAME,
           str(args.notebooks_dir), *args.pytest_args]
    return subprocess.call(cmd, env=env)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m feedbacklab`` and the ``feedbacklab`` script."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "nbval":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.pytest_args = extra
    command = {"run": _run, "list-profiles": _list_profiles, "check": _check, "sweep": _sweep, "nbval": _nbval}[args.command]
    try:
        return command(args)
    except (runner.ConfigError, runner.KernelError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
