"""The pre-flight check: a profile's model ids, dataset paths, GPU and disk needs, all listed before anything runs."""
import json
import textwrap
from pathlib import Path

import pytest

from feedbacklab import preflight, runner
from feedbacklab.__main__ import main
from feedbacklab.models.registry import models_dir


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No hub: an empty Hugging Face cache and HF_HUB_OFFLINE, so every hub id is a miss, at once."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    preflight.hub_status.cache_clear()
    yield
    preflight.hub_status.cache_clear()


def test_paper_profile_fails_fast_with_the_full_list(capsys, tmp_path):
    reports = tmp_path / "reports"
    assert main(["check", "--profile", "paper", "--reports-dir", str(reports)]) == 1
    err = capsys.readouterr().err
    for needed in ("stabilityai/stable-diffusion-2-1", "CompVis/stable-diffusion-v1-4", "ViT-L-14/openai",
                   "PickScore_v1", "HPSv2.1", "blip2-itm", "ImageRewardDB", "richhf_18k", "TextNorm",
                   "RLHF-V-Dataset.parquet", "CUDA GPU"):
        assert needed in err, needed
    assert "HF_HUB_OFFLINE" in err and not reports.exists()  # nothing ran, nothing was written
    assert main(["run", "--profile", "paper", "--reports-dir", str(reports)]) == 2  # run refuses the same way
    assert "cannot run" in capsys.readouterr().err and not (reports / "paper").exists()


def test_cpu_profile_resolves():
    assert preflight.check_profile("cpu") == []


def test_models_resolve_by_shipped_name_directory_or_cache(tmp_path, monkeypatch):
    assert preflight.model_status("generator", "shapes-sd") is None
    assert preflight.model_status("clip", str(models_dir() / "shapes-clip")) is None
    assert "not a shipped captioner" in preflight.model_status("captioner", "nowhere")
    assert "unknown OpenCLIP architecture 'ViT-Q-99'" in preflight.model_status("clip", "ViT-Q-99/openai")
    assert "has no pretrained tag 'nope'" in preflight.model_status("clip", "ViT-B-32/nope")
    assert "not in the local Hugging Face cache" in preflight.model_status("generator", "org/sd-model")
    # the same id once it is in the cache (the layout huggingface_hub writes: refs/main → a snapshot)
    repo = tmp_path / "hf-cache" / "models--org--sd-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "model_index.json").write_text("{}")
    preflight.hub_status.cache_clear()
    assert preflight.model_status("generator", "org/sd-model") is None


def test_rewards_and_paths(tmp_path):
    assert preflight.model_status("reward", "clip-score") is None
    assert "not a registered reward" in preflight.model_status("reward", "no-such-reward")
    saved = tmp_path / "my_reward"
    saved.mkdir()
    (saved / "reward_config.json").write_text(json.dumps({"kind": "clip-mlp"}))
    assert preflight.model_status("reward", str(saved)) is None
    assert preflight.path_status("tia2_release", str(tmp_path)) is None
    assert "does not exist (the TIA2 release folder)" in preflight.path_status("tia2_release", str(tmp_path / "x"))
    assert "expected a path" in preflight.path_status("human_store", 3)


def test_gpu_and_disk_needs(tmp_path):
    nb_dir = tmp_path / "notebooks"
    (nb_dir / "profiles").mkdir(parents=True)
    good = (Path(__file__).parent / "fixtures" / "good.ipynb").read_text()
    (nb_dir / "good.ipynb").write_text(good)
    declared = runner.declared_parameters(nb_dir / "good.ipynb")
    (nb_dir / "profiles" / "big.yaml").write_text(textwrap.dedent("""
        requires: {disk_gb: 1000000}
        notebooks: [good]
    """))
    problems = preflight.check_profile("big", nb_dir, tmp_path / "reports")
    assert [p.parameter for p in problems] == ["requires.disk_gb"] and "GiB free" in problems[0].message
    job = runner.Job("good", nb_dir / "good.ipynb", {"device": "cuda"}, tmp_path, "k")
    declared["device"] = {"default": '"auto"'}
    problems = preflight.check_jobs([job], {"good": declared}, cuda_available=lambda: False)
    assert [p.parameter for p in problems] == ["device"] and "CUDA GPU" in problems[0].message
    assert preflight.check_jobs([job], {"good": declared}, cuda_available=lambda: True) == []
