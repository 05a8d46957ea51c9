"""Process-group setup for CLI commands launched by ``torchrun`` (tokenize, evaluate, ...).

Training goes through Lightning, which launches and joins its own process group. Commands that
are not Lightning runs wrap their work in :func:`distributed_run`: under ``torchrun`` (``WORLD_SIZE`` > 1)
each rank pins its device from ``LOCAL_RANK`` *before* joining the group, so NCCL collectives of
rank r run on ``cuda:r`` instead of every rank landing on ``cuda:0``. Without ``torchrun`` it
returns a one-process context and joins nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from navid.config import USER_ERRORS


@dataclasses.dataclass(frozen=True)
class DistributedContext:
    """Where this process sits: its global rank, the number of ranks, its rank on this node, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (a no-op in one process)."""
        if self.is_distributed:
            dist.barrier(device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def on_main(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the main rank while the others wait; an error it raises stops every rank
        (:func:`from_rank0`)."""
        from_rank0(work)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the process group, or (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def from_rank0(compute: Callable[[], Any]) -> Any:
    """``compute()`` run on rank 0 only, its (picklable) result given to every rank: ranks whose views of a shared
    file system differ still take the same decisions (and so run the same collectives).

    If it raises, every rank raises, none waits at its next collective for a rank that left: a bad-input error
    (``USER_ERRORS``) as that kind with the same message, so each rank stops with the command's one-line error;
    any other as a ``RuntimeError`` quoting rank 0's.
    """
    rank, world = rank_world()
    value, failure = None, None
    if rank == 0:
        try:
            value = compute()
        except Exception as err:  # handed to the other ranks, then raised here as it was
            failure = err
    if world > 1:
        kind = None if failure is None else next((i for i, e in enumerate(USER_ERRORS) if isinstance(failure, e)), -1)
        message = [value, None if failure is None else (kind, str(failure))]
        dist.broadcast_object_list(message, src=0)
        value, sent = message
        if rank != 0 and sent is not None:
            kind, text = sent
            raise USER_ERRORS[kind](text) if kind >= 0 else RuntimeError(f"rank 0 stopped: {text}")
    if failure is not None:
        raise failure
    return value


def resolve_device(requested: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is present, else ``cpu``; ``cuda`` -> ``cuda:<local_rank>``."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise ValueError(f"--device {requested}: {err}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: CUDA is not available on this machine (use --device cpu or auto)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def refuse_srun_copies() -> None:
    """Stop a process that is one of several ``srun`` tasks but not a torchrun rank: every task would run the whole
    job and write the same files (torchrun under srun sets ``WORLD_SIZE``, and passes)."""
    srun_tasks = os.environ.get("SLURM_STEP_NUM_TASKS", "1")
    if "WORLD_SIZE" not in os.environ and srun_tasks.isdigit() and int(srun_tasks) > 1:
        raise ValueError(
            f"this process is one of {srun_tasks} srun tasks, not a torchrun rank: every task would run the whole "
            "job and write the same files. Start torchrun with one srun task per node (as tools/slurm/*.sbatch "
            "do), or run a single task (srun --ntasks 1)"
        )


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group (if any) with this rank's device pinned first.

    ``device`` is a command's ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. Under
    ``torchrun`` an explicit ``cuda:N`` would put every rank on the same GPU, so it is refused;
    ``cuda``/``auto`` give rank r of a node ``cuda:LOCAL_RANK``. The backend is NCCL on CUDA and
    gloo on CPU. Safe to call when the group already exists (it is reused). Several ``srun`` tasks without
    torchrun are refused: each would run the whole job and write the same files.
    """
    refuse_srun_copies()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    pinned = resolve_device(device, local_rank)
    if world_size > 1 and pinned.type == "cuda" and pinned.index != local_rank:
        raise ValueError(
            f"--device {device} under torchrun would put every rank on {pinned}; pass --device cuda or auto "
            "so that each rank takes cuda:LOCAL_RANK"
        )
    if pinned.type == "cuda":
        torch.cuda.set_device(pinned)
    if world_size > 1 and not dist.is_initialized():
        cuda = pinned.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=pinned if cuda else None)
    if dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, pinned)
    return DistributedContext(0, 1, local_rank, pinned)


def teardown_distributed() -> None:
    """Leave the process group joined by :func:`setup_distributed` (a no-op without one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def distributed_run(device: str = "auto") -> Iterator[DistributedContext]:
    """:func:`setup_distributed`, then leave the group: after a barrier when the work succeeded, at once after an error.

    Ranks finish at different times (rank 0 writes the reports), and a process group is meant to be
    destroyed by all its ranks together (NCCL's communicators must be aborted collectively; with gloo, a
    rank that left early, while rank 0 was still writing, was seen to abort at exit). After an error the
    other ranks may never reach the barrier, so the group is left at once.
    """
    ctx = setup_distributed(device)
    try:
        yield ctx
    except BaseException:
        teardown_distributed()
        raise
    ctx.barrier()
    teardown_distributed()
