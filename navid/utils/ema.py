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
    """An EMA copy's decay schedule and update count; :meth:`update` is called right after each optimizer step.

    Not from ``on_train_batch_end``: the checkpoint callback writes a step's checkpoint in its own
    ``on_train_batch_end``, which Lightning runs before the module's, so an EMA updated there would be
    saved one step old, and a resume from that file would skip that step's update for good. The
    optimizer step also runs once per k batches under ``accumulate_grad_batches=k``, where averaging
    after every batch would shorten the EMA's horizon k-fold.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.num_updates = 0

    def update(self, ema_model: nn.Module, model: nn.Module, global_step: int) -> None:
        """Average ``model`` into ``ema_model``; ``global_step`` counts the optimizer step just taken."""
        update_ema(ema_model, model, ema_decay_at(global_step, self.decay))
        self.num_updates += 1
