"""On-disk cache of token grids, so generator training never decodes video.

Layout of a cache folder::

    tokens.npy   (N, T, H, W) uint16 (int32 when the vocabulary exceeds 65,536 codes)
    labels.npy   (N,) int64, 0-based class ids
    groups.npy   (N,) int64, optional: rows of one group (clips of one UCF-101 group of videos, with their
                 mirror images) stay on one side of the generator's train/val split
    meta.json    format, grid, vocab_size, class_names, tokenizer fingerprint, source, navid version

``meta.json`` is written last, so a cache whose writing was interrupted has no metadata
and is refused instead of being read half-written.

``navid tokenize`` fills a cache shard by shard (:class:`TokenCacheShards`): ``shards/plan.json``
fixes what is being encoded and how the clips are cut into shards, each ``shards/shard_NNNNNN.npz``
appears whole (atomic rename) or not at all, and a rerun encodes only the missing shards. When
every shard is there they are joined, in shard order, into the three files above and removed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from navid import __version__
from navid.data.resumable_order import training_loader
from navid.utils.atomic import atomic_path, write_json_atomic
from navid.utils.checkpoint_file import load_array_file

CACHE_FORMAT = "navid-token-cache/1"
SHARDS_FORMAT = "navid-token-shards/1"
PLAN = "token-shard plan (pass --overwrite to start the cache again)"  # what shards/plan.json is, in errors
RETOKENIZE = "make the cache again with `navid tokenize`"


class TokenCacheError(ValueError):
    """A token cache is missing, malformed, or was made by a different tokenizer."""


# What meta.json must hold for a cache to be read (write_token_cache writes these and the navid version).
META_KEYS = ("format", "num_clips", "grid", "vocab_size", "num_classes", "class_names", "tokenizer_fingerprint",
             "source")


def read_json_file(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or :class:`TokenCacheError` naming the file (``what`` says what it should be)."""
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TokenCacheError(f"{path}: not a readable {what} ({err})") from None
    if not isinstance(value, dict):
        raise TokenCacheError(f"{path}: not a readable {what} (expected a JSON object)")
    return value




def write_token_cache(
    out_dir: str | os.PathLike,
    tokens: np.ndarray,
    labels: np.ndarray,
    *,
    vocab_size: int,
    class_names: Sequence[str],
    tokenizer_fingerprint: str,
    source: Optional[dict] = None,
    groups: Optional[np.ndarray] = None,
) -> Path:
    """Write ``tokens`` ``(N, T, H, W)``, ``labels`` ``(N,)`` and optionally ``groups`` ``(N,)`` as a cache folder."""
    out = Path(out_dir)
    if tokens.ndim != 4:
        raise TokenCacheError(f"tokens must be (N, T, H, W), got shape {tokens.shape}")
    if labels.shape != (tokens.shape[0],):
        raise TokenCacheError(f"labels must be ({tokens.shape[0]},), got {labels.shape}")
    if groups is not None and groups.shape != (tokens.shape[0],):
        raise TokenCacheError(f"groups must be ({tokens.shape[0]},), got {groups.shape}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise TokenCacheError(f"token ids must lie in [0, {vocab_size}), got [{tokens.min()}, {tokens.max()}]")
    dtype = np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
    out.mkdir(parents=True, exist_ok=True)
    arrays = {"tokens.npy": tokens.astype(dtype), "labels.npy": labels.astype(np.int64)}
    if groups is not None:
        arrays["groups.npy"] = groups.astype(np.int64)
    for name, array in arrays.items():
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


def _cache_array(path: Path, what: str, mmap: bool = False):
    """One array of a finished cache, or :class:`TokenCacheError` naming it."""
    return load_array_file(path, what, RETOKENIZE, mmap=mmap, error=TokenCacheError)


class TokenCacheShards:
    """An unfinished token cache: ``num_items`` clips cut into shards of ``shard_size`` consecutive clips.

    The shard layout depends only on the plan, never on how many ranks write it, so caches made
    by one rank, by many, or over several interrupted runs are identical. ``plan`` holds the job's
    settings (data, split, tokenizer fingerprint, ...); a rerun with different settings is refused.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out = Path(out_dir)
        self.dir = self.out / "shards"
        plan_path = self.dir / "plan.json"
        if not plan_path.is_file():
            raise TokenCacheError(f"{self.out} holds no unfinished token cache (no {plan_path})")
        self.plan = read_json_file(plan_path, PLAN)
        if self.plan.get("format") != SHARDS_FORMAT:
            raise TokenCacheError(f"{plan_path}: format {self.plan.get('format')!r}, expected {SHARDS_FORMAT!r}")
        self.num_items, self.shard_size = self.plan["num_items"], self.plan["shard_size"]

    @classmethod
    def prepare(
        cls, out_dir: str | os.PathLike, job: dict, num_items: int, shard_size: int, overwrite: bool
    ) -> "TokenCacheShards":
        """Start a new job in ``out_dir``, or reopen the unfinished one with the same ``job`` settings.

        A finished cache (``meta.json``), another job's shards or other files are refused unless
        ``overwrite``, which starts again from no shards (and drops the finished cache's marker).
        """
        out = Path(out_dir)
        if shard_size < 1:
            raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
        plan = {"format": SHARDS_FORMAT, "num_items": num_items, "shard_size": shard_size, "job": job}
        shard_dir = out / "shards"
        if overwrite:
            if shard_dir.is_dir():
                shutil.rmtree(shard_dir)
            (out / "meta.json").unlink(missing_ok=True)
        elif (out / "meta.json").is_file():
            raise FileExistsError(f"--out {out} already holds a finished token cache; pass --overwrite to replace it")
        elif (shard_dir / "plan.json").is_file():
            old = read_json_file(shard_dir / "plan.json", PLAN)
            if old != plan:
                changed = sorted(k for k in {**old.get("job", {}), **job} if old.get("job", {}).get(k) != job.get(k))
                changed += [k for k in ("num_items", "shard_size") if old.get(k) != plan[k]]
                raise FileExistsError(
                    f"--out {out} holds an unfinished token cache made with other settings ({', '.join(changed)}); "
                    "rerun with the same settings to continue it, or pass --overwrite to start again"
                )
            return cls(out)
        elif out.is_dir() and any(out.iterdir()):
            raise FileExistsError(f"--out {out} exists and is not empty; pass --overwrite to write into it")
        write_json_atomic(shard_dir / "plan.json", plan)
        return cls(out)

    @property
    def num_shards(self) -> int:
        return -(-self.num_items // self.shard_size)

    def items(self, shard: int) -> range:
        """The clip indices shard ``shard`` holds."""
        return range(shard * self.shard_size, min(self.num_items, (shard + 1) * self.shard_size))

    def path(self, shard: int) -> Path:
        return self.dir / f"shard_{shard:06d}.npz"

    def missing(self) -> list[int]:
        """Shards not yet written, in order."""
        return [s for s in range(self.num_shards) if not self.path(s).is_file()]

    def write(self, shard: int, tokens: np.ndarray, labels: np.ndarray) -> None:
        """Store one shard's token grids ``(N, T, H, W)`` (as int32) and labels ``(N,)`` atomically."""
        with atomic_path(self.path(shard)) as tmp:
            np.savez(tmp, tokens=tokens.astype(np.int32), labels=labels.astype(np.int64))

    def finish(self, **meta) -> Path:
        """Join every shard, in order, into the cache files (:func:`write_token_cache` ``meta`` and ``groups``);
        remove the shards."""
        missing = self.missing()
        if missing:
            first = self.path(missing[0])
            raise TokenCacheError(f"{self.out}: {len(missing)} of {self.num_shards} shards missing (first: {first})")
        tokens, labels = [], []
        for s in range(self.num_shards):
            remedy = "remove it and rerun the same command to encode it again"
            with load_array_file(self.path(s), "token shard", remedy, error=TokenCacheError) as shard:
                if set(shard.files) != {"tokens", "labels"}:
                    held = sorted(shard.files)
                    raise TokenCacheError(f"{self.path(s)}: not a token shard (it holds {held}); {remedy}")
                tokens.append(shard["tokens"])
                labels.append(shard["labels"])
        out = write_token_cache(self.out, np.concatenate(tokens), np.concatenate(labels), **meta)
        shutil.rmtree(self.dir)
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
        meta = read_json_file(meta_path, "token cache's meta.json")
        if meta.get("format") != CACHE_FORMAT:
            raise TokenCacheError(f"{meta_path}: format {meta.get('format')!r}, expected {CACHE_FORMAT!r}")
        missing = [key for key in META_KEYS if key not in meta]
        if missing:
            raise TokenCacheError(f"{meta_path}: no {', '.join(missing)}; {RETOKENIZE}")
        if expected_fingerprint is not None and meta["tokenizer_fingerprint"] != expected_fingerprint:
            raise TokenCacheError(
                f"{meta_path}: made by tokenizer {meta['tokenizer_fingerprint']}, "
                f"but this run uses tokenizer {expected_fingerprint}; re-run `navid tokenize` with it"
            )
        self.meta = meta
        self.tokens = _cache_array(self.root / "tokens.npy", "token array", mmap=True)
        self.labels = _cache_array(self.root / "labels.npy", "label array")
        if self.tokens.shape[0] != meta["num_clips"] or list(self.tokens.shape[1:]) != meta["grid"]:
            raise TokenCacheError(f"{self.root}/tokens.npy has shape {self.tokens.shape}, "
                                  f"meta.json says {meta['num_clips']} x {meta['grid']}")
        if self.labels.shape != (meta["num_clips"],):
            raise TokenCacheError(f"{self.root}/labels.npy has shape {self.labels.shape}, "
                                  f"meta.json says {meta['num_clips']} clips")
        groups = self.root / "groups.npy"
        self.groups: Optional[np.ndarray] = (  # (N,) int64
            _cache_array(groups, "group array") if groups.is_file() else None)
        if self.groups is not None and self.groups.shape != (meta["num_clips"],):
            raise TokenCacheError(f"{groups} has shape {self.groups.shape}, meta.json says {meta['num_clips']} clips")

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


def split_rows(cache: TokenCache, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train rows, val rows): whole groups, in a seeded order, go to val until it holds ``val_fraction`` of the rows.

    Groups are ``groups.npy`` where the cache has it; in caches written before it, the K clips of a
    video and their mirrors (``source``: ``clips_per_video``, ``hflip``); otherwise each row alone.
    Splitting rows alone would put the mirror image or another clip of nearly every val clip in train.
    """
    n = len(cache)
    if cache.groups is not None:
        groups = cache.groups
    elif "clips_per_video" in cache.meta["source"]:
        source = cache.meta["source"]
        groups = np.arange(n) // (source["clips_per_video"] * (2 if source.get("hflip") else 1))
    else:
        groups = np.arange(n)
    names, group_of_row = np.unique(groups, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(names))  # groups in the order they go to val
    sizes = np.bincount(group_of_row, minlength=len(names))[order]
    target = round(val_fraction * n)
    num_val_groups = int(np.searchsorted(np.cumsum(sizes), target)) + 1 if target else 0  # the first to reach it
    is_val = np.isin(group_of_row, order[:num_val_groups])
    return np.flatnonzero(~is_val).tolist(), np.flatnonzero(is_val).tolist()


class TokenCacheDataModule(L.LightningDataModule):
    """Train/val loaders over a token cache, split by groups of related clips (:func:`split_rows`)."""

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
        self.seed = seed  # of the validation split and the training order (:mod:`navid.data.resumable_order`)
        train_rows, val_rows = split_rows(self.cache, val_fraction, seed)
        self.train_set = Subset(self.cache, train_rows)
        self.val_set = Subset(self.cache, val_rows)

    def train_dataloader(self) -> DataLoader:
        return training_loader(self.train_set, self.batch_size, self.num_workers, self.seed, self.trainer)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)
