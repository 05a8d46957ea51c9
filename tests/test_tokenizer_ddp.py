"""`navid train-tokenizer` with the GAN under 2-process DDP (gloo, CPU), launched as a user does.

The README's multi-GPU tokenizer command (`trainer.devices=8 trainer.strategy=ddp`) takes this
same code path. The GAN starts inside the run, so both of its backward passes (the generator's,
which reaches the discriminator only from ``gan_start_step``, and the discriminator's, which never
reaches the tokenizer) run under DDP.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys

import pytest

from navid.tokenizer.lightning_module import gan_strategy

GAN = [
    "loss.gan_weight=0.1", "loss.gan_start_step=3", "loss.disc_warmup_steps=1", "loss.disc_channels=8",
    "loss.disc_layers=2",
]
FAST = [
    "model.channels=[32,32]", "model.out_hidden_channels=8", "data.batch_size=2", "data.num_frames=8",
    "data.resolution=32", "trainer.progress_bar=false", "trainer.val_every_n_steps=8", "trainer.limit_val_batches=1",
    "trainer.checkpoint_every_n_steps=8", "trainer.log_every_n_steps=1", "optim.warmup_steps=2", "trainer.max_steps=8",
]


def test_gan_strategy_turns_on_unused_parameter_detection_only_for_ddp():
    assert gan_strategy("ddp", 8, 1) == "ddp_find_unused_parameters_true"
    assert gan_strategy("ddp_spawn", 2, 1) == "ddp_spawn_find_unused_parameters_true"
    assert gan_strategy("auto", 2, 1) == "ddp_find_unused_parameters_true"  # Lightning's auto picks DDP here
    assert gan_strategy("auto", 1, 2) == "ddp_find_unused_parameters_true"  # one GPU on each of two nodes
    assert gan_strategy("auto", 1, 1) == "auto"
    assert gan_strategy("auto", [3], 1) == "auto"
    assert gan_strategy("fsdp", 8, 1) == "fsdp"


@pytest.mark.slow
def test_gan_tokenizer_trains_under_two_process_ddp(synth_root, tmp_path):
    out = tmp_path / "run"
    argv = [
        sys.executable, "-m", "navid.cli", "train-tokenizer", "--config", "configs/tokenizer/tiny.yaml",
        f"data.root={synth_root}", f"out_dir={out}", *FAST, *GAN,
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
    ]
    done = subprocess.run(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "tokenizer.pt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    with open(out / "logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    d_steps = sorted(int(r["step"]) for r in rows if r.get("train/d_loss"))
    g_steps = sorted(int(r["step"]) for r in rows if r.get("train/g_loss"))
    # the discriminator trains from gan_start_step - disc_warmup_steps, its loss reaches the generator later
    assert d_steps and g_steps and d_steps[0] < g_steps[0] and len(g_steps) >= 2
    assert all(math.isfinite(float(r["train/g_loss"])) for r in rows if r.get("train/g_loss"))
