"""Video file I/O on real files: decord and PyAV agree, writing is atomic, bad files raise clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from navid.data.video_io import (
    VideoInfo,
    VideoReadError,
    decord_seeks_exactly,
    find_videos,
    frames_to_tensor,
    probe_video,
    read_video,
    tensor_to_frames,
    write_video,
)
from video_helpers import write_divx_packed_avi, write_encoded


def smooth_frames(t=12, h=48, w=64) -> np.ndarray:
    """Moving colour gradients: (T, H, W, 3) uint8."""
    tt = np.linspace(0, 1, t)[:, None, None, None]
    y = np.linspace(0, 1, h)[None, :, None, None]
    x = np.linspace(0, 1, w)[None, None, :, None]
    return (127 + 120 * np.sin(5 * (x + 0.7 * y + tt) + np.arange(3))).astype(np.uint8)


def write_mpeg4_avi(path, frames):
    """An MPEG-4 Part 2 AVI like UCF-101's Xvid files, without B-frames."""
    write_encoded(path, frames, tag="XVID")


# name: (suffix, codec, FourCC, B-frames); "divx-packed" is written by write_divx_packed_avi
ENCODINGS = {
    "divx-packed": (".avi", "mpeg4", "XVID", 1),
    "xvid-b-frames": (".avi", "mpeg4", "XVID", 2),
    "xvid": (".avi", "mpeg4", "XVID", 0),
    "h264-avi": (".avi", "libx264", None, 2),
    "h264-mp4": (".mp4", "libx264", None, 2),
    "mpeg4-b-frames-mp4": (".mp4", "mpeg4", None, 2),
    "mpeg4-b-frames-mkv": (".mkv", "mpeg4", None, 2),
}


@pytest.mark.parametrize("name", ENCODINGS)
def test_decord_returns_the_frames_its_indices_name_past_every_keyframe(tmp_path, name):
    # decord's own seek lands up to a GOP away in DivX-packed and Xvid AVIs with B-frames, H.264 AVIs and MPEG-4
    # Part 2 with B-frames (a clip at frame 24 of the packed file came back as frames 1..8); such files are decoded
    # in order.
    suffix, codec, tag, b_frames = ENCODINGS[name]
    frames = smooth_frames(t=48)
    path = tmp_path / f"clip{suffix}"
    if name == "divx-packed":
        write_divx_packed_avi(path, frames)
    else:
        write_encoded(path, frames, codec, tag, b_frames, gop=12)
    reference = read_video(path, backend="pyav")
    assert reference.shape == frames.shape
    distance = np.abs(reference[:, None].astype(int) - frames[None].astype(int)).mean(axis=(2, 3, 4))  # (48, 48)
    np.testing.assert_array_equal(distance.argmin(axis=1), np.arange(48))  # PyAV: each frame, in its place
    for start in (0, 5, 11, 12, 13, 23, 24, 24 - b_frames, 24 + b_frames):
        idx = list(range(start, start + 16))
        np.testing.assert_array_equal(read_video(path, idx, backend="decord"), reference[idx], err_msg=f"{idx}")
    idx = [47, 0, 12, 13, 13, 26, 3, 25, 39]
    np.testing.assert_array_equal(read_video(path, idx, backend="decord"), reference[idx])
    np.testing.assert_array_equal(read_video(path, backend="decord"), reference)


def test_files_whose_index_decord_keeps_right_keep_random_access(tmp_path):
    frames = smooth_frames(t=40)
    for name in ("xvid", "h264-mp4"):
        suffix, codec, tag, b_frames = ENCODINGS[name]
        write_encoded(tmp_path / f"{name}{suffix}", frames, codec, tag, b_frames)
        assert decord_seeks_exactly(tmp_path / f"{name}{suffix}"), name
    write_encoded(tmp_path / "b.avi", frames, "mpeg4", "XVID", b_frames=2)
    assert not decord_seeks_exactly(tmp_path / "b.avi")
    write_divx_packed_avi(tmp_path / "packed.avi", frames)
    assert not decord_seeks_exactly(tmp_path / "packed.avi")


@pytest.mark.parametrize("suffix", [".avi", ".mp4", "mpeg4.avi"])
def test_decord_and_pyav_decode_identically(tmp_path, suffix):
    frames = smooth_frames()
    path = tmp_path / f"clip{suffix}"
    if suffix == "mpeg4.avi":
        write_mpeg4_avi(path, frames)
    else:
        write_video(path, frames, fps=25)
    a = read_video(path, backend="decord")
    b = read_video(path, backend="pyav")
    assert a.dtype == np.uint8 and a.shape == frames.shape
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - frames).mean() < 6  # lossy but close
    idx = [7, 0, 3, 3, 11]
    np.testing.assert_array_equal(read_video(path, idx, backend="decord"), b[idx])
    np.testing.assert_array_equal(read_video(path, idx, backend="pyav"), b[idx])
    assert probe_video(path, backend="decord") == probe_video(path, backend="pyav") == VideoInfo(12, 25.0, 48, 64)


def test_gif_roundtrip_uses_pyav_under_auto(tmp_path):
    frames = smooth_frames(t=6)
    path = write_video(tmp_path / "clip.gif", frames, fps=10)
    out = read_video(path)  # auto: decord cannot read GIFs, PyAV does
    assert out.shape == frames.shape
    assert np.abs(out.astype(int) - frames).mean() < 8
    assert probe_video(path).num_frames == 6


def test_write_is_atomic_and_validates(tmp_path):
    write_video(tmp_path / "a.avi", smooth_frames(t=3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.avi"]  # no temporary left behind
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "b.avi", smooth_frames().astype(np.float32))
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "c.mp4", smooth_frames(h=47))
    with pytest.raises(ValueError, match="cannot write"):
        write_video(tmp_path / "d.xyz", smooth_frames())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avi"]


@pytest.mark.parametrize("backend", ["auto", "decord", "pyav"])
def test_bad_files_raise_naming_the_file(tmp_path, backend):
    good = write_video(tmp_path / "good.avi", smooth_frames(t=4))
    (tmp_path / "text.avi").write_text("not a video")
    (tmp_path / "empty.avi").write_bytes(b"")
    for name in ("text.avi", "empty.avi", "missing.avi"):
        with pytest.raises(VideoReadError, match=name):
            read_video(tmp_path / name, backend=backend)
    with pytest.raises(VideoReadError, match="out of range"):
        read_video(good, [0, 4], backend=backend)
    with pytest.raises(ValueError, match="unknown video backend"):
        read_video(good, backend="opencv")


def test_tensor_conversion_roundtrip():
    frames = np.random.default_rng(0).integers(0, 256, (5, 8, 10, 3), dtype=np.uint8)
    video = frames_to_tensor(frames)
    assert video.shape == (3, 5, 8, 10) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    np.testing.assert_array_equal(tensor_to_frames(video), frames)
    assert tensor_to_frames(torch.full((3, 1, 2, 2), 5.0)).max() == 255  # clamped


def test_find_videos_recursive_sorted(tmp_path):
    for rel in ("b/x.avi", "a/y.MP4", "a/z.gif", "a/notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in find_videos(tmp_path)] == ["a/y.MP4", "a/z.gif", "b/x.avi"]
