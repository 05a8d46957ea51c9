"""End to end on a synthesised dataset: train-tokenizer, resume, reconstruct, tokenize, token cache checks."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from navid.cli import main
from navid.data.token_cache import TokenCache, TokenCacheError
from navid.tokenizer.checkpoint import load_tokenizer, tokenizer_fingerprint

TINY = "configs/tokenizer/tiny.yaml"
FAST = [
    "model.channels=[32,32]", "model.out_hidden_channels=8", "data.batch_size=2", "data.num_frames=8",
    "data.resolution=32", "trainer.progress_bar=false", "trainer.val_every_n_steps=4",
    "trainer.limit_val_batches=1", "trainer.checkpoint_every_n_steps=4", "optim.warmup_steps=2",
]


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "run"
    args = ["train-tokenizer", "--config", TINY, f"data.root={synth_root}", f"out_dir={out}", *FAST]
    assert main([*args, "trainer.max_steps=4"]) == 0
    return out


@pytest.mark.slow
def test_train_resume_and_checkpoint_contents(trained, synth_root):
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4 and "navid_version" in ckpt and ckpt["config"]["model"]["channels"] == [32, 32]
    args = ["train-tokenizer", "--config", TINY, f"data.root={synth_root}", f"out_dir={trained}", *FAST]
    assert main([*args, "trainer.max_steps=6", "optim.lr=1e-2", "--resume"]) == 2  # the optimizer keeps its lr
    assert main([*args, "trainer.max_steps=6", "--resume"]) == 0
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    assert load_tokenizer(trained / "checkpoints" / "last.ckpt").vocab_size == 1000
    # a second fresh run into the same folder is refused
    assert main([*args, "trainer.max_steps=2"]) == 2


@pytest.mark.slow
def test_overwrite_replaces_the_earlier_run_and_a_nan_loss_stops_in_one_line(trained, synth_root, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    args = ["train-tokenizer", "--config", TINY, f"data.root={synth_root}", f"out_dir={run}", *FAST,
            "trainer.max_steps=2", "--overwrite"]
    assert main(args) == 0
    # Before: the earlier run's step files and logs stayed beside the new run's.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert [p.name for p in (run / "logs").iterdir()] == ["version_0"]
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 2
    # Before: a traceback (only navid train caught the non-finite loss stop).
    assert main([*args, "optim.lr=1e30", "optim.warmup_steps=0", "trainer.gradient_clip_val=0"]) == 1
    err = capsys.readouterr().err
    assert "navid train-tokenizer: stopped: non-finite loss first at global step" in err and "Traceback" not in err


@pytest.mark.slow
def test_reconstruct_and_tokenize(trained, synth_root, tmp_path):
    tok_path = trained / "tokenizer.pt"
    report = tmp_path / "r.json"
    # no --num-frames / --resolution / --frame-stride: clips are cut as the tokenizer was trained (8 x 32 px)
    common = ["--tokenizer", str(tok_path), "--data", str(synth_root), "--num-workers", "1"]
    assert main(["reconstruct", *common, "--num", "3", "--out", str(tmp_path / "v"), "--num-videos", "2",
                 "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["num_clips"] == 3 and np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 and 0 < r["codebook_usage"] <= 1
    assert (r["num_frames"], r["resolution"], r["frame_stride"]) == (8, 32, 1)
    from navid.data.ucf101 import load_index

    test_clips = [f"{p.parent.name}/{p.name}" for p in load_index(synth_root, "test").clips]
    drawn = sorted(random.Random(0).sample(range(len(test_clips)), 3))
    assert r["clips"] == [test_clips[i] for i in drawn]
    # the metrics are those of the drawn clips' reconstructions, computed here the same way (one batch of 3)
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    from navid.data.ucf101 import UCF101Clips
    from navid.tokenizer.losses import psnr

    clips = UCF101Clips(synth_root, "test", num_frames=8, resolution=32)
    video = torch.stack([clips[i][0] for i in drawn])  # (3, C, T, H, W)
    with torch.no_grad():
        recon = load_tokenizer(tok_path).decode(load_tokenizer(tok_path).encode(video))
    frames = lambda v: v.transpose(1, 2).flatten(0, 1)  # noqa: E731  (B*T, C, H, W)
    ssim = StructuralSimilarityIndexMeasure(data_range=2.0)(frames(recon), frames(video))
    # the same float32 arithmetic in the same batch; 1e-5 leaves room for another kernel order
    assert r["psnr"] == pytest.approx(float(psnr(recon, video).double().mean()), rel=1e-5)
    assert r["ssim"] == pytest.approx(float(ssim), rel=1e-5) and r["ssim"] < 0.99
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["recon_000.gif", "recon_001.gif"]
    # --overwrite with fewer videos leaves none of the earlier ones behind
    assert main(["reconstruct", *common, "--num", "3", "--out", str(tmp_path / "v"), "--num-videos", "1",
                 "--overwrite"]) == 0
    assert [p.name for p in (tmp_path / "v").iterdir()] == ["recon_000.gif"]
    # a mistyped input under --overwrite stops before the earlier videos are touched
    assert main(["reconstruct", "--tokenizer", str(tmp_path / "typo.pt"), "--data", str(synth_root),
                 "--out", str(tmp_path / "v"), "--overwrite"]) == 2
    assert [p.name for p in (tmp_path / "v").iterdir()] == ["recon_000.gif"]
    # written at the clips' own rate: the synthesised videos are 25 fps, the clips take every frame (40 ms a frame)
    from PIL import Image

    assert Image.open(tmp_path / "v" / "recon_000.gif").info["duration"] == 40

    cache = tmp_path / "cache"
    assert main(["tokenize", *common, "--split", "train", "--out", str(cache), "--clips-per-video", "2"]) == 0
    tok = load_tokenizer(tok_path)
    data = TokenCache(cache, expected_fingerprint=tokenizer_fingerprint(tok))
    assert len(data) == 2 * 12 and data.grid == (2, 4, 4) and data.vocab_size == 1000
    source = data.meta["source"]
    assert (source["num_frames"], source["resolution"], source["frame_stride"], source["source_fps"]) == (8, 32, 1, 25)
    tokens, label = data[0]
    assert tokens.dtype == torch.int64 and 0 <= label < 4
    # the cached tokens are what the tokenizer produces for that clip (first clip: start frame 0)
    from navid.data.ucf101 import UCF101Clips

    ds = UCF101Clips(synth_root, "train", num_frames=8, resolution=32)
    from navid.commands.tokenizer import _clip_at

    assert torch.equal(tok.encode(_clip_at(ds, 0, 0)[None])[0], tokens)
    # --hflip adds every clip's mirror image right after it
    flipped = tmp_path / "flipped"
    assert main(["tokenize", *common, "--split", "train", "--out", str(flipped), "--hflip"]) == 0
    mirrored = TokenCache(flipped)
    assert len(mirrored) == 2 * 12 and json.loads((flipped / "meta.json").read_text())["source"]["hflip"] is True
    centre = _clip_at(ds, 0, max(ds.frame_counts[0] - ds.span, 0) // 2)
    assert torch.equal(tok.encode(centre[None])[0], mirrored[0][0])
    assert torch.equal(tok.encode(centre.flip(-1)[None])[0], mirrored[1][0]) and mirrored[1][1] == mirrored[0][1]
    assert sorted(p.name for p in flipped.iterdir()) == ["groups.npy", "labels.npy", "meta.json", "tokens.npy"]
    # rows carry their video's UCF-101 group, the mirror its clip's, so the generator's val split holds them out
    from navid.data.ucf101 import video_group

    group_ids = np.unique([video_group(path) for path in ds.clips], return_inverse=True)[1]  # (12 videos,)
    assert np.array_equal(data.groups, np.repeat(group_ids, 2))  # 2 clips per video
    assert np.array_equal(mirrored.groups, np.repeat(group_ids, 2))  # 1 clip and its mirror per video
    with torch.no_grad():
        tok.decoder.body[-1].bias.add_(1e-3)
    with pytest.raises(TokenCacheError, match="different|made by tokenizer"):
        TokenCache(cache, expected_fingerprint=tokenizer_fingerprint(tok))


def test_reconstruct_draws_its_clips_from_every_class():
    from navid.commands.tokenizer import _reconstruct_clips

    labels = np.repeat(np.arange(101), 37)  # a test list sorted by class, as UCF-101's
    chosen = _reconstruct_clips(len(labels), 1000, seed=0)
    assert len(set(chosen)) == 1000 and len(set(labels[chosen])) == 101  # the first 1000 cover 28 classes
    assert chosen == sorted(chosen) == _reconstruct_clips(len(labels), 1000, seed=0)
    assert _reconstruct_clips(5, None, seed=0) == _reconstruct_clips(5, 9, seed=0) == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_clips_default_to_the_tokenizers_training_clips(trained, synth_root, tmp_path, capsys):
    from navid.tokenizer.config import ClipGeometry

    for path in (trained / "tokenizer.pt", trained / "checkpoints" / "last.ckpt"):
        assert load_tokenizer(path).trained_clip == ClipGeometry(num_frames=8, resolution=32, frame_stride=1)
    common = ["tokenize", "--data", str(synth_root), "--num-workers", "0", "--split", "test"]
    # another size is used as asked, with a note: it changes the grid
    assert main([*common, "--tokenizer", str(trained / "tokenizer.pt"), "--resolution", "64",
                 "--out", str(tmp_path / "c64")]) == 0
    assert "--resolution 64 differs from the tokenizer's training clips (32)" in capsys.readouterr().err
    assert TokenCache(tmp_path / "c64").grid == (2, 8, 8)
    # a tokenizer file that does not record its clips needs them given
    tok = load_tokenizer(trained / "tokenizer.pt")
    tok.trained_clip = None
    from navid.tokenizer.checkpoint import save_tokenizer

    bare = save_tokenizer(tok, tmp_path / "bare.pt")
    assert main([*common, "--tokenizer", str(bare), "--resolution", "32", "--out", str(tmp_path / "c")]) == 2
    assert "does not record the clips it was trained on" in capsys.readouterr().err
    assert main([*common, "--tokenizer", str(bare), "--num-frames", "8", "--resolution", "32", "--frame-stride", "1",
                 "--out", str(tmp_path / "c")]) == 0
    assert TokenCache(tmp_path / "c").grid == (2, 4, 4)


@pytest.mark.slow
def test_trained_tokenizer_beats_untrained(synth_root, tmp_path):
    """Encode->decode PSNR on held-out clips improves after a short training run."""
    from navid.data.ucf101 import UCF101Clips
    from navid.tokenizer.losses import psnr

    out = tmp_path / "run"
    args = ["train-tokenizer", "--config", TINY, f"data.root={synth_root}", f"out_dir={out}", *FAST]
    assert main([*args, "trainer.max_steps=40", "optim.lr=2e-3", "optim.ema_decay=0.5"]) == 0
    ds = UCF101Clips(synth_root, "test", num_frames=8, resolution=32)
    video = torch.stack([ds[i][0] for i in range(len(ds))])
    trained = load_tokenizer(out / "tokenizer.pt")
    torch.manual_seed(0)
    from navid.tokenizer import VideoTokenizer

    untrained = VideoTokenizer(trained.cfg).eval()
    gain = (psnr(trained.decode(trained.encode(video)), video).mean()
            - psnr(untrained.decode(untrained.encode(video)), video).mean())
    assert gain > 0.5  # measured ~1.1 dB after 40 steps at batch 2


def _tokenize_args(tokenizer, data, out, *extra) -> list[str]:
    """24 clips (12 videos x 2) and their mirrors in 5 shards of 5 clips (the last holds 4), batches of 2."""
    return [
        "tokenize", "--tokenizer", str(tokenizer), "--data", str(data), "--num-frames", "8", "--resolution", "32",
        "--clips-per-video", "2", "--hflip", "--batch-size", "2", "--shard-size", "5", "--num-workers", "1",
        "--out", str(out), *extra,
    ]


def _navid(*argv: str, ranks: int, succeeds: bool = True) -> str:
    """Run ``navid`` with one thread per rank, as the README does (``torchrun --standalone --nproc-per-node N``);
    return its stderr.

    Both the 1-rank and the 2-rank run are subprocesses with the same thread count, so the
    comparison isolates the number of ranks.
    """
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 else []
    cmd = [sys.executable, *launch, "-m", "navid.cli", *argv]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert (done.returncode == 0) == succeeds, done.stderr[-3000:]
    return done.stderr


def _assert_same_cache(a, b) -> None:
    for name in ("tokens.npy", "labels.npy", "meta.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.slow
def test_tokenize_over_two_ranks_gives_the_one_rank_cache(trained, synth_root, tmp_path):
    _navid(*_tokenize_args(trained / "tokenizer.pt", synth_root, tmp_path / "one"), ranks=1)
    _navid(*_tokenize_args(trained / "tokenizer.pt", synth_root, tmp_path / "two"), ranks=2)
    _assert_same_cache(tmp_path / "one", tmp_path / "two")
    # The same command again: every rank stops with the one-line refusal (rank 1 used to die in a barrier that rank 0
    # had left, with gloo's "Connection closed by peer").
    err = _navid(*_tokenize_args(trained / "tokenizer.pt", synth_root, tmp_path / "two"), ranks=2, succeeds=False)
    assert err.count("navid tokenize: error: --out") == 2 and "already holds a finished token cache" in err, err
    assert "Connection closed by peer" not in err and "navid/commands" not in err, err  # (torchrun's summary stays)


@pytest.mark.slow
def test_tokenize_resumes_where_it_stopped(trained, synth_root, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert main(_tokenize_args(trained / "tokenizer.pt", synth_root, whole)) == 0
    assert main(_tokenize_args(trained / "tokenizer.pt", synth_root, part, "--max-shards", "2")) == 0
    with pytest.raises(TokenCacheError, match="no meta.json"):
        TokenCache(part)  # an unfinished cache is not readable as a cache
    shards = part / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["plan.json", "shard_000000.npz", "shard_000001.npz"]
    (shards / ".shard_000002.k1ll3d.tmp.npz").write_bytes(b"PK\x03\x04")  # what a run killed mid-write leaves
    written = {p.name: p.stat().st_mtime_ns for p in shards.glob("shard_*.npz")}
    # other settings do not continue this cache
    assert main(_tokenize_args(trained / "tokenizer.pt", synth_root, part, "--clips-per-video", "1")) == 2
    assert main(_tokenize_args(trained / "tokenizer.pt", synth_root, part, "--max-shards", "1")) == 0
    assert {p.name: p.stat().st_mtime_ns for p in shards.glob("shard_*.npz") if p.name in written} == written
    assert len(list(shards.glob("shard_*.npz"))) == 3
    assert main(_tokenize_args(trained / "tokenizer.pt", synth_root, part)) == 0
    _assert_same_cache(whole, part)
    assert not shards.exists()
    # a finished cache is only replaced on request
    assert main(_tokenize_args(trained / "tokenizer.pt", synth_root, part)) == 2


@pytest.mark.slow
def test_killed_tokenize_continues_where_it_stopped(trained, synth_root, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    one_clip_shards = ("--shard-size", "1", "--batch-size", "1")  # 24 shards: the kill lands mid-run
    _navid(*_tokenize_args(trained / "tokenizer.pt", synth_root, whole, *one_clip_shards), ranks=1)
    argv = _tokenize_args(trained / "tokenizer.pt", synth_root, killed, *one_clip_shards)
    run = subprocess.Popen([sys.executable, "-m", "navid.cli", *argv], env={**os.environ, "OMP_NUM_THREADS": "1"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while run.poll() is None and len(list((killed / "shards").glob("shard_*.npz"))) < 3:
        time.sleep(0.01)
    run.kill()
    assert run.wait() == -signal.SIGKILL and not (killed / "meta.json").exists()
    _navid(*_tokenize_args(trained / "tokenizer.pt", synth_root, killed, *one_clip_shards), ranks=1)
    _assert_same_cache(whole, killed)


@pytest.mark.slow
def test_batched_encoding_gives_the_single_clip_tokens(trained, synth_root):
    from navid.data.ucf101 import UCF101Clips

    tok = load_tokenizer(trained / "tokenizer.pt")
    ds = UCF101Clips(synth_root, "train", num_frames=8, resolution=32)
    video = torch.stack([ds[i][0] for i in range(len(ds))])  # (12, C, T, H, W)
    batched = tok.encode(video)  # (12, T', H', W')
    single = torch.cat([tok.encode(clip[None]) for clip in video])
    with torch.no_grad():
        bounded = tok.quantizer.bound(tok.encoder(video))  # (12, D, T', H', W') in level units; codes = round(bounded)
    # A batch and a single clip may run different conv kernels (oneDNN/cuDNN choose by shape), which
    # reorders float32 sums: a sum of K products then moves by at most ~K * 2^-24 of the sum of their
    # magnitudes, below 1e-4 level units for this encoder (K <= 27 * 32 products per conv output, a few
    # layers, activations O(1)). FSQ rounding is exact, so a code can only differ where some channel lies
    # within that distance of a rounding boundary (x.5); 1e-3 leaves a 10x margin.
    margin = (0.5 - (bounded - bounded.round()).abs()).amin(dim=1)  # (12, T', H', W')
    clear = margin > 1e-3
    assert clear.float().mean() > 0.95  # nearly every token is clear of a boundary, so the check has teeth
    assert torch.equal(batched[clear], single[clear])


@pytest.mark.slow
def test_reconstruct_over_two_ranks_matches_one_rank(trained, synth_root, tmp_path):
    common = ["reconstruct", "--tokenizer", str(trained / "tokenizer.pt"), "--data", str(synth_root),
              "--num-frames", "8", "--resolution", "32", "--batch-size", "2", "--num-workers", "1", "--num-clips", "3",
              "--num-videos", "2"]
    _navid(*common, "--json", str(tmp_path / "one.json"), "--out", str(tmp_path / "one"), ranks=1)
    _navid(*common, "--json", str(tmp_path / "two.json"), "--out", str(tmp_path / "two"), ranks=2)
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert one["num_clips"] == two["num_clips"] == 3 and one["codes_used"] == two["codes_used"]
    # A clip is encoded in another batch on 2 ranks (batches of 2 drawn from 3 clips), and the conv kernels may
    # sum in another order for another batch size: its float32 reconstruction moves by ~1e-6 of the pixel range,
    # its MSE by a few 1e-6 relative, its PSNR (10 log10 of it, ~14 dB here) by ~1e-6 relative at most; the
    # float64 sum over clips adds nothing visible. SSIM sums 24 frames in float32. 1e-5 holds both with margin.
    assert two["psnr"] == pytest.approx(one["psnr"], rel=1e-5) and two["ssim"] == pytest.approx(one["ssim"], rel=1e-5)
    for n in ("one", "two"):
        assert sorted(p.name for p in (tmp_path / n).iterdir()) == ["recon_000.gif", "recon_001.gif"]
    assert (tmp_path / "one" / "recon_001.gif").read_bytes() == (tmp_path / "two" / "recon_001.gif").read_bytes()
    # --out is not empty now: every rank stops with rank 0's refusal (rank 1 used to die in the barrier after it).
    err = _navid(*common, "--json", str(tmp_path / "again.json"), "--out", str(tmp_path / "two"), ranks=2,
                 succeeds=False)
    assert err.count("navid reconstruct: error: --out") == 2 and "is not empty" in err, err


def test_too_many_unreadable_files_stop_train_tokenizer_before_it_writes_and_the_fixed_command_runs(
        synth_root, tmp_path, capsys):
    # Before: the data check ran inside fit, after the logger had made out_dir/logs/version_0, and the command
    # with the data fixed was refused ("exists and is not empty").
    import shutil

    from navid.data.ucf101 import load_index

    root = tmp_path / "ucf"
    shutil.copytree(synth_root, root)
    broken = load_index(root, "train").clips[:3]
    originals = {clip: clip.read_bytes() for clip in broken}
    for clip in broken:
        clip.write_bytes(b"\x00" * 100)
    out = tmp_path / "run"
    args = ["train-tokenizer", "--config", TINY, f"data.root={root}", f"out_dir={out}", *FAST, "trainer.max_steps=1",
            f"data.cache_dir={tmp_path / 'meta'}"]
    with pytest.warns(UserWarning, match="skipping 3 of"):
        assert main([*args, "data.max_bad_fraction=0.1"]) == 2
    assert "max_bad_fraction" in capsys.readouterr().err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))
    for clip, data in originals.items():
        clip.write_bytes(data)
    assert main(args) == 0
    assert (out / "tokenizer.pt").is_file()
