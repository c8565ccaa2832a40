"""The official ImageReward-v1.0 (THUDM's ``image-reward`` package) behind the reward interface.

Optional: ``pip install image-reward`` (not in the CPU default). ``RM.load`` downloads the checkpoint from the
hub unless a local file is given, so offline it needs ``checkpoint=<path to ImageReward.pt>`` and
``med_config=<path to med_config.json>``; every missing piece is named in the error.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .base import RewardModel, check_score_inputs
from .registry import register


class OfficialImageReward(RewardModel):
    """Scores with ``ImageReward.ImageReward.score(prompt, [PIL images])`` (already standardised by the package)."""

    name = "ImageReward-v1.0"

    def __init__(self, model):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        prompts = check_score_inputs(prompts, images)
        arrays = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = [float(self.model.score(p, [Image.fromarray(a)])) for p, a in zip(prompts, arrays)]
        return torch.tensor(out, dtype=torch.float32)


@register("ImageReward-v1.0")
def imagereward_v1(device: str = "auto", checkpoint: str | None = None, med_config: str | None = None) -> OfficialImageReward:
    """The official model: from the hub, or from a local ``checkpoint`` (ImageReward.pt) and ``med_config``."""
    from feedbacklab.device import resolve_device

    try:
        import ImageReward as RM
    except ImportError as exc:
        raise ImportError("reward 'ImageReward-v1.0' needs the optional package image-reward "
                          "(pip install image-reward); the workbook's own ranking reward is 'imagereward'") from exc
    dev = str(resolve_device(device))
    try:
        model = RM.load(checkpoint or "ImageReward-v1.0", device=dev,
                        **({"med_config": med_config} if med_config else {}))
    except Exception as exc:  # the package raises whatever its download or file access raised
        raise OSError(f"could not load ImageReward-v1.0 ({type(exc).__name__}: {str(exc)[:200]}). Offline, pass "
                      "checkpoint='<dir>/ImageReward.pt' and med_config='<dir>/med_config.json' from the "
                      "THUDM/ImageReward hub repository") from exc
    return OfficialImageReward(model)
