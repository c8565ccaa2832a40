"""DDPO (Black et al. 2023): the DDIM policy step, trajectories, advantages, the clipped objective, the KL penalty,
errors before work, determinism, and a round that raises a toy reward."""
import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from feedbacklab.finetune import (DDPOConfig, PerPromptStatTracker, as_reward_fn, ddim_step_with_logprob, ddpo_finetune,
                                  ddpo_loss, gaussian_step_kl, sample_trajectories)
from feedbacklab.finetune.stat_tracking import batch_advantages

from conftest import new_tiny_pipe

torch.set_num_threads(1)

PROMPTS = ["two red circles on a white background", "one blue square on a black background"]
SHIPPED = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
               prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=False, steps_offset=1,
               timestep_spacing="trailing")  # data/models/shapes-sd/scheduler
SD15 = dict(beta_end=0.012, beta_schedule="scaled_linear", beta_start=0.00085, clip_sample=False,
            prediction_type="epsilon", set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
SCHEDULERS = {"shipped-v-trailing-zero-snr": SHIPPED, "sd15-eps-leading": SD15,
              "x0-clipped": {**SD15, "prediction_type": "sample", "clip_sample": True}}


def _scheduler(kind: str, steps: int = 10) -> DDIMScheduler:
    s = DDIMScheduler(**SCHEDULERS[kind])
    s.set_timesteps(steps)
    return s


def _inputs(seed=0, b=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, 8, 8, generator=g), torch.randn(b, 4, 8, 8, generator=g)


def _diffusers_step(sched, out, t, x, eta, noise):
    """diffusers' own DDIM step; where it is NaN only because ``sqrt(1 - ᾱ_prev - σ_t²)`` of an exact 0 rounded
    below 0 (η = 1 at the zero-SNR first step, on some CPUs), the same step with that direction term at 0."""
    ref = sched.step(out, t, x, eta=eta, variance_noise=noise).prev_sample
    if not torch.isnan(ref).any():
        return ref
    prev_t = int(t) - sched.config.num_train_timesteps // sched.num_inference_steps
    a_prev = sched.alphas_cumprod[prev_t] if prev_t >= 0 else sched.final_alpha_cumprod
    var = eta ** 2 * sched._get_variance(int(t), prev_t)
    assert abs(float(1 - a_prev - var)) < 1e-6, "diffusers' step is NaN for another reason than rounding"
    x0 = sched.step(out, t, x, eta=eta, variance_noise=noise).pred_original_sample
    return a_prev.sqrt() * x0 + var.sqrt() * noise


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_step_matches_the_schedulers_own_step_and_a_normal_log_density(kind, eta):
    sched = _scheduler(kind)
    for t in sched.timesteps[[0, 4, -1]]:
        x, out = _inputs(int(t))
        step = ddim_step_with_logprob(sched, out, t, x, eta, generator=torch.Generator().manual_seed(1))
        # the mean is diffusers' step with zero noise; the sample is diffusers' step with the same noise
        zero = _diffusers_step(sched, out, t, x, eta, torch.zeros_like(x))
        torch.testing.assert_close(step.mean, zero, atol=1e-5, rtol=1e-5)
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(step.prev_sample, _diffusers_step(sched, out, t, x, eta, noise), atol=1e-5, rtol=1e-5)
        prev_t = int(t) - sched.config.num_train_timesteps // sched.num_inference_steps
        assert step.std.flatten()[0].item() == pytest.approx(eta * sched._get_variance(int(t), prev_t).sqrt().item(), rel=1e-5)
        ref = torch.distributions.Normal(step.mean, step.std).log_prob(step.prev_sample).sum((1, 2, 3))
        torch.testing.assert_close(step.log_prob, ref, atol=1e-3, rtol=1e-5)
        mean_red = ddim_step_with_logprob(sched, out, t, x, eta, prev_sample=step.prev_sample, reduction="mean").log_prob
        torch.testing.assert_close(mean_red, ref / x[0].numel(), atol=1e-5, rtol=1e-5)


def test_per_sample_timesteps_equal_separate_steps():
    sched = _scheduler("shipped-v-trailing-zero-snr")
    x, out = _inputs(b=3)
    prev = torch.randn_like(x)
    ts = sched.timesteps[[0, 5, 9]]
    batched = ddim_step_with_logprob(sched, out, ts, x, 1.0, prev_sample=prev)
    for i, t in enumerate(ts):
        single = ddim_step_with_logprob(sched, out[i:i + 1], t, x[i:i + 1], 1.0, prev_sample=prev[i:i + 1])
        torch.testing.assert_close(batched.log_prob[i:i + 1], single.log_prob)
        torch.testing.assert_close(batched.mean[i:i + 1], single.mean)


def test_step_log_prob_is_differentiable_and_prev_sample_is_detached():
    sched = _scheduler("sd15-eps-leading")
    x, out = _inputs()
    out.requires_grad_(True)
    step = ddim_step_with_logprob(sched, out, sched.timesteps[3], x, 1.0, prev_sample=torch.randn_like(x))
    step.log_prob.sum().backward()
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_step_errors_name_the_problem():
    sched = _scheduler("shipped-v-trailing-zero-snr")
    x, out = _inputs()
    with pytest.raises(ValueError, match="eta must be > 0"):
        ddim_step_with_logprob(sched, out, sched.timesteps[0], x, 0.0)
    with pytest.raises(ValueError, match="set_timesteps"):
        ddim_step_with_logprob(DDIMScheduler(**SHIPPED), out, 999, x, 1.0)
    with pytest.raises(ValueError, match="not both"):
        ddim_step_with_logprob(sched, out, 999, x, 1.0, prev_sample=x, generator=torch.Generator())
    with pytest.raises(ValueError, match="one per sample"):
        ddim_step_with_logprob(sched, out, torch.tensor([999, 899]), x, 1.0)
    alpha_one = DDIMScheduler(**{**SD15, "set_alpha_to_one": True})
    alpha_one.set_timesteps(10)
    with pytest.raises(ValueError, match="sigma_t = 0 .* set_alpha_to_one=False"):
        ddim_step_with_logprob(alpha_one, out, alpha_one.timesteps[-1], x, 1.0)


def test_step_agrees_with_trls_ddim_step_with_logprob():
    trl_sd = pytest.importorskip("trl.models.modeling_sd_base", reason="trl 0.23.1 (the dev extra) is not installed")
    for kind in ("shipped-v-trailing-zero-snr", "sd15-eps-leading"):
        sched = _scheduler(kind)
        x, out = _inputs(b=4)
        prev = torch.randn_like(x)
        ts = sched.timesteps[[0, 3, 6, 9]]
        theirs = trl_sd.scheduler_step(sched, out, ts, x, eta=1.0, prev_sample=prev)
        ours = ddim_step_with_logprob(sched, out, ts, x, 1.0, prev_sample=prev, reduction="mean")
        # trl's step is NaN where diffusers' is (the zero-SNR first step at η = 1, see _diffusers_step): compare
        # the others, and ours must stay finite there
        ok = ~torch.isnan(theirs.log_probs)
        assert ok.sum() >= 3 and torch.isfinite(ours.log_prob).all()
        torch.testing.assert_close(ours.log_prob[ok], theirs.log_probs[ok], atol=1e-5, rtol=1e-5)


def test_kl_is_zero_for_the_reference_and_the_closed_form_otherwise():
    mean, std = torch.randn(2, 4, 3, 3), torch.full((2, 1, 1, 1), 0.3)
    assert torch.equal(gaussian_step_kl(mean, mean, std), torch.zeros(2))
    other = mean + 0.1 * torch.randn_like(mean)
    kl = gaussian_step_kl(mean, other, std)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std.expand_as(mean)),
                                            torch.distributions.Normal(other, std.expand_as(mean))).sum((1, 2, 3))
    assert (kl > 0).all()
    torch.testing.assert_close(kl, ref)
    torch.testing.assert_close(gaussian_step_kl(mean, other, std, "mean"), ref / 36)


def test_clipped_objective_on_a_hand_computed_case():
    old = torch.zeros(5)
    log_prob = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5, 1.0]))
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 10.0])      # the last is clipped to +5
    loss, info = ddpo_loss(log_prob, old, adv, clip_range=0.2, adv_clip_max=5.0)
    # per item max(−Aρ, −A·clip(ρ)): −1.2, 1.5, −0.5, 0.8, −5
    assert loss.item() == pytest.approx((-1.2 + 1.5 - 0.5 + 0.8 - 5.0) / 5)
    assert info["clipfrac"].item() == pytest.approx(4 / 5)
    assert info["approx_kl"].item() == pytest.approx(0.5 * (2 * math.log(1.5) ** 2 + 2 * math.log(0.5) ** 2) / 5)
    lp = log_prob.clone().requires_grad_(True)
    ddpo_loss(lp, old, adv, 0.2, 5.0)[0].backward()
    # only unclipped items carry gradient: d(−Aρ)/d log π = −Aρ for items 2 (ρ=.5, A=1), 4 (ρ=1.5, A=−1), 5 (ρ=1, A=5)
    assert lp.grad.tolist() == pytest.approx([0.0, 1.5 / 5, -0.5 / 5, 0.0, -5.0 / 5])


def test_per_prompt_advantages_on_a_hand_made_case():
    tracker = PerPromptStatTracker(buffer_size=4, min_count=2)
    # first round: each prompt has 1 reward (< min_count) → the batch's mean 2 and std 1 (population)
    adv = tracker.update(["a", "b"], [1.0, 3.0])
    np.testing.assert_allclose(adv, [-1 / (1 + 1e-6), 1 / (1 + 1e-6)])
    # second round: both have 2 → their own buffers a=[1, 2], b=[3, 5]
    adv = tracker.update(["a", "b"], [2.0, 5.0])
    np.testing.assert_allclose(adv, [(2 - 1.5) / (0.5 + 1e-6), (5 - 4) / (1 + 1e-6)])
    assert tracker.stats()["b"] == {"count": 2, "mean": 4.0, "std": 1.0}
    tracker.update(["a"] * 4, [9.0, 9.0, 9.0, 9.0])          # the buffer keeps the last 4 only
    assert tracker.stats()["a"]["mean"] == 9.0
    np.testing.assert_allclose(batch_advantages([1.0, 3.0]), [-1 / (1 + 1e-8), 1 / (1 + 1e-8)])
    with pytest.raises(ValueError, match="min_count"):
        PerPromptStatTracker(buffer_size=4, min_count=8)


def test_per_prompt_advantages_equal_trls():
    trl_utils = pytest.importorskip("trl.trainer.utils", reason="trl 0.23.1 (the dev extra) is not installed")
    ours, theirs = PerPromptStatTracker(8, 4), trl_utils.PerPromptStatTracker(8, 4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        prompts = list(rng.choice(["x", "y", "z"], 6))
        rewards = rng.normal(size=6)
        np.testing.assert_allclose(ours.update(prompts, rewards), theirs.update(prompts, rewards))


def test_trajectories_follow_the_pipelines_own_sampler(pipe):
    """Same seed, same components: the recorded chain decodes to the image ``pipe(..., eta=1)`` makes."""
    prompt = PROMPTS[0]
    traj = sample_trajectories(pipe, [prompt], torch.Generator().manual_seed(3), num_inference_steps=4,
                               guidance_scale=4.0, eta=1.0, batch_size=1)
    ref = pipe(prompt, num_inference_steps=4, guidance_scale=4.0, eta=1.0, generator=torch.Generator().manual_seed(3),
               output_type="pt").images
    torch.testing.assert_close(traj.images, ref.float(), atol=1e-4, rtol=1e-4)
    assert traj.latents.shape[:2] == (1, 5) and traj.log_probs.shape == (1, 4)
    torch.testing.assert_close(traj.timesteps, pipe.scheduler.timesteps)


def test_recorded_log_probs_are_recomputed_exactly_under_the_same_weights(pipe):
    from feedbacklab.finetune.trajectories import guided_output, text_embeddings

    cache = {}
    traj = sample_trajectories(pipe, PROMPTS, torch.Generator().manual_seed(0), 4, 4.0, 1.0, 2, text_cache=cache)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(4)
    cond = torch.stack([cache[p] for p in PROMPTS])
    with torch.no_grad():
        for j, t in enumerate(traj.timesteps):
            out = guided_output(pipe.unet, traj.latents[:, j], t, cond, cache[""].expand_as(cond), 4.0)
            lp = ddim_step_with_logprob(sched, out, t, traj.latents[:, j], 1.0, prev_sample=traj.latents[:, j + 1]).log_prob
            torch.testing.assert_close(lp, traj.log_probs[:, j], atol=1e-4, rtol=1e-5)
    assert set(text_embeddings(pipe, PROMPTS, cache)) == set(PROMPTS) | {""}


def _config(**kw):
    return DDPOConfig(**{"num_inference_steps": 4, "guidance_scale": 4.0, "rounds": 1, "samples_per_round": 8,
                         "sample_batch_size": 4, "train_batch_size": 4, "stat_min_count": 2, "stat_buffer_size": 8,
                         "device": "cpu", "mixed_precision": "no", **kw})


def _brightness(images, prompts):
    return images.mean((1, 2, 3))


def _without_times(history):
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in history]


def test_config_rejects_bad_settings_with_the_reason():
    with pytest.raises(ValueError, match="eta must be > 0"):
        _config(eta=0.0)
    with pytest.raises(ValueError, match="sample_batch_size .* must divide samples_per_round"):
        _config(samples_per_round=10, sample_batch_size=4)
    with pytest.raises(ValueError, match="train_batch_size × gradient_accumulation_steps"):
        _config(samples_per_round=8, train_batch_size=4, gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="skip_final_steps"):
        _config(skip_final_steps=4)
    with pytest.raises(ValueError, match="timestep_fraction"):
        _config(timestep_fraction=0.0)
    with pytest.raises(ValueError, match="kl_coef"):
        _config(kl_coef=-1.0)
    with pytest.raises(ValueError, match="logprob_reduction"):
        _config(logprob_reduction="max")


def test_bad_pipeline_or_reward_fails_before_any_work(pipe):
    from diffusers import DDPMScheduler

    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    ddpm = new_tiny_pipe()
    ddpm.scheduler = DDPMScheduler.from_config(ddpm.scheduler.config)
    with pytest.raises(TypeError, match="DDIMScheduler.from_config"):
        ddpo_finetune(ddpm, PROMPTS, _brightness, _config(), progress=False)
    with pytest.raises(ValueError, match=r"one number per image: shape \(2,\)"):
        ddpo_finetune(pipe, PROMPTS, lambda images, prompts: images.mean(), _config(), progress=False)
    with pytest.raises(ValueError, match="NaN or inf"):
        ddpo_finetune(pipe, PROMPTS, lambda images, prompts: images.mean((1, 2, 3)) * float("nan"), _config(), progress=False)
    with pytest.raises(TypeError, match="RewardModel or a callable"):
        ddpo_finetune(pipe, PROMPTS, "brightness", _config(), progress=False)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        ddpo_finetune(pipe, [], _brightness, _config(), progress=False)
    alpha_one = new_tiny_pipe()
    alpha_one.scheduler = DDIMScheduler.from_config({**alpha_one.scheduler.config, "set_alpha_to_one": True})
    with pytest.raises(ValueError, match="sigma_t = 0"):
        ddpo_finetune(alpha_one, PROMPTS, _brightness, _config(), progress=False)
    assert all(torch.equal(before[k], v) for k, v in pipe.unet.state_dict().items())


def test_reward_adapters_accept_models_plain_and_ddpo_style_functions():
    from feedbacklab.rewards import load_reward

    images = torch.rand(3, 3, 16, 16)
    expected = images.mean((1, 2, 3))
    for reward in (load_reward("brightness"), _brightness, lambda images, prompts, metadata: (images.mean((1, 2, 3)), {})):
        torch.testing.assert_close(as_reward_fn(reward)(images, ["p"] * 3), expected)


def test_same_seed_same_history_and_reward_queries_counted(pipe):
    hist = ddpo_finetune(pipe, PROMPTS, _brightness, _config(rounds=2), progress=False).history
    again = ddpo_finetune(new_tiny_pipe(), PROMPTS, _brightness, _config(rounds=2), progress=False).history
    assert _without_times(hist) == _without_times(again)
    assert [row["reward_queries"] for row in hist] == [8, 16]
    assert all(math.isnan(row["kl"]) for row in hist)                  # λ = 0 and not tracked: no reference pass
    assert all(np.isfinite(row[k]) for row in hist for k in ("loss", "approx_kl", "clipfrac", "reward_std"))


def test_timesteps_per_pass_gives_the_same_update(pipe, monkeypatch):
    """Batching several recorded steps into one UNet call only changes speed: the same gradient. (SGD in place
    of AdamW, whose sign-like first step would magnify float noise on parameters with ~zero gradient.)"""
    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, **kw: torch.optim.SGD(params, lr=lr))
    a = ddpo_finetune(pipe, PROMPTS, _brightness, _config(), progress=False).pipe.unet
    b = ddpo_finetune(new_tiny_pipe(), PROMPTS, _brightness, _config(timesteps_per_pass=4), progress=False).pipe.unet
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=name)


def test_skipped_final_steps_get_no_gradient(pipe, monkeypatch):
    """With skip_final_steps=1 the update never evaluates the last recorded step's timestep."""
    import feedbacklab.finetune.ddpo as ddpo_mod

    seen = []
    real = ddpo_mod.guided_output

    def spy(unet, latents, timesteps, *args):
        seen.extend(torch.as_tensor(timesteps).reshape(-1).tolist())
        return real(unet, latents, timesteps, *args)

    monkeypatch.setattr(ddpo_mod, "guided_output", spy)
    ddpo_finetune(pipe, PROMPTS, _brightness, _config(skip_final_steps=1), progress=False)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(4)
    assert seen and int(sched.timesteps[-1]) not in seen and set(seen) == set(sched.timesteps[:-1].tolist())


def test_kl_penalty_is_tracked_and_zero_before_the_first_update(pipe):
    # one optimizer step per round: in round 0 the policy equals the base when its KL is measured
    res = ddpo_finetune(pipe, PROMPTS, _brightness, _config(rounds=2, samples_per_round=4, sample_batch_size=4,
                                                             kl_coef=0.5), progress=False)
    assert res.history[0]["kl"] == pytest.approx(0.0, abs=1e-12)
    assert res.history[1]["kl"] > 0


def test_lora_ddpo_trains_only_the_adapter_and_uses_it_off_as_the_reference(pipe):
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    res = ddpo_finetune(pipe, PROMPTS, _brightness, _config(rounds=2, use_lora=True, kl_coef=0.1, learning_rate=1e-2),
                        progress=False)
    lora = {k: v for k, v in res.pipe.unet.state_dict().items() if "lora" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())
    assert all(torch.equal(base[k], v) for k, v in res.pipe.unet.state_dict().items() if k in base)
    assert res.history[1]["kl"] > 0


def test_one_round_raises_a_toy_reward_the_pipeline_can_satisfy():
    """Brightness on the shipped generator, with prompts that leave the background free: one round of 32 samples
    and 4 inner epochs, judged on fresh samples from the same noise (+0.04 to +0.18 over seeds 0-2 when written)."""
    from feedbacklab.models.generator import load_pipeline

    pipe = load_pipeline("data/models/shapes-sd")
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a red circle", "two blue squares"]

    def mean_brightness(p):
        traj = sample_trajectories(p, prompts * 8, torch.Generator().manual_seed(123), 4, 4.0, 1.0, 16)
        return traj.images.mean().item()

    before = mean_brightness(pipe)
    res = ddpo_finetune(pipe, prompts, _brightness, _config(samples_per_round=32, sample_batch_size=16,
                                                            train_batch_size=16, inner_epochs=4, learning_rate=3e-4,
                                                            clip_range=0.2), progress=False)
    assert res.history[0]["reward_queries"] == 32
    assert mean_brightness(res.pipe) > before + 0.02


def test_one_update_from_the_same_trajectories_equals_trls_trainer(tmp_path, monkeypatch):
    """The algorithm is trl's: the same samples, advantages and settings give the same UNet after one update.

    One train batch holding every sample and every step, so the update is one accumulated gradient whatever the
    step order; plain SGD in both (Adam's sign-like first step would magnify float noise)."""
    trl = pytest.importorskip("trl", reason="trl 0.23.1 (the dev extra) is not installed")
    import accelerate
    from diffusers import StableDiffusionPipeline

    from feedbacklab.finetune.stat_tracking import batch_advantages

    monkeypatch.setattr(torch.optim, "AdamW", lambda params, lr, **kw: torch.optim.SGD(params, lr=lr))
    new_tiny_pipe().save_pretrained(tmp_path / "pipe")
    ours = StableDiffusionPipeline.from_pretrained(tmp_path / "pipe")
    ours.set_progress_bar_config(disable=True)
    seen = {}
    cfg = _config(samples_per_round=4, sample_batch_size=4, train_batch_size=4, per_prompt_stat_tracking=False,
                  learning_rate=0.05, clip_range=0.2)
    ddpo_finetune(ours, PROMPTS, _brightness, cfg, progress=False, callback=lambda r, row, traj: seen.setdefault("traj", traj))
    traj = seen["traj"]

    accelerate.PartialState(cpu=True)
    theirs = trl.DefaultDDPOStableDiffusionPipeline(str(tmp_path / "pipe"), use_lora=False)
    trainer = trl.DDPOTrainer(trl.DDPOConfig(num_epochs=1, log_with=None, mixed_precision="no", sample_num_steps=4,
                                             sample_eta=1.0, sample_guidance_scale=4.0, sample_batch_size=4,
                                             sample_num_batches_per_epoch=1, train_batch_size=4, train_learning_rate=0.05,
                                             train_clip_range=0.2, train_adv_clip_max=5.0, train_max_grad_norm=1.0,
                                             per_prompt_stat_tracking=False,
                                             project_kwargs={"project_dir": str(tmp_path / "trl")}),
                              lambda *a: (torch.zeros(4), {}), lambda: (PROMPTS[0], {}), theirs)
    theirs.scheduler.set_timesteps(4)
    embeds = ours.encode_prompt(traj.prompts, "cpu", 1, False)[0]
    negative = ours.encode_prompt([""] * 4, "cpu", 1, False)[0]
    sample = {"prompt_embeds": embeds, "negative_prompt_embeds": negative, "timesteps": traj.timesteps.repeat(4, 1),
              "latents": traj.latents[:, :-1], "next_latents": traj.latents[:, 1:], "log_probs": traj.log_probs,
              "advantages": torch.as_tensor(batch_advantages(_brightness(traj.images, traj.prompts).numpy()), dtype=torch.float32)}
    theirs.unet.train()
    trainer._train_batched_samples(0, 0, 0, [sample])
    base = StableDiffusionPipeline.from_pretrained(tmp_path / "pipe").unet
    moved = 0
    for (name, a), b, c in zip(ours.unet.named_parameters(), theirs.unet.parameters(), base.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4, msg=name)
        moved += int(not torch.equal(a, c))
    assert moved > 0


@pytest.mark.parametrize("kind", sorted(SCHEDULERS))
def test_nan_safe_ddim_steps_give_diffusers_step_without_its_nan(kind):
    from feedbacklab.finetune.ddim_logprob import nan_safe_ddim_steps

    sched = _scheduler(kind)
    for t in sched.timesteps[[0, 4, -1]]:
        x, out = _inputs(int(t))
        gens = lambda: [torch.Generator().manual_seed(10 + i) for i in range(len(x))]  # noqa: E731
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in gens()])
        with nan_safe_ddim_steps(sched):
            safe = sched.step(out, t, x, eta=1.0, generator=gens()).prev_sample
            deterministic = sched.step(out, t, x, eta=0.0).prev_sample
        assert torch.isfinite(safe).all()
        # diffusers' step with the same per-generator noise (NaN-free reference where it rounds below 0)
        torch.testing.assert_close(safe, _diffusers_step(sched, out, t, x, 1.0, noise), atol=1e-5, rtol=1e-5)
        assert torch.equal(deterministic, sched.step(out, t, x, eta=0.0).prev_sample)
    assert "step" not in vars(sched)  # the class's own step is back


def test_sample_images_with_eta_is_finite_and_matches_the_pipeline_where_it_is(pipe):
    from diffusers import DDIMScheduler

    from feedbacklab.feedback_sets import SamplerConfig, sample_images

    pipe.scheduler = DDIMScheduler(**SHIPPED)
    x = sample_images(pipe, PROMPTS, [3, 4], SamplerConfig(num_inference_steps=10, guidance_scale=4.0, eta=1.0),
                      batch_size=2, progress=False)
    assert torch.isfinite(x).all()
    raw = pipe(prompt=PROMPTS, generator=[torch.Generator().manual_seed(s) for s in (3, 4)], output_type="pt",
               num_inference_steps=10, guidance_scale=4.0, eta=1.0).images
    if torch.isfinite(raw).all():  # this CPU rounds the first step's direction term to >= 0: diffusers is exact
        torch.testing.assert_close(x, raw.clamp(0, 1), atol=1e-4, rtol=0)
