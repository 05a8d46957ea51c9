"""Training plumbing shared by the tokenizer and the generator.

One place builds the Lightning ``Trainer`` from a :class:`~navid.config.TrainerConfig`, so
CPU, one GPU, DDP/FSDP over many GPUs and many nodes all go through the same code; one
place makes checkpoints crash-safe; one place stops on a non-finite loss.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from navid.config import OptimConfig, TrainerConfig
from navid.utils.atomic import atomic_path
from navid.utils.step_estimate import StepTimeEstimate

LAST_CHECKPOINT = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place.

    A crash or SIGKILL mid-write therefore never leaves a truncated ``last.ckpt``: the
    previous complete checkpoint stays until the new one is whole.
    """

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Optional[Any] = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or Inf loss."""


class StopOnNonFiniteLoss(Callback):
    """Stops training with an error naming the step when the loss is NaN or Inf.

    ``training_step`` must return the loss tensor or a dict with a ``"loss"`` entry.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"non-finite loss ({loss.detach().float().item()}) at global step {trainer.global_step} "
                f"(batch {batch_idx}); the last good checkpoint is left untouched"
            )


def build_trainer(cfg: TrainerConfig, out_dir: str | os.PathLike, callbacks: Iterable[Callback] = ()) -> L.Trainer:
    """A Trainer writing CSV logs and crash-safe checkpoints (``last.ckpt``) under ``out_dir``."""
    out = Path(out_dir)
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="step{step:07d}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.checkpoint_every_n_steps,
        save_top_k=1,
        monitor="step",
        mode="max",
        save_last=True,
    )
    all_callbacks = [checkpoint, StopOnNonFiniteLoss(), StepTimeEstimate(), *callbacks]
    if cfg.progress_bar:
        all_callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_every_n_steps)))
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        max_steps=cfg.max_steps,
        max_time={"minutes": cfg.max_time_minutes} if cfg.max_time_minutes else None,
        log_every_n_steps=cfg.log_every_n_steps,
        gradient_clip_val=cfg.gradient_clip_val or None,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        val_check_interval=cfg.val_every_n_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.limit_val_batches,
        callbacks=all_callbacks,
        logger=CSVLogger(save_dir=str(out), name="logs"),
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=cfg.progress_bar,
        default_root_dir=str(out),
        num_sanity_val_steps=0,
    )


def resume_checkpoint(out_dir: str | os.PathLike, resume: bool) -> Optional[str]:
    """Path of ``out_dir/checkpoints/last.ckpt`` when resuming, else ``None``.

    Asking to resume when no checkpoint exists is an error rather than a silent restart.
    """
    if not resume:
        return None
    path = Path(out_dir) / "checkpoints" / LAST_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return str(path)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_with_schedule(module: torch.nn.Module, cfg: OptimConfig, total_steps: int) -> dict:
    """AdamW (no decay on norms, biases and embeddings of rank < 2) + warm-up/cosine schedule.

    Returns what ``LightningModule.configure_optimizers`` returns.
    """
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
