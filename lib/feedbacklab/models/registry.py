"""Where shipped checkpoints live, what is shipped, model cards, and offline-failure messages."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

#: kind of each shipped tiny model (its directory name under ``data/models``).
SHIPPED: dict[str, str] = {
    "shapes-sd": "generator",
    "shapes-sd-noisy-counts": "generator",
    "shapes-clip": "clip",
    "shapes-captioner": "captioner",
    "shapes-captioner-crop": "captioner",
}


def models_dir() -> Path:
    """``data/models`` of the repository (override with ``FEEDBACKLAB_MODELS_DIR``)."""
    env = os.environ.get("FEEDBACKLAB_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "data" / "models"


def list_models(kind: str | None = None) -> dict[str, Path]:
    """Shipped models present on disk, ``{name: directory}``; ``kind`` in generator/clip/captioner filters."""
    kinds = set(SHIPPED.values())
    if kind is not None and kind not in kinds:
        raise ValueError(f"unknown model kind {kind!r}; accepted: {sorted(kinds)}")
    root = models_dir()
    return {
        name: root / name
        for name, k in SHIPPED.items()
        if (kind is None or k == kind) and (root / name / "card.json").is_file()
    }


def shipped_path(name: str, kind: str) -> Path | None:
    """Directory of shipped model ``name`` of ``kind``, or ``None`` when ``name`` is not a shipped name."""
    if SHIPPED.get(name) != kind:
        return None
    path = models_dir() / name
    if not path.is_dir():
        raise FileNotFoundError(f"shipped model {name!r} is not present at {path}; run scripts/pretrain.py to build it")
    return path


class ModelNotAvailableError(OSError):
    """A model id could not be loaded (typically: a hub id while offline)."""


def not_available(name: str, kind: str, tried: str, cause: BaseException) -> ModelNotAvailableError:
    """A clear error: what was tried, why it failed, and which shipped models exist."""
    shipped = sorted(list_models(kind)) or ["(none built yet)"]
    return ModelNotAvailableError(
        f"could not load {kind} {name!r}: tried {tried} and it failed with "
        f"{type(cause).__name__}: {str(cause)[:300]}. Real hub models need network access (or a local copy: pass "
        f"its directory). Shipped {kind} models that load offline: {', '.join(shipped)}."
    )


def hardware() -> str:
    """One line naming the hardware a run used (GPU name, else CPU model and thread count)."""
    if torch.cuda.is_available():
        return f"CUDA {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def read_card(model_dir: str | Path) -> dict[str, Any]:
    """The model card (``card.json``) of a model directory, ``{}`` when absent."""
    path = Path(model_dir) / "card.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def update_card(model_dir: str | Path, **sections: Any) -> dict[str, Any]:
    """Merge ``sections`` into ``model_dir/card.json`` (top-level keys replaced) and return the card."""
    card = read_card(model_dir)
    card.update(sections)
    path = Path(model_dir) / "card.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=2, sort_keys=False, default=str) + "\n")
    return card
