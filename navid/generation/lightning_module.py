"""Lightning training of the generator: one loss for every decoding schedule.

The step is the whole method: the transformer reads the token grid in the
schedule's slot order under the schedule's block-causal mask (one forward), the logits of
the (slot, head) pairs that point at each grid position are averaged, and cross-entropy
is taken against the true tokens. NAR, PAR-4× and raster differ only in the ``Schedule``.

An EMA copy of the transformer is a submodule, so it is saved in (and restored from) every
checkpoint; sampling uses it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info

from navid import __version__
from navid.config import ConfigError, to_dict
from navid.data.token_cache import TokenCacheDataModule
from navid.generation.checkpoint import CHECKPOINT_FORMAT, build_transformer, token_clip_fps
from navid.generation.config import GeneratorTrainConfig
from navid.generation.sampler import SamplingConfig, sample
from navid.generation.schedule import Schedule, build_schedule
from navid.generation.transformer import drop_labels
from navid.tokenizer.checkpoint import load_tokenizer, tokenizer_fingerprint
from navid.tokenizer.model import VideoTokenizer
from navid.utils.ema import StepEMA
from navid.utils.sharding import FullyShardedStrategy, is_sharded, shard_with_ema, unsharded, weights_on_this_rank
from navid.utils.training import (
    adamw_with_schedule, build_trainer, is_logging_step, last_checkpoint, leave_process_group, replace_earlier_run,
    resumable_order_understood, resume_checkpoint, seed_batch, sigterm_reported,
)


def token_accuracy(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """Share of ``targets`` (any shape) among the ``k`` largest ``logits`` (same shape + (V,))."""
    topk = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # (..., k)
    return (topk == targets.unsqueeze(-1)).any(dim=-1).float().mean()


class GeneratorModule(L.LightningModule):
    """Trains a :class:`~navid.generation.transformer.Transformer` on token grids.

    Args:
        cfg: the run's config (stored in checkpoints as a plain dict, so they load with
            ``weights_only=True``).
        cache_meta: the token cache's ``meta.json`` — vocabulary size, classes, grid and
            tokenizer fingerprint, stored in the checkpoint so sampling needs nothing else.
    """

    def __init__(self, cfg: GeneratorTrainConfig, cache_meta: dict) -> None:
        super().__init__()
        self.cfg = cfg
        self.grid = tuple(int(s) for s in cache_meta["grid"])
        self.class_names = list(cache_meta["class_names"])
        self.tokenizer_fingerprint = cache_meta["tokenizer_fingerprint"]
        self.token_grids = int(cache_meta["num_clips"])  # rows of the training cache: what --resume checks
        source = cache_meta.get("source", {})
        # The clips behind the tokens (caches written by `navid tokenize` record them): evaluation compares
        # generated clips with real clips cut the same way.
        # The source's frame rate lets `navid sample` write clips that play at the speed they were filmed.
        self.token_clips = {
            k: source[k] for k in ("num_frames", "resolution", "frame_stride", "source_fps") if k in source
        }
        self.transformer_config = {
            **cfg.model.transformer_kwargs(),
            "vocab_size": int(cache_meta["vocab_size"]),
            "num_classes": int(cache_meta["num_classes"]),
        }
        self.schedule = build_schedule(cfg.model.schedule, self.grid)
        # The schedule's index tensors and its (L, L) mask, moved to the training device once
        # (see _device_schedule) instead of being copied from the host at every step.
        self._schedule_on_device = self.schedule
        self.model = build_transformer(self.transformer_config, self.schedule)
        # DDP requires every trainable parameter to get a gradient; an empty one (no special
        # slots in this schedule) never does, and has nothing to train.
        for param in self.model.parameters():
            param.requires_grad_(param.numel() > 0)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.ema_updates = StepEMA(cfg.optim.ema_decay)
        # The decoder of preview samples; a tuple keeps it out of state_dict and checkpoints.
        self.preview_decoder: tuple[VideoTokenizer, ...] = ()

    def configure_model(self) -> None:
        """Under ``trainer.strategy=fsdp`` or ``hsdp``, shard the model and its EMA copy alike (see
        :mod:`navid.utils.sharding`)."""
        strategy = self.trainer.strategy
        if isinstance(strategy, FullyShardedStrategy) and not is_sharded(self.model):
            shard_with_ema(self.model, self.ema, "layers", strategy.shard_mesh, ["target_logits"])
            held, total = weights_on_this_rank(self.model)
            rank_zero_info(f"{strategy.description}; rank 0 holds {held:,} of the model's {total:,} weights, and as "
                           "many of its EMA copy's")

    def _device_schedule(self) -> Schedule:
        """The schedule with every tensor on this module's device, built once per device.

        Deliberately not registered as buffers: DDP would broadcast buffers from rank 0 at
        every step, and ``bf16-true`` / ``16-true`` precision would round the float weights
        (1/3 is not exact in bf16).
        """
        if self._schedule_on_device.attention_mask.device != self.device:
            self._schedule_on_device = self.schedule.to(self.device)
        return self._schedule_on_device

    def _loss(self, model: torch.nn.Module, tokens: torch.Tensor,
              labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the schedule's averaged target logits against ``tokens`` (B, T, H, W)."""
        logits = model.target_logits(tokens, labels, self._device_schedule())  # (B, N, V), flat (t, h, w) order
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
        return loss, logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        tokens, labels = batch  # (B, T, H, W), (B,)
        labels = drop_labels(labels, self.model.cfg.class_dropout, self.model.cfg.num_classes)
        loss, logits = self._loss(self.model, tokens, labels)
        if is_logging_step(self.trainer):
            targets = tokens.flatten(1)  # (B, N)
            self.log("train/loss", loss.detach(), prog_bar=True, sync_dist=True)
            self.log("train/top1", token_accuracy(logits.detach(), targets, 1), sync_dist=True)
            self.log("train/top5", token_accuracy(logits.detach(), targets, 5), sync_dist=True)
            self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed_batch(self.cfg.seed, self.global_rank, self.trainer.fit_loop.total_batch_idx)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimizer's step, then the EMA's (:class:`~navid.utils.ema.StepEMA` says why not later).

        Lightning counts the step only after this hook returns, hence ``global_step + 1``.
        """
        super().optimizer_step(*args, **kwargs)
        self.ema_updates.update(self.ema, self.model, self.trainer.global_step + 1)

    preview_name = "samples"

    @property
    def preview_fps(self) -> Optional[float]:
        return token_clip_fps(self.token_clips)

    def preview_clips(self, batch: Any, num_clips: int = 4) -> torch.Tensor:
        """``num_clips`` clips sampled by the EMA model (classes spread over the label range, fixed
        seed, so previews of successive steps are comparable), decoded: (N, C, T, H, W)."""
        labels = torch.linspace(0, len(self.class_names) - 1, num_clips, device=self.device).long()  # (N,)
        ema = unsharded(self.ema, lambda: build_transformer(self.transformer_config, self.schedule))
        tokens = sample(ema, self.schedule, labels, SamplingConfig(seed=0)).tokens  # (N, T, H, W)
        decoder = self.preview_decoder[0].to(self.device)
        return decoder.decode(tokens)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        tokens, labels = batch
        for name, model in (("val", self.model), ("val_ema", self.ema)):
            loss, logits = self._loss(model, tokens, labels)
            self.log(f"{name}/loss", loss, sync_dist=True)
            self.log(f"{name}/top1", token_accuracy(logits, tokens.flatten(1), 1), sync_dist=True)

    def configure_optimizers(self) -> dict:
        return adamw_with_schedule(self.model, self.cfg.optim, self.cfg.trainer.max_steps)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["navid"] = {
            "format": CHECKPOINT_FORMAT,
            "navid_version": __version__,
            "config": to_dict(self.cfg),
            "transformer": self.transformer_config,
            "schedule": self.schedule.kind,
            "grid": list(self.grid),
            "class_names": self.class_names,
            "tokenizer_fingerprint": self.tokenizer_fingerprint,
            "token_grids": self.token_grids,
            "token_clips": self.token_clips,
            "head_taps": list(self.model.taps),
        }


def train_generator(cfg: GeneratorTrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train (or resume) a run in ``cfg.out_dir``; returns ``out_dir/checkpoints/last.ckpt``.

    ``overwrite``: a new run replacing an earlier run's outputs in ``out_dir`` (removed once the data has loaded).

    The final state is always written to ``last.ckpt`` (atomically), also when
    ``max_steps`` is not a multiple of the checkpoint interval. Raises
    :class:`~navid.utils.run_stops.NonFiniteLossError` naming the step on a NaN/Inf loss.
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data = TokenCacheDataModule(
        cfg.data.tokens,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
        val_fraction=cfg.data.val_fraction,
        seed=cfg.seed,
        expected_fingerprint=cfg.tokenizer_fingerprint,
    )
    module = GeneratorModule(cfg, data.cache.meta)
    if cfg.trainer.sample_every_n_steps:
        module.preview_decoder = (preview_tokenizer(cfg, data.cache.meta),)
    replace_earlier_run(cfg.out_dir, overwrite, (module.preview_name,))
    trainer = build_trainer(cfg.trainer, cfg.out_dir)
    with resumable_order_understood(), sigterm_reported(trainer):
        trainer.fit(module, datamodule=data, ckpt_path=resume_checkpoint(cfg.out_dir, resume), weights_only=True)
    leave_process_group(trainer)
    return last_checkpoint(cfg.out_dir)


def preview_tokenizer(cfg: GeneratorTrainConfig, cache_meta: dict) -> VideoTokenizer:
    """The tokenizer that decodes preview samples: ``data.tokenizer``, else the one the cache records.

    It must be the tokenizer that made the cache (same fingerprint), or the previews would be noise.
    """
    path = cfg.data.tokenizer or cache_meta.get("source", {}).get("tokenizer")
    key = "data.tokenizer" if cfg.data.tokenizer else "the token cache's source.tokenizer (set data.tokenizer)"
    if not path or not Path(path).is_file():
        raise ConfigError("trainer.sample_every_n_steps needs the tokenizer to decode samples: "
                          f"{key} = {path!r} is not a file")
    tokenizer = load_tokenizer(path)
    if tokenizer_fingerprint(tokenizer) != cache_meta["tokenizer_fingerprint"]:
        raise ConfigError(f"{key} = {path}: this tokenizer did not make the token cache {cfg.data.tokens} "
                          "(fingerprints differ)")
    return tokenizer
