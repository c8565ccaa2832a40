"""Build, save and load generators, CLIP models and captioners: tiny shipped ones by name, real ones by id or path.

- ``load_generator("shapes-sd")`` / a local pipeline directory / a hub id such as
  ``"stabilityai/stable-diffusion-2-1"`` → a ``diffusers`` pipeline (same ``from_pretrained`` path).
- ``load_clip("shapes-clip")`` / an open_clip hub-layout directory / ``"ViT-L-14/openai"`` / ``"hf-hub:…"``
  → :class:`LoadedClip` (model, tokenizer, normalisation; images float (B, 3, H, W) in [0, 1]).
- ``load_captioner("shapes-captioner")`` (or ``"shapes-captioner-crop"``) / a directory / a hub id
  → :class:`LoadedCaptioner`.
- ``list_models()`` says what is shipped in ``data/models``.
- ``models.rahf``: RAHF (RichHF's rich-feedback predictor, two variants) and ``fit_rich_model``;
  ``models.rich_cnn``: its ResNet baseline; ``models.clip_tokens``: CLIP token features split at a frozen layer.

Offline, a hub id fails with :class:`ModelNotAvailableError` (an ``OSError``) naming what was tried and
what is shipped.
"""
from __future__ import annotations

from pathlib import Path

import torch

from feedbacklab.device import resolve_device
from feedbacklab.models.captioner import LoadedCaptioner
from feedbacklab.models.clip import LoadedClip
from feedbacklab.models.registry import ModelNotAvailableError, list_models, models_dir, not_available, shipped_path

__all__ = ["load_generator", "load_clip", "load_captioner", "list_models", "models_dir", "LoadedClip",
           "LoadedCaptioner", "ModelNotAvailableError"]


def _check_name(name_or_path: object) -> str:
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path).strip():
        raise TypeError(f"expected a model name, hub id or directory path (str), got {name_or_path!r}")
    return str(name_or_path)


def _resolve(name_or_path: str | Path, kind: str, local_files_only: bool) -> tuple[str, str, bool]:
    """(name, what ``from_pretrained`` gets: the shipped directory or the name itself, load without network?)."""
    name = _check_name(name_or_path)
    shipped = shipped_path(name, kind)
    target = str(shipped) if shipped else name
    return name, target, local_files_only or Path(target).is_dir()


def load_generator(name_or_path: str | Path = "shapes-sd", device: str | torch.device = "auto",
                   dtype: torch.dtype | None = None, local_files_only: bool = False):
    """A diffusers text-to-image pipeline: shipped name, local directory or hub id, via ``from_pretrained``."""
    from diffusers import DiffusionPipeline

    name, target, local = _resolve(name_or_path, "generator", local_files_only)
    dev = resolve_device(device)
    try:
        pipe = DiffusionPipeline.from_pretrained(target, dtype=dtype, local_files_only=local)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise not_available(name, "generator", f"DiffusionPipeline.from_pretrained({target!r}, "
                                               f"local_files_only={local})", exc) from exc
    pipe.set_progress_bar_config(disable=True)
    if dtype is None and dev.type == "cpu":
        from feedbacklab.models.generator import upcast_half

        upcast_half(pipe)
    return pipe.to(dev)


def load_clip(name_or_path: str | Path = "shapes-clip", device: str | torch.device = "auto") -> LoadedClip:
    """An open_clip model: shipped name, hub-layout directory, ``"ARCH/TAG"`` (e.g. ViT-L-14/openai) or ``hf-hub:``."""
    import open_clip

    from feedbacklab.models.clip import _loaded, load_clip_dir

    name = _check_name(name_or_path)
    dev = resolve_device(device)
    shipped = shipped_path(name, "clip")
    if shipped is not None or Path(name).is_dir():
        return load_clip_dir(shipped or name, device=dev)
    if name.startswith("hf-hub:"):
        arch, tag, tried = name, None, f"open_clip.create_model_and_transforms({name!r})"
    elif name.count("/") == 1:
        arch, tag = name.split("/")
        tried = f"open_clip.create_model_and_transforms({arch!r}, pretrained={tag!r})"
    else:
        raise ValueError(f"unknown CLIP model {name!r}; accepted: a shipped name {sorted(list_models('clip'))}, "
                         "a directory with open_clip_config.json, 'ARCH/TAG' (e.g. 'ViT-L-14/openai') or 'hf-hub:org/repo'")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=tag, device=dev)
    except (OSError, RuntimeError, ValueError) as exc:
        raise not_available(name, "clip", tried, exc) from exc
    return _loaded(model, preprocess, name, open_clip.get_tokenizer(arch))


def load_captioner(name_or_path: str | Path = "shapes-captioner", device: str | torch.device = "auto",
                   local_files_only: bool = False, prompt: str | None = None):
    """A captioner by shipped name, directory or hub id (transformers ``from_pretrained``): a vision-encoder/text-decoder
    model (``LoadedCaptioner``, the shipped ones), or a decoder-only VLM such as LLaVA (``models.vlm.LoadedVLM``,
    answering ``prompt``, which holds the processor's image placeholder; default ``vlm.DEFAULT_PROMPT``)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    name, target, local = _resolve(name_or_path, "captioner", local_files_only)
    dev = resolve_device(device)
    try:
        model_type = AutoConfig.from_pretrained(target, local_files_only=local).model_type
    except (OSError, ValueError) as exc:
        raise not_available(name, "captioner", f"AutoConfig.from_pretrained({target!r}, local_files_only={local})",
                            exc) from exc
    if model_type != "vision-encoder-decoder":
        from feedbacklab.models.vlm import DEFAULT_PROMPT, load_vlm

        try:
            return load_vlm(target, dev, local, prompt or DEFAULT_PROMPT)
        except (OSError, ValueError) as exc:
            raise not_available(name, "captioner", f"AutoModelForImageTextToText/AutoProcessor.from_pretrained("
                                                   f"{target!r}, local_files_only={local})", exc) from exc
    try:
        model = VisionEncoderDecoderModel.from_pretrained(target, local_files_only=local).to(dev).eval()
        tok = AutoTokenizer.from_pretrained(target, local_files_only=local)
        proc = AutoImageProcessor.from_pretrained(target, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise not_available(name, "captioner", f"VisionEncoderDecoderModel/AutoTokenizer/AutoImageProcessor"
                                               f".from_pretrained({target!r}, local_files_only={local})", exc) from exc
    return LoadedCaptioner(model=model, tokenizer=tok, processor=proc)
