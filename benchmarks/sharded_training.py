"""Memory per rank of generator training under DDP and under FSDP (``trainer.strategy=fsdp``), on CPU processes.

Launches the README's ``torchrun ... -m navid.cli train`` set-up on this machine: ``--ranks`` gloo ranks with one
thread each, a shipped trunk config (B by default) over 4x16x16 tokens of the UCF-101 recipe's vocabulary (15,360
codes, 101 classes), fp32, batch 1 per rank, ``--steps`` steps without checkpoints, once per strategy. Each rank
reports its peak resident memory, the weights it holds and its steps/s. At batch 1 the model states (weights,
gradients, AdamW moments, EMA copy: 20 bytes per weight in fp32) dominate, so the peaks show what sharding saves;
on GPUs the same shares apply to device memory.

Usage: python benchmarks/sharded_training.py [--trunk B] [--ranks 2] [--steps 4]
Writes benchmarks/results/sharded_training.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import torch

from navid.config import load_config
from navid.data.token_cache import TokenCacheDataModule, write_token_cache
from navid.generation.config import GeneratorTrainConfig
from navid.generation.lightning_module import GeneratorModule
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table
from navid.utils.sharding import is_sharded, weights_on_this_rank
from navid.utils.training import build_trainer
from training_speed import StepTimer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GRID = (4, 16, 16)
VOCAB, CLASSES = 15_360, 101  # configs/tokenizer/ucf101.yaml's FSQ codes; UCF-101's classes
STATE_BYTES_PER_WEIGHT = 4 * 5  # fp32 weight, gradient, two AdamW moments, EMA copy


def resident_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of this process from ``/proc/self/status``, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(f"/proc/self/status has no {field}")


class SteadyMemory(L.Callback):
    """Resident memory once the first step has allocated every state (AdamW creates its moments there), and its
    peak over the later steps: the peak is reset then (``/proc/self/clear_refs``), so building the full model
    before it is sharded does not count."""

    def __init__(self) -> None:
        self.after_first_step_mb = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 1 and not self.after_first_step_mb:
            self.after_first_step_mb = resident_mb("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")


def run_rank(args: argparse.Namespace) -> None:
    """One rank of the training run (under torchrun); writes ``out/rankN.json``."""
    overrides = [f"data.tokens={args.cache}", f"out_dir={args.out}", "trainer.accelerator=cpu",
                 f"trainer.devices={args.ranks}", f"trainer.strategy={args.strategy}", "trainer.precision=32-true",
                 "data.batch_size=1", "data.num_workers=0", "data.val_fraction=0", f"trainer.max_steps={args.steps}",
                 "trainer.log_every_n_steps=1", "trainer.progress_bar=false"]
    cfg = load_config(GeneratorTrainConfig, ROOT / "configs" / "generator" / f"{args.trunk}.yaml", overrides)
    L.seed_everything(0, verbose=False)
    data = TokenCacheDataModule(cfg.data.tokens, batch_size=1, val_fraction=0.0, seed=0)
    module = GeneratorModule(cfg, data.cache.meta)
    timer, memory = StepTimer(warmup=1), SteadyMemory()
    trainer = build_trainer(cfg.trainer, cfg.out_dir, callbacks=[timer, memory], checkpoints=False)
    trainer.fit(module, datamodule=data)
    held = weights_on_this_rank(module.model)[0] if is_sharded(module.model) else None
    total = sum(p.numel() for p in module.model.parameters())
    report = {"rank": trainer.global_rank, "rss_after_first_step_mb": memory.after_first_step_mb,
              "peak_rss_later_steps_mb": resident_mb("VmHWM"),
              "peak_rss_whole_run_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "weights_held": total if held is None else held, "weights": total,
              "steps_per_s": timer.steps_per_second(trainer.global_step)}
    write_json_atomic(Path(args.out) / f"rank{trainer.global_rank}.json", report)


def measure(strategy: str, cache: Path, work: Path, args: argparse.Namespace) -> dict:
    out = work / strategy
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.ranks),
               __file__, "--rank-of", strategy, "--cache", str(cache), "--out", str(out), "--trunk", args.trunk,
               "--ranks", str(args.ranks), "--steps", str(args.steps)]
    print(f"{strategy}: {args.ranks} ranks, {args.steps} steps ...", flush=True)
    subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(args.ranks)]
    held = max(r["weights_held"] for r in ranks)
    return {"strategy": strategy, "weights": ranks[0]["weights"], "most_weights_on_a_rank": held,
            "model_states_mb_per_rank": held * STATE_BYTES_PER_WEIGHT / 2**20,
            **{f"{key}_per_rank": [round(r[key]) for r in ranks]
               for key in ("rss_after_first_step_mb", "peak_rss_later_steps_mb", "peak_rss_whole_run_mb")},
            "steps_per_s": round(min(r["steps_per_s"] for r in ranks), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trunk", default="B")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rank-of", dest="strategy", help=argparse.SUPPRESS)  # set when torchrun starts a rank
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.strategy:
        run_rank(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rng = np.random.default_rng(0)
        clips = 4 * args.ranks * args.steps
        cache = write_token_cache(work / "cache", rng.integers(0, VOCAB, size=(clips, *GRID)),
                                  np.arange(clips) % CLASSES, vocab_size=VOCAB,
                                  class_names=[f"class{i}" for i in range(CLASSES)], tokenizer_fingerprint="random")
        rows = [measure(strategy, cache, work, args) for strategy in ("ddp", "fsdp")]
    machine = machine_description(torch.device("cpu"))
    result = {"machine": machine, "trunk": args.trunk, "ranks": args.ranks, "steps": args.steps, "grid": GRID,
              "vocab": VOCAB, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "sharded_training.json", result)
    keys = list(rows[0])
    table = markdown_table(keys, [[r[k] if not isinstance(r[k], float) else round(r[k], 3) for k in keys]
                                  for r in rows])
    text = [f"# Generator training memory per rank: DDP vs FSDP ({args.trunk} trunk, {args.ranks} CPU ranks)", "",
            f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}, one thread per rank, "
            f"gloo; load average {machine['load_avg']}. fp32, batch 1 per rank, {'x'.join(map(str, GRID))} tokens, "
            f"vocab {VOCAB:,}, {args.steps} steps, no checkpoints. Command: "
            f"`python benchmarks/sharded_training.py --trunk {args.trunk} --ranks {args.ranks} --steps {args.steps}`.",
            "", "model states = the weights a rank holds x 20 bytes (fp32 weight, gradient, two AdamW moments, EMA "
            "copy). Resident memory per rank (MiB): after the first step (every state allocated), its peak over the "
            "later steps, and its peak over the whole run (ru_maxrss: also the full model and EMA copy each rank "
            "builds before sharding them). Beyond the model states it holds torch itself, activations, DDP's "
            "gradient buckets, FSDP's gathered blocks, and freed memory the allocator keeps.", "", *table]
    write_text_atomic(args.out / "sharded_training.md", "\n".join(text) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
