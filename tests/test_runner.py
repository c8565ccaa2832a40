"""feedbacklab.runner and the CLI, on the tiny notebooks in tests/fixtures/.

Papermill executions (3-5 s each) happen only in ``first_run`` (3) and
``test_rerun_skips_unchanged_and_reruns_changed`` (4); the other tests validate
or use a fake executor.
"""
import json
import shutil
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import nbformat
import pytest
import yaml

from feedbacklab import runner
from feedbacklab.__main__ import main
from feedbacklab.notebook import write_metrics
from feedbacklab.runner import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"
SCRIPT = "<script>alert(1)</script> two red circles & 'quotes'"
IMG = "<img src=x onerror=alert(1)> broke"


def make_workspace(root: Path, profile: dict, name: str = "scratch") -> dict[str, Path]:
    """notebooks/ (fixture copies), notebooks/profiles/<name>.yaml and an empty reports/ location."""
    nbs = root / "notebooks"
    (nbs / "profiles").mkdir(parents=True)
    for path in FIXTURES.glob("*.ipynb"):
        shutil.copy(path, nbs / path.name)
    (nbs / "profiles" / f"{name}.yaml").write_text(yaml.safe_dump(profile))
    return {"notebooks_dir": nbs, "reports_dir": root / "reports"}


def cli(ws: dict[str, Path], *args: str) -> tuple[int, str, str]:
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["run", "--notebooks-dir", str(ws["notebooks_dir"]),
                     "--reports-dir", str(ws["reports_dir"]), *args])
    return code, out.getvalue(), err.getvalue()


PROFILE = {
    "description": "fixtures",
    "parameters": {"seed": 3},
    "notebooks": [  # the failing one first: the others must still run after it
        {"name": "fails", "parameters": {"message": IMG}},
        "good",
        {"name": "prompt", "parameters": {"prompt": SCRIPT}},
    ],
}


@pytest.fixture(scope="module")
def frozen_lib(tmp_path_factory):
    """The library hash comes from a fixed directory, not from lib/ (which may change mid-test)."""
    lib = tmp_path_factory.mktemp("lib")
    (lib / "mod.py").write_text("x = 1\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "LIB_DIR", lib)
        yield lib


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, frozen_lib):
    ws = make_workspace(tmp_path_factory.mktemp("first"), PROFILE)
    code, out, err = cli(ws, "--profile", "scratch")
    report = ws["reports_dir"] / "scratch"
    return {"ws": ws, "code": code, "out": out, "err": err, "report": report,
            "index": (report / "index.html").read_text()}


def test_cli_progress_exit_code_and_index_path(first_run):
    lines = first_run["out"].splitlines()
    assert lines[0].startswith("[1/3] fails ... failed") and "ValueError" in lines[0]
    assert lines[1].startswith("[2/3] good ... ok ") and lines[1].endswith("s")
    assert lines[2].startswith("[3/3] prompt ... ok ")
    assert lines[-1] == str(first_run["report"] / "index.html")
    assert first_run["code"] == 1
    assert "failed: fails" in first_run["err"]


def test_failure_is_captured_and_executed_notebook_kept(first_run):
    report = first_run["report"]
    executed = nbformat.read(report / "fails.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors] == [("ValueError", IMG)]
    assert (report / "fails.html").is_file()
    state = json.loads((report / ".state" / "fails.json").read_text())
    assert state["status"] == "failed" and state["error"].startswith(f"ValueError: {IMG}")
    for name in ("good", "prompt"):  # the batch went on after the failure
        assert json.loads((report / ".state" / f"{name}.json").read_text())["status"] == "ok"


def test_index_escapes_everything_from_notebooks(first_run):
    index = first_run["index"]
    assert "<script" not in index and "<img" not in index
    escaped_prompt = "&lt;script&gt;alert(1)&lt;/script&gt; two red circles &amp; &#39;quotes&#39;"
    assert f"length of {escaped_prompt}" in index  # metric name
    assert f"the prompt {escaped_prompt} is echoed" in index  # claim
    assert "ValueError: &lt;img src=x onerror=alert(1)&gt; broke" in index  # the failing cell's error


def test_index_rows_link_html_and_show_metrics_and_claims(first_run):
    index = first_run["index"]
    for name in ("fails", "good", "prompt"):
        assert f'<a href="{name}.html">{name}</a>' in index
    assert index.count('class="status st-ok"') == 2 and index.count('class="status st-failed"') == 1
    assert "sum of 1..n is n(n+1)/2" in index and "✓ holds" in index
    metrics = json.loads((first_run["report"] / "good" / "metrics.json").read_text())
    assert metrics["metrics"] == {"n": 10, "sum": 55, "mean": 5.5}


def test_kernel_runs_in_notebook_dir_with_profile_env_and_injected_output_dir(first_run):
    context = json.loads((first_run["report"] / "good" / "context.json").read_text())
    assert context == {"cwd": str(first_run["ws"]["notebooks_dir"]), "profile": "scratch", "n": 10}
    executed = nbformat.read(first_run["report"] / "good.ipynb", as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'output_dir = "../reports/scratch/good"' in injected.source and "seed = 3" in injected.source


def test_rerun_skips_unchanged_and_reruns_changed(first_run, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(first_run["ws"]["notebooks_dir"].parent, root)
    ws = {"notebooks_dir": root / "notebooks", "reports_dir": root / "reports"}
    report = ws["reports_dir"] / "scratch"
    kw = dict(notebooks_dir=ws["notebooks_dir"], reports_dir=ws["reports_dir"], out=StringIO())
    good_mtime = (report / "good.ipynb").stat().st_mtime_ns

    again = runner.run_profile("scratch", **kw)  # unchanged: only the failed notebook reruns
    assert (again.ran, again.skipped, again.failed) == ([], ["good", "prompt"], ["fails"])
    assert (report / "good.ipynb").stat().st_mtime_ns == good_mtime
    assert [r.status for r in again.rows] == ["failed", "cached", "cached"]

    nb = nbformat.read(ws["notebooks_dir"] / "good.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("an edit"))
    nbformat.write(nb, ws["notebooks_dir"] / "good.ipynb")
    profile = yaml.safe_load((ws["notebooks_dir"] / "profiles" / "scratch.yaml").read_text())
    profile["notebooks"][2]["parameters"]["prompt"] = "a blue square"
    (ws["notebooks_dir"] / "profiles" / "scratch.yaml").write_text(yaml.safe_dump(profile))
    changed = runner.run_profile("scratch", only=["good", "prompt"], **kw)
    assert (changed.ran, changed.skipped, changed.failed) == (["good", "prompt"], [], [])
    assert json.loads((report / "prompt" / "metrics.json").read_text())["metrics"] == {
        "length of a blue square": 13}
    assert [r.status for r in changed.rows] == ["failed", "ok", "ok"]  # fails: shown from its state

    forced = runner.run_profile("scratch", only=["good"], force=True, **kw)
    assert (forced.ran, forced.skipped, forced.exit_code) == (["good"], [], 0)
    assert [r.status for r in forced.rows] == ["failed", "ok", "cached"]


def test_library_source_change_invalidates_a_run(tmp_path):
    ws = make_workspace(tmp_path, {"notebooks": ["good"]})
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mod.py").write_text("x = 1\n")
    job, = runner.plan(runner.load_profile("scratch", ws["notebooks_dir"] / "profiles"),
                       ws["notebooks_dir"], ws["reports_dir"], lib_dir=lib)
    job.executed.parent.mkdir(parents=True)
    job.executed.write_text("{}")
    job.state.parent.mkdir()
    job.state.write_text(json.dumps({"status": "ok", "key": job.key}))
    assert runner.is_current(job)
    (lib / "mod.py").write_text("x = 2\n")
    job2, = runner.plan(runner.load_profile("scratch", ws["notebooks_dir"] / "profiles"),
                        ws["notebooks_dir"], ws["reports_dir"], lib_dir=lib)
    assert job2.key != job.key and not runner.is_current(job2)
    before = runner.source_hash(lib)
    (lib / "notes.txt").write_text("only .py files count")
    assert runner.source_hash(lib) == before


class FakeExecutor:
    """Stands in for papermill: records calls and index snapshots; Ctrl-C on ``interrupt``."""

    def __init__(self, interrupt: str | None = None):
        self.calls, self.index_at_start, self.interrupt = [], {}, interrupt

    def __call__(self, job: runner.Job) -> None:
        self.calls.append(job.name)
        self.index_at_start[job.name] = (job.report_dir / "index.html").read_text()
        if job.name == self.interrupt:
            raise KeyboardInterrupt
        shutil.copy(job.notebook, job.executed)
        write_metrics(job.output_dir, {"ran": 1}, [])


def test_interrupted_batch_resumes_where_it_stopped(tmp_path):
    ws = make_workspace(tmp_path, {"notebooks": ["good", "prompt", "fails"]})
    kw = dict(notebooks_dir=ws["notebooks_dir"], reports_dir=ws["reports_dir"], out=StringIO())
    report = ws["reports_dir"] / "scratch"

    first = FakeExecutor(interrupt="prompt")
    with pytest.raises(KeyboardInterrupt):
        runner.run_profile("scratch", executor=first, **kw)
    assert first.calls == ["good", "prompt"]
    assert 'st-ok">ok<' in first.index_at_start["prompt"]  # rewritten after good finished
    assert 'st-running">running<' in first.index_at_start["prompt"]
    index = (report / "index.html").read_text()
    assert 'st-interrupted">interrupted<' in index and 'st-pending">pending<' in index
    assert (report / ".state" / "good.json").exists() and not (report / ".state" / "prompt.json").exists()

    resumed = FakeExecutor()
    result = runner.run_profile("scratch", executor=resumed, **kw)
    assert resumed.calls == ["prompt", "fails"] and result.skipped == ["good"]

    forced = FakeExecutor(interrupt="good")  # an interrupted rerun forgets the earlier success
    with pytest.raises(KeyboardInterrupt):
        runner.run_profile("scratch", force=True, executor=forced, **kw)
    after = FakeExecutor()
    runner.run_profile("scratch", executor=after, **kw)
    assert after.calls == ["good"]


def _raises_before_running(ws, match, **kwargs):
    with pytest.raises(ConfigError, match=match):
        runner.run_profile("scratch", notebooks_dir=ws["notebooks_dir"], reports_dir=ws["reports_dir"],
                           executor=FakeExecutor(), out=StringIO(), **kwargs)
    assert not ws["reports_dir"].exists()


def test_unknown_parameter_is_an_error_before_anything_runs(tmp_path):
    ws = make_workspace(tmp_path, {"notebooks": ["good", {"name": "prompt", "parameters": {"promt": "x"}}]})
    _raises_before_running(ws, r"'prompt' does not declare parameter 'promt'; it declares \['output_dir', 'prompt'\]")


def test_by_profile_parameters_count_as_declared(tmp_path):
    ws = make_workspace(tmp_path, {"notebooks": [{"name": "good", "parameters": {"n": 3}}]})
    job, = runner.plan(runner.load_profile("scratch", ws["notebooks_dir"] / "profiles"),
                       ws["notebooks_dir"], ws["reports_dir"])
    assert job.parameters == {"n": 3, "output_dir": "../reports/scratch/good"}
    assert set(runner.declared_parameters(ws["notebooks_dir"] / "good.ipynb")) == {"output_dir", "seed", "n"}


def test_unknown_profile_and_notebook_errors_list_what_exists(tmp_path):
    ws = make_workspace(tmp_path, {"notebooks": ["good", "nope"]})
    _raises_before_running(ws, r"unknown notebook 'nope'.*\['fails', 'good', 'prompt'\]")
    code, _, err = cli(ws, "--profile", "cpu")
    assert code == 2 and "unknown profile 'cpu'" in err and "['scratch']" in err
    ws2 = make_workspace(tmp_path / "2", {"notebooks": ["good"]})
    _raises_before_running(ws2, r"--only \['prompt'\]: not in this profile; its notebooks are \['good'\]",
                           only=["prompt"])


@pytest.mark.parametrize("profile, match", [
    ({"parameters": {"sed": 1}, "notebooks": ["good"]}, "shared parameter 'sed' is declared by none"),
    ({"notebooks": [{"name": "good", "parameters": {"output_dir": "x"}}]}, "'output_dir' is set by the runner"),
    ({"notebook": ["good"]}, r"keys among \['description', 'parameters', 'notebooks', 'requires'\]"),
    ({"requires": {"disk": 5}}, r"'requires' must be a mapping with keys among \['disk_gb', 'gpu_memory_gb', 'cpus', 'gpus'\]"),
    ({"notebooks": [{"name": "good", "params": {}}]}, r"keys \['name', 'parameters'\]"),
    ({"notebooks": ["good", "good"]}, "listed more than once"),
    ({"notebooks": ["../good"]}, "file stem"),
])
def test_malformed_profiles_are_errors(tmp_path, profile, match):
    _raises_before_running(make_workspace(tmp_path, profile), match)


@pytest.mark.parametrize("edit, match", [
    (lambda nb: nb.cells.append(nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})),
     r"exactly one cell tagged 'parameters', found 2"),
    (lambda nb: nb.cells[1].metadata.pop("tags"), "exactly one cell tagged 'parameters', found 0"),
    (lambda nb: setattr(nb.cells[1], "source", 'prompt = "x"'), "must declare 'output_dir'"),
])
def test_notebook_convention_errors(tmp_path, edit, match):
    ws = make_workspace(tmp_path, {"notebooks": ["prompt"]})
    nb = nbformat.read(ws["notebooks_dir"] / "prompt.ipynb", as_version=4)
    edit(nb)
    nbformat.write(nb, ws["notebooks_dir"] / "prompt.ipynb")
    _raises_before_running(ws, match)


def test_ensure_kernel_registers_and_repairs_a_kernelspec(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    name = "feedbacklab-test-kernel"
    spec_dir = runner.ensure_kernel(name, prefix=str(tmp_path))
    assert spec_dir == tmp_path / "share" / "jupyter" / "kernels" / name
    spec = json.loads((spec_dir / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    spec["argv"][0] = "/usr/bin/false"
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    runner.ensure_kernel(name, prefix=str(tmp_path))
    assert json.loads((spec_dir / "kernel.json").read_text())["argv"][0] == sys.executable


def _peak_beside(code: str, settle_s: float, measure_s: float) -> float:
    """PeakMemory's reading (MiB) over ``measure_s`` while a Python child running ``code``, started ``settle_s``
    before the measurement, is alive."""
    import subprocess

    from feedbacklab.runner.memory import PeakMemory

    other = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(settle_s)
        with PeakMemory(interval_s=0.05) as peak:
            time.sleep(measure_s)
        return peak.mb
    finally:
        other.kill()
        other.wait()


def test_peak_memory_of_a_child_process_is_recorded_in_state_and_index(tmp_path):
    """A job whose child holds ~120 MiB for a second: the state file and the index show that peak."""
    import subprocess

    from feedbacklab.runner.memory import PeakMemory

    class AllocatingExecutor(FakeExecutor):
        def __call__(self, job):
            subprocess.run([sys.executable, "-c", "import time; b = bytearray(120 * 2**20); time.sleep(1.0)"],
                           check=True)
            super().__call__(job)

    ws = make_workspace(tmp_path, {"notebooks": ["good"]})
    runner.run_profile("scratch", notebooks_dir=ws["notebooks_dir"], reports_dir=ws["reports_dir"],
                       executor=AllocatingExecutor(), out=StringIO())
    report = ws["reports_dir"] / "scratch"
    peak = json.loads((report / ".state" / "good.json").read_text())["peak_memory_mb"]
    assert 120 <= peak < 400
    assert f"{peak:.0f} MiB" in (report / "index.html").read_text()
    with PeakMemory(interval_s=0.05) as idle:  # no child: nothing to count
        pass
    assert idle.mb == 0
    # a child that was running before the measurement began (a browser, a Ray instance) is not the job's
    assert _peak_beside("import time; b = bytearray(200 * 2**20); time.sleep(3)", settle_s=0.5, measure_s=0.3) == 0
    # nor is a process such a child starts during the measurement (a raylet starting a worker)
    assert _peak_beside("import subprocess, sys, time; time.sleep(0.5); subprocess.run([sys.executable, '-c', "
                        "'import time; b = bytearray(200 * 2**20); time.sleep(1.0)'])", settle_s=0.0, measure_s=1.2) == 0
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        PeakMemory(0)
