"""VideoTokenizer: shapes and grids, overfitting one clip, checkpoints and fingerprints, config files."""

from pathlib import Path

import pytest
import torch

from navid.config import load_config
from navid.tokenizer import TokenizerModelConfig, TokenizerTrainConfig, VideoTokenizer
from navid.tokenizer.checkpoint import load_tokenizer, save_tokenizer, tokenizer_fingerprint
from navid.tokenizer.losses import psnr

CONFIGS = Path(__file__).parent.parent / "configs" / "tokenizer"
SMALL = dict(channels=[32, 32], out_hidden_channels=8)


def small_tokenizer(**kw) -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(TokenizerModelConfig(**{**SMALL, **kw}))


@pytest.mark.parametrize("shape", [(16, 64, 64), (8, 32, 48), (4, 16, 16)])
@pytest.mark.parametrize("quantizer", ["fsq", "vq"])
def test_encode_decode_shapes(shape, quantizer):
    tok = small_tokenizer(quantizer=quantizer, vq_codebook_size=64).eval()
    video = torch.rand(2, 3, *shape) * 2 - 1
    tokens = tok.encode(video)
    grid = tok.grid_shape(video.shape)
    assert grid == (shape[0] // 4, shape[1] // 8, shape[2] // 8)
    assert tokens.shape == (2, *grid) and tokens.dtype == torch.int64
    assert 0 <= tokens.min() and tokens.max() < tok.vocab_size
    recon = tok.decode(tokens)
    assert recon.shape == video.shape and recon.abs().max() <= 1


def test_bad_sizes_are_clear_errors():
    tok = small_tokenizer()
    with pytest.raises(ValueError, match="not divisible"):
        tok.encode(torch.zeros(1, 3, 6, 64, 64))
    with pytest.raises(ValueError, match="expected video"):
        tok.encode(torch.zeros(3, 16, 64, 64))


def test_vocab_sizes_of_shipped_configs():
    for name, vocab, grid in (("tiny", 1000, (4, 8, 8)), ("ucf101", 15360, (4, 16, 16))):
        cfg = load_config(TokenizerTrainConfig, CONFIGS / f"{name}.yaml", ["data.root=/nowhere"])
        assert cfg.model.compression == (4, 8, 8)
        side = cfg.data.resolution
        assert tuple(s // c for s, c in zip((cfg.data.num_frames, side, side), cfg.model.compression)) == grid
        if name == "tiny":
            assert VideoTokenizer(cfg.model).vocab_size == vocab
        else:
            assert torch.tensor(cfg.model.fsq_levels).prod().item() == vocab


@pytest.mark.slow
def test_overfits_a_single_clip():
    """The smoke test users ask for: one clip, a few hundred steps, high PSNR."""
    torch.manual_seed(0)
    t = torch.linspace(-1, 1, 32)
    clip = torch.stack([  # (C, T, H, W) smooth moving pattern
        torch.sin(3 * t.view(1, 32, 1) + 2 * t.view(1, 1, 32) + 0.3 * k).expand(8, 32, 32) for k in range(3)
    ])[None]
    tok = small_tokenizer()
    opt = torch.optim.Adam(tok.parameters(), lr=2e-3)
    for _ in range(250):
        recon, _, _ = tok(clip)
        loss = (recon - clip).abs().mean() + (recon - clip).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    tok.eval()
    assert psnr(tok.decode(tok.encode(clip)), clip).item() > 28


def _chroma_error(tok: VideoTokenizer, clip: torch.Tensor, mask: torch.Tensor) -> float:
    """RMS error of the reconstruction's colour (channel deviation from grey) on ``mask`` pixels."""
    recon = tok.decode(tok.encode(clip))
    chroma = lambda v: v - v.mean(1, keepdim=True)  # noqa: E731
    return (chroma(recon) - chroma(clip))[mask.expand_as(clip)].square().mean().sqrt().item()


@pytest.mark.slow
def test_lowpass_shortcut_learns_object_colour_fast():
    """Squares of eight hues on grey: the shortcut carries their colours through the code within a few dozen steps."""
    gen = torch.Generator().manual_seed(0)
    clips = torch.full((8, 3, 8, 32, 32), -0.2)
    mask = torch.zeros(8, 1, 8, 32, 32, dtype=torch.bool)
    for i in range(8):
        y, x = torch.randint(0, 17, (2,), generator=gen).tolist()
        mask[i, :, :, y : y + 12, x : x + 12] = True
        hue = torch.tensor([0.0, 2.094, 4.189]) + 0.785 * i  # a colour wheel, one hue per clip
        clips[i] = torch.where(mask[i], 0.8 * torch.cos(hue).view(3, 1, 1, 1), clips[i])
    errors = {}
    for shortcut in (True, False):
        tok = small_tokenizer(lowpass_shortcut=shortcut)
        assert (tok.encoder.shortcut is not None) == shortcut and (tok.decoder.shortcut is not None) == shortcut
        opt = torch.optim.Adam(tok.parameters(), lr=2e-3)
        for _ in range(40):
            recon, _, _ = tok(clips)
            loss = (recon - clips).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        errors[shortcut] = _chroma_error(tok.eval(), clips, mask)
    assert errors[True] < 0.35 < errors[False]


def test_save_load_round_trip_and_fingerprint(tmp_path):
    tok = small_tokenizer().eval()
    path = save_tokenizer(tok, tmp_path / "tok.pt")
    loaded = load_tokenizer(path)
    assert not loaded.training
    video = torch.rand(1, 3, 8, 32, 32) * 2 - 1
    assert torch.equal(loaded.encode(video), tok.encode(video))
    assert tokenizer_fingerprint(loaded) == tokenizer_fingerprint(tok)
    with torch.no_grad():
        loaded.decoder.body[-1].bias.add_(1e-3)
    assert tokenizer_fingerprint(loaded) != tokenizer_fingerprint(tok)


def test_load_rejects_other_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a navid tokenizer"):
        load_tokenizer(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing.pt")


def test_unknown_config_key_is_named():
    from navid.config import ConfigError

    with pytest.raises(ConfigError, match="channelz"):
        load_config(TokenizerTrainConfig, CONFIGS / "tiny.yaml", ["data.root=/x", "model.channelz=3"])
