"""RichHF's CNN baseline (Liang et al. 2024, Tables 1-2): a torchvision ResNet with regression and deconvolution heads.

The paper fine-tunes an ImageNet ResNet-50; no pretrained weights are reachable offline, so the trunk here
is the same torchvision architecture trained from scratch on the same data (``arch="resnet50"`` for the
paper's, ``"resnet18"`` where CPU time is short). It sees the image only, never the prompt. It has the same
``features`` / ``forward`` / ``predict`` interface as :class:`~feedbacklab.models.rahf.RAHF`, so
``fit_rich_model`` trains it and every metric reads it; it predicts no keywords.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from feedbacklab.feedback.records import SCORE_ASPECTS
from feedbacklab.feedback.rich import MAP_KINDS

from .rahf import HeatmapHead, RAHFError

ARCHS = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class RichCNNConfig:
    arch: str = "resnet50"
    map_size: int = 64
    head_channels: tuple[int, ...] = (64, 32)
    head_size: int = 32


class RichCNN(nn.Module):
    """ResNet trunk (no pretrained weights) → deconv heatmap head (2 maps) and pooled linear score head (4 scores)."""

    def __init__(self, arch: str = "resnet50", map_size: int = 64, head_channels: Sequence[int] = (64, 32),
                 head_size: int = 32):
        import torchvision

        super().__init__()
        if arch not in ARCHS:
            raise RAHFError(f"unknown CNN architecture {arch!r}; accepted: {ARCHS}")
        self.config = RichCNNConfig(arch, map_size, tuple(head_channels), head_size)
        resnet = getattr(torchvision.models, arch)(weights=None)
        self.trunk = nn.Sequential(*list(resnet.children())[:-2])       # up to layer4: (B, C, H/32, W/32)
        width = resnet.fc.in_features
        grid = max(1, map_size // 32)
        self.heatmap_head = HeatmapHead(width, self.config.head_channels, grid, min(head_size, map_size),
                                        len(MAP_KINDS), map_size)
        self.score_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, len(SCORE_ASPECTS)),
                                        nn.Sigmoid())
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] → normalised pixels (the whole trunk trains, so nothing else is cached)."""
        return (images.to(self.device, torch.float32) - self.mean) / self.std

    def forward(self, features: torch.Tensor, prompts: Sequence[str] | None = None, *_: Any, **__: Any) -> dict[str, Any]:
        """``heatmaps`` {kind: (B, S, S)} and ``scores`` (B, 4); prompts are ignored (an image-only model)."""
        fmap = self.trunk(features)
        logits = self.heatmap_head.logits(fmap)
        return {"heatmaps": {k: torch.sigmoid(logits[:, i]) for i, k in enumerate(MAP_KINDS)},
                "heatmap_logits": {k: logits[:, i] for i, k in enumerate(MAP_KINDS)}, "scores": self.score_head(fmap),
                "score_aspects": SCORE_ASPECTS}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, prompts: Sequence[str] | None = None, batch_size: int = 64,
                keywords: bool = False) -> dict[str, Any]:
        """Heatmaps {kind: (N, S, S)} and scores (N, 4) as numpy, in eval mode."""
        self.eval()
        outs = [self(self.features(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        return {"heatmaps": {k: np.concatenate([o["heatmaps"][k].cpu().numpy() for o in outs]) for k in MAP_KINDS},
                "scores": np.concatenate([o["scores"].cpu().numpy() for o in outs]), "keywords": None}
