"""Generating decoded clips from a trained generator, and the papers' FVD protocol over them.

Shared by ``navid sample`` (a few clips, written to files), ``navid evaluate`` (thousands,
reduced to I3D features batch by batch, never all held as video) and ``navid demo``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from navid.generation.sampler import SamplingConfig, sample
from navid.metrics.fvd import low_rank_frechet
from navid.generation.schedule import Schedule
from navid.generation.transformer import Transformer
from navid.utils.distributed import from_rank0, rank_world


@dataclass
class GeneratedBatch:
    labels: torch.Tensor  # (B,) int64
    tokens: torch.Tensor  # (B, T', H', W') int64
    video: torch.Tensor  # (B, C, T, H, W) float in [-1, 1]
    steps: int  # forward steps of the sampler
    seconds: float  # sampling time (decoding excluded)
    compile_seconds: float = 0.0  # SamplingConfig.compile: compiling the step before sampling (not in ``seconds``)


def check_tokenizer(meta: dict, tokenizer_fingerprint: str, tokenizer_path: str) -> None:
    """Refuse to decode tokens with a tokenizer other than the one the generator was trained on."""
    if meta["tokenizer_fingerprint"] != tokenizer_fingerprint:
        raise ValueError(
            f"tokenizer {tokenizer_path} has fingerprint {tokenizer_fingerprint}, but the generator was trained on "
            f"tokens of tokenizer {meta['tokenizer_fingerprint']}; pass the tokenizer used to make its token cache"
        )


def generate_batches(
    model: Transformer,
    schedule: Schedule,
    tokenizer: torch.nn.Module,
    labels: torch.Tensor,
    sampling: SamplingConfig,
    batch_size: int,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    keep_cache: bool = False,
) -> Iterator[GeneratedBatch]:
    """Sample and decode ``labels`` (N,) in batches of ``batch_size``, in order.

    One ``torch.Generator`` (seeded with ``sampling.seed`` unless given) runs through all
    batches, so the same seed and batch size give the same clips. The batches share one KV cache
    (see :func:`~navid.generation.sampler.sample`), freed after the last one unless ``keep_cache``
    (the caller runs more batches and frees it with ``model.release_cache()``).
    """
    if generator is None:
        generator = torch.Generator(device=labels.device).manual_seed(sampling.seed)
    try:
        for start in range(0, labels.shape[0], batch_size):
            batch = labels[start : start + batch_size]
            result = sample(model, schedule, batch, sampling, generator=generator, progress=progress, keep_cache=True)
            video = tokenizer.decode(result.tokens)  # (B, C, T, H, W)
            yield GeneratedBatch(batch, result.tokens, video, result.steps, result.seconds, result.compile_seconds)
    finally:
        if not keep_cache:
            model.release_cache()


def resolve_classes(spec: Optional[str], all_classes: bool, class_names: Sequence[str]) -> list[int]:
    """Class ids from ``--classes`` (comma-separated ids and/or names) or ``--all-classes``.

    A class named twice (by id and by name, say) is an error: its clips would be written to the same files.
    """
    if all_classes or spec is None:
        return list(range(len(class_names)))
    by_name = {name.lower(): i for i, name in enumerate(class_names)}
    ids = []
    for item in (s.strip() for s in spec.split(",")):
        if item.isdigit() and int(item) < len(class_names):
            ids.append(int(item))
        elif item.lower() in by_name:
            ids.append(by_name[item.lower()])
        else:
            valid = ", ".join(f"{i}={name}" for i, name in enumerate(class_names))
            raise ValueError(f"unknown class '{item}'; valid classes (id=name): {valid}")
        if ids[-1] in ids[:-1]:
            raise ValueError(f"--classes names class {ids[-1]}={class_names[ids[-1]]} twice ('{item}')")
    return ids


# --------------------------------------------------------------------------- FVD protocol
def batch_seed(seed: int, batch: int) -> int:
    """Seed of the generator that samples global batch ``batch``: a function of (seed, batch) only."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1)[0])


def rank_batches(total: int, batch_size: int) -> list[range]:
    """This rank's share of ``total`` items in fixed batches: global batch ``k`` goes to rank ``k % world``.

    The batches (and so every batched computation) are the same for any number of ranks.
    """
    rank, world = rank_world()
    num_batches = -(-total // batch_size)
    return [range(k * batch_size, min((k + 1) * batch_size, total)) for k in range(rank, num_batches, world)]


def per_class_fvd(gen_features: np.ndarray, gen_labels: np.ndarray, real_features: np.ndarray,
                  real_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) matrix: entry (i, j) = FVD of generated class i against real class j (NaN if < 2 clips)."""
    matrix = np.full((num_classes, num_classes), np.nan)
    groups_gen = [gen_features[gen_labels == c] for c in range(num_classes)]
    groups_real = [real_features[real_labels == c] for c in range(num_classes)]
    for i, gi in enumerate(groups_gen):
        for j, rj in enumerate(groups_real):
            if len(gi) >= 2 and len(rj) >= 2:
                matrix[i, j] = low_rank_frechet(gi, rj)
    return matrix


def i3d_features(device: torch.device) -> tuple[Callable[[torch.Tensor], np.ndarray], dict]:
    """The protocol's feature function (video (B, C, T, H, W) in [-1, 1] -> (B, 400) float64) and its provenance."""
    from navid.metrics.fvd import RESIZE_METHOD, extract_features
    from navid.metrics.i3d import load_i3d

    detector = load_i3d(device=device)
    provenance = {"detector": "TF-Hub Kinetics-400 I3D logits", "detector_sha256": detector.weights_sha256,
                  "resize": RESIZE_METHOD}
    return (lambda video: extract_features(detector, video).numpy()), provenance


def _gather_batches(mine: list[np.ndarray]) -> np.ndarray:
    """Every rank's per-batch rows (its batches of :func:`rank_batches`, in order) → all rows in global order."""
    rank, world = rank_world()
    if world == 1:
        return np.concatenate(mine)
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, mine)
    total_batches = sum(len(p) for p in parts)
    return np.concatenate([parts[k % world][k // world] for k in range(total_batches)])


def _real_features(real, indices: np.ndarray, features: Callable, batch_size: int, num_workers: int,
                   progress: bool) -> np.ndarray:
    """Features (len(indices), D) of the real clips ``indices``; each rank decodes its :func:`rank_batches`."""
    from torch.utils.data import DataLoader

    batches = [indices[b].tolist() for b in rank_batches(len(indices), batch_size)]
    loader = DataLoader(real, batch_sampler=batches, num_workers=num_workers)
    bar = tqdm(loader, desc="real clips", disable=not progress or rank_world()[0] != 0)
    out = [features(video) for video, _ in bar]
    return _gather_batches(out)


def evaluate_generator(
    model: Transformer,
    schedule: Schedule,
    tokenizer: torch.nn.Module,
    real,
    sampling: SamplingConfig,
    batch_size: int,
    features: Callable[[torch.Tensor], np.ndarray],
    stats_cache: Optional[Path] = None,
    cache_key: Optional[dict] = None,
    num_workers: int = 0,
    progress: bool = True,
) -> dict:
    """The papers' protocol: one generated clip per real clip of ``real`` (a dataset of
    ``(video, label)``, e.g. :class:`~navid.metrics.real_chunks.ChunkClips`), clip ``i`` with the
    label of real clip ``i``; FVD and KVD between the two feature sets, and the per-class FVD matrix.

    ``features`` maps a video batch (B, C, T, H, W) in [-1, 1] to I3D features (B, D) float64;
    generated clips are rounded to uint8 first, as the real ones are. Clips are generated in
    global batches of ``batch_size``; batch ``k`` is sampled with a generator seeded from
    ``(sampling.seed, k)`` by rank ``k % world``, so any number of ranks gives the same clips
    and the same scores. Real features are cached in ``stats_cache`` under a hash of ``cache_key``.
    """
    from navid.metrics.fvd import quantize_uint8

    rank, world = rank_world()
    device = next(model.parameters()).device
    num = len(real)
    real_feats = reference_features(
        real, np.arange(num), features, batch_size, stats_cache, cache_key, num_workers, progress
    )
    real_labels = np.asarray(real.labels)  # generated clip i takes real clip i's label
    labels = torch.as_tensor(real_labels, device=device)

    gen_parts, seconds, compile_seconds, steps = [], 0.0, 0.0, schedule.num_steps
    mine = rank_batches(num, batch_size)
    try:
        for rows in tqdm(mine, desc="generated clips", disable=not progress or rank != 0):
            generator = torch.Generator(device=device).manual_seed(batch_seed(sampling.seed, rows.start // batch_size))
            batch_labels = labels[rows.start : rows.stop]  # (B,)
            (batch,) = generate_batches(model, schedule, tokenizer, batch_labels, sampling, batch_size, generator,
                                        keep_cache=True)
            gen_parts.append(features(quantize_uint8(batch.video)))
            seconds += batch.seconds
            compile_seconds += batch.compile_seconds
    finally:
        model.release_cache()
    gen_feats = _gather_batches(gen_parts)

    report = score_features(gen_feats, real_labels, real_feats, real_labels, list(real.class_names))
    report.update({
        "num_generated": int(len(gen_feats)),
        "num_real": int(len(real_feats)),
        "forward_steps_per_batch": steps,
        "sampling_seconds_rank0": seconds,
        "compile_seconds_rank0": compile_seconds,  # --compile: before sampling, not in its seconds
        "world_size": world,
    })
    return report


def reference_features(
    real,
    indices: np.ndarray,
    features: Callable[[torch.Tensor], np.ndarray],
    batch_size: int,
    stats_cache: Optional[Path] = None,
    cache_key: Optional[dict] = None,
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Features (len(indices), D) of the real clips ``indices`` of ``real``.

    Features are cached in ``stats_cache`` as ``real-<protocol>-<hash of cache_key>.npz``; the key
    names the real clips (protocol, data, chunks) and the feature extractor, never the model or the
    ranks, so several models, runs and ranks are scored against the same real clips for one pass.
    A cached file whose stored key differs is an error, not a silent reuse.
    """
    from navid.metrics.fvd import FeatureStats

    cache_file = None
    if stats_cache is not None:
        digest = hashlib.sha256(json.dumps(cache_key, sort_keys=True).encode()).hexdigest()[:16]
        cache_file = Path(stats_cache) / f"real-{(cache_key or {}).get('protocol', 'features')}-{digest}.npz"

    def read_cache() -> Optional[np.ndarray]:
        """The cached features, or None, as rank 0 sees the file."""
        if cache_file is None or not cache_file.is_file():
            return None
        try:
            cached = FeatureStats.load(cache_file)
        except ValueError as err:
            raise ValueError(f"{err}; remove it and the real features are computed again") from None
        if cached.provenance != cache_key or cached.features is None or len(cached.features) != len(indices):
            raise ValueError(f"{cache_file}: cached real features were made for other clips; remove the file")
        return cached.features

    # Rank 0 decides for all: ranks that judged the file on their own (a network file system's stale view, a
    # writer finishing in between) would disagree on running the collectives of _real_features, and hang.
    cached = from_rank0(read_cache)
    if cached is not None:
        return cached
    real_feats = _real_features(real, indices, features, batch_size, num_workers, progress)
    if cache_file is not None and rank_world()[0] == 0:
        FeatureStats.from_features(real_feats, provenance=cache_key).save(cache_file)
    return real_feats


def balanced_real_clips(labels: Sequence[int], per_class: int, seed: int,
                        exclude: Sequence[int] = ()) -> np.ndarray:
    """``per_class`` clip indices of every class, none of them in ``exclude`` (with replacement only where a class
    has fewer).

    Small studies (the demo, the quality benchmark) use it so that every class has enough
    clips for its row and column of the per-class FVD matrix; ``exclude`` keeps a second set
    (the tokenizer's reconstructions of *other* real clips) apart from the first.
    """
    labels = np.asarray(labels)
    allowed = np.ones(len(labels), dtype=bool)
    allowed[np.asarray(exclude, dtype=np.int64)] = False
    rng = np.random.default_rng(seed)
    pools = [np.flatnonzero((labels == c) & allowed) for c in np.unique(labels)]
    return np.concatenate([rng.choice(pool, size=per_class, replace=per_class > len(pool)) for pool in pools])


def score_features(gen_feats: np.ndarray, gen_labels: np.ndarray, real_feats: np.ndarray, real_labels: np.ndarray,
                   class_names: Sequence[str]) -> dict:
    """FVD and KVD of generated vs real features, and the per-class FVD matrix (generated i vs real j)."""
    from navid.metrics.fvd import fvd_from_features, kvd_from_features

    matrix = per_class_fvd(gen_feats, gen_labels, real_feats, real_labels, len(class_names))
    return {
        "fvd": fvd_from_features(gen_feats, real_feats),
        "kvd": kvd_from_features(gen_feats, real_feats),
        "per_class_fvd": {
            "class_names": list(class_names),
            "matrix": [[None if np.isnan(v) else float(v) for v in row] for row in matrix],
            "own_class_nearest": own_class_share(matrix),
            "rated_classes": len(rated_classes(matrix)),
        },
    }


def rated_classes(matrix: np.ndarray) -> list[int]:
    """The generated classes the per-class matrix can judge: rows with any finite FVD."""
    return [i for i in range(len(matrix)) if np.isfinite(matrix[i]).any()]


def own_class_share(matrix: np.ndarray) -> Optional[float]:
    """Share of generated classes (:func:`rated_classes`) whose nearest real class (lowest FVD) is their own."""
    rated = rated_classes(matrix)
    return float(np.mean([np.nanargmin(matrix[i]) == i for i in rated])) if rated else None
