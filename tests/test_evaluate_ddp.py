"""``navid evaluate`` sharded over 2 ranks (torchrun, gloo) scores like 1 process; what reaches I3D is uint8;
the generated batches share one KV cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

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


def _real_features_on_rank(rank: int, init_file: str, caches: list, out: str) -> None:
    import numpy as np
    import torch.distributed as dist

    from navid.generation.evaluation import reference_features

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    clips = [(torch.full((3, 2, 4, 4), float(i)), 0) for i in range(6)]
    feats = reference_features(clips, np.arange(6), lambda v: v.mean(dim=(2, 3, 4)).double().numpy(), 2,
                               stats_cache=caches[rank], cache_key={"protocol": "test"}, progress=False)
    np.save(f"{out}/rank{rank}.npy", feats)
    dist.destroy_process_group()


def test_rank0_alone_decides_whether_the_real_features_are_cached(tmp_path):
    # Rank 1 sees a cache file rank 0 does not (a stale network file system view, a writer finishing between
    # the two looks). Judged per rank, rank 1 would skip the gathers rank 0 runs and the run would hang or
    # pair rank 1's generated rows with rank 0's real ones.
    import numpy as np
    import torch.multiprocessing as mp

    from navid.generation.evaluation import reference_features

    seen_by_1, seen_by_0 = tmp_path / "cache1", tmp_path / "cache0"
    stale = [(torch.full((3, 2, 4, 4), 7.0), 0)] * 6
    reference_features(stale, np.arange(6), lambda v: v.mean(dim=(2, 3, 4)).double().numpy(), 2,
                       stats_cache=seen_by_1, cache_key={"protocol": "test"}, progress=False)
    args = (str(tmp_path / "init"), [seen_by_0, seen_by_1], str(tmp_path))
    context = mp.start_processes(_real_features_on_rank, args=args, nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        assert time.monotonic() < deadline, "ranks hung"
    expected = np.repeat(np.arange(6.0)[:, None], 3, axis=1)  # each clip's channel means: its index
    assert np.array_equal(np.load(tmp_path / "rank0.npy"), expected)
    assert np.array_equal(np.load(tmp_path / "rank1.npy"), expected)


def _damaged_cache_on_rank(rank: int, init_file: str, cache: str, out: str) -> None:
    import numpy as np
    import torch.distributed as dist

    from navid.generation.evaluation import reference_features

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    clips = [(torch.full((3, 2, 4, 4), float(i)), 0) for i in range(6)]
    try:
        reference_features(clips, np.arange(6), lambda v: v.mean(dim=(2, 3, 4)).double().numpy(), 2,
                           stats_cache=cache, cache_key={"protocol": "test"}, progress=False)
    except ValueError as err:
        (Path(out) / f"rank{rank}.err").write_text(str(err))
    dist.destroy_process_group()


def test_a_damaged_stats_cache_file_stops_every_rank_with_its_name(tmp_path):
    # A truncated cache file made rank 0 raise numpy's BadZipFile before it told the other ranks anything: they
    # waited in the broadcast for good. Now every rank stops with one line naming the file.
    import numpy as np
    import torch.multiprocessing as mp

    from navid.generation.evaluation import reference_features

    cache = tmp_path / "cache"
    reference_features([(torch.zeros(3, 2, 4, 4), 0)] * 6, np.arange(6), lambda v: v.mean(dim=(2, 3, 4)).double()
                       .numpy(), 2, stats_cache=cache, cache_key={"protocol": "test"}, progress=False)
    (cached,) = cache.iterdir()
    cached.write_bytes(cached.read_bytes()[:200])
    args = (str(tmp_path / "init"), str(cache), str(tmp_path))
    context = mp.start_processes(_damaged_cache_on_rank, args=args, nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not context.join(timeout=1):
        assert time.monotonic() < deadline, "ranks hung"
    for rank in (0, 1):
        err = (tmp_path / f"rank{rank}.err").read_text()
        assert f"{cached}: not a readable feature-statistics file" in err and "remove it" in err, err
