"""Decoding throughput of NAR vs PAR-4x vs raster AR with one trunk and one KV-cache sampler.

Random weights (throughput does not depend on them), class-conditional, no guidance. For every
(trunk, grid, batch, schedule): warm-up run(s) excluded, median wall seconds over ``--repeats``
runs (device synchronised), one extra profiled run for the share of time inside model forwards.
``gflops_per_video`` is counted analytically from the schedule (matmuls, attention over the cached
prefix, output heads), so achieved GFLOP/s = gflops_per_video * videos_per_s.

    python benchmarks/throughput.py                       # full grid of settings
    python benchmarks/throughput.py --quick               # tiny trunk, both grids, batch 1
    python benchmarks/throughput.py --trunks tiny S --grids 4x8x8 --batches 1 8 --threads 1

Writes ``throughput.json`` (rows + ratios + machine), ``throughput.md`` and ``throughput.png``
into ``--out`` (default ``benchmarks/results``); ``--tag`` adds a suffix to the file names.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from navid.generation.throughput import SCHEDULES, benchmark_rows, speedup_ratios
from navid.utils.machine import machine_description
from navid.utils.atomic import atomic_path, write_json_atomic, write_text_atomic


def parse_grid(text: str) -> tuple:
    try:
        grid = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        grid = ()
    if len(grid) != 3:
        raise argparse.ArgumentTypeError(f"grid must look like 4x16x16, got {text!r}")
    return grid


def markdown(rows, ratios, info) -> str:
    lines = [
        "# Decoding throughput: NAR vs PAR-4x vs raster (one trunk, one KV-cache sampler)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} intra-op thread(s), "
        f"device `{info['device']}`{', ' + info['gpu'] if 'gpu' in info else ''}; load average at start {info['load_avg_start']}, "
        f"at end {info['load_avg']}. Random weights, vocab {info['vocab_size']}, no guidance.",
        *[f"Earlier rows kept from a run with load average {e['load_avg_start']} -> {e['load_avg']}."
          for e in info.get("earlier_runs", [])],
        "",
        "| trunk | params | grid | batch | schedule | steps | s/batch | videos/s | tokens/s | GFLOP/video | GFLOP/s "
        "| forward share | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['trunk']} | {r['params_m']:.1f}M | {r['grid']} | {r['batch']} | {r['schedule']} | {r['steps']} | "
            f"{r['seconds']:.4f} | {r['videos_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['gflops_per_video']:.2f} | "
            f"{r['gflops_per_s']:.1f} | {r['forward_share']:.1%} | {r['peak_mem_mb']:.0f} |"
        )
    lines += ["", "GFLOP/video is counted from the schedule (block matmuls per slot, attention of each block over its "
              "cached prefix, vocabulary projections per target). With the same trunk NAR does more arithmetic per video "
              "than PAR/raster (two extra head blocks, three vocabulary projections), so its speed-up approaches the step "
              "ratio only where per-step latency dominates (small trunk, small batch) and drops towards the arithmetic "
              "ratio where the device is busy (large trunk or batch on a CPU).",
              "", "NAR speed-up (videos/s ratio, same run):", "",
              "| trunk | grid | batch | NAR / PAR-4x | NAR / raster | step ratio vs PAR-4x | step ratio vs raster |",
              "|---|---|---|---|---|---|---|"]
    for q in ratios:
        lines.append(f"| {q['trunk']} | {q['grid']} | {q['batch']} | {q.get('nar_over_par4', float('nan')):.2f}x | "
                     f"{q.get('nar_over_raster', float('nan')):.2f}x | {q.get('steps_par4_over_nar', float('nan')):.2f} | "
                     f"{q.get('steps_raster_over_nar', float('nan')):.2f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["trunk"], r["grid"], r["batch"]) for r in rows}, key=lambda c: (c[0], c[1], c[2]))
    x = np.arange(len(configs))
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(configs)), 4))
    for i, kind in enumerate(SCHEDULES):
        by = {(r["trunk"], r["grid"], r["batch"]): r["videos_per_s"] for r in rows if r["schedule"] == kind}
        vals = [by.get(c, 0) for c in configs]
        ax.bar(x + (i - 1) * 0.27, vals, width=0.27, label=kind)
    ax.set_xticks(x, [f"{t}\n{g}\nb{b}" for t, g, b in configs], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("videos / s")
    ax.set_title(f"decoding throughput ({rows[0]['device']})")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trunks", nargs="+", default=["tiny", "S", "B"])
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    p.add_argument("--grids", nargs="+", type=parse_grid, default=[(4, 8, 8), (4, 16, 16)])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--num-classes", type=int, default=101)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    p.add_argument("--quick", action="store_true", help="tiny trunk, batch 1, one timed run")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--tag", default="", help="suffix for the output file names, e.g. _cuda")
    p.add_argument("--append", action="store_true", help="keep the rows of an existing JSON (same settings are replaced)")
    args = p.parse_args()
    if args.quick:
        args.trunks, args.batches, args.repeats = ["tiny"], [1], 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    info = machine_description(device)
    info["load_avg_start"] = info.pop("load_avg")
    info.update(vocab_size=args.vocab_size, dtype=args.dtype)
    rows = benchmark_rows(args.trunks, args.grids, args.batches, args.schedules, args.repeats, args.warmup,
                          args.vocab_size, args.num_classes, device, dtype)
    json_path = args.out / f"throughput{args.tag}.json"
    if args.append and json_path.exists():
        old = json.loads(json_path.read_text())
        key = lambda r: (r["trunk"], r["grid"], r["batch"], r["schedule"], r["device"])  # noqa: E731
        new = {key(r) for r in rows}
        rows = [r for r in old["rows"] if key(r) not in new] + rows
        info["earlier_runs"] = old["machine"].get("earlier_runs", []) + [{k: v for k, v in old["machine"].items() if k != "earlier_runs"}]
    ratios = speedup_ratios(rows)
    info["load_avg"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_path, dict(machine=info, rows=rows, ratios=ratios))
    write_text_atomic(args.out / f"throughput{args.tag}.md", markdown(rows, ratios, info))
    plot(rows, args.out / f"throughput{args.tag}.png")
    print(markdown(rows, ratios, info))


if __name__ == "__main__":
    main()
