"""Reward models behind one interface: ``load_reward(name).score(prompts, images) -> (B,) tensor``.

Registered: ``clip-score`` (cosine similarity of CLIP embeddings, the baseline) and ``clip-mlp``
(Lee et al. 2023: frozen CLIP embeddings → MLP, trained with ``L_mse + λ·L_pc``). A directory saved
by a reward's ``save`` loads by path. Images are float (B, 3, H, W) in [0, 1].
"""
from .base import RewardModel, check_score_inputs
from .clip_backbone import ClipBackbone
from .clip_mlp import (ClipMLPConfig, ClipMLPReward, RewardTrainConfig, fit_reward, mse_loss,
                       prompt_classification_loss, reward_loss)
from .clip_score import ClipScore
from .registry import list_rewards, load_reward, register

__all__ = [
    "RewardModel", "check_score_inputs", "ClipBackbone", "ClipScore", "ClipMLPConfig", "ClipMLPReward",
    "RewardTrainConfig", "fit_reward", "mse_loss", "prompt_classification_loss", "reward_loss",
    "list_rewards", "load_reward", "register",
]
