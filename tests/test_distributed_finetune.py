"""Data-parallel fine-tuning (finetune.distributed): every method on 2 CPU processes (gloo) gives one process's result.

One launch (accelerate's notebook_launcher, forked) runs every method's few steps on both processes; the same function
runs once in this process; each test compares one method. Both runs use SGD for AdamW, whose sign-like first step
would magnify float noise on weights with ~zero gradient into ~1% of the update. Tolerances: each weight within 3e-4 of
the largest weight change plus 4 float32 ulps of itself (the gaps are 1–4 ulps; DDPO's small update made one ulp at a
weight near 1 exceed 3e-4 of it), logged losses within 2e-4 relative (DDPO's
second round samples from the updated policy and normalises by small reward stds)."""
import json
from pathlib import Path

import pytest
import torch

from feedbacklab.finetune import (DDPOConfig, PreferenceConfig, ReFLConfig, RewardWeightedConfig, ddpo_finetune,
                                  distributed, preference_finetune, refl_finetune, reward_weighted_finetune)

from conftest import new_tiny_pipe
from test_preference import _pairs

torch.set_num_threads(1)

PROMPTS = ["two red circles on a white background", "one blue square on a black background"]
PROCESSES = 2
PARAM_TOL = 3e-4   # of the largest parameter change ...
PARAM_ULPS = 4     # ... plus this many float32 ulps of the weight
LOSS_TOL = 2e-4    # relative (and 1e-6 absolute)


def _images(n, seed=1):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _brightness(images, prompts):
    return images.mean((1, 2, 3))


def _unet(pipe):
    return {k: v.detach().clone() for k, v in pipe.unet.state_dict().items()}


def _run_all(out: Path, generator_dir: Path, captioner) -> dict:
    """Every method's few steps, on this process; the methods write to ``out/<method>-rank<r>``."""
    rank = distributed.rank()
    res = {}
    # 5 samples in batches of 4: the last batch has 1 (one process gets none); a 0 reward is skipped
    prompts = [PROMPTS[i % 2] for i in range(5)]
    cfg = RewardWeightedConfig(beta=0.5, kl_beta=1.0, epochs=1, batch_size=4, pretrain_batch_size=2, learning_rate=1e-2,
                               device="cpu")
    r = reward_weighted_finetune(new_tiny_pipe(), _images(5), prompts, torch.tensor([1.0, 0.0, 0.7, 0.0, 0.3]),
                                 _images(4, seed=2), PROMPTS * 2, cfg, out / f"reward_weighted-rank{rank}", progress=False)
    res["reward_weighted"] = {"params": _unet(r.pipe), "history": r.history, "checkpoint": r.checkpoint}

    cfg = ReFLConfig(num_inference_steps=4, t_min=2, t_max=3, guidance_scale=4.0, steps=2, batch_size=2,
                     pretrain_batch_size=2, beta=1.0, lambda_refl=1.0, phi=10.0, learning_rate=1e-2, device="cpu")
    r = refl_finetune(new_tiny_pipe(), PROMPTS, lambda p, im: _brightness(im, p), _images(2), PROMPTS, cfg,
                      out / f"refl-rank{rank}", progress=False)
    res["refl"] = {"params": _unet(r.pipe), "history": r.history, "checkpoint": r.checkpoint}

    cfg = DDPOConfig(num_inference_steps=4, guidance_scale=4.0, rounds=2, samples_per_round=8, sample_batch_size=4,
                     train_batch_size=4, stat_min_count=2, stat_buffer_size=8, kl_coef=0.5, learning_rate=1e-2, device="cpu",
                     mixed_precision="no")
    r = ddpo_finetune(new_tiny_pipe(), PROMPTS, _brightness, cfg, out / f"ddpo-rank{rank}", progress=False)
    res["ddpo"] = {"params": _unet(r.pipe), "history": [{k: v for k, v in row.items() if not k.endswith("_s")}
                                                        for row in r.history], "checkpoint": r.checkpoint}

    for method in ("dense-dpo", "sft"):
        cfg = PreferenceConfig(method=method, steps=2, batch_size=4, log_every=1, learning_rate=1e-2, device="cpu")
        r = preference_finetune(captioner, _pairs(8), cfg, progress=False)
        res[method] = {"params": {k: v.clone() for k, v in r.captioner.model.state_dict().items()},
                       "history": [{k: v for k, v in row.items() if k != "wall_s"} for row in r.history]}

    # filtered fine-tuning through the command line, on the same inputs
    data = out / f"filtered-data-rank{rank}.pt"
    torch.save({"images": _images(4), "prompts": PROMPTS * 2, "keep": torch.tensor([0, 1, 3]),
                "pretrain_images": _images(2, seed=2), "pretrain_prompts": PROMPTS}, data)
    config = out / f"filtered-config-rank{rank}.json"
    config.write_text(json.dumps({"beta": 1.0, "epochs": 2, "batch_size": 2, "pretrain_batch_size": 2,
                                  "learning_rate": 1e-2, "device": "cpu"}))
    distributed.main(["filtered", "--generator", str(generator_dir), "--data", str(data), "--config", str(config),
                      "--output", str(out / "filtered-cli")])

    if distributed.world_size() > 1:  # a global batch of 3 does not split over 2 processes
        pipe = new_tiny_pipe()
        before = _unet(pipe)
        try:
            reward_weighted_finetune(pipe, _images(4), PROMPTS * 2, torch.ones(4), config=RewardWeightedConfig(
                beta=0.0, batch_size=3, device="cpu"), output_dir=out / f"bad-rank{rank}", progress=False)
        except ValueError as exc:
            res["error"] = {"message": str(exc), "untouched": all(torch.equal(before[k], v) for k, v in _unet(pipe).items())}
    return res


def _worker(out: Path, generator_dir: Path) -> None:
    from feedbacklab.models import load_captioner

    res = _run_all(out, generator_dir, load_captioner("shapes-captioner-crop", device="cpu"))
    torch.save({**res, "world_size": distributed.world_size()}, out / f"result-rank{distributed.rank()}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(one process's results, each rank's results of the 2-process launch, the launch's and the single run's dirs)."""
    from accelerate.state import AcceleratorState

    from feedbacklab.models import load_captioner

    generator_dir = tmp_path_factory.mktemp("generator")
    new_tiny_pipe().save_pretrained(generator_dir)
    multi, single = tmp_path_factory.mktemp("multi"), tmp_path_factory.mktemp("single")
    AcceleratorState._reset_state(reset_partial_state=True)  # an Accelerator of another test here would block the launch
    with pytest.MonkeyPatch.context() as mp:  # SGD for AdamW in both runs: the forked processes inherit it
        mp.setattr(torch.optim, "AdamW", lambda params, lr, **kw: torch.optim.SGD(params, lr=lr))
        distributed.launch(_worker, multi, generator_dir, num_processes=PROCESSES)
        one = _run_all(single, generator_dir, load_captioner("shapes-captioner-crop", device="cpu"))
    ranks = [torch.load(multi / f"result-rank{r}.pt", weights_only=False) for r in range(PROCESSES)]
    return one, ranks, multi, single


def _max_gap(a: dict, b: dict, start: dict) -> tuple[float, float]:
    """(largest |a − b| in excess of PARAM_ULPS float32 ulps of the weight, largest |a − start|: the update)."""
    keys = [k for k in a if a[k].is_floating_point()]
    ulp = torch.finfo(torch.float32).eps
    gap = max(((a[k] - b[k]).abs() - PARAM_ULPS * ulp * b[k].abs()).clamp(min=0).max().item() for k in keys)
    return gap, max((a[k] - start[k]).abs().max().item() for k in keys)


def _start(name: str) -> dict:
    if name in ("dense-dpo", "sft"):
        from feedbacklab.models import load_captioner

        return load_captioner("shapes-captioner-crop", device="cpu").model.state_dict()
    return _unet(new_tiny_pipe())


def _losses(history: list[dict]) -> list[float]:
    """The logged losses and rewards; not DPO's reward_accuracy, the share of margins above 0: at the first step the
    policy is the reference and each margin is float noise (~1e-8) that falls on either side of 0 (reward_margin,
    compared, is the continuous figure)."""
    return [row[k] for row in history for k in sorted(row)
            if ("loss" in k or k.startswith("reward")) and k != "reward_accuracy"]


@pytest.mark.parametrize("name", ["reward_weighted", "refl", "ddpo", "dense-dpo", "sft"])
def test_two_processes_train_as_one(runs, name):
    one, ranks, _, _ = runs
    assert ranks[0]["world_size"] == PROCESSES
    assert all(torch.equal(v, ranks[1][name]["params"][k]) for k, v in ranks[0][name]["params"].items())
    gap, update = _max_gap(ranks[0][name]["params"], one[name]["params"], _start(name))
    assert update > 0 and gap <= PARAM_TOL * update, f"{name}: max |Δθ| {gap:.3g} vs update {update:.3g}"
    for r in ranks:
        assert len(r[name]["history"]) == len(one[name]["history"])
        assert _losses(r[name]["history"]) == pytest.approx(_losses(one[name]["history"]), rel=LOSS_TOL, abs=1e-6,
                                                                nan_ok=True)


@pytest.mark.parametrize("name", ["reward_weighted", "refl", "ddpo"])
def test_only_the_main_process_writes_the_checkpoint(runs, name):
    one, ranks, multi, single = runs
    written = sorted(p.relative_to(multi / f"{name}-rank0") for p in (multi / f"{name}-rank0").rglob("*"))
    assert written == sorted(p.relative_to(single / f"{name}-rank0") for p in (single / f"{name}-rank0").rglob("*"))
    assert not (multi / f"{name}-rank1").exists()  # rank 1 was given its own output_dir and wrote nothing
    assert ranks[1][name]["checkpoint"] == multi / f"{name}-rank1"  # ... and returns where the main process wrote


def test_command_line_filtered_finetune_on_two_processes(runs):
    from diffusers import UNet2DConditionModel

    _, _, multi, single = runs
    a, b = (UNet2DConditionModel.from_pretrained(d / "filtered-cli" / "unet").state_dict() for d in (multi, single))
    gap, update = _max_gap(a, b, _unet(new_tiny_pipe()))
    assert update > 0 and gap <= PARAM_TOL * update
    history = [json.loads((d / "filtered-cli" / "history.json").read_text()) for d in (multi, single)]
    assert len(history[0]) == 4 and _losses(history[0]) == pytest.approx(_losses(history[1]), rel=LOSS_TOL,
                                                                                   abs=1e-6, nan_ok=True)


def test_indivisible_batch_fails_before_any_work(runs):
    _, ranks, multi, _ = runs
    for r in ranks:
        assert "batch_size = 3 must be divisible by the number of processes (2)" in r["error"]["message"]
        assert r["error"]["untouched"]
    assert not list(multi.glob("bad-rank*"))


def test_more_cuda_processes_than_gpus_is_refused_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="4 processes were launched on device 'cuda' but 2 GPU"):
        distributed.setup(torch.device("cuda"))
    distributed.check_devices(torch.device("cpu"))  # gloo on CPU: any number of processes


def test_launch_refuses_a_bad_process_count():
    with pytest.raises(ValueError, match="num_processes must be a positive integer"):
        distributed.launch(print, num_processes=0)
