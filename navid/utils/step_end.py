"""A callback hook for the end of each optimizer step (not of each batch)."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class StepEndCallback(Callback):
    """Calls :meth:`on_step_end` after each training batch that ended an optimizer step.

    Under gradient accumulation the other batches leave gradients half-summed, which a checkpoint does
    not hold: a run may stop, and be resumed exactly, only where a step ended.
    """

    _step_at_batch_start = 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    def step_ended(self, trainer: L.Trainer) -> bool:
        """Whether the training batch now ending ended an optimizer step."""
        return trainer.global_step != self._step_at_batch_start

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.step_ended(trainer):
            self.on_step_end(trainer, pl_module, batch)

    def on_step_end(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        """After the batch that ended the step (``trainer.global_step`` counts it)."""
        raise NotImplementedError
