"""Clip loading throughput: decord vs PyAV, at 64 and 128 resolution, with 0 / 1 / 2 worker processes.

Source videos mimic UCF-101's files: 320x240 MPEG-4 Part 2 AVIs (UCF-101 ships Xvid) at 25 fps,
made from the synthetic generator. Each setting loads a fixed number of 16-frame training
clips (random start, resize + crop, flip) through ``UCF101Clips`` and a ``DataLoader``;
the first batch (worker start-up, warm caches) is excluded from the timing.

    python benchmarks/data_loading.py [--clips 96] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import torch
from torch.utils.data import DataLoader

from navid.data.synthetic import synthesize_dataset
from navid.data.ucf101 import UCF101Clips
from navid.data.video_io import find_videos, read_video
from navid.utils.atomic import write_json_atomic, write_text_atomic
from navid.utils.machine import machine_description


def make_ucf_like(root: Path) -> Path:
    """Synthesise 320x320 clips, crop to 320x240 and re-encode as MPEG-4 AVIs in place."""
    synthesize_dataset(root, classes=4, videos_per_class=6, frames=48, size=320, seed=0, progress=False)
    for path in find_videos(root):
        frames = read_video(path)[:, 40:280]  # (T, 240, 320, 3)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=Fraction(25))
            stream.pix_fmt, stream.height, stream.width = "yuv420p", 240, 320
            stream.options = {"qscale": "4"}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    return root


def clips_per_second(root: Path, cache: Path, backend: str, resolution: int, workers: int, clips: int) -> float:
    torch.manual_seed(0)
    ds = UCF101Clips(root, "train", num_frames=16, resolution=resolution, train=True, hflip=True,
                     cache_dir=cache, backend=backend)
    batch = 8
    loader = DataLoader(ds, batch_size=batch, num_workers=workers,
                        sampler=torch.utils.data.RandomSampler(ds, replacement=True, num_samples=clips + batch))
    it = iter(loader)
    next(it)  # warm-up: worker start-up and first decode excluded
    start, n = time.perf_counter(), 0
    for video, _ in it:
        n += video.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=96, help="timed clips per setting")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_ucf_like(Path(tmp) / "ucf")
        for backend in ("decord", "pyav"):
            for resolution in (64, 128):
                for workers in (0, 1, 2):
                    rate = clips_per_second(root, Path(tmp) / "cache", backend, resolution, workers, args.clips)
                    rows.append({"backend": backend, "resolution": resolution, "workers": workers,
                                 "clips_per_s": round(rate, 2)})
                    print(rows[-1], flush=True)
    machine = {**machine_description(),
               "python": platform.python_version(), "decord": __import__("decord").__version__,
               "av": av.__version__}
    setup = ("train split (16 clips) of 24 synthetic 320x240 MPEG-4 AVIs (48 frames, 25 fps); 16-frame clips, "
             f"random start, resize+crop, flip; batch 8; {args.clips} timed clips per row; torch threads 1")
    out = Path(args.out)
    write_json_atomic(out / "data_loading.json", {"machine": machine, "setup": setup, "results": rows})
    table = ["| backend | resolution | workers | clips/s |", "|---|---|---|---|"]
    table += [f"| {r['backend']} | {r['resolution']} | {r['workers']} | {r['clips_per_s']:.1f} |" for r in rows]
    text = (f"# Data loading throughput\n\nMachine: {machine['cpu']}, {machine['cores']} cores, "
            f"torch {machine['torch']}, decord {machine['decord']}, av {machine['av']}.\n\nSetup: {setup}.\n\n"
            f"Command: `python benchmarks/data_loading.py --clips {args.clips}`\n\n" + "\n".join(table) + "\n")
    write_text_atomic(out / "data_loading.md", text)
    print(text)


if __name__ == "__main__":
    main()
