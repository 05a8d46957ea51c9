"""How much of a demo's per-class share is noise? Score its checkpoints on more clips per class.

``navid demo`` scores 6 generated clips per class against 6 real training clips per class, so one
class moves its "nearest own class" share by 10 points. This re-scores a finished demo's
checkpoints on N generated (the demo's sampling settings), N tokenizer-reconstructed and N real
clips per class: the N-vs-N matrix, and the share over many random draws of the demo's 6 per
class from those sets (its mean, and how often a draw clears the demo's "more than half" bar).

Usage: python benchmarks/per_class_robustness.py --demo-out DIR [--per-class 20] [--draws 200]
Writes benchmarks/results/per_class_robustness.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from navid.data.ucf101 import UCF101Clips
from navid.generation.checkpoint import load_generator
from navid.generation.evaluation import balanced_real_clips, generate_batches, i3d_features, per_class_fvd, reference_features, score_features
from navid.generation.sampler import SamplingConfig
from navid.tokenizer.checkpoint import load_tokenizer
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table

RESULTS = Path(__file__).parent / "results"


def draw_shares(gen, gen_labels, real, real_labels, per_draw: int, draws: int, seed: int) -> np.ndarray:
    """Own-class-nearest share of ``draws`` per-class FVD matrices, each on ``per_draw`` random clips per class and side."""
    rng = np.random.default_rng(seed)
    classes = int(real_labels.max()) + 1

    def pick(labels):
        return np.concatenate([rng.choice(np.flatnonzero(labels == c), per_draw, replace=False) for c in range(classes)])

    shares = []
    for _ in range(draws):
        g, r = pick(gen_labels), pick(real_labels)
        matrix = per_class_fvd(gen[g], gen_labels[g], real[r], real_labels[r], classes)
        shares.append(float(np.mean(matrix.argmin(axis=1) == np.arange(classes))))
    return np.asarray(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo-out", required=True, help="a finished `navid demo --out DIR`")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    out = Path(args.demo_out)
    report = json.loads((out / "report.json").read_text())
    sampling = SamplingConfig(**report["settings"]["sampling"])
    per_draw = report["settings"]["fvd_clips_per_class"]

    model, schedule, _ = load_generator(out / "checkpoints" / "generator.ckpt", map_location="cpu")
    tokenizer = load_tokenizer(out / "checkpoints" / "tokenizer.ckpt", map_location="cpu")
    real = UCF101Clips(out / "data", "train", num_frames=16, resolution=64)
    features, _ = i3d_features(torch.device("cpu"))
    real_idx = balanced_real_clips(real.labels, args.per_class, sampling.seed)
    real_labels = np.asarray(real.labels)[real_idx]
    real_feats = reference_features(real, real_idx, features, batch_size=8)
    recon_idx = balanced_real_clips(real.labels, args.per_class, sampling.seed + 1)
    sets = {
        "NAR samples": (
            np.concatenate([features(b.video) for b in generate_batches(model, schedule, tokenizer, torch.as_tensor(real_labels), sampling, batch_size=16)]),
            real_labels,
        ),
        "tokenizer reconstructions of other real clips": (
            reference_features(real, recon_idx, lambda video: features(tokenizer.decode(tokenizer.encode(video))), batch_size=16),
            np.asarray(real.labels)[recon_idx],
        ),
    }
    rows = []
    for name, (feats, labels) in sets.items():
        full = score_features(feats, labels, real_feats, real_labels, list(real.class_names))
        shares = draw_shares(feats, labels, real_feats, real_labels, per_draw, args.draws, seed=0)
        rows.append({
            "clips": name,
            "fvd": full["fvd"],
            "own_class_nearest": full["per_class_fvd"]["own_class_nearest"],
            "draws_mean": float(shares.mean()),
            "draws_above_half": float(np.mean(shares > 0.5)),
        })
    result = {"demo_out": str(out), "per_class": args.per_class, "per_draw": per_draw, "draws": args.draws,
              "sampling": report["settings"]["sampling"], "demo_own_class_nearest": report["quality"]["nar"]["per_class_fvd"]["own_class_nearest"],
              "machine": machine_description(), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / "per_class_robustness.json", result)
    n, k = args.per_class, per_draw
    lines = [
        "# Per-class share of a demo's checkpoints on more clips (I3D per-class FVD)\n",
        f"Demo: `{out}` (its report: {result['demo_own_class_nearest']:.0%} with {k} clips per class). "
        f"{n} clips per class per side; {args.draws} random draws of {k} per class from those. Machine: {result['machine']}\n",
        *markdown_table(
            ["clips", f"FVD ({n}/class)", f"own class nearest ({n} vs {n})", f"mean over draws ({k} vs {k})", "draws > 50%"],
            [[r["clips"], f"{r['fvd']:.1f}", f"{r['own_class_nearest']:.0%}", f"{r['draws_mean']:.0%}", f"{r['draws_above_half']:.0%}"] for r in rows],
        ),
    ]
    write_text_atomic(RESULTS / "per_class_robustness.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
