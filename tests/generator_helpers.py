"""Shared by the generator tests: small token caches and tiny training configs (no tokenizer needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from navid.config import load_config
from navid.data.token_cache import write_token_cache
from navid.generation.config import GeneratorTrainConfig

FINGERPRINT = "test-tokenizer-0"


def make_token_cache(path: Path, num_clips: int = 4, grid=(2, 4, 4), vocab_size: int = 16, num_classes: int = 2,
                     seed: int = 0) -> Path:
    """Random token grids with labels ``i % num_classes``."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab_size, size=(num_clips, *grid))
    labels = np.arange(num_clips) % num_classes
    names = [f"class{i}" for i in range(num_classes)]
    return write_token_cache(path, tokens, labels, vocab_size=vocab_size, class_names=names,
                             tokenizer_fingerprint=FINGERPRINT)



def assert_same_weights(checkpoint: dict, reference: dict) -> None:
    """Every weight of ``checkpoint`` equals ``reference``'s within float32 round-off of the same steps (below
    1e-6); one other batch or draw moves weights by about a learning rate (~3e-3)."""
    import torch

    for name, value in reference["state_dict"].items():
        torch.testing.assert_close(checkpoint["state_dict"][name], value, atol=1e-5, rtol=1e-4, msg=name)

def tiny_overrides(cache: Path, out_dir: Path, schedule: str = "nar", steps: int = 20, **extra) -> list[str]:
    """``key=value`` overrides for a tiny, quiet CPU run."""
    values = {
        "data.tokens": cache,
        "data.batch_size": 4,
        "data.val_fraction": 0.0,
        "out_dir": out_dir,
        "model.size": "tiny",
        "model.schedule": schedule,
        "model.overrides.dim": 32,
        "model.overrides.num_heads": 2,
        "model.overrides.class_dropout": 0.0,
        "optim.lr": 3e-3,
        "optim.warmup_steps": 5,
        "optim.weight_decay": 0.0,
        "trainer.accelerator": "cpu",
        "trainer.max_steps": steps,
        "trainer.log_every_n_steps": 1,
        "trainer.checkpoint_every_n_steps": 10,
        "trainer.val_every_n_steps": 10_000,
        "trainer.progress_bar": False,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def tiny_config(cache: Path, out_dir: Path, schedule: str = "nar", steps: int = 20, **extra) -> GeneratorTrainConfig:
    return load_config(GeneratorTrainConfig, None, tiny_overrides(cache, out_dir, schedule, steps, **extra))


def make_tokenizer(path: Path, patch_size=(4, 16, 16), fsq_levels=(4, 4), seed: int = 0) -> tuple[Path, str]:
    """A small random-weight tokenizer file and its fingerprint (decoding needs no training)."""
    import torch

    from navid.tokenizer.checkpoint import save_tokenizer, tokenizer_fingerprint
    from navid.tokenizer.config import TokenizerModelConfig
    from navid.tokenizer.model import VideoTokenizer

    torch.manual_seed(seed)
    cfg = TokenizerModelConfig(patch_size=list(patch_size), channels=[16], downsample=[], out_hidden_channels=16,
                               fsq_levels=list(fsq_levels))
    tokenizer = VideoTokenizer(cfg)
    return save_tokenizer(tokenizer, path), tokenizer_fingerprint(tokenizer)


def cache_of_tokenizer(tokenizer: Path, fingerprint: str, out: Path, num_clips: int = 4,
                       record_tokenizer: bool = True) -> Path:
    """A token cache of random 2x4x4 grids (vocab 16, classes a and b) that ``tokenizer`` made, for previews."""
    rng = np.random.default_rng(0)
    source = {"tokenizer": str(tokenizer)} if record_tokenizer else {}
    return write_token_cache(out, rng.integers(0, 16, size=(num_clips, 2, 4, 4)), np.arange(num_clips) % 2,
                             vocab_size=16, class_names=["a", "b"], tokenizer_fingerprint=fingerprint, source=source)


def synthetic_generator(root: Path, videos_per_class: int = 6) -> tuple[Path, Path, Path]:
    """(dataset, generator checkpoint, tokenizer file) for evaluation tests: a synthetic UCF-101 tree of 2
    classes of 20-frame 64x64 videos, and a 2-step generator of its classes over 4x4x4 tokens (16x64x64 clips)."""
    from navid.cli import main
    from navid.data.synthetic import synthesize_dataset
    from navid.data.ucf101 import load_index

    data = synthesize_dataset(root / "data", classes=2, videos_per_class=videos_per_class, frames=20, size=64,
                              progress=False)
    names = load_index(data, "train").class_names
    tokenizer, fingerprint = make_tokenizer(root / "tokenizer.pt")
    tokens = np.random.default_rng(0).integers(0, 16, size=(4, 4, 4, 4))
    labels = np.arange(4) % 2
    cache = write_token_cache(root / "cache", tokens, labels, vocab_size=16, class_names=names,
                              tokenizer_fingerprint=fingerprint)
    assert main(["train", *tiny_overrides(cache, root / "run", steps=2)]) == 0
    return data, root / "run" / "checkpoints" / "last.ckpt", tokenizer
