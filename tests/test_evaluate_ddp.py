"""``navid evaluate`` sharded over 2 ranks (torchrun, gloo) scores like 1 process; what reaches I3D is uint8;
the generated batches share one KV cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from generator_helpers import synthetic_generator


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(dataset root, generator ckpt, tokenizer): 2 classes x 3 train videos of 20 frames (one 16-frame chunk each)."""
    return synthetic_generator(tmp_path_factory.mktemp("evalddp"), videos_per_class=4)


def test_generated_and_real_clips_reach_the_features_as_uint8(setup):
    from navid.generation.checkpoint import load_generator
    from navid.generation.evaluation import evaluate_generator
    from navid.generation.sampler import SamplingConfig
    from navid.metrics.fvd import quantize_uint8
    from navid.metrics.real_chunks import ChunkClips, draw_chunks
    from navid.tokenizer.checkpoint import load_tokenizer

    data, generator, tokenizer = setup
    model, schedule, _ = load_generator(generator)
    real = ChunkClips(draw_chunks(data, 4, seed=42, num_frames=16), resolution=64)
    seen, caches = [], []

    def features(video):  # (B, C, T, H, W) -> (B, 3) per-channel means: enough for FVD's arithmetic
        seen.append(video)
        if model.decode_tables is not None:  # a generated batch: the batches share one kept KV cache
            caches.append(model.layers[0].attn.cache.k.data_ptr())
        return video.mean(dim=(2, 3, 4)).double().numpy()

    tokenizer = load_tokenizer(tokenizer)
    report = evaluate_generator(model, schedule, tokenizer, real, SamplingConfig(seed=0), 2, features, progress=False)
    assert report["num_generated"] == report["num_real"] == 4 and len(seen) == 4  # 2 real + 2 generated batches
    assert report["sampling_seconds_rank0"] > 0 and report["compile_seconds_rank0"] == 0.0  # eager: nothing compiled
    assert len(caches) == 2 and caches[0] == caches[1] and model.decode_tables is None  # freed after the last batch
    for video in seen:  # on the 256 levels of uint8 frames: what frames_to_tensor gives (test_fvd_protocol)
        assert torch.equal(quantize_uint8(video), video)


def _evaluate(argv_prefix: list[str], setup, out, extra: list[str]) -> dict:
    data, generator, tokenizer = setup
    argv = [*argv_prefix, "evaluate", "--generator", str(generator), "--tokenizer", str(tokenizer), "--data", str(data),
            "--num-clips", "4", "--batch-size", "2", "--num-workers", "0", "--seed", "3", "--json", str(out), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_ranks_under_torchrun_score_like_one_process(setup, tmp_path):
    # `python -m torch.distributed.run` is the `torchrun` console script, without depending on PATH.
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    torchrun += ["-m", "navid.cli"]
    single = [sys.executable, "-m", "navid.cli"]
    one = _evaluate(single, setup, tmp_path / "one.json", [])
    two = _evaluate(torchrun, setup, tmp_path / "two.json", ["--stats-cache", str(tmp_path / "stats")])
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert one["real_clips"]["protocol"] == "nar" and one["real_clips"]["seed"] == 42
    assert two["real_clips"]["chunks"] == one["real_clips"]["chunks"] and len(one["real_clips"]["chunks"]) == 4
    # Both runs put the same global batches (same clips, same per-batch seeds) through the same kernels on one
    # thread each, so every I3D feature is bitwise equal; the float64 statistics then see the same rows in the
    # same order. 1e-9 is round-off slack only: a rank-dependent seed moves FVD by percents.
    assert two["fvd"] == pytest.approx(one["fvd"], rel=1e-9)
    assert two["kvd"] == pytest.approx(one["kvd"], rel=1e-9, abs=1e-12)
    # The real features cached by the 2-rank run serve a 1-process run (same protocol, same chunks).
    again = _evaluate(single, setup, tmp_path / "again.json", ["--stats-cache", str(tmp_path / "stats")])
    assert again["fvd"] == pytest.approx(one["fvd"], rel=1e-9)
    assert [p.name.split("-")[1] for p in (tmp_path / "stats").iterdir()] == ["nar"]
