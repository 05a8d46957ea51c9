"""``navid train-tokenizer``, ``navid reconstruct`` (quality report) and ``navid tokenize`` (token cache)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from navid.cli import DEFAULT_NUM_WORKERS, add_training_run_arguments, non_negative_int, positive_float, positive_int

RECONSTRUCT_OUTPUTS = ("recon_*.gif",)  # what --overwrite replaces in --out

if TYPE_CHECKING:
    from navid.tokenizer.config import ClipGeometry


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train-tokenizer", help="train the 3D video tokenizer")
    add_training_run_arguments(train, outputs="reconstructions/ (previews), tokenizer.pt")
    train.add_argument("--max-time", type=positive_float, default=None,
                       help="stop after this many minutes (= trainer.max_time_minutes)")
    train.set_defaults(func=run_train)

    rec = subparsers.add_parser("reconstruct", help="PSNR/SSIM/codebook usage of a tokenizer on held-out clips")
    _add_data_arguments(rec, default_split="test")
    rec.add_argument("--num", "--num-clips", dest="num", type=positive_int, default=None,
                     help="number of clips (default: all), drawn with --seed from the whole split; under torchrun "
                          "spell it --num-clips (torchrun reads --num)")
    rec.add_argument("--out", default=None, help="folder for side-by-side videos (original | reconstruction)")
    rec.add_argument("--num-videos", type=non_negative_int, default=4, help="how many side-by-side videos to write")
    rec.add_argument("--fvd", action="store_true", help="also compute rFVD (needs navid.metrics.fvd)")
    rec.add_argument("--json", default=None, help="write the report to this JSON file")
    rec.add_argument("--overwrite", action="store_true",
                     help="replace an existing --json / write into a non-empty --out, replacing its recon_*.gif")
    rec.set_defaults(func=run_reconstruct)

    tok = subparsers.add_parser("tokenize", help="encode a dataset split into a token cache")
    _add_data_arguments(tok, default_split="train")
    tok.add_argument("--out", required=True, help="token cache folder")
    tok.add_argument("--clips-per-video", type=positive_int, default=1, help="K evenly spaced clips per video")
    tok.add_argument("--hflip", action="store_true", help="also cache every clip mirrored left-right (2x the grids)")
    tok.add_argument("--shard-size", type=positive_int, default=512,
                     help="clips per shard: a killed run loses at most one shard per rank, a rerun continues")
    tok.add_argument("--max-shards", type=positive_int, default=None,
                     help="write at most this many shards in this run (split a long job over several sessions)")
    tok.add_argument("--overwrite", action="store_true",
                     help="start again in a non-empty --out (replaces a finished cache, drops unfinished shards)")
    tok.set_defaults(func=run_tokenize)


def _add_data_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    parser.add_argument("--tokenizer", required=True, help="tokenizer checkpoint (tokenizer.pt or a .ckpt)")
    parser.add_argument("--data", required=True, help="dataset root in the UCF-101 layout")
    parser.add_argument("--split", default=default_split, choices=("train", "test"))
    parser.add_argument("--fold", type=int, default=1, choices=(1, 2, 3))
    trained = "default: as the tokenizer was trained (its file records it)"
    parser.add_argument("--num-frames", type=positive_int, default=None, help=f"frames per clip ({trained})")
    parser.add_argument("--resolution", type=positive_int, default=None, help=f"frame size in pixels ({trained})")
    parser.add_argument("--frame-stride", type=positive_int, default=None,
                        help=f"source frames per clip frame ({trained})")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="clips encoded together (per rank)")
    parser.add_argument("--num-workers", type=non_negative_int, default=DEFAULT_NUM_WORKERS,
                        help="DataLoader processes decoding video (0: none; default: 4, at most the CPU count)")
    parser.add_argument("--device", default="auto",
                        help="auto (cuda when present, else cpu), cpu, cuda or cuda:N; "
                             "under torchrun each rank takes cuda:LOCAL_RANK")
    parser.add_argument("--seed", type=int, default=0)


def run_train(args: argparse.Namespace) -> int:
    from navid.config import load_config, to_dict
    from navid.tokenizer.config import TokenizerTrainConfig
    from navid.tokenizer.lightning_module import train_tokenizer
    from navid.utils.training import check_resume_settings, prepare_run_dir

    overrides = list(args.overrides)
    if args.max_time is not None:
        overrides.append(f"trainer.max_time_minutes={args.max_time}")
    cfg = load_config(TokenizerTrainConfig, args.config, overrides)
    out = Path(cfg.out_dir)
    if args.resume and not out.is_dir():
        raise FileNotFoundError(f"--resume: out_dir {out} does not exist")
    if args.resume:
        check_resume_settings(out, to_dict(cfg), stored_at=("config",))
    if not args.resume:
        prepare_run_dir(out, args.overwrite)
    path = train_tokenizer(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"tokenizer (EMA weights) written to {path}")
    return 0


def clip_geometry(args: argparse.Namespace, tokenizer) -> "ClipGeometry":
    """``--num-frames`` / ``--resolution`` / ``--frame-stride``, each defaulting to the tokenizer's training clips.

    A value that differs from the training clips is used (the tokenizer is convolutional) with a note on
    stderr, since it changes the token grid; a tokenizer file without the record needs all three given.
    """
    import sys

    from navid.tokenizer.config import ClipGeometry

    given = {key: getattr(args, key) for key in ("num_frames", "resolution", "frame_stride")}
    if tokenizer.trained_clip is None:
        if None in given.values():
            raise ValueError(f"--tokenizer {args.tokenizer} does not record the clips it was trained on (written "
                             "before navid recorded them): pass --num-frames, --resolution and --frame-stride "
                             "as in its training config")
        return ClipGeometry(**given)
    trained = asdict(tokenizer.trained_clip)
    for key, value in given.items():
        if value is not None and value != trained[key]:
            print(f"note: --{key.replace('_', '-')} {value} differs from the tokenizer's training clips "
                  f"({trained[key]}); the token grid changes with it", file=sys.stderr)
    return ClipGeometry(**{key: trained[key] if value is None else value for key, value in given.items()})


def _clips(args: argparse.Namespace, clip: "ClipGeometry"):
    """The requested split, clips centred in each video (no random crops or flips)."""
    from navid.data.ucf101 import UCF101Clips

    return UCF101Clips(
        args.data, split=args.split, fold=args.fold, num_frames=clip.num_frames, frame_stride=clip.frame_stride,
        resolution=clip.resolution, train=False,
    )


def _clip_at(ds, i: int, start: int):
    """Clip of video ``i`` starting at source frame ``start``, (C, T, H, W) in [-1, 1]."""
    import torch

    from navid.data.ucf101 import resize_crop
    from navid.data.video_io import frames_to_tensor, read_video

    idx = np.minimum(start + np.arange(ds.num_frames) * ds.frame_stride, ds.frame_counts[i] - 1)
    video = torch.from_numpy(read_video(ds.clips[i], idx, ds.backend)).permute(0, 3, 1, 2).float()
    video = resize_crop(video, ds.resolution).clamp(0, 255).round().to(torch.uint8)
    return frames_to_tensor(video.permute(0, 2, 3, 1))


def run_reconstruct(args: argparse.Namespace) -> int:
    """Under torchrun rank r reconstructs clips r, r + world, ...; the metrics are summed over ranks."""
    from navid.utils.atomic import refuse_existing_file
    from navid.utils.distributed import distributed_run

    refuse_existing_file(args.json, args.overwrite)
    with distributed_run(args.device) as ctx:
        return _reconstruct(args, ctx)


def _reconstruct(args: argparse.Namespace, ctx) -> int:
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, Subset
    from torchmetrics.image import StructuralSimilarityIndexMeasure
    from tqdm import tqdm

    from navid.data.video_io import DEFAULT_FPS, tensor_to_frames, write_video
    from navid.metrics.fvd import quantize_uint8
    from navid.tokenizer.checkpoint import load_tokenizer, tokenizer_fingerprint
    from navid.tokenizer.losses import code_counts, psnr
    from navid.utils.atomic import prepare_output_dir, remove_earlier_outputs, write_json_atomic

    if args.out:  # checked before any rank writes into it; a refusal stops every rank with its one line
        ctx.on_main(lambda: prepare_output_dir(args.out, args.overwrite))
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.tokenizer, map_location=ctx.device)
    geometry = clip_geometry(args, tokenizer)
    ds = _clips(args, geometry)
    chosen = _reconstruct_clips(len(ds), args.num, args.seed)
    fps = ds.clip_fps or DEFAULT_FPS
    n = len(chosen)
    if args.out:  # the inputs have loaded: replace the earlier run's videos before any rank writes one
        ctx.on_main(lambda: remove_earlier_outputs(Path(args.out), RECONSTRUCT_OUTPUTS))
    if ctx.is_main and args.num is not None and args.num > n:
        print(f"note: --num {args.num}: the {args.split} split has {n} clips; reconstructing all {n}")
    mine = list(range(ctx.rank, n, ctx.world_size))  # positions in ``chosen``
    loader = DataLoader(Subset(ds, [chosen[p] for p in mine]), batch_size=args.batch_size,
                        num_workers=args.num_workers, pin_memory=ctx.device.type == "cuda")
    fvd = _fvd_metric(ctx.device) if args.fvd else None
    ssim = StructuralSimilarityIndexMeasure(data_range=2.0).to(ctx.device)
    psnr_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)  # summed on the device: no host sync per batch
    counts = torch.zeros(tokenizer.vocab_size, dtype=torch.int64, device=ctx.device)
    seen = 0
    for video, _ in tqdm(loader, desc="reconstructing", unit="batch", disable=not ctx.is_main):
        video = video.to(ctx.device, non_blocking=True)  # (B, C, T, H, W)
        tokens = tokenizer.encode(video)  # (B, T', H', W')
        recon = tokenizer.decode(tokens)  # (B, C, T, H, W)
        psnr_sum += psnr(recon, video).double().sum()
        counts += code_counts(tokens, tokenizer.vocab_size)
        ssim.update(recon.transpose(1, 2).flatten(0, 1), video.transpose(1, 2).flatten(0, 1))  # frames as images
        if fvd is not None:
            fvd.update(video, real=True)
            fvd.update(quantize_uint8(recon), real=False)  # as evaluate rounds generated clips: videos are uint8
        for b, position in enumerate(mine[seen : seen + len(video)]):
            if args.out and position < args.num_videos:
                side = torch.cat([video[b], recon[b]], dim=-1).cpu()  # (C, T, H, 2W): original | reconstruction
                write_video(Path(args.out) / f"recon_{position:03d}.gif", tensor_to_frames(side), fps=fps)
        seen += len(video)
    if ctx.is_distributed:
        dist.all_reduce(psnr_sum)
        dist.all_reduce(counts)
    ssim_value, rfvd = float(ssim.compute()), (float(fvd.compute()) if fvd is not None else None)  # both sum over ranks
    counts = counts.cpu()
    if not ctx.is_main:
        return 0
    report = {
        "tokenizer": str(args.tokenizer),
        "fingerprint": tokenizer_fingerprint(tokenizer),
        "data": str(args.data),
        "split": args.split,
        **asdict(geometry),
        "num_clips": n,
        "clips": [f"{Path(ds.clips[i]).parent.name}/{Path(ds.clips[i]).name}" for i in chosen],
        "psnr": float(psnr_sum) / n,
        "ssim": ssim_value,
        "codebook_usage": float((counts > 0).float().mean()),
        "codes_used": int((counts > 0).sum()),
        "vocab_size": tokenizer.vocab_size,
    }
    if rfvd is not None:
        report["rfvd"] = rfvd
    print(json.dumps(report, indent=2))
    if args.json:
        write_json_atomic(args.json, report)
    return 0


def _reconstruct_clips(num_available: int, num: int | None, seed: int) -> list[int]:
    """Dataset indices of the clips to reconstruct: all, or ``num`` drawn with ``random.Random(seed)`` (in order).

    Split files list their videos class by class, so the first ``num`` would cover only the first classes.
    """
    import random

    if num is None or num >= num_available:
        return list(range(num_available))
    return sorted(random.Random(seed).sample(range(num_available), num))


def _fvd_metric(device: str):
    """rFVD: the I3D FVD of reconstructions against their originals."""
    from navid.metrics.fvd import FrechetVideoDistance

    return FrechetVideoDistance().to(device)


def _clip_starts(ds, k: int) -> list[tuple[int, int]]:
    """(video index, start frame) of K evenly spaced clips per video (the centre clip when K = 1), video-major."""
    items = []
    for i, count in enumerate(ds.frame_counts):
        room = max(count - ds.span, 0)
        starts = np.linspace(0, room, k).round().astype(int) if k > 1 else [room // 2]
        items += [(i, int(s)) for s in starts]
    return items


def _row_groups(ds, items: list[tuple[int, int]], hflip: bool) -> np.ndarray:
    """(rows,) int64: the UCF-101 group (:func:`~navid.data.ucf101.video_group`) of each cache row's video."""
    from navid.data.ucf101 import video_group

    _, groups = np.unique([video_group(ds.clips[i]) for i, _ in items], return_inverse=True)
    return np.repeat(groups, 2) if hflip else groups


class _ClipsAt:
    """Map-style dataset: item ``j`` is clip ``items[j]`` = (video, start frame) of ``ds`` and its label.

    Clips are (C, T, H, W) in [-1, 1], centred crops without flips, as :func:`_clip_at` makes them.
    """

    def __init__(self, ds, items: list[tuple[int, int]]) -> None:
        self.ds, self.items = ds, items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, j: int):
        i, start = self.items[j]
        return _clip_at(self.ds, i, start), self.ds.labels[i]


def _shard_batches(shards, todo: list[int], batch_size: int) -> list[tuple[int, list[int]]]:
    """(shard, clip indices) batches of the shards ``todo``; a batch never spans two shards.

    So every clip is encoded in the same batch whatever the number of ranks or interruptions,
    and the cache is the same bytes either way.
    """
    batches = []
    for shard in todo:
        items = shards.items(shard)
        batches += [(shard, list(items[lo : lo + batch_size])) for lo in range(0, len(items), batch_size)]
    return batches


def run_tokenize(args: argparse.Namespace) -> int:
    from navid.data.token_cache import TokenCacheShards
    from navid.tokenizer.checkpoint import load_tokenizer, tokenizer_fingerprint
    from navid.utils.distributed import distributed_run, from_rank0

    with distributed_run(args.device) as ctx:
        tokenizer = load_tokenizer(args.tokenizer, map_location=ctx.device)
        geometry = clip_geometry(args, tokenizer)
        ds = _clips(args, geometry)
        items = _clip_starts(ds, args.clips_per_video)
        source = {
            "data": str(args.data), "split": args.split, "fold": args.fold, "clips_per_video": args.clips_per_video,
            "hflip": args.hflip, **asdict(geometry), "tokenizer": str(args.tokenizer),
        }
        job = {**source, "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer)}
        source["source_fps"] = ds.source_fps  # recorded in the cache for `navid sample`, not part of the job's plan
        ctx.on_main(lambda: TokenCacheShards.prepare(args.out, job, len(items), args.shard_size, args.overwrite))
        shards = TokenCacheShards(args.out)
        missing = from_rank0(shards.missing)  # listed before any rank writes one; one list, whatever a rank sees
        todo = missing if args.max_shards is None else missing[: args.max_shards]
        if ctx.is_main and len(missing) < shards.num_shards:
            done = shards.num_shards - len(missing)
            print(f"resuming {args.out}: {done} of {shards.num_shards} shards written before")
        start = time.perf_counter()
        _encode_shards(tokenizer, _ClipsAt(ds, items), shards, todo[ctx.rank :: ctx.world_size], args, ctx)
        ctx.barrier()
        if not ctx.is_main:
            return 0
        seconds, clips = time.perf_counter() - start, sum(len(shards.items(s)) for s in todo)
        print(f"encoded {clips} clips in {seconds:.1f} s ({clips / seconds:.2f} clips/s over {ctx.world_size} rank(s))")
        left = len(shards.missing())
        if left:
            print(f"stopped with {left} of {shards.num_shards} shards to go; run the same command again to continue")
            return 0
        out = shards.finish(
            vocab_size=tokenizer.vocab_size, class_names=ds.class_names,
            tokenizer_fingerprint=tokenizer_fingerprint(tokenizer), source=source,
            groups=_row_groups(ds, items, args.hflip),
        )
        grid = tokenizer.grid_shape((geometry.num_frames, geometry.resolution, geometry.resolution))
        print(f"wrote {len(items) * (2 if args.hflip else 1)} token grids {tuple(grid)} to {out}")
        return 0


def _encode_shards(tokenizer, clips: _ClipsAt, shards, todo: list[int], args: argparse.Namespace, ctx) -> None:
    """Encode this rank's shards ``todo`` and write each as soon as its last batch is done.

    With ``--hflip`` each clip is followed by its mirror image (row 2j: clip j, row 2j+1: its mirror).
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    batches = _shard_batches(shards, todo, args.batch_size)
    loader = DataLoader(
        clips, batch_sampler=[b for _, b in batches], num_workers=args.num_workers,
        pin_memory=ctx.device.type == "cuda",
    )
    done: dict[int, tuple[list, list]] = {}
    desc = f"tokenizing (rank {ctx.rank})" if ctx.is_distributed else "tokenizing"
    bar = tqdm(total=sum(len(b) for _, b in batches), desc=desc, unit="clip", disable=not ctx.is_main)
    for (shard, batch), (video, labels) in zip(batches, loader):
        video = video.to(ctx.device, non_blocking=True)  # (B, C, T, H, W)
        if args.hflip:  # a mirrored clip is another clip of the same class (the tokenizer trains on flips too)
            tokens = tokenizer.encode(torch.cat([video, video.flip(-1)]))  # (2B, T', H', W')
            tokens = torch.stack(tokens.chunk(2), dim=1).flatten(0, 1)  # (2B, T', H', W'): clip, mirror, clip, ...
            labels = labels.repeat_interleave(2)
        else:
            tokens = tokenizer.encode(video)  # (B, T', H', W')
        parts = done.setdefault(shard, ([], []))
        parts[0].append(tokens.cpu().numpy())
        parts[1].append(labels.numpy().astype(np.int64))
        if batch[-1] == shards.items(shard)[-1]:
            token_parts, label_parts = done.pop(shard)
            shards.write(shard, np.concatenate(token_parts), np.concatenate(label_parts))
        bar.update(len(batch))
    bar.close()
