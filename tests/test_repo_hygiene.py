"""Repository hygiene: dependency lists agree, notebooks are committed clean, profiles are runnable."""
import re
import subprocess
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from feedbacklab import runner
from feedbacklab.notebook import NOTEBOOKS_DIR, PROFILES_DIR, REPO_ROOT

STANDARD_PROFILES = ("smoke", "cpu", "gpu", "paper")
CONDA_ONLY = {"python", "pip"}  # conda deps that are the environment, not packages
CONDA_TO_PYPI = {"pytorch": "torch", "pillow-simd": "pillow", "open-clip-torch": "open_clip_torch"}


def pyproject_requirements() -> dict[str, str]:
    """Canonical name -> specifier for [project] dependencies plus the dev extra."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    return {canonicalize_name(r.name): str(r.specifier) for r in reqs}


def environment_requirements() -> tuple[dict[str, str], set[str]]:
    """(pip section: canonical name -> specifier, conda section: canonical PyPI names)."""
    deps = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())["dependencies"]
    pip = [line for d in deps if isinstance(d, dict) for line in d.get("pip", [])]
    conda = {re.split(r"[=<>!~ ]", d, maxsplit=1)[0] for d in deps if isinstance(d, str)} - CONDA_ONLY
    pip_reqs = [Requirement(line) for line in pip if not line.startswith("-")]  # skip -e ., --index-url
    return ({canonicalize_name(r.name): str(r.specifier) for r in pip_reqs},
            {canonicalize_name(CONDA_TO_PYPI.get(c, c)) for c in conda})


def test_environment_yml_mirrors_pyproject():
    expected = pyproject_requirements()
    pip, conda = environment_requirements()
    listed = set(pip) | conda
    assert not set(expected) - listed, f"in pyproject.toml, missing from environment.yml: {set(expected) - listed}"
    assert not listed - set(expected), f"in environment.yml, missing from pyproject.toml: {listed - set(expected)}"
    differ = {n: (expected[n], pip[n]) for n in pip if pip[n] != expected[n]}
    assert not differ, f"version bounds differ (pyproject, environment.yml): {differ}"


def repo_notebooks() -> list[Path]:
    """Every .ipynb under notebooks/ that is present or tracked by git (and still present)."""
    present = {p for p in NOTEBOOKS_DIR.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts}
    try:
        tracked = subprocess.run(["git", "ls-files", "--", "notebooks"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        tracked = []
    present |= {REPO_ROOT / t for t in tracked if t.endswith(".ipynb") and (REPO_ROOT / t).is_file()}
    return sorted(present)


def notebook_problems(path: Path) -> list[str]:
    """What keeps a notebook from being committed: outputs, execution counts, parameters cell."""
    nb = nbformat.read(path, as_version=4)
    problems = [f"cell {i} has outputs" for i, c in enumerate(nb.cells) if c.get("outputs")]
    problems += [f"cell {i} has execution_count {c.execution_count}" for i, c in enumerate(nb.cells)
                 if c.cell_type == "code" and c.execution_count is not None]
    try:
        if "output_dir" not in runner.declared_parameters(path):
            problems.append("the parameters cell does not declare output_dir")
    except runner.ConfigError as err:
        problems.append(str(err))
    return problems


def test_notebook_problems_detects_dirty_notebooks(tmp_path):
    nb = nbformat.read(Path(__file__).parent / "fixtures" / "good.ipynb", as_version=4)
    assert notebook_problems(Path(__file__).parent / "fixtures" / "good.ipynb") == []
    nb.cells[2].execution_count = 3
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[2].metadata["tags"] = ["parameters"]
    nbformat.write(nb, tmp_path / "dirty.ipynb")
    problems = notebook_problems(tmp_path / "dirty.ipynb")
    assert problems[:2] == ["cell 2 has outputs", "cell 2 has execution_count 3"]
    assert "exactly one cell tagged 'parameters', found 2" in problems[2]


@pytest.mark.parametrize("path", repo_notebooks(), ids=lambda p: p.name)
def test_committed_notebooks_are_clean(path):
    assert notebook_problems(path) == []


def test_standard_profiles_exist():
    assert set(STANDARD_PROFILES) <= set(runner.list_profiles(PROFILES_DIR))


@pytest.mark.parametrize("name", runner.list_profiles(PROFILES_DIR))
def test_every_profile_is_runnable(name, tmp_path):
    """Every listed notebook exists, has one parameters cell and declares the profile's parameters."""
    profile = runner.load_profile(name, PROFILES_DIR)
    jobs = runner.plan(profile, NOTEBOOKS_DIR, tmp_path)
    assert [j.name for j in jobs] == [n for n, _ in profile.notebooks]
    assert all(j.notebook.is_file() for j in jobs)
