"""Seed and parameter sweeps (feedbacklab.sweeps): runs per seed and grid point, aggregation, resume, bad input."""
import json
import shutil
from io import StringIO
from pathlib import Path

import pytest
import yaml
from scipy import stats

from feedbacklab import sweeps
from feedbacklab.notebook import write_metrics
from feedbacklab.runner import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def ws(tmp_path):
    nbs = tmp_path / "notebooks"
    (nbs / "profiles").mkdir(parents=True)
    for name in ("good", "fails"):
        shutil.copy(FIXTURES / f"{name}.ipynb", nbs / f"{name}.ipynb")
    (nbs / "profiles" / "scratch.yaml").write_text(yaml.safe_dump({"parameters": {"seed": 0}, "notebooks": ["good"]}))
    return {"notebooks_dir": nbs, "reports_dir": tmp_path / "reports"}


class SeedExecutor:
    """Stands in for papermill: metrics that depend on the seed and n as a notebook's would; fails on request."""

    def __init__(self, fail_seed=None):
        self.calls, self.fail_seed = [], fail_seed

    def __call__(self, job):
        seed, n = job.parameters["seed"], job.parameters.get("n", 10)
        self.calls.append((seed, n))
        if seed == self.fail_seed:
            raise RuntimeError(f"seed {seed} breaks")
        shutil.copy(job.notebook, job.executed)
        write_metrics(job.output_dir, {"sum": n * (n + 1) / 2 + seed, "mean": seed / 10, "n": n}, [],
                      key_metrics=["sum", "mean"])


def test_sweep_aggregates_mean_and_t_interval_over_seeds(ws):
    ex = SeedExecutor()
    res = sweeps.run_sweep("scratch", [0, 1, 2, 3], {"n": [4, 10]}, executor=ex, out=StringIO(), **ws)
    assert sorted(ex.calls) == sorted((s, n) for n in (4, 10) for s in range(4)) and res.exit_code == 0
    rows = {(r["point"], r["metric"]): r for r in res.rows}
    seeds = [0, 1, 2, 3]
    r = rows["n=4", "sum"]
    half = stats.t.ppf(0.975, 3) * stats.tstd([10 + s for s in seeds]) / 2
    assert (r["n"], r["mean"]) == (4, pytest.approx(11.5))
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(11.5 - half), pytest.approx(11.5 + half))
    assert rows["n=10", "sum"]["mean"] == pytest.approx(56.5) and set(m for _, m in rows) == {"sum", "mean"}
    report = ws["reports_dir"] / "scratch" / "sweep"
    assert (report / "n=4-seed2" / "good" / "metrics.json").is_file()  # each run: a profile report of its own
    assert (report / "n=4-seed2" / "index.html").is_file()
    assert json.loads((report / "sweep.json").read_text()) == json.loads(json.dumps(res.rows))
    assert "95 % CI" in (report / "index.html").read_text()


def test_an_interrupted_sweep_resumes_and_a_failed_run_is_reported(ws):
    first = SeedExecutor(fail_seed=1)
    res = sweeps.run_sweep("scratch", [0, 1, 2], executor=first, out=StringIO(), **ws)
    assert res.failed == ["seed1/good"] and res.exit_code == 1
    assert "failed: good" in res.index.read_text()
    assert [r["n"] for r in res.rows if r["metric"] == "sum"] == [2]  # the failed seed is not averaged
    again = SeedExecutor()
    res = sweeps.run_sweep("scratch", [0, 1, 2], executor=again, out=StringIO(), **ws)
    assert again.calls == [(1, 10)] and res.exit_code == 0  # finished runs are not redone
    assert [r["n"] for r in res.rows if r["metric"] == "sum"] == [3]


def test_bad_sweeps_fail_before_any_run(ws):
    ex = SeedExecutor()
    with pytest.raises(ConfigError, match="swept parameter 'learning_rate' is declared by none"):
        sweeps.run_sweep("scratch", [0, 1], {"learning_rate": [1e-4]}, executor=ex, **ws)
    with pytest.raises(ConfigError, match="distinct integers"):
        sweeps.run_sweep("scratch", [0, 0], executor=ex, **ws)
    with pytest.raises(ConfigError, match="swept by --seeds"):
        sweeps.plan_runs([0], {"seed": [1]})
    with pytest.raises(ConfigError, match="NAME=V1,V2"):
        sweeps.parse_grid(["lr"])
    assert ex.calls == []
    assert sweeps.parse_grid(["n=4,10", "flag=true,false"]) == {"n": [4, 10], "flag": [True, False]}
    assert [r.name for r in sweeps.plan_runs([0, 1], {"n": [4]})] == ["n=4-seed0", "n=4-seed1"]


def test_mean_ci_edge_cases():
    one = sweeps.mean_ci([3.0])
    assert one["mean"] == 3.0 and one["n"] == 1 and one["ci_low"] != one["ci_low"]  # nan: no interval from one seed
    assert sweeps.mean_ci([1.0, float("nan"), 3.0])["n"] == 2


def test_cli_sweep_with_papermill_and_ray_equals_the_sequential_one_and_resumes(ws, capsys):
    """The CLI's sweep runs the real notebook with papermill, sequentially and as Ray tasks (2 local CPUs)."""
    ray = pytest.importorskip("ray")
    from feedbacklab.__main__ import main

    args = ["sweep", "--profile", "scratch", "--seeds", "0", "1", "--grid", "n=3", "--notebooks-dir",
            str(ws["notebooks_dir"])]
    seq, par = ws["reports_dir"].with_name("seq"), ws["reports_dir"].with_name("par")
    assert main([*args, "--reports-dir", str(seq)]) == 0
    assert capsys.readouterr().out.strip().endswith("sweep/index.html")
    rows = json.loads((seq / "scratch" / "sweep" / "sweep.json").read_text())
    total = next(r for r in rows if r["metric"] == "sum")
    assert (total["n"], total["mean"], total["std"]) == (2, 6.0, 0.0)  # 1+2+3, the same for both seeds
    ctx = json.loads((seq / "scratch" / "sweep" / "n=3-seed1" / "good" / "context.json").read_text())
    assert ctx["n"] == 3
    try:
        assert main([*args, "--reports-dir", str(par), "--executor", "ray", "--ray-cpus", "2"]) == 0
        read = lambda root: json.loads((root / "scratch" / "sweep" / "sweep.json").read_text())  # noqa: E731
        assert read(par) == read(seq)
        state = par / "scratch" / "sweep" / "n=3-seed1" / ".state" / "good.json"
        before = state.stat().st_mtime_ns
        assert main([*args, "--reports-dir", str(par), "--executor", "ray"]) == 0  # finished runs are skipped
        assert state.stat().st_mtime_ns == before
    finally:
        ray.shutdown()


def test_ray_address_that_does_not_answer(ws):
    pytest.importorskip("ray")
    with pytest.raises(ConfigError, match="no Ray cluster answers at '127.0.0.1:1'"):
        sweeps.run_sweep("scratch", [0], executor_kind="ray", ray_address="127.0.0.1:1", **ws)
    assert not (ws["reports_dir"] / "scratch" / "sweep" / "seed0").exists()
