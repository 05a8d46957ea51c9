"""Turn an FVD source (a folder of videos, a UCF-101 root, or a saved ``.npz``) into feature statistics."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from navid.data.video_io import VideoReadError, find_videos, frames_to_tensor, probe_video, read_video
from navid.metrics.batching import ClipBatches
from navid.metrics.fvd import RESIZE_METHOD, FeatureStats, extract_features
from navid.metrics.real_chunks import DEFAULT_RESOLUTION, DEFAULT_SEED, ChunkClips, draw_chunks, is_ucf101_root

log = logging.getLogger(__name__)
MIN_FRAMES = 10


@dataclass
class SourceOptions:
    """How clips are taken from a source: ``frames`` per clip, and for a UCF-101 root the protocol's draw."""

    frames: int = 16
    batch_size: int = 8
    num: Optional[int] = None  # clips (default: every file of a folder, every chunk of a UCF-101 split)
    split: str = "train"
    fold: int = 1
    seed: int = DEFAULT_SEED
    resolution: int = DEFAULT_RESOLUTION
    allow_repeats: bool = False
    num_workers: int = 0  # processes decoding a UCF-101 root's chunks


def check_source(src: str | Path, option: str) -> None:
    """Stop before any features are computed if ``src`` cannot be an FVD side: neither a folder nor a readable
    ``.npz`` statistics file (loaded here, so a damaged one stops the command before the other side's features are
    computed), or a ``navid sample`` output folder, whose ``grids/`` would be counted as clips."""
    src = Path(src)
    if src.suffix == ".npz":
        FeatureStats.load(src)
    elif not src.is_dir():
        raise FileNotFoundError(f"{option} {src}: no such folder or .npz statistics file")
    elif (src / "samples.json").is_file() and (src / "videos").is_dir():
        raise ValueError(f"{option} {src} is a `navid sample` output folder: pass {src / 'videos'} (its grids/ "
                         "are class overviews, not clips)")


def source_stats(src: str | Path, detector: torch.nn.Module, options: SourceOptions) -> FeatureStats:
    """Feature statistics of ``src``.

    A UCF-101 root gives the NAR protocol's real clips (:mod:`navid.metrics.real_chunks`): distinct
    ``frames``-frame chunks of the split drawn with ``seed``, resized and cropped to ``resolution``.
    A folder gives the first ``frames`` frames of each file at its own resolution.
    """
    src = Path(src)
    if options.frames < MIN_FRAMES:
        raise ValueError(f"--frames must be at least {MIN_FRAMES} (I3D's temporal pooling), got {options.frames}")
    if src.suffix == ".npz":
        return FeatureStats.load(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder or .npz statistics file")
    provenance = {
        "detector_sha256": getattr(detector, "weights_sha256", ""), "resize": RESIZE_METHOD, "frames": options.frames,
        "stride": 1, "source": str(src),
    }
    if is_ucf101_root(src):
        feats, extra = _chunk_features(src, detector, options)
    else:
        feats, extra = _folder_features(src, detector, options)
    return FeatureStats.from_features(feats.numpy(), {**provenance, **extra, "count": len(feats)})


def _chunk_features(root: Path, detector: torch.nn.Module, options: SourceOptions) -> tuple[torch.Tensor, dict]:
    o = options
    draw = draw_chunks(root, o.num, o.seed, o.split, o.fold, o.frames, o.allow_repeats)
    if len(draw.order) < 2:
        raise ValueError(f"{root}: fewer than 2 chunks of {options.frames} frames ({len(draw.order)})")
    loader = DataLoader(ChunkClips(draw, o.resolution), batch_size=o.batch_size, num_workers=o.num_workers)
    batches = tqdm(loader, desc=f"I3D features {root.name}", unit="batch")
    feats = [extract_features(detector, video, o.batch_size) for video, _ in batches]
    extra = {"split": o.split, "fold": o.fold, "resolution": o.resolution, **draw.report()}
    return torch.cat(feats), extra


def _folder_features(src: Path, detector: torch.nn.Module, options: SourceOptions) -> tuple[torch.Tensor, dict]:
    paths = find_videos(src)
    if not paths:
        raise ValueError(f"{src}: no video files (.avi .mp4 .webm .mkv .gif) found")
    batches, used, skipped = ClipBatches(detector, options.batch_size), [], []
    for path in tqdm(paths[: options.num], desc=f"I3D features {src.name}", unit="clip"):
        try:
            if probe_video(path).num_frames < options.frames:
                skipped.append(f"{path}: fewer than {options.frames} frames")
                continue
            video = frames_to_tensor(read_video(path, list(range(options.frames))))  # (C, T, H, W)
        except VideoReadError as err:
            skipped.append(str(err))
            continue
        batches.add(video)
        used.append(str(path))
    if skipped:
        log.warning("skipped %d of %d clips:\n  %s", len(skipped), len(skipped) + len(used), "\n  ".join(skipped))
    if len(used) < 2:
        raise ValueError(f"{src}: fewer than 2 usable clips ({len(used)})")
    return batches.features(), {"clips": used}
