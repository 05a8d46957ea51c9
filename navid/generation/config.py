"""Typed config of a generator training run (``navid train``).

The model section names a size from :data:`navid.generation.transformer.TRANSFORMER_SIZES`
plus keyword overrides, and the decoding schedule; the vocabulary size, the number of
classes and the token grid are not configured here — they come from the token cache, so a
config cannot disagree with the data it trains on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import MISSING

from navid.config import OptimConfig, TrainerConfig

SCHEDULE_KINDS = ("nar", "par4", "raster")
# Filled from the token cache at build time, never from the config.
DATA_DERIVED_FIELDS = ("vocab_size", "num_classes")


@dataclass
class GeneratorDataConfig:
    """The token cache (``navid tokenize`` output) and how it is batched."""

    tokens: str = MISSING
    # Decodes the preview samples of trainer.sample_every_n_steps; None = the tokenizer the cache was made with.
    tokenizer: Optional[str] = None
    batch_size: int = 32
    num_workers: int = 0
    val_fraction: float = 0.05

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"key 'data.batch_size' must be positive, got {self.batch_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"key 'data.val_fraction' must be in [0, 1), got {self.val_fraction}")


@dataclass
class GeneratorModelConfig:
    """A named transformer size, keyword overrides of it, and the decoding schedule."""

    size: str = "tiny"
    schedule: str = "nar"
    overrides: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from navid.generation.transformer import TRANSFORMER_SIZES, TransformerConfig

        if self.size not in TRANSFORMER_SIZES:
            raise ValueError(f"key 'model.size': unknown size '{self.size}'; "
                             f"choose one of {', '.join(TRANSFORMER_SIZES)}")
        if self.schedule not in SCHEDULE_KINDS:
            raise ValueError(f"key 'model.schedule': unknown schedule '{self.schedule}'; "
                             f"choose one of {', '.join(SCHEDULE_KINDS)}")
        fields = {f.name: f for f in dataclasses.fields(TransformerConfig)}
        known = set(fields) - set(DATA_DERIVED_FIELDS)
        for key, value in self.overrides.items():
            if key not in known:
                raise ValueError(
                    f"key 'model.overrides.{key}' is not a transformer setting; known: {', '.join(sorted(known))}"
                    + (" (it comes from the token cache)" if key in DATA_DERIVED_FIELDS else "")
                )
            integer = fields[key].type == "int"  # the other fields are floats
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                kind = "an integer" if integer else "a number"
                raise ValueError(f"key 'model.overrides.{key}' must be {kind}, got {value!r}")
        try:
            TransformerConfig(**self.transformer_kwargs())
        except ValueError as err:
            raise ValueError(f"model.size={self.size} with model.overrides {dict(self.overrides)}: {err}") from None

    def transformer_kwargs(self) -> dict:
        """The size's keyword arguments with the overrides applied (without data-derived fields)."""
        from navid.generation.transformer import TRANSFORMER_SIZES

        return {**TRANSFORMER_SIZES[self.size], **self.overrides}


@dataclass
class GeneratorTrainConfig:
    """Everything ``navid train`` needs; saved (as a plain dict) in every checkpoint.

    ``tokenizer_fingerprint``, when set, must match the token cache's: it pins a run to
    the tokenizer whose decoder will turn its samples into video.
    """

    data: GeneratorDataConfig = field(default_factory=GeneratorDataConfig)
    model: GeneratorModelConfig = field(default_factory=GeneratorModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    out_dir: str = "runs/generator"
    seed: int = 0
    tokenizer_fingerprint: Optional[str] = None
