"""The optimizer (AdamW or Nesterov SGD, no decay on 1-D parameters) and the learning-rate
schedule (timm's cosine / poly / constant, driven by steps or wall time) of every training."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..device import Runtime
from .config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig,
                   runtime: Runtime | None = None) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD; no weight decay on norm weights and biases (1-D parameters);
    the runtime's optimizer arguments (fused kernels on CUDA)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    extra = runtime.optimizer_kwargs(cfg.optimizer) if runtime is not None else {}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, **extra)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True, **extra)


class LRSchedule:
    """timm's schedulers (cosine, poly 0.9, constant), driven by steps or wall time.

    Warm-up is linear over `warmup_steps` optimizer steps from 1 % of the peak lr, capped at a
    quarter of the planned steps (a one-epoch run does not spend itself warming up). The decay
    after it follows the larger of step progress and, with a time budget, time progress, so the
    lr reaches its floor when either the planned steps or the budget run out.
    """

    RESOLUTION = 10_000

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: TrainConfig, *, total_steps: int,
                 warmup_steps: int):
        from timm.scheduler import CosineLRScheduler, PolyLRScheduler, StepLRScheduler

        self.cfg = cfg
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, min(warmup_steps, self.total_steps // 4))
        self.decay_t = self.RESOLUTION
        self.warmup_end_s: float | None = None if self.warmup_steps else 0.0
        common = dict(warmup_t=self.warmup_steps, warmup_lr_init=cfg.lr * 0.01,
                      warmup_prefix=True, t_in_epochs=False)
        if cfg.schedule == "cosine":
            self.sched = CosineLRScheduler(optimizer, t_initial=self.decay_t,
                                           lr_min=cfg.lr * cfg.min_lr_ratio, **common)
        elif cfg.schedule == "poly":
            self.sched = PolyLRScheduler(optimizer, t_initial=self.decay_t, power=0.9,
                                         lr_min=cfg.lr * cfg.min_lr_ratio, **common)
        else:
            self.sched = StepLRScheduler(optimizer, decay_t=10 ** 9, decay_rate=1.0, **common)
        self.optimizer = optimizer

    def progress(self, step: int, elapsed_s: float) -> float:
        """Share (0..1) of the decay phase done after `step` optimizer steps."""
        if step < self.warmup_steps:
            return 0.0
        if self.warmup_end_s is None:
            self.warmup_end_s = elapsed_s
        q = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        budget = self.cfg.max_time_s
        if budget is not None:
            q = max(q, (elapsed_s - self.warmup_end_s) / max(1e-9, budget - self.warmup_end_s))
        return min(1.0, q)

    def update(self, step: int, elapsed_s: float) -> float:
        if step < self.warmup_steps:
            t = step
        else:
            t = self.warmup_steps + int(round(self.progress(step, elapsed_s) * self.decay_t))
        self.sched.step_update(t)
        return self.lr

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])
