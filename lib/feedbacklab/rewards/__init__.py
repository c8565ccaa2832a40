"""Reward models behind one interface: ``load_reward(name).score(prompts, images) -> (B,) tensor``.

Registered: ``clip-score`` (cosine similarity of CLIP embeddings, the baseline), ``clip-mlp``
(Lee et al. 2023: frozen CLIP embeddings → MLP, trained with ``L_mse + λ·L_pc``), ``imagereward``
(ImageReward-style: CLIP tokens fused by cross-attention, trained on rankings), ``aesthetic`` (image-only
MLP on CLIP embeddings, trained on the same pairs), ``rahf`` (RAHF's predicted scores), ``ImageReward-v1.0`` (the official model, with the
optional ``image-reward`` package), the real hub models ``PickScore_v1`` (Pick-a-Pic's CLIP-H), ``HPSv2.1`` /
``HPSv2`` (HPS's OpenCLIP ViT-H-14) and ``blip2-itm`` (BLIP-2's match probability or ITC cosine; local copies
load offline), and the image-only ``jpeg-compressibility`` / ``jpeg-incompressibility`` /
``brightness`` (DDPO's rewards with a known truth), and ``oracle`` (the world's truth: the perfect-reward diagnostic). A directory saved by a reward's ``save`` loads by path. Images are
float (B, 3, H, W) in [0, 1]. ``textnorm`` wraps any reward (Kim et al. 2024: a softmax over contrastive
prompts); ``RewardEnsemble`` / ``ensemble_scores`` combine K rewards (the mean, or mean − λ·spread).
"""
from .aesthetic import AestheticConfig, AestheticReward, fit_aesthetic
from .base import RewardModel, check_score_inputs
from .blip2_itm import Blip2ITM
from .clip_backbone import ClipBackbone
from .clip_mlp import (ClipMLPConfig, ClipMLPReward, RewardTrainConfig, fit_reward, mse_loss,
                       prompt_classification_loss, reward_loss)
from .clip_score import ClipScore
from .ensemble import RewardEnsemble, combine_rewards, ensemble_scores, normalize_rewards
from .hpsv2 import HPSv2
from .image_stats import Brightness, JpegCompressibility
from .imagereward_official import OfficialImageReward
from .oracle import OracleReward
from .pairwise import PairIndex, pairwise_loss
from .pickscore import PickScore
from .rahf import RAHFReward
from .ranking import RankingReward, RankingRewardConfig, RankingTrainConfig, fit_ranking_reward
from .registry import list_rewards, load_reward, register
from .textnorm import TextNorm

__all__ = [
    "AestheticConfig", "AestheticReward", "fit_aesthetic",
    "RewardModel", "check_score_inputs", "ClipBackbone", "ClipScore", "ClipMLPConfig", "ClipMLPReward",
    "RewardTrainConfig", "fit_reward", "mse_loss", "prompt_classification_loss", "reward_loss",
    "Blip2ITM", "HPSv2", "PickScore",
    "Brightness", "JpegCompressibility", "OfficialImageReward", "OracleReward", "PairIndex", "pairwise_loss", "RAHFReward",
    "RankingReward", "RankingRewardConfig", "RankingTrainConfig", "fit_ranking_reward",
    "list_rewards", "load_reward", "register",
    "RewardEnsemble", "combine_rewards", "ensemble_scores", "normalize_rewards", "TextNorm",
]
