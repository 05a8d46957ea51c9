"""2-process DDP (gloo, CPU) generator training follows the single-process loss trajectory.

The multi-GPU / multi-node commands in docs/generator.md use this same code path with
``trainer.devices``, ``trainer.num_nodes`` and ``trainer.strategy``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from generator_helpers import assert_same_weights, make_token_cache, tiny_overrides


def _train(cache, out, batch_size: int, devices: int) -> list[float]:
    extra = {"data.batch_size": batch_size, "trainer.devices": devices,
             "trainer.strategy": "ddp" if devices > 1 else "auto"}
    argv = [sys.executable, "-m", "navid.cli", "train", *tiny_overrides(cache, out, steps=8, **extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(out / "logs" / "version_0" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["train/loss"]]
    return [float(row["train/loss"]) for row in sorted(rows, key=lambda r: int(r["step"]))]


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    # 8 clips: one process takes them all in one batch of 8; two DDP ranks take 4 each. The
    # averaged gradient, and the loss logged with sync_dist (mean over ranks), are the same.
    cache = make_token_cache(tmp_path / "cache", num_clips=8, num_classes=4)
    single = _train(cache, tmp_path / "single", batch_size=8, devices=1)
    ddp = _train(cache, tmp_path / "ddp", batch_size=4, devices=2)
    assert len(single) == len(ddp) == 8
    assert single[-1] < single[0]
    # All-reduced float32 gradients differ from one batch's only by the summation order (~1e-7 relative), and
    # eight Adam steps on them keep the logged losses within ~1e-6 relative: 1e-4 is the round-off bound with
    # margin for the thread count, far below a step's loss change.
    assert ddp == pytest.approx(single, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_ddp_resume_trains_on_the_batches_of_the_uninterrupted_run(tmp_path):
    # 2 ranks x 10 clips in batches of 4: 2 batches an epoch; stopped inside the second epoch. Each rank's share of
    # the order and its label dropout draws must continue where they stopped.
    import torch

    cache = make_token_cache(tmp_path / "cache", num_clips=20, num_classes=3)
    extra = {"trainer.devices": 2, "trainer.strategy": "ddp", "optim.min_lr_ratio": 1.0,
             "model.overrides.class_dropout": 0.5}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def train(out, steps: int, *flags: str) -> dict:
        argv = [sys.executable, "-m", "navid.cli", "train", *tiny_overrides(cache, out, steps=steps, **extra), *flags]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)

    full = train(tmp_path / "full", 7)
    assert train(tmp_path / "split", 3)["global_step"] == 3
    resumed = train(tmp_path / "split", 7, "--resume")
    assert resumed["global_step"] == 7
    assert_same_weights(resumed, full)


LEAVES_THE_GROUP = """
import sys

import torch.distributed as dist

from navid.config import load_config
from navid.generation.config import GeneratorTrainConfig
from navid.generation.lightning_module import train_generator

train_generator(load_config(GeneratorTrainConfig, None, sys.argv[1:]))
print(f"rank {dist.get_rank() if dist.is_initialized() else None}: done", flush=True)
"""


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.slow
def test_training_leaves_the_process_group_it_ran_in(tmp_path, strategy):
    # Lightning leaves the group up; a gloo rank that exits while its peer still runs can abort the peer, and NCCL
    # warns at exit about a group that was not destroyed.
    cache = make_token_cache(tmp_path / "cache", num_clips=8, num_classes=2)
    script = tmp_path / "train.py"
    script.write_text(LEAVES_THE_GROUP)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
            *tiny_overrides(cache, tmp_path / "run", steps=2, **{"trainer.devices": 2, "trainer.strategy": strategy})]
    done = subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("rank None: done") == 2, done.stdout[-2000:]


@pytest.mark.slow
def test_ddp_time_limit_is_read_at_logging_steps(tmp_path):
    """With several ranks rank 0's clock reaches the others by a broadcast, a host sync: it is read only at the
    steps where logging synchronises the ranks anyway. A limit passed at once stops the run at the first logging
    step (every 3rd here), on both ranks, with last.ckpt written there (before: at step 1, after a sync per step)."""
    import torch

    cache = make_token_cache(tmp_path / "cache", num_clips=8, num_classes=2)
    extra = {"trainer.devices": 2, "trainer.strategy": "ddp", "trainer.log_every_n_steps": 3,
             "trainer.max_time_minutes": 1e-9}
    argv = [sys.executable, "-m", "navid.cli", "train", *tiny_overrides(cache, tmp_path / "run", steps=7, **extra)]
    done = subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max_time_minutes=1e-09 reached: stopping at step 3" in done.stdout, done.stdout[-2000:]
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
