"""Finite scalar quantization (Mentzer et al., 2023, arXiv 2309.15505).

Each of the D latent channels is bounded and rounded to one of ``levels[d]`` values; the code
is the tuple of rounded values and its index the mixed-radix number they form. There is no
codebook to learn, so no codebook collapse: every code stays reachable. Maths runs in fp32
with autocast off so mixed-precision training rounds exactly as inference does.
"""

from __future__ import annotations

import torch
from torch import nn


class FSQ(nn.Module):
    """``forward(z (B, D, T, H, W)) -> (z_q (B, D, T, H, W), indices (B, T, H, W), aux_loss 0-dim)``."""

    def __init__(self, levels: list[int], eps: float = 1e-3) -> None:
        super().__init__()
        if len(levels) == 0 or min(levels) < 2:
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        self.eps = eps
        lv = torch.tensor(levels, dtype=torch.int64)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), lv[:-1]]), 0)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.dim = len(levels)
        self.vocab_size = int(lv.prod())

    def _view(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(1, -1, 1, 1, 1)  # broadcast (D,) over (B, D, T, H, W)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash ``z`` so that rounding yields exactly ``levels[d]`` integer values per channel."""
        lv = self._view(self.levels).float()
        half = (lv - 1) * (1 + self.eps) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = z.float()
            bounded = self.bound(z)
            rounded = bounded + (bounded.round() - bounded).detach()  # straight-through estimator
            half_width = self._view(self.levels // 2).float()
            z_q = rounded / half_width  # (B, D, T, H, W) in [-1, 1]
            indices = self.codes_to_indices(z_q)
        return z_q, indices, z.new_zeros(())

    def codes_to_indices(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, D, T, H, W) normalised codes -> (B, T, H, W) int64 indices."""
        half_width = self._view(self.levels // 2)
        digits = (z_q * half_width).round().long() + half_width  # (B, D, T, H, W) in [0, L)
        return (digits * self._view(self.basis)).sum(1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) int64 -> (B, D, T, H, W) fp32 normalised codes; exact inverse of encoding."""
        digits = (indices.unsqueeze(1) // self._view(self.basis)) % self._view(self.levels)
        half_width = self._view(self.levels // 2)
        return (digits - half_width).float() / half_width.float()
