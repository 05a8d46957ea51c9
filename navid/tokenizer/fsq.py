"""Finite scalar quantization (Mentzer et al., 2023, arXiv 2309.15505).

Each of the D latent channels is bounded and rounded to one of ``levels[d]`` values; the code
is the tuple of rounded values and its index the mixed-radix number they form. There is no
codebook to learn, so no codebook collapse: every code stays reachable. Maths runs in fp32
with autocast off so mixed-precision training rounds exactly as inference does.

FSQ keeps every *level* of every channel in use, but nothing stops the channels from being
correlated, so that only a fraction of the level *combinations* (the codes) ever occur. The
optional entropy penalty (the codebook-entropy term of MAGVIT-v2, Yu et al., 2023,
arXiv 2310.05737, applied to FSQ's soft code assignments) rewards a batch that spreads over
many codes while each token stays close to one.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FSQ(nn.Module):
    """``forward(z (B, D, T, H, W)) -> (z_q (B, D, T, H, W), indices (B, T, H, W), aux_loss 0-dim)``."""

    def __init__(self, levels: list[int], eps: float = 1e-3, entropy_weight: float = 0.0,
                 entropy_temperature: float = 0.5) -> None:
        super().__init__()
        if len(levels) == 0 or min(levels) < 2:
            raise ValueError(f"FSQ levels must be a non-empty list of integers >= 2, got {levels}")
        if entropy_weight < 0 or entropy_temperature <= 0:
            raise ValueError("FSQ entropy weight must be >= 0 and its temperature > 0")
        self.eps = eps
        self.entropy_weight = entropy_weight
        self.entropy_temperature = entropy_temperature
        lv = torch.tensor(levels, dtype=torch.int64)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.int64), lv[:-1]]), 0)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        self.dim = len(levels)
        self.vocab_size = int(lv.prod())
        self.level_counts = tuple(int(n) for n in levels)  # host copy: reading the buffer would wait for a GPU

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
            aux = z.new_zeros(())
            if self.training and self.entropy_weight > 0:
                aux = self.entropy_weight * self.entropy_penalty(bounded)
        return z_q, indices, aux

    def entropy_penalty(self, bounded: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Mean per-token code entropy minus the entropy of the batch's mean code distribution, in units of log(vocab).

        A token's soft assignment to level ``v`` of channel ``d`` is softmax over ``v`` of
        ``-(bounded_d - v)^2 / temperature``; its distribution over codes is the product over
        channels, so its entropy is the sum of the channels' entropies. The batch distribution
        is accumulated ``chunk`` tokens at a time to bound memory at large vocabularies.
        """
        flat = bounded.movedim(1, -1).reshape(-1, self.dim)  # (N, D) in level units
        per_channel = []
        for d, lv in enumerate(self.level_counts):
            values = torch.arange(lv, device=flat.device, dtype=flat.dtype) - lv // 2  # rounded values of this channel
            per_channel.append(
                (-(flat[:, d : d + 1] - values).square() / self.entropy_temperature).softmax(-1))  # (N, L_d)
        token_entropy = sum(-(p * p.clamp_min(1e-12).log()).sum(-1) for p in per_channel).mean()
        batch = flat.new_zeros(self.vocab_size)
        for rows in zip(*(p.split(chunk) for p in per_channel)):
            joint = rows[0]
            for p in rows[1:]:
                joint = (joint.unsqueeze(-1) * p.unsqueeze(1)).flatten(1)  # (n, prod of levels so far)
            batch = batch + joint.sum(0)
        batch = batch / flat.shape[0]
        batch_entropy = -(batch * batch.clamp_min(1e-12).log()).sum()
        return (token_entropy - batch_entropy) / math.log(self.vocab_size)

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
