"""An ImageReward-style preference reward (Xu et al., NeurIPS 2023): CLIP tokens fused by cross-attention.

ImageReward puts an MLP on BLIP's image-text matching encoder: prompt tokens attend to the ViT's patch
tokens by cross-attention, and ~70 % of the backbone's layers stay frozen. Here the backbone is an
OpenCLIP model (the shipped ``shapes-clip`` or any ``"ARCH/TAG"``): its vision tower gives the patch
tokens, its text tower the prompt tokens; ``freeze_fraction`` of each tower's residual blocks (the
bottom ones) stay frozen, the others train with the fusion block and the MLP under the pairwise loss
``−log σ(r(z, y_i) − r(z, y_j))`` (``rewards.pairwise``). Scores are standardised with the mean and
std of the training images' raw scores, stored with the model, so r ≈ N(0, 1) as the official model.

Because the bottom layers are frozen, training caches their outputs once per image and prompt and runs
only the top layers; :meth:`RankingReward.score` runs the whole model and is differentiable with
respect to the images (ReFL needs that).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from feedbacklab.models.clip_tokens import ClipTokens

from .base import RewardModel, check_score_inputs, set_rows
from .clip_backbone import ClipBackbone
from .pairwise import PairIndex, pairwise_loss, stack_images
from .registry import read_saved, register, write_saved

WEIGHTS_FILE = "ranking_reward.safetensors"


@dataclass
class RankingRewardConfig:
    """Architecture of the ranking reward (saved with it); ``mean``/``std`` standardise the raw score."""

    clip: str = "shapes-clip"             # OpenCLIP backbone: shipped name, directory or "ViT-L-14/openai"
    freeze_fraction: float = 0.7          # share of each tower's bottom residual blocks kept frozen (paper: ~70 %)
    fusion_dim: int = 0                   # width of the fusion block (0: the text tower's width)
    fusion_heads: int = 4
    fusion_layers: int = 1                # text self-attention + cross-attention to image tokens + MLP, per layer
    hidden_dims: tuple[int, ...] = (256, 64)  # the scoring MLP (official: 1024, 128, 64, 16)
    dropout: float = 0.1
    mean: float = 0.0                     # standardisation, set by fit_ranking_reward from the training images
    std: float = 1.0
    best_epoch: int | None = None         # the epoch early stopping kept (−1: the untrained similarity), if any

    def __post_init__(self):
        self.hidden_dims = tuple(int(h) for h in self.hidden_dims)
        if not 0.0 <= self.freeze_fraction <= 1.0:
            raise ValueError(f"freeze_fraction must be in [0, 1], got {self.freeze_fraction}")
        if self.fusion_layers < 1 or self.fusion_heads < 1 or self.fusion_dim < 0:
            raise ValueError("fusion_layers and fusion_heads must be >= 1, fusion_dim >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.std > 0:
            raise ValueError(f"std must be > 0, got {self.std}")


class FusionScorer(nn.Module):
    """Prompt tokens attend to image tokens (BLIP's image-grounded text encoder, in miniature) → MLP → scalar."""

    def __init__(self, image_width: int, text_width: int, config: RankingRewardConfig):
        super().__init__()
        d = config.fusion_dim or text_width
        self.text_in = nn.Linear(text_width, d) if d != text_width else nn.Identity()
        self.image_in = nn.Linear(image_width, d)
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(d, config.fusion_heads, dim_feedforward=4 * d, dropout=config.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(config.fusion_layers))
        self.norm = nn.LayerNorm(d)
        layers: list[nn.Module] = []
        width = d
        for hidden in config.hidden_dims:
            layers += [nn.Linear(width, hidden), nn.GELU(), nn.Dropout(config.dropout)]
            width = hidden
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))
        nn.init.zeros_(self.mlp[-1].weight)   # the fusion starts as a zero residual on the CLIP similarity
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """(B, N, W_img), (B, L, W_txt), (B, L) ids → (B,) fused scores, read at each prompt's end-of-text token."""
        eot = token_ids.argmax(dim=-1)                                     # CLIP's EOT id is the largest id
        pad = torch.arange(token_ids.shape[1], device=token_ids.device)[None] > eot[:, None]
        x, memory = self.text_in(text_tokens), self.image_in(image_tokens)
        for layer in self.layers:
            x = layer(x, memory, tgt_key_padding_mask=pad)
        pooled = self.norm(x[torch.arange(x.shape[0], device=x.device), eot])
        return self.mlp(pooled).squeeze(-1)


class RankingReward(RewardModel):
    """``r(z, y)``: standardised preference score; trained on rankings with :func:`fit_ranking_reward`."""

    name = "imagereward"

    def __init__(self, backbone: ClipBackbone, config: RankingRewardConfig | None = None):
        super().__init__()
        self.config = config or RankingRewardConfig(clip=backbone.name)
        self.backbone = backbone                       # preprocessing and the tokenizer; its model is ours
        self.tokens = ClipTokens(backbone.model, self.config.freeze_fraction)
        self.scorer = FusionScorer(self.tokens.image_width, self.tokens.text_width, self.config).to(backbone.mean.device)
        # r = s·cos(CLIP image, CLIP text) + fusion: BLIP's matching head starts pretrained, ours from CLIP's own
        # similarity at its trained temperature, the fusion block learning the residual
        scale = float(backbone.model.logit_scale.exp()) if hasattr(backbone.model, "logit_scale") else 10.0
        self.similarity_scale = nn.Parameter(torch.tensor(scale, device=backbone.mean.device))
        self._token_cache: dict[str, torch.Tensor] = {}

    def tokenize(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts → (B, L) token ids on the model's device."""
        tokens = self.backbone.tokenizer(list(prompts))
        tokens = tokens["input_ids"] if isinstance(tokens, dict) else tokens
        return torch.as_tensor(tokens, device=self.backbone.mean.device)

    def raw_from_hidden(self, image_hidden: torch.Tensor, text_hidden: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Unstandardised scores from the frozen layers' outputs (what training caches) → (B,)."""
        return self.raw_from_tokens(self.tokens.image_top(image_hidden), self.tokens.text_top(text_hidden), token_ids)

    def raw_from_tokens(self, image: torch.Tensor, text: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Unstandardised scores from the backbone's final image and text tokens → (B,)."""
        similarity = (self.tokens.image_embed(image) * self.tokens.text_embed(text, token_ids)).sum(-1)
        return self.similarity_scale * similarity + self.scorer(image, text, token_ids)

    def bottom(self, prompts: Sequence[str], images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The frozen layers' outputs for images (B, 3, H, W) in [0, 1] and their prompts."""
        ids = self.tokenize(prompts)
        return self.tokens.image_bottom(self.backbone.preprocess(images)), self.tokens.text_bottom(ids), ids

    def raw_score(self, prompts: Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """Unstandardised scores (B,), differentiable with respect to ``images``."""
        return self.raw_from_hidden(*self.bottom(prompts, images))

    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) standardised rewards (≈ N(0, 1) on the training images).

        Differentiable with respect to ``images`` (for ReFL); wrap in ``torch.no_grad()`` to only score."""
        prompts = check_score_inputs(prompts, images)
        self.scorer.eval()
        self.tokens.eval()
        return (self.raw_score(prompts, images) - self.config.mean) / self.config.std

    def score_sets(self, prompt_sets: Sequence[Sequence[str]], images: torch.Tensor) -> torch.Tensor:
        """The image tower runs once per image; the text tower, fusion and MLP once per (image, prompt) pair."""
        rows, flat = set_rows(prompt_sets, images)
        self.scorer.eval()
        self.tokens.eval()
        image = self.tokens.image_top(self.tokens.image_bottom(self.backbone.preprocess(images)))
        ids = self.tokenize(flat)
        raw = self.raw_from_tokens(image[rows.to(image.device)], self.tokens.text_top(self.tokens.text_bottom(ids)), ids)
        return (raw - self.config.mean) / self.config.std

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every weight that training changes: fusion, MLP, similarity scale and the backbone's top layers."""
        state = {f"scorer.{k}": v for k, v in self.scorer.state_dict().items()}
        state["similarity_scale"] = self.similarity_scale
        state.update({f"clip.{k}": v for k, v in self.tokens.trainable_state().items()})
        return {k: v.detach() for k, v in state.items()}

    def load_trainable_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Inverse of :meth:`trainable_state` (checks that every trained backbone layer is there)."""
        self.scorer.load_state_dict({k[len("scorer."):]: v for k, v in state.items() if k.startswith("scorer.")})
        self.similarity_scale.data.copy_(state["similarity_scale"])
        clip_state = {k[len("clip."):]: v for k, v in state.items() if k.startswith("clip.")}
        missing = set(self.tokens.trainable_state()) - set(clip_state)
        if missing:
            raise ValueError(f"the saved state lacks trained backbone layers {sorted(missing)[:3]}: saved with another "
                             "freeze_fraction or backbone?")
        self.tokens.model.load_state_dict(clip_state, strict=False)

    def save(self, path: str | Path) -> Path:
        """``reward_config.json`` + ``ranking_reward.safetensors`` (fusion, MLP and the backbone's trained layers)."""
        return write_saved(path, self.name, asdict(self.config), self.trainable_state(), WEIGHTS_FILE)

    @classmethod
    def load(cls, path: str | Path, clip: Any = None, device: str = "auto") -> "RankingReward":
        """Read a reward saved by :meth:`save`; the backbone named in its config is loaded and its top layers replaced."""
        config, state = read_saved(path, "ranking", WEIGHTS_FILE)
        config = RankingRewardConfig(**config)
        reward = cls(_own_backbone(clip if clip is not None else config.clip, device), config)
        reward.load_trainable_state({k: v.to(reward.backbone.mean.device) for k, v in state.items()})
        return reward.eval()


def _own_backbone(clip: Any, device: str) -> ClipBackbone:
    """A backbone whose open_clip model this reward owns (its top layers train), loaded afresh by name."""
    if isinstance(clip, str):
        return ClipBackbone.from_name(clip, device)
    raise TypeError(f"the ranking reward loads its own copy of the CLIP (its top layers train): pass the CLIP's "
                    f"name or directory as a string, got {type(clip).__name__}")


@register("imagereward", loader=RankingReward.load)
def imagereward(path: str | Path | None = None, clip: str | None = None, device: str = "auto", **config) -> RankingReward:
    """A saved ranking reward from ``path``, or an untrained one on ``clip`` (default ``"shapes-clip"``)."""
    if path is not None:
        return RankingReward.load(path, clip=clip, device=device)
    name = clip or "shapes-clip"
    return RankingReward(_own_backbone(name, device), RankingRewardConfig(clip=name, **config))


# ---------------------------------------------------------------- training

@dataclass
class RankingTrainConfig:
    """Hyper-parameters of ranking-reward training (ours for ShapesWorld; official: lr 1e-5, batch 64, 70 % frozen)."""

    epochs: int = 20                 # passes over the pairs
    batch_size: int = 16             # rankings per step (all their pairs; official: 64 pairs)
    learning_rate: float = 3e-4      # fusion block and MLP (AdamW)
    backbone_lr_scale: float = 0.3   # the backbone's trainable layers use learning_rate × this
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.backbone_lr_scale < 0:
            raise ValueError("epochs and batch_size must be >= 1, learning_rate > 0, backbone_lr_scale >= 0")


def _cached_bottom(reward: RankingReward, pairs: PairIndex, images: torch.Tensor,
                   batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frozen-layer outputs of every image and every distinct prompt, computed once."""
    with torch.no_grad():
        image_hidden = torch.cat([reward.tokens.image_bottom(reward.backbone.preprocess(images[i : i + batch_size]))
                                  for i in range(0, len(images), batch_size)])
        vocab = sorted(set(pairs.prompts))
        ids = reward.tokenize(vocab)
        text_hidden = reward.tokens.text_bottom(ids)
    lookup = {p: i for i, p in enumerate(vocab)}
    prompt_of = torch.tensor([lookup[p] for p in pairs.prompts], device=ids.device)
    return image_hidden, text_hidden, ids, prompt_of


def _cached_scores(reward: RankingReward, cached: tuple, batch_size: int = 256) -> torch.Tensor:
    """Unstandardised scores (N,) of every cached image under its prompt, in eval mode and without gradient."""
    image_hidden, text_hidden, ids, prompt_of = cached
    reward.eval()
    with torch.no_grad():
        return torch.cat([reward.raw_from_hidden(image_hidden[i : i + batch_size], text_hidden[prompt_of[i : i + batch_size]],
                                                 ids[prompt_of[i : i + batch_size]])
                          for i in range(0, len(image_hidden), batch_size)])


def _pair_accuracy(reward: RankingReward, cached: tuple, pairs: PairIndex) -> float:
    """Share of ``pairs`` the reward orders right, from cached frozen-layer outputs."""
    raw = _cached_scores(reward, cached)
    win, lose = pairs.win.to(raw.device), pairs.lose.to(raw.device)
    return float((raw[win] > raw[lose]).float().mean())


def fit_ranking_reward(reward: RankingReward, rankings: Sequence, images: Mapping[str, torch.Tensor],
                       config: RankingTrainConfig | None = None, progress: bool = True,
                       val_rankings: Sequence | None = None, val_images: Mapping[str, torch.Tensor] | None = None
                       ) -> list[dict[str, float]]:
    """Train ``reward`` on every ordered pair of ``rankings`` (``Ranking`` records), then standardise its scores.

    ``images`` maps each ranked item id to a float (3, H, W) image in [0, 1]. With ``val_rankings`` (other
    prompts' rankings, images in ``val_images``) the weights of the epoch with the best validation pair accuracy
    are kept — epoch −1, the untrained CLIP similarity, included — i.e. early stopping. Returns per-epoch loss
    and pair accuracies; sets ``reward.config.mean``/``std`` from the training images' raw scores."""
    import copy

    from tqdm.auto import trange

    config = config or RankingTrainConfig()
    pairs = PairIndex.from_rankings(rankings, images)
    val = None
    if val_rankings is not None:
        val_pairs = PairIndex.from_rankings(val_rankings, val_images)
        val = (_cached_bottom(reward, val_pairs, stack_images(val_images, val_pairs.item_ids)), val_pairs)
    device = reward.backbone.mean.device
    stacked = stack_images(images, pairs.item_ids)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    image_hidden, text_hidden, ids, prompt_of = _cached_bottom(reward, pairs, stacked)
    backbone_params = [p for p in reward.tokens.parameters() if p.requires_grad]
    groups = [{"params": list(reward.scorer.parameters()) + [reward.similarity_scale], "lr": config.learning_rate}]
    if backbone_params and config.backbone_lr_scale > 0:
        groups.append({"params": backbone_params, "lr": config.learning_rate * config.backbone_lr_scale})
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    win, lose, group = pairs.win.to(device), pairs.lose.to(device), pairs.group.to(device)
    n_groups = int(group.max()) + 1
    history, best = [], None
    if val is not None:
        best = (_pair_accuracy(reward, *val), -1, copy.deepcopy(reward.trainable_state()))
        history.append({"epoch": -1, "loss": float("nan"), "pair_accuracy": float("nan"), "val_pair_accuracy": best[0]})
    for epoch in trange(config.epochs, desc="ranking reward", disable=not progress):
        reward.train()
        order = torch.randperm(n_groups, generator=gen).to(device)
        total, correct = 0.0, 0.0
        for start in range(0, n_groups, config.batch_size):
            # a batch of rankings: each of their images is scored once, the loss covers all their pairs
            mask = torch.isin(group, order[start : start + config.batch_size])
            items, inverse = torch.unique(torch.cat([win[mask], lose[mask]]), return_inverse=True)
            t = prompt_of[items]
            r = reward.raw_from_hidden(image_hidden[items], text_hidden[t], ids[t])
            r_win, r_lose = r[inverse[: int(mask.sum())]], r[inverse[int(mask.sum()):]]
            loss = pairwise_loss(r_win, r_lose)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(r_win)
            correct += float((r_win > r_lose).sum())
        history.append({"epoch": epoch, "loss": total / len(pairs), "pair_accuracy": correct / len(pairs)})
        if val is not None:
            history[-1]["val_pair_accuracy"] = _pair_accuracy(reward, *val)
            if history[-1]["val_pair_accuracy"] > best[0]:
                best = (history[-1]["val_pair_accuracy"], epoch, copy.deepcopy(reward.trainable_state()))
    if best is not None:
        reward.load_trainable_state(best[2])
        reward.config.best_epoch = best[1]
    raw = _cached_scores(reward, (image_hidden, text_hidden, ids, prompt_of))
    reward.config.mean, reward.config.std = float(raw.mean()), float(raw.std().clamp_min(1e-6))
    if not math.isfinite(reward.config.mean):
        raise FloatingPointError("ranking reward training diverged: non-finite scores")
    return history
