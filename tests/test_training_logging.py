"""trainer.logger=csv|tensorboard and trainer.sample_every_n_steps preview videos (CSV on CPU)."""

from __future__ import annotations

import importlib.util

import imageio.v3 as iio
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from generator_helpers import cache_of_tokenizer, make_token_cache, make_tokenizer, tiny_config, tiny_overrides
from navid.cli import main
from navid.config import ConfigError
from navid.generation.lightning_module import train_generator
from navid.tokenizer.lightning_module import TokenizerModule
from navid.utils.training import build_trainer
from training_helpers import clip_loader, small_tokenizer_config


def test_generator_writes_sample_grids_every_n_steps_with_csv_logs(tmp_path):
    tokenizer, fingerprint = make_tokenizer(tmp_path / "tokenizer.pt")  # 16x16 tokens of 4 frames x 16 x 16 pixels
    cache = cache_of_tokenizer(tokenizer, fingerprint, tmp_path / "cache")
    cfg = tiny_config(cache, tmp_path / "run", steps=4, **{"trainer.sample_every_n_steps": 2,
                                                            "tokenizer_fingerprint": fingerprint})
    train_generator(cfg)
    videos = sorted(p.name for p in (tmp_path / "run" / "samples").iterdir())
    assert videos == ["step0000002.gif", "step0000004.gif"]
    frames = iio.imread(tmp_path / "run" / "samples" / "step0000004.gif")
    assert frames.shape[:3] == (8, 2 * 64, 2 * 64)  # 2x2 grid of 8x64x64 clips
    assert (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").is_file()



def test_a_resumed_run_with_accumulation_writes_each_preview_once(tmp_path):
    # The resumed run's first batch still has the checkpoint's global_step (a preview step) until its step ends;
    # the preview was written again there.
    tokenizer, fingerprint = make_tokenizer(tmp_path / "tokenizer.pt")
    cache = cache_of_tokenizer(tokenizer, fingerprint, tmp_path / "cache")
    common = {"trainer.sample_every_n_steps": 2, "tokenizer_fingerprint": fingerprint, "data.batch_size": 2,
              "trainer.accumulate_grad_batches": 2}
    train_generator(tiny_config(cache, tmp_path / "run", steps=2, **common))
    (tmp_path / "run" / "samples" / "step0000002.gif").unlink()
    train_generator(tiny_config(cache, tmp_path / "run", steps=4, **common), resume=True)
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step0000004.gif"]

def test_generator_previews_need_the_caches_tokenizer(tmp_path):
    tokenizer, fingerprint = make_tokenizer(tmp_path / "tokenizer.pt")
    cache = cache_of_tokenizer(tokenizer, fingerprint, tmp_path / "cache", record_tokenizer=False)
    cfg = tiny_config(cache, tmp_path / "run", steps=2, **{"trainer.sample_every_n_steps": 1})
    with pytest.raises(ConfigError, match="set data.tokenizer"):
        train_generator(cfg)
    other, _ = make_tokenizer(tmp_path / "other.pt", seed=1)
    cfg = tiny_config(cache, tmp_path / "run2", steps=2, **{"trainer.sample_every_n_steps": 1, "data.tokenizer": other})
    with pytest.raises(ConfigError, match="data.tokenizer = .*other.pt: this tokenizer did not make the token cache"):
        train_generator(cfg)


def test_tokenizer_writes_reconstruction_grids_once_per_optimizer_step(tmp_path):
    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=4", "trainer.accumulate_grad_batches=2",
                                 "trainer.sample_every_n_steps=2")
    module = TokenizerModule(cfg)
    trainer = build_trainer(cfg.trainer, tmp_path)
    assert isinstance(trainer.logger, CSVLogger)
    trainer.fit(module, train_dataloaders=clip_loader(cfg, 16))
    videos = sorted(p.name for p in (tmp_path / "reconstructions").iterdir())
    assert videos == ["step0000002.gif", "step0000004.gif"]
    frames = iio.imread(tmp_path / "reconstructions" / "step0000002.gif")
    assert frames.shape[:3] == (4, 16, 2 * 2 * 16)  # two clips side by side, each original | reconstruction


def test_tensorboard_logger_or_an_error_naming_the_key_before_the_run_folder_exists(tmp_path, capsys):
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(ConfigError, match=r"key 'trainer.logger'.*pip install 'navid\[tensorboard\]'"):
            small_tokenizer_config(tmp_path, "trainer.logger=tensorboard")
        # found when the logger was built, the error came after `navid train` had written out_dir/config.yaml,
        # so the corrected command was refused as a non-empty folder
        cache = make_token_cache(tmp_path / "cache")
        argv = ["train", *tiny_overrides(cache, tmp_path / "run", steps=2, **{"trainer.logger": "tensorboard"})]
        assert main(argv) == 2
        assert "pip install 'navid[tensorboard]'" in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
    else:
        cfg = small_tokenizer_config(tmp_path, "trainer.logger=tensorboard")
        assert isinstance(build_trainer(cfg.trainer, tmp_path).logger, TensorBoardLogger)
    with pytest.raises(ConfigError, match="key 'trainer.logger' must be one of csv, tensorboard, got 'wandb'"):
        small_tokenizer_config(tmp_path, "trainer.logger=wandb")
