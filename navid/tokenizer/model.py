"""3D convolutional video tokenizer: ``(B, C, T, H, W)`` video <-> ``(B, T', H', W')`` tokens.

Each token stands for a local space-time patch (T/4 x H/8 x W/8 with the shipped configs),
which is what NAR's neighbour-to-neighbour decoding relies on. The first and last layers are
space-to-depth / depth-to-space reshapes, so the expensive convolutions all run at reduced
resolution; that keeps the CPU-tiny model fast enough to train in minutes.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from navid.tokenizer.config import ClipGeometry, TokenizerModelConfig
from navid.tokenizer.fsq import FSQ
from navid.tokenizer.vq import VectorQuantizer


class ResBlock3d(nn.Module):
    """GroupNorm -> SiLU -> Conv3d(3) twice, plus a (1x1x1 if widths differ) skip."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(groups, cin), nn.SiLU(), nn.Conv3d(cin, cout, 3, padding=1),
            nn.GroupNorm(groups, cout), nn.SiLU(), nn.Conv3d(cout, cout, 3, padding=1),
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def _stage(cin: int, cout: int, depth: int, groups: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock3d(cin if i == 0 else cout, cout, groups) for i in range(depth)])


class Downsample3d(nn.Module):
    """Strided conv by ``factor`` (t, h, w); kernel = factor, so no padding subtleties."""

    def __init__(self, cin: int, cout: int, factor: list[int]) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, tuple(factor), stride=tuple(factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3d(nn.Module):
    """1x1x1 conv to ``cout * prod(factor)`` channels, then depth-to-space (no checkerboard)."""

    def __init__(self, cin: int, cout: int, factor: list[int]) -> None:
        super().__init__()
        self.factor = tuple(factor)
        self.conv = nn.Conv3d(cin, cout * math.prod(factor), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.factor
        return rearrange(self.conv(x), "b (c pt ph pw) t h w -> b c (t pt) (h ph) (w pw)", pt=pt, ph=ph, pw=pw)


class Encoder(nn.Module):
    """(B, C, T, H, W) -> (B, D, T', H', W') continuous latents.

    With ``cfg.lowpass_shortcut`` a linear map of each token's mean colour is added to the
    latent, so the code carries colour from the first step instead of after the deep path
    has discovered it (objects on near-grey scenes otherwise stay grey for hundreds of steps).
    """

    def __init__(self, cfg: TokenizerModelConfig, latent_dim: int) -> None:
        super().__init__()
        self.compression = cfg.compression
        self.shortcut = nn.Conv3d(cfg.in_channels, latent_dim, 1) if cfg.lowpass_shortcut else None
        pt, ph, pw = cfg.patch_size
        self.patch = tuple(cfg.patch_size)
        ch, g = cfg.channels, cfg.norm_groups
        self.stem = nn.Conv3d(cfg.in_channels * pt * ph * pw, ch[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, c in enumerate(ch):
            layers.append(_stage(c, c, cfg.num_res_blocks, g))
            if i + 1 < len(ch):
                layers.append(Downsample3d(c, ch[i + 1], cfg.downsample[i]))
        layers += [ResBlock3d(ch[-1], ch[-1], g), nn.GroupNorm(g, ch[-1]), nn.SiLU(), nn.Conv3d(ch[-1], latent_dim, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pt, ph, pw = self.patch
        z = self.body(self.stem(rearrange(x, "b c (t pt) (h ph) (w pw) -> b (c pt ph pw) t h w", pt=pt, ph=ph, pw=pw)))
        if self.shortcut is None:
            return z
        return z + self.shortcut(F.avg_pool3d(x, self.compression))


class Decoder(nn.Module):
    """(B, D, T', H', W') codes -> (B, C, T, H, W) video (unclamped).

    With ``cfg.lowpass_shortcut`` a linear colour per token, trilinearly upsampled, is added
    to the output: the deep path then learns the detail on top of a low-pass video.
    """

    def __init__(self, cfg: TokenizerModelConfig, latent_dim: int) -> None:
        super().__init__()
        self.shortcut = nn.Conv3d(latent_dim, cfg.in_channels, 1) if cfg.lowpass_shortcut else None
        ch, g = list(reversed(cfg.channels)), cfg.norm_groups
        ups = list(reversed(cfg.downsample))
        layers: list[nn.Module] = [nn.Conv3d(latent_dim, ch[0], 3, padding=1), ResBlock3d(ch[0], ch[0], g)]
        for i, c in enumerate(ch):
            layers.append(_stage(c, c, cfg.num_res_blocks, g))
            if i + 1 < len(ch):
                layers.append(Upsample3d(c, ch[i + 1], ups[i]))
        hidden = cfg.out_hidden_channels
        layers += [nn.GroupNorm(g, ch[-1]), nn.SiLU(), Upsample3d(ch[-1], hidden, cfg.patch_size),
                   nn.GroupNorm(g, hidden), nn.SiLU(), nn.Conv3d(hidden, cfg.in_channels, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.body(z)
        if self.shortcut is None:
            return out
        return out + F.interpolate(self.shortcut(z), size=out.shape[-3:], mode="trilinear", align_corners=False)


class VideoTokenizer(nn.Module):
    """Encoder + quantizer + decoder.

    ``forward`` (training) returns the unclamped reconstruction, the token ids and the
    quantizer's auxiliary loss; ``encode``/``decode`` are the inference API.
    """

    def __init__(self, cfg: TokenizerModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.quantizer == "fsq":
            self.quantizer: nn.Module = FSQ(list(cfg.fsq_levels), entropy_weight=cfg.fsq_entropy_weight,
                                            entropy_temperature=cfg.fsq_entropy_temperature)
        else:
            self.quantizer = VectorQuantizer(
                cfg.vq_codebook_size, cfg.vq_dim, cfg.vq_decay, cfg.vq_commitment_weight, cfg.vq_dead_code_threshold
            )
        self.encoder = Encoder(cfg, self.quantizer.dim)
        self.decoder = Decoder(cfg, self.quantizer.dim)
        # The clips it was trained on, when known: set by training, kept in tokenizer files (no part of the
        # fingerprint, which names the weights that make the tokens).
        self.trained_clip: Optional[ClipGeometry] = None

    @property
    def vocab_size(self) -> int:
        return self.quantizer.vocab_size

    @property
    def compression(self) -> tuple[int, int, int]:
        return self.cfg.compression

    def grid_shape(self, video_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Token grid (T', H', W') of a video of shape (..., T, H, W); sizes must divide evenly."""
        t, h, w = video_shape[-3:]
        ct, ch, cw = self.compression
        if t % ct or h % ch or w % cw:
            raise ValueError(f"video size {t}x{h}x{w} is not divisible by the tokenizer's compression {ct}x{ch}x{cw}")
        return t // ct, h // ch, w // cw

    def _check(self, video: torch.Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != self.cfg.in_channels:
            raise ValueError(f"expected video (B, {self.cfg.in_channels}, T, H, W), got {tuple(video.shape)}")
        self.grid_shape(video.shape)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, T, H, W) -> (reconstruction (B, C, T, H, W), tokens (B, T', H', W'), aux loss)."""
        self._check(video)
        z_q, tokens, aux = self.quantizer(self.encoder(video))
        return self.decoder(z_q.to(video.dtype)), tokens, aux

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) in [-1, 1] -> (B, T', H', W') int64 tokens."""
        self._check(video)
        return self.quantizer(self.encoder(video))[1]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T', H', W') int64 -> (B, C, T, H, W) in [-1, 1]."""
        if tokens.ndim != 4:
            raise ValueError(f"expected tokens (B, T', H', W'), got {tuple(tokens.shape)}")
        codes = self.quantizer.indices_to_codes(tokens.long())
        return self.decoder(codes.to(next(self.decoder.parameters()).dtype)).clamp(-1, 1)
