"""Persistent per-file video metadata (frame count, fps, or the decoding error).

Opening 13,320 AVIs to count frames takes minutes; this cache makes it a one-time cost.
A cache file is keyed by (root, split, clip settings), stores each file's size and mtime
so changed files are re-probed, and is written atomically. A file lock makes concurrent
processes (DDP ranks, several jobs) build it once: the first takes the lock and probes,
the others wait and then read its result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

from tqdm import tqdm

from navid.data.video_io import VideoReadError, probe_video
from navid.utils.atomic import write_json_atomic

CACHE_FORMAT = "navid-video-meta/1"


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "navid" / "video-meta"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def file_stamp(path: Path) -> list[int]:
    """``[size, mtime_ns]``: changes when the file is rewritten, so results derived from it are recomputed."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _probe(path: Path) -> dict:
    try:
        stamp = file_stamp(path)
    except OSError as err:
        return {"stamp": None, "num_frames": 0, "fps": 0.0, "error": f"{path}: {err.strerror}"}
    try:
        info = probe_video(path)
    except VideoReadError as err:
        return {"stamp": stamp, "num_frames": 0, "fps": 0.0, "error": str(err)}
    return {"stamp": stamp, "num_frames": info.num_frames, "fps": info.fps, "error": None}


def load_video_metadata(
    files: Sequence[Path], key: dict, cache_dir: Optional[str | os.PathLike] = None, desc: str = "probing videos"
) -> list[dict]:
    """Return ``{"num_frames", "fps", "error"}`` for each file, from the cache where it is fresh.

    ``key`` (a JSON-able dict: root, split, clip settings) names the cache file.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    cache_file = cache_dir / f"{digest}.json"
    with _file_lock(cache_dir / f"{digest}.lock"):
        cached: dict = {}
        if cache_file.is_file():
            try:
                data = json.loads(cache_file.read_text())
                if data.get("format") == CACHE_FORMAT and data.get("key") == key:
                    cached = data["entries"]
            except (OSError, ValueError, KeyError):
                cached = {}
        entries, changed = {}, False
        for path in tqdm(files, desc=desc, unit="file", leave=False, disable=len(files) < 200):
            name = str(path)
            entry = cached.get(name)
            try:
                fresh = entry is not None and entry["stamp"] == file_stamp(path)
            except OSError:
                fresh = False
            if not fresh:
                entry, changed = _probe(path), True
            entries[name] = entry
        if changed or len(entries) != len(cached):
            write_json_atomic(cache_file, {"format": CACHE_FORMAT, "key": key, "entries": entries})
    return [entries[str(p)] for p in files]
