"""Does a decoding step on one CPU core overlap reading its weights from memory with its arithmetic?

The throughput benchmark's limit, ``max(steps x floor, arithmetic / peak)``, assumes it does. This
runs every linear layer of a trunk (the matmuls of one NAR decoding step, in their real shapes) on
an M-row input, M = 1 .. 64 (a wavefront plane at batch 1 has up to 64 rows at 4x16x16), two ways:

- streamed: all the trunk's weights in turn, as a step reads them (far more than the caches hold);
- cached: the same matmuls, each shape timed on one weight used again and again, so it stays in the caches.

Streamed time = cached time + weight bytes / bandwidth means reading and arithmetic add up
(no overlap); streamed time = max of the two means they overlap. Also times MKL's prepacked
weights (``torch.ops.mkl._mkl_linear``, what inductor's freezing uses), where available.

Usage: python benchmarks/weight_streaming.py [--trunk S] [--rows 1 8 16 32 64] [--threads 1]
Writes benchmarks/results/weight_streaming.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

from navid.generation.throughput import matmul_peak_gflops
from navid.generation.transformer import Transformer, TransformerConfig
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table

RESULTS = Path(__file__).parent / "results"


def fastest_seconds(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def step_weights(trunk: str) -> list[torch.Tensor]:
    """The (out, in) weights of every linear layer of a NAR model of ``trunk`` (vocab 1024), in forward order."""
    cfg = TransformerConfig.from_size(trunk, vocab_size=1024, num_classes=101)
    model = Transformer(cfg, "nar")
    return [m.weight.detach() for m in model.modules() if isinstance(m, torch.nn.Linear)]


def measure(weights: list[torch.Tensor], rows: int, repeats: int) -> dict:
    """Seconds of one pass over ``weights`` at ``rows`` input rows: streamed, cached (each shape's matmul timed on
    one weight that stays in the caches, summed over the weights), and streamed with MKL-prepacked weights."""
    inputs = {w.shape[1]: torch.randn(rows, w.shape[1]) for w in weights}
    streamed = fastest_seconds(lambda: [F.linear(inputs[w.shape[1]], w) for w in weights], repeats)
    shapes = Counter(tuple(w.shape) for w in weights)
    first = {tuple(w.shape): w for w in reversed(weights)}
    cached = sum(count * fastest_seconds(lambda w=first[shape]: F.linear(inputs[w.shape[1]], w), repeats * 10)
                 for shape, count in shapes.items())
    row = {"rows": rows, "streamed_ms": streamed * 1e3, "cached_ms": cached * 1e3}
    if torch.backends.mkl.is_available():
        packed = [(torch.ops.mkl._mkl_reorder_linear_weight(w, rows), w) for w in weights]
        prepacked = fastest_seconds(
            lambda: [torch.ops.mkl._mkl_linear(inputs[w.shape[1]], p, w, None, rows) for p, w in packed], repeats)
        row["prepacked_ms"] = prepacked * 1e3
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trunk", default="S")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = step_weights(args.trunk)
    params = sum(w.numel() for w in weights)
    megabytes = params * 4 / 1e6
    peak = matmul_peak_gflops(torch.device("cpu"), torch.float32)
    rows = [measure(weights, m, args.repeats) for m in args.rows]
    read_ms = rows[0]["streamed_ms"] if args.rows[0] == 1 else None  # a 1-row pass is all reading
    for row in rows:
        gflop = 2 * row["rows"] * params / 1e9
        row["gflop"] = gflop
        row["streamed_gflops"] = gflop / row["streamed_ms"] * 1e3
        row["cached_gflops"] = gflop / row["cached_ms"] * 1e3
        if read_ms is not None:
            row["read_plus_cached_ms"] = read_ms + row["cached_ms"]
            row["max_read_cached_ms"] = max(read_ms, row["cached_ms"])
    machine = machine_description(torch.device("cpu"))
    result = {"machine": machine, "trunk": args.trunk, "threads": args.threads, "weights_mb": megabytes,
              "peak_gflops": peak, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "weight_streaming.json", result)
    keys = list(rows[0])
    table = markdown_table(keys, [[round(r.get(k), 2) if r.get(k) is not None else None for k in keys] for r in rows])
    text = [f"# Weight streaming vs arithmetic: {args.trunk} trunk, one NAR step's linear layers "
            f"({megabytes:.0f} MB fp32)", "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, {args.threads} thread(s), "
            f"load average {machine['load_avg']}; measured 1024² matmul peak {peak:.0f} GFLOP/s.", "",
            "streamed = every weight once (as a decoding step reads them); cached = the same matmuls, each on a "
            "weight already in the caches; prepacked = streamed with MKL-packed weights. "
            "If streamed ≈ read (1-row streamed) + cached, reading and arithmetic do not overlap.", "", *table]
    write_text_atomic(args.out / "weight_streaming.md", "\n".join(text) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
