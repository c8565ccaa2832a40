"""Rewards by name: ``register(name)`` a factory, ``load_reward(name_or_path)``, ``list_rewards()``.

Factories import their heavy dependencies when called, so listing or choosing a reward costs nothing
(ddpo-pytorch's reward factories). A directory saved by a reward's ``save`` (``reward_config.json``
holding a registered ``kind``) loads by path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from .base import RewardModel

CONFIG_FILE = "reward_config.json"
_FACTORIES: dict[str, Callable[..., RewardModel]] = {}
_LOADERS: dict[str, Callable[..., RewardModel]] = {}


def register(name: str, loader: Callable[..., RewardModel] | None = None) -> Callable:
    """Decorator registering ``factory(**kwargs) -> RewardModel`` under ``name``; ``loader(path, **kw)`` reads saved ones."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def deco(factory: Callable[..., RewardModel]) -> Callable[..., RewardModel]:
        _FACTORIES[name] = factory
        if loader is not None:
            _LOADERS[name] = loader
        return factory

    return deco


def list_rewards() -> list[str]:
    """Names accepted by :func:`load_reward` (a saved reward directory is accepted too)."""
    return sorted(_FACTORIES)


def load_reward(name_or_path: str | Path, **kwargs) -> RewardModel:
    """Build a registered reward by name (``"clip-score"``, ``"clip-mlp"``), or load a saved reward directory."""
    path = Path(name_or_path)
    if (path / CONFIG_FILE).is_file():
        kind = json.loads((path / CONFIG_FILE).read_text()).get("kind")
        if kind not in _LOADERS:
            raise ValueError(f"{path / CONFIG_FILE} names reward kind {kind!r}; loadable kinds: {sorted(_LOADERS)}")
        return _LOADERS[kind](path, **kwargs)
    if str(name_or_path) not in _FACTORIES:
        raise ValueError(
            f"unknown reward {str(name_or_path)!r}: not a registered name and not a directory with {CONFIG_FILE}; "
            f"registered: {list_rewards()}")
    return _FACTORIES[str(name_or_path)](**kwargs)


def write_saved(path: str | Path, kind: str, config: dict, tensors: dict, weights_file: str) -> Path:
    """Write a reward directory: ``reward_config.json`` (``kind`` + config) and its tensors as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path / weights_file)
    (path / CONFIG_FILE).write_text(json.dumps({"kind": kind, "config": config}, indent=2))
    return path


def read_saved(path: str | Path, kind: str, weights_file: str, device: str = "cpu") -> tuple[dict, dict]:
    """Read what :func:`write_saved` wrote: (config dict, tensors on ``device``); a clear error if files are missing."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG_FILE).is_file() or not (path / weights_file).is_file():
        raise FileNotFoundError(f"{path} is not a saved {kind} reward (needs {CONFIG_FILE} and {weights_file})")
    return json.loads((path / CONFIG_FILE).read_text())["config"], load_file(path / weights_file, device=str(device))
