"""Lee et al. (2023)'s reward: frozen CLIP image and text embeddings → MLP → scalar ``r_φ(y, z)``.

Training loss (Lee et al. 2023, Eq. 1–2): ``L = L_mse + λ·L_pc`` with
``L_mse = E[(label − r_φ(y, z))²]`` and, for images labelled 1, the auxiliary prompt classification
``L_pc = E[−log(exp r_φ(y, z) / Σ_{z' ∈ {z} ∪ perturbed(z)} exp r_φ(y, z'))]``.
CLIP is frozen, so image embeddings are computed once per image and the MLP trains on them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .base import RewardModel, check_score_inputs, set_rows
from .clip_backbone import ClipBackbone, SavedHead
from .registry import register

WEIGHTS_FILE = "head.safetensors"
FEATURES = ("concat", "concat_product")


@dataclass
class ClipMLPConfig:
    """Architecture of the reward head (saved next to its weights)."""

    clip: str = "shapes-clip"          # CLIP the head sits on: a shipped name or "ViT-L-14/openai"
    embed_dim: int = 0                  # CLIP embedding width (filled in from the backbone when 0)
    hidden_dims: tuple[int, ...] = (256, 64)
    dropout: float = 0.1
    features: str = "concat"            # "concat": [e_y, e_z] (the paper); "concat_product": [e_y, e_z, e_y ⊙ e_z]

    def __post_init__(self):
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if self.features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {self.features!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class RewardHead(nn.Module):
    """MLP over (image embedding, text embedding) pairs → one scalar per pair."""

    def __init__(self, config: ClipMLPConfig):
        super().__init__()
        if config.embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {config.embed_dim}")
        self.config = config
        width = config.embed_dim * (2 if config.features == "concat" else 3)
        layers: list[nn.Module] = []
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(config.dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(..., D) image and text embeddings (broadcastable) → (...) rewards."""
        image_embeds, text_embeds = torch.broadcast_tensors(image_embeds, text_embeds)
        parts = [image_embeds, text_embeds]
        if self.config.features == "concat_product":
            parts.append(image_embeds * text_embeds)
        return self.mlp(torch.cat(parts, dim=-1)).squeeze(-1)


class ClipMLPReward(SavedHead, RewardModel):
    """``r_φ(y, z)`` of Lee et al. (2023): frozen CLIP features and a trained MLP head."""

    name = "clip-mlp"
    config_class = ClipMLPConfig
    weights_file = WEIGHTS_FILE
    threshold = 0.5  # trained towards 0/1 labels

    def __init__(self, backbone: ClipBackbone, config: ClipMLPConfig | None = None):
        super().__init__()
        config = config or ClipMLPConfig(clip=backbone.name)
        if config.embed_dim == 0:
            config.embed_dim = backbone.embed_dim
        if config.embed_dim != backbone.embed_dim:
            raise ValueError(f"head expects {config.embed_dim}-d embeddings but CLIP {backbone.name!r} gives {backbone.embed_dim}")
        self.backbone = backbone
        self.head = RewardHead(config).to(backbone.mean.device)

    @property
    def config(self) -> ClipMLPConfig:
        return self.head.config

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) rewards (trained towards the 0/1 label)."""
        prompts = check_score_inputs(prompts, images)
        self.head.eval()
        return self.head(self.backbone.embed_images(images), self.backbone.embed_texts(prompts))

    @torch.no_grad()
    def score_sets(self, prompt_sets: Sequence[Sequence[str]], images: torch.Tensor) -> torch.Tensor:
        """Each image embedded once; the head scores every (image, prompt) pair of its set."""
        rows, flat = set_rows(prompt_sets, images)
        return self.score_embeddings(self.backbone.embed_images(images)[rows.to(self.backbone.mean.device)], flat)

    @torch.no_grad()
    def score_embeddings(self, image_embeds: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Rewards from precomputed (N, D) CLIP image embeddings (``backbone.embed_images``) → (N,)."""
        if image_embeds.shape[0] != len(prompts):
            raise ValueError(f"{image_embeds.shape[0]} image embeddings for {len(prompts)} prompts")
        self.head.eval()
        return self.head(image_embeds.to(self.backbone.mean.device), self.backbone.embed_texts(list(prompts)))


@register("clip-mlp", loader=ClipMLPReward.load)
def clip_mlp(path: str | Path | None = None, clip: Any = None, device: str = "auto", **config) -> ClipMLPReward:
    """A saved Lee et al. reward from ``path`` (on the CLIP its config names unless ``clip`` is given), or an
    untrained one on ``clip`` (default ``"shapes-clip"``; train it with :func:`fit_reward`)."""
    if path is not None:
        return ClipMLPReward.load(path, clip=clip, device=device)
    backbone = ClipBackbone.resolve(clip or "shapes-clip", device)
    return ClipMLPReward(backbone, ClipMLPConfig(clip=backbone.name, **config))


# ---------------------------------------------------------------- losses (Lee et al. 2023, Eq. 1–2)

def mse_loss(rewards: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``L_mse = mean((label − r_φ(y, z))²)`` over (B,) rewards and labels."""
    if rewards.shape != labels.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and labels {tuple(labels.shape)} must have the same shape")
    return ((labels.to(rewards.dtype) - rewards) ** 2).mean()


def prompt_classification_loss(rewards: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``L_pc = mean_i −log softmax(r_φ(y_i, ·))[true]`` over (B, 1+T) rewards, column 0 the true prompt.

    ``mask`` (B, 1+T) bool marks real entries when prompts have different numbers of perturbations.
    Returns 0 for an empty batch (no image labelled 1)."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (B, 1+T) with T >= 1 perturbed prompts, got {tuple(rewards.shape)}")
    if rewards.shape[0] == 0:
        return rewards.sum() * 0.0
    if mask is not None:
        if mask.shape != rewards.shape or not bool(mask[:, 0].all()):
            raise ValueError("mask must match rewards and keep column 0 (the true prompt)")
        rewards = rewards.masked_fill(~mask, float("-inf"))
    return -torch.log_softmax(rewards, dim=1)[:, 0].mean()


# ---------------------------------------------------------------- training

@dataclass
class RewardTrainConfig:
    """Hyper-parameters of reward training (ours, tuned for ShapesWorld; the paper does not list them)."""

    lambda_pc: float = 0.5        # λ: weight of the prompt-classification loss; 0 = MSE only
    num_perturbed: int | None = None  # T perturbed prompts per positive image and step (None = all of them)
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        if self.lambda_pc < 0:
            raise ValueError(f"lambda_pc must be >= 0, got {self.lambda_pc}")
        if self.num_perturbed is not None and self.num_perturbed < 1:
            raise ValueError(f"num_perturbed must be >= 1 or None, got {self.num_perturbed}")
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")


@dataclass
class PromptTable:
    """Every prompt the training needs, indexed: true prompts and their perturbations (padded with -1)."""

    prompts: list[str]
    perturbed: torch.Tensor = field(repr=False)  # (P_true, T_max) long indices into prompts, -1 = none

    @classmethod
    def build(cls, true_prompts: Sequence[str], perturb: Callable[[str], list[str]]) -> "PromptTable":
        """Index ``true_prompts`` and ``perturb(p)`` for each (world.contrastive_prompts in ShapesWorld)."""
        index: dict[str, int] = {}
        for p in true_prompts:
            index.setdefault(p, len(index))
        n_true = len(index)
        lists = [perturb(p) for p in list(index)[:n_true]]
        for alternatives in lists:
            for q in alternatives:
                index.setdefault(q, len(index))
        width = max((len(a) for a in lists), default=0)
        table = torch.full((n_true, max(width, 1)), -1, dtype=torch.long)
        for i, alternatives in enumerate(lists):
            table[i, : len(alternatives)] = torch.tensor([index[q] for q in alternatives], dtype=torch.long)
        return cls(list(index), table)

    def index_of(self, prompts: Sequence[str]) -> torch.Tensor:
        """(N,) long indices of true prompts."""
        lookup = {p: i for i, p in enumerate(self.prompts[: self.perturbed.shape[0]])}
        return torch.tensor([lookup[p] for p in prompts], dtype=torch.long)


def reward_loss(head: RewardHead, image_embeds: torch.Tensor, text_embeds: torch.Tensor, prompt_idx: torch.Tensor,
                labels: torch.Tensor, perturbed: torch.Tensor, lambda_pc: float,
                num_perturbed: int | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """``L_mse + λ·L_pc`` on a batch of (B, D) image embeddings; returns {"loss", "mse", "pc"}."""
    rewards = head(image_embeds, text_embeds[prompt_idx])
    mse = mse_loss(rewards, labels)
    pc = mse * 0.0
    positive = labels >= 0.5
    if lambda_pc > 0 and bool(positive.any()):
        alt = perturbed[prompt_idx[positive]]                                  # (B+, T_max)
        if num_perturbed is not None and num_perturbed < alt.shape[1]:
            keys = torch.rand(alt.shape, generator=generator).to(alt.device) + (alt >= 0).float()
            alt = alt.gather(1, keys.topk(num_perturbed, dim=1).indices)   # random T of the real ones
        cols = torch.cat([prompt_idx[positive, None], alt], dim=1)           # (B+, 1+T)
        mask = cols >= 0
        logits = head(image_embeds[positive, None, :], text_embeds[cols.clamp(min=0)])
        pc = prompt_classification_loss(logits, mask)
    return {"loss": mse + lambda_pc * pc, "mse": mse.detach(), "pc": pc.detach()}


def train_head(head: RewardHead, image_embeds: torch.Tensor, labels: torch.Tensor, prompt_idx: torch.Tensor,
               text_embeds: torch.Tensor, perturbed: torch.Tensor, config: RewardTrainConfig,
               progress: bool = True) -> list[dict[str, float]]:
    """Train the head on precomputed (N, D) image embeddings with ``L_mse + λ·L_pc``; returns per-epoch losses."""
    from tqdm.auto import trange

    if not (image_embeds.shape[0] == labels.shape[0] == prompt_idx.shape[0]):
        raise ValueError("image_embeds, labels and prompt_idx must have the same length")
    device = next(head.parameters()).device
    image_embeds, labels, prompt_idx = image_embeds.to(device), labels.float().to(device), prompt_idx.to(device)
    text_embeds, perturbed = text_embeds.to(device), perturbed.to(device)
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    history = []
    head.train()
    for epoch in trange(config.epochs, desc="reward epochs", disable=not progress):
        totals = {"loss": 0.0, "mse": 0.0, "pc": 0.0}
        order = torch.randperm(len(labels), generator=gen).to(device)
        for start in range(0, len(order), config.batch_size):
            b = order[start : start + config.batch_size]
            losses = reward_loss(head, image_embeds[b], text_embeds, prompt_idx[b], labels[b], perturbed,
                                 config.lambda_pc, config.num_perturbed, gen)
            opt.zero_grad()
            losses["loss"].backward()
            opt.step()
            for k in totals:
                totals[k] += float(losses[k].detach()) * len(b) / len(order)
        history.append({"epoch": epoch, **totals})
    head.eval()
    return history


def fit_reward(reward: ClipMLPReward, image_embeds: torch.Tensor, prompts: Sequence[str], labels: torch.Tensor,
               config: RewardTrainConfig | None = None, perturb: Callable[[str], list[str]] | None = None,
               progress: bool = True) -> list[dict[str, float]]:
    """Train ``reward``'s head on (N, D) CLIP image embeddings (``reward.backbone.embed_images``) and 0/1 labels.

    ``perturb`` gives the perturbed prompts for L_pc (default: ``feedbacklab.world.contrastive_prompts``)."""
    config = config or RewardTrainConfig()
    if perturb is None:
        from feedbacklab.world import contrastive_prompts as perturb
    torch.manual_seed(config.seed)
    table = PromptTable.build(prompts, perturb)
    text_embeds = reward.backbone.embed_texts(table.prompts)
    return train_head(reward.head, image_embeds, torch.as_tensor(labels), table.index_of(prompts), text_embeds,
                      table.perturbed, config, progress)
