"""Per-step cost of the demo's training stages and per-clip cost of its I3D features, on this CPU.

Runs the demo's tokenizer (tiny, batch 2, I3D perceptual loss) and NAR generator (tiny, batch 32)
through the real Lightning loop for a few steps, and I3D on 16x64x64 clips resized to 224. Each
number is the mean over the steps after ``--skip`` warm-up steps, as wall seconds and as process
CPU seconds. On a shared machine wall time depends on the other jobs; CPU time at one thread
much less so, which makes it the number to compare code versions by (run this script with
PYTHONPATH pointing at each version). Results append a row to ``demo_speed.json`` in ``--out``
(default ``benchmarks/results``); ``demo_speed.md`` there is written from all rows, with each row's
``--note`` (if any) as a paragraph under the table.

    python benchmarks/demo_speed.py --label after [--threads 1] [--steps 10] [--skip 2] [--clips 8] [--note TEXT]
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

import navid
from navid.config import load_config
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


class StepClock(L.Callback):
    """Wall and CPU time at the end of every training batch."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def on_train_batch_end(self, *args) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def per_step(self, skip: int) -> dict:
        (w0, c0), (w1, c1) = self.marks[skip - 1], self.marks[-1]
        n = len(self.marks) - skip
        return {"wall_s": (w1 - w0) / n, "cpu_s": (c1 - c0) / n, "steps": n}


def _fit(module, datamodule, trainer_cfg, out: Path, skip: int) -> dict:
    from navid.utils.training import build_trainer

    clock = StepClock()
    trainer = build_trainer(trainer_cfg, out, callbacks=[clock], checkpoints=False)
    trainer.fit(module, datamodule=datamodule)
    return clock.per_step(skip)


def tokenizer_step(data: Path, out: Path, steps: int, skip: int) -> dict:
    from navid.data.datamodule import VideoDataModule
    from navid.tokenizer.config import TokenizerTrainConfig
    from navid.tokenizer.lightning_module import TokenizerModule

    cfg = load_config(TokenizerTrainConfig, ROOT / "configs" / "tokenizer" / "tiny.yaml", [
        f"data.root={data}", "data.batch_size=2", "loss.perceptual_weight=1.0", f"trainer.max_steps={steps + skip}",
        "trainer.max_time_minutes=null", "trainer.progress_bar=false", "trainer.val_every_n_steps=100000",
    ])
    L.seed_everything(0, verbose=False)
    return _fit(TokenizerModule(cfg), VideoDataModule(cfg.data, seed=cfg.seed), cfg.trainer, out / "tokenizer", skip)


def generator_step(classes: int, out: Path, steps: int, skip: int) -> dict:
    from navid.data.token_cache import TokenCacheDataModule, write_token_cache
    from navid.generation.config import GeneratorTrainConfig
    from navid.generation.lightning_module import GeneratorModule

    rng = np.random.default_rng(0)  # the demo's cache: 4,080 grids of 4x8x8 tokens over 1,000 codes
    cache = write_token_cache(
        out / "tokens", rng.integers(0, 1000, (4080, 4, 8, 8)), rng.integers(0, classes, 4080),
        vocab_size=1000, class_names=[f"c{i}" for i in range(classes)], tokenizer_fingerprint="speed",
    )
    cfg = load_config(GeneratorTrainConfig, ROOT / "configs" / "generator" / "tiny.yaml", [
        f"data.tokens={cache}", f"trainer.max_steps={steps + skip}", "trainer.progress_bar=false",
        "trainer.val_every_n_steps=100000",
    ])
    L.seed_everything(0, verbose=False)
    data = TokenCacheDataModule(
        cfg.data.tokens, batch_size=cfg.data.batch_size, val_fraction=cfg.data.val_fraction, seed=0
    )
    return _fit(GeneratorModule(cfg, data.cache.meta), data, cfg.trainer, out / "generator", skip)


def i3d_clip(clips: int) -> dict:
    from navid.metrics.fvd import extract_features
    from navid.metrics.i3d import load_i3d

    detector = load_i3d()
    video = torch.rand(clips, 3, 16, 64, 64) * 2 - 1
    extract_features(detector, video[:1])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    extract_features(detector, video, batch_size=8)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall_s": wall / clips, "cpu_s": cpu / clips, "clips": clips}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of the code version measured, e.g. before / after")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--skip", type=int, default=2)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--note", metavar="TEXT",
                        help="a paragraph about this run, kept in its JSON row and shown under the table")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from navid.data.synthetic import synthesize_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = synthesize_dataset(
            tmp / "data", classes=10, videos_per_class=72, frames=32, size=64, seed=0, progress=False
        )
        load_before = machine_description()["load_avg"]
        row = {
            "label": args.label,
            "navid": str(Path(navid.__file__).parent),  # which checkout was measured
            "tokenizer": tokenizer_step(data, tmp, args.steps, args.skip),
            "generator": generator_step(10, tmp, args.steps, args.skip),
            "i3d": i3d_clip(args.clips),
            "machine": {**machine_description(), "load_avg_at_start": load_before},
        }
    if args.note:
        row["note"] = args.note
    path = args.out / "demo_speed.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, rows)
    text = markdown(rows)
    write_text_atomic(args.out / "demo_speed.md", text)
    print(text, end="")


def markdown(rows: list[dict]) -> str:
    """``demo_speed.md`` of all ``rows``: a header, the table, then each row's note (if any) as a paragraph."""
    table = markdown_table(
        ["version", "threads", "load avg (1 min, start / end)", "tokenizer s/step (CPU / wall)",
         "generator s/step (CPU / wall)", "I3D s/clip (CPU / wall)"],
        [[r["label"], r["machine"]["threads"],
          f"{r['machine']['load_avg_at_start'][0]} / {r['machine']['load_avg'][0]}",
          *(f"{r[k]['cpu_s']:.3f} / {r[k]['wall_s']:.3f}" for k in ("tokenizer", "generator", "i3d"))]
         for r in rows],
    )
    header = (f"# Demo stage costs on {rows[-1]['machine']['cpu']} ({rows[-1]['machine']['cores']} cores, torch "
              f"{rows[-1]['machine']['torch']})\n\n`python benchmarks/demo_speed.py --label L`; "
              "steps/s = 1 / (s/step). "
              "CPU time at one thread is the comparable number on a shared machine; wall time includes waiting for the "
              "other jobs.\n")
    notes = "".join(f"\n{r['note']}\n" for r in rows if r.get("note"))
    return header + "\n" + "\n".join(table) + "\n" + notes


if __name__ == "__main__":
    main()
