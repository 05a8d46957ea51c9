"""Write generated or real clips in the layouts other video-evaluation code reads.

Use it to cross-check navid's FVD with an external implementation (StyleGAN-V's metric scripts,
an npz-based evaluator, anything that reads a folder of videos) on exactly the clips navid scores,
or to hand samples to someone else's tools.

Sources (one per run):
  --tokens FILE --tokenizer FILE  the token grids ``navid sample`` saved (``tokens.pt``), decoded by
                                  the tokenizer: the generated clips without the MP4 compression of
                                  ``samples/videos/``
  --ucf101 ROOT                   the real clips ``navid evaluate`` scores: ``--num`` distinct chunks of the
                                  split drawn with ``--seed`` (evaluate's ``--real-seed``), resized, cropped
  --videos DIR                    every video file under DIR (sorted), first ``--frames`` frames
  --npz FILE                      an ``.npz`` this tool wrote (to change its layout)

Layouts written into ``--out`` (any of them, one pass over the clips):
  mp4   videos/000000.mp4 ...            H.264 (lossy; even frame sizes only)
  png   frames/000000/000000.png ...     a folder of PNG frames per clip, as StyleGAN-V's metric
                                         scripts read them (lossless)
  npz   clips.npz                        ``arr_0``: uint8 (N, T, H, W, 3), ``arr_1``: int64 (N,) labels
                                         when the source has labels (the guided-diffusion evaluator's
                                         convention; lossless, written clip by clip, not held in memory)

``clips.json``, written last, lists the clips (source file or index, label, class name) and the
source's settings; its presence means the export finished.

Example, both sides of a 2,048-clip FVD::

    python tools/export_samples.py --tokens samples/tokens.pt --tokenizer runs/tok/tokenizer.pt \
        --out export/fake --layout png
    python tools/export_samples.py --ucf101 /data/ucf101 --num 2048 --resolution 128 --out export/real --layout png
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from navid.cli import non_negative_int, positive_float, positive_int
from navid.config import USER_ERRORS
from navid.data.video_io import DEFAULT_FPS, VideoReadError, find_videos, read_video, tensor_to_frames, write_video
from navid.utils.atomic import atomic_path, prepare_output_dir, write_json_atomic
from navid.utils.checkpoint_file import load_array_file

LAYOUTS = ("mp4", "png", "npz")
NPZ_NAME = "clips.npz"
MANIFEST = "clips.json"


@dataclass
class ClipSource:
    """N clips in a fixed order; ``clips()`` yields each as uint8 (T, H, W, 3)."""

    clips: Callable[[], Iterator[np.ndarray]]
    origins: list  # (N,) where each clip came from (a file, an index), for the manifest
    labels: Optional[np.ndarray] = None  # (N,) int64
    class_names: Optional[list] = None
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.origins)


def from_tokens(
    tokens_path: str | Path, tokenizer_path: str | Path, batch_size: int = 16, device: str = "cpu"
) -> ClipSource:
    """The clips of ``navid sample``'s ``tokens.pt``, decoded by ``tokenizer_path``."""
    from navid.tokenizer.checkpoint import load_tokenizer
    from navid.utils.checkpoint_file import load_checkpoint_file

    data = load_checkpoint_file(tokens_path, "--tokens")
    if not isinstance(data, dict) or "tokens" not in data:
        raise ValueError(f"{tokens_path}: not a navid sample tokens.pt (no 'tokens' entry)")
    tokens = data["tokens"]  # (N, T', H', W') int64
    tokenizer = load_tokenizer(tokenizer_path, map_location=device)
    if int(tokens.max()) >= tokenizer.vocab_size:
        raise ValueError(
            f"{tokens_path}: token {int(tokens.max())} is outside the vocabulary "
            f"({tokenizer.vocab_size}) of {tokenizer_path}"
        )

    def clips() -> Iterator[np.ndarray]:
        for lo in range(0, len(tokens), batch_size):
            video = tokenizer.decode(tokens[lo : lo + batch_size].to(device))  # (B, C, T, H, W) in [-1, 1]
            yield from (tensor_to_frames(v) for v in video)

    labels = data.get("labels")
    return ClipSource(
        clips,
        [f"{tokens_path}[{i}]" for i in range(len(tokens))],
        None if labels is None else labels.numpy().astype(np.int64),
        data.get("class_names"),
        {"tokens": str(tokens_path), "tokenizer": str(tokenizer_path)},
    )


def from_ucf101(
    root: str | Path,
    num: int,
    seed: int = 42,
    split: str = "train",
    fold: int = 1,
    num_frames: int = 16,
    resolution: int = 128,
    batch_size: int = 16,
    num_workers: int = 0,
) -> ClipSource:
    """The ``num`` real chunks ``navid evaluate --real-seed seed`` draws from ``split`` (same chunks, same pixels)."""
    from torch.utils.data import DataLoader

    from navid.metrics.real_chunks import PROTOCOL, ChunkClips, draw_chunks

    draw = draw_chunks(root, num, seed, split, fold, num_frames)
    real = ChunkClips(draw, resolution)

    def clips() -> Iterator[np.ndarray]:
        loader = DataLoader(real, batch_size=batch_size, num_workers=num_workers)
        for video, _ in loader:  # (B, C, T, H, W) in [-1, 1], from uint8 pixels
            yield from (tensor_to_frames(v) for v in video)

    settings = {
        "ucf101": str(root),
        "protocol": PROTOCOL,
        "split": split,
        "fold": fold,
        "num": num,
        "seed": seed,
        "num_frames": num_frames,
        "resolution": resolution,
    }
    origins = [f"{record['video']} from frame {record['start']}" for record in draw.records()]
    return ClipSource(clips, origins, np.asarray(real.labels, dtype=np.int64), list(real.class_names), settings)


def from_videos(folder: str | Path, frames: Optional[int] = None) -> ClipSource:
    """Every video file under ``folder`` (sorted), its first ``frames`` frames (all when ``None``)."""
    files = find_videos(folder)
    if not files:
        raise ValueError(f"{folder}: no video files (.avi .mp4 .webm .mkv .gif) found")

    def clips() -> Iterator[np.ndarray]:
        for path in files:
            video = read_video(path)  # (T, H, W, 3) uint8
            if frames is not None and len(video) < frames:
                raise VideoReadError(f"{path}: {len(video)} frames, fewer than --frames {frames}")
            yield video[:frames]

    return ClipSource(clips, [str(p) for p in files], settings={"videos": str(folder), "frames": frames})


def from_npz(path: str | Path) -> ClipSource:
    """The clips (and labels, if stored) of an ``.npz`` with ``arr_0`` (N, T, H, W, 3) uint8."""
    with load_array_file(path, "--npz of clips", "give an .npz that tools/export_samples.py or numpy wrote") as data:
        if "arr_0" not in data:
            raise ValueError(f"{path}: no 'arr_0' array (expected uint8 clips of shape (N, T, H, W, 3))")
        videos = data["arr_0"]
        labels = data["arr_1"].astype(np.int64) if "arr_1" in data else None
    if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"{path}: arr_0 must be uint8 (N, T, H, W, 3), got {videos.dtype} {videos.shape}")
    return ClipSource(
        lambda: iter(videos), [f"{path}[{i}]" for i in range(len(videos))], labels, settings={"npz": str(path)}
    )


class NpzWriter:
    """Streams clips into ``arr_0`` of an uncompressed ``.npz`` open as ``archive`` (memory: one clip).

    The array header needs the final shape, so the clip count is given up front and every clip
    must have the first clip's shape.
    """

    def __init__(self, archive: zipfile.ZipFile, num_clips: int) -> None:
        self.archive, self.num_clips = archive, num_clips
        self.shape: Optional[tuple] = None
        self.count = 0
        self._array = None  # the open arr_0.npy member

    def add(self, frames: np.ndarray, origin: str) -> None:
        if self.shape is None:
            self.shape = frames.shape
            self._array = self.archive.open("arr_0.npy", "w", force_zip64=True)
            header = {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                "fortran_order": False,
                "shape": (self.num_clips, *self.shape),
            }
            np.lib.format.write_array_header_1_0(self._array, header)
        if frames.shape != self.shape:
            raise ValueError(
                f"{origin}: clip shape {frames.shape} differs from the first clip's {self.shape}; "
                "the npz layout needs equal shapes (use --frames, or the mp4/png layouts)"
            )
        self._array.write(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
        self.count += 1

    def close_array(self) -> None:
        if self._array is not None:
            self._array.close()
            self._array = None

    def finish(self, labels: Optional[np.ndarray]) -> None:
        if self.count != self.num_clips:
            raise RuntimeError(f"{self.count} of {self.num_clips} clips written to the npz")
        self.close_array()
        if labels is not None:
            with self.archive.open("arr_1.npy", "w") as f:
                np.lib.format.write_array(f, np.asarray(labels, dtype=np.int64))


@contextlib.contextmanager
def npz_writer(path: Path, num_clips: int, labels: Optional[np.ndarray]) -> Iterator[NpzWriter]:
    """An :class:`NpzWriter` whose file appears at ``path`` only when all ``num_clips`` clips were added."""
    with (
        atomic_path(path) as tmp,
        zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
    ):
        writer = NpzWriter(archive, num_clips)
        try:
            yield writer
            writer.finish(labels)
        finally:
            writer.close_array()  # the archive cannot close while a member is open


def write_png_frames(folder: Path, frames: np.ndarray) -> None:
    """``folder/000000.png`` ... one lossless PNG per frame, each written atomically."""
    for t, frame in enumerate(frames):
        with atomic_path(folder / f"{t:06d}.png") as tmp:
            Image.fromarray(frame).save(tmp, format="PNG")


def export(
    source: ClipSource, out: str | Path, layouts: Sequence[str], fps: float = DEFAULT_FPS, overwrite: bool = False
) -> Path:
    """Write every clip of ``source`` in ``layouts`` under ``out``, then the manifest; returns ``out``."""
    unknown = sorted(set(layouts) - set(LAYOUTS))
    if unknown or not layouts:
        raise ValueError(f"layouts must be some of {', '.join(LAYOUTS)}, got {list(layouts)}")
    out = prepare_output_dir(out, overwrite)
    shapes = set()
    with contextlib.ExitStack() as stack:
        npz = stack.enter_context(npz_writer(out / NPZ_NAME, len(source), source.labels)) if "npz" in layouts else None
        clips = tqdm(zip(source.clips(), source.origins), total=len(source), desc="exporting", unit="clip")
        for i, (frames, origin) in enumerate(clips):
            shapes.add(frames.shape)
            if "mp4" in layouts:
                write_video(out / "videos" / f"{i:06d}.mp4", frames, fps=fps)
            if "png" in layouts:
                write_png_frames(out / "frames" / f"{i:06d}", frames)
            if npz is not None:
                npz.add(frames, origin)
    names = source.class_names
    write_json_atomic(
        out / MANIFEST,
        {
            "num_clips": len(source),
            "shapes": sorted(list(s) for s in shapes),
            "layouts": {"mp4": "videos/<index>.mp4", "png": "frames/<index>/<frame>.png", "npz": NPZ_NAME},
            "written": list(layouts),
            "source": source.settings,
            "class_names": names,
            "clips": [
                {
                    "index": i,
                    "origin": origin,
                    **({} if source.labels is None else {"label": int(source.labels[i])}),
                    **({} if source.labels is None or names is None else {"class": names[int(source.labels[i])]}),
                }
                for i, origin in enumerate(source.origins)
            ],
        },
    )
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for the layouts.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--tokens", help="tokens.pt written by navid sample (needs --tokenizer)")
    src.add_argument("--ucf101", help="UCF-101-layout root: the real clips navid evaluate draws")
    src.add_argument("--videos", help="folder of video files (all under it, sorted)")
    src.add_argument("--npz", help="an .npz with arr_0 (N, T, H, W, 3) uint8")
    parser.add_argument("--out", required=True, help="output folder (new or empty unless --overwrite)")
    parser.add_argument("--layout", nargs="+", default=["png"], choices=LAYOUTS, help="layouts to write (default png)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    parser.add_argument("--fps", type=positive_float,
                        help="frame rate of the mp4 layout (default: --tokens' samples.json rate, else 8)")
    parser.add_argument("--tokenizer", help="tokenizer checkpoint that decodes --tokens")
    parser.add_argument("--device", default="cpu", help="device decoding --tokens")
    parser.add_argument(
        "--num", type=positive_int, default=2048, help="--ucf101: number of real clips (as navid evaluate --num)"
    )
    parser.add_argument("--seed", type=int, default=42, help="--ucf101: navid evaluate's --real-seed")
    parser.add_argument("--split", default="train", choices=("train", "test"), help="--ucf101: split (papers: train)")
    parser.add_argument("--fold", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--num-frames", type=positive_int, default=16, help="--ucf101: frames per clip")
    parser.add_argument("--resolution", type=positive_int, default=128, help="--ucf101: frame size (the generator's)")
    parser.add_argument("--frames", type=positive_int, default=None,
                        help="--videos: keep the first N frames of each file")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--num-workers", type=non_negative_int, default=0, help="--ucf101: processes decoding videos")
    return parser


def source_from_args(args: argparse.Namespace) -> ClipSource:
    if args.tokens:
        if not args.tokenizer:
            raise ValueError("--tokens needs --tokenizer (the tokenizer that made the generator's token cache)")
        return from_tokens(args.tokens, args.tokenizer, args.batch_size, args.device)
    if args.ucf101:
        return from_ucf101(
            args.ucf101,
            args.num,
            args.seed,
            args.split,
            args.fold,
            args.num_frames,
            args.resolution,
            args.batch_size,
            args.num_workers,
        )
    if args.videos:
        return from_videos(args.videos, args.frames)
    return from_npz(args.npz)


def default_fps(tokens: Optional[str]) -> float:
    """The rate ``navid sample`` wrote its videos at (``samples.json`` beside ``tokens.pt``), else the default."""
    info = Path(tokens).parent / "samples.json" if tokens else None
    if info is not None and info.is_file():
        return float(json.loads(info.read_text()).get("fps", DEFAULT_FPS))
    return DEFAULT_FPS


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        source = source_from_args(args)
        out = export(source, args.out, args.layout, args.fps or default_fps(args.tokens), args.overwrite)
    except (*USER_ERRORS, VideoReadError) as err:
        print(f"export_samples: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(source)} clips to {out} ({', '.join(args.layout)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
