"""Do a tokenizer's reconstructions keep the class evidence I3D uses?

The demo's per-class bar asks each generated class to be nearest its own real class in the
per-class FVD matrix. A generator over a tokenizer's tokens cannot beat that tokenizer's
reconstructions of real clips, so this scores reconstructions exactly as ``navid demo`` scores
samples (``score_features``: 6 clips per class against 6 other real training clips per class),
for several tokenizers, next to the real clips themselves. Use it to compare tokenizer
objectives (pixel loss, ``loss.perceptual_weight``, ...) before spending a generator run.

Usage: python benchmarks/tokenizer_class_evidence.py --data DIR --tokenizer NAME=CKPT [NAME=CKPT ...] [--per-class 6]
Writes tokenizer_class_evidence.{json,md} into ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from navid.data.ucf101 import UCF101Clips
from navid.generation.evaluation import balanced_real_clips, i3d_features, reference_features, score_features
from navid.tokenizer.checkpoint import load_tokenizer
from navid.tokenizer.losses import psnr
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description
from navid.utils.markdown import markdown_table

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="a UCF-101-layout root, e.g. a demo's data/ folder")
    parser.add_argument("--tokenizer", nargs="+", required=True, metavar="NAME=CKPT")
    parser.add_argument("--per-class", type=int, default=6)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    named = [spec.rsplit("=", 1) for spec in args.tokenizer]  # names may contain "="
    if any(len(pair) != 2 for pair in named):
        parser.error("--tokenizer entries must be NAME=CKPT")
    features, _ = i3d_features(torch.device("cpu"))
    clips = UCF101Clips(args.data, "train", num_frames=16, resolution=64)
    names, labels = list(clips.class_names), np.asarray(clips.labels)
    real_idx = balanced_real_clips(labels, args.per_class, 0)
    other_idx = balanced_real_clips(labels, args.per_class, 1, exclude=real_idx)  # other clips than the real set
    real_feats = reference_features(clips, real_idx, features, batch_size=8)
    videos = torch.stack([clips[i][0] for i in other_idx])
    rows = [{"name": "real clips (no tokenizer)", "checkpoint": None, "psnr": None,
             "feats": np.concatenate([features(v) for v in videos.split(8)])}]
    for name, path in named:
        tokenizer = load_tokenizer(path)
        with torch.no_grad():
            recon = torch.cat([tokenizer.decode(tokenizer.encode(v)) for v in videos.split(8)])
        feats = np.concatenate([features(v) for v in recon.split(8)])
        rows.append({"name": name, "checkpoint": path, "psnr": float(psnr(recon, videos).mean()), "feats": feats})
    for row in rows:
        scores = score_features(row.pop("feats"), labels[other_idx], real_feats, labels[real_idx], names)
        row.update(fvd=scores["fvd"], own_class_nearest=scores["per_class_fvd"]["own_class_nearest"])
    result = {"data": str(args.data), "clips_per_class": args.per_class, "machine": machine_description(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "tokenizer_class_evidence.json", result)
    lines = [
        "# Class evidence in tokenizer reconstructions (I3D per-class FVD, as `navid demo` scores samples)\n",
        f"Data: `{args.data}`; {args.per_class} reconstructed clips per class vs {args.per_class} other real training "
        f"clips per class. Machine: {result['machine']}\n",
        *markdown_table(["tokenizer", "PSNR (dB)", "FVD vs real", "own class nearest"], [
            [r["name"], "-" if r["psnr"] is None else format(r["psnr"], ".2f"), f"{r['fvd']:.1f}",
             f"{r['own_class_nearest']:.0%}"]
            for r in rows
        ]),
    ]
    write_text_atomic(args.out / "tokenizer_class_evidence.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
