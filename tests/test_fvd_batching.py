"""`navid fvd` on a folder feeds I3D in batches: the same features, in file order, as clip by clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from navid.data.video_io import frames_to_tensor, read_video, write_video
from navid.metrics.fvd import extract_features
from navid.metrics.i3d import load_i3d
from navid.metrics.sources import SourceOptions, source_stats


@pytest.mark.slow
@pytest.mark.numerics
def test_folder_features_in_batches_equal_clip_by_clip(tmp_path):
    rng = np.random.default_rng(0)
    # Two sizes: the 48x48 clip closes a batch early, so the batches are [a, b], [c], [d].
    sizes = {"a": 32, "b": 32, "c": 48, "d": 32}
    for name, size in sizes.items():
        frames = rng.integers(0, 256, (16, size, size, 3), dtype=np.uint8)
        write_video(tmp_path / f"{name}.gif", frames)
    detector = load_i3d()

    batched = source_stats(tmp_path, detector, SourceOptions(frames=16, batch_size=2))
    paths = [tmp_path / f"{name}.gif" for name in sizes]
    assert batched.provenance["clips"] == [str(p) for p in paths]
    clips = [frames_to_tensor(read_video(p, list(range(16))))[None] for p in paths]  # (1, C, T, H, W) each
    one_by_one = torch.cat([extract_features(detector, clip) for clip in clips])
    # The same float32 arithmetic on each clip; only oneDNN's choice of kernel blocking may differ
    # with the batch size, which reorders the sums inside a convolution. Each logit is then off by
    # rounding (float32 eps 6e-8 times sqrt of ~2e4 summands per output, compounded over ~20
    # layers): ~1e-5 of the logits' scale, so 1e-4 of it bounds the difference with room.
    scale = one_by_one.abs().max().item()
    np.testing.assert_allclose(batched.features, one_by_one.numpy(), rtol=0, atol=1e-4 * scale)
