"""``navid train`` (generator), ``navid sample`` (class-conditional clips) and ``navid evaluate`` (FVD).

Thin front ends: argument parsing, output-folder rules and file writing live here; training
is :func:`navid.generation.lightning_module.train_generator`, generation and the FVD
protocol are in :mod:`navid.generation.evaluation`. Heavy imports happen inside the command
functions so ``navid --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from navid.cli import add_config_arguments


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a NAR / PAR-4x / raster generator on a token cache",
        description="Train a generator: navid train --config configs/generator/tiny.yaml data.tokens=DIR model.schedule=nar",
    )
    add_config_arguments(train)
    mode = train.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue from out_dir/checkpoints/last.ckpt")
    mode.add_argument("--overwrite", action="store_true", help="start a new run in a non-empty out_dir")
    train.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from navid.config import load_config, to_dict
    from navid.generation.config import GeneratorTrainConfig
    from navid.generation.lightning_module import train_generator
    from navid.utils.atomic import prepare_output_dir, write_text_atomic
    from navid.utils.training import NonFiniteLossError
    from lightning.pytorch.utilities import rank_zero_only
    from omegaconf import OmegaConf

    cfg = load_config(GeneratorTrainConfig, args.config, args.overrides)
    out = Path(cfg.out_dir)
    # Under DDP every rank runs this command; only rank 0 judges and prepares the folder
    # (the others would find it already made by rank 0).
    if rank_zero_only.rank == 0:
        if not args.resume:
            prepare_output_dir(out, args.overwrite, what="out_dir")
        elif not out.is_dir():
            raise FileNotFoundError(f"--resume: out_dir {out} does not exist")
        write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(to_dict(cfg)))
    try:
        last = train_generator(cfg, resume=args.resume)
    except NonFiniteLossError as err:
        print(f"navid train: stopped: {err}", file=sys.stderr)
        return 1
    print(f"checkpoint: {last}")
    return 0
