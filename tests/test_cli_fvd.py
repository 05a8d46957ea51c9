"""``navid fvd`` on real video files written by the data pipeline."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from navid.cli import main
from navid.data.video_io import find_videos, frames_to_tensor, read_video
from navid.metrics.fvd import extract_features, fvd_from_features
from navid.metrics.i3d import load_i3d


@pytest.fixture(scope="module")
def fake_dir(synth_root, tmp_path_factory):
    """Three DiskSlide videos of the synthetic dataset, copied into a plain nested folder."""
    out = tmp_path_factory.mktemp("fake")
    for path in find_videos(synth_root)[:3]:
        (out / path.parent.name).mkdir(exist_ok=True)
        shutil.copy(path, out / path.parent.name / path.name)
    return out


@pytest.mark.slow
def test_cli_folder_vs_ucf_root_and_stats_reuse(synth_root, fake_dir, tmp_path):
    args = ["fvd", "--real", str(synth_root), "--fake", str(fake_dir), "--num", "3", "--frames", "10"]
    assert main(args + ["--json", str(tmp_path / "a.json"), "--save-real-stats", str(tmp_path / "real.npz")]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["num_real"] == 3 and first["num_fake"] == 3 and "kvd" in first
    assert first["real"]["frames"] == 10 and len(first["real"]["clips"]) == 3 and first["real"]["detector_sha256"]

    # Same number from the saved statistics, and from the network applied to the same decoded frames.
    assert main(["fvd", "--real", str(tmp_path / "real.npz"), "--fake", str(fake_dir), "--num", "3",
                 "--frames", "10", "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["fvd"] == pytest.approx(first["fvd"], rel=1e-9)
    i3d = load_i3d()

    def feats(paths):
        return extract_features(i3d, torch.stack([frames_to_tensor(read_video(p, list(range(10)))) for p in paths]))

    direct = fvd_from_features(feats(first["real"]["clips"]).numpy(), feats(first["fake"]["clips"]).numpy())
    assert first["fvd"] == pytest.approx(direct, rel=1e-2)


def test_cli_errors(fake_dir, tmp_path, capsys):
    assert main(["fvd", "--real", str(fake_dir), "--fake", str(fake_dir), "--frames", "8"]) != 0
    assert "at least 10" in capsys.readouterr().err
    assert main(["fvd", "--real", str(tmp_path / "missing"), "--fake", str(fake_dir)]) != 0
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["fvd", "--real", str(tmp_path / "empty"), "--fake", str(fake_dir)]) != 0
    assert "no video files" in capsys.readouterr().err
    assert main(["fvd", "--real", str(fake_dir), "--fake", str(fake_dir), "--frames", "100"]) != 0
    assert "fewer than 2 usable clips" in capsys.readouterr().err

