"""``navid fvd`` on real video files written by the data pipeline; a UCF-101 root gives the NAR protocol's chunks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

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
def test_cli_ucf_root_chunks_vs_folder_and_stats_reuse(synth_root, fake_dir, tmp_path, capsys):
    args = ["fvd", "--real", str(synth_root), "--fake", str(fake_dir), "--num", "3", "--frames", "10"]
    assert main(args + ["--json", str(tmp_path / "a.json"), "--save-real-stats", str(tmp_path / "real.npz")]) == 0
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["num_real"] == 3 and first["num_fake"] == 3 and "kvd" in first
    real = first["real"]
    assert real["protocol"] == "nar" and real["seed"] == 42 and real["resolution"] == 128 and real["detector_sha256"]
    # 12 train videos of 20 frames: two 10-frame chunks each; 3 distinct ones drawn as the reference code draws.
    assert real["num_chunks_available"] == 24 and len(real["chunks"]) == 3
    assert len({(c["video"], c["start"]) for c in real["chunks"]}) == 3
    assert {c["start"] for c in real["chunks"]} <= {0, 10}

    # Same number from the saved statistics, and from the network applied to clips made by the protocol's recipe.
    assert main(["fvd", "--real", str(tmp_path / "real.npz"), "--fake", str(fake_dir), "--num", "3",
                 "--frames", "10", "--json", str(tmp_path / "b.json")]) == 0
    # The saved statistics are the first run's float64 arrays and the fake clips go through the same kernels
    # in the same process, so both runs compute the distance from bitwise-equal inputs.
    assert json.loads((tmp_path / "b.json").read_text())["fvd"] == pytest.approx(first["fvd"], rel=1e-9)
    # saved statistics of other clips (10 frames) are not compared with this run's 16-frame clips
    assert main(["fvd", "--real", str(tmp_path / "real.npz"), "--fake", str(fake_dir), "--num", "3",
                 "--frames", "16"]) == 2
    assert "differ in frames (10 vs 16)" in capsys.readouterr().err
    # existing outputs are kept unless --overwrite
    assert main([*args, "--json", str(tmp_path / "a.json")]) == 2
    assert main([*args, "--save-real-stats", str(tmp_path / "real.npz")]) == 2
    assert json.loads((tmp_path / "a.json").read_text()) == first
    i3d = load_i3d()

    def chunk(record):  # frames start..start+9; the 64x64 frames scaled to 128x128 (antialiased), kept as uint8
        start = record["start"]
        frames = torch.from_numpy(read_video(synth_root / record["video"], list(range(start, start + 10))))
        video = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=(128, 128), mode="bilinear", antialias=True)
        return frames_to_tensor(video.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1))

    real_feats = extract_features(i3d, torch.stack([chunk(r) for r in real["chunks"]]))
    fake = torch.stack([frames_to_tensor(read_video(p, list(range(10)))) for p in first["fake"]["clips"]])
    fake_feats = extract_features(i3d, fake)
    # Batches of another composition change I3D's float32 sums by ~1e-6 relative; FVD is a difference of terms
    # of the features' squared size (~5e3 here against FVD ~2e3), so it moves by ~1e-6 relative. A wrong chunk,
    # crop or resize changes the clips themselves and FVD by far more than 1e-3.
    assert first["fvd"] == pytest.approx(fvd_from_features(real_feats.numpy(), fake_feats.numpy()), rel=1e-3)


def test_cli_errors(synth_root, fake_dir, tmp_path, capsys):
    assert main(["fvd", "--real", str(fake_dir), "--fake", str(fake_dir), "--frames", "8"]) != 0
    assert "at least 10" in capsys.readouterr().err
    assert main(["fvd", "--real", str(tmp_path / "missing"), "--fake", str(fake_dir)]) != 0
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["fvd", "--real", str(tmp_path / "empty"), "--fake", str(fake_dir)]) != 0
    assert "no video files" in capsys.readouterr().err
    assert main(["fvd", "--real", str(fake_dir), "--fake", str(fake_dir), "--frames", "100"]) != 0
    assert "fewer than 2 usable clips" in capsys.readouterr().err
    assert main(["fvd", "--real", str(synth_root), "--fake", str(fake_dir), "--num", "25", "--frames", "10"]) != 0
    assert "25 real clips requested but the split has only 24 distinct chunks" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["fvd", "--real", str(fake_dir), "--fake", str(fake_dir), "--device", "cuda"]) == 2
        assert "--device cuda: CUDA is not available" in capsys.readouterr().err
    (tmp_path / "junk.npz").write_text("not statistics")
    assert main(["fvd", "--real", str(tmp_path / "junk.npz"), "--fake", str(fake_dir)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'junk.npz'}: not a readable feature-statistics file" in err and "pickle" not in err, err
    assert main(["fvd", "--real", str(fake_dir), "--fake", str(fake_dir), "--device", "gpu0"]) == 2
    assert "--device gpu0: " in capsys.readouterr().err
    # Before: the real side's features were computed first, then the bad --fake was reported.
    assert main(["fvd", "--real", str(synth_root), "--fake", str(tmp_path / "junk.npz")]) == 2
    err = capsys.readouterr().err
    assert "not a readable feature-statistics file" in err and "I3D features" not in err, err
    # Before: a `navid sample` folder's class grids (grids/*.gif, *.mp4) were counted as clips.
    sample_out = tmp_path / "samples"
    shutil.copytree(fake_dir, sample_out / "videos")
    (sample_out / "samples.json").write_text("{}")
    assert main(["fvd", "--real", str(fake_dir), "--fake", str(sample_out)]) == 2
    assert f"pass {sample_out / 'videos'}" in capsys.readouterr().err
    # A killed writer's hidden temporary file is not a clip.
    hidden = find_videos(fake_dir)[0]
    shutil.copy(hidden, hidden.parent / f".{hidden.stem}.tmp{hidden.suffix}")
    assert (hidden.parent / f".{hidden.stem}.tmp{hidden.suffix}") not in find_videos(fake_dir)
    (hidden.parent / f".{hidden.stem}.tmp{hidden.suffix}").unlink()
    with pytest.raises(SystemExit):  # argparse's own exit, naming the flag
        main(["fvd", "--real", str(fake_dir), "--fake", str(fake_dir), "--num", "-1"])
    assert "argument --num: must be at least 1, got -1" in capsys.readouterr().err



class StyleGanVStyleDetector(torch.nn.Module):
    """The calling convention of StyleGAN-V's ``i3d_torchscript.pt``: ``(x, rescale, resize, return_features)``."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        return self.network(x)


@pytest.mark.slow
def test_cli_fvd_with_a_torchscript_detector_matches_the_default_weights(synth_root, fake_dir, tmp_path):
    # A TorchScript archive with StyleGAN-V's signature, holding the installed Kinetics-400 I3D traced at the
    # shape navid feeds it: `--weights` must load it as TorchScript and call it with that signature.
    i3d = load_i3d()
    example = torch.zeros(1, 3, 10, 224, 224)
    scripted = torch.jit.script(StyleGanVStyleDetector(torch.jit.trace(i3d, example)))
    scripted.save(str(tmp_path / "i3d_torchscript.pt"))
    assert type(load_i3d(tmp_path / "i3d_torchscript.pt")).__name__ == "TorchScriptI3D"

    common = ["fvd", "--real", str(synth_root), "--fake", str(fake_dir), "--num", "3", "--frames", "10",
              "--batch-size", "1"]
    assert main(common + ["--json", str(tmp_path / "default.json")]) == 0
    assert main(common + ["--weights", str(tmp_path / "i3d_torchscript.pt"), "--json", str(tmp_path / "ts.json")]) == 0
    default = json.loads((tmp_path / "default.json").read_text())
    scripted_run = json.loads((tmp_path / "ts.json").read_text())
    assert scripted_run["real"]["detector_sha256"] != default["real"]["detector_sha256"]
    assert scripted_run["real"]["chunks"] == default["real"]["chunks"]
    # Same clips, same network, batch 1 on both sides: the traced graph runs the same kernels, so the logits and
    # the distance agree to round-off; another detector or input convention would move FVD (~2e3 here) by far more.
    assert default["fvd"] > 100
    assert scripted_run["fvd"] == pytest.approx(default["fvd"], rel=1e-6)
    assert scripted_run["kvd"] == pytest.approx(default["kvd"], rel=1e-6)
