"""Typed configuration of the tokenizer: model, loss and the whole training run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List

from navid.config import SHARDED_STRATEGIES, OptimConfig, TrainerConfig
from navid.data.datamodule import DataConfig


@dataclass
class ClipGeometry:
    """The clips a tokenizer was trained on; ``navid tokenize`` / ``reconstruct`` cut clips the same way by default.

    The tokenizer is convolutional, so clips of another size encode without error, only into another grid:
    a 128-px tokenizer given 64-px clips makes 4x8x8 grids where 4x16x16 were meant.
    """

    num_frames: int
    resolution: int
    frame_stride: int

    @classmethod
    def of(cls, data: DataConfig) -> "ClipGeometry":
        return cls(num_frames=data.num_frames, resolution=data.resolution, frame_stride=data.frame_stride)


@dataclass
class TokenizerModelConfig:
    """3D conv autoencoder + quantizer.

    The encoder folds ``patch_size`` voxels into channels (cheap space-to-depth), then runs one
    stage per entry of ``channels``; between stages a strided conv downsamples by the factors
    in ``downsample``. Total compression = ``patch_size * prod(downsample)`` per axis.
    """

    in_channels: int = 3
    patch_size: List[int] = field(default_factory=lambda: [2, 4, 4])
    channels: List[int] = field(default_factory=lambda: [64, 96])
    downsample: List[List[int]] = field(default_factory=lambda: [[2, 2, 2]])
    num_res_blocks: int = 1
    out_hidden_channels: int = 16
    norm_groups: int = 8
    lowpass_shortcut: bool = True  # linear per-token colour paths around encoder and decoder (see model.py)
    quantizer: str = "fsq"
    fsq_levels: List[int] = field(default_factory=lambda: [8, 5, 5, 5])
    fsq_entropy_weight: float = 0.0  # codebook-entropy penalty spreading tokens over more codes (see fsq.py)
    fsq_entropy_temperature: float = 0.5
    vq_codebook_size: int = 1024
    vq_dim: int = 8
    vq_decay: float = 0.99
    vq_commitment_weight: float = 0.25
    vq_dead_code_threshold: float = 1e-3

    def __post_init__(self) -> None:
        if self.quantizer not in ("fsq", "vq"):
            raise ValueError(f"key 'model.quantizer' must be 'fsq' or 'vq', got {self.quantizer!r}")
        if len(self.patch_size) != 3:
            raise ValueError("key 'model.patch_size' must be [t, h, w]")
        if len(self.downsample) != len(self.channels) - 1 or any(len(d) != 3 for d in self.downsample):
            raise ValueError("key 'model.downsample' needs one [t, h, w] factor per stage transition "
                             "(len(channels) - 1)")
        for key in ("in_channels", "out_hidden_channels", "norm_groups", "vq_codebook_size", "vq_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"key 'model.{key}' must be >= 1, got {getattr(self, key)}")
        if self.num_res_blocks < 0:
            raise ValueError(f"key 'model.num_res_blocks' must be >= 0, got {self.num_res_blocks}")
        for key in ("patch_size", "channels"):
            if not getattr(self, key) or min(getattr(self, key)) < 1:
                raise ValueError(f"key 'model.{key}' needs values >= 1, got {getattr(self, key)}")
        if any(min(d) < 1 for d in self.downsample):
            raise ValueError(f"key 'model.downsample' needs factors >= 1, got {self.downsample}")
        if self.quantizer == "fsq" and (not self.fsq_levels or min(self.fsq_levels) < 2):
            raise ValueError(f"key 'model.fsq_levels' needs at least one level, each >= 2, got {self.fsq_levels}")
        for c in list(self.channels) + [self.out_hidden_channels]:
            if c % self.norm_groups:
                raise ValueError(f"channel width {c} is not divisible by key 'model.norm_groups' ({self.norm_groups})")

    @property
    def compression(self) -> tuple[int, int, int]:
        """Downsampling factor per axis (T, H, W)."""
        return tuple(p * math.prod(d[i] for d in self.downsample) for i, p in enumerate(self.patch_size))


@dataclass
class TokenizerLossConfig:
    """Reconstruction (L1 + L2), optional I3D perceptual and hinge-GAN terms."""

    l1_weight: float = 1.0
    l2_weight: float = 1.0
    perceptual_weight: float = 0.0
    perceptual_layers: List[str] = field(default_factory=lambda: ["Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f"])
    perceptual_resolution: int = 0  # frames resized to this square size for I3D; 0 keeps the clip's size
    perceptual_clips: int = 0  # clips of each batch the perceptual term sees (bounds its cost); 0 = all
    gan_weight: float = 0.0
    gan_start_step: int = 2000
    disc_warmup_steps: int = 500
    disc_channels: int = 64
    disc_layers: int = 3
    disc_lr: float = 1e-4
    adaptive_weight_max: float = 1e4

    def __post_init__(self) -> None:
        for key in ("l1_weight", "l2_weight", "perceptual_weight", "gan_weight", "perceptual_resolution",
                    "perceptual_clips"):
            if getattr(self, key) < 0:
                raise ValueError(f"key 'loss.{key}' must be >= 0")
        if self.perceptual_weight > 0:
            from navid.metrics.i3d import LAYER_NAMES

            unknown = [name for name in self.perceptual_layers if name not in LAYER_NAMES]
            if unknown or not self.perceptual_layers:
                raise ValueError(f"key 'loss.perceptual_layers': unknown I3D layers {unknown or '(none given)'}; "
                                 f"known: {', '.join(LAYER_NAMES)}")


@dataclass
class TokenizerTrainConfig:
    """Everything ``navid train-tokenizer`` needs."""

    data: DataConfig = field(default_factory=DataConfig)
    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    out_dir: str = "runs/tokenizer"
    seed: int = 0

    def __post_init__(self) -> None:
        for axis, size, key in ((0, self.data.num_frames, "num_frames"), (1, self.data.resolution, "resolution")):
            factor = self.model.compression[axis]
            if size % factor:
                raise ValueError(f"key 'data.{key}' ({size}) is not divisible by the tokenizer's compression "
                                 f"{'x'.join(map(str, self.model.compression))} (model.patch_size times "
                                 "model.downsample) along that axis")
        if self.trainer.strategy in SHARDED_STRATEGIES:
            raise ValueError(f"key 'trainer.strategy': '{self.trainer.strategy}' is wired for the generator; the "
                             "tokenizer trains with "
                             "'ddp' (at paper scale its 105M weights with their AdamW state and EMA copy take about "
                             "2 GB, which fits one GPU)")
