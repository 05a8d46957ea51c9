"""I3D perceptual loss: real detector weights, real synthesised clips, wired into tokenizer training."""

import csv

import pytest
import torch
import torch.nn.functional as F

from navid.cli import main
from navid.data.ucf101 import UCF101Clips
from navid.metrics.i3d import load_i3d
from navid.tokenizer.perceptual import I3DPerceptualLoss


@pytest.fixture(scope="module")
def perceptual():
    return I3DPerceptualLoss()


@pytest.fixture(scope="module")
def clip(synth_root):
    return UCF101Clips(synth_root, "train", num_frames=16, resolution=64)[0][0][None]  # (1, 3, 16, 64, 64)


def _blur(video: torch.Tensor, size: int) -> torch.Tensor:
    b, c, t, h, w = video.shape
    frames = video.transpose(1, 2).reshape(b * t, c, h, w)
    frames = F.avg_pool2d(F.pad(frames, [size // 2, (size - 1) // 2] * 2, mode="replicate"), size, stride=1)
    return frames.reshape(b, t, c, h, w).transpose(1, 2)


def test_zero_for_identical_clips_and_grows_with_blur(perceptual, clip):
    assert perceptual(clip, clip).item() == pytest.approx(0.0, abs=1e-6)  # same features: 0 up to summation order
    mild, strong = perceptual(_blur(clip, 3), clip).item(), perceptual(_blur(clip, 7), clip).item()
    assert 0.0 < mild < strong


def test_gradient_reaches_the_reconstruction_and_lowers_the_loss(perceptual, clip):
    recon = _blur(clip, 7).requires_grad_(True)
    opt = torch.optim.Adam([recon], lr=0.003)  # lr 0.01 overshoots on the soft synthetic clips (loss 0.011 -> 0.020)
    first = None
    for _ in range(5):
        opt.zero_grad()
        loss = perceptual(recon, clip)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
    assert recon.grad.abs().sum() > 0
    assert perceptual(recon, clip).item() < 0.8 * first


def test_activations_stop_at_the_deepest_requested_layer_and_name_unknown_ones():
    i3d = load_i3d()
    x = torch.rand(1, 3, 16, 64, 64) * 2 - 1
    with torch.no_grad():
        acts = i3d.activations(x, ("Mixed_3c", "Conv3d_2c_3x3"))
    assert set(acts) == {"Mixed_3c", "Conv3d_2c_3x3"}
    assert acts["Mixed_3c"].shape == (1, 480, 8, 8, 8) and acts["Conv3d_2c_3x3"].shape == (1, 192, 8, 16, 16)
    with pytest.raises(ValueError, match="Mixed_9z"):
        i3d.activations(x, ("Mixed_9z",))


@pytest.mark.slow
def test_tokenizer_trains_with_the_perceptual_loss_and_checkpoints_exclude_the_detector(synth_root, tmp_path):
    out = tmp_path / "run"
    args = [
        "train-tokenizer", "--config", "configs/tokenizer/tiny.yaml", f"data.root={synth_root}", f"out_dir={out}",
        "model.channels=[32,32]", "model.out_hidden_channels=8", "data.batch_size=2", "trainer.progress_bar=false",
        "trainer.val_every_n_steps=3", "trainer.limit_val_batches=1", "optim.warmup_steps=1", "trainer.max_steps=3",
        "trainer.log_every_n_steps=1",
        "loss.perceptual_weight=1.0", "loss.perceptual_clips=1",
    ]
    assert main(args) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3 and ckpt["config"]["loss"]["perceptual_weight"] == 1.0
    assert not any("detector" in key for key in ckpt["state_dict"])
    (metrics,) = (out / "logs").glob("version_*/metrics.csv")
    rows = [r for r in csv.DictReader(metrics.open()) if r.get("train/loss")]
    assert len(rows) == 3
    for r in rows:  # the loss optimised is the reconstruction loss plus the perceptual term (weight 1) plus FSQ's
        parts = float(r["train/rec_loss"]) + float(r["train/perceptual_loss"]) + float(r["train/quantizer_loss"])
        # float32 sums of three O(0.1-1) values: a few ulps; the perceptual term (> 1e-3 here) is far above it
        assert float(r["train/loss"]) == pytest.approx(parts, rel=1e-5)
        assert float(r["train/perceptual_loss"]) > 1e-3
