"""End to end on a synthesised dataset: train-tokenizer, resume, reconstruct, tokenize, token cache checks."""

import json

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
    assert main([*args, "trainer.max_steps=6", "--resume"]) == 0
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 6
    assert load_tokenizer(trained / "checkpoints" / "last.ckpt").vocab_size == 1000
    # a second fresh run into the same folder is refused
    assert main([*args, "trainer.max_steps=2"]) == 2


@pytest.mark.slow
def test_reconstruct_and_tokenize(trained, synth_root, tmp_path):
    tok_path = trained / "tokenizer.pt"
    report = tmp_path / "r.json"
    common = ["--tokenizer", str(tok_path), "--data", str(synth_root), "--num-frames", "8", "--resolution", "32"]
    assert main(["reconstruct", *common, "--num", "3", "--out", str(tmp_path / "v"), "--num-videos", "2",
                 "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["num_clips"] == 3 and np.isfinite(r["psnr"]) and -1 <= r["ssim"] <= 1 and 0 < r["codebook_usage"] <= 1
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["recon_000.gif", "recon_001.gif"]

    cache = tmp_path / "cache"
    assert main(["tokenize", *common, "--split", "train", "--out", str(cache), "--clips-per-video", "2"]) == 0
    tok = load_tokenizer(tok_path)
    data = TokenCache(cache, expected_fingerprint=tokenizer_fingerprint(tok))
    assert len(data) == 2 * 12 and data.grid == (2, 4, 4) and data.vocab_size == 1000
    tokens, label = data[0]
    assert tokens.dtype == torch.int64 and 0 <= label < 4
    # the cached tokens are what the tokenizer produces for that clip (first clip: start frame 0)
    from navid.data.ucf101 import UCF101Clips

    ds = UCF101Clips(synth_root, "train", num_frames=8, resolution=32)
    from navid.commands.tokenizer import _clip_at

    assert torch.equal(tok.encode(_clip_at(ds, 0, 0)[None])[0], tokens)
    # --hflip adds every clip's mirror image: each batch of 8 clips is followed by its 8 mirrors
    flipped = tmp_path / "flipped"
    assert main(["tokenize", *common, "--split", "train", "--out", str(flipped), "--hflip"]) == 0
    mirrored = TokenCache(flipped)
    assert len(mirrored) == 2 * 12 and json.loads((flipped / "meta.json").read_text())["source"]["hflip"] is True
    centre = _clip_at(ds, 0, max(ds.frame_counts[0] - ds.span, 0) // 2)
    assert torch.equal(tok.encode(centre[None])[0], mirrored[0][0])
    assert torch.equal(tok.encode(centre.flip(-1)[None])[0], mirrored[8][0]) and mirrored[8][1] == mirrored[0][1]
    with torch.no_grad():
        tok.decoder.body[-1].bias.add_(1e-3)
    with pytest.raises(TokenCacheError, match="different|made by tokenizer"):
        TokenCache(cache, expected_fingerprint=tokenizer_fingerprint(tok))


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
    gain = psnr(trained.decode(trained.encode(video)), video).mean() - psnr(untrained.decode(untrained.encode(video)), video).mean()
    assert gain > 0.5  # measured ~1.1 dB after 40 steps at batch 2
