"""``trainer.strategy=fsdp`` / ``hsdp`` (FSDP2, gloo, CPU): the README's commands, run as real ``navid train``
processes.

Sharded training must give the weights of the single-process run, its checkpoints must resume exactly under FSDP and
under DDP (and DDP's under FSDP), and validation, previews, bf16-mixed, accumulation and ``navid sample`` must work
on a sharded run.
"""

from __future__ import annotations

import csv
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from generator_helpers import (
    assert_same_weights, cache_of_tokenizer, make_token_cache, make_tokenizer, tiny_overrides,
)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def _train(cache: Path, out: Path, steps: int, *flags: str, launcher: tuple[str, ...] = (), **extra) -> str:
    navid = [*launcher, "-m", "navid.cli"] if launcher else [sys.executable, "-m", "navid.cli"]
    return _run([*navid, "train", *tiny_overrides(cache, out, steps=steps, **extra), *flags])


def _last(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_torchrun_fsdp_shards_the_weights_and_trains_like_one_process(tmp_path):
    # 8 clips: one process takes them in one batch of 8, two ranks 4 each; the gradient is the same mean. Clipping
    # at 0.05 acts at every step (it moves these weights by ~2e-3), so the norm must be taken over all shards.
    cache = make_token_cache(tmp_path / "cache", num_clips=8, num_classes=4)
    _train(cache, tmp_path / "single", 8, **{"data.batch_size": 8, "trainer.gradient_clip_val": 0.05})
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    log = _train(cache, tmp_path / "fsdp", 8, launcher=torchrun, **{
        "data.batch_size": 4, "trainer.devices": 2, "trainer.strategy": "fsdp", "trainer.gradient_clip_val": 0.05})
    held, total = (int(n.replace(",", "")) for n in re.search(r"holds ([\d,]+) of the model's ([\d,]+)", log).groups())
    fsdp, single = _last(tmp_path / "fsdp"), _last(tmp_path / "single")
    weights = [v for k, v in single["state_dict"].items() if k.startswith("model.") and v.numel()]
    assert total == sum(v.numel() for v in weights)
    # Each weight is split along its first dimension, and rank 0 takes the larger half of an odd one.
    assert held == sum(math.ceil(len(v) / 2) * v[0].numel() for v in weights)
    assert fsdp["state_dict"].keys() == single["state_dict"].keys()  # the gathered file is a one-process checkpoint
    # Reduce-scattered float32 gradients differ from one batch's only in summation order (~1e-7 relative); see
    # assert_same_weights for the tolerance.
    assert_same_weights(fsdp, single)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_on_two_nodes(cache: Path, out: Path, steps: int, *flags: str, **extra) -> str:
    """The README's multi-node command: one ``torchrun`` agent a node meeting at a c10d rendezvous, here two "nodes"
    of 2 ranks each on this machine."""
    endpoint = f"127.0.0.1:{_free_port()}"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
                "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", out.name,
                "-m", "navid.cli", "train", *flags,
                *tiny_overrides(cache, out, steps=steps, **{"trainer.num_nodes": 2, "trainer.devices": 2, **extra})]
    agents = [subprocess.Popen(torchrun, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    logs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], "\n".join(log[-3000:] for log in logs)
    return "\n".join(logs)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["hsdp", "ddp"])
def test_two_node_torchrun_trains_like_one_process(tmp_path, strategy):
    # 16 clips: one process takes them in one batch of 16, 2 nodes x 2 ranks 4 each (under hsdp as 2 micro-batches
    # of 2). Under hsdp each node's 2 ranks hold half of every weight and the nodes hold replicas; the first
    # micro-batch's gradient shards are averaged across nodes only with the second's. Clipping at 0.05 acts at every
    # step, so the gradient norm must count each shard once, not once per replica. The hsdp run stops at step 3 and
    # resumes: its checkpoint is loaded into the shards of both replicas.
    cache = make_token_cache(tmp_path / "cache", num_clips=16, num_classes=4)
    _train(cache, tmp_path / "single", 6, **{"data.batch_size": 16, "trainer.gradient_clip_val": 0.05})
    extra = {"data.batch_size": 4, "trainer.strategy": strategy, "trainer.gradient_clip_val": 0.05}
    if strategy == "hsdp":
        extra.update({"data.batch_size": 2, "trainer.accumulate_grad_batches": 2})
    if strategy == "hsdp":
        _train_on_two_nodes(cache, tmp_path / strategy, 3, **extra)
        assert _last(tmp_path / strategy)["global_step"] == 3
    log = _train_on_two_nodes(cache, tmp_path / strategy, 6, *(["--resume"] if strategy == "hsdp" else []), **extra)
    single = _last(tmp_path / "single")
    if strategy == "hsdp":
        assert "sharded over the 2 ranks of each node, replicated over 2 node(s)" in log
        held, total = (int(n.replace(",", "")) for n in re.search(r"holds ([\d,]+) of the model's ([\d,]+)",
                                                                  log).groups())
        weights = [v for k, v in single["state_dict"].items() if k.startswith("model.") and v.numel()]
        assert (held, total) == (sum(math.ceil(len(v) / 2) * v[0].numel() for v in weights),
                                 sum(v.numel() for v in weights))
    assert_same_weights(_last(tmp_path / strategy), single)


@pytest.mark.slow
def test_hsdp_refuses_ranks_not_numbered_node_by_node_on_every_rank(tmp_path):
    # srun --distribution=cyclic numbers ranks round-robin over nodes: a "node" row of the mesh would then span
    # nodes. Four processes as torchrun would start them (its environment variables), numbered cyclically: every
    # rank must stop with the error, none may wait at a collective for the others.
    cache = make_token_cache(tmp_path / "cache", num_clips=8, num_classes=2)
    port = str(_free_port())
    argv = [sys.executable, "-m", "navid.cli", "train", *tiny_overrides(cache, tmp_path / "run", steps=1, **{
        "trainer.num_nodes": 2, "trainer.devices": 2, "trainer.strategy": "hsdp", "data.batch_size": 2})]
    ranks = []
    for node in range(2):
        for local in range(2):
            env = {**ENV, "TORCHELASTIC_RUN_ID": "cyclic", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                   "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": str(node), "LOCAL_RANK": str(local),
                   "RANK": str(local * 2 + node)}
            ranks.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [rank.communicate(timeout=240)[0] for rank in ranks]
    assert all(rank.returncode != 0 for rank in ranks)
    for log in logs:
        assert "navid train: error: trainer.strategy=hsdp needs the ranks of each node" in log, log[-2000:]
        assert "global rank 1 is local rank 0 of node 1, where rank 2 was expected" in log


@pytest.mark.slow
def test_checkpoints_resume_exactly_from_fsdp_to_fsdp_and_between_ddp_and_fsdp(tmp_path):
    # 2 ranks x 10 clips in batches of 4, stopped inside the second epoch: the order and the label dropout draws
    # continue where they stopped, whichever strategy wrote the file and whichever resumes it. A DDP file keys the
    # AdamW state by the optimizer's order (matrices first, then norms), an FSDP file by the module's.
    cache = make_token_cache(tmp_path / "cache", num_clips=20, num_classes=3)
    extra = {"trainer.devices": 2, "optim.min_lr_ratio": 1.0, "model.overrides.class_dropout": 0.5}
    ddp, fsdp = {"trainer.strategy": "ddp"}, {"trainer.strategy": "fsdp"}
    _train(cache, tmp_path / "full", 7, **extra, **ddp)
    _train(cache, tmp_path / "fsdp", 3, **extra, **fsdp)
    _train(cache, tmp_path / "ddp_then_fsdp", 3, **extra, **ddp)
    assert _last(tmp_path / "fsdp")["global_step"] == _last(tmp_path / "ddp_then_fsdp")["global_step"] == 3
    shutil.copytree(tmp_path / "fsdp", tmp_path / "fsdp_then_ddp")
    _train(cache, tmp_path / "fsdp", 7, "--resume", **extra, **fsdp)
    _train(cache, tmp_path / "fsdp_then_ddp", 7, "--resume", **extra, **ddp)
    _train(cache, tmp_path / "ddp_then_fsdp", 7, "--resume", **extra, **fsdp)
    for out in ("fsdp", "fsdp_then_ddp", "ddp_then_fsdp"):
        assert _last(tmp_path / out)["global_step"] == 7
        assert_same_weights(_last(tmp_path / out), _last(tmp_path / "full"))


@pytest.mark.slow
def test_a_sharded_bf16_run_validates_writes_previews_and_its_checkpoint_samples(tmp_path):
    tokenizer, fingerprint = make_tokenizer(tmp_path / "tokenizer.pt")
    cache = cache_of_tokenizer(tokenizer, fingerprint, tmp_path / "cache", num_clips=12)
    out = tmp_path / "run"
    _train(cache, out, 4, **{"trainer.devices": 2, "trainer.strategy": "fsdp", "trainer.precision": "bf16-mixed",
                             "trainer.accumulate_grad_batches": 2, "data.batch_size": 2, "data.val_fraction": 0.2,
                             "trainer.val_every_n_steps": 2, "trainer.sample_every_n_steps": 2,
                             "tokenizer_fingerprint": fingerprint})
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step0000002.gif", "step0000004.gif"]
    with open(out / "logs" / "version_0" / "metrics.csv") as f:
        val = [float(row["val_ema/loss"]) for row in csv.DictReader(f) if row.get("val_ema/loss")]
    assert len(val) == 2 and all(math.isfinite(v) for v in val)
    _run([sys.executable, "-m", "navid.cli", "sample", "--generator", str(out / "checkpoints" / "last.ckpt"),
          "--tokenizer", str(tokenizer), "--classes", "a,b", "--per-class", "1", "--out", str(tmp_path / "samples")])
    assert len(list((tmp_path / "samples" / "videos").rglob("*.mp4"))) == 2


def test_optimizer_state_is_named_by_pairing_parameter_groups_in_order(tmp_path):
    # navid's AdamW lists the matrices first, then the vectors: its ids do not follow module.parameters().
    from navid.utils.sharding import optimizer_state_by_name

    model = torch.nn.Sequential(torch.nn.LayerNorm(4), torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    groups = [[p for p in model.parameters() if p.ndim == 2], [p for p in model.parameters() if p.ndim < 2]]
    optimizer = torch.optim.AdamW([{"params": g} for g in groups])
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    names = {id(p): n for n, p in model.named_parameters()}
    by_name = optimizer_state_by_name(optimizer.state_dict(), optimizer, names, tmp_path / "last.ckpt")
    assert [g["params"] for g in by_name["param_groups"]] == [["1.weight"], ["0.weight", "0.bias", "1.bias",
                                                                             "2.weight", "2.bias"]]
    params = dict(model.named_parameters())
    for name, state in by_name["state"].items():
        assert torch.equal(state["exp_avg"], optimizer.state[params[name]]["exp_avg"]), name

    other = torch.optim.AdamW([{"params": groups[0] + groups[1][:1]}, {"params": groups[1][1:]}])
    with pytest.raises(ValueError, match=r"last.ckpt: its optimizer has parameter groups of \[1, 5\] parameters, "
                                         r"this run's has \[2, 4\]"):
        optimizer_state_by_name(optimizer.state_dict(), other, names, tmp_path / "last.ckpt")
