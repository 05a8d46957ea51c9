"""Shared by the training-loop tests: a small tokenizer config and in-memory clips (no video files)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from navid.config import load_config
from navid.tokenizer import TokenizerTrainConfig

SMALL_TOKENIZER = [
    "data.root=unused", "data.num_frames=4", "data.resolution=16", "data.batch_size=2",
    "model.patch_size=[2,4,4]", "model.channels=[16]", "model.downsample=[]", "model.out_hidden_channels=8",
    "model.fsq_levels=[4,4]", "model.fsq_entropy_weight=0.0", "optim.warmup_steps=1",
    "trainer.accelerator=cpu", "trainer.progress_bar=false", "trainer.val_every_n_steps=100000",
]


def small_tokenizer_config(out_dir: Path, *overrides: str) -> TokenizerTrainConfig:
    return load_config(TokenizerTrainConfig, None, [*SMALL_TOKENIZER, f"out_dir={out_dir}", *overrides])


def clip_loader(cfg: TokenizerTrainConfig, num_clips: int, seed: int = 0) -> DataLoader:
    """``num_clips`` random clips in [-1, 1] (labels 0), in a fixed order."""
    generator = torch.Generator().manual_seed(seed)
    shape = (num_clips, 3, cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution)
    clips = torch.rand(shape, generator=generator) * 2 - 1
    return DataLoader(TensorDataset(clips, torch.zeros(num_clips, dtype=torch.long)), batch_size=cfg.data.batch_size)
