"""Exponential moving average of model weights (sampling and evaluation use the EMA copy)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    ema_params = dict(ema_model.named_parameters())
    for name, param in model.named_parameters():
        ema_params[name].lerp_(param.detach().to(ema_params[name].dtype), 1.0 - decay)
    ema_buffers = dict(ema_model.named_buffers())
    for name, buf in model.named_buffers():
        ema_buffers[name].copy_(buf)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay warmed up as ``min(decay, (1 + step) / (10 + step))``.

    A fixed decay of 0.999 would keep the EMA copy near the random initialisation for the
    first few thousand steps, so short runs (CPU, the demo) would sample from an untrained
    model; the warm-up lets the EMA follow the weights early and settle to ``decay`` later.
    """
    return min(decay, (1 + step) / (10 + step))


class StepEMA:
    """Updates an EMA copy once per optimizer step, however many batches make up a step.

    Lightning calls ``on_train_batch_end`` for every micro-batch; under
    ``accumulate_grad_batches=k`` only every k-th one steps the optimizer, and averaging the
    unchanged weights k times would shorten the EMA's horizon k-fold. :meth:`update` therefore
    acts only when the global step has advanced since the last update.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.last_step = 0
        self.num_updates = 0

    def start(self, global_step: int) -> None:
        """Call at the start of fit (also when resuming): no update until the next optimizer step."""
        self.last_step = global_step

    def update(self, ema_model: nn.Module, model: nn.Module, global_step: int) -> None:
        if global_step == self.last_step:
            return
        update_ema(ema_model, model, ema_decay_at(global_step, self.decay))
        self.last_step = global_step
        self.num_updates += 1
