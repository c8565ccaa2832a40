"""Shared pytest setup: keep nbval off the fixture notebooks, one torch thread per test."""
import os
import sys

import pytest

# The runner's fixture notebooks are inputs of tests/test_runner.py, not notebooks to check
# under `pytest --nbval-lax` (some of them fail on purpose).
collect_ignore_glob = ["fixtures/*"]

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Two cores are shared: torch (when some test imported it) runs on one thread."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    yield


def new_tiny_pipe():
    """An untrained tiny StableDiffusionPipeline (32 px, v-prediction, DDIM) from the models builders, seeded."""
    import torch

    from feedbacklab.models.generator import GeneratorConfig, build_pipeline

    torch.manual_seed(0)
    pipe = build_pipeline(GeneratorConfig.tiny())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture()
def pipe():
    """A fresh :func:`new_tiny_pipe` per test (a module may override it with its own)."""
    return new_tiny_pipe()
