"""Generator fine-tuning from feedback. ``reward_weighted``: Lee et al. (2023)'s reward-weighted likelihood;
``refl``: Xu et al. (2023)'s ReFL, backpropagating a differentiable reward through one denoising step;
``ddpo``: Black et al. (2023)'s DDPO_IS with an optional KL penalty to the base (``ddim_logprob``: its DDIM policy step;
``trajectories``: sampling with recorded chains; ``stat_tracking``: per-prompt advantages);
``filtered``: RichHF's score-filtered fine-tuning on the best own samples;
``preference``: DPO, RLHF-V's dense DPO and SFT for captioners / VLMs on corrected responses;
``data``: the pre-training pairs (D_pre) that keep a fine-tuned model close to its prior;
``distributed``: every method data-parallel under ``accelerate launch`` / ``notebook_launcher``, same config and result."""
from .data import pretraining_pairs
from .ddim_logprob import DDIMStepOutput, ddim_step_with_logprob, gaussian_step_kl
from .ddpo import DDPOConfig, as_reward_fn, ddpo_finetune, ddpo_loss
from .filtered import filtered_finetune, select_best_per_prompt, select_random_per_prompt, select_top_k_per_prompt
from .preference import (PreferenceConfig, PreferencePair, PreferenceResult, dense_logprob, dpo_loss,
                         pairs_from_corrections, preference_finetune, preference_loss, sft_examples)
from .refl import ReFLConfig, refl_finetune, refl_loss
from .stat_tracking import PerPromptStatTracker
from .trajectories import Trajectories, sample_trajectories
from .reward_weighted import (FinetuneResult, RewardWeightedConfig, denoising_loss, encode_latents, encode_prompts,
                              reward_weighted_finetune, reward_weighted_loss, sample_latents, save_finetuned)

__all__ = ["PreferenceConfig", "PreferencePair", "PreferenceResult", "dense_logprob", "dpo_loss",
           "pairs_from_corrections", "preference_finetune", "preference_loss", "sft_examples", "DDIMStepOutput", "ddim_step_with_logprob", "gaussian_step_kl", "DDPOConfig", "as_reward_fn", "ddpo_finetune",
           "ddpo_loss", "PerPromptStatTracker", "Trajectories", "sample_trajectories",
           "filtered_finetune", "select_best_per_prompt", "select_random_per_prompt", "select_top_k_per_prompt", "FinetuneResult", "ReFLConfig", "RewardWeightedConfig", "denoising_loss", "encode_latents",
           "encode_prompts", "pretraining_pairs", "refl_finetune", "refl_loss", "reward_weighted_finetune",
           "reward_weighted_loss", "sample_latents", "save_finetuned"]
