"""Training steps/s of the tiny generator and the tiny tokenizer through the real Lightning loop.

Both run the shipped CPU configs (``configs/generator/tiny.yaml`` on a random 4x8x8 token
cache with the tiny tokenizer's 1,000 codes, ``configs/tokenizer/tiny.yaml`` on random
16x64x64 clips) through :func:`navid.utils.training.build_trainer`, so checkpoint, NaN and
logging callbacks are all included. A callback times the optimizer steps after ``--warmup``
steps. Results are merged under ``--label`` into ``training_speed.{json,md}`` in ``--out`` (default
``benchmarks/results``), so one file holds e.g. the ``before`` and ``after`` numbers of a change.

    python benchmarks/training_speed.py --label after [--steps 30] [--warmup 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from navid.config import load_config
from navid.data.token_cache import TokenCacheDataModule, write_token_cache
from navid.generation.config import GeneratorTrainConfig
from navid.generation.lightning_module import GeneratorModule
from navid.tokenizer import TokenizerTrainConfig
from navid.tokenizer.lightning_module import TokenizerModule
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


class StepTimer(L.Callback):
    """Wall time of the optimizer steps after the first ``warmup`` ones (device synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = 0.0
        self.first_timed_step = 0
        self.end = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup and not self.start:
            _synchronize(pl_module.device)
            self.start = time.perf_counter()
            self.first_timed_step = trainer.global_step

    def on_train_end(self, trainer, pl_module) -> None:
        _synchronize(pl_module.device)
        self.end = time.perf_counter()

    def steps_per_second(self, last_step: int) -> float:
        return (last_step - self.first_timed_step) / (self.end - self.start)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trainer_overrides(steps: int, extra: list[str]) -> list[str]:
    return [
        f"trainer.max_steps={steps}", "trainer.accelerator=cpu", "trainer.progress_bar=false",
        "trainer.val_every_n_steps=100000", "trainer.checkpoint_every_n_steps=100000", *extra,
    ]


def train_flops_per_position(module: GeneratorModule) -> float:
    """Model FLOPs of one trained grid position (forward + backward = 3x forward; PaLM's MFU convention).

    Per forward: 2 FLOPs per weight of every block linear for each of the L slots, attention
    scores and values over all L slots (4 * L * D per slot and layer: the block-causal mask is
    applied inside a full L x L product), and the output projection (2 * K*D * V) once per target.
    """
    model, schedule = module.model, module.schedule
    heads = model.head_out.weight.numel()
    blocks = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)) - heads
    slots, positions = schedule.num_slots, schedule.num_positions
    forward = 2 * blocks * slots + 4 * len(model.layers) * model.cfg.dim * slots * slots + 2 * heads * positions
    return 3 * forward / positions


def generator_speed(out: Path, steps: int, warmup: int, extra: list[str], grid=(4, 8, 8), vocab_size: int = 1000,
                    config: str = "tiny.yaml") -> dict:
    """Steps/s and trained positions/s of ``configs/generator/<config>`` on random tokens of ``grid``."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab_size, size=(256, *grid))
    cache = write_token_cache(out / "cache", tokens, np.arange(256) % 101, vocab_size=vocab_size,
                              class_names=[f"c{i}" for i in range(101)], tokenizer_fingerprint="bench")
    overrides = [f"data.tokens={cache}", "data.val_fraction=0", f"out_dir={out / 'gen'}",
                 *_trainer_overrides(steps, extra)]
    cfg = load_config(GeneratorTrainConfig, ROOT / "configs" / "generator" / config, overrides)
    L.seed_everything(0, verbose=False)
    data = TokenCacheDataModule(cache, batch_size=cfg.data.batch_size, val_fraction=0.0, seed=0)
    module = GeneratorModule(cfg, data.cache.meta)
    row = _fit(module, cfg, data, warmup, steps) | {"batch": cfg.data.batch_size, "grid": list(grid)}
    positions_per_s = row["steps_per_s"] * cfg.data.batch_size * module.schedule.num_positions
    return row | {"positions_per_s": round(positions_per_s, 1),
                  "train_gflops_per_position": train_flops_per_position(module) / 1e9}


def tokenizer_speed(out: Path, steps: int, warmup: int, extra: list[str]) -> dict:
    overrides = ["data.root=unused", f"out_dir={out / 'tok'}", *_trainer_overrides(steps, extra)]
    cfg = load_config(TokenizerTrainConfig, ROOT / "configs" / "tokenizer" / "tiny.yaml", overrides)
    L.seed_everything(0, verbose=False)
    clips = torch.rand(64, 3, cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution) * 2 - 1
    loader = DataLoader(TensorDataset(clips, torch.zeros(64, dtype=torch.long)), batch_size=cfg.data.batch_size,
                        shuffle=True)
    module = TokenizerModule(cfg)
    return _fit(module, cfg, loader, warmup, steps) | {"batch": cfg.data.batch_size, "clip": [16, 64, 64]}


def _fit(module: L.LightningModule, cfg, data, warmup: int, steps: int) -> dict:
    from navid.utils.training import build_trainer

    timer = StepTimer(warmup)
    trainer = build_trainer(cfg.trainer, cfg.out_dir, callbacks=[timer], checkpoints=False)
    if isinstance(data, DataLoader):
        trainer.fit(module, train_dataloaders=data)
    else:
        trainer.fit(module, datamodule=data)
    return {
        "steps_per_s": round(timer.steps_per_second(trainer.global_step), 3),
        "timed_steps": trainer.global_step - timer.first_timed_step,
        "precision": cfg.trainer.precision,
        "accumulate_grad_batches": cfg.trainer.accumulate_grad_batches,
        "log_every_n_steps": cfg.trainer.log_every_n_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this measurement, e.g. before / after")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--which", choices=["generator", "tokenizer", "both"], default="both")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*",
                        help="extra key=value trainer overrides, e.g. trainer.precision=bf16-mixed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in (("generator tiny", generator_speed), ("tokenizer tiny", tokenizer_speed)):
            if args.which in ("both", name.split()[0]):
                rows.append({"model": name, **fn(Path(tmp), args.warmup + args.steps, args.warmup, args.overrides)})
                print(rows[-1], flush=True)
    _merge_results(args.out, args.label, rows, machine_description())


def _merge_results(out: Path, label: str, rows: list[dict], machine: dict) -> None:
    path = out / "training_speed.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    runs = [r for r in runs if r["label"] != label] + [{"label": label, "machine": machine, "results": rows}]
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"runs": runs})
    lines = [
        "Training steps/s through the real Lightning loop (warm-up steps excluded), tiny configs on CPU.",
        "The machine is shared by several people, so differences of a few percent are noise; `load` is",
        "the 1/5/15-minute load average when the run finished. On a CPU a host sync costs almost nothing",
        "(host and device are the same), so before/after rows here can only show that removing the per-step",
        "syncs costs no speed; the gain is on GPUs, where each sync stalls the launch queue.",
        "",
        *markdown_table(
            ["label", "model", "batch", "precision", "accumulate", "log every", "steps/s", "timed steps", "threads",
             "load"],
            [[run["label"], r["model"], r["batch"], r["precision"], r["accumulate_grad_batches"],
              r["log_every_n_steps"],
              r["steps_per_s"], r["timed_steps"], run["machine"]["threads"], run["machine"]["load_avg"]]
             for run in runs for r in run["results"]],
        ),
        "",
        f"CPU: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}.",
    ]
    write_text_atomic(out / "training_speed.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
