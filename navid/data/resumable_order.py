"""The training sample order, continued exactly by a resumed run.

A shuffled loader draws each epoch's order from the global random stream, and Lightning can only
restart an interrupted epoch's loader from its first batch. After ``--resume`` a run would therefore
see the start of an epoch again and miss its end, and (with the stream seeded again) repeat the first
run's orders; on a cluster whose jobs are requeued more often than an epoch lasts, the end of every
epoch would never be trained on.

Here the order of epoch ``e`` is a permutation seeded by ``(seed, e)`` alone, the same on every rank,
each rank taking its share (torch's :class:`~torch.utils.data.DistributedSampler`), and a resumed run
leaves out the batches its checkpoint had consumed, so it trains on the batches the uninterrupted
run would have. The random draws that make a training item (a clip's start frame and flip) are seeded
by the item's index and epoch (:class:`KeyedDraws`), whatever the number of loader workers, and those
made while training on a batch (label dropout) by the batch's place in the run
(:func:`navid.utils.training.seed_batch`), so they repeat exactly too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, NamedTuple, Optional

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


_MASK64 = (1 << 64) - 1


def seed_of(*key: int) -> int:
    """A 64-bit seed mixed from non-negative integers, so that nearby keys give unrelated streams.

    Each integer is folded in with the splitmix64 finaliser (Steele et al., 2014; the constants are
    its published ones): a few integer operations, cheap enough to run for every training item.
    """
    state = 0
    for value in key:
        z = (state ^ value) + 0x9E3779B97F4A7C15 & _MASK64
        z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ z >> 27) * 0x94D049BB133111EB & _MASK64
        state = z ^ z >> 31
    return state


class SampleKey(NamedTuple):
    """What the sampler yields: the item, and the epoch whose draws it is made with."""

    index: int
    epoch: int


class KeyedDraws(Dataset):
    """``dataset`` indexed by :class:`SampleKey`: each item is made with torch's CPU random stream seeded by
    ``(seed, epoch, index)``, in whichever process loads it; the caller's stream is left as it was."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: SampleKey):
        with torch.random.fork_rng(devices=[]):
            # the CPU stream alone: torch.manual_seed would also seed every accelerator, for every item
            torch.default_generator.manual_seed(seed_of(self.seed, key.epoch, key.index))
            return self.dataset[key.index]


def batches_consumed(trainer: Optional[L.Trainer]) -> int:
    """The training batches the run ``trainer`` is fitting has consumed so far: 0 for a fresh run.

    Lightning restores its loops' progress from the checkpoint before it asks for the train loader. Its
    count of all training batches fetched is the position; its epoch count is not: a checkpoint written
    when ``max_steps`` ended a run inside an epoch records that epoch as finished.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.total.ready if trainer is not None else 0


class ResumableShuffleSampler(DistributedSampler):
    """Seeded per-epoch shuffle, split over the ranks, whose first pass starts after ``consumed_batches``.

    Yields :class:`SampleKey` items for a :class:`KeyedDraws` dataset. Each pass over the sampler is the
    next epoch: it counts its passes itself and ignores :meth:`set_epoch`, because Lightning's epoch
    number after a resume depends on where the checkpoint was written (see :func:`batches_consumed`).
    Under DDP, Lightning keeps a :class:`~torch.utils.data.DistributedSampler` as it is (no sampler
    replacement).
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0, batch_size: int = 1,
                 consumed_batches: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        # The loader drops an incomplete last batch unless this rank's whole share is smaller than one batch.
        self.drop_incomplete_batch = self.num_samples >= batch_size
        batches_per_epoch = self.num_samples // batch_size if self.drop_incomplete_batch else 1
        self.epoch, batches = divmod(consumed_batches, batches_per_epoch)
        self._skip = batches * batch_size  # samples of this rank's share the first pass leaves out

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the sampler counts its own passes."""

    # __len__ stays the whole share, skip or not: Lightning ends the resumed epoch by its restored batch count
    # plus the batches it fetches, which must add up to the length of a whole epoch.

    def __iter__(self) -> Iterator[SampleKey]:
        order = [SampleKey(index, self.epoch) for index in list(super().__iter__())[self._skip:]]
        self._skip = 0
        self.epoch += 1
        return iter(order)


def training_loader(dataset: Dataset, batch_size: int, num_workers: int, seed: int,
                    trainer: Optional[L.Trainer]) -> DataLoader:
    """A shuffled training loader for this rank of ``trainer``'s run, continuing its order when resumed."""
    num_replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = ResumableShuffleSampler(dataset, seed, num_replicas, rank, batch_size, batches_consumed(trainer))
    return DataLoader(KeyedDraws(dataset, seed), batch_size=batch_size, sampler=sampler,
                      drop_last=sampler.drop_incomplete_batch,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(seed))  # its worker seeds: not the global stream


@dataclass(frozen=True)
class OrderLayout:
    """How a run's training order is cut: items per batch and ranks sharing each epoch."""

    batch_size: int
    world_size: int


class OrderLayoutCheck(Callback):
    """Warns when a run resumes with another batch size or rank count than its checkpoint's.

    The run then continues after the same count of batches, placed in the new layout's epochs: not the
    batches the uninterrupted run would have trained on (README, "Resilience"). The layout is stored in
    every checkpoint as this callback's state.
    """

    def __init__(self) -> None:
        self.layout: Optional[OrderLayout] = None
        self._restored: Optional[OrderLayout] = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.layout = OrderLayout(trainer.train_dataloader.batch_size, trainer.world_size)
        if self._restored is not None and self._restored != self.layout:
            rank_zero_warn(f"resumed with batch size {self.layout.batch_size} on {self.layout.world_size} rank(s); "
                           f"the checkpoint was trained with {self._restored.batch_size} on "
                           f"{self._restored.world_size}: the run continues after the same number of batches, "
                           "but not on the batches the uninterrupted run would have trained on")

    def state_dict(self) -> dict:
        return {} if self.layout is None else {"batch_size": self.layout.batch_size,
                                                "world_size": self.layout.world_size}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:
            self._restored = OrderLayout(**state_dict)
