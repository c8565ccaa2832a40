"""HPS v2 / v2.1 (Wu et al. 2023, Human Preference Score): an OpenCLIP ViT-H-14 fine-tuned on HPD v2 preferences.

The score follows ``hpsv2/img_score.py``'s ``score`` (github.com/tgxs002/HPSv2): ``image_features @
text_features.T`` of the model's normalised outputs, i.e. the raw cosine, without the logit scale (about 0.25-0.3
for a good match). Its ``preprocess_val`` resizes the longest side to the model's size and pads with black, which
the backbone reproduces on tensors. The weights are the checkpoint ``HPS_v2.1_compressed.pt`` /
``HPS_v2_compressed.pt`` of the hub repository ``xswu/HPSv2``; offline, pass ``checkpoint=<path>``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .clip_backbone import ClipBackbone
from .clip_score import ClipScore
from .hub import unavailable
from .registry import register

REPO_ID = "xswu/HPSv2"
CHECKPOINTS = {"HPSv2": "HPS_v2_compressed.pt", "HPSv2.1": "HPS_v2.1_compressed.pt"}


class HPSv2(ClipScore):
    """``r(y, z) = cos(E_img(y), E_txt(z))`` with HPS's CLIP: the CLIP score's formula on preference-tuned weights."""

    def __init__(self, backbone: ClipBackbone, name: str = "HPSv2.1"):
        super().__init__(backbone)
        self.name = name


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of an HPS checkpoint: ``{"state_dict": ...}`` or a bare state dict, ``.pt`` (tensors only) or safetensors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HPS checkpoint {path} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError) as exc:  # weights_only refuses pickled objects; a bad zip
            raise ValueError(f"could not read {path} as a tensors-only torch checkpoint ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); convert it to safetensors") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(reward: str, model: torch.nn.Module, state: dict[str, torch.Tensor], arch: str) -> None:
    """Strict ``load_state_dict``; a checkpoint of another architecture → a ValueError naming a few bad keys."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        own = set(model.state_dict())
        missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
        raise ValueError(
            f"reward {reward!r}: the checkpoint does not fit open_clip architecture {arch!r}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]} "
            f"({str(exc).splitlines()[-1].strip()[:200]})") from exc


def build_hps(name: str, arch: str = "ViT-H-14", checkpoint: str | Path | None = None, device: str = "auto") -> HPSv2:
    """The HPS reward ``name`` (a key of :data:`CHECKPOINTS`): open_clip ``arch`` with the checkpoint's weights."""
    import open_clip

    from feedbacklab.device import resolve_device

    if checkpoint is None:
        from huggingface_hub import hf_hub_download

        try:
            checkpoint = hf_hub_download(REPO_ID, CHECKPOINTS[name])
        except OSError as exc:  # every hub failure (offline, not cached, HTTP) is an OSError
            raise unavailable(name, "checkpoint", f"{CHECKPOINTS[name]!r} of the hub repository {REPO_ID!r}", exc,
                              f"pass checkpoint=<path to {CHECKPOINTS[name]}>") from exc
    state = read_state_dict(checkpoint)  # before building the model: a bad file fails fast
    model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=None)
    load_weights(name, model, state, arch)
    # hpsv2's preprocess_val: resize the longest side, pad to a square with black (open_clip's "longest" mode)
    open_clip.set_model_preprocess_cfg(model, {**open_clip.get_model_preprocess_cfg(model), "resize_mode": "longest"})
    backbone = ClipBackbone(model, open_clip.get_tokenizer(arch), name=f"{name}/{arch}")
    return HPSv2(backbone.to(resolve_device(device)), name)


@register("HPSv2.1")
def hpsv2_1(arch: str = "ViT-H-14", checkpoint: str | Path | None = None, device: str = "auto") -> HPSv2:
    """HPS v2.1 (``HPS_v2.1_compressed.pt``), the recommended version."""
    return build_hps("HPSv2.1", arch, checkpoint, device)


@register("HPSv2")
def hpsv2_0(arch: str = "ViT-H-14", checkpoint: str | Path | None = None, device: str = "auto") -> HPSv2:
    """HPS v2.0 (``HPS_v2_compressed.pt``)."""
    return build_hps("HPSv2", arch, checkpoint, device)
