"""``navid <command>``: a thin argparse front; each command lives in ``navid.commands``.

Every command module exposes ``register(subparsers)``, which adds its parser(s) and sets
``func`` to a function taking the parsed arguments. Errors that come from bad input
(``ConfigError``, ``FileNotFoundError``, ``ValueError`` and friends) are printed as one
clear line with exit status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from navid import __version__
from navid.config import USER_ERRORS
from navid.utils.run_stops import RunStopped

# DataLoader processes of the commands that decode video: 4, or fewer on a machine with fewer CPUs (PyTorch warns
# when asked for more workers than there are CPUs).
DEFAULT_NUM_WORKERS = min(4, os.cpu_count() or 1)

COMMAND_MODULES = (
    "navid.commands.data",
    "navid.commands.fvd",
    "navid.commands.generator",
    "navid.commands.tokenizer",
    "navid.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="navid", description="Neighboring Autoregressive video generation")
    parser.add_argument("--version", action="version", version=f"navid {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def positive_int(text: str) -> int:
    """argparse type of counts and sizes: an integer >= 1 (argparse names the flag in its error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type of worker counts and optional counts: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type of frame rates: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and trailing ``key=value`` overrides, shared by config-driven commands."""
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")


def add_training_run_arguments(parser: argparse.ArgumentParser, outputs: str) -> None:
    """``--config``, overrides and the ``--resume`` / ``--overwrite`` choice of a training command; ``outputs`` names
    what ``--overwrite`` removes besides the run's checkpoints, logs and STOP file."""
    add_config_arguments(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue from out_dir/checkpoints/last.ckpt (`touch out_dir/STOP` stops a run at its next "
                           "logging step with that checkpoint written)")
    mode.add_argument("--overwrite", action="store_true",
                      help=f"start a new run in a non-empty out_dir: the earlier run's checkpoints/, logs/, {outputs} "
                           "and STOP are removed once the config and data have passed their checks")


def parse_arguments(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse ``argv``; ``key=value`` overrides may also come after a command's flags (``--resume trainer.max_steps=9``).

    argparse gives a trailing positional list only the words before the first flag; the words after it
    that are overrides join the list, in order, and any other unknown word is an error as usual.
    """
    args, extra = parser.parse_known_args(argv)
    late = [word for word in extra if "=" in word and not word.startswith("-")]
    if late and hasattr(args, "overrides"):
        args.overrides = [*args.overrides, *late]
        extra = [word for word in extra if word not in late]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    try:
        result = args.func(args)
    except USER_ERRORS as err:
        print(f"navid {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"navid {args.command}: interrupted (Ctrl-C); no file was left half-written (tokenize continues from its "
              "finished shards when run again)", file=sys.stderr)
        return 130
    except RunStopped as err:  # a NaN/Inf loss or SIGTERM: the message says what --resume continues from
        print(f"navid {args.command}: stopped: {err}", file=sys.stderr)
        return err.exit_status
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
