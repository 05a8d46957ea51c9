"""On-disk cache of token grids, so generator training never decodes video.

Layout of a cache folder::

    tokens.npy   (N, T, H, W) uint16 (int32 when the vocabulary exceeds 65,536 codes)
    labels.npy   (N,) int64, 0-based class ids
    meta.json    format, grid, vocab_size, class_names, tokenizer fingerprint, source, navid version

``meta.json`` is written last, so a cache whose writing was interrupted has no metadata
and is refused instead of being read half-written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from navid import __version__
from navid.utils.atomic import atomic_path, write_json_atomic

CACHE_FORMAT = "navid-token-cache/1"


class TokenCacheError(ValueError):
    """A token cache is missing, malformed, or was made by a different tokenizer."""


def write_token_cache(
    out_dir: str | os.PathLike,
    tokens: np.ndarray,
    labels: np.ndarray,
    *,
    vocab_size: int,
    class_names: Sequence[str],
    tokenizer_fingerprint: str,
    source: Optional[dict] = None,
) -> Path:
    """Write ``tokens`` ``(N, T, H, W)`` and ``labels`` ``(N,)`` as a cache folder."""
    out = Path(out_dir)
    if tokens.ndim != 4:
        raise TokenCacheError(f"tokens must be (N, T, H, W), got shape {tokens.shape}")
    if labels.shape != (tokens.shape[0],):
        raise TokenCacheError(f"labels must be ({tokens.shape[0]},), got {labels.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise TokenCacheError(f"token ids must lie in [0, {vocab_size}), got [{tokens.min()}, {tokens.max()}]")
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    out.mkdir(parents=True, exist_ok=True)
    for name, array in (("tokens.npy", tokens.astype(dtype)), ("labels.npy", labels.astype(np.int64))):
        with atomic_path(out / name) as tmp:
            np.save(tmp, array)
    meta = {
        "format": CACHE_FORMAT,
        "num_clips": int(tokens.shape[0]),
        "grid": [int(s) for s in tokens.shape[1:]],
        "vocab_size": int(vocab_size),
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "tokenizer_fingerprint": tokenizer_fingerprint,
        "navid_version": __version__,
        "source": source or {},
    }
    write_json_atomic(out / "meta.json", meta)
    return out


class TokenCache(Dataset):
    """Memory-mapped token grids: item ``i`` is ``(tokens (T, H, W) int64, label int64)``.

    ``expected_fingerprint``, when given, must equal the fingerprint of the tokenizer that
    made the cache: tokens of one tokenizer mean nothing to another's decoder.
    """

    def __init__(self, root: str | os.PathLike, expected_fingerprint: Optional[str] = None) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise TokenCacheError(f"{self.root} is not a token cache (no meta.json); make one with `navid tokenize`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise TokenCacheError(f"{meta_path}: format {meta.get('format')!r}, expected {CACHE_FORMAT!r}")
        if expected_fingerprint is not None and meta["tokenizer_fingerprint"] != expected_fingerprint:
            raise TokenCacheError(
                f"{meta_path}: made by tokenizer {meta['tokenizer_fingerprint']}, "
                f"but this run uses tokenizer {expected_fingerprint}; re-run `navid tokenize` with it"
            )
        self.meta = meta
        self.tokens = np.load(self.root / "tokens.npy", mmap_mode="r")
        self.labels = np.load(self.root / "labels.npy")
        if self.tokens.shape[0] != meta["num_clips"] or list(self.tokens.shape[1:]) != meta["grid"]:
            raise TokenCacheError(f"{self.root}/tokens.npy has shape {self.tokens.shape}, meta.json says {meta['num_clips']} x {meta['grid']}")

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(self.meta["grid"])

    @property
    def vocab_size(self) -> int:
        return self.meta["vocab_size"]

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    @property
    def num_classes(self) -> int:
        return self.meta["num_classes"]

    @property
    def fingerprint(self) -> str:
        return self.meta["tokenizer_fingerprint"]

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.from_numpy(self.tokens[index].astype(np.int64))
        return tokens, torch.tensor(self.labels[index], dtype=torch.int64)


class TokenCacheDataModule(L.LightningDataModule):
    """Train/val loaders over a token cache; the split is a seeded permutation of the clips."""

    def __init__(
        self,
        root: str | os.PathLike,
        batch_size: int,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        seed: int = 0,
        expected_fingerprint: Optional[str] = None,
    ) -> None:
        super().__init__()
        self.cache = TokenCache(root, expected_fingerprint)
        self.batch_size = batch_size
        self.num_workers = num_workers
        order = np.random.default_rng(seed).permutation(len(self.cache))
        num_val = int(round(val_fraction * len(self.cache)))
        self.train_set = Subset(self.cache, order[num_val:].tolist())
        self.val_set = Subset(self.cache, order[:num_val].tolist())

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
