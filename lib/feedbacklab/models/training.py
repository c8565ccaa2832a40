"""The optimiser step shared by the CLIP and captioner training loops: linear learning-rate warm-up, a running
loss, and a throughput log line every ``log_every`` steps."""
from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch


class WarmupSteps:
    """``opt`` steps with lr ramped linearly to ``lr`` over ``warmup`` steps, then constant or (``cosine``) decayed
    to 0 at ``steps`` (Loshchilov & Hutter 2017); ``running()`` says whether to go on."""

    def __init__(self, opt: torch.optim.Optimizer, lr: float, warmup: int, steps: int, batch_size: int, label: str,
                 log: Callable[[str], None], log_every: int, time_budget_s: float | None = None, cosine: bool = False):
        self.opt, self.lr, self.warmup, self.steps, self.batch_size = opt, lr, warmup, steps, batch_size
        self.cosine = cosine
        self.label, self.log, self.log_every, self.time_budget_s = label, log, log_every, time_budget_s
        self.step, self.loss_avg, self.t_start = 0, float("nan"), time.time()

    def running(self) -> bool:
        """Fewer than ``steps`` steps done and the time budget (if any) not spent."""
        return self.step < self.steps and (self.time_budget_s is None or time.time() - self.t_start < self.time_budget_s)

    def lr_at(self, step: int) -> float:
        """The learning rate of (0-based) ``step``."""
        if step < self.warmup or not self.cosine:
            return self.lr * min(1.0, (step + 1) / self.warmup)
        done = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    def __call__(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss``, step with the warmed-up lr, update the running loss (0.95 decay) and log."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        self.opt.step()
        self.step += 1
        self.loss_avg = loss.item() if self.step == 1 else 0.95 * self.loss_avg + 0.05 * loss.item()
        if self.step % self.log_every == 0:
            el = time.time() - self.t_start
            self.log(f"{self.label} step {self.step}/{self.steps} loss {self.loss_avg:.3f} "
                     f"{self.batch_size * self.step / el:.0f} img/s {el:.0f}s")
