"""Every shipped YAML under configs/ loads through its schema (unknown keys and bad values fail here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from navid.config import load_config
from navid.generation.config import GeneratorTrainConfig
from navid.tokenizer.config import TokenizerTrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Per folder: the schema, and the data paths a user must give on the command line.
SCHEMAS = {
    "generator": (GeneratorTrainConfig, ["data.tokens=TOKENS"]),
    "tokenizer": (TokenizerTrainConfig, ["data.root=ROOT"]),
}
FILES = sorted(CONFIGS.rglob("*.yaml"))


def test_every_config_folder_has_a_schema():
    assert FILES and {path.relative_to(CONFIGS).parts[0] for path in FILES} <= set(SCHEMAS)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads(path):
    schema, required = SCHEMAS[path.relative_to(CONFIGS).parts[0]]
    cfg = load_config(schema, path, required)
    assert cfg.out_dir


@pytest.mark.parametrize("size", ["tiny", "S", "B", "L"])
def test_generator_sizes_build(size):
    from navid.generation.transformer import TRANSFORMER_SIZES, TransformerConfig

    cfg = load_config(GeneratorTrainConfig, CONFIGS / "generator" / f"{size}.yaml", ["data.tokens=TOKENS"])
    assert cfg.model.size == size
    TransformerConfig(**cfg.model.transformer_kwargs(), vocab_size=16, num_classes=2)
    assert set(TRANSFORMER_SIZES) == {"tiny", "S", "B", "L"}


@pytest.mark.parametrize("override, message", [
    ("trainer.strategy=FSDP_cpu_offload", "key 'trainer.strategy'.*not supported.*Use 'fsdp'.*or 'ddp'"),
    ("trainer.strategy=fsdp_full_shard", "key 'trainer.strategy'.*not supported.*Use 'fsdp'.*or 'ddp'"),
    ("trainer.strategy=HSDP", "key 'trainer.strategy'.*not supported.*Use 'fsdp'.*'hsdp'.*or 'ddp'"),
    ("trainer.precision=bf16-true", "key 'trainer.precision'.*EMA.*Use 'bf16-mixed'"),
    ("trainer.precision=16-true", "key 'trainer.precision'.*EMA.*Use 'bf16-mixed'"),
])
def test_settings_that_break_the_ema_are_refused_with_the_key_named(override, message):
    # Lightning's FSDP1 strategies would shard the model and its EMA as one flat parameter each, split at other
    # places; half-precision weights round the EMA's updates
    from navid.config import ConfigError

    for folder, (schema, required) in SCHEMAS.items():
        path = next((CONFIGS / folder).glob("*.yaml"))
        with pytest.raises(ConfigError, match=message):
            load_config(schema, path, [*required, override])
        assert load_config(schema, path, [*required, "trainer.precision=bf16-mixed"]).trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("strategy", ["fsdp", "hsdp"])
def test_sharding_is_for_the_generator_with_full_or_bf16_mixed_precision(strategy):
    from navid.config import ConfigError

    generator, tokenizer = CONFIGS / "generator" / "L.yaml", CONFIGS / "tokenizer" / "ucf101.yaml"
    sharded = ["data.tokens=TOKENS", f"trainer.strategy={strategy}"]
    assert load_config(GeneratorTrainConfig, generator, sharded).trainer.strategy == strategy
    for precision in ("32", "32-true", "bf16", "bf16-mixed"):  # Lightning's names and their aliases
        assert load_config(GeneratorTrainConfig, generator, [*sharded, f"trainer.precision={precision}"])
    with pytest.raises(ConfigError, match=f"key 'trainer.precision': '16-mixed' does not run under .*{strategy}"):
        load_config(GeneratorTrainConfig, generator, [*sharded, "trainer.precision=16-mixed"])
    with pytest.raises(ConfigError, match=f"key 'trainer.strategy': '{strategy}' is wired for the generator.*'ddp'"):
        load_config(TokenizerTrainConfig, tokenizer, ["data.root=ROOT", f"trainer.strategy={strategy}"])


@pytest.mark.parametrize("override, message", [
    ("optim.betas.0=0.5", "give a list value whole"),
    ("optim.betas=[0.9,foo]", "betas"),
    ("trainer.val_every_n_steps=0", "key 'trainer.val_every_n_steps' must be positive"),
    ("trainer.accumulate_grad_batches=0", "key 'trainer.accumulate_grad_batches' must be positive"),
    ("trainer.limit_val_batches=-1", "key 'trainer.limit_val_batches' must be >= 0"),
    ("trainer.max_time_minutes=-1", "key 'trainer.max_time_minutes' must be positive"),
    ("optim.min_lr_ratio=5", r"key 'optim.min_lr_ratio' must be in \[0, 1\]"),
    ("optim.warmup_steps=-5", "key 'optim.warmup_steps' must be >= 0"),
    # Before: a TypeError / ZeroDivisionError traceback, or an error without the key.
    ("model.overrides.dim=abc", "key 'model.overrides.dim' must be an integer, got 'abc'"),
    ("model.overrides.num_heads=0", "model.overrides {'num_heads': 0}: num_heads must be >= 1"),
    ("model.overrides.depth=-1", "model.overrides {'depth': -1}: .*depth must be >= 1"),
])
def test_bad_values_fail_when_the_config_loads_not_mid_training(override, message):
    from navid.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(GeneratorTrainConfig, CONFIGS / "generator" / "tiny.yaml", ["data.tokens=TOKENS", override])


@pytest.mark.parametrize("overrides, message", [
    # Before: ZeroDivisionError / TypeError / IndexError tracebacks, or errors inside the first epoch without the key.
    (["model.norm_groups=0"], "key 'model.norm_groups' must be >= 1"),
    (["model.fsq_levels=[8,x]"], r"key 'model.fsq_levels\[1\]'"),
    (["model.patch_size=[2,0,4]"], "key 'model.patch_size' needs values >= 1"),
    (["model.quantizer=vq", "model.vq_codebook_size=0"], "key 'model.vq_codebook_size' must be >= 1"),
    (["data.resolution=60"], r"key 'data.resolution' \(60\) is not divisible by the tokenizer's compression 4x8x8"),
    (["loss.perceptual_weight=1", "loss.perceptual_layers=[Nope]"], r"key 'loss.perceptual_layers': .*\['Nope'\]"),
])
def test_bad_tokenizer_values_fail_when_the_config_loads(overrides, message):
    from navid.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(TokenizerTrainConfig, CONFIGS / "tokenizer" / "tiny.yaml", ["data.root=ROOT", *overrides])


def test_a_yaml_file_that_is_not_a_mapping_names_the_file(tmp_path):
    from navid.config import ConfigError

    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list.yaml: expected a mapping"):
        load_config(GeneratorTrainConfig, tmp_path / "list.yaml", ["data.tokens=TOKENS"])
