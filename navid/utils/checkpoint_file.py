"""Reading a checkpoint or array file a user named: ``torch.load(weights_only=True)`` / ``np.load`` with errors that
name the file.

torch's own messages for a broken file are a ``KeyError`` on a text file, a ``BadZipFile`` on a truncated
one, or advice to retry with ``weights_only=False`` (running whatever the file holds): none says which
argument was wrong, and the last invites an unsafe load of a file that is simply damaged.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def load_checkpoint_file(path: str | os.PathLike, what: str, mmap: bool = False) -> Any:
    """The object saved in ``path``, on the CPU (callers move what they use, so a device error is never taken for
    a damaged file); a missing file, a folder or an unreadable file is one error naming it and ``what`` it should
    have been (e.g. "tokenizer")."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{what} checkpoint {path} is a folder, not a file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many kinds for damaged files
        message = str(err)
        marker = "WeightsUnpickler error: "  # what the restricted unpickler met (an opcode, a global's name)
        if marker in message:
            found = [line.strip() for line in message.split(marker, 1)[1].splitlines() if line.strip()]
            detail = found[0].split(" was not an allowed")[0][:120] if found else "refused by the unpickler"
        else:
            detail = f"{type(err).__name__}: {message.splitlines()[0][:120] if message else ''}".rstrip(": ")
        raise ValueError(f"{path}: not a readable {what} checkpoint ({detail}); is it a complete copy of the "
                         "file navid wrote?") from None


def load_array_file(path: str | os.PathLike, what: str, remedy: str, mmap: bool = False,
                    error: type[ValueError] = ValueError) -> Any:
    """An ``.npy`` array or ``.npz`` archive, or ``error`` naming the file, ``what`` it should be and ``remedy``.

    Never loads pickled objects, and never passes on numpy's advice to allow them.
    """
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise error(f"{path}: missing ({what}); {remedy}") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        objects = "pickle" in str(err) or "Python objects" in str(err)
        reason = "it holds Python objects, not numbers" if objects else str(err)
        raise error(f"{path}: not a readable {what} ({reason}); {remedy}") from None
