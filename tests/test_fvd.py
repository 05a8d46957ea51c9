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
    mean_cov, resize_for_i3d,
)
from navid.metrics.i3d import load_i3d


def _scipy_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.mark.parametrize("n", [500, 40])  # full rank, and rank-deficient (n < 400 features)
def test_frechet_distance_matches_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.normal(size=(n, 400)), rng.normal(size=(n, 400)) * 1.2 + 0.3
    ours, ref = frechet_distance(*mean_cov(a), *mean_cov(b)), _scipy_fd(*mean_cov(a), *mean_cov(b))
    assert abs(ours - ref) <= 1e-6 * abs(ref)
    assert abs(fvd_from_features(a, b) - fvd_from_features(b, a)) <= 1e-9 * ours
    assert abs(fvd_from_features(a, a)) < 1e-6 * 2 * np.trace(mean_cov(a)[1])  # relative to Tr(Σ1 + Σ2)


def test_kvd_zero_in_expectation_and_positive_for_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 400)), rng.normal(size=(200, 400))
    assert abs(kvd_from_features(a, b, subsets=20, subset_size=100)) < 0.05
    assert kvd_from_features(a, b + 1.0, subsets=20, subset_size=100) > 0.5


@pytest.fixture(scope="module")
def i3d():
    return load_i3d()


def test_metric_on_real_network_is_split_invariant(i3d):
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(4, 3, 10, 32, 32, generator=g) * 2 - 1  # resized to 224 inside
    feats = extract_features(i3d, videos, batch_size=2)
    assert feats.shape == (4, 400) and feats.dtype == torch.float64
    whole = FrechetVideoDistance(detector=i3d)
    whole.update(videos, real=True)
    whole.update(videos.flip(0), real=False)
    assert abs(float(whole.compute())) < 1e-3  # FVD(x, x) ≈ 0 (same clips, other order)
    split = FrechetVideoDistance(detector=i3d)
    for chunk in feats.split(1):
        split.update(chunk, real=True)
    split.update(feats[:2] * 1.5, real=False)
    split.update(feats[2:] * 1.5, real=False)
    assert float(split.compute()) == pytest.approx(fvd_from_features(feats, feats * 1.5), rel=1e-9)


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
    assert out[0] == pytest.approx(single, rel=1e-9) and out[1] == pytest.approx(single, rel=1e-9)


def test_stats_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    stats = FeatureStats.from_features(rng.normal(size=(20, 400)), {"frames": 16, "clips": ["a.avi"]})
    stats.save(tmp_path / "s.npz")
    back = FeatureStats.load(tmp_path / "s.npz")
    assert back.count == 20 and back.provenance == stats.provenance
    np.testing.assert_array_equal(back.cov, stats.cov)
    np.testing.assert_array_equal(back.features, stats.features)
    assert abs(back.fvd(stats)) < 1e-3  # rank-deficient (20 < 400): sqrt of round-off eigenvalues


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStats.from_features(np.zeros((1, 400)))
    np.savez(tmp_path / "x.npz", a=1)
    with pytest.raises(ValueError, match="not a navid feature-statistics file"):
        FeatureStats.load(tmp_path / "x.npz")
