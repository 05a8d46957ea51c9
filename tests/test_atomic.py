"""Atomic outputs: written next to the target and renamed; nothing written through $TMPDIR; modes kept."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest
import torch

from navid.utils.atomic import link_atomic, write_text_atomic
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


def test_link_atomic_names_the_same_file_and_a_later_replace_leaves_the_link_whole(tmp_path):
    src, dst = tmp_path / "last.ckpt", tmp_path / "step0000002.ckpt"
    write_text_atomic(src, "step 2")
    write_text_atomic(dst, "an older step file")
    link_atomic(src, dst)
    assert os.path.samefile(src, dst)
    write_text_atomic(src, "step 3")  # the next last.ckpt is renamed onto the name, as every navid writer does
    assert (dst.read_text(), src.read_text()) == ("step 2", "step 3")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step0000002.ckpt"]  # no temporary left


def test_link_atomic_copies_across_file_systems(tmp_path):
    # A hard link cannot cross file systems (EXDEV): the same call then writes a copy.
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        src = Path(other) / "last.ckpt"
        write_text_atomic(src, "step 2")
        link_atomic(src, tmp_path / "step0000002.ckpt")
        assert not os.path.samefile(src, tmp_path / "step0000002.ckpt")
    assert (tmp_path / "step0000002.ckpt").read_text() == "step 2"


def test_unwritable_outputs_are_refused_before_any_work(tmp_path, capsys):
    # Before: `navid evaluate --json DIR --overwrite` or `--json FILE/x.json` failed only at the final write, after
    # the whole evaluation, with an IsADirectoryError traceback or a bare "[Errno 17] File exists".
    from navid.cli import main
    from navid.utils.atomic import check_writable, prepare_output_dir, refuse_existing_file

    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(IsADirectoryError, match="--json .*folder is a folder; give the name of the file to write"):
        refuse_existing_file(tmp_path / "folder", overwrite=True)
    with pytest.raises(NotADirectoryError, match="--json .*afile/x.json: .*afile is a file, not a folder"):
        refuse_existing_file(tmp_path / "afile" / "x.json", overwrite=False)
    with pytest.raises(NotADirectoryError, match="--out .*afile/sub: .*afile is a file, not a folder"):
        prepare_output_dir(tmp_path / "afile" / "sub", overwrite=False)
    with pytest.raises(NotADirectoryError, match="--stats-cache"):
        check_writable(tmp_path / "afile", "--stats-cache", folder=True)
    assert main(["evaluate", "--generator", "g.ckpt", "--tokenizer", "t.pt", "--data", "d",
                 "--json", str(tmp_path / "folder"), "--overwrite"]) == 2
    assert "--json" in capsys.readouterr().err
    assert main(["fvd", "--real", "r", "--fake", "f", "--save-real-stats", str(tmp_path / "afile" / "s.npz")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
