"""Decoding throughput of one trunk under the NAR, PAR-4x and raster schedules.

Shared by ``benchmarks/throughput.py`` (the full table, JSON, plot) and ``navid demo`` (a
small table in its report), so both time sampling the same way: warm-up excluded, median of
repeated runs, device synchronised, one profiled run for the share of time inside forwards.

Each row is also set against its physical limit: a decoding run can be no faster than its steps
times the cost of the smallest possible step (the *floor*, measured on a 1-token block) and no
faster than its arithmetic at the device's measured matmul peak; ``limit = max(steps x floor,
batch x GFLOP/video / peak)`` and ``efficiency = limit / measured``.
"""

from __future__ import annotations

import resource
import statistics
import time
from typing import Optional, Sequence

import numpy as np
import torch

from navid.generation.sampler import (SamplingConfig, compile_step, forward_block, sample, sample_logits,
                                      synchronize)
from navid.generation.schedule import Schedule, build_schedule
from navid.generation.transformer import Transformer, TransformerConfig, count_parameters

SCHEDULES = ("nar", "par4", "raster")


def gflops_per_video(model: Transformer, schedule: Schedule) -> float:
    """Multiply-adds x2 of one video: block matmuls per slot, attention of each block over its prefix,
    heads per target."""
    cfg = model.cfg
    D, Hd, V, layers = cfg.dim, cfg.hidden_dim, cfg.vocab_size, len(model.layers)
    bounds = schedule.block_bounds.numpy().astype(np.float64)
    sizes, ends = np.diff(bounds), bounds[1:]
    per_slot = 2 * layers * (3 * D * D + D * D + 2 * D * Hd + Hd * D)
    attention = 4 * layers * D * float((sizes * ends).sum())
    heads = 2 * D * V * schedule.num_heads * schedule.num_positions
    return (per_slot * schedule.num_slots + attention + heads) / 1e9


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Measured GFLOP/s of the device's best case: a large square matmul (CPU 1024, GPU 8192) in ``dtype``."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    times = []
    for _ in range(repeats + 1):  # the first call is a warm-up
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times[1:]) / 1e9


def step_floor_seconds(model: Transformer, schedule: Schedule, labels: torch.Tensor, sampling: SamplingConfig,
                       steps: int = 30, rounds: int = 5) -> float:
    """Seconds per sampler iteration on a 1-token block (the class block: 1 query, 1 key, 1 target).

    The same step, sampling and scatter as every decoding step, with the least work a step can
    have: what a step costs however small the block (launches, Python, framework overhead). Like
    the sampling loop, ``steps`` iterations run back to back with the device synchronised only
    at both ends (on a GPU the host queues step i+1 while step i runs). The fastest of ``rounds``
    such runs, after one untimed run: the floor is a bound, like the matmul peak (the fastest of its
    repeats), so a round slowed by other work on the machine must not raise it.
    """
    device = labels.device
    padded = sampling.padded_blocks(device)
    plan = model.setup_cache(labels.shape[0], schedule, padded)
    step_fn = compile_step(model, device, padded) if sampling.compile else model.decode_step
    graphed = sampling.compile and device.type == "cuda"
    tokens = torch.zeros(labels.shape[0], schedule.num_positions, dtype=torch.long, device=device)  # (B, N)
    generator = torch.Generator(device=device).manual_seed(0)
    block, targets = plan.blocks[0], plan.target_pos[0]
    per_step = []
    with torch.no_grad():
        for _ in range(rounds + 1):  # the first round is a warm-up
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                logits = forward_block(step_fn, tokens, labels, block, len(targets), graphed)  # (B, 1, V)
                tokens[:, targets] = sample_logits(logits, sampling, generator)
            synchronize(device)
            per_step.append((time.perf_counter() - t0) / steps)
    model.release_cache()
    return min(per_step[1:])


def measure(model, schedule, batch, repeats, warmup, device, compile: bool = False) -> dict:
    """Median seconds per batch of ``repeats`` timed runs after ``warmup`` runs, plus the per-step floor.

    With ``compile`` the first warm-up run compiles (its ``compile_seconds`` is reported); the
    forward share is measured on eager runs only (a profiled compiled run is the same graphs).
    """
    labels = torch.arange(batch, device=device) % model.cfg.num_classes
    settings = SamplingConfig(seed=0, compile=compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    compile_s = sum(sample(model, schedule, labels, settings).compile_seconds for _ in range(max(warmup, 1)))
    seconds = [sample(model, schedule, labels, settings).seconds for _ in range(repeats)]
    profiled = None if compile else sample(model, schedule, labels, settings, profile=True)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # process high-water mark (Linux reports KiB)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sec = statistics.median(seconds)
    return dict(
        seconds=sec,
        seconds_all=seconds,
        videos_per_s=batch / sec,
        tokens_per_s=batch * schedule.num_positions / sec,
        peak_mem_mb=round(peak, 1),
        forward_share=None if profiled is None else profiled.forward_seconds / profiled.seconds,
        compile_seconds=compile_s,
        floor_seconds=step_floor_seconds(model, schedule, labels, settings),
    )


def against_limit(row: dict, timing: dict, peak_gflops: float) -> dict:
    """The row's limit ``max(steps x floor, batch x GFLOP/video / peak)`` (seconds per batch), which bound sets it,
    and efficiency = limit / measured."""
    latency_bound = row["steps"] * timing["floor_seconds"]
    compute_bound = row["batch"] * row["gflops_per_video"] / peak_gflops
    limit = max(latency_bound, compute_bound)
    return dict(limit_seconds=limit, bound="steps x floor" if latency_bound >= compute_bound else "arithmetic",
                efficiency=limit / timing["seconds"])


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
    compile: bool = False,
    peak_gflops: Optional[float] = None,
) -> list[dict]:
    """One row per (trunk, grid, batch, schedule): random weights, class-conditional, no guidance.

    Eager timings always; with ``compile`` also compiled ones, compiled afresh for every row (the
    graphs are specialised to the batch size and cache length). ``peak_gflops`` (measured when not
    given) sets each row's limit and efficiency.
    """
    peak_gflops = peak_gflops or matmul_peak_gflops(device, dtype)
    rows = []
    for trunk in trunks:
        for kind in schedules:
            torch.manual_seed(0)
            cfg = TransformerConfig.from_size(trunk, vocab_size=vocab_size, num_classes=num_classes)
            model = Transformer(cfg, kind).to(device=device, dtype=dtype).eval()
            for grid in grids:
                schedule = build_schedule(kind, grid)
                for batch in batches:
                    row = dict(schedule=kind, grid="x".join(map(str, grid)), batch=batch, device=device.type,
                               trunk=trunk,
                               params_m=count_parameters(model) / 1e6, dtype=str(dtype).removeprefix("torch."),
                               steps=schedule.num_steps, gflops_per_video=gflops_per_video(model, schedule),
                               peak_gflops=peak_gflops)
                    eager = measure(model, schedule, batch, repeats, warmup, device)
                    row.update(eager, **against_limit(row, eager, peak_gflops))
                    row["gflops_per_s"] = row["gflops_per_video"] * row["videos_per_s"]
                    if compile:
                        torch._dynamo.reset()  # compile afresh per row (a new batch or grid needs new graphs anyway)
                        compiled = measure(model, schedule, batch, repeats, warmup, device, compile=True)
                        row["compiled"] = {**compiled, **against_limit(row, compiled, peak_gflops)}
                    rows.append(row)
                    print(_summary(row), flush=True)
    return rows


def _summary(row: dict) -> str:
    text = (f"{row['trunk']:>4} {row['grid']:>8} b{row['batch']:<3} {row['schedule']:>6}: {row['steps']:5d} steps "
            f"eager {row['videos_per_s']:.2f} videos/s (floor {row['floor_seconds'] * 1e3:.2f} ms, "
            f"efficiency {row['efficiency']:.0%})")
    if "compiled" in row:
        c = row["compiled"]
        text += (f", compiled {c['videos_per_s']:.2f} videos/s (compile {c['compile_seconds']:.0f} s, floor "
                 f"{c['floor_seconds'] * 1e3:.2f} ms, efficiency {c['efficiency']:.0%})")
    return text


def speedup_ratios(rows: Sequence[dict]) -> list[dict]:
    """NAR's videos/s over PAR-4x's and raster's (eager, and compiled where measured) and the step ratios,
    per (trunk, grid, batch)."""
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
                if "compiled" in by["nar"] and "compiled" in by[other]:
                    nar, base = by["nar"]["compiled"], by[other]["compiled"]
                    q[f"compiled_nar_over_{other}"] = nar["videos_per_s"] / base["videos_per_s"]
        ratios.append(q)
    return ratios
