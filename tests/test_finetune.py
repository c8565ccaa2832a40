"""Reward-weighted fine-tuning (Lee et al. 2023, Eq. 3): the weighted objective, frozen parts, LoRA, checkpoints."""
from types import SimpleNamespace

import pytest
import torch

from feedbacklab.finetune import (RewardWeightedConfig, denoising_loss, reward_weighted_finetune,
                                  reward_weighted_loss)

torch.set_num_threads(1)


@pytest.fixture()
def pipe():
    """An untrained tiny StableDiffusionPipeline (32 px, v-prediction) from the models builders."""
    from feedbacklab.models.generator import GeneratorConfig, build_pipeline

    torch.manual_seed(0)
    return build_pipeline(GeneratorConfig.tiny())


def _data(n=4):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=gen), [f"{w} red circles on a white background" for w in
                                                      ("two", "three", "four", "two")][:n]


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_weighted_loss_hand_computed_and_scales_each_sample():
    losses = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    rewards = torch.tensor([0.0, 1.0, 0.5])
    loss = reward_weighted_loss(losses, rewards, torch.tensor([4.0, 6.0]), beta=0.5)
    assert loss.item() == pytest.approx((0 + 2 + 1.5) / 3 + 0.5 * 5)
    loss.backward()
    assert losses.grad.tolist() == pytest.approx([0.0, 1 / 3, 0.5 / 3])  # ∂L/∂ℓ_i = r_i / B
    assert reward_weighted_loss(torch.tensor([2.0]), torch.tensor([0.25])).item() == pytest.approx(0.5)


def test_weighted_loss_errors():
    with pytest.raises(ValueError, match="must both be"):
        reward_weighted_loss(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="pre-training"):
        reward_weighted_loss(torch.ones(3), torch.ones(3), None, beta=1.0)


def test_denoising_loss_targets_epsilon_and_velocity():
    from diffusers import DDPMScheduler

    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    zero_unet = lambda x, t, encoder_hidden_states: SimpleNamespace(sample=torch.zeros_like(x))  # noqa: E731
    eps = DDPMScheduler(prediction_type="epsilon")
    assert torch.allclose(denoising_loss(zero_unet, eps, latents, None, noise, t), (noise ** 2).flatten(1).mean(1))
    v = DDPMScheduler(prediction_type="v_prediction")
    velocity = v.get_velocity(latents, noise, t)
    assert torch.allclose(denoising_loss(zero_unet, v, latents, None, noise, t), (velocity ** 2).flatten(1).mean(1))
    with pytest.raises(ValueError, match="prediction_type"):
        denoising_loss(zero_unet, DDPMScheduler(prediction_type="sample"), latents, None, noise, t)


def test_reward_scales_the_per_sample_gradient(pipe):
    """Same sample, noise and timestep: the gradient of r·ℓ is r times the gradient of ℓ."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    latents, noise, t = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.tensor([500])
    with torch.no_grad():
        text = pipe.encode_prompt(["two red circles on a white background"], "cpu", 1, False)[0]
    grads = []
    for r in (1.0, 0.25):
        pipe.unet.zero_grad()
        reward_weighted_loss(denoising_loss(pipe.unet, sched, latents, text, noise, t), torch.tensor([r])).backward()
        grads.append(torch.cat([p.grad.flatten() for p in pipe.unet.parameters() if p.grad is not None]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[1], 0.25 * grads[0], atol=1e-7)


def test_zero_reward_and_no_pretraining_term_leaves_the_unet_unchanged(pipe):
    images, prompts = _data()
    before = _state(pipe.unet)
    cfg = RewardWeightedConfig(beta=0.0, epochs=1, batch_size=2, device="cpu")
    reward_weighted_finetune(pipe, images, prompts, torch.zeros(4), config=cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())
    reward_weighted_finetune(pipe, images, prompts, torch.ones(4), config=cfg, progress=False)
    assert not all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())


def test_full_finetune_trains_only_the_unet_and_checkpoints(pipe, tmp_path):
    from diffusers import StableDiffusionPipeline

    images, prompts = _data()
    vae, text = _state(pipe.vae), _state(pipe.text_encoder)
    cfg = RewardWeightedConfig(beta=1.0, epochs=2, batch_size=2, pretrain_batch_size=2, device="cpu")
    result = reward_weighted_finetune(pipe, images, prompts, torch.tensor([1.0, 0.2, 0.7, 3.0]), images[:2],
                                      ["one blue square on a black background"] * 2, cfg, tmp_path / "ft",
                                      progress=False)
    assert len(result.history) == 4 and all(h["pretrain_loss"] > 0 for h in result.history)
    assert all(torch.equal(vae[k], v) for k, v in pipe.vae.state_dict().items())
    assert all(torch.equal(text[k], v) for k, v in pipe.text_encoder.state_dict().items())
    reloaded = StableDiffusionPipeline.from_pretrained(result.checkpoint, local_files_only=True)
    assert all(torch.equal(v, reloaded.unet.state_dict()[k]) for k, v in pipe.unet.state_dict().items())
    assert (result.checkpoint / "finetune_config.json").is_file()


def test_finetune_is_deterministic(tmp_path):
    from feedbacklab.models.generator import GeneratorConfig, build_pipeline

    images, prompts = _data()
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        p = build_pipeline(GeneratorConfig.tiny())
        cfg = RewardWeightedConfig(beta=0.5, epochs=1, batch_size=2, pretrain_batch_size=2, device="cpu", seed=3)
        reward_weighted_finetune(p, images, prompts, torch.rand(4, generator=torch.Generator().manual_seed(0)),
                                 images, prompts, cfg, progress=False)
        states.append(_state(p.unet))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_lora_trains_only_the_adapter(pipe, tmp_path):
    images, prompts = _data()
    before = _state(pipe.unet)
    cfg = RewardWeightedConfig(beta=0.0, epochs=2, batch_size=2, use_lora=True, lora_rank=2, learning_rate=1e-2,
                               device="cpu")
    result = reward_weighted_finetune(pipe, images, prompts, torch.ones(4), config=cfg,
                                      output_dir=tmp_path / "lora", progress=False)
    after = pipe.unet.state_dict()
    lora_keys = [k for k in after if "lora" in k]
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora" not in k}
    assert lora_keys and base.keys() == before.keys()
    assert all(torch.equal(before[k], base[k]) for k in before)  # base weights untouched
    assert any(not torch.allclose(after[k], torch.zeros_like(after[k])) for k in lora_keys if "lora_B" in k)
    assert (result.checkpoint / "pytorch_lora_weights.safetensors").is_file()


def test_input_and_config_errors(pipe):
    images, prompts = _data()
    with pytest.raises(ValueError, match="one image and one reward"):
        reward_weighted_finetune(pipe, images, prompts, torch.ones(3), config=RewardWeightedConfig(beta=0))
    with pytest.raises(ValueError, match="D_pre"):
        reward_weighted_finetune(pipe, images, prompts, torch.ones(4), config=RewardWeightedConfig(beta=1.0))
    with pytest.raises(ValueError, match="mixed_precision"):
        RewardWeightedConfig(mixed_precision="fp8")
    with pytest.raises(ValueError, match="beta"):
        RewardWeightedConfig(beta=-1)
    with pytest.raises(ValueError, match="reward_clip"):
        RewardWeightedConfig(reward_clip=(1.0, 0.0))


def test_pretraining_pairs_are_true_renders_of_seen_prompts():
    from feedbacklab import world
    from feedbacklab.finetune import pretraining_pairs
    from feedbacklab.models.data import to_uint8

    images, prompts = pretraining_pairs(6, seed=2, size=32)
    assert images.shape == (6, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert not any(world.is_unseen(world.parse(p)) for p in prompts)
    assert sum(world.judge(p, im).aligned for p, im in zip(prompts, to_uint8(images))) >= 5
    again, prompts2 = pretraining_pairs(6, seed=2, size=32)
    assert torch.equal(images, again) and prompts == prompts2


def test_timestep_range_limits_the_trained_noise_levels(pipe):
    seen = []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    images, prompts = _data()
    cfg = RewardWeightedConfig(beta=0.0, epochs=3, batch_size=2, timestep_range=(0.5, 0.75), device="cpu")
    reward_weighted_finetune(pipe, images, prompts, torch.ones(4), config=cfg, progress=False)
    t = torch.cat(seen)
    assert len(t) == 12 and t.min() >= 500 and t.max() < 750


def test_ema_returns_averaged_weights_between_start_and_raw_training(tmp_path):
    """With an EMA the result lies between the start and the raw weights (warm-up EMA, diffusers' EMAModel)."""
    from feedbacklab.models.generator import GeneratorConfig, build_pipeline

    images, prompts = _data()
    results = {}
    for ema in (None, 0.99):
        torch.manual_seed(0)
        p = build_pipeline(GeneratorConfig.tiny())
        start = _state(p.unet)
        cfg = RewardWeightedConfig(beta=0.0, epochs=4, batch_size=2, ema_decay=ema, learning_rate=1e-3, device="cpu")
        reward_weighted_finetune(p, images, prompts, torch.ones(4), config=cfg, progress=False)
        results[ema] = {k: v - start[k] for k, v in p.unet.state_dict().items() if v.is_floating_point()}
    raw, avg = (torch.cat([d[k].flatten() for k in sorted(d)]) for d in (results[None], results[0.99]))
    assert 0 < avg.norm() < raw.norm()


def test_ema_and_timestep_range_validation():
    with pytest.raises(ValueError, match="ema_decay"):
        RewardWeightedConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="timestep_range"):
        RewardWeightedConfig(timestep_range=(0.6, 0.4))


def _run(rewards=None, pretrain=False, **cfg_fields):
    """A fresh tiny pipeline (seed 0) fine-tuned on ``_data()``; returns (pipe, history, UNet forward count)."""
    from feedbacklab.models.generator import GeneratorConfig, build_pipeline

    torch.manual_seed(0)
    p = build_pipeline(GeneratorConfig.tiny())
    calls = []
    p.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    images, prompts = _data()
    cfg = RewardWeightedConfig(batch_size=2, pretrain_batch_size=2, device="cpu", **cfg_fields)
    result = reward_weighted_finetune(p, images, prompts, torch.ones(4) if rewards is None else rewards,
                                      images if pretrain else None, prompts if pretrain else None, cfg, progress=False)
    return p, result.history, len(calls)


def test_kl_off_is_the_plain_objective_without_a_copy_or_extra_forward(monkeypatch):
    """kl_beta = 0 (default or explicit): same weights and losses, no frozen copy, one forward per batch."""
    import math

    from feedbacklab.finetune import reward_weighted

    def no_copy(*args, **kwargs):
        raise AssertionError("kl_beta = 0 must not copy the UNet")

    monkeypatch.setattr(reward_weighted, "deepcopy", no_copy)
    rewards = torch.tensor([1.0, 0.0, 0.7, 0.3])
    runs = [_run(rewards, pretrain=True, beta=0.5, epochs=2, **extra) for extra in ({}, {"kl_beta": 0.0})]
    (p0, h0, n0), (p1, h1, n1) = runs
    assert all(torch.equal(v, p1.unet.state_dict()[k]) for k, v in p0.unet.state_dict().items())
    assert all(math.isnan(h["kl_loss"]) for h in h0 + h1)
    strip = lambda h: [{k: v for k, v in row.items() if k != "kl_loss"} for row in h]  # noqa: E731
    assert strip(h0) == strip(h1) and len(h0) == 4
    assert n0 == n1 == 8  # per step: one D_model and one D_pre forward, no base forward


def test_kl_term_is_zero_at_the_start_and_positive_once_the_unet_moves():
    _, history, _ = _run(beta=0.0, epochs=2, learning_rate=1e-3, ema_decay=None, kl_beta=2.0)
    assert history[0]["kl_loss"] < 1e-10  # the frozen copy equals the model before the first update (up to rounding)
    assert all(h["kl_loss"] > 0 for h in history[1:])
    assert all(h["loss"] == pytest.approx(h["weighted_model_loss"] + 2.0 * h["kl_loss"]) for h in history)


def test_large_kl_beta_keeps_the_unet_near_the_base(pipe):
    """Same seed and data: after training, the UNet's outputs on a fixed input stay closer to the base's (``pipe``,
    built with the same seed) with β_KL = 100 than with β_KL = 0."""
    c = pipe.unet.config
    x = torch.randn(2, c.in_channels, c.sample_size, c.sample_size, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([200, 700])
    with torch.no_grad():
        z = pipe.encode_prompt(["two red circles on a white background", ""], "cpu", 1, False)[0]
        base = pipe.unet(x, t, encoder_hidden_states=z).sample
    gaps = {}
    for kl_beta in (0.0, 100.0):
        tuned, _, _ = _run(beta=0.0, epochs=4, learning_rate=1e-3, ema_decay=None, kl_beta=kl_beta)
        with torch.no_grad():
            gaps[kl_beta] = ((tuned.unet(x, t, encoder_hidden_states=z).sample - base) ** 2).mean().item()
    assert 0 < gaps[100.0] < 0.5 * gaps[0.0]


def test_lora_with_kl_uses_the_disabled_adapter_as_base(pipe, monkeypatch):
    """LoRA + β_KL: no copy (the base is the UNet with its adapter off), base weights untouched, adapter trained and
    left enabled, kl_loss finite and 0 on the first step."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from feedbacklab.finetune import reward_weighted

    def no_copy(*args, **kwargs):
        raise AssertionError("LoRA needs no copy of the UNet")

    monkeypatch.setattr(reward_weighted, "deepcopy", no_copy)
    images, prompts = _data()
    before = _state(pipe.unet)
    cfg = RewardWeightedConfig(beta=0.0, epochs=2, batch_size=2, use_lora=True, lora_rank=2, learning_rate=1e-2,
                               kl_beta=1.0, device="cpu")
    history = reward_weighted_finetune(pipe, images, prompts, torch.ones(4), config=cfg, progress=False).history
    after = pipe.unet.state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora" not in k}
    assert base.keys() == before.keys() and all(torch.equal(before[k], base[k]) for k in before)
    assert any(not torch.allclose(v, torch.zeros_like(v)) for k, v in after.items() if "lora_B" in k)
    assert not any(m.disable_adapters for m in pipe.unet.modules() if isinstance(m, BaseTunerLayer))
    assert history[0]["kl_loss"] < 1e-10 and all(0 < h["kl_loss"] < float("inf") for h in history[1:])


def test_kl_beta_validation():
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="kl_beta"):
            RewardWeightedConfig(kl_beta=bad)


def test_select_top_k_per_prompt_weights_are_min_max_within_the_selection():
    import numpy as np

    from feedbacklab.finetune import select_top_k_per_prompt

    prompts = ["a", "a", "a", "b", "b"]
    idx, w = select_top_k_per_prompt([0.1, 0.9, 0.5, 2.0, 2.0], prompts, k=2)
    assert idx.tolist() == [1, 2, 3, 4]                  # a: 0.9, 0.5; b: a tie keeps both, in order
    np.testing.assert_allclose(w, [1.0, 0.0, 1.0, 1.0])   # a scaled to [0, 1]; b tied: all 1
    with pytest.raises(ValueError, match="positive integer"):
        select_top_k_per_prompt([0.1], ["a"], k=0)
    with pytest.raises(ValueError, match="N = 2 prompts"):
        select_top_k_per_prompt([0.1], ["a", "b"], k=1)
