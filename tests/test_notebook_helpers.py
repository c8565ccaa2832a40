"""feedbacklab.notebook: by_profile, setup, write_metrics / read_metrics and the metrics.json schema."""
import json
import random

import numpy as np
import pandas as pd
import pytest

from feedbacklab import notebook as nbh
from feedbacklab.notebook import Claim, MetricsError, ProfileError


@pytest.fixture
def profiles(tmp_path, monkeypatch):
    """A profiles dir holding a.yaml and big.yaml, made the active one."""
    d = tmp_path / "profiles"
    d.mkdir()
    for name in ("a", "big"):
        (d / f"{name}.yaml").write_text("notebooks: []\n")
    monkeypatch.setenv(nbh.PROFILES_DIR_ENV, str(d))
    monkeypatch.delenv(nbh.PROFILE_ENV, raising=False)
    return d


def test_by_profile_picks_the_current_profiles_value(profiles, monkeypatch):
    assert nbh.by_profile(2000, a=50) == 2000  # no profile set: the default
    monkeypatch.setenv(nbh.PROFILE_ENV, "a")
    assert nbh.current_profile() == "a"
    assert nbh.by_profile(2000, a=50, big=9000) == 50
    assert nbh.by_profile(2000, big=9000) == 2000  # not given for this profile: the default
    monkeypatch.setenv(nbh.PROFILE_ENV, "big")
    assert nbh.by_profile([1], a=[2], big=[3]) == [3]


def test_by_profile_accepts_the_repository_profiles_as_keys(profiles, monkeypatch):
    monkeypatch.setenv(nbh.PROFILE_ENV, "a")
    assert nbh.by_profile(10, smoke=1, a=2) == 2  # smoke is a repository profile


def test_unknown_profile_in_environment_lists_known_ones(profiles, monkeypatch):
    monkeypatch.setenv(nbh.PROFILE_ENV, "nope")
    with pytest.raises(ProfileError, match=r"\$FEEDBACKLAB_PROFILE.*'nope'.*\['a', 'big'\]"):
        nbh.by_profile(1, a=2)


def test_unknown_profile_keyword_is_an_error(profiles):
    with pytest.raises(ProfileError, match=r"by_profile\(\).*'smkoe'"):
        nbh.by_profile(1, smkoe=2)


def test_known_profiles_reads_yaml_files(profiles):
    (profiles / "notes.txt").write_text("not a profile")
    assert nbh.known_profiles() == ["a", "big"]
    assert {"smoke", "cpu", "gpu", "paper"} <= set(nbh.known_profiles(nbh.PROFILES_DIR))


def _draws():
    import torch

    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_setup_seeds_everything_and_creates_output_dir(tmp_path):
    import torch

    threads = torch.get_num_threads()
    try:
        out = nbh.setup(7, tmp_path / "a" / "b", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert out == (tmp_path / "a" / "b").resolve() and out.is_dir()
    first = _draws()
    nbh.setup(7, out)
    assert _draws() == first
    nbh.setup(8, out)
    assert all(x != y for x, y in zip(_draws(), first))


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"seed": 1.5}, {"seed": 0, "threads": 0}])
def test_setup_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        nbh.setup(output_dir=tmp_path, **kwargs)


def test_write_metrics_round_trip(tmp_path):
    claims = [
        Claim("DPO halves hallucinations", paper="-50%", this_run=np.float32(-0.25), holds=np.bool_(False)),
        {"claim": "reward improves", "paper": 0.3, "this_run": 0.41, "holds": True},
        Claim("not judged here", paper=1, this_run="n/a"),
    ]
    table = nbh.write_metrics(tmp_path / "out", {"auc": np.float64(0.75), "n": np.int64(3), "skipped": None},
                              claims, key_metrics=["auc"])
    path = tmp_path / "out" / "metrics.json"
    assert table.attrs["path"] == path
    raw = json.loads(path.read_text())
    assert raw["metrics"] == {"auc": 0.75, "n": 3, "skipped": None}
    assert raw["claims"][0] == {"claim": "DPO halves hallucinations", "paper": "-50%", "this_run": -0.25,
                                "holds": False}
    assert raw["claims"][2]["holds"] is None and raw["key_metrics"] == ["auc"]
    assert nbh.read_metrics(tmp_path / "out") == raw  # a dir or the file itself
    assert isinstance(table, pd.DataFrame)
    assert list(table.columns) == ["claim", "paper", "this_run", "holds"]
    assert table["claim"].tolist() == ["DPO halves hallucinations", "reward improves", "not judged here"]


@pytest.mark.parametrize("metrics, claims, pattern", [
    ({"a": {"nested": 1}}, [], "metric 'a' must be a finite number"),
    ({"a": float("nan")}, [], "metric 'a' must be finite"),
    ({"a": float("inf")}, [], "must be finite"),
    ({"a": "0.5"}, [], "metric 'a' must be a finite number"),
    ({"a": True}, [], "metric 'a' must be a finite number"),
    ({1: 0.5}, [], "metric names must be non-empty strings"),
    ([("a", 1)], [], "metrics must be a dict"),
    ({}, [{"claim": "x", "paper": 1, "this_run": 2}], r"expected exactly \['claim', 'paper', 'this_run', 'holds'\]"),
    ({}, [{"claim": "x", "paper": 1, "this_run": 2, "holds": None, "extra": 0}], "expected exactly"),
    ({}, [{"claim": "x", "paper": 1, "this_run": 2, "holds": "yes"}], "holds must be true, false or null"),
    ({}, [Claim("", 1, 2)], "claim must be a non-empty string"),
    ({}, [Claim("x", [1], 2)], "paper must be a string or a finite number"),
    ({}, [Claim("x", 1, float("nan"))], "this_run must be a string or a finite number"),
    ({}, "claims", "claims must be a list"),
])
def test_write_metrics_rejects_malformed_input(tmp_path, metrics, claims, pattern):
    with pytest.raises(MetricsError, match=pattern):
        nbh.write_metrics(tmp_path, metrics, claims)
    assert not (tmp_path / "metrics.json").exists()


def test_key_metrics_must_name_metrics(tmp_path):
    with pytest.raises(MetricsError, match=r"key_metrics must list names among the metrics \['a'\]"):
        nbh.write_metrics(tmp_path, {"a": 1}, [], key_metrics=["b"])


def test_read_metrics_rejects_invalid_files(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(MetricsError, match="not valid JSON"):
        nbh.read_metrics(bad)
    bad.write_text(json.dumps({"claims": []}))
    with pytest.raises(MetricsError, match='"metrics" key'):
        nbh.read_metrics(bad)
