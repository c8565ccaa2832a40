"""Data-parallel fine-tuning: every method of this package on N processes, same config, same result as one process.

A launcher (``accelerate launch``, accelerate's ``notebook_launcher``, ``torchrun``) sets ``WORLD_SIZE``; the methods
then join accelerate's process group (``PartialState``: gloo on CPU, NCCL on CUDA, one GPU per process) and at every
step each process draws the whole global batch and its random numbers exactly as one process would, runs the model
on its own contiguous :func:`shard` of it only, and :func:`gather` s the per-sample values the loss and the logs
need. So every process computes the *global* loss, with a gradient into its own shard only: :func:`sum_gradients`
before the optimizer step adds up those parts into the single-process gradient, and every process takes the same
step and keeps the same weights. DDPO gathers the rewards for its per-prompt advantages (as ddpo-pytorch does), and
each process trains on the samples it drew. Only the main process writes (checkpoints, logs). Without a launcher
nothing changes: the shard is the whole batch, gather and sums are identities.

Global batch sizes must split evenly over the processes (``check_divisible``: a ``ValueError`` before any work).
Results equal one process's up to float rounding (summation order); with dropout on (``PreferenceConfig``'s
``disable_dropout=False``) each process draws its own masks.

From a notebook (forked processes: ``fn`` and its arguments need no pickling; CUDA must not be used before)::

    from feedbacklab.finetune.distributed import launch
    launch(reward_weighted_finetune, pipe, images, prompts, rewards, config=cfg, output_dir="runs/rw", num_processes=2)

From the command line (``--multi_gpu`` selects accelerate's torchrun launcher, on CPU-only machines too)::

    accelerate launch --multi_gpu --num_processes 2 -m feedbacklab.finetune reward_weighted \\
        --generator shapes-sd --data inputs.pt --config cfg.json --output runs/rw

``--data`` is a ``torch.save`` d dict of the method's inputs by argument name (reward_weighted: ``model_images``,
``model_prompts``, ``rewards``, ``pretrain_images``, ``pretrain_prompts``; filtered: ``images``, ``prompts``,
``keep``, …; refl / ddpo: ``prompts``, …, with ``--reward NAME``; preference: ``pairs``, with ``--captioner NAME``);
``--config`` a JSON of the method's config fields. ``--output`` gets the checkpoint and ``history.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

_WORLD_SIZE_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")  # accelerate's list


def world_size() -> int:
    """How many processes train together: the process group's size, or what the launcher set (1: none)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(next((os.environ[k] for k in _WORLD_SIZE_ENV if os.environ.get(k)), 1))


def rank() -> int:
    """This process's index (0: the main process, the one that writes)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", 0))


def is_main_process() -> bool:
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the launch's process group when there are several processes; returns this process's device
    (``cuda:LOCAL_RANK`` when ``device`` is CUDA, else ``device``)."""
    if world_size() == 1:
        return device
    check_devices(device)
    from accelerate import PartialState

    state = PartialState(cpu=device.type == "cpu")
    if not dist.is_initialized():
        raise RuntimeError(f"{world_size()} processes were launched but accelerate's state was created before the "
                           "launch, without a process group: create no Accelerator / PartialState before launching")
    return state.device if device.type == "cuda" else device


def check_devices(device: torch.device) -> None:
    """Refuse, before any work, a CUDA launch with more processes than visible GPUs (one GPU per process)."""
    if device.type != "cuda":
        return
    gpus = torch.cuda.device_count()
    if world_size() > gpus:
        raise ValueError(f"{world_size()} processes were launched on device 'cuda' but {gpus} GPU(s) are visible; "
                         f"launch at most {gpus} processes (one GPU each), or use device='cpu' (gloo)")


def check_divisible(**sizes: int) -> None:
    """A ``ValueError`` when a global batch size does not split evenly over the processes (call before any work)."""
    n = world_size()
    bad = [f"{name} = {size}" for name, size in sizes.items() if size % n]
    if bad:
        raise ValueError(f"{', '.join(bad)} must be divisible by the number of processes ({n}): each process "
                         "computes an equal share of every global batch")


def shard(n: int) -> slice:
    """This process's contiguous part of a global batch of ``n`` items (parts differ by at most one item)."""
    size, r = world_size(), rank()
    q, extra = divmod(n, size)
    start = r * q + min(r, extra)
    return slice(start, start + q + (r < extra))


def selected_shard(selected: torch.Tensor) -> slice:
    """This process's part of the items a (n,) bool mask selects from a batch: the selected ones in its shard."""
    part, selected = shard(len(selected)), selected.cpu()
    return slice(int(selected[:part.start].sum()), int(selected[:part.stop].sum()))


def _comm_device() -> torch.device:
    """Where a collective runs: the current GPU for NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def gather(local: torch.Tensor, n: int, part: slice | None = None) -> torch.Tensor:
    """The global (n, ...) tensor whose rows ``part`` (default ``shard(n)``) are this process's ``local``, the
    others the other processes'; the gradient flows into ``local`` only."""
    if world_size() == 1:
        return local
    part = shard(n) if part is None else part
    full = torch.zeros((n, *local.shape[1:]), dtype=local.dtype, device=_comm_device())
    full[part] = local.detach().to(full.device)
    dist.all_reduce(full)  # every row is non-zero on one process only: the sum is a copy, exact
    full = full.to(local.device)
    return torch.cat([full[:part.start], local, full[part.stop:]])


def sum_across(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the processes; the gradient flows into this process's term only."""
    if world_size() == 1:
        return value
    return gather(value.unsqueeze(0), world_size(), slice(rank(), rank() + 1)).sum(0)


def sum_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Sum the gradients of ``params`` over the processes (one all-reduce), before clipping and the optimizer step.

    A parameter with no gradient on any process keeps none, so the optimizer skips it as it would on one process."""
    if world_size() == 1:
        return
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
    flat = torch.cat([g.reshape(-1) for g in grads] + [has_grad])
    dist.all_reduce(flat)
    has_grad, start = flat[-len(params):], 0
    for p, present in zip(params, has_grad.tolist()):
        p.grad = flat[start:start + p.numel()].view_as(p) if present else None
        start += p.numel()


def barrier() -> None:
    """Wait for every process (e.g. until the main one has written a checkpoint)."""
    if world_size() > 1:
        dist.barrier()


# ------------------------------------------------------------------ launching

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_process(fn: Callable[..., Any], threads: int, args: tuple, kwargs: dict) -> None:
    torch.set_num_threads(threads)
    fn(*args, **kwargs)


def launch(fn: Callable[..., Any], *args: Any, num_processes: int = 2, port: int | None = None, **kwargs: Any) -> None:
    """Run ``fn(*args, **kwargs)`` on ``num_processes`` processes with accelerate's ``notebook_launcher`` (forked;
    ``port``: the rendezvous port, default a free one). This process's torch threads are split between them.
    ``fn``'s return value is dropped: the methods write their results (``output_dir``) on the main process."""
    from accelerate import notebook_launcher

    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be a positive integer, got {num_processes!r}")
    threads = max(1, torch.get_num_threads() // num_processes)
    notebook_launcher(_in_process, (fn, threads, args, kwargs), num_processes=num_processes,
                      use_port=str(port or _free_port()))


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (module docstring): one fine-tuning method on inputs from files."""
    from feedbacklab import finetune as ft
    from feedbacklab.device import resolve_device

    methods = {"reward_weighted": (ft.reward_weighted_finetune, ft.RewardWeightedConfig),
               "filtered": (ft.filtered_finetune, ft.RewardWeightedConfig), "refl": (ft.refl_finetune, ft.ReFLConfig),
               "ddpo": (ft.ddpo_finetune, ft.DDPOConfig), "preference": (ft.preference_finetune, ft.PreferenceConfig)}
    parser = argparse.ArgumentParser(prog="accelerate launch --multi_gpu --num_processes N -m feedbacklab.finetune",
                                     description="Data-parallel fine-tuning of a generator or captioner.")
    parser.add_argument("method", choices=sorted(methods))
    parser.add_argument("--data", type=Path, required=True, help="torch.save'd dict of the method's inputs by argument name")
    parser.add_argument("--config", type=Path, help="JSON of the method's config fields (default: its defaults)")
    parser.add_argument("--output", type=Path, required=True, help="checkpoint and history.json (main process)")
    parser.add_argument("--generator", default="shapes-sd", help="models.load_generator name or directory")
    parser.add_argument("--captioner", default="shapes-captioner-crop", help="preference: models.load_captioner name")
    parser.add_argument("--reward", help="refl / ddpo: rewards.load_reward name or directory")
    args = parser.parse_args(argv)
    if args.method in ("refl", "ddpo") and args.reward is None:
        parser.error(f"{args.method} needs --reward")
    fn, config_cls = methods[args.method]
    config = config_cls(**(json.loads(args.config.read_text()) if args.config else {}))
    with torch.serialization.safe_globals([ft.PreferencePair]):
        data = torch.load(args.data, weights_only=True)
    if args.method == "preference":
        from feedbacklab.models import load_captioner

        result = fn(load_captioner(args.captioner, device="cpu"), config=config, **data)
        if is_main_process():
            result.captioner.save(args.output)
    else:
        from feedbacklab.models import load_generator

        if args.reward is not None:
            from feedbacklab.rewards import load_reward

            reward = load_reward(args.reward).to(setup(resolve_device(config.device))).requires_grad_(False)
            data["reward_fn" if args.method == "refl" else "reward"] = reward.score if args.method == "refl" else reward
        result = fn(load_generator(args.generator, device="cpu"), config=config, output_dir=args.output, **data)
    if is_main_process():
        (args.output / "history.json").write_text(json.dumps(result.history, indent=2))
