"""Decoding throughput of one trunk under the NAR, PAR-4x and raster schedules.

Shared by ``benchmarks/throughput.py`` (the full table, JSON, plot) and ``navid demo`` (a
small table in its report), so both time sampling the same way: warm-up excluded, median of
repeated runs, device synchronised, one profiled run for the share of time inside forwards.
"""

from __future__ import annotations

import resource
import statistics
from typing import Sequence

import numpy as np
import torch

from navid.generation.sampler import SamplingConfig, sample
from navid.generation.schedule import Schedule, build_schedule
from navid.generation.transformer import Transformer, TransformerConfig, count_parameters

SCHEDULES = ("nar", "par4", "raster")


def gflops_per_video(model: Transformer, schedule: Schedule) -> float:
    """Multiply-adds x2 of one video: block matmuls per slot, attention of each block over its prefix, heads per target."""
    cfg = model.cfg
    D, Hd, V, layers = cfg.dim, cfg.hidden_dim, cfg.vocab_size, len(model.layers)
    bounds = schedule.block_bounds.numpy().astype(np.float64)
    sizes, ends = np.diff(bounds), bounds[1:]
    per_slot = 2 * layers * (3 * D * D + D * D + 2 * D * Hd + Hd * D)
    attention = 4 * layers * D * float((sizes * ends).sum())
    heads = 2 * D * V * schedule.num_heads * schedule.num_positions
    return (per_slot * schedule.num_slots + attention + heads) / 1e9


def measure(model, schedule, batch, repeats, warmup, device) -> dict:
    labels = torch.arange(batch, device=device) % model.cfg.num_classes
    settings = SamplingConfig(seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        sample(model, schedule, labels, settings)
    seconds = [sample(model, schedule, labels, settings).seconds for _ in range(repeats)]
    profiled = sample(model, schedule, labels, settings, profile=True)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # process high-water mark (Linux reports KiB)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sec = statistics.median(seconds)
    flops = gflops_per_video(model, schedule)
    return dict(
        steps=schedule.num_steps,
        seconds=sec,
        seconds_all=seconds,
        videos_per_s=batch / sec,
        tokens_per_s=batch * schedule.num_positions / sec,
        peak_mem_mb=round(peak, 1),
        forward_share=profiled.forward_seconds / profiled.seconds,
        gflops_per_video=flops,
        gflops_per_s=flops * batch / sec,
    )


def benchmark_rows(
    trunks: Sequence[str] = ("tiny",),
    grids: Sequence[tuple] = ((4, 8, 8),),
    batches: Sequence[int] = (1,),
    schedules: Sequence[str] = SCHEDULES,
    repeats: int = 3,
    warmup: int = 1,
    vocab_size: int = 1024,
    num_classes: int = 101,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
) -> list[dict]:
    """One row per (trunk, grid, batch, schedule): random weights, class-conditional, no guidance."""
    rows = []
    for trunk in trunks:
        for grid in grids:
            for batch in batches:
                for kind in schedules:
                    torch.manual_seed(0)
                    cfg = TransformerConfig.from_size(trunk, vocab_size=vocab_size, num_classes=num_classes)
                    model = Transformer(cfg, kind).to(device=device, dtype=dtype).eval()
                    schedule = build_schedule(kind, grid)
                    row = dict(schedule=kind, grid="x".join(map(str, grid)), batch=batch, device=device.type, trunk=trunk,
                               params_m=count_parameters(model) / 1e6, dtype=str(dtype).removeprefix("torch."))
                    row.update(measure(model, schedule, batch, repeats, warmup, device))
                    rows.append(row)
                    print(f"{trunk:>4} {row['grid']:>8} b{batch:<3} {kind:>6}: {row['steps']:5d} steps {row['seconds']:.4f} s "
                          f"{row['videos_per_s']:.2f} videos/s forward {row['forward_share']:.1%}", flush=True)
    return rows


def speedup_ratios(rows: Sequence[dict]) -> list[dict]:
    """NAR's videos/s over PAR-4x's and raster's, and the step ratios, per (trunk, grid, batch)."""
    ratios = []
    for trunk, grid, batch in dict.fromkeys((r["trunk"], r["grid"], r["batch"]) for r in rows):
        by = {r["schedule"]: r for r in rows if (r["trunk"], r["grid"], r["batch"]) == (trunk, grid, batch)}
        if "nar" not in by:
            continue
        q = dict(trunk=trunk, grid=grid, batch=batch)
        for other in ("par4", "raster"):
            if other in by:
                q[f"nar_over_{other}"] = by["nar"]["videos_per_s"] / by[other]["videos_per_s"]
                q[f"steps_{other}_over_nar"] = by[other]["steps"] / by["nar"]["steps"]
        ratios.append(q)
    return ratios
