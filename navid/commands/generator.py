"""``navid train`` (generator), ``navid sample`` (class-conditional clips) and ``navid evaluate`` (FVD).

Thin front ends: argument parsing, output-folder rules and file writing live here; training
is :func:`navid.generation.lightning_module.train_generator`, generation and the FVD
protocol are in :mod:`navid.generation.evaluation`. Heavy imports happen inside the command
functions so ``navid --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from navid.cli import DEFAULT_NUM_WORKERS, add_training_run_arguments, non_negative_int, positive_float, positive_int

SAMPLE_OUTPUTS = ("videos", "grids", "tokens.pt", "samples.json")  # what --overwrite replaces


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a NAR / PAR-4x / raster generator on a token cache",
        description="Train a generator: navid train --config configs/generator/tiny.yaml data.tokens=DIR "
                    "model.schedule=nar",
    )
    add_training_run_arguments(train, outputs="samples/ (previews)")
    train.set_defaults(func=run_train)

    sample = subparsers.add_parser("sample", help="generate class-conditional clips with a trained generator")
    _add_model_arguments(sample)
    which = sample.add_mutually_exclusive_group()
    which.add_argument("--classes", help="comma-separated class ids and/or names (default: all)")
    which.add_argument("--all-classes", action="store_true", help="one grid per class (the default)")
    sample.add_argument("--per-class", type=positive_int, default=4, help="clips per class")
    sample.add_argument("--fps", type=positive_float,
                        help="frame rate of the written videos (default: the training clips' own, source rate / "
                             "frame stride, where the token cache recorded it; else 8)")
    sample.add_argument("--out", required=True, help="output folder (new or empty unless --overwrite)")
    sample.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out, replacing its videos/, grids/, tokens.pt and samples.json")
    sample.set_defaults(func=run_sample)

    evaluate = subparsers.add_parser("evaluate", help="FVD / KVD / per-class FVD of a generator against real clips")
    _add_model_arguments(evaluate)
    evaluate.add_argument("--data", required=True,
                          help="UCF-101-layout dataset root (class folders + ucfTrainTestlist/)")
    evaluate.add_argument("--split", default="train", choices=("train", "test"),
                          help="real clips from this split (papers: train)")
    evaluate.add_argument("--fold", type=int, default=1, choices=(1, 2, 3))
    evaluate.add_argument(
        "--protocol", default="nar", choices=("nar",),
        help="real clips: nar = distinct non-overlapping 16-frame chunks of the split, as NAR/LARP (docs/fvd.md)",
    )
    # ``--num-clips`` spells the same option in a way torchrun's own parser does not mistake for its ``--numa-binding``.
    evaluate.add_argument(
        "--num", "--num-clips", dest="num", type=positive_int, default=10000,
        help="generated clips = real clips (papers: 10000)"
    )
    evaluate.add_argument("--real-seed", type=int, default=42, help="seed drawing the real chunks (reference code: 42)")
    evaluate.add_argument("--allow-repeats", action="store_true", help="allow --num above the split's distinct chunks")
    evaluate.add_argument("--num-workers", type=non_negative_int, default=DEFAULT_NUM_WORKERS,
                          help="processes decoding real clips (default: 4, at most the CPU count)")
    evaluate.add_argument("--stats-cache", help="folder caching real I3D features (keyed by protocol and chunks)")
    evaluate.add_argument("--json", help="write the report here (refused if it exists, unless --overwrite)")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    evaluate.set_defaults(func=run_evaluate)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Checkpoints, sampling settings, seed and device: shared by ``sample`` and ``evaluate``."""
    parser.add_argument("--generator", required=True, help="generator checkpoint (navid train)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer checkpoint (the one that made the token cache)")
    parser.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=non_negative_int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=16, help="clips sampled together")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--raw-weights", action="store_true",
                        help="use the training weights instead of the EMA weights")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"),
                        help="generator weights and KV cache (sampling maths stay fp32; fp32 matmuls use TF32 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the decoding step (CUDA: CUDA graphs)")


def _load_models(args: argparse.Namespace):
    """``(generator, schedule, meta, tokenizer, sampling config, device)`` from the shared arguments."""
    from navid.generation.checkpoint import load_generator
    from navid.generation.evaluation import check_tokenizer
    from navid.generation.sampler import DTYPES, SamplingConfig, enable_tf32
    from navid.tokenizer.checkpoint import load_tokenizer, tokenizer_fingerprint
    from navid.utils.distributed import resolve_device

    sampling = SamplingConfig(cfg_scale=args.cfg, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              seed=args.seed,
                              compile=args.compile)
    device = resolve_device(args.device)
    model, schedule, meta = load_generator(args.generator, map_location=device, ema=not args.raw_weights)
    model.to(DTYPES[args.dtype])
    if device.type == "cuda":
        enable_tf32()
    tokenizer = load_tokenizer(args.tokenizer, map_location=device)
    check_tokenizer(meta, tokenizer_fingerprint(tokenizer), args.tokenizer)
    return model, schedule, meta, tokenizer, sampling, device


def run_sample(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from navid.data.video_io import tensor_to_frames, write_video
    from navid.generation.evaluation import generate_batches, resolve_classes
    from navid.utils.atomic import prepare_output_dir, remove_earlier_outputs, torch_save_atomic, write_json_atomic
    from navid.utils.distributed import refuse_srun_copies

    refuse_srun_copies()  # one process samples; srun copies of it would write the same --out
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"navid sample runs in one process; {os.environ['WORLD_SIZE']} torchrun ranks would each "
                         "write the same --out. Run it without torchrun (navid evaluate shares generation out)")
    model, schedule, meta, tokenizer, sampling, device = _load_models(args)
    fps = args.fps or _clip_fps(meta)
    names = meta["class_names"]
    classes = resolve_classes(args.classes, args.all_classes, names)
    out = prepare_output_dir(args.out, args.overwrite)
    remove_earlier_outputs(out, SAMPLE_OUTPUTS)
    labels = torch.tensor(classes, device=device).repeat_interleave(args.per_class)  # (N,)

    tokens, frames, steps, seconds, compile_seconds = [], [], 0, 0.0, 0.0
    for batch in generate_batches(model, schedule, tokenizer, labels, sampling, args.batch_size, progress=True):
        tokens.append(batch.tokens.cpu())
        frames.extend(tensor_to_frames(v) for v in batch.video)  # (T, H, W, 3) uint8 each
        steps, seconds, compile_seconds = batch.steps, seconds + batch.seconds, compile_seconds + batch.compile_seconds

    files = []
    for i, (label, clip) in enumerate(zip(labels.tolist(), frames)):
        files.append(str(write_video(out / "videos" / f"{_stem(label, names)}_{i % args.per_class:02d}.mp4", clip,
                                     fps).relative_to(out)))
    grids = []
    for j, label in enumerate(classes):
        grid = caption_grid(frames[j * args.per_class : (j + 1) * args.per_class], names[label])
        for suffix in (".gif", ".mp4"):
            grids.append(str(write_video(out / "grids" / f"{_stem(label, names)}{suffix}", grid,
                                         fps).relative_to(out)))
    torch_save_atomic({"tokens": torch.cat(tokens), "labels": labels.cpu(), "class_names": list(names)},
                      out / "tokens.pt")
    write_json_atomic(out / "samples.json", {
        "generator": str(args.generator),
        "tokenizer": str(args.tokenizer),
        "weights": "raw" if args.raw_weights else "ema",
        "schedule": schedule.kind,
        "grid": list(schedule.grid),
        "classes": [{"id": c, "name": names[c]} for c in classes],
        "per_class": args.per_class,
        "sampling": dataclasses.asdict(sampling),
        "batch_size": args.batch_size,
        "device": str(device),
        "dtype": args.dtype,
        "fps": fps,
        "forward_steps_per_batch": steps,
        "sampling_seconds": seconds,
        "compile_seconds": compile_seconds,
        "videos": files,
        "grids": grids,
        "tokens": "tokens.pt",
    })
    compiled = f", {compile_seconds:.1f} s compiling" if sampling.compile else ""
    print(f"wrote {len(files)} clips and {len(classes)} class grids to {out} ({steps} forward steps per batch, "
          f"{seconds:.2f} s sampling{compiled})")
    return 0


def _clip_fps(meta: dict) -> float:
    """The training clips' own frame rate, or the default with a note where the generator's token cache did not
    record the source's rate (caches from before navid recorded it)."""
    from navid.data.video_io import DEFAULT_FPS
    from navid.generation.checkpoint import token_clip_fps

    fps = token_clip_fps(meta.get("token_clips", {}))
    if fps is None:
        print(f"note: the generator's token cache records no frame rate; writing {DEFAULT_FPS:g} fps (--fps)",
              file=sys.stderr)
        return DEFAULT_FPS
    return fps


def _stem(label: int, names: list[str]) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in names[label])
    return f"{label:03d}_{safe}"


def caption_grid(clips: list, caption: str, pad: int = 2):
    """Tile uint8 clips (T, H, W, 3) in a near-square grid under a strip with ``caption`` drawn on it."""
    import math

    import numpy as np
    from PIL import Image, ImageDraw

    T, H, W, _ = clips[0].shape
    cols = math.ceil(math.sqrt(len(clips)))
    rows = math.ceil(len(clips) / cols)
    strip = 14
    height, width = strip + rows * (H + pad) + pad, cols * (W + pad) + pad
    grid = np.full((T, height + height % 2, width + width % 2, 3), 255, dtype=np.uint8)  # even sizes for MP4
    for k, clip in enumerate(clips):
        y, x = strip + pad + (k // cols) * (H + pad), pad + (k % cols) * (W + pad)
        grid[:, y : y + H, x : x + W] = clip
    label = Image.new("RGB", (grid.shape[2], strip), "white")
    ImageDraw.Draw(label).text((pad, 1), caption, fill="black")
    grid[:, :strip] = np.asarray(label)
    return grid


def run_train(args: argparse.Namespace) -> int:
    from navid.config import load_config, to_dict
    from navid.data.token_cache import TokenCache
    from navid.generation.checkpoint import check_resume_tokens
    from navid.generation.config import GeneratorTrainConfig
    from navid.generation.schedule import build_schedule
    from navid.generation.lightning_module import train_generator
    from navid.utils.atomic import write_text_atomic
    from navid.utils.training import check_resume_settings, last_checkpoint, prepare_run_dir
    from lightning.pytorch.utilities import rank_zero_only
    from omegaconf import OmegaConf

    cfg = load_config(GeneratorTrainConfig, args.config, args.overrides)
    # Bad data or a grid the schedule cannot split fail here, before the output folder exists.
    cache = TokenCache(cfg.data.tokens, cfg.tokenizer_fingerprint)
    build_schedule(cfg.model.schedule, cache.grid)
    out = Path(cfg.out_dir)
    # Under DDP every rank runs this command; only rank 0 judges and prepares the folder
    # (the others would find it already made by rank 0).
    if args.resume:
        checkpoint = check_resume_settings(out, to_dict(cfg), stored_at=("navid", "config"))
        if checkpoint is not None:
            check_resume_tokens(last_checkpoint(out), checkpoint["navid"], cache)
    if rank_zero_only.rank == 0:
        if not args.resume:
            prepare_run_dir(out, args.overwrite)
        elif not out.is_dir():
            raise FileNotFoundError(f"--resume: out_dir {out} does not exist")
        write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(to_dict(cfg)))
    last = train_generator(cfg, resume=args.resume, overwrite=args.overwrite)
    print(f"checkpoint: {last}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from navid.utils.atomic import check_writable, refuse_existing_file
    from navid.utils.distributed import distributed_run

    if args.num < 2:
        raise ValueError(f"--num must be at least 2 (FVD needs a covariance), got {args.num}")
    refuse_existing_file(args.json, args.overwrite)
    if args.stats_cache:
        check_writable(Path(args.stats_cache), "--stats-cache", folder=True)
    with distributed_run(args.device) as ctx:
        args.device = str(ctx.device)  # under torchrun: this rank's pinned device
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    from navid.generation.evaluation import evaluate_generator, i3d_features
    from navid.metrics.real_chunks import PROTOCOL, ChunkClips, draw_chunks
    from navid.utils.atomic import write_json_atomic
    from navid.utils.distributed import rank_world

    model, schedule, meta, tokenizer, sampling, device = _load_models(args)
    (t, h, w), (ct, ch, cw) = schedule.grid, tokenizer.compression
    if h * ch != w * cw:
        raise ValueError(f"generated clips are {h * ch}x{w * cw}; the FVD protocol compares square clips")
    stride = meta.get("token_clips", {}).get("frame_stride", 1)
    if stride != 1:
        raise ValueError(f"--generator {args.generator}: its token cache took every {stride}th frame "
                         f"(frame_stride {stride}), but the {PROTOCOL} protocol's real chunks are {t * ct} consecutive "
                         "frames, so generated and real motion would differ in speed; evaluate a generator trained "
                         "on frame_stride 1 tokens")
    draw = draw_chunks(args.data, args.num, args.real_seed, args.split, args.fold, t * ct, args.allow_repeats)
    if list(draw.index.class_names) != list(meta["class_names"]):
        raise ValueError(f"{args.data}: its classes differ from the {len(meta['class_names'])} classes "
                         "the generator was trained on")
    real = ChunkClips(draw, resolution=h * ch)
    features, provenance = i3d_features(device)
    real_clips = {
        "protocol": PROTOCOL, "data": str(Path(args.data).resolve()), "split": args.split, "fold": args.fold,
        "seed": args.real_seed, "num": args.num, "num_frames": t * ct, "resolution": h * ch,
    }
    cache_key = {**real_clips, "chunks_sha256": draw.fingerprint(), "features": provenance}
    report = evaluate_generator(
        model, schedule, tokenizer, real, sampling, args.batch_size, features, args.stats_cache, cache_key,
        args.num_workers,
    )
    report.update({
        "protocol": PROTOCOL, "generator": str(args.generator), "tokenizer": str(args.tokenizer),
        "weights": "raw" if args.raw_weights else "ema", "schedule": schedule.kind,
        "real_clips": {**real_clips, **draw.report()}, "sampling": dataclasses.asdict(sampling),
        "batch_size": args.batch_size, "device": str(device), "dtype": args.dtype, "fvd_provenance": provenance,
    })
    if rank_world()[0] == 0:
        if args.json:
            write_json_atomic(args.json, report)
        print(f"FVD {report['fvd']:.2f}  KVD {report['kvd']:.4f}  ({args.num} generated vs {args.num} real "
              f"{args.split} chunks, protocol {PROTOCOL}, cfg {args.cfg})")
        per_class = report["per_class_fvd"]
        if per_class["own_class_nearest"] is not None:
            print(f"per-class FVD: {per_class['own_class_nearest']:.0%} of the {per_class['rated_classes']} generated "
                  f"classes with 2 or more clips on both sides are nearest their own real class")
    return 0
