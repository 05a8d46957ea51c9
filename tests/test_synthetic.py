"""The embedded default dataset: UCF-101 layout, group-based split, determinism, class differences."""

from __future__ import annotations

import colorsys
import re

import numpy as np
import pytest

from navid.data.synthetic import (
    CLASSES, SCENE_HUE_STEPS, _soften, class_hues, num_test_groups, object_colours, synthesize_dataset,
)
from navid.data.ucf101 import load_index
from navid.data.video_io import find_videos, probe_video, read_video

NAME = re.compile(r"^v_(?P<cls>[A-Za-z]+)_g(?P<g>\d\d)_c(?P<c>\d\d)\.avi$")


def test_layout_names_and_group_split(synth_root):
    videos = find_videos(synth_root)
    assert len(videos) == 16
    for v in videos:
        m = NAME.match(v.name)
        assert m and m["cls"] == v.parent.name
    assert probe_video(videos[0]).num_frames == 20 and probe_video(videos[0]).height == 64
    split = synth_root / "ucfTrainTestlist"
    assert (split / "classInd.txt").read_bytes().startswith(b"1 DiskSlide\r\n2 SquareSpin\r\n")
    train, test = load_index(synth_root, "train"), load_index(synth_root, "test")
    groups = lambda idx: {int(NAME.match(p.name)["g"]) for p in idx.clips}  # noqa: E731
    assert groups(test) == {1} and groups(train) == {2, 3, 4}
    assert sorted(train.clips + test.clips) == videos
    assert num_test_groups(25) == 7


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = dict(classes=2, videos_per_class=2, frames=4, size=32, progress=False)
    a = synthesize_dataset(tmp_path / "a", seed=3, **kwargs)
    b = synthesize_dataset(tmp_path / "b", seed=3, **kwargs)
    c = synthesize_dataset(tmp_path / "c", seed=4, **kwargs)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 7
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files if f.suffix == ".avi")


def test_clips_move_and_vary_within_class(synth_root):
    for cls in CLASSES[:4]:
        clips = [read_video(p).astype(np.float32) for p in sorted((synth_root / cls.name).iterdir())]
        for clip in clips:
            assert np.abs(np.diff(clip, axis=0)).mean() > 0.2  # something moves
        means = np.array([c.mean(axis=(0, 1, 2)) for c in clips])  # per-clip colour
        assert np.ptp(means, axis=0).max() > 20  # colours / backgrounds differ inside a class


def test_each_class_has_its_own_object_hue(synth_root):
    """Vivid pixels (only the object's are: scenes are tinted at most to saturation ~0.47) carry the class hue
    ``label / 10``, nearer it than half the step to a neighbouring class's hue (0.05).

    The 4-px softening mixes thin objects (RingPulse's ring) with the scene, so their pixels are less
    vivid (chroma 0.3-0.4) and their median hue moves by up to ~0.035 towards the scene's."""
    for label, cls in enumerate(CLASSES[:4]):
        clip = np.concatenate([read_video(p) for p in sorted((synth_root / cls.name).iterdir())]).reshape(-1, 3) / 255.0
        hsv = np.array([colorsys.rgb_to_hsv(*px) for px in clip[clip.max(1) - clip.min(1) > 0.3]])
        vivid = hsv[(hsv[:, 1] > 0.5) & (hsv[:, 2] > 0.5)]
        assert len(vivid) > 1000
        offset = (vivid[:, 0] - class_hues(label)[0] + 0.5) % 1.0 - 0.5  # signed hue difference
        assert np.median(np.abs(offset)) < 0.05


def test_each_class_scene_takes_its_scene_hue(synth_root):
    """The frame corners (scene, rarely the object) of every clip of a class lean to the class's scene hue."""
    for label, cls in enumerate(CLASSES[:4]):
        scene_hue = class_hues(label)[1]
        for path in sorted((synth_root / cls.name).iterdir()):
            corners = read_video(path)[:, [0, 0, -1, -1], [0, -1, 0, -1]].reshape(-1, 3).mean(0) / 255.0
            hue = colorsys.rgb_to_hsv(*corners)[0]
            offset = (hue - scene_hue + 0.5) % 1.0 - 0.5
            assert abs(offset) < 0.05, (path.name, hue)


def test_classes_with_neighbouring_object_hues_get_distant_scenes():
    """Any two classes differ by >= 144 degrees of object plus scene hue; scenes stay >= 108 degrees off
    their object."""
    def circle(a, b):
        d = abs(a - b) % 1.0
        return min(d, 1.0 - d)

    hues = [class_hues(label) for label in range(len(CLASSES))]
    assert sorted(SCENE_HUE_STEPS) == list(range(len(CLASSES)))
    for i, (obj_i, scene_i) in enumerate(hues):
        assert circle(obj_i, scene_i) >= 0.3 - 1e-9
        for obj_j, scene_j in hues[i + 1:]:
            assert circle(obj_i, obj_j) + circle(scene_i, scene_j) >= 0.4 - 1e-9


def test_soften_is_a_normalised_gaussian_blur():
    video = np.zeros((2, 32, 32, 3))
    video[:, 16, 16] = 1.0  # an impulse spreads into the kernel itself
    soft = _soften(video, sigma=2.0)
    assert soft.sum(axis=(1, 2)) == pytest.approx(np.ones((2, 3)))
    profile = soft[0, 16, :, 0]
    assert profile.argmax() == 16 and profile[16 + 2] / profile[16] == pytest.approx(np.exp(-0.5), rel=1e-6)
    flat = np.full((1, 32, 32, 3), 0.3)
    assert np.allclose(_soften(flat, sigma=2.0), 0.3)  # edges replicate: no darkening at the border


def test_object_colours_jitter_around_the_hue():
    rng = np.random.default_rng(0)
    colours = np.array([object_colours(0.25, rng) for _ in range(50)])  # (50, 2, 3)
    hues = np.array([[colorsys.rgb_to_hsv(*c)[0] for c in pair] for pair in colours])
    assert np.all(np.abs(hues - 0.25) <= 0.026)
    assert np.ptp(colours[:, 0].max(1)) > 0.15  # shades differ between clips
    assert np.all(colours[:, 1].max(1) < colours[:, 0].max(1))  # the texture colour is the darker one


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="classes"):
        synthesize_dataset(tmp_path, classes=len(CLASSES) + 1)
    with pytest.raises(ValueError, match="groups"):
        synthesize_dataset(tmp_path, videos_per_class=4, groups=5)
