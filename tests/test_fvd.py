"""FrechetVideoDistance: the distance itself, the metric's states, DDP, and statistics files."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from navid.metrics.fvd import (
    FeatureStats, FrechetVideoDistance, extract_features, frechet_distance, fvd_from_features, kvd_from_features,
    low_rank_frechet, mean_cov, resize_for_i3d,
)
from navid.metrics.i3d import load_i3d

pytestmark = pytest.mark.numerics


EPS = np.finfo(np.float64).eps


def _scipy_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def sqrt_roundoff_bound(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """How far round-off alone can move a float64 Fréchet distance whose covariances are (D, D).

    The trace term sums the square roots of the D eigenvalues of a product of the covariances.
    Forming that product and its eigenvalues perturbs it by at most γ‖Σ1‖‖Σ2‖ with γ = D·eps
    (inner products of length D), and by Weyl's theorem each eigenvalue moves by no more. Where
    an eigenvalue is ~0 (rank-deficient covariances: fewer clips than features), its square root
    moves by up to the square root of that: √(γ‖Σ1‖‖Σ2‖), ≈ 1e-8 relative instead of eps. The
    distance counts 2·Tr, so it moves by at most 2·D·√(γ‖Σ1‖‖Σ2‖) on any machine and thread
    count; the order of the floating-point sums (CPU kernels) decides where inside the bound.
    """
    d = sigma1.shape[0]
    return 2 * d * float(np.sqrt(d * EPS * np.linalg.norm(sigma1, 2) * np.linalg.norm(sigma2, 2)))


@pytest.mark.parametrize("n", [500, 40])  # full rank, and rank-deficient (n < 400 features)
def test_frechet_distance_matches_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, 400)), rng.normal(size=(n, 400)) * 1.2 + 0.3
    (mu_a, cov_a), (mu_b, cov_b) = mean_cov(a), mean_cov(b)
    ours, ref = frechet_distance(mu_a, cov_a, mu_b, cov_b), _scipy_fd(mu_a, cov_a, mu_b, cov_b)
    # Two algorithms (eigh of a symmetric product vs Schur sqrtm), each within the round-off bound of the truth.
    assert abs(ours - ref) <= 2 * sqrt_roundoff_bound(cov_a, cov_b)
    assert abs(fvd_from_features(a, b) - fvd_from_features(b, a)) <= 2 * sqrt_roundoff_bound(cov_a, cov_b)
    assert abs(fvd_from_features(a, a)) <= sqrt_roundoff_bound(cov_a, cov_a)
    assert ours > 100 * sqrt_roundoff_bound(cov_a, cov_b)  # the bounds are far below the distance they check


def test_metric_is_split_invariant_on_well_conditioned_features():
    # 500 clips > 400 features: the covariances are full rank with condition number
    # ≈ ((1+√0.8)/(1−√0.8))² ≈ 320,
    # so float64 round-off in any summation order moves the distance by ~κ·D·eps ≈ 3e-11 relative.
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(500, 400)), rng.normal(size=(500, 400)) * 1.1 + 0.2
    metric = FrechetVideoDistance(detector=torch.nn.Linear(1, 1))  # features are fed directly
    for chunk in torch.from_numpy(real).split(7):
        metric.update(chunk, real=True)
    for chunk in torch.from_numpy(fake).split(64):
        metric.update(chunk, real=False)
    assert float(metric.compute()) == pytest.approx(fvd_from_features(real, fake), rel=1e-9)


def test_kvd_zero_in_expectation_and_positive_for_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 400)), rng.normal(size=(200, 400))
    assert abs(kvd_from_features(a, b, subsets=20, subset_size=100)) < 0.05
    assert kvd_from_features(a, b + 1.0, subsets=20, subset_size=100) > 0.5


def test_kvd_is_the_unbiased_cubic_kernel_mmd():
    # One subset holding every row is a permutation of the whole sets, on which the unbiased MMD² does not
    # depend; the reference sums the kernel pair by pair. Both are float64 sums of ~150 terms of size ~1:
    # they agree to ~1e-13, and a linear or quadratic kernel would miss by more than the value itself.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) * 1.3 + 0.4
    k = lambda x, y: (float(x @ y) / 5 + 1) ** 3  # noqa: E731
    same = lambda s: sum(k(s[i], s[j]) for i in range(12) for j in range(12) if i != j) / (12 * 11)  # noqa: E731
    reference = same(a) + same(b) - 2 * sum(k(x, y) for x in a for y in b) / 144
    assert kvd_from_features(a, b, subsets=1, subset_size=12) == pytest.approx(reference, rel=1e-10)
    assert abs(reference) > 0.1


@pytest.mark.parametrize("n", [40, 500])  # fewer clips than features (the per-class case), and more
def test_low_rank_frechet_equals_the_frechet_distance_of_the_covariances(n):
    # The per-class FVD matrix uses it: Tr((S_a S_b)^1/2) as the singular values of A B^T, the same distance
    # as the eigen-decomposition path, so the two agree within the round-off bound of the latter.
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, 400)), rng.normal(size=(n + 7, 400)) * 1.2 + 0.3
    (mu_a, cov_a), (mu_b, cov_b) = mean_cov(a), mean_cov(b)
    full = frechet_distance(mu_a, cov_a, mu_b, cov_b)
    assert abs(low_rank_frechet(a, b) - full) <= 2 * sqrt_roundoff_bound(cov_a, cov_b)
    assert full > 100 * sqrt_roundoff_bound(cov_a, cov_b)


@pytest.fixture(scope="module")
def i3d():
    return load_i3d()


def test_metric_on_real_network_is_split_invariant(i3d):
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(4, 3, 10, 32, 32, generator=g) * 2 - 1  # resized to 224 inside
    feats = extract_features(i3d, videos, batch_size=2)
    assert feats.shape == (4, 400) and feats.dtype == torch.float64
    cov = mean_cov(feats.numpy())[1]  # rank 3 of 400: every distance here sits on the round-off floor
    whole = FrechetVideoDistance(detector=i3d)
    whole.update(videos, real=True)
    whole.update(videos.flip(0), real=False)
    assert abs(float(whole.compute())) <= sqrt_roundoff_bound(cov, cov)  # FVD(x, x) = 0 up to round-off
    assert torch.equal(whole.real_count, whole.fake_count)

    # Fed one clip at a time, the float64 sums equal the batch sums up to the summation order:
    # |Δ| ≤ n·eps·Σ|x| for the sums and n·eps·Σ|x x^T| for the outer products.
    split = FrechetVideoDistance(detector=i3d)
    for chunk in feats.split(1):
        split.update(chunk, real=True)
    split.update(feats[:2] * 1.5, real=False)
    split.update(feats[2:] * 1.5, real=False)
    n, mags = len(feats), feats.abs()
    torch.testing.assert_close(split.real_sum, feats.sum(0), rtol=0, atol=float(n * EPS * mags.sum(0).max()))
    torch.testing.assert_close(split.real_outer, feats.T @ feats, rtol=0, atol=float(n * EPS * (mags.T @ mags).max()))
    assert int(split.real_count) == int(split.fake_count) == n
    direct = fvd_from_features(feats, feats * 1.5)
    assert abs(float(split.compute()) - direct) <= 2 * sqrt_roundoff_bound(cov, cov * 2.25)
    assert direct > 100 * sqrt_roundoff_bound(cov, cov * 2.25)


def test_resize_is_bilinear_without_antialias():
    x = torch.rand(1, 3, 2, 50, 60) * 2 - 1
    y = resize_for_i3d(x)
    ref = torch.nn.functional.interpolate(x[0].transpose(0, 1), size=(224, 224), mode="bilinear", align_corners=False)
    assert torch.equal(y[0].transpose(0, 1), ref)


def _ddp_worker(rank, port, feats, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    metric = FrechetVideoDistance(detector=torch.nn.Linear(1, 1))  # features are fed directly
    real, fake = feats
    metric.update(real[rank::2], real=True)
    metric.update(fake[rank::2], real=False)
    value = metric.compute()
    out[rank] = float(value)
    dist.destroy_process_group()


def test_two_process_gloo_matches_single_process():
    rng = np.random.default_rng(1)
    real, fake = torch.from_numpy(rng.normal(size=(30, 400))), torch.from_numpy(rng.normal(size=(26, 400)) + 0.2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(port, (real, fake), out), nprocs=2, join=True)
    single = fvd_from_features(real.numpy(), fake.numpy())
    # 30 and 26 clips in 400 dimensions: rank-deficient, so agreement is bounded by the round-off floor.
    bound = sqrt_roundoff_bound(mean_cov(real.numpy())[1], mean_cov(fake.numpy())[1])
    assert abs(out[0] - single) <= 2 * bound and abs(out[1] - single) <= 2 * bound
    assert out[0] == out[1]  # every rank computes the distance from the same all-reduced sums


def test_stats_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    stats = FeatureStats.from_features(rng.normal(size=(20, 400)), {"frames": 16, "clips": ["a.avi"]})
    stats.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    assert back.count == 20 and back.provenance == stats.provenance
    np.testing.assert_array_equal(back.cov, stats.cov)
    np.testing.assert_array_equal(back.features, stats.features)
    assert abs(back.fvd(stats)) <= sqrt_roundoff_bound(stats.cov, stats.cov)  # rank 19 of 400


class ConvolutionPrecisionSeen(torch.nn.Module):
    """A detector (one 1x1x1 convolution to 400 logits) noting cuDNN's fp32 convolution mode at each call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 400, 1)
        self.modes: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, 224, 224) -> (B, 400)
        self.modes.append(torch.backends.cudnn.conv.fp32_precision)
        return self.conv(x).mean(dim=(2, 3, 4))


def test_features_are_computed_with_true_fp32_convolutions():
    """cuDNN's default for fp32 convolutions is TF32, which moves I3D's logits by ~2e-2 (docs/fvd.md): FVD features
    switch it to true fp32 for the detector's calls only, and leave the setting as it was."""
    before = torch.backends.cudnn.conv.fp32_precision
    detector = ConvolutionPrecisionSeen()
    features = extract_features(detector, torch.zeros(3, 3, 10, 32, 32), batch_size=2)
    assert features.shape == (3, 400) and detector.modes == ["ieee", "ieee"]
    assert torch.backends.cudnn.conv.fp32_precision == before


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_features(np.zeros((1, 400)))
    np.savez(tmp_path / "x.npz", a=1)
    with pytest.raises(ValueError, match="not a navid feature-statistics file"):
        FeatureStats.load(tmp_path / "x.npz")
