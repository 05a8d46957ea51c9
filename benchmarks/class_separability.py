"""How well I3D tells a dataset's classes apart: the ceiling of the per-class FVD matrix.

Real test clips of each class are scored against real training clips of every class, exactly
as ``navid demo`` and ``navid evaluate`` score generated clips (``score_features``), for several
clips-per-class counts. A generator cannot be expected to be nearest its own class more often
than real clips of that class are.

Usage: python benchmarks/class_separability.py --data DIR [--per-class 3 6 12]
Writes class_separability.{json,md} into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from navid.data.ucf101 import UCF101Clips
from navid.generation.evaluation import balanced_real_clips, i3d_features, reference_features, score_features
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description

RESULTS = Path(__file__).parent / "results"


def first_per_class(features: np.ndarray, labels: np.ndarray, n: int,
                    num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` rows of every class (rows are grouped by class, as ``balanced_real_clips`` orders them)."""
    keep = np.concatenate([np.flatnonzero(labels == c)[:n] for c in range(num_classes)])
    return features[keep], labels[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="a UCF-101-layout root, e.g. from `navid data synth`")
    parser.add_argument("--per-class", type=int, nargs="+", default=[3, 6, 12])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    features, _ = i3d_features(torch.device("cpu"))
    most = max(args.per_class)
    sets = {}
    for split, seed in (("train", 0), ("test", 1)):
        clips = UCF101Clips(args.data, split, num_frames=16, resolution=64)
        idx = balanced_real_clips(clips.labels, most, seed)
        sets[split] = (reference_features(clips, idx, features, batch_size=8), np.asarray(clips.labels)[idx])
        class_names = list(clips.class_names)
    rows = []
    for n in args.per_class:
        test = first_per_class(*sets["test"], n, len(class_names))
        train = first_per_class(*sets["train"], n, len(class_names))
        per_class = score_features(*test, *train, class_names)["per_class_fvd"]
        matrix = np.array(per_class["matrix"], dtype=float)
        diagonal = np.diag(matrix)
        off = np.where(np.eye(len(class_names), dtype=bool), np.inf, matrix).min(axis=1)
        rows.append({
            "clips_per_class": n,
            "own_class_nearest": per_class["own_class_nearest"],
            "mean_own_fvd": float(diagonal.mean()),
            "mean_nearest_other_fvd": float(off.mean()),
        })
    result = {"data": str(args.data), "classes": class_names, "machine": machine_description(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "class_separability.json", result)
    lines = [
        "# Class separability under I3D (real test clips vs real training clips)\n",
        f"Data: `{args.data}` ({len(class_names)} classes). Machine: {result['machine']}\n",
        "| clips per class | own class nearest | mean own-class FVD | mean nearest other-class FVD |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['clips_per_class']} | {r['own_class_nearest']:.0%} | {r['mean_own_fvd']:.0f} | "
              f"{r['mean_nearest_other_fvd']:.0f} |" for r in rows]
    write_text_atomic(args.out / "class_separability.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
