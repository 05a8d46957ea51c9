"""Resilience of generator training: resume, SIGKILL + --resume, NaN stop, output-folder rules."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from generator_helpers import assert_same_weights, make_token_cache, tiny_config, tiny_overrides
from navid.cli import main
from navid.generation.lightning_module import train_generator
from navid.utils.run_stops import NonFiniteLossError


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resume_continues_step_count_and_optimizer(tmp_path):
    cache = make_token_cache(tmp_path / "cache")
    # Constant LR after warm-up (min_lr_ratio=1), so a 10-step run resumed to 20 follows the
    # same LR as an uninterrupted 20-step run; one batch holds the whole cache, so data order
    # does not matter either. Any lost optimizer state would show in the final weights.
    common = {"optim.min_lr_ratio": 1.0, "optim.ema_decay": 0.9}
    full = _load(train_generator(tiny_config(cache, tmp_path / "full", steps=20, **common)))

    train_generator(tiny_config(cache, tmp_path / "split", steps=10, **common))
    first = _load(tmp_path / "split" / "checkpoints" / "last.ckpt")
    assert first["global_step"] == 10
    resumed = _load(train_generator(tiny_config(cache, tmp_path / "split", steps=20, **common), resume=True))

    assert resumed["global_step"] == full["global_step"] == 20
    adam = resumed["optimizer_states"][0]["state"]
    assert all(int(s["step"]) == 20 for s in adam.values())
    # Lost optimizer or EMA state would shift weights by about one Adam step (~lr = 3e-3), two orders above
    # this tolerance; float32 round-off of the same 20 steps in the same process stays below 1e-6.
    assert_same_weights(resumed, full)



@pytest.mark.slow
@pytest.mark.parametrize("stop, every, workers, accumulate, validate", [
    (4, 10, 0, 1, False),  # inside the second epoch, from the checkpoint written when the run stopped
    (6, 3, 2, 1, False),  # the periodic checkpoint on an epoch's last batch, with loader workers
    (2, 10, 0, 2, False),  # two batches a step; the run stopped on an epoch's last batch
    (3, 10, 0, 2, False),  # two batches a step; stopped inside an epoch
    (4, 2, 0, 1, True),  # validation right after the checkpoint's step
])
def test_a_resumed_run_trains_on_the_batches_of_the_uninterrupted_run(tmp_path, stop, every, workers, accumulate,
                                                                     validate):
    # 14 training clips in batches of 4: 3 batches an epoch, 2 clips left out of each; label dropout is on. Before,
    # the resumed run restarted its epoch (and, seeded again, repeated the first run's orders), and a checkpoint
    # written when fit ended resumed with another accumulation phase: other batches and steps, other weights.
    import shutil

    cache = make_token_cache(tmp_path / "cache", num_clips=18 if validate else 14, num_classes=3)
    common = {"optim.min_lr_ratio": 1.0, "model.overrides.class_dropout": 0.5, "data.num_workers": workers,
              "trainer.accumulate_grad_batches": accumulate, "trainer.checkpoint_every_n_steps": every}
    if validate:
        common.update({"data.val_fraction": 0.2, "trainer.val_every_n_steps": 2})
    steps = 11 // accumulate
    full = _load(train_generator(tiny_config(cache, tmp_path / "full", steps=steps, **common)))

    split = tmp_path / "split"
    train_generator(tiny_config(cache, split, steps=stop + 1 if every < stop else stop, **common))
    if every < stop:  # resume from the periodic checkpoint, as after a crash, not from the final one
        shutil.copy(split / "checkpoints" / f"step{stop:07d}.ckpt", split / "checkpoints" / "last.ckpt")
    assert _load(split / "checkpoints" / "last.ckpt")["global_step"] == stop
    resumed = _load(train_generator(tiny_config(cache, split, steps=steps, **common), resume=True))
    assert_same_weights(resumed, full)





def test_resumed_runs_keep_only_the_newest_step_file_and_never_rewrite_one_mid_step(tmp_path):
    # Two batches a step, a step file every 2 steps. Before: each resume left the step file it resumed from
    # behind (last.ckpt recorded the previous one as the file to replace), and the resumed run's first batch,
    # still at the checkpoint's step, saved that step's file again with one batch more counted as consumed.
    cache = make_token_cache(tmp_path / "cache", num_clips=14, num_classes=3)
    common = {"trainer.accumulate_grad_batches": 2, "trainer.checkpoint_every_n_steps": 2}
    out = tmp_path / "run"
    folder = out / "checkpoints"

    def consumed(name: str) -> tuple[int, int]:
        ckpt = _load(folder / name)
        return ckpt["global_step"], ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["ready"]

    train_generator(tiny_config(cache, out, steps=2, **common))
    assert consumed("step0000002.ckpt") == (2, 3)  # 3 batches an epoch: its last one ends step 2
    train_generator(tiny_config(cache, out, steps=3, **common), resume=True)
    assert consumed("step0000002.ckpt") == (2, 3)
    with warnings.catch_warnings(record=True) as caught:  # step 3 ends inside an epoch
        warnings.simplefilter("always")
        train_generator(tiny_config(cache, out, steps=4, **common), resume=True)
    # Lightning's "your dataloader is not resumable" would contradict the exact resume the sampler gives
    assert not [w for w in caught if "dataloader is not resumable" in str(w.message)]
    train_generator(tiny_config(cache, out, steps=6, **common), resume=True)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step0000006.ckpt"]


def test_resuming_with_another_batch_size_warns_that_the_order_is_not_continued(tmp_path):
    cache = make_token_cache(tmp_path / "cache", num_clips=8)
    out = tmp_path / "run"
    train_generator(tiny_config(cache, out, steps=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_generator(tiny_config(cache, out, steps=3), resume=True)
    assert not [w for w in caught if "resumed with batch size" in str(w.message)]
    with pytest.warns(UserWarning, match="resumed with batch size 2 on 1 rank.*trained with 4 on 1"):
        train_generator(tiny_config(cache, out, steps=4, **{"data.batch_size": 2}), resume=True)

@pytest.mark.slow
def test_a_run_stopped_by_its_time_limit_stops_at_a_step_end_and_resumes_exactly(tmp_path, capsys):
    # Two batches a step and a limit that has passed by the first batch's end: the stop waits for the step to end
    # (Lightning's max_time stopped inside the accumulation, whose half-summed gradients no checkpoint holds).
    cache = make_token_cache(tmp_path / "cache", num_clips=14, num_classes=3)
    common = {"optim.min_lr_ratio": 1.0, "model.overrides.class_dropout": 0.5,
              "trainer.accumulate_grad_batches": 2, "trainer.checkpoint_every_n_steps": 100}
    full = _load(train_generator(tiny_config(cache, tmp_path / "full", steps=5, **common)))
    split = tmp_path / "split"
    stopped = _load(train_generator(tiny_config(cache, split, steps=5, **common, **{"trainer.max_time_minutes": 1e-9})))
    assert stopped["global_step"] == 1
    assert stopped["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["ready"] == 2
    assert "max_time_minutes=1e-09 reached: stopping at step 1" in capsys.readouterr().out
    resumed = _load(train_generator(tiny_config(cache, split, steps=5, **common), resume=True))
    assert_same_weights(resumed, full)


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", [
    [],  # FSQ, the default
    ["model.quantizer=vq", "model.vq_codebook_size=64", "model.vq_decay=0.5", "model.vq_dead_code_threshold=0.4"],
])
def test_a_resumed_tokenizer_run_trains_on_the_clips_of_the_uninterrupted_run(synth_root, tmp_path, quantizer):
    # 12 training videos in batches of 2, clips of 4 of their 20 frames from a random start, flipped at random,
    # loaded by 2 workers: a resumed run must cut and flip the same clips in the same order. The VQ run's dead codes
    # are restarted from random latents of the batch: the resumed run must draw the same ones.
    from training_helpers import small_tokenizer_config

    from navid.tokenizer.lightning_module import train_tokenizer

    def fit(out, steps: int, resume: bool = False) -> dict:
        cfg = small_tokenizer_config(out, f"data.root={synth_root}", f"data.cache_dir={tmp_path}", "data.num_workers=2",
                                     f"trainer.max_steps={steps}", "trainer.checkpoint_every_n_steps=100",
                                     "optim.min_lr_ratio=1.0", *quantizer)
        train_tokenizer(cfg, resume=resume)
        return _load(out / "checkpoints" / "last.ckpt")

    full = fit(tmp_path / "full", 9)
    assert fit(tmp_path / "split", 4)["global_step"] == 4
    resumed = fit(tmp_path / "split", 9, resume=True)
    assert_same_weights(resumed, full)



@pytest.mark.slow
def test_a_stop_file_stops_the_run_at_a_logging_step_end_and_it_resumes_exactly(tmp_path, capsys):
    # out_dir/STOP (what the SLURM templates write on SIGUSR1) is looked for at logging steps (every 2 steps here),
    # acted on where a step ends, and removed; last.ckpt is written there.
    cache = make_token_cache(tmp_path / "cache", num_clips=14, num_classes=3)
    common = {"optim.min_lr_ratio": 1.0, "model.overrides.class_dropout": 0.5, "trainer.log_every_n_steps": 2,
              "trainer.accumulate_grad_batches": 2, "trainer.checkpoint_every_n_steps": 100}
    full = _load(train_generator(tiny_config(cache, tmp_path / "full", steps=5, **common)))
    split = tmp_path / "split"
    split.mkdir()
    (split / "STOP").touch()
    assert _load(train_generator(tiny_config(cache, split, steps=5, **common)))["global_step"] == 2
    assert not (split / "STOP").exists()
    assert f"{split / 'STOP'} found: stopping at step 2" in capsys.readouterr().out
    resumed = _load(train_generator(tiny_config(cache, split, steps=5, **common), resume=True))
    assert resumed["global_step"] == 5
    assert_same_weights(resumed, full)


def test_nan_loss_stops_training_naming_the_step(tmp_path, capsys):
    cache = make_token_cache(tmp_path / "cache")
    # A learning rate of 1e36 makes the logits overflow within a few steps: a real divergence.
    cfg = tiny_config(cache, tmp_path / "run", steps=50, **{"optim.lr": 1e36, "optim.warmup_steps": 1})
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss .* at global step \d+"):
        train_generator(cfg)
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()

    argv = ["train", *tiny_overrides(cache, tmp_path / "cli", steps=50, **{"optim.lr": 1e36, "optim.warmup_steps": 1})]
    assert main(argv) == 1
    assert "at global step" in capsys.readouterr().err


def test_existing_output_needs_resume_or_overwrite(tmp_path, capsys):
    cache = make_token_cache(tmp_path / "cache")
    argv = ["train", *tiny_overrides(cache, tmp_path / "run", steps=2)]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    # --overwrite replaces the earlier run: none of its step checkpoints or logs stay beside the new run's (they did,
    # and the highest step file was the discarded run's), and a mistyped input stops before anything is removed.
    longer = ["train", *tiny_overrides(cache, tmp_path / "run", steps=4, **{"trainer.checkpoint_every_n_steps": 2})]
    assert main([*longer, "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt", "step0000004.ckpt"]
    assert main([*longer, "--overwrite", "data.tokens=/nonexistent"]) == 2
    assert (tmp_path / "run" / "checkpoints" / "step0000004.ckpt").is_file()
    assert main([*argv, "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt"]
    assert [p.name for p in (tmp_path / "run" / "logs").iterdir()] == ["version_0"]
    assert _load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert main([*argv, "--resume"]) == 0
    assert main(["train", "--resume", *tiny_overrides(cache, tmp_path / "none", steps=2)]) == 2
    assert "does not exist" in capsys.readouterr().err
    # the restored optimizer would keep the old learning rate while the run's config recorded the new one
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert main(["train", "--resume", *tiny_overrides(cache, tmp_path / "run", steps=4, **{"optim.lr": 1e-3})]) == 2
    assert "optim.lr: 0.003 -> 0.001" in capsys.readouterr().err
    assert (tmp_path / "run" / "config.yaml").read_text() == config
    assert main(["train", "--resume", *tiny_overrides(cache, tmp_path / "run", steps=4)]) == 0  # more steps: fine
    # Before: another token cache was resumed on silently (its tokenizer then recorded in the checkpoint).
    from navid.data.token_cache import write_token_cache

    other = make_token_cache(tmp_path / "other", num_clips=6)
    assert main(["train", "--resume", *tiny_overrides(other, tmp_path / "run", steps=6)]) == 2
    assert "is not the token cache this run trained on (token grids 4 -> 6)" in capsys.readouterr().err
    retokenized = write_token_cache(tmp_path / "retokenized", np.zeros((4, 2, 4, 4), dtype=np.int64), np.arange(4) % 2,
                                    vocab_size=16, class_names=["class0", "class1"], tokenizer_fingerprint="another")
    assert main(["train", "--resume", *tiny_overrides(retokenized, tmp_path / "run", steps=6)]) == 2
    assert "(tokenizer " in capsys.readouterr().err


def test_a_start_that_fails_on_its_trainer_settings_says_so_in_one_line_and_the_fixed_command_runs(tmp_path, capsys):
    # Before: Lightning's TypeError / MisconfigurationException came out as a traceback, and the config.yaml written
    # before it made the corrected command fail with "exists and is not empty; pass --overwrite".
    cache = make_token_cache(tmp_path / "cache")
    for devices in ("0", "-1"):
        assert main(["train", *tiny_overrides(cache, tmp_path / "run", steps=2), f"trainer.devices={devices}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"trainer.accelerator=cpu, trainer.devices={devices}" in err[0], err
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["config.yaml"]
    assert main(["train", *tiny_overrides(cache, tmp_path / "run", steps=2)]) == 0
    assert "holds only what a failed start left (config.yaml); starting afresh" in capsys.readouterr().out
    assert _load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 2
    # A folder with a run's work in it is still refused.
    assert main(["train", *tiny_overrides(cache, tmp_path / "run", steps=2)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_overrides_may_follow_the_flags(tmp_path, capsys):
    # "the same command with --resume": argparse took only the words before the first flag as overrides.
    cache = make_token_cache(tmp_path / "cache")
    overrides = tiny_overrides(cache, tmp_path / "run", steps=2)
    assert main(["train", *overrides[:3], "--resume", *overrides[3:]]) == 2
    assert "--resume: out_dir" in capsys.readouterr().err  # parsed: out_dir came after the flag
    assert main(["train", *overrides]) == 0
    assert main(["train", "--resume", *overrides[:-1], "trainer.max_steps=3", "trainer.progress_bar=false"]) == 0
    assert _load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 3
    with pytest.raises(SystemExit, match="2"):  # argparse's own exit
        main(["train", "--resume", *overrides, "--no-such-flag"])
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_a_folder_holding_only_empty_folders_counts_as_empty(tmp_path, capsys):
    # A start that fails inside its first step can leave the logger's empty logs/version_0 and nothing else (no
    # config.yaml: train-tokenizer writes none). Before, the corrected command was refused.
    from navid.utils.training import prepare_run_dir

    (tmp_path / "run" / "logs" / "version_0").mkdir(parents=True)
    assert prepare_run_dir(tmp_path / "run", overwrite=False) == tmp_path / "run"
    assert "holds only what a failed start left (empty folders); starting afresh" in capsys.readouterr().out
    (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").write_text("step\n")
    with pytest.raises(FileExistsError, match="is not empty"):
        prepare_run_dir(tmp_path / "run", overwrite=False)


@pytest.mark.slow
def test_sigkill_then_resume_reaches_the_same_final_step(tmp_path):
    cache = make_token_cache(tmp_path / "cache")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "navid.cli", "train",
            *tiny_overrides(cache, out, steps=150, **{"trainer.checkpoint_every_n_steps": 5})]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = out / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = _load(last)["global_step"]
    assert 0 < killed_at < 150

    done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    final = _load(last)
    assert final["global_step"] == 150
    # The resumed run started from the killed run's checkpoint, not from scratch.
    logged_steps = (out / "logs" / "version_1" / "metrics.csv").read_text().splitlines()[1:]
    assert min(int(line.split(",")[1]) for line in logged_steps if line) >= killed_at


@pytest.mark.slow
def test_sigterm_stops_with_a_checkpoint_at_that_step_and_a_failing_status(tmp_path):
    # Before: Lightning's SIGTERMException (a SystemExit without a status) ended the command with status 0 and
    # no checkpoint since the last periodic one, so a scheduler or `navid train ... && navid sample ...` took the
    # stopped run for a finished one.
    import re

    cache = make_token_cache(tmp_path / "cache")
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "navid.cli", "train",
            *tiny_overrides(cache, out, steps=100_000, **{"trainer.checkpoint_every_n_steps": 7})]
    last = out / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(argv, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 143, err[-2000:]
    stopped = re.search(r"navid train: stopped: SIGTERM at step (\d+): (\S+) holds step \1, and --resume continues "
                        r"from it", err)
    assert stopped and Path(stopped[2]) == last.resolve(), err[-2000:]
    step = int(stopped[1])
    assert _load(last)["global_step"] == step
    resumed = ["train", "--resume", *tiny_overrides(cache, out, steps=step + 2)]
    assert main(resumed) == 0 and _load(last)["global_step"] == step + 2


def test_checkpoint_on_an_epochs_last_batch_is_written_with_validation_on(tmp_path):
    # 4 batches per epoch, a checkpoint every 4 steps, validation (every 100 steps) configured: Lightning's
    # monitored checkpoint deferred the save at each epoch's end to a validation that never came.
    from training_helpers import clip_loader, small_tokenizer_config

    from navid.tokenizer.lightning_module import TokenizerModule
    from navid.utils.training import build_trainer

    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=6", "trainer.checkpoint_every_n_steps=4",
                                 "trainer.val_every_n_steps=100", "trainer.limit_val_batches=1")
    trainer = build_trainer(cfg.trainer, tmp_path)
    trainer.fit(TokenizerModule(cfg), train_dataloaders=clip_loader(cfg, 8), val_dataloaders=clip_loader(cfg, 2))
    assert _load(tmp_path / "checkpoints" / "step0000004.ckpt")["global_step"] == 4
    assert _load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 6  # where the run stopped


class CountSaves(L.Callback):
    """The global step of every checkpoint Lightning assembles (each one a gather of the state under FSDP)."""

    def __init__(self) -> None:
        self.at_steps: list[int] = []

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.at_steps.append(trainer.global_step)


def test_a_periodic_checkpoint_is_assembled_once_and_its_step_file_is_last_ckpt(tmp_path):
    # Before: the step file and last.ckpt were two saves of the same step, each gathering and writing the whole
    # state (model, EMA, AdamW): twice the I/O, and under FSDP two gathers onto rank 0.
    from training_helpers import clip_loader, small_tokenizer_config

    from navid.tokenizer.lightning_module import TokenizerModule
    from navid.utils.training import build_trainer

    cfg = small_tokenizer_config(tmp_path, "trainer.max_steps=5", "trainer.checkpoint_every_n_steps=2")
    saves = CountSaves()
    trainer = build_trainer(cfg.trainer, tmp_path, callbacks=[saves])
    folder = tmp_path / "checkpoints"
    linked: list[bool] = []

    class LookAfterStep4(L.Callback):  # runs after the checkpoint callback, at the same batch end
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 4:
                linked.append(os.path.samefile(folder / "last.ckpt", folder / "step0000004.ckpt"))

    trainer.callbacks.append(LookAfterStep4())
    trainer.fit(TokenizerModule(cfg), train_dataloaders=clip_loader(cfg, 16))
    assert saves.at_steps == [2, 4, 5]  # one per periodic step, one where the run stopped
    assert linked == [True]
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step0000004.ckpt"]
    assert _load(folder / "step0000004.ckpt")["global_step"] == 4  # last.ckpt was replaced, not written through
    assert _load(folder / "last.ckpt")["global_step"] == 5


def _fit_tokenizer(out, max_steps: int, resume: bool) -> None:
    from training_helpers import clip_loader, small_tokenizer_config

    from navid.tokenizer.lightning_module import TokenizerModule
    from navid.utils.training import build_trainer

    cfg = small_tokenizer_config(out, f"trainer.max_steps={max_steps}", "trainer.checkpoint_every_n_steps=2")
    trainer = build_trainer(cfg.trainer, out)
    ckpt = str(Path(out) / "checkpoints" / "last.ckpt") if resume else None
    trainer.fit(TokenizerModule(cfg), train_dataloaders=clip_loader(cfg, 16), ckpt_path=ckpt)


def test_step_files_are_replaced_whatever_the_spelling_of_the_folder_and_after_a_kill_between_saves(
        tmp_path, monkeypatch):
    # A run started as out_dir=run and resumed as /abs/.../run (an interactive start, then a SLURM job) must still
    # replace its step file; so must a run killed after writing last.ckpt but before its old step file went.
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run" / "checkpoints"
    _fit_tokenizer(Path("run"), 2, resume=False)
    _fit_tokenizer(tmp_path / "run", 4, resume=True)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step0000004.ckpt"]

    # The state of a kill at step 6 between the two: last.ckpt names step 6's file, which was never linked, and
    # step 4's file is still there.
    _fit_tokenizer(tmp_path / "run", 6, resume=True)
    killed = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    recorded = killed["callbacks"]["RunCheckpoints"]["step_files"]
    assert recorded == [str(folder.resolve() / f"step000000{step}.ckpt") for step in (4, 6)]  # 4: the replaced one
    torch.save(killed, folder / "last.ckpt")
    (folder / "step0000006.ckpt").rename(folder / "step0000004.ckpt")
    _fit_tokenizer(tmp_path / "run", 8, resume=True)
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step0000008.ckpt"]


def test_a_moved_run_keeps_writing_last_ckpt_and_its_time_limit_restarts(tmp_path):
    # Lightning's checkpoint callback, resumed in another folder, wrote last-v1.ckpt and left last.ckpt (what
    # --resume reads) at the old step; Lightning's max_time counted the earlier run's time, so a resumed run
    # that had stopped on its limit trained no step.
    import shutil

    from training_helpers import clip_loader, small_tokenizer_config

    from navid.tokenizer.lightning_module import TokenizerModule
    from navid.utils.training import build_trainer

    def fit(out, max_steps: int, resume: bool, minutes=None):
        cfg = small_tokenizer_config(out, f"trainer.max_steps={max_steps}", "trainer.checkpoint_every_n_steps=2",
                                     f"trainer.max_time_minutes={'null' if minutes is None else minutes}")
        trainer = build_trainer(cfg.trainer, out)
        ckpt = str(out / "checkpoints" / "last.ckpt") if resume else None
        trainer.fit(TokenizerModule(cfg), train_dataloaders=clip_loader(cfg, 16), ckpt_path=ckpt)
        return trainer.global_step

    first, moved = tmp_path / "first", tmp_path / "moved"
    assert fit(first, 4, resume=False) == 4
    shutil.copytree(first, moved)
    assert fit(moved, 6, resume=True) == 6
    names = sorted(p.name for p in (moved / "checkpoints").iterdir())  # the copied step 4 stays: not this run's
    assert names == ["last.ckpt", "step0000004.ckpt", "step0000006.ckpt"]
    assert _load(moved / "checkpoints" / "last.ckpt")["global_step"] == 6

    timed = tmp_path / "timed"
    stopped = fit(timed, 100_000, resume=False, minutes=0.01)
    assert 0 < stopped < 100_000  # (RunCheckpoints wrote last.ckpt at this step)
    assert fit(timed, 100_000, resume=True, minutes=0.01) > stopped  # the limit counts from this run's start
