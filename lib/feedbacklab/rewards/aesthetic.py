"""A text-blind "aesthetic" reward: an MLP on frozen CLIP image embeddings, trained on preference pairs.

The LAION aesthetic predictor's role in ImageReward's Table 3 (aesthetic 57.35 vs ImageReward 65.14): it
sees the image only, so any gain of a text-aware reward over it is what the prompt adds. Trained on the
same ranking pairs with the same loss as the ranking reward (``rewards.pairwise``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .base import RewardModel, check_score_inputs
from .clip_backbone import ClipBackbone, SavedHead
from .pairwise import PairIndex, pairwise_loss, stack_images
from .ranking import RankingTrainConfig
from .registry import register

WEIGHTS_FILE = "aesthetic_head.safetensors"


@dataclass
class AestheticConfig:
    """The image-only head (saved with its weights); ``mean``/``std`` standardise the score."""

    clip: str = "shapes-clip"
    embed_dim: int = 0                     # filled in from the backbone when 0
    hidden_dims: tuple[int, ...] = (256, 64)   # LAION's predictor: 1024, 128, 64, 16
    dropout: float = 0.1
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if not 0.0 <= self.dropout < 1.0 or not self.std > 0:
            raise ValueError(f"dropout must be in [0, 1) and std > 0, got {self.dropout}, {self.std}")


class AestheticReward(SavedHead, RewardModel):
    """``r(y)``: ignores the prompt; a preference score of the image alone."""

    name = "aesthetic"
    config_class = AestheticConfig
    weights_file = WEIGHTS_FILE

    def __init__(self, backbone: ClipBackbone, config: AestheticConfig | None = None):
        super().__init__()
        self.config = config or AestheticConfig(clip=backbone.name)
        if self.config.embed_dim == 0:
            self.config.embed_dim = backbone.embed_dim
        self.backbone = backbone
        layers: list[nn.Module] = []
        width = self.config.embed_dim
        for hidden in self.config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(self.config.dropout)]
            width = hidden
        self.head = nn.Sequential(*layers, nn.Linear(width, 1)).to(backbone.mean.device)

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) standardised scores; ``prompts`` are only checked, never read."""
        check_score_inputs(prompts, images)
        self.head.eval()
        return (self.head(self.backbone.embed_images(images)).squeeze(-1) - self.config.mean) / self.config.std


@register("aesthetic", loader=AestheticReward.load)
def aesthetic(path: str | Path | None = None, clip: Any = None, device: str = "auto", **config) -> AestheticReward:
    """A saved aesthetic reward from ``path``, or an untrained one on ``clip`` (train with :func:`fit_aesthetic`)."""
    if path is not None:
        return AestheticReward.load(path, clip=clip, device=device)
    backbone = ClipBackbone.resolve(clip or "shapes-clip", device)
    return AestheticReward(backbone, AestheticConfig(clip=backbone.name, **config))


def fit_aesthetic(reward: AestheticReward, rankings: Sequence, images: Mapping[str, torch.Tensor],
                  config: RankingTrainConfig | None = None, progress: bool = True) -> list[dict[str, float]]:
    """Train the head on every ordered pair of ``rankings`` with the pairwise loss; standardise on the training images."""
    from tqdm.auto import trange

    config = config or RankingTrainConfig()
    pairs = PairIndex.from_rankings(rankings, images)
    emb = reward.backbone.embed_images(stack_images(images, pairs.item_ids))   # (N, D) frozen, computed once
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(reward.head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    win, lose = pairs.win.to(emb.device), pairs.lose.to(emb.device)
    history = []
    reward.head.train()
    for epoch in trange(config.epochs, desc="aesthetic reward", disable=not progress):
        order = torch.randperm(len(pairs), generator=gen).to(emb.device)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            b = order[start : start + config.batch_size]
            loss = pairwise_loss(reward.head(emb[win[b]]).squeeze(-1), reward.head(emb[lose[b]]).squeeze(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        history.append({"epoch": epoch, "loss": total / len(pairs)})
    reward.head.eval()
    with torch.no_grad():
        raw = reward.head(emb).squeeze(-1)
    reward.config.mean, reward.config.std = float(raw.mean()), float(raw.std().clamp_min(1e-6))
    return history
