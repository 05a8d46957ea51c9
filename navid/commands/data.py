"""``navid data synth`` (write the embedded default dataset) and ``navid data info`` (check a folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from navid.data.metadata_cache import load_video_metadata
from navid.data.synthetic import synthesize_dataset
from navid.data.ucf101 import load_index
from navid.utils.atomic import prepare_output_dir, refuse_existing_file, write_json_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="make or inspect video datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="<data command>", required=True)

    synth = sub.add_parser("synth", help="write the procedural default dataset in the UCF-101 layout")
    synth.add_argument("--out", required=True, help="output folder (must be empty or new)")
    synth.add_argument("--classes", type=int, default=10)
    synth.add_argument("--videos-per-class", type=int, default=36)
    synth.add_argument("--frames", type=int, default=32)
    synth.add_argument("--size", type=int, default=64)
    synth.add_argument("--groups", type=int, default=None, help="groups per class (default min(25, videos))")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    synth.set_defaults(func=run_synth)

    info = sub.add_parser("info", help="summarise a UCF-101-layout folder and list unreadable files")
    info.add_argument("--root", required=True, help="dataset root (class folders + ucfTrainTestlist/)")
    info.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="train/test fold")
    info.add_argument("--json", help="also write the summary to this JSON file")
    info.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    info.add_argument("--cache-dir", default=None, help="metadata cache folder (default ~/.cache/navid/video-meta)")
    info.set_defaults(func=run_info)


def run_synth(args: argparse.Namespace) -> int:
    out = prepare_output_dir(args.out, args.overwrite)
    synthesize_dataset(
        out, classes=args.classes, videos_per_class=args.videos_per_class, frames=args.frames,
        size=args.size, seed=args.seed, groups=args.groups,
    )
    print(f"wrote {args.classes} classes x {args.videos_per_class} videos to {out}")
    print(format_info(dataset_info(out, fold=1)))
    return 0


def dataset_info(root: str | Path, fold: int = 1, cache_dir: str | None = None) -> dict:
    """Classes, clips per split, frame-count statistics and unreadable files of one fold."""
    summary: dict = {"root": str(root), "fold": fold, "splits": {}, "unreadable": []}
    for split in ("train", "test"):
        index = load_index(root, split, fold)
        summary["classes"] = index.class_names
        key = {"root": str(Path(root).resolve()), "split": split, "fold": fold, "purpose": "info"}
        meta = load_video_metadata(index.clips, key, cache_dir, desc=f"probing {split} videos")
        counts = np.array([m["num_frames"] for m in meta if m["error"] is None])
        fps = sorted({round(m["fps"], 3) for m in meta if m["error"] is None})
        summary["splits"][split] = {
            "clips": len(index.clips),
            "clips_per_class": np.bincount(index.labels, minlength=len(index.class_names)).tolist(),
            "frames": {
                "min": int(counts.min()) if counts.size else 0,
                "median": float(np.median(counts)) if counts.size else 0.0,
                "mean": float(counts.mean()) if counts.size else 0.0,
                "max": int(counts.max()) if counts.size else 0,
            },
            "fps": fps,
        }
        summary["unreadable"] += [m["error"] for m in meta if m["error"] is not None]
    summary["num_classes"] = len(summary["classes"])
    return summary


def format_info(s: dict) -> str:
    names = s["classes"]
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    lines = [f"{s['root']} (fold {s['fold']}): {s['num_classes']} classes: {shown}"]
    for split, d in s["splits"].items():
        f = d["frames"]
        lines.append(
            f"  {split:5s} {d['clips']:6d} clips ({min(d['clips_per_class'])}-{max(d['clips_per_class'])} per class); "
            f"frames min {f['min']} median {f['median']:.0f} mean {f['mean']:.1f} max {f['max']}; fps {d['fps']}"
        )
    lines.append(f"  unreadable files: {len(s['unreadable'])}")
    lines += [f"    {err}" for err in s["unreadable"]]
    return "\n".join(lines)


def run_info(args: argparse.Namespace) -> int:
    refuse_existing_file(args.json, args.overwrite)
    summary = dataset_info(args.root, fold=args.split, cache_dir=args.cache_dir)
    print(format_info(summary))
    if args.json:
        write_json_atomic(args.json, summary)
    return 0
