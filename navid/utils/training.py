"""Training plumbing shared by the tokenizer and the generator.

One place builds the Lightning ``Trainer`` from a :class:`~navid.config.TrainerConfig`, so
CPU, one GPU, DDP over many GPUs and many nodes all go through the same code; one
place makes checkpoints crash-safe; one place stops on a non-finite loss.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from navid.config import SHARDED_STRATEGIES, ConfigError, OptimConfig, TrainerConfig
from navid.data.resumable_order import OrderLayoutCheck, seed_of
from navid.utils.atomic import link_atomic, prepare_output_dir, remove_earlier_outputs, torch_save_atomic
from navid.utils.checkpoint_file import load_checkpoint_file
from navid.utils.distributed import teardown_distributed
from navid.utils.previews import PreviewVideos
from navid.utils.run_stops import NonFiniteLossError, StoppedBySigterm
from navid.utils.sharding import FullyShardedStrategy
from navid.utils.step_end import StepEndCallback
from navid.utils.step_estimate import StepTimeEstimate

LAST_CHECKPOINT = "last.ckpt"
STOP_FILE = "STOP"  # see StopFile
# What every training run writes in its out_dir besides config.yaml (which the command rewrites) and the
# module's preview folder: what --overwrite replaces (see replace_earlier_run).
RUN_OUTPUTS = ("checkpoints", "logs", STOP_FILE)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file next to it, flushes it to disk and renames it into place.

    A crash or SIGKILL mid-write therefore never leaves a truncated ``last.ckpt``: the
    previous complete checkpoint stays until the new one is whole. Lightning's own save would first
    write the whole checkpoint into ``$TMPDIR`` (often a small or RAM-backed disk on cluster nodes),
    where a killed save is left behind, and hold a second copy of it in memory.
    """

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        torch_save_atomic(checkpoint, path)


def is_logging_step(trainer: L.Trainer) -> bool:
    """Whether Lightning writes the logged metrics after the current training batch.

    Logging (and its ``sync_dist`` all-reduces) only on these steps keeps the other steps free of
    collectives and host syncs. This is Lightning's own predicate, so metrics logged only on
    these steps are exactly the ones the loggers see.
    """
    return trainer._logger_connector.should_update_logs


class StopOnNonFiniteLoss(Callback):
    """Stops training with an error naming the first step whose loss was NaN or Inf.

    Reading a flag from the device every step would make the host wait for the device each
    step, so the first bad step is kept in a device tensor and read on the logging interval,
    before every checkpoint is written (a checkpoint never holds weights trained on a
    non-finite loss) and when training ends. Under DDP the read is a min over ranks, so every
    rank raises at the same step. ``training_step`` must return the loss tensor or a dict with
    a ``"loss"`` entry.
    """

    NONE = torch.iinfo(torch.int64).max  # "no bad step yet"

    def __init__(self) -> None:
        self._first_bad: Optional[torch.Tensor] = None  # () int64 on the loss's device

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        if self._first_bad is None or self._first_bad.device != loss.device:
            self._first_bad = torch.full((), self.NONE, dtype=torch.int64, device=loss.device)
        bad = ~torch.isfinite(loss.detach()).all()  # () bool, stays on the device
        self._first_bad = torch.where(bad, self._first_bad.clamp(max=trainer.global_step), self._first_bad)
        if is_logging_step(trainer):
            self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Raise :class:`NonFiniteLossError` if any rank saw a non-finite loss (one host sync)."""
        if self._first_bad is None:
            return
        first = int(trainer.strategy.reduce(self._first_bad.clone(), reduce_op="min"))
        if first != self.NONE:
            raise NonFiniteLossError(
                f"non-finite loss first at global step {first} (found at global step {trainer.global_step}: "
                f"steps {first}..{trainer.global_step} ran on it); the last good checkpoint is left untouched"
            )


class TimeLimitOfThisRun(StepEndCallback):
    """``trainer.max_time_minutes``: stops the run at the first step end that long after its own start.

    Lightning's ``max_time`` restores the time a checkpoint recorded, so after a time stop ``--resume``
    would be at its limit at once and train no step; a cluster job given a per-job limit must get the
    whole limit again. Rank 0's clock decides for all ranks; with several ranks it is read at the steps where
    logging already synchronises them (as :class:`StopFile` looks for its file), so the other steps stay free
    of the broadcast and its host sync, and a run may pass its limit by up to ``log_every_n_steps - 1`` steps.
    """

    def __init__(self, minutes: float) -> None:
        self.seconds = 60.0 * minutes
        self._start = time.monotonic()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()

    def on_step_end(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        if trainer.world_size > 1 and not is_logging_step(trainer):
            return
        if trainer.strategy.broadcast(time.monotonic() - self._start >= self.seconds):
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(f"\n  trainer.max_time_minutes={self.seconds / 60:g} reached: stopping at step "
                      f"{trainer.global_step} (--resume continues from it)", flush=True)


class StopFile(StepEndCallback):
    """``touch out_dir/STOP``: the run stops at the next logging step's end, where ``last.ckpt`` is written.

    A cluster job about to be pre-empted or to reach its time limit can so keep all its steps instead
    of those up to its last periodic checkpoint (the SLURM templates do this on SIGUSR1); ``--resume``
    continues. Rank 0 looks for the file and removes it once acted on; the look is made at the steps
    where logging already synchronises the ranks, so the other steps stay free of host syncs.
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / STOP_FILE

    def on_step_end(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        if not is_logging_step(trainer) or not trainer.strategy.broadcast(self.path.exists()):
            return
        trainer.should_stop = True
        if trainer.is_global_zero:
            self.path.unlink(missing_ok=True)
            print(f"\n  {self.path} found: stopping at step {trainer.global_step} (--resume continues from it)",
                  flush=True)


class StopOnSigterm(StepEndCallback):
    """A single-process run sent SIGTERM stops at the end of the optimizer step it is in, where
    :class:`RunCheckpoints` writes ``last.ckpt`` as for a ``STOP`` file; :func:`sigterm_reported` then reports it.

    For the run, this callback's handler replaces Lightning's, which ends ``fit`` at the end of the batch that
    received the signal: a signal arriving after a step's checkpoint hook but before Lightning's own check (or
    between the batches of an accumulated step) would leave no checkpoint of that step. With several ranks
    Lightning's handler stays: it ends every rank at the start of the next batch, where no rank could take part in
    a checkpoint's collective, and the ``STOP`` file (what the SLURM templates touch on SIGUSR1) is the way to stop
    those with a checkpoint.
    """

    def __init__(self) -> None:
        self.received = False
        self._lightning_handler: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # after Lightning's handlers
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            self._lightning_handler = signal.signal(signal.SIGTERM, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        self.received = True

    def on_step_end(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        if self.received:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        """Hand SIGTERM back to Lightning before its teardown puts back the handlers from before the run."""
        if self._lightning_handler is not None:
            signal.signal(signal.SIGTERM, self._lightning_handler)
            self._lightning_handler = None


class RunCheckpoints(StepEndCallback, Checkpoint):
    """``last.ckpt`` every ``every_n_steps`` steps and at the step where the run stops (``max_steps`` reached or a
    stop requested), what ``--resume`` continues from; at every ``every_n_steps``-th step the same file is also
    kept as ``stepNNNNNNN.ckpt``, which replaces this run's earlier step files.

    Written only at a batch that ended an optimizer step: under gradient accumulation the other batches hold
    half-summed gradients, which no checkpoint holds. The state is gathered and written once per step: the step
    file is a hard link to ``last.ckpt`` (a copy where the file system has none), not a second save, which under
    FSDP would gather the whole model, EMA and AdamW state onto rank 0 twice. The step files this run wrote are
    recorded (resolved paths) in the checkpoint before the older ones are removed, so a run killed in between
    removes them at its next step file; a run resumed in a moved or copied folder leaves the step files of the
    folder it came from, and those it did not write, alone.
    """

    def __init__(self, dirpath: Path, every_n_steps: int) -> None:
        self.dirpath, self.every_n_steps = Path(dirpath).resolve(), every_n_steps
        self.step_files: list[str] = []  # this run's step files not yet removed, the newest last
        self.saved_step: Optional[int] = None  # the step of the last.ckpt this process wrote last

    @property
    def last(self) -> Path:
        return self.dirpath / LAST_CHECKPOINT

    def on_step_end(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        step = trainer.global_step
        periodic = step % self.every_n_steps == 0
        if not (periodic or trainer.should_stop or step >= trainer.max_steps):
            return
        if periodic:  # recorded in the file before the older step files go
            self.step_files.append(str(self.dirpath / f"step{step:07d}.ckpt"))
        trainer.save_checkpoint(self.last, weights_only=False)  # a collective: every rank takes part
        self.saved_step = step
        if not periodic:
            return
        newest = self.step_files[-1]
        if trainer.is_global_zero:
            link_atomic(self.last, newest)
            for older in self.step_files[:-1]:
                if older != newest:
                    Path(older).unlink(missing_ok=True)
        self.step_files = [newest]

    def state_dict(self) -> dict:
        return {"step_files": self.step_files}

    def load_state_dict(self, state_dict: dict) -> None:
        """The recorded step files that are still in this folder (a checkpoint records the files it replaces)."""
        recorded = [Path(name) for name in state_dict.get("step_files", [])]
        self.step_files = [str(path) for path in recorded if path.parent == self.dirpath and path.exists()]


class CpuBf16WithoutOneDnn(Callback):
    """Trains without oneDNN kernels when bf16 autocast runs on the CPU.

    torch 2.13's oneDNN bf16 ``conv3d`` backward intermittently returns non-finite weight
    gradients for small shapes (measured on an AMD EPYC: 9 of 200 random batches for a
    2 -> 16 channel 3x3x3 convolution, 0 of 200 with oneDNN off), which stops tokenizer training
    with a NaN loss. bf16 on a CPU is for checking the code path, so correctness wins over speed;
    GPUs are unaffected.
    """

    def __init__(self) -> None:
        self._saved: Optional[bool] = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.strategy.root_device.type == "cpu" and str(trainer.precision).startswith("bf16"):
            self._saved = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._saved is not None:
            torch.backends.mkldnn.enabled = self._saved
            self._saved = None


def make_logger(cfg: TrainerConfig, out_dir: Path) -> Logger:
    """The ``trainer.logger`` logger, writing under ``out_dir/logs/version_N`` (the config checked that
    its package is installed)."""
    if cfg.logger == "tensorboard":
        return TensorBoardLogger(save_dir=str(out_dir), name="logs")
    return CSVLogger(save_dir=str(out_dir), name="logs")


def lightning_strategy(name: str) -> str | FullyShardedStrategy:
    """What Lightning's ``strategy`` gets for ``trainer.strategy``: navid's FSDP2 strategy for ``fsdp`` and ``hsdp``."""
    return FullyShardedStrategy(hybrid=name == "hsdp") if name in SHARDED_STRATEGIES else name


def build_trainer(cfg: TrainerConfig, out_dir: str | os.PathLike, callbacks: Iterable[Callback] = (),
                  checkpoints: bool = True) -> L.Trainer:
    """A Trainer with the configured logger, crash-safe checkpoints (``last.ckpt``; none with
    ``checkpoints=False``, for timing runs), the non-finite loss stop and, if ``sample_every_n_steps`` is
    set, preview videos, all under ``out_dir``."""
    out = Path(out_dir)
    all_callbacks = [StopOnNonFiniteLoss(), CpuBf16WithoutOneDnn(), StepTimeEstimate(), OrderLayoutCheck(), *callbacks]
    if cfg.max_time_minutes:
        all_callbacks.append(TimeLimitOfThisRun(cfg.max_time_minutes))
    if checkpoints:  # after the time limit, which may stop the run at the step they save; so may StopFile and SIGTERM
        all_callbacks += [StopFile(out), StopOnSigterm(),
                          RunCheckpoints(out / "checkpoints", cfg.checkpoint_every_n_steps)]
    if cfg.sample_every_n_steps:
        all_callbacks.append(PreviewVideos(cfg.sample_every_n_steps, out))
    if cfg.progress_bar:
        all_callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.log_every_n_steps)))
    settings = dict(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=lightning_strategy(cfg.strategy),
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        max_steps=cfg.max_steps,
        log_every_n_steps=cfg.log_every_n_steps,
        gradient_clip_val=cfg.gradient_clip_val or None,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        val_check_interval=cfg.val_every_n_steps * cfg.accumulate_grad_batches,  # Lightning counts batches here
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.limit_val_batches,
        callbacks=all_callbacks,
        logger=make_logger(cfg, out),
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=checkpoints,
        enable_progress_bar=cfg.progress_bar,
        default_root_dir=str(out),
        num_sanity_val_steps=0,
    )
    try:
        return L.Trainer(**settings)
    except (MisconfigurationException, TypeError, ValueError) as err:  # Lightning's checks of these settings
        raise ConfigError(f"trainer.accelerator={cfg.accelerator}, trainer.devices={cfg.devices}, "
                          f"trainer.strategy={cfg.strategy}, trainer.num_nodes={cfg.num_nodes}, "
                          f"trainer.precision={cfg.precision}: {err}") from err


@contextlib.contextmanager
def sigterm_reported(trainer: L.Trainer) -> Iterator[None]:
    """Around ``fit``: Lightning's exit on SIGTERM (a ``SystemExit`` without a status, so status 0, as if the run had
    finished) becomes :class:`~navid.utils.run_stops.StoppedBySigterm`, naming the step and what ``--resume``
    continues from."""
    try:
        yield
    except SIGTERMException:  # several ranks: Lightning's handler ended the run
        raise StoppedBySigterm(_sigterm_message(trainer)) from None
    stop = next((c for c in trainer.callbacks if isinstance(c, StopOnSigterm)), None)
    if stop is not None and stop.received and trainer.global_step < trainer.max_steps:
        raise StoppedBySigterm(_sigterm_message(trainer))


def _sigterm_message(trainer: L.Trainer) -> str:
    """Where a run stopped by SIGTERM stopped, and what ``--resume`` continues from."""
    step = trainer.global_step
    checkpoints = next((c for c in trainer.callbacks if isinstance(c, RunCheckpoints)), None)
    if checkpoints is not None and checkpoints.saved_step == step:
        where = f"{checkpoints.last} holds step {step}, and --resume continues from it"
    elif checkpoints is not None and checkpoints.saved_step is not None:
        where = f"--resume continues from {checkpoints.last} (step {checkpoints.saved_step})"
    elif checkpoints is not None and checkpoints.last.is_file():
        where = f"--resume continues from {checkpoints.last}, written before this process started"
    else:
        where = "no checkpoint was written"
    return f"SIGTERM at step {step}: {where}"


def leave_process_group(trainer: L.Trainer) -> None:
    """After ``fit`` and the files written after it: wait for every rank, then destroy the process group Lightning
    made (nothing to do in one process).

    Lightning leaves the group in place. PyTorch asks for ``destroy_process_group`` before exit (NCCL warns
    without it), and a gloo rank that exits while its peer still runs can make the peer abort at exit.
    """
    trainer.strategy.barrier()
    teardown_distributed()


def seed_batch(seed: int, global_rank: int, batch_index: int) -> None:
    """Seed torch's global random streams for one training batch from ``(seed, rank, batch_index)``.

    ``batch_index`` is the batch's place in the run (Lightning's count of the training batches before it,
    which a resumed run continues). The draws training makes from the global stream (label dropout, the
    VQ codebook's dead-code restarts) then depend on that place alone: ranks draw apart, and a resumed
    run draws for each batch what the uninterrupted run drew for it. (The draws that make a training
    item are seeded per item: :class:`~navid.data.resumable_order.KeyedDraws`.)
    """
    torch.manual_seed(seed_of(seed, global_rank, batch_index))


LEFT_BY_A_START = ("config.yaml", "hparams.yaml")  # what a run writes before its first logged step


def prepare_run_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """The output folder of a new training run: refused if it holds another run's work unless ``overwrite``.

    A folder that holds only what a start that failed before training left (``config.yaml``, the logger's
    ``hparams.yaml``, empty folders) counts as empty: the corrected command runs without ``--overwrite``, and
    the new run replaces those files. Anything else (metrics, checkpoints, previews) is work, and is refused.
    """
    out = Path(out_dir)
    if not overwrite and out.is_dir() and any(out.iterdir()):
        files = [path for path in out.rglob("*") if not path.is_dir()]
        if all(path.name in LEFT_BY_A_START for path in files):
            left = ", ".join(sorted({p.name for p in files})) or "empty folders"
            print(f"out_dir {out} holds only what a failed start left ({left}); starting afresh", flush=True)
            return out
    return prepare_output_dir(out, overwrite, what="out_dir")


def replace_earlier_run(out_dir: str | os.PathLike, overwrite: bool, own_outputs: Iterable[str] = ()) -> None:
    """Under ``--overwrite``: remove the earlier run's outputs (:data:`RUN_OUTPUTS` and ``own_outputs``, e.g. the
    module's preview folder) from ``out_dir``, on rank 0.

    Called once the new run's config and data have passed their checks, so a mistyped command loses nothing.
    Without it the discarded run's step checkpoints and logs would stay beside the new run's, and the highest
    ``stepNNNNNNN.ckpt`` would be the discarded run's.
    """
    if overwrite and rank_zero_only.rank == 0:
        remove_earlier_outputs(Path(out_dir), (*RUN_OUTPUTS, *own_outputs))


def last_checkpoint(out_dir: str | os.PathLike) -> Path:
    """``out_dir/checkpoints/last.ckpt``: the latest state of a run, what ``--resume`` continues from."""
    return Path(out_dir) / "checkpoints" / LAST_CHECKPOINT


def resume_checkpoint(out_dir: str | os.PathLike, resume: bool) -> Optional[str]:
    """Path of ``out_dir/checkpoints/last.ckpt`` when resuming, else ``None``.

    Asking to resume when no checkpoint exists is an error rather than a silent restart.
    """
    if not resume:
        return None
    path = last_checkpoint(out_dir)
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return str(path)


@contextlib.contextmanager
def resumable_order_understood() -> Iterator[None]:
    """Lightning warns at every mid-epoch ``--resume`` that the DataLoader "is not resumable": it looks for state on
    the loader, while navid's loaders resume through their sampler (:mod:`navid.data.resumable_order`, checked by
    ``OrderLayoutCheck``), so the warning would contradict the exact resume the runs give."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch",
                                category=PossibleUserWarning)
        yield


FIXED_ON_RESUME = ("model", "optim")  # what the checkpoint's weights and optimizer state were made with


def check_resume_settings(out_dir: str | os.PathLike, current: dict, stored_at: tuple[str, ...]) -> Optional[dict]:
    """Refuse ``--resume`` with other ``model.*`` / ``optim.*`` settings than ``last.ckpt`` was trained with; return
    the checkpoint (memory-mapped: only what is read is loaded) for further checks, or ``None`` when there is none.

    Restoring the optimizer puts back the old learning rate, weight decay and betas, so new values would be
    recorded in the run's config but not used; a new model shape would not load. ``stored_at`` is the key path
    of the stored config in the checkpoint.
    """
    path = last_checkpoint(out_dir)
    if not path.is_file():
        return None  # resume_checkpoint says so
    checkpoint = load_checkpoint_file(path, "--resume", mmap=True)
    stored = checkpoint
    for key in stored_at:
        stored = stored[key]
    changed = [f"{section}.{key}: {old!r} -> {current[section].get(key)!r}"
               for section in FIXED_ON_RESUME for key, old in stored[section].items()
               if current[section].get(key) != old]
    if changed:
        raise ConfigError(f"--resume from {path}: these settings cannot change when resuming, the checkpoint's "
                          f"weights and optimizer state were made with the old values ({'; '.join(changed)}); "
                          "resume with them, or start a new run")
    return checkpoint


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_with_schedule(module: torch.nn.Module, cfg: OptimConfig, total_steps: int, first_step: int = 0) -> dict:
    """AdamW (no decay on norms, biases and embeddings of rank < 2) + warm-up/cosine schedule.

    ``first_step``: the training step of this optimizer's first update, for one that starts late (the GAN's
    discriminator); its k-th update then uses the schedule's value at step ``first_step + k``.
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
        optimizer, lambda step: warmup_cosine(first_step + step, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
    )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
