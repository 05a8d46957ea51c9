"""3D PatchGAN discriminator: each output logit judges one space-time patch of the clip."""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator3d(nn.Module):
    """(B, C, T, H, W) -> (B, 1, T', H', W') logits; ``layers`` stride-2 blocks with GroupNorm + LeakyReLU."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv3d(in_channels, channels, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers):
            c_next = channels * min(2**i, 8)
            blocks += [nn.Conv3d(c, c_next, 4, stride=2, padding=1), nn.GroupNorm(8, c_next), nn.LeakyReLU(0.2)]
            c = c_next
        blocks.append(nn.Conv3d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.net(video)
