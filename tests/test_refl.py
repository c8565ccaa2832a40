"""ReFL (Xu et al. 2023): frozen parts, LoRA, reward gradient, hinge, timestep schedule, errors, determinism."""
import pytest
import torch

from feedbacklab.finetune import ReFLConfig, refl_finetune, refl_loss

from conftest import new_tiny_pipe

torch.set_num_threads(1)

PROMPTS = ["two red circles on a white background", "one blue square on a black background"]


def _brightness(prompts, images):  # (B, 3, H, W) in [0, 1] → (B,), differentiable
    return images.mean((1, 2, 3))


def _config(**kw):
    """A few cheap steps on the tiny pipeline: 4 DDIM steps, gradient step at index 2 or 3, guidance 4."""
    return ReFLConfig(**{"num_inference_steps": 4, "t_min": 2, "t_max": 3, "guidance_scale": 4.0, "steps": 2,
                         "batch_size": 2, "pretrain_batch_size": 2, "beta": 0.0, "device": "cpu", **kw})


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _same(before, module):
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


@torch.no_grad()
def _mean_brightness(pipe):
    gen = torch.Generator().manual_seed(0)
    return pipe(PROMPTS * 2, num_inference_steps=4, guidance_scale=4.0, generator=gen, output_type="pt").images.mean().item()


def test_refl_loss_is_a_hinge_at_phi():
    r = torch.tensor([0.5, 1.5, 3.0], requires_grad=True)
    loss = refl_loss(r, phi=2.0, lambda_refl=0.1)
    assert loss.item() == pytest.approx(0.1 * (1.5 + 0.5 + 0.0) / 3)
    loss.backward()
    assert r.grad.tolist() == pytest.approx([-0.1 / 3, -0.1 / 3, 0.0])


def test_full_finetune_trains_only_the_unet_with_the_pretraining_term(pipe):
    vae, text, unet = _state(pipe.vae), _state(pipe.text_encoder), _state(pipe.unet)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    result = refl_finetune(pipe, PROMPTS, _brightness, images, PROMPTS, _config(beta=1.0, learning_rate=1e-3),
                           progress=False)
    assert len(result.history) == 2 and all(h["pretrain_loss"] > 0 and h["refl_loss"] > 0 for h in result.history)
    assert all(h["loss"] == pytest.approx(h["refl_loss"] + h["pretrain_loss"]) for h in result.history)
    assert _same(vae, pipe.vae) and _same(text, pipe.text_encoder)
    assert not _same(unet, pipe.unet)


def test_lora_trains_only_the_adapter_and_saves_it(pipe, tmp_path):
    before = _state(pipe.unet)
    vae = _state(pipe.vae)
    cfg = _config(use_lora=True, lora_rank=2, learning_rate=1e-2, lambda_refl=1.0, phi=10.0)
    result = refl_finetune(pipe, PROMPTS, _brightness, config=cfg, output_dir=tmp_path / "lora", progress=False)
    after = pipe.unet.state_dict()
    base = {k.replace(".base_layer", ""): v for k, v in after.items() if "lora" not in k}
    assert base.keys() == before.keys() and all(torch.equal(before[k], base[k]) for k in before)
    assert any(not torch.equal(v, torch.zeros_like(v)) for k, v in after.items() if "lora_B" in k)
    assert _same(vae, pipe.vae)
    assert (result.checkpoint / "pytorch_lora_weights.safetensors").is_file()


def test_reward_gradient_moves_samples_in_the_rewarded_direction():
    """Rewarding brightness brightens the pipeline's own samples; rewarding darkness darkens them."""
    base = _mean_brightness(new_tiny_pipe())
    moved = {}
    for sign in (1.0, -1.0):
        pipe = new_tiny_pipe()
        cfg = _config(steps=4, lambda_refl=1.0, phi=10.0, learning_rate=3e-3, weight_decay=0.0)
        history = refl_finetune(pipe, PROMPTS, lambda p, im: sign * _brightness(p, im), config=cfg,
                                progress=False).history
        assert all(h["refl_loss"] > 0 for h in history)
        moved[sign] = _mean_brightness(pipe) - base
    assert moved[1.0] > 0.02 and moved[-1.0] < -0.02


def test_rewards_above_phi_give_zero_loss_and_no_update(pipe):
    before = _state(pipe.unet)
    cfg = _config(steps=2, phi=2.0, lambda_refl=1.0, learning_rate=1e-2, ema_decay=0.99)
    history = refl_finetune(pipe, PROMPTS, lambda p, im: _brightness(p, im) + 5.0, config=cfg, progress=False).history
    assert all(h["refl_loss"] == 0.0 and h["reward"] > 2.0 for h in history)
    assert _same(before, pipe.unet)


def test_gradient_step_runs_at_scheduler_timesteps_t_after_t_sampling_steps(pipe):
    """t no-grad UNet calls along the DDIM schedule, then one call with gradient at ``timesteps[t]`` (not t itself)."""
    from diffusers import DDIMScheduler

    calls = []
    pipe.unet.register_forward_pre_hook(lambda module, args: calls.append((torch.is_grad_enabled(), int(args[1]))))
    cfg = _config(steps=3, num_inference_steps=6, t_min=1, t_max=4, guidance_scale=1.0)
    history = refl_finetune(pipe, PROMPTS, _brightness, config=cfg, progress=False).history
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(6)
    expected = []
    for h in history:
        assert 1 <= h["t"] <= 4
        expected += [(False, int(t)) for t in sched.timesteps[: h["t"]]] + [(True, int(sched.timesteps[h["t"]]))]
    assert calls == expected


def test_errors_are_raised_before_any_work():
    for bad in (dict(t_min=-1), dict(t_max=40), dict(t_min=35, t_max=31), dict(num_inference_steps=10)):
        with pytest.raises(ValueError, match=r"0 <= t_min <= t_max < num_inference_steps"):
            ReFLConfig(**bad)
    with pytest.raises(ValueError, match="guidance_scale"):
        ReFLConfig(guidance_scale=0.5)
    with pytest.raises(ValueError, match="mixed_precision"):
        ReFLConfig(mixed_precision="fp8")
    no_pipe = object()  # validation must fail before the pipeline is touched
    with pytest.raises(ValueError, match="D_pre"):
        refl_finetune(no_pipe, PROMPTS, _brightness, config=ReFLConfig(beta=1.0))
    with pytest.raises(ValueError, match="prompts is empty"):
        refl_finetune(no_pipe, [], _brightness, config=ReFLConfig(beta=0.0))
    with pytest.raises(TypeError, match="callable"):
        refl_finetune(no_pipe, PROMPTS, "image-reward", config=ReFLConfig(beta=0.0))
    with pytest.raises(ValueError, match="one prompt each"):
        refl_finetune(no_pipe, PROMPTS, _brightness, torch.rand(3, 3, 32, 32), PROMPTS)


def test_reward_must_be_a_differentiable_vector(pipe):
    with pytest.raises(ValueError, match="differentiable"):
        refl_finetune(pipe, PROMPTS, lambda p, im: torch.ones(len(p)), config=_config(steps=1), progress=False)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        refl_finetune(pipe, PROMPTS, lambda p, im: im.mean(), config=_config(steps=1), progress=False)


def test_same_seed_gives_identical_weights():
    states = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        pipe = new_tiny_pipe()
        refl_finetune(pipe, PROMPTS, _brightness, config=_config(seed=seed, learning_rate=1e-3), progress=False)
        states[run] = _state(pipe.unet)
    assert all(torch.equal(states["a"][k], states["b"][k]) for k in states["a"])
    assert not all(torch.equal(states["a"][k], states["c"][k]) for k in states["a"])
