"""The training loop's bookkeeping: EMA once per optimizer step, NaN/Inf stop without per-step syncs,
the schedule moved to the device once, logging only on the logging interval."""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch

from generator_helpers import make_token_cache, tiny_config
from navid.data.token_cache import TokenCache
from navid.generation.lightning_module import GeneratorModule, train_generator
from navid.generation.schedule import build_schedule
from navid.tokenizer.lightning_module import TokenizerModule
from navid.utils.ema import ema_decay_at
from navid.utils.run_stops import NonFiniteLossError
from navid.utils.training import build_trainer, warmup_cosine
from training_helpers import clip_loader, small_tokenizer_config


class WeightsAfterEachOptimizerStep(L.Callback):
    """Records (global step, tokenizer weights) whenever the optimizer has stepped."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[int, list[torch.Tensor]]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != (self.snapshots[-1][0] if self.snapshots else 0):
            self.snapshots.append((trainer.global_step, [p.detach().clone() for p in pl_module.tokenizer.parameters()]))


def test_tokenizer_ema_updates_once_per_optimizer_step_under_accumulation(tmp_path):
    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=3", "trainer.accumulate_grad_batches=2",
                                 "optim.ema_decay=0.5", "optim.lr=1e-2")
    module = TokenizerModule(cfg)
    expected = [p.detach().clone() for p in module.tokenizer.parameters()]
    recorder = WeightsAfterEachOptimizerStep()
    trainer = build_trainer(cfg.trainer, tmp_path, callbacks=[recorder])
    trainer.fit(module, train_dataloaders=clip_loader(cfg, 12))

    assert trainer.global_step == 3 and [step for step, _ in recorder.snapshots] == [1, 2, 3]
    for step, weights in recorder.snapshots:
        expected = [torch.lerp(e, w, 1.0 - ema_decay_at(step, 0.5)) for e, w in zip(expected, weights)]
    # The same lerp on the same float32 values as update_ema, so the result is bit-identical;
    # updating on every micro-batch (6 updates instead of 3) would pull the average elsewhere.
    assert all(torch.equal(got, want) for got, want in zip(module.ema.parameters(), expected))
    assert module.ema_updates.num_updates == 3


def test_nan_in_a_batch_is_reported_with_the_first_bad_step_and_no_checkpoint_after_it(tmp_path):
    # Batch 3 (the 4th optimizer step) holds NaN pixels; the flag is read on the logging
    # interval (step 5) and before each checkpoint (every 3 steps), never at every step.
    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=10", "trainer.log_every_n_steps=5",
                                 "trainer.checkpoint_every_n_steps=3")
    loader = clip_loader(cfg, 20)
    clips = loader.dataset.tensors[0]
    clips[6] = float("nan")
    module = TokenizerModule(cfg)
    trainer = build_trainer(cfg.trainer, tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss first at global step 4 \(found at global step 5"):
        trainer.fit(module, train_dataloaders=loader)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3


def test_nan_between_logging_steps_is_caught_before_the_next_checkpoint(tmp_path):
    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=10", "trainer.log_every_n_steps=100",
                                 "trainer.checkpoint_every_n_steps=2")
    loader = clip_loader(cfg, 20)
    loader.dataset.tensors[0][2] = float("inf")  # batch 1: optimizer step 2
    with pytest.raises(NonFiniteLossError, match=r"first at global step 2 \(found at global step 2"):
        build_trainer(cfg.trainer, tmp_path).fit(TokenizerModule(cfg), train_dataloaders=loader)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_generator_moves_the_schedule_once_and_logs_only_on_the_interval(tmp_path):
    cache = make_token_cache(tmp_path / "cache")
    cfg = tiny_config(cache, tmp_path / "run", "par4", steps=6, **{"trainer.log_every_n_steps": 3})
    module = GeneratorModule(cfg, TokenCache(cache).meta)
    first = module._device_schedule()
    assert module._device_schedule() is first and first.attention_mask.device == module.device
    # (a CUDA move is tested in tests/test_cuda.py)
    train_generator(cfg)
    rows = (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged_steps = sorted({int(r.split(",")[header.index("step")]) for r in rows[1:]
                           if r.split(",")[header.index("train/loss")]})
    assert logged_steps == [2, 5]  # Lightning's 0-based step of optimizer steps 3 and 6


def test_generator_schedule_tensors_are_not_module_state(tmp_path):
    cache = make_token_cache(tmp_path / "cache")
    module = GeneratorModule(tiny_config(cache, tmp_path / "run"), TokenCache(cache).meta)
    # Buffers would be broadcast by DDP at every step and cast by bf16-true precision.
    assert not any(buf.shape == module.schedule.attention_mask.shape for buf in module.buffers())
    assert "attention_mask" not in " ".join(module.state_dict())


def test_schedule_to_moves_every_tensor_and_keeps_the_original():
    schedule = build_schedule("par4", (2, 4, 4))
    moved = schedule.to("meta")
    for f in dataclasses.fields(schedule):
        value = getattr(moved, f.name)
        tensors = value if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor) else (value,)
        for t in tensors:
            if isinstance(t, torch.Tensor):
                assert t.device.type == "meta", f.name
    assert (schedule.attention_mask.device.type == "cpu" and moved.kind == "par4"
            and moved.num_steps == schedule.num_steps)


class StepsAndDiscriminatorUpdates(L.Callback):
    """Records, per batch, the global step it started at and whether it changed the discriminator."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = trainer.global_step
        self._disc = [p.detach().clone() for p in pl_module.discriminator.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        changed = any(not torch.equal(a, b) for a, b in zip(self._disc, pl_module.discriminator.parameters()))
        self.batches.append((self._step, changed))


@pytest.mark.filterwarnings("error:Detected call of `lr_scheduler.step()`")
def test_gan_tokenizer_counts_one_step_per_batch(tmp_path):
    # Manual optimization would count the generator's and the discriminator's update as two steps:
    # the run would stop after 4 of its 6 batches, with both learning-rate schedules cut short.
    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=6", "loss.gan_weight=0.1", "loss.gan_start_step=3",
                                 "loss.disc_warmup_steps=1", "loss.disc_channels=8", "loss.disc_layers=1")
    module = TokenizerModule(cfg)
    recorder = StepsAndDiscriminatorUpdates()
    trainer_cfg = dataclasses.replace(cfg.trainer, gradient_clip_val=0.0)  # as train_tokenizer: the module clips
    trainer = build_trainer(trainer_cfg, tmp_path, callbacks=[recorder])
    trainer.fit(module, train_dataloaders=clip_loader(cfg, 20))

    assert trainer.global_step == 6
    # the discriminator trains from gan_start_step - disc_warmup_steps = 2, counted in batches
    assert recorder.batches == [(0, False), (1, False), (2, True), (3, True), (4, True), (5, True)]
    # Both learning rates follow one schedule indexed by the batch (the discriminator's from its first update,
    # at batch 2, without stepping its scheduler, and so without PyTorch's order warning, before then).
    sched_g, sched_d = module.lr_schedulers()
    assert (sched_g.last_epoch, sched_d.last_epoch) == (6, 4)
    factor = warmup_cosine(6, cfg.optim.warmup_steps, 6, cfg.optim.min_lr_ratio)
    assert sched_g.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr * factor, rel=1e-12)
    assert sched_d.optimizer.param_groups[0]["lr"] == pytest.approx(cfg.loss.disc_lr * factor, rel=1e-12)


def _ema_and_model(state: dict, ema: str, model: str) -> tuple[dict, dict]:
    pick = lambda prefix: {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}  # noqa: E731
    return pick(ema), pick(model)


@pytest.mark.parametrize("mode", ["generator", "tokenizer", "tokenizer_gan"])
def test_periodic_checkpoint_holds_the_ema_of_its_step(tmp_path, mode):
    # The checkpoint callback saves in its own on_train_batch_end, which Lightning runs before the module's:
    # an EMA updated there would be saved one step old, and a resume from that file would skip that update.
    if mode == "generator":
        cache = make_token_cache(tmp_path / "cache", num_clips=8)
        cfg = tiny_config(cache, tmp_path / "run", "nar", steps=4, **{"trainer.checkpoint_every_n_steps": 2,
                                                                       "optim.ema_decay": 0.5})
        module, prefixes = GeneratorModule(cfg, TokenCache(cache).meta), ("ema.", "model.")
        fit = dict(datamodule=None, train_dataloaders=torch.utils.data.DataLoader(TokenCache(cache), batch_size=2))
        trainer_cfg = cfg.trainer
    else:
        gan = ["loss.gan_weight=0.1", "loss.gan_start_step=1", "loss.disc_channels=8", "loss.disc_layers=1"]
        cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2",
                                     "optim.ema_decay=0.5", *(gan if mode == "tokenizer_gan" else []))
        module, prefixes = TokenizerModule(cfg), ("ema.", "tokenizer.")
        fit = dict(train_dataloaders=clip_loader(cfg, 8))
        trainer_cfg = dataclasses.replace(cfg.trainer, gradient_clip_val=0.0) if module.use_gan else cfg.trainer
    out = tmp_path / "run"
    trainer = build_trainer(trainer_cfg, out)
    trainer.fit(module, **{k: v for k, v in fit.items() if v is not None})

    saved = torch.load(out / "checkpoints" / "step0000004.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 4
    ema, model = _ema_and_model(saved["state_dict"], *prefixes)
    now_ema, now_model = _ema_and_model(module.state_dict(), *prefixes)
    assert all(torch.equal(model[k], now_model[k]) for k in now_model)
    assert all(torch.equal(ema[k], now_ema[k]) for k in now_ema)


class CountValidations(L.Callback):
    def __init__(self) -> None:
        self.at_steps: list[int] = []

    def on_validation_start(self, trainer, pl_module) -> None:
        self.at_steps.append(trainer.global_step)


def test_validation_interval_counts_optimizer_steps_under_accumulation(tmp_path):
    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=4", "trainer.accumulate_grad_batches=2",
                                 "trainer.val_every_n_steps=2", "trainer.limit_val_batches=1")
    counter = CountValidations()
    trainer = build_trainer(cfg.trainer, tmp_path, callbacks=[counter])
    trainer.fit(TokenizerModule(cfg), train_dataloaders=clip_loader(cfg, 16), val_dataloaders=clip_loader(cfg, 2))
    assert counter.at_steps == [2, 4]  # every 2 optimizer steps = 4 batches, not every 2 batches


def test_seed_batch_keys_the_global_stream_by_seed_rank_and_batch():
    from navid.utils.training import seed_batch

    def draw(*key):
        seed_batch(*key)
        return torch.rand(4)

    assert torch.equal(draw(7, 0, 5), draw(7, 0, 5))
    for other in ((8, 0, 5), (7, 1, 5), (7, 0, 6)):
        assert not torch.equal(draw(7, 0, 5), draw(*other))
