"""Turn an FVD source (a folder of videos, a UCF-101 root, or a saved ``.npz``) into feature statistics."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from navid.data.ucf101 import load_index, locate
from navid.data.video_io import VideoReadError, find_videos, frames_to_tensor, probe_video, read_video
from navid.metrics.batching import ClipBatches
from navid.metrics.fvd import RESIZE_METHOD, FeatureStats

log = logging.getLogger(__name__)
MIN_FRAMES = 10


def list_clips(src: Path, split: str, num: int | None, seed: int) -> list[Path]:
    """Video files of ``src``: a UCF-101 root's ``split`` (a seeded random subset of ``num``) or a folder (sorted, first ``num``)."""
    try:
        locate(src)
        is_ucf = True
    except (ValueError, FileNotFoundError):
        is_ucf = False
    if is_ucf:
        clips = list(load_index(src, split).clips)
        if num is not None and num < len(clips):
            clips = [clips[i] for i in sorted(np.random.default_rng(seed).choice(len(clips), num, replace=False))]
        return clips
    clips = find_videos(src)
    if not clips:
        raise ValueError(f"{src}: no video files (.avi .mp4 .webm .mkv .gif) found")
    return clips[:num] if num is not None else clips


def source_stats(
    src: str | Path, detector: torch.nn.Module, frames: int, batch_size: int, split: str = "train",
    num: int | None = None, seed: int = 0,
) -> FeatureStats:
    """Feature statistics of ``src``; the first ``frames`` frames of each file at its own resolution."""
    src = Path(src)
    if frames < MIN_FRAMES:
        raise ValueError(f"--frames must be at least {MIN_FRAMES} (I3D's temporal pooling), got {frames}")
    if src.suffix == ".npz":
        return FeatureStats.load(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder or .npz statistics file")
    batches, used, skipped = ClipBatches(detector, batch_size), [], []
    for path in tqdm(list_clips(src, split, num, seed), desc=f"I3D features {src.name}", unit="clip"):
        try:
            if probe_video(path).num_frames < frames:
                skipped.append(f"{path}: fewer than {frames} frames")
                continue
            video = frames_to_tensor(read_video(path, list(range(frames))))  # (C, T, H, W)
        except VideoReadError as err:
            skipped.append(str(err))
            continue
        batches.add(video)
        used.append(str(path))
    if skipped:
        log.warning("skipped %d of %d clips:\n  %s", len(skipped), len(skipped) + len(used), "\n  ".join(skipped))
    if len(used) < 2:
        raise ValueError(f"{src}: fewer than 2 usable clips ({len(used)})")
    provenance = {
        "detector_sha256": getattr(detector, "weights_sha256", ""), "resize": RESIZE_METHOD,
        "frames": frames, "stride": 1, "count": len(used), "clips": used, "source": str(src),
    }
    return FeatureStats.from_features(batches.features().numpy(), provenance)
