"""UCF-101 split parsing (official line format), the case quirk, clip sampling, bad files, metadata cache."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil

import numpy as np
import pytest
import torch

from navid.data.ucf101 import UCF101Clips, UCF101FormatError, load_index, parse_class_ind, parse_split_file
from navid.data.video_io import read_video, write_video
from navid.metrics.real_chunks import is_ucf101_root

CLASS_IND = "1 ApplyEyeMakeup\r\n2 ApplyLipstick\r\n37 HandstandPushups\r\n"


def test_official_split_format(tmp_path):
    """Lines exactly as in the release: CRLF, 1-based labels, HandstandPushups vs HandStandPushups."""
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 ApplyLipstick\r\n3 HandstandPushups\r\n")
    names = parse_class_ind(tmp_path / "classInd.txt")
    assert names == ["ApplyEyeMakeup", "ApplyLipstick", "HandstandPushups"]
    (tmp_path / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\nHandStandPushups/v_HandStandPushups_g08_c01.avi 3\r\n"
    )
    (tmp_path / "testlist01.txt").write_text("ApplyLipstick/v_ApplyLipstick_g01_c01.avi\r\n")
    train = parse_split_file(tmp_path / "trainlist01.txt", names)
    assert train == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0, 1),
        ("HandStandPushups/v_HandStandPushups_g08_c01.avi", 2, 2),
    ]
    assert parse_split_file(tmp_path / "testlist01.txt", names) == [("ApplyLipstick/v_ApplyLipstick_g01_c01.avi", 1, 1)]


@pytest.mark.parametrize(
    "line, message",
    [
        ("Nope/v_Nope_g01_c01.avi 1", "trainlist01.txt:2: unknown class 'Nope'"),
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 2", "trainlist01.txt:2: label '2' does not match"),
        ("garbage", "trainlist01.txt:2: expected"),
    ],
)
def test_bad_split_lines_name_file_and_line(tmp_path, line, message):
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n")
    (tmp_path / "trainlist01.txt").write_text(f"ApplyLipstick/v_ApplyLipstick_g01_c01.avi 2\n{line}\n")
    with pytest.raises(UCF101FormatError, match=message):
        parse_split_file(tmp_path / "trainlist01.txt", parse_class_ind(tmp_path / "classInd.txt"))


def test_bad_class_ind(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 A\n3 B\n")
    with pytest.raises(UCF101FormatError, match="without gaps"):
        parse_class_ind(tmp_path / "classInd.txt")


def test_a_split_file_that_is_not_text_is_named(tmp_path):
    # Before: "'utf-8' codec can't decode byte 0xa3 in position 0" without the file.
    (tmp_path / "classInd.txt").write_bytes(b"\xa3\x00\xff garbage")
    with pytest.raises(ValueError, match=f"split file {tmp_path / 'classInd.txt'} is not text"):
        parse_class_ind(tmp_path / "classInd.txt")


def copy_dataset(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_file_in_split_names_line(synth_root, tmp_path):
    root = copy_dataset(synth_root, tmp_path / "ucf")
    victim = load_index(root, "train").clips[4]
    victim.unlink()
    with pytest.raises(UCF101FormatError, match=rf"trainlist01.txt:5: file '.*{victim.name}' not found"):
        load_index(root, "train")


def test_case_insensitive_layout_ucf101_folder(synth_root, tmp_path):
    """Real layout: root/UCF-101/<Class>/ with sibling ucfTrainTestlist; folders/files in other case."""
    shutil.copytree(synth_root / "ucfTrainTestlist", tmp_path / "ucfTrainTestlist")
    for d in synth_root.iterdir():
        if d.name != "ucfTrainTestlist":
            new = tmp_path / "UCF-101" / d.name.upper()
            new.mkdir(parents=True)
            for f in d.iterdir():
                shutil.copy(f, new / f.name.replace(d.name, d.name.upper()))
    index = load_index(tmp_path / "UCF-101", "test")
    ref = load_index(synth_root, "test")
    assert index.labels == ref.labels and index.class_names == ref.class_names
    assert all(p.is_file() and p.parent.name.isupper() for p in index.clips)
    # a folder of other videos beside the split folder (generated samples) is no dataset root
    samples = tmp_path / "samples"
    samples.mkdir()
    shutil.copy(index.clips[0], samples / "sample_000.avi")
    assert not is_ucf101_root(samples) and is_ucf101_root(tmp_path / "UCF-101") and is_ucf101_root(tmp_path)


def test_clips_shape_range_and_centred_sampling(synth_root, tmp_path):
    ds = UCF101Clips(synth_root, "test", num_frames=8, frame_stride=2, resolution=32, cache_dir=tmp_path)
    assert len(ds) == 4 and ds.class_names[0] == "DiskSlide" and ds.labels == [0, 1, 2, 3]
    video, label = ds[1]
    assert video.shape == (3, 8, 32, 32) and video.dtype == torch.float32 and label.dtype == torch.int64
    assert -1 <= video.min() and video.max() <= 1 and int(label) == 1
    # centred: 20 frames, span 15 -> start 2, indices 2, 4, ..., 16
    np.testing.assert_array_equal(ds.frame_indices(20), np.arange(2, 17, 2))
    torch.testing.assert_close(ds[1][0], video)
    # full-resolution clip equals the decoded frames exactly
    full = UCF101Clips(synth_root, "test", num_frames=8, frame_stride=2, resolution=64, cache_dir=tmp_path)
    frames = read_video(full.clips[1], np.arange(2, 17, 2))
    expected = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(full[1][0], expected)


def test_train_sampling_random_start(synth_root, tmp_path):
    ds = UCF101Clips(synth_root, "train", num_frames=4, resolution=32, train=True, hflip=True, cache_dir=tmp_path)
    torch.manual_seed(0)
    starts = {int(ds.frame_indices(20)[0]) for _ in range(50)}
    assert len(starts) > 5 and min(starts) >= 0 and max(starts) <= 16


def test_bad_files_skipped_padded_and_fraction_limit(synth_root, tmp_path):
    root = copy_dataset(synth_root, tmp_path / "ucf")
    clips = load_index(root, "train").clips  # 12 clips
    clips[0].write_bytes(b"\x00" * 100)  # corrupt
    write_video(clips[1], read_video(clips[1])[:5])  # short: 5 frames
    with pytest.warns(UserWarning, match="skipping 2 of 12") as record:
        ds = UCF101Clips(root, "train", num_frames=8, resolution=32, cache_dir=tmp_path / "c", max_bad_fraction=0.2)
    assert len(ds) == 10 and clips[0] not in ds.clips and clips[1] not in ds.clips
    assert clips[0].name in str(record[0].message) and clips[1].name in str(record[0].message)
    with pytest.warns(UserWarning, match="skipping 1 of 12"):
        padded = UCF101Clips(root, "train", num_frames=8, resolution=32, cache_dir=tmp_path / "c",
                             bad_file_policy="pad", max_bad_fraction=0.2)
    assert padded.padded_files == [clips[1]]
    video, _ = padded[padded.clips.index(clips[1])]
    torch.testing.assert_close(video[:, 4:], video[:, 4:5].expand(-1, 4, -1, -1))  # last frame repeated
    with pytest.raises(ValueError, match="max_bad_fraction"), pytest.warns(UserWarning):
        UCF101Clips(root, "train", num_frames=8, resolution=32, cache_dir=tmp_path / "c", max_bad_fraction=0.1)


def test_file_failing_after_probe_is_substituted(synth_root, tmp_path):
    root = copy_dataset(synth_root, tmp_path / "ucf")
    ds = UCF101Clips(root, "test", num_frames=8, resolution=32, cache_dir=tmp_path)
    ds.clips[0].write_bytes(b"")  # broken after the dataset was built
    with pytest.warns(UserWarning, match="substituting"):
        video, label = ds[0]
    assert int(label) == ds.labels[1] and video.shape == (3, 8, 32, 32)


def _build(args):
    root, cache = args
    return UCF101Clips(root, "train", num_frames=8, cache_dir=cache).frame_counts


def test_metadata_cache_persists_and_is_shared(synth_root, tmp_path):
    root = copy_dataset(synth_root, tmp_path / "ucf")
    cache = tmp_path / "cache"
    with mp.get_context("fork").Pool(2) as pool:
        counts = pool.map(_build, [(root, cache)] * 2)
    assert counts[0] == counts[1] == [20] * 12
    assert len(list(cache.glob("*.json"))) == 1
    # A file replaced by garbage of the same size and mtime is still trusted: it was not re-opened.
    victim = load_index(root, "train").clips[0]
    st = victim.stat()
    victim.write_bytes(b"\x00" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len(UCF101Clips(root, "train", num_frames=8, cache_dir=cache)) == 12
    # A changed mtime makes it re-probed, found corrupt and skipped.
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.warns(UserWarning, match="skipping 1 of 12"):
        assert len(UCF101Clips(root, "train", num_frames=8, cache_dir=cache)) == 11
    # Different clip settings use a different cache file.
    with pytest.warns(UserWarning, match="skipping 1 of 12"):
        UCF101Clips(root, "train", num_frames=4, cache_dir=cache, max_bad_fraction=0.5)
    assert len(list(cache.glob("*.json"))) == 2


def test_clips_from_divx_packed_avis_are_the_frames_pyav_decodes(synth_root, tmp_path):
    # UCF-101's AVIs are DivX with packed B-frames (docs/data.md), where decord's own seek lands on other frames.
    from navid.data.video_io import decord_seeks_exactly, find_videos
    from video_helpers import write_divx_packed_avi

    root = copy_dataset(synth_root, tmp_path / "ucf")
    for path in find_videos(root):
        write_divx_packed_avi(path, read_video(path), gop=6)
    assert not any(decord_seeks_exactly(path) for path in find_videos(root))
    for split in ("train", "test"):
        # 8 centred frames of 20: frames 6..13, from the keyframe at 6 across the one at 12; with decord's own
        # seek every one of these clips came back as other frames
        kw = dict(num_frames=8, resolution=64, cache_dir=tmp_path / "cache")
        auto = UCF101Clips(root, split, backend="auto", **kw)
        pyav = UCF101Clips(root, split, backend="pyav", **kw)
        assert len(auto) == len(pyav) > 0
        for i in range(len(auto)):
            assert torch.equal(auto[i][0], pyav[i][0]) and auto[i][1] == pyav[i][1]
