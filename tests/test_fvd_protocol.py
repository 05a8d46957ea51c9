"""The NAR / LARP FVD protocol: real chunks of a UCF-101 split, their draw, their preprocessing, uint8 round trip."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from navid.data.ucf101 import resize_crop
from navid.data.video_io import frames_to_tensor, tensor_to_frames, write_video
from navid.metrics.fvd import quantize_uint8
from navid.metrics.real_chunks import ChunkClips, draw_chunks, draw_order, enumerate_chunks

# (class, file, frames): long (40 frames: chunks at 0 and 16, the 8-frame tail dropped), exactly 16
# (one chunk), short (15: none), a corrupt file; listed out of order to check the sort.
VIDEOS = [
    ("Bowling", "v_Bowling_g01_c01.avi", 15),
    ("Archery", "v_Archery_g02_c01.avi", 16),
    ("Archery", "v_Archery_g01_c01.avi", 40),
    ("Bowling", "v_Bowling_g02_c01.avi", None),
]


def _frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame t is a flat grey of level 4 t (MJPEG keeps flat frames to within a level or two)."""
    levels = np.arange(count, dtype=np.uint8) * 4  # (T,)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ucf")
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Archery\r\n2 Bowling\r\n")
    lines = []
    for cls, name, count in VIDEOS:
        (root / cls).mkdir(exist_ok=True)
        if count is None:
            (root / cls / name).write_bytes(b"RIFF not really an avi" * 10)
        else:
            write_video(root / cls / name, _frames(count))
        lines.append(f"{cls}/{name} {1 + (cls == 'Bowling')}\r\n")
    (lists / "trainlist01.txt").write_text("".join(lines))
    return root


def test_chunks_of_short_long_exact_and_corrupt_videos(tree, tmp_path):
    with pytest.warns(UserWarning, match="v_Bowling_g02_c01.avi"):
        index = enumerate_chunks(tree, "train", num_frames=16, cache_dir=tmp_path)
    got = [(c.video.relative_to(tree).as_posix(), c.start, c.label) for c in index.chunks]
    assert got == [
        ("Archery/v_Archery_g01_c01.avi", 0, 0),
        ("Archery/v_Archery_g01_c01.avi", 16, 0),
        ("Archery/v_Archery_g02_c01.avi", 0, 0),
    ]
    assert len(index.skipped) == 1 and "v_Bowling_g02_c01.avi" in index.skipped[0]
    with pytest.warns(UserWarning):
        assert len(enumerate_chunks(tree, "train", num_frames=8, cache_dir=tmp_path).chunks) == 5 + 2 + 1


def test_chunk_clip_holds_its_own_frames_cropped_to_resolution(tree, tmp_path):
    with pytest.warns(UserWarning):
        draw = draw_chunks(tree, None, num_frames=16, cache_dir=tmp_path)
    video, label = ChunkClips(draw, resolution=32)[1]  # frames 16..31 of the 40-frame video
    assert video.shape == (3, 16, 32, 32) and label == 0
    assert torch.equal(quantize_uint8(video), video)  # stored as uint8
    level = (video.mean(dim=(0, 2, 3)) + 1) * 127.5  # (T,) grey level of each frame
    assert (level - 4 * torch.arange(16, 32)).abs().max() <= 3  # MJPEG moves a flat level by a step or two


def test_draw_is_distinct_reference_sample_and_refuses_too_many(tree, tmp_path):
    with pytest.warns(UserWarning):
        index = enumerate_chunks(tree, "train", num_frames=8, cache_dir=tmp_path)
    n = len(index.chunks)
    with pytest.warns(UserWarning):
        draw = draw_chunks(tree, n, seed=42, num_frames=8, cache_dir=tmp_path)
    records = [(r["video"], r["start"]) for r in draw.records()]
    assert len(set(records)) == n  # --num equal to the number of chunks: every chunk once
    assert draw.order == random.Random(42).sample(range(n), n)  # the reference code's draw
    with pytest.raises(ValueError, match=f"{n + 1} real clips requested but the split has only {n} distinct chunks"):
        draw_order(n, n + 1, 42)
    repeated = draw_order(n, 2 * n + 1, 42, allow_repeats=True)
    assert sorted(np.bincount(repeated, minlength=n).tolist()) == [2] * (n - 1) + [3]


def test_draw_fingerprint_changes_when_a_drawn_file_is_rewritten(tree, tmp_path):
    with pytest.warns(UserWarning):
        draw = draw_chunks(tree, 2, seed=42, num_frames=16, cache_dir=tmp_path)
    before = draw.fingerprint()
    assert draw.fingerprint() == before
    drawn = sorted({chunk.video for chunk in draw.chunks})[0]
    st = drawn.stat()
    os.utime(drawn, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # rewritten in place, same name and size
    try:
        assert draw.fingerprint() != before  # the stats cache key changes: old real statistics are not reused
    finally:
        os.utime(drawn, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.numerics
def test_resize_crop_follows_torchvision_arithmetic():
    # A 240x320 UCF-101 frame to 128: torchvision's Resize(128) makes it 128 x int(128*320/240) = 128x170,
    # CenterCrop(128) starts at round((170-128)/2) = 21.
    video = torch.arange(320.0).expand(1, 3, 240, 320).contiguous()  # (T, C, H, W), value = column
    ref = F.interpolate(video, size=(128, 170), mode="bilinear", align_corners=False, antialias=True)[..., 21:149]
    assert torch.equal(resize_crop(video, 128), ref)
    tall = video.transpose(-1, -2).contiguous()  # 320x240: the crop runs along the height
    # The separable resize runs its two passes in the other order here, so values (<= 320) agree to float32
    # rounding, ~1e-4; a crop one pixel off would differ by ~1.9.
    torch.testing.assert_close(resize_crop(tall, 128), ref.transpose(-1, -2), rtol=0, atol=1e-3)
    square = torch.rand(2, 3, 64, 64)
    assert torch.equal(resize_crop(square, 64), square)


def test_uint8_round_trip_of_generated_clips():
    g = torch.Generator().manual_seed(0)
    videos = torch.rand(2, 3, 4, 8, 8, generator=g) * 2.4 - 1.2  # out of range on both sides too
    q = quantize_uint8(videos)
    back = torch.stack([frames_to_tensor(tensor_to_frames(v)) for v in videos])
    assert torch.equal(q, back)  # exactly what writing the clips as uint8 frames and reading them gives
    assert torch.equal(quantize_uint8(q), q)
    assert (q - videos.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6  # half a level: 0.5 * 2/255
