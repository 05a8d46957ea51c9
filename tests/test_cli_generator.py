"""``navid sample`` / ``navid evaluate`` end to end on a tiny trained generator, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from generator_helpers import make_tokenizer, synthetic_generator, tiny_overrides
from navid.cli import main
from navid.data.token_cache import write_token_cache
from navid.data.video_io import probe_video, read_video, tensor_to_frames
from navid.tokenizer.checkpoint import load_tokenizer

CLASSES = ["Apple", "Banana", "Cherry"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(generator ckpt, tokenizer file): 16x64x64 clips <-> 4x4x4 tokens, vocab 16, 3 classes."""
    root = tmp_path_factory.mktemp("gen")
    tokenizer, fingerprint = make_tokenizer(root / "tokenizer.pt")
    tokens = np.random.default_rng(0).integers(0, 16, size=(6, 4, 4, 4))
    cache = write_token_cache(root / "cache", tokens, np.arange(6) % 3, vocab_size=16, class_names=CLASSES,
                              tokenizer_fingerprint=fingerprint)
    assert main(["train", *tiny_overrides(cache, root / "run", steps=5, **{"model.overrides.class_dropout": 0.2})]) == 0
    return root / "run" / "checkpoints" / "last.ckpt", tokenizer


def test_sample_writes_videos_grids_tokens_and_settings(trained, tmp_path):
    generator, tokenizer = trained
    out = tmp_path / "samples"
    args = ["sample", "--generator", str(generator), "--tokenizer", str(tokenizer), "--classes", "0,cherry",
            "--per-class", "2", "--cfg", "1.5", "--top-k", "8", "--seed", "3", "--batch-size", "3", "--out", str(out)]
    assert main(args) == 0

    info = json.loads((out / "samples.json").read_text())
    assert [c["name"] for c in info["classes"]] == ["Apple", "Cherry"]
    assert info["forward_steps_per_batch"] == 4 + 4 + 4 - 2 and info["sampling"]["cfg_scale"] == 1.5
    assert len(info["videos"]) == 4 and all((out / v).is_file() for v in info["videos"])
    assert read_video(out / info["videos"][0]).shape == (16, 64, 64, 3)
    assert sorted(p.name for p in (out / "grids").iterdir()) == [
        "000_Apple.gif", "000_Apple.mp4", "002_Cherry.gif", "002_Cherry.mp4",
    ]
    saved = torch.load(out / "tokens.pt", weights_only=True)
    assert saved["tokens"].shape == (4, 4, 4, 4) and saved["labels"].tolist() == [0, 0, 2, 2]
    # each video is its own token grid decoded. H.264 is lossy on the random tokenizer's noisy clips (mean squared
    # error ~760 against its own decode), but the others' decodes lie ~3x farther (~2,400-2,900).
    with torch.no_grad():
        decoded = [tensor_to_frames(v).astype(np.float64) for v in load_tokenizer(tokenizer).decode(
            saved["tokens"])]
    for i, name in enumerate(info["videos"]):
        errors = [np.mean((read_video(out / name).astype(np.float64) - d) ** 2) for d in decoded]
        assert int(np.argmin(errors)) == i, errors

    # Same seed and batch size, same tokens.
    again = tmp_path / "again"
    assert main([*args[:-1], str(again)]) == 0
    assert torch.equal(torch.load(again / "tokens.pt", weights_only=True)["tokens"], saved["tokens"])
    # An existing output folder is never overwritten unless asked.
    assert main(args) == 2
    assert main([*args, "--overwrite"]) == 0
    # --overwrite with fewer clips: the folder holds this run's files only (navid fvd reads all of videos/), and a
    # file that is not the command's own stays
    (out / "notes.txt").write_text("mine")
    smaller = ["sample", "--generator", str(generator), "--tokenizer", str(tokenizer), "--classes", "1",
               "--per-class", "1", "--out", str(out), "--overwrite"]
    assert main(smaller) == 0
    assert [p.name for p in (out / "videos").iterdir()] == ["001_Banana_00.mp4"]
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["001_Banana.gif", "001_Banana.mp4"]
    assert (out / "notes.txt").read_text() == "mine"
    assert main([*smaller[:2], str(generator) + ".typo", *smaller[3:]]) == 2  # nothing removed before inputs load
    assert [p.name for p in (out / "videos").iterdir()] == ["001_Banana_00.mp4"]


@pytest.mark.slow
def test_sample_with_compile_gives_the_eager_tokens_and_reports_compile_time(trained, tmp_path):
    """``navid sample --compile`` as the README shows it (``--dtype`` left at fp32 on the CPU): greedy tokens equal to
    an eager run's, compile time reported apart from sampling time. Greedy, because inductor's reordered float32
    sums could flip a sampled token whose uniform draw lands within round-off of a CDF boundary."""
    generator, tokenizer = trained
    args = ["sample", "--generator", str(generator), "--tokenizer", str(tokenizer), "--classes", "0,2", "--per-class",
            "2", "--temperature", "0", "--seed", "1", "--batch-size", "4"]
    assert main([*args, "--out", str(tmp_path / "eager")]) == 0
    assert main([*args, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    eager, compiled = (json.loads((tmp_path / name / "samples.json").read_text()) for name in ("eager", "compiled"))
    assert eager["compile_seconds"] == 0.0 and compiled["compile_seconds"] > 0 and compiled["sampling"]["compile"]
    tokens = [torch.load(tmp_path / name / "tokens.pt", weights_only=True)["tokens"] for name in ("eager", "compiled")]
    assert torch.equal(tokens[0], tokens[1])


def test_sample_writes_clips_at_the_rate_of_the_training_clips(trained, tmp_path, capsys):
    """UCF-101 is filmed at 25 fps: clips of every second frame play at their real speed at 12.5 fps. A generator
    whose token cache recorded no source rate writes the default 8 fps and says so; ``--fps`` overrides both."""
    generator, tokenizer = trained
    checkpoint = torch.load(generator, map_location="cpu", weights_only=True)
    checkpoint["navid"]["token_clips"] = {"num_frames": 16, "resolution": 64, "frame_stride": 2, "source_fps": 25.0}
    strided = tmp_path / "strided.ckpt"
    torch.save(checkpoint, strided)
    base = ["sample", "--tokenizer", str(tokenizer), "--classes", "1", "--per-class", "1"]
    for ckpt, extra, fps in ((strided, [], 12.5), (strided, ["--fps", "30"], 30), (generator, [], 8)):
        out = tmp_path / f"out{fps}"
        assert main([*base, "--generator", str(ckpt), *extra, "--out", str(out)]) == 0
        info = json.loads((out / "samples.json").read_text())
        assert info["fps"] == fps
        assert probe_video(out / info["videos"][0]).fps == pytest.approx(fps)
        assert Image.open(out / info["grids"][0]).info["duration"] == pytest.approx(1000 / fps, abs=10)  # GIF: 10 ms
        assert ("records no frame rate; writing 8 fps" in capsys.readouterr().err) == (ckpt == generator)


def test_sample_rejects_bad_input(trained, tmp_path, capsys, monkeypatch):
    generator, tokenizer = trained
    base = ["sample", "--generator", str(generator), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "o")]
    # several copies (srun tasks, torchrun ranks) would each write the same --out: one process samples
    with monkeypatch.context() as env:
        env.delenv("WORLD_SIZE", raising=False)
        env.setenv("SLURM_STEP_NUM_TASKS", "4")
        assert main(base) == 2
        assert "one of 4 srun tasks" in capsys.readouterr().err
        env.setenv("WORLD_SIZE", "2")
        assert main(base) == 2
        assert "navid sample runs in one process; 2 torchrun ranks" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main([*base, "--classes", "Durian"]) == 2
    assert "unknown class 'Durian'" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main([*base, "--classes", "7"]) == 2
    assert "0=Apple, 1=Banana, 2=Cherry" in capsys.readouterr().err
    assert main([*base, "--classes", "1,banana"]) == 2  # one class twice: its clips would share file names
    assert "class 1=Banana twice ('banana')" in capsys.readouterr().err and not (tmp_path / "o").exists()
    for flag, value, says in (("--per-class", "0", "must be at least 1"), ("--fps", "0", "must be positive")):
        with pytest.raises(SystemExit):  # argparse's own exit, naming the flag
            main([*base, flag, value])
        assert f"argument {flag}: {says}" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main([*base, "--top-p", "0"]) == 2
    assert main(["sample", "--generator", str(tokenizer), "--tokenizer", str(tokenizer),
                 "--out", str(tmp_path / "o")]) == 2
    assert "not a navid generator checkpoint" in capsys.readouterr().err
    other, _ = make_tokenizer(tmp_path / "other.pt", seed=1)
    assert main(["sample", "--generator", str(generator), "--tokenizer", str(other), "--out", str(tmp_path / "o")]) == 2
    assert "fingerprint" in capsys.readouterr().err
    assert main(["sample", "--generator", str(generator), "--tokenizer", str(tmp_path / "missing.pt"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a damaged or foreign file is one line naming it (it was a traceback for --tokenizer), never torch's advice
    # to load it with weights_only=False
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    (tmp_path / "truncated.pt").write_bytes(tokenizer.read_bytes()[:4096])
    for kind, bad in (("tokenizer", "notes.txt"), ("tokenizer", "truncated.pt"), ("generator", "truncated.pt")):
        flags = {"generator": str(generator), "tokenizer": str(tokenizer), kind: str(tmp_path / bad)}
        assert main(["sample", "--generator", flags["generator"], "--tokenizer", flags["tokenizer"],
                     "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / bad}: not a readable {kind} checkpoint" in err and "weights_only" not in err, err
    assert main(["sample", "--generator", str(generator), "--tokenizer", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_train_rejects_bad_config(tmp_path, capsys):
    assert main(["train", "model.schedule=zigzag", "data.tokens=x"]) == 2
    assert "model.schedule" in capsys.readouterr().err
    assert main(["train", "model.overrides.vocab_size=3", "data.tokens=x"]) == 2
    assert "comes from the token cache" in capsys.readouterr().err
    assert main(["train", "trainer.max_stepz=3", "data.tokens=x"]) == 2
    assert "max_stepz" in capsys.readouterr().err
    assert main(["train", f"out_dir={tmp_path / 'r'}"]) == 2
    assert "data.tokens" in capsys.readouterr().err
    assert main(["train", "data.tokens=/nonexistent", f"out_dir={tmp_path / 'r'}"]) == 2
    assert "not a token cache" in capsys.readouterr().err and not (tmp_path / "r").exists()


@pytest.mark.slow
def test_evaluate_reports_fvd_kvd_and_per_class_matrix(tmp_path, capsys):
    data, generator, tokenizer = synthetic_generator(tmp_path)
    args = ["evaluate", "--generator", str(generator), "--tokenizer", str(tokenizer),
            "--data", str(data), "--num", "4", "--batch-size", "4", "--num-workers", "0",
            "--stats-cache", str(tmp_path / "stats"), "--json", str(tmp_path / "fvd.json")]
    assert main(args) == 0
    report = json.loads((tmp_path / "fvd.json").read_text())
    assert report["fvd"] > 0 and np.isfinite(report["kvd"])
    assert report["num_generated"] == report["num_real"] == 4
    assert report["real_clips"]["num_frames"] == 16 and report["real_clips"]["resolution"] == 64
    assert report["fvd_provenance"]["detector_sha256"] and report["sampling"]["seed"] == 0 and report["dtype"] == "fp32"
    matrix = report["per_class_fvd"]["matrix"]
    assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
    assert len(list((tmp_path / "stats").iterdir())) == 1

    assert main(args) == 2  # the report exists: refused without --overwrite
    assert main([*args, "--overwrite"]) == 0  # real features now come from the cache
    # Same seed, same process and thread count: the generated clips and their features are bitwise those of the
    # first run, and the cached real statistics are its own float64 arrays, so only printing could differ.
    assert json.loads((tmp_path / "fvd.json").read_text())["fvd"] == pytest.approx(report["fvd"])

    # a generator trained on strided clips is not compared with consecutive-frame real chunks
    checkpoint = torch.load(generator, map_location="cpu", weights_only=True)
    assert checkpoint["navid"]["token_clips"] == {}  # its cache came from write_token_cache, which records no clips
    checkpoint["navid"]["token_clips"] = {"num_frames": 16, "resolution": 64, "frame_stride": 2}
    strided = tmp_path / "strided.ckpt"
    torch.save(checkpoint, strided)
    assert main([*args[:2], str(strided), *args[3:], "--overwrite"]) == 2
    assert "frame_stride 2" in capsys.readouterr().err
