"""Loading a trained generator from a ``navid train`` checkpoint.

A checkpoint is Lightning's file plus a ``"navid"`` entry (plain types only) holding the run
config, the transformer config, the schedule kind, the token grid, the class names, the
tokenizer fingerprint, the clips behind the training tokens (``token_clips``: frames, size, frame stride and
the source's frame rate, where the token cache recorded them), the navid version and the head taps (the layer
each output head reads) — enough to rebuild the model and its schedule without the token cache. Loading uses
``torch.load(weights_only=True)`` and a strict ``load_state_dict``: a file that does not match
exactly is an error, never a guess.

Head taps: before the head-tap fix the NAR time head read extra block 1 and the row head extra block 2
(swapped with respect to the reference model). Such checkpoints record no taps; they cannot be
converted (each head's projection was trained on the features of its own depth), so loading a NAR
one is an error that says so. PAR and raster checkpoints have one head on the trunk either way.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch

from navid.generation.schedule import Schedule, build_schedule
from navid.generation.transformer import Transformer, TransformerConfig, head_taps
from navid.utils.checkpoint_file import load_checkpoint_file

if TYPE_CHECKING:  # the cache module imports Lightning, which loading a generator does not need
    from navid.data.token_cache import TokenCache

CHECKPOINT_FORMAT = "navid-generator/1"


def token_clip_fps(token_clips: dict) -> Optional[float]:
    """The frame rate at which the training clips play at the speed they were filmed (source rate / frame
    stride), or ``None`` where the token cache recorded no source rate."""
    rate = token_clips.get("source_fps")
    return rate / token_clips.get("frame_stride", 1) if rate else None


def check_resume_tokens(path: Path, meta: dict, cache: TokenCache) -> None:
    """Refuse ``--resume`` from ``path`` (whose ``"navid"`` record is ``meta``) on another token cache than the run
    trained on (another tokenizer, grid, class list or number of token grids).

    The checkpoint records the tokenizer, grid and classes that ``sample`` and ``evaluate`` trust, and the resumed
    data order continues the run's only over the same rows. Checkpoints written before the number of token grids
    was recorded are checked without it.
    """
    changed = [f"{name} {old} -> {new}" for name, old, new in (
        ("tokenizer", meta.get("tokenizer_fingerprint"), cache.fingerprint),
        ("grid", meta.get("grid"), list(cache.grid)),
        ("token grids", meta.get("token_grids", len(cache)), len(cache)),
    ) if old != new]
    if meta.get("class_names") != list(cache.class_names):
        changed.append("class names")
    if changed:
        raise ValueError(f"--resume from {path}: data.tokens is not the token cache this run trained on "
                         f"({'; '.join(changed)}); resume with that cache, or start a new run")


def build_transformer(transformer_config: dict, schedule: Schedule) -> Transformer:
    """The transformer for ``schedule`` from a plain-dict :class:`TransformerConfig`."""
    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    unknown = sorted(set(transformer_config) - known)
    if unknown:
        raise ValueError(f"unknown transformer setting(s) {', '.join(unknown)}")
    return Transformer(TransformerConfig(**transformer_config), schedule.kind)


def read_generator_meta(path: str | os.PathLike) -> tuple[dict, dict]:
    """``(navid meta, checkpoint)`` of a generator checkpoint, validated."""
    path = Path(path)
    checkpoint = load_checkpoint_file(path, "generator")
    meta = checkpoint.get("navid") if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a navid generator checkpoint (expected format {CHECKPOINT_FORMAT!r}); "
                         "is it a tokenizer checkpoint?")
    return meta, checkpoint


def legacy_head_taps(kind: str, depth: int) -> list[int]:
    """Taps of checkpoints that record none: NAR time head after extra block 1, row head after extra block 2."""
    taps = head_taps(kind, depth)
    return [taps[1], taps[0], taps[2]] if len(taps) == 3 else taps


def check_head_taps(meta: dict, model: Transformer, path: str | os.PathLike) -> None:
    """The checkpoint's heads must read the layers this navid's heads read (see the module docstring)."""
    recorded = meta.get("head_taps", legacy_head_taps(model.schedule_kind, model.cfg.depth))
    if list(recorded) != list(model.taps):
        raise ValueError(
            f"{path}: its {model.schedule_kind} heads read layers {list(recorded)} (time, row, column) but this "
            f"navid's read {list(model.taps)} (the reference layout: row head after extra block 1, time head after "
            "extra block 2). The heads' weights were trained on the other depths and cannot be converted; "
            "retrain the generator."
        )


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                   ema: bool = True) -> tuple[Transformer, Schedule, dict]:
    """``(transformer in eval mode, schedule, meta)`` from a checkpoint.

    ``ema=True`` (the default, what sampling and evaluation use) loads the EMA weights,
    ``ema=False`` the raw training weights.
    """
    meta, checkpoint = read_generator_meta(path)
    schedule = build_schedule(meta["schedule"], tuple(meta["grid"]))
    model = build_transformer(meta["transformer"], schedule)
    check_head_taps(meta, model, path)
    prefix = "ema." if ema else "model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval(), schedule, meta
