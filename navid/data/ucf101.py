"""UCF-101 as distributed: class folders of AVIs plus the ``ucfTrainTestlist/`` split files.

Layout accepted for ``root`` (the embedded synthetic dataset uses the first)::

    root/<Class>/v_<Class>_gXX_cYY.avi     root/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt
    root/UCF-101/<Class>/...               root/ucfTrainTestlist/...
    root = .../UCF-101                     .../ucfTrainTestlist/  (sibling of root)

Split files carry 1-based labels; navid's labels are 0-based. Class names and paths are
matched without regard to case: the official ``classInd.txt`` says ``HandstandPushups``
while the file names say ``HandStandPushups``.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from navid.data.metadata_cache import load_video_metadata
from navid.data.video_io import VIDEO_EXTENSIONS, VideoReadError, frames_to_tensor, read_video

log = logging.getLogger(__name__)

SPLIT_DIR = "ucfTrainTestlist"
BAD_FILE_POLICIES = ("skip", "pad")


class UCF101FormatError(ValueError):
    """A split file is malformed or names a missing file / unknown class (message: file and line)."""


@dataclass
class UCF101Index:
    """One split of one fold: absolute clip paths with 0-based labels."""

    class_names: list[str]
    clips: list[Path]
    labels: list[int]


def locate(root: str | os.PathLike) -> tuple[Path, Path]:
    """Return ``(video_dir, split_dir)`` for a dataset root in any of the accepted layouts."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} is not a folder")
    if (root / SPLIT_DIR).is_dir():
        split_dir = root / SPLIT_DIR
    elif (root.parent / SPLIT_DIR).is_dir() and _holds_class_folders(root, root.parent / SPLIT_DIR):
        split_dir = root.parent / SPLIT_DIR
    else:
        raise FileNotFoundError(f"no {SPLIT_DIR}/ folder in {root}, nor one next to it naming {root}'s class folders")
    video_dir = root / "UCF-101" if (root / "UCF-101").is_dir() else root
    return video_dir, split_dir


def _holds_class_folders(folder: Path, split_dir: Path) -> bool:
    """Whether ``folder`` has a folder of a class ``split_dir/classInd.txt`` names: a split folder next to it
    then belongs to it (``.../UCF-101`` beside ``.../ucfTrainTestlist``), not to a sibling such as samples/."""
    try:
        classes = {name.lower() for name in parse_class_ind(split_dir / "classInd.txt")}
    except (FileNotFoundError, UCF101FormatError):
        return False
    return any(child.is_dir() and child.name.lower() in classes for child in folder.iterdir())


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"split file {path} is not text ({err.reason} at byte {err.start})") from None
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def parse_class_ind(path: str | os.PathLike) -> list[str]:
    """``classInd.txt`` (``<1-based id> <ClassName>`` per line) → class names by 0-based id."""
    path = Path(path)
    names: dict[int, str] = {}
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise UCF101FormatError(f"{path}:{n}: expected '<id> <ClassName>', got '{line}'")
        idx = int(parts[0])
        if idx in names:
            raise UCF101FormatError(f"{path}:{n}: class id {idx} appears twice")
        names[idx] = parts[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise UCF101FormatError(f"{path}: class ids must be 1..{len(names)} without gaps")
    lowered = [name.lower() for name in names.values()]
    if len(set(lowered)) != len(lowered):
        raise UCF101FormatError(f"{path}: class names differ only in case")
    return [names[i] for i in range(1, len(names) + 1)]


def parse_split_file(path: str | os.PathLike, class_names: list[str]) -> list[tuple[str, int, int]]:
    """Lines ``Class/v_Class_gXX_cYY.avi [label]`` → ``(relative path, 0-based label, line number)``.

    The class is taken from the folder part (case-insensitively); a label, when present
    (train lists), must agree with it.
    """
    path = Path(path)
    by_lower = {name.lower(): i for i, name in enumerate(class_names)}
    entries = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) not in (1, 2) or "/" not in parts[0]:
            raise UCF101FormatError(f"{path}:{n}: expected '<Class>/<file> [label]', got '{line}'")
        rel = parts[0]
        folder = rel.split("/")[0]
        label = by_lower.get(folder.lower())
        if label is None:
            raise UCF101FormatError(f"{path}:{n}: unknown class '{folder}' (not in classInd.txt)")
        if len(parts) == 2:
            if not parts[1].isdigit() or int(parts[1]) - 1 != label:
                raise UCF101FormatError(
                    f"{path}:{n}: label '{parts[1]}' does not match class '{folder}' (id {label + 1} in classInd.txt)"
                )
        entries.append((rel, label, n))
    return entries


def _files_by_lower(video_dir: Path) -> dict[str, Path]:
    """Map lower-cased ``Class/file`` → real path, for case-insensitive lookup."""
    out = {}
    for class_dir in video_dir.iterdir():
        if class_dir.is_dir() and class_dir.name != SPLIT_DIR:
            for f in class_dir.iterdir():
                if f.suffix.lower() in VIDEO_EXTENSIONS:
                    out[f"{class_dir.name}/{f.name}".lower()] = f
    return out


def load_index(root: str | os.PathLike, split: str = "train", fold: int = 1) -> UCF101Index:
    """Parse ``classInd.txt`` and ``{split}list0{fold}.txt``; every listed file must exist."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got '{split}'")
    if fold not in (1, 2, 3):
        raise ValueError(f"fold must be 1, 2 or 3, got {fold}")
    video_dir, split_dir = locate(root)
    class_names = parse_class_ind(split_dir / "classInd.txt")
    split_file = split_dir / f"{split}list0{fold}.txt"
    files = _files_by_lower(video_dir)
    clips, labels = [], []
    for rel, label, n in parse_split_file(split_file, class_names):
        real = files.get(rel.lower())
        if real is None:
            raise UCF101FormatError(f"{split_file}:{n}: file '{rel}' not found under {video_dir}")
        clips.append(real)
        labels.append(label)
    if not clips:
        raise UCF101FormatError(f"{split_file}: lists no clips")
    return UCF101Index(class_names=class_names, clips=clips, labels=labels)


_GROUP_NAME = re.compile(r"v_(.+)_g(\d+)_c\d+", re.IGNORECASE)


def video_group(path: str | os.PathLike) -> str:
    """The UCF-101 group of a video (``v_<Class>_g<XX>_c<YY>`` -> ``<class>_g<XX>``), else the file's own stem.

    A group's clips are cut from one long video (same actor and scene), which is why the official
    splits keep each group on one side; a held-out share of the train split should do the same.
    """
    stem = Path(path).stem
    match = _GROUP_NAME.fullmatch(stem)
    return f"{match.group(1).lower()}_g{int(match.group(2)):02d}" if match else stem


def resize_crop(video: torch.Tensor, resolution: int) -> torch.Tensor:
    """``(T, C, H, W)`` float: shorter side to ``resolution`` (antialiased bilinear), then a centred square crop.

    The arithmetic is torchvision's ``Resize(resolution, antialias=True)`` + ``CenterCrop(resolution)``,
    which LARP and NAR apply to their training clips and to the real clips of their FVD: the longer
    side becomes ``int(resolution * long / short)`` (truncated) and the crop starts at
    ``round((size - resolution) / 2)`` (Python's round, half to even).
    """
    h, w = video.shape[-2:]
    if min(h, w) != resolution:
        longer = int(resolution * max(h, w) / min(h, w))
        size = (resolution, longer) if h <= w else (longer, resolution)
        video = F.interpolate(video, size=size, mode="bilinear", align_corners=False, antialias=True)
    h, w = video.shape[-2:]
    top, left = int(round((h - resolution) / 2.0)), int(round((w - resolution) / 2.0))
    return video[..., top : top + resolution, left : left + resolution]


class UCF101Clips(Dataset):
    """Fixed-length clips of a UCF-101-layout folder: item = ``(video (C,T,H,W) in [-1,1], label int64)``.

    Clips span ``(num_frames - 1) * frame_stride + 1`` source frames, starting at a random
    frame when ``train`` and centred otherwise. Unreadable files, and files shorter than a
    clip under ``bad_file_policy="skip"``, are dropped at construction with one warning
    listing them (``"pad"`` keeps short files, repeating their last frame); more than
    ``max_bad_fraction`` of them is an error. Frame counts come from a persistent cache.
    ``backend`` picks the decoder (see :func:`navid.data.video_io.read_video`). ``source_fps`` is the
    median frame rate of the kept files (``None`` if none is known).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        fold: int = 1,
        num_frames: int = 16,
        frame_stride: int = 1,
        resolution: int = 128,
        train: bool = False,
        hflip: bool = False,
        bad_file_policy: str = "skip",
        max_bad_fraction: float = 0.1,
        cache_dir: Optional[str | os.PathLike] = None,
        backend: str = "auto",
    ) -> None:
        if bad_file_policy not in BAD_FILE_POLICIES:
            raise ValueError(f"bad_file_policy must be one of {BAD_FILE_POLICIES}, got '{bad_file_policy}'")
        if num_frames < 1 or frame_stride < 1 or resolution < 1:
            raise ValueError("num_frames, frame_stride and resolution must be positive")
        index = load_index(root, split, fold)
        self.class_names = index.class_names
        self.num_frames, self.frame_stride, self.resolution = num_frames, frame_stride, resolution
        self.train, self.hflip, self.bad_file_policy, self.backend = train, hflip, bad_file_policy, backend
        self.span = (num_frames - 1) * frame_stride + 1
        key = {
            "root": str(Path(root).resolve()), "split": split, "fold": fold,
            "num_frames": num_frames, "frame_stride": frame_stride,
        }
        meta = load_video_metadata(index.clips, key, cache_dir, desc=f"probing {split} videos")
        bad, padded, self.clips, self.labels, self.frame_counts, rates = [], [], [], [], [], []
        for path, label, m in zip(index.clips, index.labels, meta):
            if m["error"] is not None or m["num_frames"] == 0:
                bad.append(m["error"] or f"{path}: no frames")
                continue
            if m["num_frames"] < self.span:
                if bad_file_policy == "skip":
                    bad.append(f"{path}: {m['num_frames']} frames < clip span {self.span}")
                    continue
                padded.append(path)
            self.clips.append(path)
            self.labels.append(label)
            self.frame_counts.append(m["num_frames"])
            if m["fps"] > 0:  # 0: the container records no rate
                rates.append(m["fps"])
        self.bad_files = bad
        self.padded_files = padded
        # The split's frame rate (UCF-101: 25 fps), so written clips play at the speed they were filmed.
        self.source_fps = round(float(np.median(rates)), 3) if rates else None
        fraction = len(bad) / len(index.clips)
        if bad:
            warnings.warn(
                f"UCF101Clips({split}, fold {fold}): skipping {len(bad)} of {len(index.clips)} files:\n  "
                + "\n  ".join(bad),
                stacklevel=2,
            )
        if fraction > max_bad_fraction:
            raise ValueError(
                f"{len(bad)} of {len(index.clips)} files in {split}list0{fold} are unreadable or too short "
                f"({fraction:.1%} > max_bad_fraction {max_bad_fraction:.1%}); first: {bad[0]}"
            )
        log.info(
            "UCF101Clips(%s, fold %d): %d clips; bad_file_policy=%s affected %d (skipped %d, padded %d)",
            split, fold, len(self.clips), bad_file_policy, len(bad) + len(padded), len(bad), len(padded),
        )
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def clip_fps(self) -> Optional[float]:
        """The rate at which a clip (every ``frame_stride``-th source frame) plays at the source's speed."""
        return None if self.source_fps is None else self.source_fps / self.frame_stride

    def frame_indices(self, num_source_frames: int) -> np.ndarray:
        """Source frame indices of one clip; indices past the end repeat the last frame (pad)."""
        room = max(num_source_frames - self.span, 0)
        start = int(torch.randint(room + 1, ()).item()) if self.train else room // 2
        idx = start + np.arange(self.num_frames) * self.frame_stride
        return np.minimum(idx, num_source_frames - 1)

    def _load(self, i: int) -> torch.Tensor:
        idx = self.frame_indices(self.frame_counts[i])
        frames = read_video(self.clips[i], idx, self.backend)  # (T, H, W, 3) uint8
        video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, 3, H, W) in [0, 255]
        video = resize_crop(video, self.resolution).clamp(0, 255).round().to(torch.uint8)
        if self.hflip and self.train and torch.rand(()) < 0.5:
            video = video.flip(-1)
        return frames_to_tensor(video.permute(0, 2, 3, 1))  # (C, T, H, W) in [-1, 1]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # A file that probed fine can still fail mid-stream; substitute the next clip
        # instead of killing the epoch (warned once per file and process).
        for attempt in range(len(self.clips)):
            j = (i + attempt) % len(self.clips)
            try:
                return self._load(j), torch.tensor(self.labels[j], dtype=torch.int64)
            except VideoReadError as err:
                if self.clips[j] not in self._warned:
                    self._warned.add(self.clips[j])
                    warnings.warn(f"UCF101Clips: substituting another clip for unreadable {err}", stacklevel=2)
        raise VideoReadError(f"no readable clip left in {len(self.clips)} files")
