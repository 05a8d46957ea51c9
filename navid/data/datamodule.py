"""Lightning DataModule over a UCF-101-layout folder (the real release or the synthetic default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import lightning as L
from torch.utils.data import DataLoader

from navid.data.resumable_order import training_loader
from navid.data.ucf101 import BAD_FILE_POLICIES, UCF101Clips


@dataclass
class DataConfig:
    root: str = "???"
    fold: int = 1
    num_frames: int = 16
    frame_stride: int = 1
    resolution: int = 64
    batch_size: int = 8
    num_workers: int = 0
    hflip: bool = True
    bad_file_policy: str = "skip"
    max_bad_fraction: float = 0.1
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.bad_file_policy not in BAD_FILE_POLICIES:
            raise ValueError(f"data.bad_file_policy must be one of {BAD_FILE_POLICIES}, got '{self.bad_file_policy}'")
        if self.fold not in (1, 2, 3):
            raise ValueError(f"data.fold must be 1, 2 or 3, got {self.fold}")
        for key in ("num_frames", "frame_stride", "resolution", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be positive, got {getattr(self, key)}")
        if self.num_workers < 0 or not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError("data.num_workers must be >= 0 and data.max_bad_fraction in [0, 1]")


class VideoDataModule(L.LightningDataModule):
    """Train loader: random-start clips with optional flips; val loader: the test split, centred, no flip.

    Both datasets are built in ``setup`` in the main process (metadata cache included),
    so worker processes inherit them instead of re-probing files.
    """

    def __init__(self, cfg: DataConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.seed = seed  # of the training order (:mod:`navid.data.resumable_order`)
        self.train_set: Optional[UCF101Clips] = None
        self.val_set: Optional[UCF101Clips] = None

    def _dataset(self, split: str) -> UCF101Clips:
        c = self.cfg
        train = split == "train"
        return UCF101Clips(
            c.root, split=split, fold=c.fold, num_frames=c.num_frames, frame_stride=c.frame_stride,
            resolution=c.resolution, train=train, hflip=c.hflip and train, bad_file_policy=c.bad_file_policy,
            max_bad_fraction=c.max_bad_fraction, cache_dir=c.cache_dir,
        )

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset("train")
        if self.val_set is None:
            self.val_set = self._dataset("test")

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return self.train_set.class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return training_loader(self.train_set, self.cfg.batch_size, self.cfg.num_workers, self.seed, self.trainer)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        workers = self.cfg.num_workers
        return DataLoader(self.val_set, batch_size=self.cfg.batch_size, num_workers=workers,
                          persistent_workers=workers > 0)
