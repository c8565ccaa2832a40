"""Profiles: ``notebooks/profiles/<name>.yaml`` parsed and checked, and the parameters a notebook declares.

A profile holds shared ``parameters``, an ordered list of ``notebooks`` (a bare name or ``{name, parameters}``)
and what it ``requires`` (the pre-flight check's disk, a Ray run's CPUs and GPUs). A notebook declares its
parameters in its one cell tagged ``parameters``.
"""
from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

OUTPUT_DIR_PARAM = "output_dir"
PROFILE_KEYS = ("description", "parameters", "notebooks", "requires")
REQUIRES_KEYS = ("disk_gb", "gpu_memory_gb", "cpus", "gpus")  # pre-flight: disk_gb; Ray sweeps: cpus, gpus per run
ENTRY_KEYS = ("name", "parameters")


class ConfigError(ValueError):
    """A profile, notebook or parameter problem found before anything runs."""


@dataclass(frozen=True)
class Profile:
    """A parsed profile file."""

    name: str
    path: Path
    description: str
    shared: dict[str, Any]
    notebooks: tuple[tuple[str, dict[str, Any]], ...]  # (name, per-notebook parameters), in order
    requires: dict[str, Any] = field(default_factory=dict)  # REQUIRES_KEYS, for the pre-flight check


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
