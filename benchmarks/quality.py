"""The paper's comparison in miniature: NAR vs PAR-4x vs raster, same trunk, data and step budget.

Reuses a finished ``navid demo`` folder (its dataset, tokenizer and token cache), trains one
tiny generator per schedule for the same number of optimizer steps, then measures for each:
FVD and KVD of N generated clips against the same N real training clips (I3D protocol),
forward steps, and sampling seconds per video.

    python benchmarks/quality.py --demo-out demo_out --steps 1500 --per-class 10

Writes ``quality.json`` and ``quality.md`` into ``--out`` (default ``benchmarks/results``). The three
training runs go to ``--runs`` (default ``DEMO_OUT/runs/quality``); runs already there are kept unless
``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

from navid.generation.sampler import SamplingConfig

from navid.cli import main as navid_main
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SCHEDULES = ("nar", "par4", "raster")


def train(demo: Path, runs: Path, schedule: str, steps: int, seed: int, overwrite: bool) -> Path:
    run_dir = runs / schedule
    status = navid_main([
        "train", "--config", str(CONFIGS / "generator" / "tiny.yaml"), *(["--overwrite"] if overwrite else []),
        f"data.tokens={demo / 'tokens'}", f"out_dir={run_dir}", f"model.schedule={schedule}", f"seed={seed}",
        f"trainer.max_steps={steps}", "trainer.max_time_minutes=null",
    ])
    if status != 0:
        sys.exit(f"training {schedule} into {run_dir} failed with status {status} (an earlier run there is kept "
                 "unless --overwrite is given)")
    return run_dir / "checkpoints" / "last.ckpt"


def evaluate(ckpt: Path, demo: Path, sampling, features, real, real_idx, real_feats) -> dict:
    from navid.generation.checkpoint import load_generator
    from navid.generation.evaluation import generate_batches, score_features
    from navid.tokenizer.checkpoint import load_tokenizer

    model, schedule, _ = load_generator(ckpt)
    tokenizer = load_tokenizer(demo / "checkpoints" / "tokenizer.ckpt")
    labels = torch.as_tensor(np.asarray(real.labels)[real_idx])
    feats, seconds = [], 0.0
    for batch in generate_batches(model, schedule, tokenizer, labels, sampling, batch_size=16):
        feats.append(features(batch.video))
        seconds += batch.seconds
    scores = score_features(np.concatenate(feats), labels.numpy(), real_feats, labels.numpy(), list(real.class_names))
    return {
        "schedule": schedule.kind,
        "steps": schedule.num_steps,
        "fvd": scores["fvd"],
        "kvd": scores["kvd"],
        "own_class_nearest": scores["per_class_fvd"]["own_class_nearest"],
        "sampling_seconds_per_video": seconds / len(labels),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-out", required=True, type=Path, help="a finished `navid demo` folder")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps per generator")
    parser.add_argument("--per-class", type=int, default=10, help="generated = real clips per class and model")
    parser.add_argument("--cfg", type=float, default=2.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--runs", type=Path, help="training runs (default: DEMO_OUT/runs/quality)")
    parser.add_argument("--overwrite", action="store_true", help="replace the training runs already in --runs")
    args = parser.parse_args()

    from navid.data.ucf101 import UCF101Clips
    from navid.generation.evaluation import balanced_real_clips, i3d_features, reference_features

    sampling = SamplingConfig(cfg_scale=args.cfg, temperature=args.temperature, top_k=args.top_k, seed=args.seed)
    runs = args.runs or args.demo_out / "runs" / "quality"
    ckpts = {s: train(args.demo_out, runs, s, args.steps, args.seed, args.overwrite) for s in SCHEDULES}
    real = UCF101Clips(args.demo_out / "data", "train", num_frames=16, resolution=64)
    features, provenance = i3d_features(torch.device("cpu"))
    real_idx = balanced_real_clips(real.labels, args.per_class, args.seed)
    real_feats = reference_features(real, real_idx, features, batch_size=8)
    rows = [evaluate(ckpts[s], args.demo_out, sampling, features, real, real_idx, real_feats) for s in SCHEDULES]
    info = {**machine_description(), "steps": args.steps, "num": len(real_idx),
            "sampling": dataclasses.asdict(sampling),
            "provenance": provenance, "time": time.strftime("%Y-%m-%d %H:%M")}
    write_json_atomic(args.out / "quality.json", {"machine": info, "rows": rows})
    lines = [
        "# Quality in miniature: NAR vs PAR-4x vs raster (tiny trunk, embedded dataset)",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}. Same tokenizer, token cache, trunk and "
        f"{args.steps} optimizer steps per model; {len(real_idx)} generated vs {len(real_idx)} real training clips, "
        f"CFG {args.cfg}, "
        f"temperature {args.temperature}, top-k {args.top_k or 'off'}.",
        "",
        "| schedule | forward steps | FVD | KVD | own class nearest | s/video (sampling, batch 16) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['schedule']} | {r['steps']} | {r['fvd']:.1f} | {r['kvd']:.4f} | {r['own_class_nearest']:.0%} | "
        f"{r['sampling_seconds_per_video']:.4f} |"
        for r in rows
    ]
    write_text_atomic(args.out / "quality.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
