"""Typed configuration: dataclass schemas + YAML files + ``key=value`` overrides.

Every command that takes ``--config FILE`` builds its config with :func:`load_config`:
the schema's defaults, then the YAML file, then the command-line overrides. Unknown keys,
values of the wrong type and missing mandatory values raise :class:`ConfigError` naming
the key and where it came from, before any work starts.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Type, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or missing; the message names the key."""


# Errors that come from bad input (ConfigError among them): commands print them as one line, on every rank.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError)


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(getattr(err, "msg", None) or err).splitlines()[0]
    return f"key '{key}': {msg}" if key else msg


def _merge(base: Any, other: Any, source: str) -> Any:
    if not OmegaConf.is_dict(other):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got a {type(other).__name__}")
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None
    except TypeError as err:  # omegaconf: a list given element by element (key.0=...) meets the whole list
        raise ConfigError(f"{source}: {err}; give a list value whole, e.g. key=[a,b]") from None


def parse_overrides(overrides: Sequence[str]) -> Any:
    """Parse ``key=value`` strings (omegaconf dotlist syntax) into a config."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' is not of the form key=value")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"command-line overrides: {_describe(err)}") from None


def load_config(schema: Type[T], path: Optional[str | Path] = None, overrides: Sequence[str] = ()) -> T:
    """Return an instance of the dataclass ``schema`` built from defaults, file and overrides.

    ``__post_init__`` validation of the schema runs on the final values; its ``ValueError``
    is re-raised as :class:`ConfigError`.
    """
    cfg = OmegaConf.structured(schema)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            file_cfg = OmegaConf.load(path)
        except Exception as err:  # yaml.YAMLError carries the line number in its message
            raise ConfigError(f"{path}: cannot parse YAML: {err}") from None
        cfg = _merge(cfg, file_cfg, str(path))
    cfg = _merge(cfg, parse_overrides(overrides), "command-line overrides")
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ConfigError(f"missing value for key(s): {', '.join(missing)}")
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err)) from None
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from None


def to_dict(cfg: Any) -> dict:
    """A plain-``dict`` copy of a config (for checkpoints loaded with ``weights_only=True``)."""
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    return OmegaConf.to_container(cfg, resolve=True)


def from_dict(schema: Type[T], data: dict) -> T:
    """Rebuild a typed config from :func:`to_dict` output (strict: unknown keys are errors)."""
    cfg = _merge(OmegaConf.structured(schema), OmegaConf.create(data), "stored config")
    return OmegaConf.to_object(cfg)


LOGGERS = ("csv", "tensorboard")
HALF_WEIGHT_PRECISIONS = ("bf16-true", "16-true")  # Lightning's half-precision weights ("bf16", "16" are mixed)
FSDP_PRECISIONS = ("32-true", "32", "bf16-mixed", "bf16")  # what Lightning runs under FSDP2 (with aliases)
SHARDED_STRATEGIES = ("fsdp", "hsdp")  # navid.utils.sharding: over all ranks; within each node


@dataclass
class TrainerConfig:
    """Lightning ``Trainer`` settings; the same code runs on CPU, one GPU, many GPUs or nodes.

    ``devices`` is ``Any`` because Lightning takes an int, a list of ids or ``"auto"``.
    """

    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    max_steps: int = 1000
    max_time_minutes: Optional[float] = None
    log_every_n_steps: int = 10
    gradient_clip_val: float = 1.0
    accumulate_grad_batches: int = 1
    checkpoint_every_n_steps: int = 200
    val_every_n_steps: int = 500
    limit_val_batches: int = 8
    progress_bar: bool = True
    logger: str = "csv"  # "csv" or "tensorboard" (pip install 'navid[tensorboard]'); logs under out_dir/logs/
    sample_every_n_steps: int = 0  # preview videos (generator samples, tokenizer reconstructions); 0 = off

    def __post_init__(self) -> None:
        if self.logger not in LOGGERS:
            raise ValueError(f"key 'trainer.logger' must be one of {', '.join(LOGGERS)}, got '{self.logger}'")
        if self.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
            raise ValueError("key 'trainer.logger': 'tensorboard' needs the tensorboard package; install it with: "
                             "pip install 'navid[tensorboard]' (or use trainer.logger=csv)")
        if self.sample_every_n_steps < 0:
            raise ValueError(f"key 'trainer.sample_every_n_steps' must be >= 0, got {self.sample_every_n_steps}")
        if self.max_steps <= 0:
            raise ValueError(f"key 'trainer.max_steps' must be positive, got {self.max_steps}")
        if self.num_nodes <= 0:
            raise ValueError(f"key 'trainer.num_nodes' must be positive, got {self.num_nodes}")
        for key in ("checkpoint_every_n_steps", "val_every_n_steps", "accumulate_grad_batches", "log_every_n_steps"):
            if getattr(self, key) <= 0:
                raise ValueError(f"key 'trainer.{key}' must be positive, got {getattr(self, key)}")
        if self.limit_val_batches < 0:
            raise ValueError(f"key 'trainer.limit_val_batches' must be >= 0, got {self.limit_val_batches}")
        if self.max_time_minutes is not None and not self.max_time_minutes > 0:
            raise ValueError(f"key 'trainer.max_time_minutes' must be positive (or null), got {self.max_time_minutes}")
        if self.gradient_clip_val < 0:
            raise ValueError(f"key 'trainer.gradient_clip_val' must be >= 0 (0 = off), got {self.gradient_clip_val}")
        if self.precision in HALF_WEIGHT_PRECISIONS:
            raise ValueError(
                f"key 'trainer.precision': '{self.precision}' keeps the weights and their EMA copy in half "
                "precision, where an EMA update of (1 - ema_decay) times the weights' change rounds away (with "
                "decay 0.9999 the EMA stays near its early weights, and sampling uses it). Use 'bf16-mixed': bf16 "
                "compute with fp32 weights, optimizer state and EMA."
            )
        if "sdp" in str(self.strategy).lower() and self.strategy not in SHARDED_STRATEGIES:
            raise ValueError(
                f"key 'trainer.strategy': '{self.strategy}' is not supported. Use 'fsdp' (PyTorch's per-parameter "
                "FSDP2, which shards the model and its EMA copy alike over all ranks), 'hsdp' (the same, sharded "
                "within each node and replicated across nodes) or 'ddp'."
            )
        if self.strategy in SHARDED_STRATEGIES and self.precision not in FSDP_PRECISIONS:
            raise ValueError(f"key 'trainer.precision': '{self.precision}' does not run under "
                             f"trainer.strategy={self.strategy} (Lightning's FSDP2 strategy takes '32-true' or "
                             "'bf16-mixed'); use 'bf16-mixed'")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"key 'optim.lr' must be positive, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            raise ValueError(f"key 'optim.betas' must be two values in [0, 1), got {list(self.betas)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError("key 'optim.ema_decay' must be in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"key 'optim.min_lr_ratio' must be in [0, 1], got {self.min_lr_ratio}")
        for key in ("warmup_steps", "weight_decay"):
            if getattr(self, key) < 0:
                raise ValueError(f"key 'optim.{key}' must be >= 0, got {getattr(self, key)}")
