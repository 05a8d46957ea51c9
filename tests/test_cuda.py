"""CUDA paths: device placement, training steps without host syncs, bf16 training and sampling, I3D on the GPU.

Marked ``cuda``: deselected in CI (see conftest.py), run on a GPU with ``python -m pytest -m cuda``
or ``python benchmarks/gpu_check.py``. Without a GPU they fail rather than skip.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch
from lightning.pytorch import Callback

from generator_helpers import cache_of_tokenizer, make_token_cache, make_tokenizer, tiny_config, tiny_overrides
from navid.data.token_cache import TokenCache
from navid.generation.lightning_module import GeneratorModule, train_generator
from navid.generation.sampler import SamplingConfig, sample
from navid.generation.schedule import build_schedule
from navid.generation.transformer import Transformer, TransformerConfig
from navid.tokenizer.lightning_module import TokenizerModule
from navid.utils.training import build_trainer
from training_helpers import clip_loader, small_tokenizer_config

pytestmark = pytest.mark.cuda
GPU = ["trainer.accelerator=gpu", "trainer.devices=1"]


@pytest.fixture(autouse=True)
def needs_cuda():
    if not torch.cuda.is_available():
        pytest.fail("tests marked cuda need a CUDA GPU (CI deselects them with the cuda marker)")


def _tiny_model(kind: str, dtype=torch.float32) -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig.from_size("tiny", vocab_size=64, num_classes=4)
    return Transformer(cfg, kind).to(device="cuda", dtype=dtype).eval()


def test_sampled_batch_and_training_schedule_live_on_the_gpu(tmp_path):
    schedule = build_schedule("nar", (2, 4, 4))
    result = sample(_tiny_model("nar"), schedule, torch.arange(3, device="cuda"), SamplingConfig(seed=0))
    assert result.tokens.device.type == "cuda" and result.tokens.shape == (3, 2, 4, 4)
    assert int(result.tokens.min()) >= 0 and int(result.tokens.max()) < 64

    cache = make_token_cache(tmp_path / "cache")
    module = GeneratorModule(tiny_config(cache, tmp_path / "run", "par4"), TokenCache(cache).meta).cuda()
    on_gpu = module._device_schedule()
    assert on_gpu.attention_mask.is_cuda and on_gpu.target_slot.is_cuda and all(s.is_cuda for s in on_gpu.step_slots)
    assert module._device_schedule() is on_gpu  # moved once, not per step


def test_generator_forward_and_backward_make_no_host_sync(tmp_path):
    cache = make_token_cache(tmp_path / "cache")
    module = GeneratorModule(tiny_config(cache, tmp_path / "run", "nar"), TokenCache(cache).meta).cuda()
    tokens = torch.randint(0, 16, (4, 2, 4, 4), device="cuda")
    labels = torch.arange(4, device="cuda") % 2
    module._device_schedule()  # the one-time move (a host-to-device copy) happens before the checked region
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, _ = module._loss(module.model, tokens, labels)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(loss.item())


@pytest.mark.parametrize("quantizer", [
    ["model.fsq_entropy_weight=0.1"],  # FSQ with the entropy penalty's loop
    ["model.quantizer=vq", "model.vq_codebook_size=64", "model.vq_dead_code_threshold=2.0"],  # VQ restarting codes
], ids=["fsq", "vq"])
def test_tokenizer_loss_and_its_logged_statistics_make_no_host_sync(tmp_path, quantizer):
    from training_helpers import small_tokenizer_config

    from navid.tokenizer.lightning_module import TokenizerModule

    cfg = small_tokenizer_config(tmp_path, *quantizer)
    module = TokenizerModule(cfg).cuda()
    video = torch.rand(2, 3, cfg.data.num_frames, cfg.data.resolution, cfg.data.resolution, device="cuda") * 2 - 1
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, _, _ = module._generator_loss(video)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert math.isfinite(loss.item())


def test_generator_trains_in_bf16_on_the_gpu(tmp_path):
    cache = make_token_cache(tmp_path / "cache")
    extra = {"trainer.accelerator": "gpu", "trainer.devices": 1, "trainer.precision": "bf16-mixed"}
    last = train_generator(tiny_config(cache, tmp_path / "run", "nar", steps=5, **extra))
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 5
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_fsdp_trains_in_bf16_on_the_gpu_with_previews_and_its_checkpoint_samples(tmp_path):
    # One rank of the README's sharded command: FSDP2 over a CUDA mesh and an NCCL group, bf16 autocast over
    # sharded fp32 weights, previews from the gathered EMA, and `navid sample` on the GPU from the gathered file.
    tokenizer, fingerprint = make_tokenizer(tmp_path / "tokenizer.pt")
    cache = cache_of_tokenizer(tokenizer, fingerprint, tmp_path / "cache", num_clips=8)
    out = tmp_path / "run"
    overrides = tiny_overrides(cache, out, steps=4, **{
        "trainer.accelerator": "gpu", "trainer.devices": 1, "trainer.strategy": "fsdp",
        "trainer.precision": "bf16-mixed", "trainer.sample_every_n_steps": 2, "tokenizer_fingerprint": fingerprint})
    done = subprocess.run([sys.executable, "-m", "navid.cli", "train", *overrides], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "distributed_backend=nccl" in done.stdout + done.stderr
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step0000002.gif", "step0000004.gif"]
    sample = ["sample", "--generator", str(out / "checkpoints" / "last.ckpt"), "--tokenizer", str(tokenizer),
              "--classes", "a,b", "--per-class", "1", "--device", "cuda", "--out", str(tmp_path / "samples")]
    done = subprocess.run([sys.executable, "-m", "navid.cli", *sample], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "samples" / "videos").rglob("*.mp4"))) == 2


class EmaPlacement(Callback):
    """Device types and dtypes of the EMA copy's parameters after each training batch (Lightning moves the
    module back to the CPU when ``fit`` ends, so placement must be read during training)."""

    def __init__(self) -> None:
        self.seen: set = set()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen |= {(p.device.type, p.dtype) for p in pl_module.ema.parameters()}


def test_tokenizer_trains_in_bf16_on_the_gpu(tmp_path):
    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=3", "trainer.precision=bf16-mixed", *GPU)
    module = TokenizerModule(cfg)
    placement = EmaPlacement()
    build_trainer(cfg.trainer, tmp_path, callbacks=[placement]).fit(module, train_dataloaders=clip_loader(cfg, 6))
    assert module.trainer.global_step == 3, module.trainer.global_step
    assert module.ema_updates.num_updates == 3, module.ema_updates.num_updates
    assert placement.seen == {("cuda", torch.float32)}  # updated on the GPU, kept in fp32 under bf16 autocast
    assert {name for name, p in module.ema.named_parameters() if not torch.isfinite(p).all()} == set()


def test_bf16_sampling_on_the_gpu_is_valid_and_repeatable():
    model = _tiny_model("par4", torch.bfloat16)
    schedule = build_schedule("par4", (2, 4, 4))
    labels = torch.arange(8, device="cuda") % 4
    first = sample(model, schedule, labels, SamplingConfig(seed=3)).tokens
    again = sample(model, schedule, labels, SamplingConfig(seed=3)).tokens
    assert first.is_cuda and int(first.min()) >= 0 and int(first.max()) < 64
    assert torch.equal(first, again)


def test_i3d_on_the_gpu_matches_the_reference_outputs(fixtures_dir):
    from navid.metrics.fvd import extract_features
    from navid.metrics.i3d import load_i3d

    ref = json.loads((fixtures_dir / "i3d" / "reference_outputs.json").read_text())["cases"]["first_16_frames"]
    frames = iio.imread(fixtures_dir / "i3d" / "v_CricketShot_g04_c01_rgb.gif")[:16, ..., :3]  # (16, 224, 224, 3)
    video = torch.from_numpy(frames).float().div(255).mul(2).sub(1).permute(3, 0, 1, 2)[None]  # as the reference
    assert torch.backends.cudnn.conv.fp32_precision != "ieee"  # cuDNN's default, TF32, which FVD features turn off
    logits = extract_features(load_i3d(device="cuda"), video)[0]  # (400,) float64 on the CPU
    # Same bound as the CPU test (tests/test_i3d.py): fp32 convolutions in a different summation order.
    assert (logits - torch.tensor(ref["logits"], dtype=torch.float64)).abs().max() < 1e-3


@pytest.mark.parametrize("kind", ["nar", "par4"])
def test_cuda_graph_sampling_equals_eager_on_the_gpu(kind):
    """``compile=True`` on CUDA (inductor + CUDA graphs over the padded step layout): the same greedy tokens as
    eager on the same layout, with no graph skipped (a skipped graph would silently run the step eagerly).

    fp32 with TF32 off, random heads (zero-initialised heads would make every argmax 0): inductor only reorders
    and fuses the same float32 arithmetic, far below the gaps between a random model's top logits.
    """
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = _tiny_model(kind)
    torch.nn.init.normal_(model.head_out.weight, std=0.5)
    schedule = build_schedule(kind, (2, 4, 4))
    labels = torch.arange(3, device="cuda")
    eager = sample(model, schedule, labels, SamplingConfig(temperature=0, padding="padded"))
    graphed = sample(model, schedule, labels, SamplingConfig(temperature=0, compile=True))
    again = sample(model, schedule, labels, SamplingConfig(temperature=0, compile=True))
    assert torch.equal(graphed.tokens, eager.tokens) and torch.equal(again.tokens, eager.tokens)
    assert graphed.compile_seconds > 0 and counters["inductor"]["cudagraph_skips"] == 0
