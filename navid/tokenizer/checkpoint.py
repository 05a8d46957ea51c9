"""Saving and loading trained tokenizers (EMA weights), and their fingerprint.

A tokenizer file holds ``{"navid_tokenizer": payload}`` where ``payload`` =
``{"format", "navid_version", "model_config" (plain dict), "state_dict"}`` and, for tokenizers
trained since navid recorded it, ``"trained_clip"`` (the :class:`ClipGeometry` of its training clips). Lightning
checkpoints written by ``navid train-tokenizer`` carry the same entry (the EMA weights), so
``load_tokenizer`` reads either a ``.ckpt`` or the exported ``tokenizer.pt``. Everything is
plain tensors and dicts, loaded with ``weights_only=True`` and ``strict=True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from navid import __version__
from navid.config import from_dict, to_dict
from navid.tokenizer.config import ClipGeometry, TokenizerModelConfig
from navid.tokenizer.model import VideoTokenizer
from navid.utils.atomic import torch_save_atomic
from navid.utils.checkpoint_file import load_checkpoint_file

TOKENIZER_FORMAT = "navid-tokenizer/1"


def tokenizer_payload(tokenizer: VideoTokenizer) -> dict:
    """Plain-data description of ``tokenizer`` (config + CPU weights)."""
    payload = {
        "format": TOKENIZER_FORMAT,
        "navid_version": __version__,
        "model_config": to_dict(tokenizer.cfg),
        "state_dict": {k: v.detach().cpu().clone() for k, v in tokenizer.state_dict().items()},
    }
    if tokenizer.trained_clip is not None:
        payload["trained_clip"] = dataclasses.asdict(tokenizer.trained_clip)
    return payload


def save_tokenizer(tokenizer: VideoTokenizer, path: str | os.PathLike) -> Path:
    """Write ``tokenizer`` atomically to ``path`` (readable by :func:`load_tokenizer`)."""
    torch_save_atomic({"navid_tokenizer": tokenizer_payload(tokenizer)}, path)
    return Path(path)


def load_tokenizer(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> VideoTokenizer:
    """The tokenizer (EMA weights, eval mode) stored in a ``train-tokenizer`` checkpoint or ``tokenizer.pt``."""
    path = Path(path)
    data = load_checkpoint_file(path, "tokenizer")
    payload = data.get("navid_tokenizer") if isinstance(data, dict) else None
    if payload is None or payload.get("format") != TOKENIZER_FORMAT:
        raise ValueError(f"{path} is not a navid tokenizer checkpoint (no '{TOKENIZER_FORMAT}' entry)")
    tokenizer = VideoTokenizer(from_dict(TokenizerModelConfig, payload["model_config"]))
    tokenizer.load_state_dict(payload["state_dict"], strict=True)
    if "trained_clip" in payload:
        tokenizer.trained_clip = from_dict(ClipGeometry, payload["trained_clip"])
    return tokenizer.to(map_location).eval()


def tokenizer_fingerprint(tokenizer: VideoTokenizer) -> str:
    """A stable 16-hex-digit hash of the tokenizer's config and weights.

    Token caches record it, so tokens are never decoded by a different tokenizer.
    """
    h = hashlib.sha256(json.dumps(to_dict(tokenizer.cfg), sort_keys=True).encode())
    for name, tensor in sorted(tokenizer.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
