"""Reading and writing video files: uint8 ``(T, H, W, 3)`` RGB arrays at the file boundary.

Decoding uses decord (fast random access by frame index) and falls back to PyAV when
decord is not installed or cannot open a file; GIFs go through PyAV. Both decoders are
kept interchangeable: they return the same bytes for the same indices (``tests/test_video_io.py``
checks MJPEG, MPEG-4 Part 2 with and without B-frames, DivX-style packed B-frames, H.264 in AVI,
MP4 and MKV), so which one ran never changes a result.

decord's random access seeks by its own frame index, which is wrong for some files: in AVIs whose
decoder reorders or delays frames (DivX and Xvid with B-frames, H.264) it has no timestamps, and
for MPEG-4 Part 2 with B-frames it puts the keyframes at their decode-order positions. A seek past
the first keyframe then returns frames from up to a GOP earlier or later, silently.
:func:`decord_seeks_exactly` checks each file once (decord's timestamps and keyframe indices
against the container's packets, no decoding) and the other files are decoded in order from
frame 0, which is always exact.
Writing picks the container and codec from the suffix and is atomic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from navid.utils.atomic import atomic_path

VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".gif")
BACKENDS = ("auto", "decord", "pyav")
# Frame rate of written clips whose source rate is unknown: slow enough to follow a 16-frame clip.
DEFAULT_FPS = 8.0


class VideoReadError(RuntimeError):
    """A file could not be decoded (corrupt, truncated, empty, not a video, or index out of range)."""


@dataclass
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def _decord():
    try:
        import decord
    except ImportError:
        return None
    return decord


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend '{backend}'; choose one of {', '.join(BACKENDS)}")


def _use_decord(path: Path, backend: str) -> bool:
    return backend == "decord" or (backend == "auto" and path.suffix.lower() != ".gif" and _decord() is not None)


def _check_indices(path: Path, indices: np.ndarray, num_frames: int) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= num_frames):
        raise VideoReadError(
            f"{path}: frame indices [{indices.min()}, {indices.max()}] out of range for {num_frames} frames"
        )


# ---------------------------------------------------------------- decord
def _decord_reader(path: Path):
    decord = _decord()
    if decord is None:
        raise VideoReadError(f"{path}: decord is not installed")
    try:
        return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    except Exception as err:  # decord raises DECORDError / RuntimeError with C++ messages
        raise VideoReadError(f"{path}: decord cannot open the file ({str(err).splitlines()[0]})") from None


def _probe_decord(path: Path) -> VideoInfo:
    vr = _decord_reader(path)
    height, width = vr[0].shape[:2] if len(vr) else (0, 0)
    return VideoInfo(num_frames=len(vr), fps=float(vr.get_avg_fps()), height=int(height), width=int(width))


def _keyframes_in_display_order(path: Path) -> Optional[tuple[int, list[int]]]:
    """(packet count, display-order indices of the keyframes) from the container's packets, without
    decoding; None when a packet has no presentation timestamp (the order cannot be known this way)."""
    container = _open_av(path)
    pts, key = [], []
    try:
        for packet in container.demux(container.streams.video[0]):
            if packet.size == 0:  # the demuxer's end-of-stream marker
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            key.append(packet.is_keyframe)
    except Exception as err:
        raise VideoReadError(f"{path}: cannot read the packets ({err})") from None
    finally:
        container.close()
    rank = np.empty(len(pts), dtype=np.int64)
    rank[np.argsort(pts, kind="stable")] = np.arange(len(pts))
    return len(pts), sorted(rank[np.asarray(key, dtype=bool)].tolist())


def _index_matches_packets(path: Path, vr) -> bool:
    n = len(vr)
    if n < 2:
        return True
    start = vr.get_frame_timestamp(list(range(n)))[:, 0]  # (n,) seconds, display order
    if start.min() < 0 or not np.all(np.diff(start) > 0):
        return False  # no timestamps (a reordering decoder in AVI): decord's frame index is a guess
    packets = _keyframes_in_display_order(path)
    return packets is not None and packets == (n, list(vr.get_key_indices()))


_SEEK_CHECKS: dict[tuple[str, int, int], bool] = {}  # (resolved path, size, mtime_ns) -> decord_seeks_exactly


def decord_seeks_exactly(path: str | os.PathLike, reader=None) -> bool:
    """Whether decord's random access returns the frames its indices name in this file (checked once per file
    version, without decoding): its timestamps increase and its keyframe indices are the container's.
    ``reader``: the file's open ``decord.VideoReader``, if the caller has one (else one is opened)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SEEK_CHECKS:
        _SEEK_CHECKS[key] = _index_matches_packets(path, reader if reader is not None else _decord_reader(path))
    return _SEEK_CHECKS[key]


IN_ORDER_CHUNK = 32  # frames per decord call when decoding from frame 0 (bounds the memory of long videos)


def _decode_decord_in_order(vr, idx: np.ndarray) -> np.ndarray:
    """Frames ``idx`` by decoding frames 0 .. max(idx) in order, in chunks: decord never seeks, so every index is
    exact; only the requested frames are kept."""
    out = None
    stop = int(idx.max()) + 1
    for start in range(0, stop, IN_ORDER_CHUNK):
        end = min(start + IN_ORDER_CHUNK, stop)
        chunk = vr.get_batch(list(range(start, end))).asnumpy()  # (end - start, H, W, 3) uint8
        if out is None:
            out = np.empty((len(idx), *chunk.shape[1:]), dtype=np.uint8)
        inside = (idx >= start) & (idx < end)
        out[inside] = chunk[idx[inside] - start]
    return out


def _read_decord(path: Path, indices: Optional[Sequence[int]]) -> np.ndarray:
    vr = _decord_reader(path)
    n = len(vr)
    if n == 0:
        raise VideoReadError(f"{path}: no frames")
    idx = np.arange(n) if indices is None else np.asarray(indices, dtype=np.int64)
    _check_indices(path, idx, n)
    if idx.size == 0:
        return np.empty((0, *vr[0].shape), dtype=np.uint8)
    try:
        if decord_seeks_exactly(path, vr):
            frames = vr.get_batch(idx.tolist()).asnumpy()  # (T, H, W, 3) uint8
        else:
            frames = _decode_decord_in_order(vr, idx)
    except VideoReadError:
        raise
    except Exception as err:
        raise VideoReadError(f"{path}: decord failed to decode ({str(err).splitlines()[0]})") from None
    return np.ascontiguousarray(frames, dtype=np.uint8)


# ---------------------------------------------------------------- PyAV
def _open_av(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as err:  # av.error.* (InvalidDataError, EOFError, ...) and OSError
        raise VideoReadError(f"{path}: cannot open the file ({err})") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: no video stream")
    return container


def _decode_av(path: Path, stop: Optional[int] = None) -> np.ndarray:
    """Decode frames sequentially, up to frame ``stop`` (exclusive; all when ``None``).

    PyAV has no reliable frame-accurate seek for AVI, so random access means decoding
    from the start; stopping early saves the tail.
    """
    container = _open_av(path)
    frames = []
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            if stop is not None and len(frames) >= stop:
                break
    except Exception as err:
        raise VideoReadError(f"{path}: decoding failed ({err})") from None
    finally:
        container.close()
    if not frames:
        raise VideoReadError(f"{path}: no frames")
    return np.stack(frames)  # (T, H, W, 3)


def _probe_av(path: Path) -> VideoInfo:
    container = _open_av(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 0
        height, width = stream.codec_context.height, stream.codec_context.width
    finally:
        container.close()
    # Container frame counts are missing or wrong for some AVIs and GIFs: count by decoding.
    num_frames = _decode_av(path).shape[0]
    return VideoInfo(num_frames=num_frames, fps=float(rate), height=int(height), width=int(width))


def _read_av(path: Path, indices: Optional[Sequence[int]]) -> np.ndarray:
    if indices is None:
        return _decode_av(path)
    idx = np.asarray(indices, dtype=np.int64)
    frames = _decode_av(path, stop=int(idx.max()) + 1 if idx.size else 1)
    _check_indices(path, idx, frames.shape[0])  # fewer than ``stop`` decoded: the file is that long
    return np.ascontiguousarray(frames[idx])


def _with_fallback(path: str | os.PathLike, backend: str, with_decord, with_av):
    """Run ``with_decord(path)``; on a decord failure fall back to ``with_av(path)`` unless decord was forced."""
    _check_backend(backend)
    path = Path(path)
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    if _use_decord(path, backend):
        try:
            return with_decord(path)
        except VideoReadError:
            if backend == "decord":
                raise
    return with_av(path)


# ---------------------------------------------------------------- public API
def probe_video(path: str | os.PathLike, backend: str = "auto") -> VideoInfo:
    """Frame count, fps and size of a video without decoding it (decord) or by decoding (PyAV)."""
    return _with_fallback(path, backend, _probe_decord, _probe_av)


def read_video(
    path: str | os.PathLike, indices: Optional[Sequence[int]] = None, backend: str = "auto"
) -> np.ndarray:
    """Decode frames ``indices`` (all when ``None``) as uint8 ``(T, H, W, 3)`` RGB.

    ``backend="auto"`` uses decord and falls back to PyAV when decord is missing or fails
    on this file; ``"decord"`` / ``"pyav"`` force one. Raises :class:`VideoReadError`
    naming the file on any decoding problem.
    """
    return _with_fallback(path, backend, lambda p: _read_decord(p, indices), lambda p: _read_av(p, indices))


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be non-empty uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    return frames


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 25) -> Path:
    """Write uint8 ``(T, H, W, 3)`` RGB frames; the format follows the suffix, written atomically.

    ``.mp4``: H.264 (libx264, falling back to MPEG-4 Part 2), yuv420p, so H and W must be
    even. ``.avi``: MJPEG at top quality with full-range yuvj444p — intra-only, so decord's
    random access and PyAV's sequential decode agree exactly, and it keeps colour detail at
    small sizes. ``.gif``: imageio (palette-quantised, lossy in colour).
    """
    frames = _check_frames(frames)
    path = Path(path)
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix == ".gif":
            import imageio.v3 as iio

            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        elif suffix in (".mp4", ".avi", ".mkv"):
            _write_av(tmp, frames, fps, suffix)
        else:
            raise ValueError(f"{path}: cannot write '{suffix}' videos; use .mp4, .avi, .mkv or .gif")
    return path


def _write_av(path: Path, frames: np.ndarray, fps: float, suffix: str) -> None:
    import av

    height, width = frames.shape[1:3]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        if suffix == ".avi":
            stream = container.add_stream("mjpeg", rate=rate)
            stream.pix_fmt = "yuvj444p"
            stream.options = {"q:v": "1"}
            stream.codec_context.qmin = 1
            stream.codec_context.qmax = 1
        else:
            if height % 2 or width % 2:
                raise ValueError(f"{path}: {suffix} (yuv420p) needs even height and width, got {height}x{width}")
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=rate)
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "18", "preset": "medium"} if codec == "libx264" else {"qscale": "2"}
        stream.height, stream.width = height, width
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(T, H, W, C)`` → float32 ``(C, T, H, W)`` in [-1, 1]."""
    video = torch.as_tensor(np.asarray(frames))
    return video.permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """float ``(C, T, H, W)`` in [-1, 1] → uint8 ``(T, H, W, C)`` (clamped, rounded)."""
    video = video.detach().float().cpu().clamp(-1.0, 1.0)
    return video.add(1.0).mul(127.5).round().to(torch.uint8).permute(1, 2, 3, 0).contiguous().numpy()


def find_videos(root: str | os.PathLike) -> list[Path]:
    """Every file under ``root`` (recursively) with a video suffix, sorted; hidden files (a killed writer's
    ``.name.tmp.mp4``) are not videos."""
    return sorted(p for p in Path(root).rglob("*")
                  if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))
