"""``navid tokenize`` throughput (clips/s) on this machine's CPU: DataLoader workers and torchrun ranks.

Runs the real command (a subprocess per setting) on UCF-101-like source files (320x240 MPEG-4
AVIs, see ``data_loading.py``) with the tiny tokenizer config (randomly initialised: speed does
not depend on the weights) and reads the rate the command prints: clips encoded between the
first and the last synchronisation of all ranks, so decoding, resizing, encoding, shard writes
and DataLoader start-up count, Python and model start-up do not. Results go to
``benchmarks/results/tokenize_speed.{json,md}``.

    python benchmarks/tokenize_speed.py [--clips-per-video 8]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from data_loading import make_ucf_like

from navid.config import load_config
from navid.tokenizer import TokenizerTrainConfig, VideoTokenizer
from navid.tokenizer.checkpoint import save_tokenizer
from navid.tokenizer.config import ClipGeometry
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table

ROOT = Path(__file__).resolve().parent.parent
# (ranks, torch threads per rank, DataLoader workers per rank)
SETTINGS = [(1, 1, 0), (1, 1, 1), (1, 2, 0), (1, 2, 1), (2, 1, 0), (2, 1, 1)]


def tokenize_rate(tokenizer: Path, data: Path, out: Path, ranks: int, threads: int, workers: int, k: int) -> float:
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 else []
    cmd = [
        sys.executable, *launch, "-m", "navid.cli", "tokenize", "--tokenizer", str(tokenizer), "--data", str(data),
        "--device", "cpu", "--clips-per-video", str(k), "--batch-size", "8", "--num-workers", str(workers),
        "--out", str(out), "--overwrite",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(re.search(r"\(([\d.]+) clips/s", done.stdout).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips-per-video", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    cfg = load_config(TokenizerTrainConfig, ROOT / "configs" / "tokenizer" / "tiny.yaml", ["data.root=unused"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_ucf_like(Path(tmp) / "ucf")
        model = VideoTokenizer(cfg.model).eval()
        model.trained_clip = ClipGeometry.of(cfg.data)  # `navid tokenize` cuts its clips as tiny.yaml's
        tokenizer = save_tokenizer(model, Path(tmp) / "tokenizer.pt")
        tokenize_rate(tokenizer, data, Path(tmp) / "cache", 1, 2, 0, 1)  # warm-up: metadata cache, page cache
        for ranks, threads, workers in SETTINGS:
            rate = tokenize_rate(tokenizer, data, Path(tmp) / "cache", ranks, threads, workers, args.clips_per_video)
            rows.append({"ranks": ranks, "threads_per_rank": threads, "workers_per_rank": workers,
                         "clips_per_s": round(rate, 2)})
            print(rows[-1], flush=True)
    machine = machine_description()
    clips = 16 * args.clips_per_video
    setup = (f"train split (16 videos x {args.clips_per_video} clips = {clips} clips) of 24 synthetic "
             "320x240 MPEG-4 AVIs; "
             f"tiny tokenizer (16x64x64 clips -> 4x8x8 tokens), batch 8 per rank, CPU")
    write_json_atomic(Path(args.out) / "tokenize_speed.json", {"machine": machine, "setup": setup, "results": rows})
    lines = [
        "# `navid tokenize` throughput",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}; load average "
        f"{machine['load_avg']} at the end: the machine was shared with other jobs, so the numbers are low and noisy.",
        "",
        f"Setup: {setup}.",
        "",
        f"Command: `python benchmarks/tokenize_speed.py --clips-per-video {args.clips_per_video}`",
        "",
        *markdown_table(["ranks (torchrun)", "threads per rank", "DataLoader workers per rank", "clips/s"], [
            [r["ranks"], r["threads_per_rank"], r["workers_per_rank"], r["clips_per_s"]] for r in rows
        ]),
    ]
    write_text_atomic(Path(args.out) / "tokenize_speed.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
