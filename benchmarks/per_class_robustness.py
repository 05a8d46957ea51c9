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

from navid.demo import quality_features
from navid.generation.evaluation import own_class_share, per_class_fvd, score_features
from navid.generation.sampler import SamplingConfig
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
        shares.append(own_class_share(per_class_fvd(gen[g], gen_labels[g], real[r], real_labels[r], classes)))
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

    computed = quality_features(out, args.per_class, sampling, random_baseline=False)
    sets, class_names = computed["sets"], computed["class_names"]
    real_feats, real_labels = sets["real"]
    named = {"NAR samples": sets["nar"], "tokenizer reconstructions of other real clips": sets["reconstructions"]}
    rows = []
    for name, (feats, labels) in named.items():
        full = score_features(feats, labels, real_feats, real_labels, class_names)
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
