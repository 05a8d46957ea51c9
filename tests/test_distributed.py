"""navid.utils.distributed: the one-process context and device resolution.

The 2-rank path runs in test_cli_tokenizer (``torchrun --nproc-per-node 2 -m navid.cli tokenize``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from navid.utils.distributed import from_rank0, resolve_device, setup_distributed


def test_auto_picks_cuda_only_when_present():
    expected = torch.device("cuda", 1) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto", local_rank=1) == expected
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error a CPU-only machine gives")
def test_cuda_on_a_cpu_machine_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_without_torchrun_is_one_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx = setup_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device) == (0, 1, 0, torch.device("cpu"))
    assert ctx.is_main and not ctx.is_distributed
    assert not torch.distributed.is_initialized()


def test_several_srun_tasks_without_torchrun_are_refused(monkeypatch, tmp_path, capsys):
    """``srun --ntasks-per-node 8 navid tokenize ...`` starts 8 copies that are not torchrun ranks: each would encode
    the whole split into the same cache. They stop with one line before writing anything; one srun task, or
    torchrun under srun (which sets WORLD_SIZE), runs as before."""
    from navid.cli import main

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    argv = ["tokenize", "--tokenizer", str(tmp_path / "t.pt"), "--data", str(tmp_path), "--out", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "one of 8 srun tasks, not a torchrun rank" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    assert setup_distributed("cpu").world_size == 1
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert setup_distributed("cpu").world_size == 1


def _listing_worker(rank: int, port: int, views: list, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    listing = from_rank0(lambda: sorted(p.name for p in Path(views[rank]).iterdir()))
    def fails(failure: Exception) -> None:  # only rank 0 runs it
        raise failure

    errors = []
    for failure in (ValueError("bad --out"), OSError("disk gone")):  # rank 0 fails: nobody waits for it
        try:
            from_rank0(lambda: fails(failure))
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    out[rank] = (listing, errors)
    torch.distributed.destroy_process_group()


def test_ranks_whose_file_views_differ_take_rank_0s_listing_and_its_errors(tmp_path):
    """``navid tokenize`` lists the shards still to write with ``from_rank0``: a rank with a stale view of a shared
    file system (here: a folder of its own) must not split another list than rank 0 does, and when rank 0's call
    fails the other ranks stop too instead of waiting for it at the broadcast."""
    views = [tmp_path / "rank0", tmp_path / "rank1"]
    for view, names in zip(views, (["shard_0002", "shard_0003"], ["shard_0001", "shard_0002", "shard_0003"])):
        view.mkdir()
        for name in names:
            (view / name).touch()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_listing_worker, args=(port, [str(v) for v in views], out), nprocs=2, join=True)
    assert out[0][0] == out[1][0] == ["shard_0002", "shard_0003"]
    # a bad-input error reaches every rank as itself; any other as a RuntimeError quoting rank 0's
    assert out[0][1] == ["ValueError: bad --out", "OSError: disk gone"]
    assert out[1][1] == ["ValueError: bad --out", "RuntimeError: rank 0 stopped: disk gone"]
    assert from_rank0(lambda: "one process") == "one process"
