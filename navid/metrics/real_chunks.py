"""The real clips of the NAR / LARP FVD protocol: distinct, non-overlapping chunks of a UCF-101 split.

The evaluation code NAR and LARP publish (LARP's ``video_dataset`` with ``use_all_frames``, drawn by
NAR's ``sample.py``) sorts the split's video paths, cuts every video into ``len(video) // 16``
chunks starting at frames 0, 16, 32, ... (a shorter tail is dropped), numbers the chunks in that
order and draws ``random.Random(42).sample(range(num_chunks), num)``: distinct chunks, never
repeats. Each chunk is resized (shorter side, antialiased) and centre-cropped to the generated
clips' resolution (128 for UCF-101) and kept as uint8; the FVD code then resizes it to 224.
Generated clip ``i`` takes the label of drawn chunk ``i``.

Unreadable files are left out of the numbering, named in a warning and in the report (``skipped``);
on an intact UCF-101 none are, and the numbering is the reference code's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from navid.data.metadata_cache import file_stamp, load_video_metadata
from navid.data.ucf101 import load_index, locate, resize_crop
from navid.data.video_io import frames_to_tensor, read_video

log = logging.getLogger(__name__)

PROTOCOL = "nar"
DEFAULT_SEED = 42
DEFAULT_RESOLUTION = 128


@dataclass(frozen=True)
class Chunk:
    """Frames ``start .. start + num_frames - 1`` of ``video``, with its class label (0-based)."""

    video: Path
    start: int
    label: int


@dataclass
class ChunkIndex:
    """Every chunk of one split, in the reference code's numbering."""

    video_dir: Path  # chunk paths are reported relative to it
    class_names: list[str]
    num_frames: int
    chunks: list[Chunk]
    skipped: list[str]  # "path: reason" for each unreadable file


@dataclass
class ChunkDraw:
    """The chunks drawn for one evaluation: ``index.chunks[i]`` for ``i`` in ``order``."""

    index: ChunkIndex
    order: list[int]
    seed: int

    @property
    def chunks(self) -> list[Chunk]:
        return [self.index.chunks[i] for i in self.order]

    @property
    def labels(self) -> list[int]:
        return [chunk.label for chunk in self.chunks]

    def records(self) -> list[dict]:
        """``{"video": path relative to the dataset's video folder, "start": first frame}`` per drawn chunk."""
        root = self.index.video_dir
        return [{"video": chunk.video.relative_to(root).as_posix(), "start": chunk.start} for chunk in self.chunks]

    def fingerprint(self) -> str:
        """SHA-256 of the drawn chunk list, their frame count and each drawn file's size and modification time.

        The stamps make a dataset rewritten under the same names (re-encoded or resized copies) another set
        of real clips, so cached statistics of the old files are not reused for it.
        """
        root = self.index.video_dir
        stamps = {video.relative_to(root).as_posix(): file_stamp(video)
                  for video in sorted({chunk.video for chunk in self.chunks})}
        payload = json.dumps({"num_frames": self.index.num_frames, "chunks": self.records(), "files": stamps})
        return hashlib.sha256(payload.encode()).hexdigest()

    def report(self) -> dict:
        return {
            "protocol": PROTOCOL,
            "seed": self.seed,
            "num_chunks_available": len(self.index.chunks),
            "skipped_files": list(self.index.skipped),
            "chunks": self.records(),
        }


def is_ucf101_root(path: str | os.PathLike) -> bool:
    """Whether ``path`` has a UCF-101 layout (a ``ucfTrainTestlist/`` inside or next to it)."""
    try:
        locate(path)
    except (ValueError, FileNotFoundError):
        return False
    return True


def enumerate_chunks(
    root: str | os.PathLike, split: str = "train", fold: int = 1, num_frames: int = 16,
    cache_dir: Optional[str | os.PathLike] = None,
) -> ChunkIndex:
    """All non-overlapping ``num_frames``-frame chunks of a UCF-101-layout split, in the reference order.

    Videos are sorted by their path (case-sensitive, as Python's ``sorted``); a video of ``n``
    frames gives ``n // num_frames`` chunks. Frame counts come from the persistent metadata cache.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be positive, got {num_frames}")
    video_dir, _ = locate(root)
    index = load_index(root, split, fold)
    key = {"root": str(Path(root).resolve()), "split": split, "fold": fold, "use": "fvd chunks"}
    meta = load_video_metadata(index.clips, key, cache_dir, desc=f"probing {split} videos")
    videos = sorted(zip(index.clips, index.labels, meta), key=lambda item: item[0].relative_to(video_dir).as_posix())
    chunks, skipped = [], []
    for path, label, m in videos:
        if m["error"] is not None:
            skipped.append(m["error"])
            continue
        chunks.extend(Chunk(path, k * num_frames, label) for k in range(m["num_frames"] // num_frames))
    if skipped:
        listing = "\n  ".join(skipped)
        message = f"{split}list0{fold}: {len(skipped)} unreadable files left out of the chunks:\n  {listing}"
        warnings.warn(message, stacklevel=2)
    if not chunks:
        raise ValueError(f"{root}: no video of {split}list0{fold} has {num_frames} readable frames")
    log.info("%s list %d: %d chunks of %d frames from %d videos", split, fold, len(chunks), num_frames, len(videos))
    return ChunkIndex(video_dir, index.class_names, num_frames, chunks, skipped)


def draw_order(num_available: int, num: int, seed: int, allow_repeats: bool = False) -> list[int]:
    """``random.Random(seed).sample(range(num_available), num)``, the reference draw.

    More than ``num_available`` is an error unless ``allow_repeats``: then every chunk is used
    once per round, each round a fresh shuffle, until ``num`` are drawn.
    """
    if num < 1:
        raise ValueError(f"need at least 1 real clip, got {num}")
    rng = random.Random(seed)
    if num <= num_available:
        return rng.sample(range(num_available), num)
    if not allow_repeats:
        raise ValueError(
            f"{num} real clips requested but the split has only {num_available} distinct "
            f"{'chunk' if num_available == 1 else 'chunks'}; ask for at most {num_available} or pass --allow-repeats"
        )
    order: list[int] = []
    while len(order) < num:
        order.extend(rng.sample(range(num_available), num_available))
    return order[:num]


def draw_chunks(
    root: str | os.PathLike, num: Optional[int], seed: int = DEFAULT_SEED, split: str = "train", fold: int = 1,
    num_frames: int = 16, allow_repeats: bool = False, cache_dir: Optional[str | os.PathLike] = None,
) -> ChunkDraw:
    """The protocol's real chunks of ``root``: ``num`` drawn with ``seed``, or all (in order) when ``num`` is None."""
    index = enumerate_chunks(root, split, fold, num_frames, cache_dir)
    order = list(range(len(index.chunks))) if num is None else draw_order(len(index.chunks), num, seed, allow_repeats)
    return ChunkDraw(index, order, seed)


class ChunkClips(Dataset):
    """Item ``i`` = drawn chunk ``i`` as ``(video (C, T, H, W) float in [-1, 1] from uint8, label int64)``.

    Frames are resized and centre-cropped to ``resolution`` (:func:`navid.data.ucf101.resize_crop`)
    and rounded to uint8, as the data pipeline stores clips. A chunk that cannot be decoded is an
    error naming the file: substituting another chunk would change the protocol's real set.
    """

    def __init__(self, draw: ChunkDraw, resolution: int = DEFAULT_RESOLUTION, backend: str = "auto"):
        self.chunks, self.labels, self.class_names = draw.chunks, draw.labels, draw.index.class_names
        self.num_frames, self.resolution, self.backend = draw.index.num_frames, resolution, backend

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = self.chunks[i]
        indices = list(range(chunk.start, chunk.start + self.num_frames))
        frames = read_video(chunk.video, indices, self.backend)  # (T, H, W, 3) uint8
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W) in [0, 255]
        video = resize_crop(video, self.resolution).clamp(0, 255).round().to(torch.uint8)
        return frames_to_tensor(video.permute(0, 2, 3, 1)), torch.tensor(chunk.label, dtype=torch.int64)  # (C, T, H, W)
