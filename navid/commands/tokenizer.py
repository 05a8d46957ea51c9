"""``navid train-tokenizer``, ``navid reconstruct`` (quality report) and ``navid tokenize`` (token cache)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from navid.cli import add_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train-tokenizer", help="train the 3D video tokenizer")
    add_config_arguments(train)
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoints/last.ckpt")
    mode.add_argument("--overwrite", action="store_true", help="write into a non-empty out_dir")
    train.add_argument("--max-time", type=float, default=None, help="stop after this many minutes (= trainer.max_time_minutes)")
    train.set_defaults(func=run_train)

    rec = subparsers.add_parser("reconstruct", help="PSNR/SSIM/codebook usage of a tokenizer on held-out clips")
    _add_data_arguments(rec, default_split="test")
    rec.add_argument("--num", type=int, default=None, help="number of clips (default: all)")
    rec.add_argument("--out", default=None, help="folder for side-by-side videos (original | reconstruction)")
    rec.add_argument("--num-videos", type=int, default=4, help="how many side-by-side videos to write")
    rec.add_argument("--fvd", action="store_true", help="also compute rFVD (needs navid.metrics.fvd)")
    rec.add_argument("--json", default=None, help="write the report to this JSON file")
    rec.add_argument("--overwrite", action="store_true", help="replace an existing --json / write into a non-empty --out")
    rec.set_defaults(func=run_reconstruct)

    tok = subparsers.add_parser("tokenize", help="encode a dataset split into a token cache")
    _add_data_arguments(tok, default_split="train")
    tok.add_argument("--out", required=True, help="token cache folder")
    tok.add_argument("--clips-per-video", type=int, default=1, help="K evenly spaced clips per video")
    tok.add_argument("--hflip", action="store_true", help="also cache every clip mirrored left-right (2x the grids)")
    tok.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    tok.set_defaults(func=run_tokenize)


def _add_data_arguments(parser: argparse.ArgumentParser, default_split: str) -> None:
    parser.add_argument("--tokenizer", required=True, help="tokenizer checkpoint (tokenizer.pt or a .ckpt)")
    parser.add_argument("--data", required=True, help="dataset root in the UCF-101 layout")
    parser.add_argument("--split", default=default_split, choices=("train", "test"))
    parser.add_argument("--fold", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64, help="frame size (the tokenizer's training size)")
    parser.add_argument("--frame-stride", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)


def run_train(args: argparse.Namespace) -> int:
    from navid.config import load_config
    from navid.tokenizer.config import TokenizerTrainConfig
    from navid.tokenizer.lightning_module import train_tokenizer
    from navid.utils.atomic import prepare_output_dir

    overrides = list(args.overrides)
    if args.max_time is not None:
        overrides.append(f"trainer.max_time_minutes={args.max_time}")
    cfg = load_config(TokenizerTrainConfig, args.config, overrides)
    out = Path(cfg.out_dir)
    if args.resume and not out.is_dir():
        raise FileNotFoundError(f"--resume: out_dir {out} does not exist")
    if not args.resume:
        prepare_output_dir(out, args.overwrite, what="out_dir")
    path = train_tokenizer(cfg, resume=args.resume)
    print(f"tokenizer (EMA weights) written to {path}")
    return 0


def _clips(args: argparse.Namespace):
    """The requested split, clips centred in each video (no random crops or flips)."""
    from navid.data.ucf101 import UCF101Clips

    return UCF101Clips(
        args.data, split=args.split, fold=args.fold, num_frames=args.num_frames, frame_stride=args.frame_stride,
        resolution=args.resolution, train=False,
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
    import torch
    from torchmetrics.image import StructuralSimilarityIndexMeasure
    from tqdm import tqdm

    from navid.data.video_io import tensor_to_frames, write_video
    from navid.tokenizer.checkpoint import load_tokenizer, tokenizer_fingerprint
    from navid.tokenizer.losses import psnr
    from navid.utils.atomic import prepare_output_dir, write_json_atomic

    if args.json and Path(args.json).exists() and not args.overwrite:
        raise FileExistsError(f"--json {args.json} exists; pass --overwrite to replace it")
    if args.out:
        prepare_output_dir(args.out, args.overwrite)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer(args.tokenizer, map_location=args.device)
    ds = _clips(args)
    n = len(ds) if args.num is None else min(args.num, len(ds))
    fvd = _fvd_metric(args.device) if args.fvd else None
    ssim = StructuralSimilarityIndexMeasure(data_range=2.0).to(args.device)
    psnrs, counts = [], torch.zeros(tokenizer.vocab_size, dtype=torch.int64)
    written = 0
    for lo in tqdm(range(0, n, args.batch_size), desc="reconstructing", unit="batch"):
        video = torch.stack([ds[i][0] for i in range(lo, min(n, lo + args.batch_size))]).to(args.device)
        tokens = tokenizer.encode(video)
        recon = tokenizer.decode(tokens)
        psnrs.append(psnr(recon, video).cpu())
        counts += torch.bincount(tokens.flatten().cpu(), minlength=tokenizer.vocab_size)
        ssim.update(recon.transpose(1, 2).flatten(0, 1), video.transpose(1, 2).flatten(0, 1))  # frames as images
        if fvd is not None:
            fvd.update(video, real=True)
            fvd.update(recon, real=False)
        while args.out and written < min(args.num_videos, lo + video.shape[0]):
            side = torch.cat([video[written - lo], recon[written - lo]], dim=-1).cpu()  # (C, T, H, 2W)
            write_video(Path(args.out) / f"recon_{written:03d}.gif", tensor_to_frames(side), fps=8)
            written += 1
    report = {
        "tokenizer": str(args.tokenizer),
        "fingerprint": tokenizer_fingerprint(tokenizer),
        "data": str(args.data),
        "split": args.split,
        "num_clips": n,
        "psnr": float(torch.cat(psnrs).mean()),
        "ssim": float(ssim.compute()),
        "codebook_usage": float((counts > 0).float().mean()),
        "codes_used": int((counts > 0).sum()),
        "vocab_size": tokenizer.vocab_size,
    }
    if fvd is not None:
        report["rfvd"] = float(fvd.compute())
    print(json.dumps(report, indent=2))
    if args.json:
        write_json_atomic(args.json, report)
    return 0


def _fvd_metric(device: str):
    """rFVD: the I3D FVD of reconstructions against their originals."""
    from navid.metrics.fvd import FrechetVideoDistance

    return FrechetVideoDistance().to(device)


def run_tokenize(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from navid.data.token_cache import write_token_cache
    from navid.tokenizer.checkpoint import load_tokenizer, tokenizer_fingerprint
    from navid.utils.atomic import prepare_output_dir

    if args.clips_per_video < 1:
        raise ValueError(f"--clips-per-video must be >= 1, got {args.clips_per_video}")
    out = prepare_output_dir(args.out, args.overwrite)
    tokenizer = load_tokenizer(args.tokenizer, map_location=args.device)
    ds = _clips(args)
    k = args.clips_per_video
    items = []  # (video index, start frame): K evenly spaced clips per video
    for i, count in enumerate(ds.frame_counts):
        room = max(count - ds.span, 0)
        starts = np.linspace(0, room, k).round().astype(int) if k > 1 else [room // 2]
        items += [(i, int(s)) for s in starts]
    tokens, labels = [], []
    for lo in tqdm(range(0, len(items), args.batch_size), desc="tokenizing", unit="batch"):
        batch = items[lo : lo + args.batch_size]
        video = torch.stack([_clip_at(ds, i, s) for i, s in batch]).to(args.device)
        batch_labels = [ds.labels[i] for i, _ in batch]
        if args.hflip:  # a mirrored clip is another clip of the same class (the tokenizer trains on flips too)
            video, batch_labels = torch.cat([video, video.flip(-1)]), batch_labels * 2
        tokens.append(tokenizer.encode(video).cpu().numpy())
        labels += batch_labels
    write_token_cache(
        out, np.concatenate(tokens), np.asarray(labels, dtype=np.int64), vocab_size=tokenizer.vocab_size,
        class_names=ds.class_names, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer),
        source={"data": str(args.data), "split": args.split, "fold": args.fold, "clips_per_video": k, "hflip": args.hflip,
                "num_frames": args.num_frames, "resolution": ds.resolution, "tokenizer": str(args.tokenizer)},
    )
    print(f"wrote {len(labels)} token grids {tuple(tokens[0].shape[1:])} to {out}")
    return 0
