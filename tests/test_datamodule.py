"""VideoDataModule over a synthesised folder: documented batch shape, dtype, range and splits."""

from __future__ import annotations

import pytest
import torch

from navid.config import ConfigError, load_config
from navid.data.datamodule import DataConfig, VideoDataModule


def test_batches_shape_dtype_range(synth_root, tmp_path):
    cfg = load_config(DataConfig, overrides=[f"root={synth_root}", "num_frames=8", "resolution=32",
                                             "batch_size=2", f"cache_dir={tmp_path}", "num_workers=2"])
    dm = VideoDataModule(cfg)
    assert dm.num_classes == 4 and dm.class_names[1] == "SquareSpin"
    assert len(dm.train_set) == 12 and len(dm.val_set) == 4
    assert dm.train_set.train and dm.train_set.hflip and not dm.val_set.train and not dm.val_set.hflip
    video, label = next(iter(dm.train_dataloader()))
    assert video.shape == (2, 3, 8, 32, 32) and video.dtype == torch.float32
    assert label.shape == (2,) and label.dtype == torch.int64
    assert -1 <= video.min() < 0 < video.max() <= 1
    labels = torch.cat([y for _, y in dm.val_dataloader()])
    assert labels.tolist() == [0, 1, 2, 3]


def test_config_validation_names_key():
    with pytest.raises(ConfigError, match="root"):
        load_config(DataConfig)
    with pytest.raises(ConfigError, match="bad_file_policy"):
        load_config(DataConfig, overrides=["root=x", "bad_file_policy=drop"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(DataConfig, overrides=["root=x", "batch_size=two"])
