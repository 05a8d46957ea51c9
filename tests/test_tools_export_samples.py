"""tools/export_samples.py: clips survive a round trip through each layout (PNG and npz bit-exact)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from generator_helpers import make_tokenizer
from navid.data.video_io import probe_video, read_video, tensor_to_frames
from navid.metrics.real_chunks import ChunkClips, draw_chunks
from navid.tokenizer.checkpoint import load_tokenizer
from tools import export_samples as ex


def read_png_layout(out) -> np.ndarray:
    """(N, T, H, W, 3) from frames/<clip>/<frame>.png, in name order as StyleGAN-V's scripts list them."""
    clips = sorted(p for p in (out / "frames").iterdir())
    return np.stack([np.stack([np.asarray(Image.open(f)) for f in sorted(c.iterdir())]) for c in clips])


def read_mp4_layout(out) -> np.ndarray:
    return np.stack([read_video(p) for p in sorted((out / "videos").iterdir())])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_real_clips_as_navid_evaluate_draws_them(synth_root, tmp_path):
    out = tmp_path / "real"
    args = ["--ucf101", str(synth_root), "--num", "3", "--seed", "5", "--num-frames", "8", "--resolution", "32"]
    assert ex.main([*args, "--out", str(out), "--layout", "png", "npz", "mp4"]) == 0

    # the same chunks, pixels and labels navid evaluate --real-seed 5 scores, computed here by the protocol's code
    real = ChunkClips(draw_chunks(synth_root, 3, seed=5, num_frames=8), resolution=32)
    expected = np.stack([tensor_to_frames(real[i][0]) for i in range(3)])  # (3, 8, 32, 32, 3)
    labels = np.asarray(real.labels)
    with np.load(out / "clips.npz") as npz:
        assert npz["arr_0"].dtype == np.uint8 and np.array_equal(npz["arr_0"], expected)
        assert np.array_equal(npz["arr_1"], labels)
    assert np.array_equal(read_png_layout(out), expected)

    # H.264 at CRF 18 with 4:2:0 chroma is lossy. Its quality target keeps the RMS error of a correct clip at a few
    # grey levels (PSNR in the mid 30s on these 32x32 shapes, whose sharp coloured edges suffer most from the halved
    # chroma); 28 dB (RMS error 10) sits below that and above what another clip or swapped colour channels give
    # (under 20 dB). A dropped or repeated frame changes the shape, checked exactly.
    mp4 = read_mp4_layout(out)
    assert mp4.shape == expected.shape
    for i in range(len(expected)):
        assert psnr(mp4[i], expected[i]) > 28
        others = [
            psnr(mp4[i], expected[j]) for j in range(len(expected)) if not np.array_equal(expected[j], expected[i])
        ]
        assert all(p < psnr(mp4[i], expected[i]) for p in others)

    manifest = json.loads((out / "clips.json").read_text())
    assert [c["label"] for c in manifest["clips"]] == labels.tolist()
    assert [c["class"] for c in manifest["clips"]] == [real.class_names[k] for k in labels]
    assert manifest["source"]["seed"] == 5 and manifest["shapes"] == [[8, 32, 32, 3]]


def test_generated_tokens_decoded_losslessly(tmp_path):
    tokenizer_path, _ = make_tokenizer(tmp_path / "tokenizer.pt", patch_size=(4, 8, 8))
    tokenizer = load_tokenizer(tokenizer_path)
    tokens = torch.randint(0, tokenizer.vocab_size, (3, 2, 2, 3), generator=torch.Generator().manual_seed(0))
    torch.save({"tokens": tokens, "labels": torch.tensor([1, 0, 1]), "class_names": ["a", "b"]}, tmp_path / "tokens.pt")
    out = tmp_path / "fake"
    argv = ["--tokens", str(tmp_path / "tokens.pt"), "--tokenizer", str(tokenizer_path), "--batch-size", "2"]
    assert ex.main([*argv, "--out", str(out), "--layout", "npz", "png"]) == 0

    expected = np.stack([tensor_to_frames(v) for v in tokenizer.decode(tokens)])  # (3, 8, 16, 24, 3)
    with np.load(out / "clips.npz") as npz:
        assert np.array_equal(npz["arr_0"], expected) and npz["arr_1"].tolist() == [1, 0, 1]
    assert np.array_equal(read_png_layout(out), expected)
    assert [c["class"] for c in json.loads((out / "clips.json").read_text())["clips"]] == ["b", "a", "b"]
    # the mp4 layout plays at the rate navid sample wrote (samples.json beside tokens.pt), not a fixed 8 fps
    (tmp_path / "samples.json").write_text(json.dumps({"fps": 12.5}))
    assert ex.main([*argv, "--out", str(tmp_path / "mp4"), "--layout", "mp4"]) == 0
    assert probe_video(next((tmp_path / "mp4" / "videos").iterdir())).fps == pytest.approx(12.5)


def test_video_folder_and_npz_round_trip(fixtures_dir, tmp_path):
    """Real UCF-101 footage (the I3D fixture clip) through videos -> npz -> png -> npz."""
    folder = tmp_path / "videos"
    folder.mkdir()
    gif = fixtures_dir / "i3d" / "v_CricketShot_g04_c01_rgb.gif"
    for name in ("a.gif", "b.gif"):
        shutil.copy(gif, folder / name)
    source = read_video(gif)[:6]  # (6, 224, 224, 3)
    assert ex.main(["--videos", str(folder), "--frames", "6", "--out", str(tmp_path / "npz"), "--layout", "npz"]) == 0
    with np.load(tmp_path / "npz" / "clips.npz") as npz:
        assert np.array_equal(npz["arr_0"], np.stack([source, source])) and "arr_1" not in npz

    assert (
        ex.main(
            ["--npz", str(tmp_path / "npz" / "clips.npz"), "--out", str(tmp_path / "png"), "--layout", "png", "npz"]
        )
        == 0
    )
    assert np.array_equal(read_png_layout(tmp_path / "png"), np.stack([source, source]))
    with np.load(tmp_path / "png" / "clips.npz") as npz:
        assert np.array_equal(npz["arr_0"], np.stack([source, source]))


def test_unequal_clips_refused_for_npz_without_a_partial_file(fixtures_dir, synth_root, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(fixtures_dir / "i3d" / "v_CricketShot_g04_c01_rgb.gif", folder / "a.gif")
    shutil.copy(next(synth_root.rglob("*.avi")), folder / "b.avi")
    out = tmp_path / "out"
    assert ex.main(["--videos", str(folder), "--frames", "6", "--out", str(out), "--layout", "npz"]) == 2
    err = capsys.readouterr().err
    assert "b.avi: clip shape (6, 64, 64, 3) differs from the first clip's (6, 224, 224, 3)" in err
    assert list(out.iterdir()) == []  # no npz, no manifest, no temporary file left
    # a non-empty output folder needs --overwrite
    (out / "keep.txt").write_text("x")
    assert ex.main(["--videos", str(folder), "--out", str(out), "--layout", "png"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_help_says_when_to_use(capsys):
    with pytest.raises(SystemExit) as exit_:
        ex.main(["--help"])
    assert exit_.value.code == 0
    assert "Use it to cross-check" in ex.__doc__ and "evaluation code reads" in capsys.readouterr().out


def test_damaged_inputs_and_bad_numbers_are_one_error(tmp_path, capsys):
    # Before: torch's advice to load --tokens with weights_only=False (a traceback), numpy's allow_pickle advice for
    # --npz without the file, and --fps 0 replaced by the default rate.
    tokenizer, _ = make_tokenizer(tmp_path / "tokenizer.pt")
    (tmp_path / "garbage.pt").write_bytes(b"garbage")
    assert ex.main(["--tokens", str(tmp_path / "garbage.pt"), "--tokenizer", str(tokenizer),
                    "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "garbage.pt: not a readable --tokens checkpoint" in err and "weights_only" not in err, err
    np.save(tmp_path / "objects.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    shutil.move(tmp_path / "objects.npy", tmp_path / "objects.npz")
    assert ex.main(["--npz", str(tmp_path / "objects.npz"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "objects.npz: not a readable --npz of clips" in err and "allow_pickle" not in err, err
    with pytest.raises(SystemExit):
        ex.main(["--npz", str(tmp_path / "objects.npz"), "--out", str(tmp_path / "c"), "--fps", "0"])
    assert "argument --fps: must be positive, got 0.0" in capsys.readouterr().err
