"""Tell the user early how long a training run will take."""

from __future__ import annotations

import time
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import Callback


class StepTimeEstimate(Callback):
    """Prints once, after ``skip + measure`` optimizer steps, the time per step and the time left.

    The first ``skip`` steps are left out of the measurement: they carry one-off costs (lazy
    initialisation, allocator warm-up). Validation and checkpointing are not in the estimate.
    """

    def __init__(self, skip: int = 2, measure: int = 8) -> None:
        self.skip, self.measure = skip, measure
        self._begin_step = 0  # global step at which timing begins
        self._begin_time: Optional[float] = None
        self._done = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin_step, self._begin_time, self._done = trainer.global_step + self.skip, None, False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if self._done or step < self._begin_step:
            return
        if self._begin_time is None:
            self._begin_step, self._begin_time = step, time.perf_counter()
            return
        if step >= self._begin_step + self.measure:
            per_step = (time.perf_counter() - self._begin_time) / (step - self._begin_step)
            left = max(trainer.max_steps - step, 0)
            if trainer.is_global_zero:
                print(f"\n  estimate: {per_step:.2f} s/step (steps {self._begin_step + 1}-{step}), about "
                      f"{left * per_step / 60:.1f} min for the {left} steps left of {trainer.max_steps}", flush=True)
            self._done = True
