"""Decoding throughput of NAR vs PAR-4x vs raster AR with one trunk and one KV-cache sampler.

Random weights (throughput does not depend on them), class-conditional, no guidance. For every
(trunk, grid, batch, schedule): warm-up run(s) excluded, median wall seconds over ``--repeats``
runs (device synchronised), one extra profiled run for the share of time inside model forwards;
the same again with the decoding step compiled (``torch.compile``; on CUDA ``reduce-overhead`` =
CUDA graphs), its compile time reported apart. ``gflops_per_video`` is counted analytically from
the schedule (matmuls, attention over the cached prefix, output heads). Every row is set against
its limit ``max(steps x floor, batch x GFLOP/video / peak)``, where the floor is one sampler step
on a 1-token block and the peak is a measured large matmul; efficiency = limit / measured.

    python benchmarks/throughput.py                       # full grid of settings
    python benchmarks/throughput.py --quick               # tiny trunk, both grids, batch 1
    python benchmarks/throughput.py --trunks tiny S --grids 4x8x8 --batches 1 8 --threads 1
    python benchmarks/throughput.py --trunks tiny S L --grids 4x16x16 --batches 1 8 32   # on a GPU: bf16, CUDA graphs

Writes ``throughput.json`` (rows + ratios + machine), ``throughput.md`` and ``throughput.png``
into ``--out`` (default ``benchmarks/results``; on CUDA ``benchmarks/results/gpu``); ``--tag`` adds
a suffix to the file names.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from navid.generation.sampler import DTYPES, enable_tf32
from navid.generation.throughput import SCHEDULES, benchmark_rows, matmul_peak_gflops, speedup_ratios
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


def _pct(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def markdown(rows, ratios, info) -> str:
    compiled = any("compiled" in r for r in rows)
    lines = [
        "# Decoding throughput: NAR vs PAR-4x vs raster (one trunk, one KV-cache sampler)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} intra-op thread(s), "
        f"device `{info['device']}`{', ' + info['gpu'] if 'gpu' in info else ''}, {info['dtype']}; "
        "load average at start "
        f"{info['load_avg_start']}, at end {info['load_avg']}. Random weights, vocab {info['vocab_size']}, "
        "no guidance. "
        f"Measured matmul peak: {info['peak_gflops']:.0f} GFLOP/s (rows kept from earlier runs use their own run's "
        "peak, `peak_gflops` in the JSON).",
        *[f"Earlier rows kept from a run with load average {e['load_avg_start']} -> {e['load_avg']}."
          for e in info.get("earlier_runs", [])],
        "",
        "Limit = max(steps x floor, batch x GFLOP/video / peak) seconds per batch; efficiency = limit / measured "
        "(100% = at the limit). Floor = one sampler step on a 1-token block. Compile = compiling + warm-up before "
        "the first timed run (not in the timings).",
        "",
        "| trunk | params | grid | batch | schedule | steps | GFLOP/video | eager videos/s | floor ms | limit s | "
        "efficiency "
        + ("| compiled videos/s | compile s | floor ms | limit s | efficiency " if compiled else "")
        + "| forward share | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---" + ("|---|---|---|---|---" if compiled else "") + "|---|---|",
    ]
    for r in rows:
        line = (f"| {r['trunk']} | {r['params_m']:.1f}M | {r['grid']} | {r['batch']} | {r['schedule']} | "
                f"{r['steps']} | "
                f"{r['gflops_per_video']:.2f} | {r['videos_per_s']:.2f} | {r['floor_seconds'] * 1e3:.2f} | "
                f"{r['limit_seconds']:.4f} | {_pct(r['efficiency'])} ")
        if compiled:
            c = r.get("compiled")
            line += ("| - | - | - | - | - " if c is None else
                     f"| {c['videos_per_s']:.2f} | {c['compile_seconds']:.0f} | {c['floor_seconds'] * 1e3:.2f} | "
                     f"{c['limit_seconds']:.4f} | {_pct(c['efficiency'])} ")
        lines.append(line + f"| {_pct(r['forward_share'])} | {r['peak_mem_mb']:.0f} |")
    lines += ["", "GFLOP/video is counted from the schedule (block matmuls per slot, attention of each block over its "
              "cached prefix, vocabulary projections per target). With the same trunk NAR does more arithmetic "
              "per video "
              "than PAR/raster (two extra head blocks, three vocabulary projections), so its speed-up approaches "
              "the step "
              "ratio only where per-step latency dominates (small trunk, small batch) and drops towards the arithmetic "
              "ratio where the device is busy (large trunk or batch on a CPU).",
              "", "NAR speed-up (videos/s ratio, same run; compiled in brackets):", "",
              "| trunk | grid | batch | NAR / PAR-4x | NAR / raster | step ratio vs PAR-4x | step ratio vs raster |",
              "|---|---|---|---|---|---|---|"]
    for q in ratios:
        def ratio(other):
            eager = q.get(f"nar_over_{other}")
            if eager is None:
                return "-"
            comp = q.get(f"compiled_nar_over_{other}")
            return f"{eager:.2f}x" + ("" if comp is None else f" ({comp:.2f}x)")
        def steps(other):
            value = q.get(f"steps_{other}_over_nar")
            return "-" if value is None else f"{value:.2f}"
        lines.append(f"| {q['trunk']} | {q['grid']} | {q['batch']} | {ratio('par4')} | {ratio('raster')} | "
                     f"{steps('par4')} | {steps('raster')} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: Path) -> None:
    """Videos/s per configuration and schedule: eager (solid), compiled (hatched), the limit (black tick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["trunk"], r["grid"], r["batch"]) for r in rows}, key=lambda c: (c[0], c[1], c[2]))
    x = np.arange(len(configs))
    width = 0.13
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(configs)), 4.5))
    for i, kind in enumerate(SCHEDULES):
        by = {(r["trunk"], r["grid"], r["batch"]): r for r in rows if r["schedule"] == kind}
        for j, mode in enumerate(("eager", "compiled")):
            pos = x + (2 * i + j - 2.5) * width
            picked = [by.get(c) if mode == "eager" else (by.get(c) or {}).get("compiled") for c in configs]
            vals = [0 if p is None else p["videos_per_s"] for p in picked]
            ax.bar(pos, vals, width=width, color=f"C{i}", hatch="//" if mode == "compiled" else None,
                          alpha=0.6 if mode == "compiled" else 1.0, label=f"{kind} {mode}")
            limits = [np.nan if p is None else by[c]["batch"] / p["limit_seconds"] for p, c in zip(picked, configs)]
            ax.scatter(pos, limits, marker="_", color="black", s=120, zorder=3,
                       label="limit" if (i, j) == (0, 0) else None)
    ax.set_xticks(x, [f"{t}\n{g}\nb{b}" for t, g, b in configs], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("videos / s")
    ax.set_title(f"decoding throughput ({rows[0]['device']}, {rows[0]['dtype']})")
    ax.legend(fontsize=7, ncol=4)
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
    p.add_argument("--dtype", choices=sorted(DTYPES), help="weights and KV cache (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--no-compile", action="store_true", help="eager timings only")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    p.add_argument("--quick", action="store_true", help="tiny trunk, batch 1, one timed run")
    p.add_argument("--out", type=Path,
                   help="output folder (default: benchmarks/results, on CUDA benchmarks/results/gpu)")
    p.add_argument("--tag", default="", help="suffix for the output file names")
    p.add_argument("--append", action="store_true",
                   help="keep the rows of an existing JSON (same settings are replaced)")
    args = p.parse_args()
    if args.quick:
        args.trunks, args.batches, args.repeats = ["tiny"], [1], 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    args.out = args.out or Path(__file__).parent / "results" / ("gpu" if device.type == "cuda" else "")
    dtype = DTYPES[args.dtype]
    if device.type == "cuda":
        enable_tf32()
    info = machine_description(device)
    info["load_avg_start"] = info.pop("load_avg")
    info.update(vocab_size=args.vocab_size, dtype=args.dtype, peak_gflops=matmul_peak_gflops(device, dtype))
    rows = benchmark_rows(args.trunks, args.grids, args.batches, args.schedules, args.repeats, args.warmup,
                          args.vocab_size, args.num_classes, device, dtype, not args.no_compile, info["peak_gflops"])
    json_path = args.out / f"throughput{args.tag}.json"
    if args.append and json_path.exists():
        old = json.loads(json_path.read_text())
        key = lambda r: (r["trunk"], r["grid"], r["batch"], r["schedule"], r["device"])  # noqa: E731
        new = {key(r) for r in rows}
        rows = [r for r in old["rows"] if key(r) not in new] + rows
        info["earlier_runs"] = (old["machine"].get("earlier_runs", [])
                                + [{k: v for k, v in old["machine"].items() if k != "earlier_runs"}])
    ratios = speedup_ratios(rows)
    info["load_avg"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(json_path, dict(machine=info, rows=rows, ratios=ratios))
    write_text_atomic(args.out / f"throughput{args.tag}.md", markdown(rows, ratios, info))
    plot(rows, args.out / f"throughput{args.tag}.png")
    print(markdown(rows, ratios, info))


if __name__ == "__main__":
    main()
