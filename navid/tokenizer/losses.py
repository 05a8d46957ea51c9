"""Loss functions of tokenizer training: small, stateless, one job each."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, l1_weight: float, l2_weight: float) -> torch.Tensor:
    """Weighted L1 + L2 between (B, C, T, H, W) videos, in fp32."""
    recon, target = recon.float(), target.float()
    return l1_weight * F.l1_loss(recon, target) + l2_weight * F.mse_loss(recon, target)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss (Lim & Ye, 2017)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator side of the hinge GAN."""
    return -logits_fake.mean()


def adaptive_gan_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float) -> torch.Tensor:
    """Balance the GAN gradient against the reconstruction gradient at the decoder's last layer.

    VQGAN's rule (Esser et al., 2021): ``|grad rec| / (|grad gan| + 1e-4)``, clamped, detached.
    """
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


def psnr(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-clip PSNR in dB of (B, C, T, H, W) videos in [-1, 1] (peak-to-peak range 2)."""
    mse = (recon.float() - target.float()).square().flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-10))


def code_counts(tokens: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(vocab_size,) int64: how often each code occurs in ``tokens`` (any shape), counted on their device.

    Not ``torch.bincount``: on CUDA it reads the ids' min and max back to the host, so every
    training step would wait for the GPU. Ids are clamped into the vocabulary: a NaN latent (a
    diverged run, a corrupt clip) gives an arbitrary id, and the non-finite loss check should be
    what reports it.
    """
    ids = tokens.flatten().clamp(0, vocab_size - 1)
    return torch.zeros(vocab_size, dtype=torch.int64, device=tokens.device).scatter_add_(0, ids, torch.ones_like(ids))


def codebook_stats(tokens: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fraction of the vocabulary used, perplexity) of a batch of token ids."""
    counts = code_counts(tokens, vocab_size).float()
    probs = counts / counts.sum()
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum()
    return (counts > 0).float().mean(), entropy.exp()
