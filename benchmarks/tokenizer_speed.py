"""Encode / decode throughput (clips/s) of the shipped tokenizer configs on this machine's CPU.

Randomly initialised weights (speed does not depend on them); warm-up excluded; results
go to ``tokenizer_speed.{json,md}`` in ``--out`` (default ``benchmarks/results``).

    python benchmarks/tokenizer_speed.py [--batch 4] [--iters 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from navid.config import load_config
from navid.tokenizer import TokenizerTrainConfig, VideoTokenizer
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table

ROOT = Path(__file__).resolve().parent.parent


def timed(fn, iters: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in ("tiny", "ucf101"):
        cfg = load_config(TokenizerTrainConfig, ROOT / "configs" / "tokenizer" / f"{name}.yaml", ["data.root=unused"])
        tok = VideoTokenizer(cfg.model).eval()
        video = torch.rand(args.batch, 3, cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution) * 2 - 1
        tokens = tok.encode(video)
        enc = timed(lambda: tok.encode(video), args.iters)
        dec = timed(lambda: tok.decode(tokens), args.iters)
        rows.append({
            "config": name, "clip": list(video.shape[2:]), "grid": list(tokens.shape[1:]),
            "params_m": round(sum(p.numel() for p in tok.parameters()) / 1e6, 2), "batch": args.batch,
            "encode_clips_per_s": round(args.batch / enc, 2), "decode_clips_per_s": round(args.batch / dec, 2),
        })
        print(rows[-1])
    machine = machine_description()
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "tokenizer_speed.json", {"machine": machine, "results": rows})
    lines = [
        f"Tokenizer encode/decode throughput on CPU ({machine['cpu']}, {machine['cores']} threads, "
        f"torch {machine['torch']}); "
        f"batch {args.batch}, mean of {args.iters} runs after a warm-up.",
        "",
        *markdown_table(["config", "clip (T,H,W)", "grid", "params (M)", "encode clips/s", "decode clips/s"], [
            [r["config"], tuple(r["clip"]), tuple(r["grid"]), r["params_m"], r["encode_clips_per_s"],
             r["decode_clips_per_s"]]
            for r in rows
        ]),
    ]
    write_text_atomic(args.out / "tokenizer_speed.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
