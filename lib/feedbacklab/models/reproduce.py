"""Rebuild the shipped tiny models from their cards: training recipes, a retraining driver, the training record.

``card_recipe()`` turns what each ``card.json`` records (steps, batch size, images, learning rate(s), seed,
augmentation) into calls of the same training functions that built the shipped checkpoints
(``pretrain_vae``, ``pretrain_unet`` once per learning-rate phase, ``pretrain_clip``, ``pretrain_captioner``);
``tiny_recipe()`` runs every stage for a few steps on tiny configs; ``retrain`` runs a recipe into fresh
directories and refuses to overwrite ``data/models`` unless told to ship.
"""
from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedbacklab.models.registry import SHIPPED, models_dir, read_card

COMPONENTS = ("vae", "unet", "clip", "captioner", "noisy-captions")
#: card section → the stage it records, in training order.
TRAINING_SECTIONS = {"vae_training": "VAE", "unet_training": "UNet + text encoder", "training": None,
                     "noisy_caption_training": "UNet + text encoder, miscounted captions"}
NOISY = "shapes-sd-noisy-counts"  # continues shapes-sd on miscounted captions (models.noisy_captions)
_VAE_KEYS = ("steps", "batch_size", "n_images", "lr", "seed")
_UNET_KEYS = ("batch_size", "n_images", "cfg_dropout", "ema_decay", "seed")
_KEYS = ("steps", "batch_size", "n_images", "lr", "seed")  # clip and captioner (and noisy-captions)
#: CLIP options a card may record, with the value of cards written before they existed.
_CLIP_OPTIONS = {"hard_negatives": 4, "focus_attributes": (), "cosine": False, "quality_captions": 0.0,
                 "quality_negatives": 2}


@dataclass(frozen=True)
class Stage:
    """One call of a training function: ``component``'s ``pretrain_*`` into the directory of ``model``."""

    model: str
    component: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise ValueError(f"unknown component {self.component!r}; accepted: {list(COMPONENTS)}")


def _trainer(component: str) -> Callable[..., dict[str, Any]]:
    from feedbacklab.models.captioner import pretrain_captioner
    from feedbacklab.models.clip import pretrain_clip
    from feedbacklab.models.generator import pretrain_unet, pretrain_vae
    from feedbacklab.models.noisy_captions import pretrain_noisy_captions

    trainers = {"vae": pretrain_vae, "unet": pretrain_unet, "clip": pretrain_clip, "captioner": pretrain_captioner,
                "noisy-captions": pretrain_noisy_captions}
    return trainers[component]


def _section(root: Path, name: str, key: str) -> dict[str, Any]:
    card = read_card(root / name)
    if key not in card:
        raise ValueError(f"{root / name / 'card.json'} has no {key!r} section (found {sorted(card)}); "
                         "a recipe needs the cards that scripts/pretrain.py writes")
    return card[key]


def card_recipe(root: str | Path | None = None) -> list[Stage]:
    """The training calls, with the settings each card in ``root`` (default ``data/models``) records."""
    from feedbacklab.models.generator import GeneratorConfig

    root = Path(root) if root is not None else models_dir()
    vae, unet = _section(root, "shapes-sd", "vae_training"), _section(root, "shapes-sd", "unet_training")
    config = GeneratorConfig.from_dict(_section(root, "shapes-sd", "config"))
    stages = [Stage("shapes-sd", "vae", {"config": config, **{k: vae[k] for k in _VAE_KEYS}})]
    phases = unet.get("phases") or [{"lr": unet["lr"], "to_step": unet["steps"]}]
    stages += [Stage("shapes-sd", "unet", {**{k: unet[k] for k in _UNET_KEYS}, "lr": p["lr"], "steps": p["to_step"]})
               for p in phases]  # one resumed call per learning-rate phase, as the shipped run
    clip = _section(root, "shapes-clip", "training")
    stages.append(Stage("shapes-clip", "clip", {**{k: clip[k] for k in _KEYS},
                                               **{k: clip.get(k, v) for k, v in _CLIP_OPTIONS.items()}}))
    for name in ("shapes-captioner", "shapes-captioner-crop"):
        cap = _section(root, name, "training")
        stages.append(Stage(name, "captioner", {**{k: cap[k] for k in _KEYS}, "crop": cap["augmentation"] != "none"}))
    noisy = _section(root, NOISY, "noisy_caption_training")  # after shapes-sd: it starts from that checkpoint
    stages.append(Stage(NOISY, "noisy-captions", {**{k: noisy[k] for k in _KEYS},
                                                  "wrong_count": noisy["wrong_count_probability"]}))
    return stages


def tiny_recipe(seed: int = 0) -> list[Stage]:
    """Every stage for a few steps on tiny configs and data (seconds): tests the training code end to end."""
    from feedbacklab.models.generator import GeneratorConfig

    small = {"batch_size": 4, "n_images": 16, "seed": seed}
    return [Stage("shapes-sd", "vae", {"config": GeneratorConfig.tiny(), "steps": 3, **small}),
            Stage("shapes-sd", "unet", {"steps": 2, "lr": 1e-3, **small}),
            Stage("shapes-sd", "unet", {"steps": 4, "lr": 3e-4, **small}),  # resumes: a second lr phase
            Stage("shapes-clip", "clip", {"steps": 2, "batch_size": 8, "n_images": 32, "seed": seed, "eval_n": 8}),
            Stage("shapes-captioner", "captioner", {"steps": 2, "crop": False, "eval_n": 8, **small}),
            Stage("shapes-captioner-crop", "captioner", {"steps": 2, "crop": True, "eval_n": 8, **small}),
            Stage(NOISY, "noisy-captions", {"steps": 2, "wrong_count": 0.5, **small})]


def recipe(name: str, root: str | Path | None = None, seed: int = 0) -> list[Stage]:
    """``"card"`` → :func:`card_recipe` (``root``'s cards), ``"tiny"`` → :func:`tiny_recipe` (``seed``)."""
    if name == "card":
        return card_recipe(root)
    if name == "tiny":
        return tiny_recipe(seed)
    raise ValueError(f"unknown recipe {name!r}; accepted: 'card' (the cards' recorded settings) or 'tiny'")


def retrain(stages: Sequence[Stage], out_root: str | Path, work_root: str | Path, ship: bool = False,
            log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run ``stages`` in order into fresh ``out_root/<model>`` directories; one row (steps, wall time) per stage.

    ``work_root/<model>`` holds resumable UNet state and latent caches. ``out_root`` may be the shipped
    ``data/models`` only with ``ship=True``; the directories of the models trained are emptied first.
    """
    out_root, work_root = Path(out_root).resolve(), Path(work_root).resolve()
    if out_root == models_dir().resolve() and not ship:
        raise ValueError(f"refusing to retrain into the shipped models directory {out_root}; pass ship=True "
                         "to replace the shipped checkpoints, or another out_root")
    unknown = sorted({s.model for s in stages} - set(SHIPPED))
    if unknown:
        raise ValueError(f"unknown model(s) {unknown} in the stages; accepted: {sorted(SHIPPED)}")
    rows, fresh = [], set()
    for st in stages:
        if st.model not in fresh:
            for d in (out_root / st.model, work_root / st.model):
                shutil.rmtree(d, ignore_errors=True)
            fresh.add(st.model)
        extra = {"work_dir": work_root / st.model} if st.component == "unet" else {}
        if st.component == "noisy-captions":  # starts from the shapes-sd trained (or shipped) next to it
            extra = {"base": out_root / "shapes-sd" if (out_root / "shapes-sd").is_dir() else "shapes-sd"}
        t0 = time.time()
        res = _trainer(st.component)(out_root / st.model, log=log, **st.kwargs, **extra)
        rows.append({"model": st.model, "stage": st.component, "steps": res["steps"],
                     "wall_s": round(time.time() - t0, 1), "dir": str(out_root / st.model)})
    return rows


def training_table(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per recorded training stage of the cards in ``root``: steps, batch, images, lr, wall time, hardware."""
    root = Path(root) if root is not None else models_dir()
    rows = []
    for name in SHIPPED:
        card = read_card(root / name)
        for key, stage in TRAINING_SECTIONS.items():
            sec = card.get(key)
            if not sec:
                continue
            lrs = list(dict.fromkeys(p["lr"] for p in sec.get("phases", []))) or [sec.get("lr")]
            rows.append({"model": name, "stage": stage or card.get("kind", key), "steps": sec.get("steps"),
                         "batch_size": sec.get("batch_size"), "n_images": sec.get("n_images"),
                         "lr": " → ".join(f"{lr:g}" for lr in lrs if lr is not None),
                         "wall_s": sec.get("total_wall_s", sec.get("wall_s")), "hardware": sec.get("hardware")})
    return rows
