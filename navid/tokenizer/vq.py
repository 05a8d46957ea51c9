"""Vector quantization with an l2-normalised codebook, EMA updates and dead-code restarts.

Latents and codes are compared on the unit sphere (cosine similarity), which keeps the
codebook well used (Yu et al., ViT-VQGAN, arXiv 2110.04627). The codebook is not trained by
gradients: it follows an exponential moving average of the latents assigned to each code,
and codes unused for a while are re-seeded from random latents of the current batch.
Maths in fp32 with autocast off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """``forward(z (B, D, T, H, W)) -> (z_q, indices (B, T, H, W), commitment_loss 0-dim)``."""

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        decay: float = 0.99,
        commitment_weight: float = 0.25,
        dead_code_threshold: float = 1e-3,
    ) -> None:
        super().__init__()
        self.vocab_size = codebook_size
        self.dim = dim
        self.decay = decay
        self.commitment_weight = commitment_weight
        self.dead_code_threshold = dead_code_threshold
        embed = F.normalize(torch.randn(codebook_size, dim), dim=-1)
        self.register_buffer("embed", embed)  # (K, D), unit rows
        self.register_buffer("embed_sum", embed.clone())  # (K, D) EMA of assigned latents
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # (K,) EMA of assignment counts

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z.float().movedim(1, -1).reshape(-1, self.dim), dim=-1)  # (N, D)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, D, T, H, W = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = self._flatten(z)  # (N, D)
            indices = (flat @ self.embed.t()).argmax(-1)  # (N,)
            quant = self.embed[indices]  # (N, D)
            if self.training:
                self._ema_update(flat.detach(), indices)
            loss = self.commitment_weight * F.mse_loss(flat, quant.detach())
            quant = flat + (quant - flat).detach()  # straight-through estimator
            z_q = quant.view(B, T, H, W, D).movedim(-1, 1)
        return z_q, indices.view(B, T, H, W), loss

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        onehot = F.one_hot(indices, self.vocab_size).type(flat.dtype)  # (N, K)
        counts, sums = onehot.sum(0), onehot.t() @ flat  # (K,), (K, D)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        self.embed.copy_(F.normalize(self.embed_sum, dim=-1))
        self.restart_dead_codes(flat)

    @torch.no_grad()
    def restart_dead_codes(self, flat: torch.Tensor) -> None:
        """Re-seed codes whose EMA usage fell below the threshold with random batch latents.

        Every code gets a candidate latent and only the dead ones take it, so the step never reads the number
        of dead codes on the host (a sync per training step on a GPU); under DDP rank 0's candidates are used.
        """
        dead = (self.cluster_size < self.dead_code_threshold)[:, None]  # (K, 1)
        picks = flat[torch.randint(0, flat.shape[0], (self.vocab_size,), device=flat.device)]  # (K, D)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(picks, 0)
        self.embed.copy_(torch.where(dead, picks, self.embed))
        self.embed_sum.copy_(torch.where(dead, picks, self.embed_sum))
        self.cluster_size.masked_fill_(dead[:, 0], 1.0)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W) int64 -> (B, D, T, H, W) fp32 unit-norm codes."""
        return self.embed[indices].movedim(-1, 1)
