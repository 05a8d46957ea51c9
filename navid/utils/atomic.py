"""Atomic file output: every file navid writes appears whole or not at all.

A crash (or SIGKILL) while writing leaves at most a hidden temporary file next to the
target, never a truncated target, so a half-written checkpoint or report can't be
mistaken for a good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Sequence


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary file keeps the target's suffix so writers that pick a format from the
    extension (imageio, PyAV, numpy) behave as they would on the final name.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600: a new output gets the usual mode, a replaced one keeps its own
        mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else 0o666 & ~_current_umask()
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """An open binary file in :func:`atomic_path`'s place, flushed to disk before it is renamed onto ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def torch_save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` straight into the temporary file next to ``path`` (flushed to disk before the rename)."""
    import torch

    with atomic_file(path) as f:
        torch.save(obj, f)


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` through :func:`atomic_file` (flushed to disk before the rename)."""
    with open(src, "rb") as source, atomic_file(dst) as f:
        shutil.copyfileobj(source, f)
    return Path(dst)


def link_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make ``dst`` a hard link to ``src`` (one file, two names, no bytes written), replacing ``dst`` atomically.

    Where the file system has no hard links, ``dst`` becomes a copy. Writers in navid replace files by
    renaming a new one onto the name (:func:`atomic_path`), so a later write to either name leaves the
    other name holding the old contents.
    """
    target = Path(dst)
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp{target.suffix}")
    try:
        os.link(src, tmp)
    except OSError:
        return copy_atomic(src, dst)
    try:
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def check_writable(path: Path, what: str, folder: bool = False) -> None:
    """Stop before any work if ``path`` could not be written at the end of it: a file where a folder of its path
    should be, or no permission to write in the nearest folder that exists. ``folder``: ``path`` is a folder to write
    into (itself, where it exists, must be writable); otherwise a file, written into its parent."""
    for place in [path, *path.parents] if folder else path.parents:
        if place.exists():
            if not place.is_dir():
                raise NotADirectoryError(f"{what} {path}: {place} is a file, not a folder")
            if not os.access(place, os.W_OK | os.X_OK):
                raise PermissionError(f"{what} {path}: no permission to write in {place}")
            return


def prepare_output_dir(path: str | os.PathLike, overwrite: bool, what: str = "--out") -> Path:
    """Create an output folder, refusing to reuse a non-empty one unless ``overwrite``.

    Nothing is deleted here: a command that replaces its earlier outputs calls :func:`remove_earlier_outputs`
    once its inputs have loaded, so a mistyped argument costs nothing already written.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{what} {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{what} {out} exists and is not empty; pass --overwrite to write into it")
    check_writable(out, what, folder=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def remove_earlier_outputs(out: Path, own_outputs: Sequence[str]) -> None:
    """Remove a command's earlier outputs (``own_outputs``: names or glob patterns in ``out``) before it writes
    again under ``--overwrite``, so a smaller run leaves none of a larger run's files behind for a tool that reads
    the whole folder (``navid fvd`` on ``videos/``). Other files are left alone; a symlink is removed, never
    followed."""
    for pattern in own_outputs:
        for earlier in out.glob(pattern):
            if earlier.is_dir() and not earlier.is_symlink():
                shutil.rmtree(earlier)
            else:
                earlier.unlink()


def refuse_existing_file(path: Optional[str | os.PathLike], overwrite: bool, what: str = "--json") -> None:
    """Stop before any work if the output file ``path`` exists and ``overwrite`` was not given, or could not be
    written (a folder of that name, a file among its folders, no permission)."""
    if path is None:
        return
    path = Path(path)
    check_output_file(path, what)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{what} {path} exists; pass --overwrite to replace it")


def check_output_file(path: Path, what: str) -> None:
    """Stop before any work if the file ``path`` could not be written at the end of it: a folder of that name, a
    file among its folders, or no permission."""
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give the name of the file to write")
    check_writable(path, what)
