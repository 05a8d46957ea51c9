"""Fréchet Video Distance as papers report it (StyleGAN-V protocol, used by LARP / NAR / NBP).

Features: 400-d logits of the TF-Hub Kinetics-400 I3D on 224x224 frames resized with bilinear
``F.interpolate`` (align_corners=False, no antialias). Statistics are float64 sums, outer-product
sums and counts, so they add up across batches and processes (sum reduction under DDP). The
convolutions run in true fp32 on every device (:func:`fp32_convolutions`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from navid.metrics.i3d import NUM_CLASSES, load_i3d
from navid.utils.atomic import atomic_path
from navid.utils.checkpoint_file import load_array_file

RESOLUTION = 224
RESIZE_METHOD = "F.interpolate bilinear align_corners=False antialias=False to 224x224"


def resize_for_i3d(videos: torch.Tensor) -> torch.Tensor:
    """Protocol resize: (B, C, T, H, W) → (B, C, T, 224, 224), per frame."""
    return resize_for_i3d_to(videos, RESOLUTION)


def resize_for_i3d_to(videos: torch.Tensor, size: int) -> torch.Tensor:
    """The protocol's per-frame bilinear resize, to ``size`` x ``size``."""
    b, c, t, h, w = videos.shape
    if (h, w) == (size, size):
        return videos
    frames = videos.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False)
    return frames.reshape(b, t, c, size, size).permute(0, 2, 1, 3, 4)


def quantize_uint8(videos: torch.Tensor) -> torch.Tensor:
    """Videos in [-1, 1] as they come back from uint8 frames: the values of
    ``frames_to_tensor(tensor_to_frames(v))`` (clamped, rounded to 256 levels), on the videos' device.

    StyleGAN-V quantises generated clips this way before I3D; real clips are uint8 already.
    """
    return videos.clamp(-1.0, 1.0).add(1.0).mul(127.5).round().div(127.5).sub(1.0)


@contextmanager
def fp32_convolutions():
    """cuDNN's fp32 convolutions in true fp32 instead of its default TF32 (10-bit mantissa inputs).

    The I3D port matches the reference logits to ~2e-5 in fp32 (tests/test_i3d.py); with inputs and weights
    rounded as TF32 rounds them its largest logit error grows to ~2e-2 (CPU emulation, docs/fvd.md), so FVD
    would depend on the GPU's generation. Only the convolution flag is touched (I3D has no matmul), through
    torch's per-operator API, and restored after. No effect on a CPU.
    """
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    conv.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision = before


@torch.no_grad()
def extract_features(detector: torch.nn.Module, videos: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """(B, C, T, H, W) in [-1, 1] → (B, 400) float64 I3D logits, ``batch_size`` clips at a time."""
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ValueError(f"expected videos (B, 3, T, H, W), got shape {tuple(videos.shape)}")
    device = next(detector.parameters()).device
    with fp32_convolutions():
        out = [
            detector(resize_for_i3d(chunk.to(device=device, dtype=torch.float32))).double().cpu()
            for chunk in videos.split(batch_size)
        ]
    return torch.cat(out)


def _sqrtm_psd(mat: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), via symmetric eigen-decompositions:
    Tr((Σ1Σ2)^½) = Tr((√Σ1 Σ2 √Σ1)^½), whose argument is symmetric PSD, so no complex parts appear."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _sqrtm_psd(sigma1)
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    tr_covmean = np.sqrt(np.clip(inner, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def _covariance_factor(features: np.ndarray) -> np.ndarray:
    """``A`` (n, D) with ``A.T @ A`` = the unbiased covariance of ``features`` (n, D)."""
    centred = features - features.mean(axis=0)
    return centred / np.sqrt(max(len(features) - 1, 1))


def low_rank_frechet(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance of two small feature sets (n_a, D), (n_b, D), exact, in float64.

    With covariances ``A^T A`` and ``B^T B``, ``Tr((S_a S_b)^1/2)`` is the sum of the
    singular values of ``A B^T`` (n_a × n_b): the non-zero eigenvalues of ``A^T A B^T B``
    are those of ``(A B^T)(A B^T)^T``. A per-class matrix of 101 × 101 distances therefore
    costs small SVDs instead of 10,201 square roots of D × D matrices.
    """
    a, b = features_a.astype(np.float64), features_b.astype(np.float64)
    fa, fb = _covariance_factor(a), _covariance_factor(b)
    trace_sqrt = np.linalg.svd(fa @ fb.T, compute_uv=False).sum()
    mean_term = np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2)
    return float(mean_term + np.sum(fa * fa) + np.sum(fb * fb) - 2.0 * trace_sqrt)


def mean_cov(features) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(features, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"need at least 2 feature vectors (N, D), got shape {feats.shape}")
    return feats.mean(0), np.cov(feats, rowvar=False)


def fvd_from_features(feats_a, feats_b) -> float:
    """FVD between two (N, 400) feature arrays."""
    return frechet_distance(*mean_cov(feats_a), *mean_cov(feats_b))


def kvd_from_features(feats_a, feats_b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """Kernel Video Distance: unbiased MMD² with the cubic polynomial kernel k(x,y) = (x·y/d + 1)³,
    averaged over random subsets (as KID, Bińkowski et al. 2018)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    m = min(len(a), len(b), subset_size)
    if m < 2:
        raise ValueError("KVD needs at least 2 clips on each side")
    d, rng, total = a.shape[1], np.random.default_rng(seed), 0.0
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        total += ((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean())
    return float(total / subsets)


@dataclass
class FeatureStats:
    """Mean / covariance / count of I3D features plus the protocol that produced them."""

    mean: np.ndarray
    cov: np.ndarray
    count: int
    provenance: dict = field(default_factory=dict)
    features: np.ndarray | None = None  # (N, 400) per-clip features when known (KVD needs them)

    @classmethod
    def from_sums(cls, total: np.ndarray, outer: np.ndarray, count: int, provenance: dict | None = None):
        if count < 2:
            raise ValueError(f"need at least 2 clips for feature statistics, got {count}")
        mean = total / count
        cov = (outer - count * np.outer(mean, mean)) / (count - 1)  # unbiased
        return cls(mean, cov, int(count), dict(provenance or {}))

    @classmethod
    def from_features(cls, features, provenance: dict | None = None):
        feats = np.asarray(features, np.float64)
        stats = cls.from_sums(feats.sum(0), feats.T @ feats, len(feats), provenance)
        stats.features = feats
        return stats

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                extra = {} if self.features is None else {"features": self.features}
                np.savez(f, mean=self.mean, cov=self.cov, count=self.count, provenance=json.dumps(self.provenance),
                         **extra)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """A file :meth:`save` wrote; anything else (damaged, truncated, another kind of .npz) is a ``ValueError``
        naming it, never numpy's advice to load it with ``allow_pickle``."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such feature-statistics file")
        what, remedy = "feature-statistics file", "is it a complete copy of what navid wrote?"
        damaged = f"{path}: not a readable {what} ({{}}); {remedy}"
        with load_array_file(path, what, remedy) as z:
            try:
                arrays = {name: z[name] for name in z.files}
            except Exception as err:  # a member damaged after the archive's index: numpy and zipfile raise many kinds
                raise ValueError(damaged.format(type(err).__name__)) from None
        missing = {"mean", "cov", "count", "provenance"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: not a navid feature-statistics file (missing {sorted(missing)})")
        try:
            provenance, count = json.loads(str(arrays["provenance"])), int(arrays["count"])
        except (TypeError, ValueError) as err:
            raise ValueError(damaged.format(type(err).__name__)) from None
        return cls(arrays["mean"], arrays["cov"], count, provenance, arrays.get("features"))

    def fvd(self, other: "FeatureStats") -> float:
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)


class FrechetVideoDistance(Metric):
    """``update(videos (B, C, T, H, W) in [-1, 1], real: bool)``; ``compute()`` → FVD (float64 tensor).

    ``detector`` lets callers share one loaded I3D between metrics; ``update`` also takes (B, 400)
    features from :func:`extract_features`, for per-class or cached evaluations."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, weights=None, batch_size: int = 8, detector: torch.nn.Module | None = None, **kwargs):
        super().__init__(**kwargs)
        self.detector = detector if detector is not None else load_i3d(weights)
        self.batch_size = batch_size
        d = NUM_CLASSES
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, videos: torch.Tensor, real: bool) -> None:
        """Add clips (B, C, T, H, W) in [-1, 1], or precomputed I3D features (B, 400)."""
        features = videos if videos.ndim == 2 else extract_features(self.detector, videos, self.batch_size)
        side = "real" if real else "fake"
        feats = features.to(device=self.real_sum.device, dtype=torch.float64)
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + feats.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + feats.T @ feats)
        setattr(self, f"{side}_count", getattr(self, f"{side}_count") + feats.shape[0])

    def stats(self, real: bool) -> FeatureStats:
        side = "real" if real else "fake"
        return FeatureStats.from_sums(
            getattr(self, f"{side}_sum").cpu().numpy(),
            getattr(self, f"{side}_outer").cpu().numpy(),
            int(getattr(self, f"{side}_count").item()),
            {"detector_sha256": getattr(self.detector, "weights_sha256", ""), "resize": RESIZE_METHOD},
        )

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.stats(True).fvd(self.stats(False)), dtype=torch.float64)
