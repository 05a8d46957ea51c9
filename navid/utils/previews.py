"""Preview videos during training: generator samples, tokenizer reconstructions.

A module that wants previews defines ``preview_name`` (a folder / TensorBoard tag) and
``preview_clips(batch) -> (N, C, T, H, W)`` in [-1, 1], and ``preview_fps`` (the clips' own frame rate,
``None`` if unknown). Every ``trainer.sample_every_n_steps``
optimizer steps, global rank 0 tiles the clips into one grid video, writes it to
``out_dir/<preview_name>/step<step>.gif`` (whatever the logger) and, with the TensorBoard
logger, also adds it with ``add_video``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from einops import rearrange
from lightning.pytorch.loggers import TensorBoardLogger

from navid.data.video_io import DEFAULT_FPS, tensor_to_frames, write_video
from navid.utils.step_end import StepEndCallback


def tile_clips(clips: torch.Tensor) -> torch.Tensor:
    """(N, C, T, H, W) -> one (C, T, rows*H, cols*W) grid video, rows x cols = N, as square as N allows."""
    rows = math.isqrt(clips.shape[0])
    while clips.shape[0] % rows:
        rows -= 1
    return rearrange(clips, "(r c) C T H W -> C T (r H) (c W)", r=rows)


class PreviewVideos(StepEndCallback):
    """Writes the module's preview clips every ``every_n_steps`` optimizer steps (see the module docstring).

    At the end of the step only: under gradient accumulation the batches of a step share its
    ``global_step``, and a resumed run's first batch still has the checkpoint's.
    """

    def __init__(self, every_n_steps: int, out_dir: str | Path) -> None:
        self.every_n_steps = every_n_steps
        self.out_dir = Path(out_dir)

    def on_step_end(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any) -> None:
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        with torch.no_grad():  # on every rank: a sharded model gathers its weights first, a collective
            clips = pl_module.preview_clips(batch)  # (N, C, T, H, W)
        if not trainer.is_global_zero:
            return
        grid = tile_clips(clips)  # (C, T, H', W')
        frames = tensor_to_frames(grid)  # (T, H', W', C) uint8
        fps = pl_module.preview_fps or DEFAULT_FPS
        write_video(self.out_dir / pl_module.preview_name / f"step{step:07d}.gif", frames, fps=fps)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]  # (1, T, C, H', W') uint8
                logger.experiment.add_video(pl_module.preview_name, video, global_step=step, fps=round(fps))
