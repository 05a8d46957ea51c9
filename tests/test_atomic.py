"""Atomic outputs: written next to the target and renamed; nothing written through $TMPDIR; modes kept."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

import torch

from navid.utils.atomic import write_text_atomic
from navid.utils.training import AtomicCheckpointIO


def test_checkpoints_are_written_next_to_the_target_only(tmp_path, monkeypatch):
    # Lightning's own save goes through a whole-checkpoint temporary file in $TMPDIR (moved away after a
    # complete save, left there by a kill): every temporary file a save creates must sit beside the target.
    folders, make_temp = [], tempfile.mkstemp

    def recording_mkstemp(*args, **kwargs):
        fd, path = make_temp(*args, **kwargs)
        folders.append(Path(path).parent)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", recording_mkstemp)
    target = tmp_path / "ckpts" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(5.0)}}, target)
    assert torch.equal(torch.load(target, weights_only=True)["state_dict"]["w"], torch.arange(5.0))
    assert folders == [target.parent] and [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("{}")
    target.chmod(0o600)
    write_text_atomic(target, "{\"a\": 1}\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_text() == "{\"a\": 1}\n"
