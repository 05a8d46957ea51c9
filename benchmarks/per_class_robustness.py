"""How many clips per class does the demo's per-class verdict need? Score a demo's checkpoints on more clips.

The demo's verdict (more than half of the generated classes nearest their own real class in the
per-class FVD matrix) is decided on a few clips per class, where one class moves the share by 1/C.
This re-scores a finished demo's checkpoints on N generated (the demo's sampling settings), N
tokenizer-reconstructed and N real clips per class: the N-vs-N share, and for each draw size k
the share over many random draws of k clips per class and side from those (its mean, and how
often a draw clears the bar). The demo takes the k at which the tokenizer's own reconstructions
clear the bar in >= 95% of draws. The draws are :func:`navid.generation.class_verdict.draw_shares`,
the same the demo's bootstrap confidence uses (here without replacement).

Usage: python benchmarks/per_class_robustness.py --demo-out DIR [--per-class 20] [--per-draw 6 8 10 12] [--draws 200]
Writes per_class_robustness.{json,md} into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from navid.demo import quality_features
from navid.generation.class_verdict import BAR, draw_shares
from navid.generation.evaluation import score_features
from navid.generation.sampler import SamplingConfig
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--demo-out", required=True, help="a finished `navid demo --out DIR`")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--per-draw", type=int, nargs="+", default=[6, 8, 10, 12],
                        help="clips per class and side in a draw")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if max(args.per_draw) > args.per_class:
        parser.error(f"--per-draw {max(args.per_draw)} exceeds --per-class {args.per_class}")
    out = Path(args.demo_out)
    report = json.loads((out / "report.json").read_text())
    try:  # read every report field before the I3D work, so a wrong --demo-out fails in seconds
        sampling = SamplingConfig(**report["settings"]["sampling"])
        demo_share = report["quality"]["nar"]["per_class_fvd"]["own_class_nearest"]
        demo_clips = report["settings"]["fvd_clips_per_class"]
    except (KeyError, TypeError) as err:
        raise SystemExit(f"{out / 'report.json'}: not a finished demo's report (missing {err})") from None

    computed = quality_features(out, args.per_class, sampling, random_baseline=False)
    sets, class_names = computed["sets"], computed["class_names"]
    real_feats, real_labels = sets["real"]
    named = {"NAR samples": sets["nar"], "tokenizer reconstructions of other real clips": sets["reconstructions"]}
    rows = []
    for name, (feats, labels) in named.items():
        full = score_features(feats, labels, real_feats, real_labels, class_names)
        for k in args.per_draw:
            shares = draw_shares(feats, labels, real_feats, real_labels, k, args.draws, seed=0)
            rows.append({
                "clips": name,
                "per_draw": k,
                "fvd": full["fvd"],
                "own_class_nearest": full["per_class_fvd"]["own_class_nearest"],
                "draws_mean": float(shares.mean()),
                "draws_above_bar": float(np.mean(shares > BAR)),
            })
    result = {
        "demo_out": str(out), "per_class": args.per_class, "draws": args.draws,
        "sampling": report["settings"]["sampling"],
        "demo_own_class_nearest": demo_share,
        "demo_clips_per_class": demo_clips,
        "machine": machine_description(), "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "per_class_robustness.json", result)
    n = args.per_class
    lines = [
        "# Per-class share of a demo's checkpoints on more clips (I3D per-class FVD)\n",
        f"Demo: `{out}` (its report: {result['demo_own_class_nearest']:.0%} with {result['demo_clips_per_class']} "
        f"clips per class). {n} clips per class per side; {args.draws} random draws of k per class and side from "
        f"those. Machine: {result['machine']}\n",
        *markdown_table(
            ["clips", f"FVD ({n}/class)", f"own class nearest ({n} vs {n})", "k", "mean over draws (k vs k)",
             "draws > 50%"],
            [[r["clips"], f"{r['fvd']:.1f}", f"{r['own_class_nearest']:.0%}", r["per_draw"], f"{r['draws_mean']:.0%}",
              f"{r['draws_above_bar']:.0%}"] for r in rows],
        ),
    ]
    write_text_atomic(args.out / "per_class_robustness.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
