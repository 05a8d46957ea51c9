"""LightningModule for tokenizer training: reconstruction (+ optional GAN) loss, EMA, logging.

Without a GAN (``loss.gan_weight == 0``, the CPU-tiny default) Lightning's automatic
optimization runs one AdamW step per batch. With a GAN, manual optimization updates the
generator and the discriminator on the same batch: the discriminator trains from
``gan_start_step - disc_warmup_steps``, its loss reaches the generator from
``gan_start_step``, weighted adaptively against the reconstruction gradient.

Under DDP one wrapper holds both networks, and each backward pass reaches only part of it (the
discriminator is absent from the generator loss before ``gan_start_step``; the discriminator loss
never reaches the tokenizer), so a GAN run turns on DDP's ``find_unused_parameters``
(:func:`gan_strategy`). Keeping the discriminator in the generator loss with a zero weight would
fix only the generator pass and cost a discriminator forward/backward per step; taking the
discriminator out of the wrapper needs a private DDP API and a hand-written all-reduce. The price
paid instead: one walk of the autograd graph per backward pass, and in the discriminator pass an
all-reduce of the tokenizer's zero gradient buckets, launched early in that pass.

A step is a batch in both modes: ``trainer.max_steps``, the learning-rate schedules, the GAN's start
steps and the checkpoint interval all count batches. Lightning's manual optimization advances
``global_step`` once per optimizer step, so the discriminator's update is kept out of that count
(:func:`uncounted_step`); otherwise a GAN run would stop after about half its batches, with its
learning-rate schedules half way through.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer, do_nothing_closure

from navid import __version__
from navid.config import to_dict
from navid.data.datamodule import VideoDataModule
from navid.tokenizer.checkpoint import tokenizer_payload
from navid.tokenizer.config import ClipGeometry, TokenizerTrainConfig
from navid.tokenizer.discriminator import PatchDiscriminator3d
from navid.tokenizer.losses import (
    adaptive_gan_weight,
    codebook_stats,
    hinge_d_loss,
    hinge_g_loss,
    psnr,
    reconstruction_loss,
)
from navid.tokenizer.model import VideoTokenizer
from navid.utils.ema import StepEMA
from navid.utils.training import (
    adamw_with_schedule, build_trainer, leave_process_group, replace_earlier_run, resumable_order_understood,
    resume_checkpoint, seed_batch, sigterm_reported,
)

TOKENIZER_FILE = "tokenizer.pt"  # the exported EMA tokenizer in out_dir


class TokenizerModule(L.LightningModule):
    def __init__(self, cfg: TokenizerTrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = VideoTokenizer(cfg.model)
        self.tokenizer.trained_clip = ClipGeometry.of(cfg.data)
        self.ema = copy.deepcopy(self.tokenizer).requires_grad_(False).eval()
        self.ema_updates = StepEMA(cfg.optim.ema_decay)
        self.use_gan = cfg.loss.gan_weight > 0
        self.automatic_optimization = not self.use_gan
        if self.use_gan:
            self.discriminator = PatchDiscriminator3d(cfg.model.in_channels, cfg.loss.disc_channels,
                                                      cfg.loss.disc_layers)
        # Held in a tuple so the frozen detector stays out of state_dict (checkpoints, strict loading).
        self._perceptual: tuple = ()
        if cfg.loss.perceptual_weight > 0:
            from navid.tokenizer.perceptual import I3DPerceptualLoss

            self._perceptual = (I3DPerceptualLoss(tuple(cfg.loss.perceptual_layers), cfg.loss.perceptual_resolution),)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed_batch(self.cfg.seed, self.global_rank, self.trainer.fit_loop.total_batch_idx)

    def on_fit_start(self) -> None:
        for loss in self._perceptual:
            loss.to(self.device)

    # ----------------------------------------------------------------- training
    def _log_quantizer(self, tokens: torch.Tensor, prefix: str) -> None:
        usage, perplexity = codebook_stats(tokens, self.tokenizer.vocab_size)
        self.log(f"{prefix}/codebook_usage", usage)
        self.log(f"{prefix}/perplexity", perplexity)

    def _generator_loss(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        recon, tokens, aux = self.tokenizer(video)
        rec = reconstruction_loss(recon, video, self.cfg.loss.l1_weight, self.cfg.loss.l2_weight)
        self.log("train/rec_loss", rec, prog_bar=True)
        if self._perceptual:
            n = self.cfg.loss.perceptual_clips or len(video)
            perceptual = self._perceptual[0](recon[:n], video[:n])
            self.log("train/perceptual_loss", perceptual)
            rec = rec + self.cfg.loss.perceptual_weight * perceptual
        self.log("train/psnr", psnr(recon.detach().clamp(-1, 1), video).mean(), prog_bar=True)
        self._log_quantizer(tokens, "train")
        self.log("train/quantizer_loss", aux)
        return rec + aux, recon, tokens

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict:
        video = batch[0]
        if not self.use_gan:
            loss, _, _ = self._generator_loss(video)
            self.log("train/loss", loss)
            return {"loss": loss}
        return {"loss": self._gan_step(video)}

    @property
    def disc_start_step(self) -> int:
        """The step of the discriminator's first update; its learning rate then follows the same step-indexed
        schedule as the generator's (its scheduler steps only with it)."""
        return max(self.cfg.loss.gan_start_step - self.cfg.loss.disc_warmup_steps, 0)

    def _gan_step(self, video: torch.Tensor) -> torch.Tensor:
        """One generator and one discriminator update on the same batch (manual optimization)."""
        c, step = self.cfg.loss, self.global_step
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        loss, recon, _ = self._generator_loss(video)
        if step >= c.gan_start_step:
            g_loss = hinge_g_loss(self.discriminator(recon))
            last = self.tokenizer.decoder.body[-1].weight
            weight = adaptive_gan_weight(loss, g_loss, last, c.adaptive_weight_max)
            loss = loss + c.gan_weight * weight * g_loss
            self.log("train/g_loss", g_loss)
            self.log("train/gan_weight", weight)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()  # clipped in on_before_optimizer_step
        self.ema_updates.update(self.ema, self.tokenizer, self.global_step)
        sched_g.step()
        if step >= self.disc_start_step:
            d_loss = hinge_d_loss(self.discriminator(video), self.discriminator(recon.detach()))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            uncounted_step(opt_d)  # clipped in on_before_optimizer_step
            sched_d.step()
            self.log("train/d_loss", d_loss)
        self.log("train/loss", loss)
        return loss.detach()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the GAN's gradients (Lightning clips by itself only under automatic optimization) here, where a
        ``16-mixed`` run's gradients have had the loss scale divided out: clipped in the step, they would be
        cut to norm 1 while still multiplied by it (2**16 at the start), leaving the update near nothing."""
        if not self.use_gan:
            return
        if optimizer is self.optimizers()[1].optimizer:
            grads = [p.grad.norm() for p in self.discriminator.parameters() if p.grad is not None]
            self.log("train/d_grad_norm", torch.stack(grads).norm())
        self.clip_gradients(optimizer, gradient_clip_val=self.cfg.trainer.gradient_clip_val or None)

    def optimizer_step(self, *args, **kwargs) -> None:
        """Without a GAN: the optimizer's step, then the EMA's (:class:`~navid.utils.ema.StepEMA` says why not
        later); Lightning counts the step only after this hook returns, hence ``global_step + 1``. With a GAN,
        :meth:`_gan_step` updates the EMA after the tokenizer's step (manual optimization counts it at once)."""
        super().optimizer_step(*args, **kwargs)
        self.ema_updates.update(self.ema, self.tokenizer, self.global_step + 1)

    # ------------------------------------------------------------------ previews
    preview_name = "reconstructions"

    @property
    def preview_fps(self) -> Optional[float]:
        """The training clips' own rate (``None`` when fitted on bare loaders, which carry no frame rate)."""
        data = self.trainer.datamodule
        return None if data is None else data.train_set.clip_fps

    def preview_clips(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Up to two clips of ``batch``, each as original | EMA reconstruction: (N, C, T, H, 2W)."""
        video = batch[0][:2]
        recon = self.ema.decode(self.ema.encode(video))
        return torch.cat([video, recon], dim=-1)

    # --------------------------------------------------------------- validation
    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        video = batch[0]
        tokens = self.ema.encode(video)
        recon = self.ema.decode(tokens)
        self.log("val/psnr", psnr(recon, video).mean(), prog_bar=True, sync_dist=True)
        self._log_quantizer(tokens, "val")

    # ------------------------------------------------------------ optimization
    def configure_optimizers(self):
        total = self.cfg.trainer.max_steps
        gen = adamw_with_schedule(self.tokenizer, self.cfg.optim, total)
        if not self.use_gan:
            return gen
        disc_cfg = copy.copy(self.cfg.optim)
        disc_cfg.lr = self.cfg.loss.disc_lr
        disc = adamw_with_schedule(self.discriminator, disc_cfg, total, first_step=self.disc_start_step)
        return [gen["optimizer"], disc["optimizer"]], [gen["lr_scheduler"], disc["lr_scheduler"]]

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["navid_version"] = __version__
        checkpoint["config"] = to_dict(self.cfg)
        checkpoint["navid_tokenizer"] = tokenizer_payload(self.ema)


def uncounted_step(optimizer: LightningOptimizer) -> None:
    """``optimizer.step()`` (through the strategy and precision plugin, as usual) without advancing
    ``trainer.global_step``.

    Manual optimization counts a step in the progress hooks that the loop attaches to every
    LightningOptimizer before each batch; they are swapped out for this one call only.
    """
    before, after = optimizer._on_before_step, optimizer._on_after_step
    optimizer._on_before_step = optimizer._on_after_step = do_nothing_closure
    try:
        optimizer.step()
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


_DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def gan_strategy(strategy: str, devices, num_nodes: int) -> str:
    """The Lightning strategy for GAN training: a DDP strategy gets ``find_unused_parameters`` on.

    ``auto`` resolves to DDP whenever the run may span several processes (as Lightning's own
    choice does), so it is made explicit here; other strategies pass through unchanged.
    """
    single = devices in (1, "1") or (isinstance(devices, (list, tuple)) and len(devices) == 1)
    if strategy == "auto" and (num_nodes > 1 or not single):
        strategy = "ddp"
    if strategy in _DDP_STRATEGIES:
        return f"{strategy}_find_unused_parameters_true"
    return strategy


def train_tokenizer(cfg: TokenizerTrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train (or resume) a tokenizer; returns the exported ``out_dir/tokenizer.pt`` (EMA weights).

    ``overwrite``: a new run replacing an earlier run's outputs in ``out_dir`` (removed once the data has loaded).
    """
    from navid.tokenizer.checkpoint import save_tokenizer

    L.seed_everything(cfg.seed, workers=True)
    data = VideoDataModule(cfg.data, seed=cfg.seed)
    data.setup()  # unreadable files past data.max_bad_fraction stop the run here, before its folder gets logs
    module = TokenizerModule(cfg)
    replace_earlier_run(cfg.out_dir, overwrite, (module.preview_name, TOKENIZER_FILE))
    trainer_cfg = cfg.trainer
    if module.use_gan:  # manual optimization clips gradients itself
        strategy = gan_strategy(trainer_cfg.strategy, trainer_cfg.devices, trainer_cfg.num_nodes)
        trainer_cfg = dataclasses.replace(trainer_cfg, gradient_clip_val=0.0, strategy=strategy)
    trainer = build_trainer(trainer_cfg, cfg.out_dir)
    with resumable_order_understood(), sigterm_reported(trainer):
        trainer.fit(module, datamodule=data, ckpt_path=resume_checkpoint(cfg.out_dir, resume))
    exported = save_tokenizer(module.ema, Path(cfg.out_dir) / TOKENIZER_FILE)
    leave_process_group(trainer)
    return exported
