"""Loading a real reward's hub models: a local directory's ``config.json`` is checked before loading, a checkpoint
missing weights is refused, and a hub id that cannot be reached raises
:class:`~feedbacklab.models.registry.ModelNotAvailableError` naming what was tried and the offline way
(``pickscore``, ``blip2_itm`` and ``hpsv2`` share these)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from feedbacklab.models.registry import ModelNotAvailableError


def unavailable(reward: str, what: str, tried: str, cause: BaseException, hint: str) -> ModelNotAvailableError:
    """The clear error of a reward whose hub files cannot be had: what was tried, why it failed, the offline way."""
    why = " ".join(str(cause).split())[:300].rstrip(".")
    return ModelNotAvailableError(f"reward {reward!r} could not load its {what}: tried {tried} and it failed with "
                                  f"{type(cause).__name__}: {why}. Hub models need network access, or a local "
                                  f"copy: {hint}")


def load_pretrained(reward: str, loader: Any, name: str, what: str, hint: str, local_files_only: bool = False,
                    **kwargs) -> Any:
    """``loader.from_pretrained(name)`` (a hub id or a local directory); failing to reach it → ModelNotAvailableError."""
    from huggingface_hub.errors import HFValidationError

    try:
        return loader.from_pretrained(name, local_files_only=local_files_only, **kwargs)
    except (OSError, HFValidationError) as exc:  # hub errors are OSErrors; a malformed id is a HFValidationError
        tried = (f"the local directory {name}" if Path(name).is_dir() else
                 f"the hub id {name!r}" + (" with local_files_only=True" if local_files_only else ""))
        raise unavailable(reward, what, tried, exc, hint) from exc


def check_model_dir(reward: str, path: str, model_type: str, architecture: str) -> None:
    """A local directory must hold a transformers ``config.json`` of ``model_type`` saved from ``architecture``."""
    expects = f"reward {reward!r} expects a transformers {architecture} directory (model_type {model_type!r})"
    config = Path(path) / "config.json"
    if not config.is_file():
        raise ValueError(f"{expects}; {path} has no config.json")
    cfg = json.loads(config.read_text())
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") != model_type or (archs and architecture not in archs):
        raise ValueError(f"{expects}; {path} holds model_type {cfg.get('model_type')!r}, architectures {archs}")


def load_model(reward: str, cls: Any, name: str, model_type: str, hint: str, device: torch.device,
               local_files_only: bool = False) -> Any:
    """A frozen ``cls`` from a hub id or a checked local directory; a checkpoint missing any of its weights is refused."""
    if Path(name).is_dir():
        check_model_dir(reward, name, model_type, cls.__name__)
    model, info = load_pretrained(reward, cls, name, "model", hint, local_files_only, output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"reward {reward!r}: {name} is not a {cls.__name__} checkpoint, it lacks weights for "
                         f"{sorted(info['missing_keys'])[:5]} ({len(info['missing_keys'])} missing)")
    return model.eval().requires_grad_(False).to(device)
