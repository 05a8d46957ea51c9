"""PyTorch port of the TF-Hub Kinetics-400 RGB I3D (Carreira & Zisserman, 2017), the FVD detector.

Structure follows deepmind/kinetics-i3d ``i3d.py`` (as re-implemented in i3d-jax 0.0.1): Unit3D =
conv (no bias) + BatchNorm without scale (eps 1e-3) + ReLU, TF "SAME" padding everywhere — padding
``total = max((ceil(n/s)-1)*s + k - n, 0)``, ``low = total // 2``, the extra element at the end — and
max-pools whose padding is -inf so it never wins. BatchNorm is folded into the conv at load time
(inference only), which changes results only at float rounding level.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from navid.metrics.i3d_weights import INSTALL_HINT, default_checkpoint_path, file_sha256, read_jax_checkpoint
from navid.utils.checkpoint_file import load_checkpoint_file

BN_EPS = 1e-3
NUM_CLASSES = 400

# Inception block widths: (branch0, branch1 reduce, branch1, branch2 reduce, branch2, branch3 pool proj).
_INCEPTION = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Network order: ("unit", name, out, kernel, stride) | ("pool", kernel, stride) | ("mixed", name).
_LAYERS = (
    ("unit", "Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2)),
    ("pool", (1, 3, 3), (1, 2, 2)),
    ("unit", "Conv3d_2b_1x1", 64, (1, 1, 1), (1, 1, 1)),
    ("unit", "Conv3d_2c_3x3", 192, (3, 3, 3), (1, 1, 1)),
    ("pool", (1, 3, 3), (1, 2, 2)),
    ("mixed", "Mixed_3b"),
    ("mixed", "Mixed_3c"),
    ("pool", (3, 3, 3), (2, 2, 2)),
    ("mixed", "Mixed_4b"),
    ("mixed", "Mixed_4c"),
    ("mixed", "Mixed_4d"),
    ("mixed", "Mixed_4e"),
    ("mixed", "Mixed_4f"),
    ("pool", (2, 2, 2), (2, 2, 2)),
    ("mixed", "Mixed_5b"),
    ("mixed", "Mixed_5c"),
)
LAYER_NAMES = tuple(layer[1] for layer in _LAYERS if layer[0] != "pool")  # what activations() can return


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> list[int]:
    """TF "SAME" padding for (T, H, W) in ``F.pad`` order (W low/high, H, T); extra element at the end."""
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class Unit3D(nn.Module):
    """Conv3d with BatchNorm folded in (bias = BN offset), TF SAME padding, optional ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int, int], stride=(1, 1, 1), relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        # Stride-1 odd kernels pad symmetrically, which Conv3d does itself (faster than F.pad).
        self.symmetric = all(s == 1 and k % 2 == 1 for k, s in zip(self.kernel, self.stride))
        padding = tuple(k // 2 for k in self.kernel) if self.symmetric else 0
        self.conv = nn.Conv3d(in_ch, out_ch, self.kernel, self.stride, padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        if not self.symmetric:
            x = F.pad(x, same_padding(tuple(x.shape[2:]), self.kernel, self.stride))
        x = self.conv(x)
        return F.relu(x) if self.relu else x


def max_pool_same(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """TF SAME max-pool: padded cells are -inf so they never win.

    Without autograd the pool runs as one max per axis over ``unfold`` windows: a max of maxes
    is the same max, so the values are bit-identical to ``F.max_pool3d``, whose CPU kernel is
    4-10x slower here (benchmarks/results/demo_speed.md). With autograd ``F.max_pool3d`` stays:
    its backward is the cheaper one.
    """
    x = F.pad(x, same_padding(tuple(x.shape[2:]), kernel, stride), value=float("-inf"))
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool3d(x, kernel, stride)
    for dim, k, s in zip((2, 3, 4), kernel, stride):
        if k > 1 or s > 1:
            x = x.unfold(dim, k, s).amax(-1)  # (B, C, ...) pooled along dim
    return x


class Inception(nn.Module):
    def __init__(self, in_ch: int, widths: tuple[int, ...]):
        super().__init__()
        w0, w1r, w1, w2r, w2, w3 = widths
        self.branch_0 = Unit3D(in_ch, w0, (1, 1, 1))
        self.branch_1a, self.branch_1b = Unit3D(in_ch, w1r, (1, 1, 1)), Unit3D(w1r, w1, (3, 3, 3))
        self.branch_2a, self.branch_2b = Unit3D(in_ch, w2r, (1, 1, 1)), Unit3D(w2r, w2, (3, 3, 3))
        self.branch_3 = Unit3D(in_ch, w3, (1, 1, 1))
        self.out_channels = w0 + w1 + w2 + w3

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        return torch.cat(
            [
                self.branch_0(x),
                self.branch_1b(self.branch_1a(x)),
                self.branch_2b(self.branch_2a(x)),
                self.branch_3(max_pool_same(x, (3, 3, 3), (1, 1, 1))),
            ],
            dim=1,
        )

    # TF scope names of the units, in the i3d-jax checkpoint.
    SCOPES = {
        "branch_0": "Branch_0/Conv3d_0a_1x1",
        "branch_1a": "Branch_1/Conv3d_0a_1x1",
        "branch_1b": "Branch_1/Conv3d_0b_3x3",
        "branch_2a": "Branch_2/Conv3d_0a_1x1",
        "branch_2b": "Branch_2/Conv3d_0b_3x3",
        "branch_3": "Branch_3/Conv3d_0b_1x1",
    }


class InceptionI3d(nn.Module):
    """I3D: ``forward`` (B, 3, T, 224, 224) in [-1, 1] → (B, 400) Kinetics logits (the FVD features)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleDict()
        self.order: list[tuple] = []
        ch = 3
        for layer in _LAYERS:
            if layer[0] == "unit":
                _, name, out, kernel, stride = layer
                self.blocks[name] = Unit3D(ch, out, kernel, stride)
                ch = out
            elif layer[0] == "mixed":
                self.blocks[layer[1]] = Inception(ch, _INCEPTION[layer[1]])
                ch = self.blocks[layer[1]].out_channels
            self.order.append(layer)
        self.logits = Unit3D(ch, NUM_CLASSES, (1, 1, 1), relu=False)
        self.weights_sha256 = ""

    def activations(self, x: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """(B, 3, T, H, W) → the outputs of the named units/mixed blocks, running the network only as deep
        as needed."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D expects (B, 3, T, H, W) videos, got shape {tuple(x.shape)}")
        wanted = set(names)
        if wanted - set(LAYER_NAMES):
            raise ValueError(f"unknown I3D layers {sorted(wanted - set(LAYER_NAMES))}; known: {list(LAYER_NAMES)}")
        out: dict[str, torch.Tensor] = {}
        for layer in self.order:
            if len(out) == len(wanted):
                break
            x = max_pool_same(x, layer[1], layer[2]) if layer[0] == "pool" else self.blocks[layer[1]](x)
            if layer[0] != "pool" and layer[1] in wanted:
                out[layer[1]] = x
        return out

    def mixed_5c(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) → Mixed_5c activations (B, 1024, T', H', W')."""
        if x.ndim == 5 and x.shape[2] < 10:
            raise ValueError(f"I3D needs at least 10 frames (its temporal pooling), got {x.shape[2]}")
        return self.activations(x, ("Mixed_5c",))["Mixed_5c"]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed_5c averaged over time and space: (B, 3, T, H, W) → (B, 1024)."""
        return self.mixed_5c(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, 224, 224) in [-1, 1] → (B, 400) logits."""
        net = self.mixed_5c(x)  # (B, 1024, T', 7, 7)
        if net.shape[3:] != (7, 7):
            raise ValueError(f"I3D expects 224x224 frames, got {tuple(x.shape[3:])}")
        net = F.avg_pool3d(net, (2, 7, 7), stride=1)  # (B, 1024, T'-1, 1, 1), TF "VALID"
        return self.logits(net).mean(dim=(2, 3, 4))  # mean over time of the per-window logits

    def load_jax_params(self, params: dict[str, np.ndarray], stats: dict[str, np.ndarray]) -> None:
        """Fill from flat i3d-jax arrays, folding BatchNorm (y = (x - mean) / sqrt(var + eps) + beta)."""
        state: dict[str, torch.Tensor] = {}
        for prefix, scope in self._unit_scopes():
            kernel = torch.from_numpy(np.ascontiguousarray(params[f"{scope}/Conv_0/kernel"]))  # (kt, kh, kw, in, out)
            weight = kernel.permute(4, 3, 0, 1, 2).double()  # (out, in, kt, kh, kw)
            if f"{scope}/BatchNorm_0/bias" in params:
                mean = torch.from_numpy(stats[f"{scope}/BatchNorm_0/mean"].reshape(-1)).double()
                var = torch.from_numpy(stats[f"{scope}/BatchNorm_0/var"].reshape(-1)).double()
                beta = torch.from_numpy(params[f"{scope}/BatchNorm_0/bias"]).double()
                inv = 1.0 / torch.sqrt(var + BN_EPS)
                weight = weight * inv[:, None, None, None, None]
                bias = beta - mean * inv
            else:
                bias = torch.from_numpy(params[f"{scope}/Conv_0/bias"]).double()
            state[f"{prefix}.conv.weight"] = weight.float()
            state[f"{prefix}.conv.bias"] = bias.float()
        self.load_state_dict(state)

    def _unit_scopes(self):
        for layer in self.order:
            if layer[0] == "unit":
                yield f"blocks.{layer[1]}", layer[1]
            elif layer[0] == "mixed":
                for attr, scope in Inception.SCOPES.items():
                    yield f"blocks.{layer[1]}.{attr}", f"{layer[1]}/{scope}"
        yield "logits", "Logits/Conv3d_0c_1x1"


class TorchScriptI3D(nn.Module):
    """Wraps a StyleGAN-V ``i3d_torchscript.pt`` to the same interface (input already [-1, 1], 224x224)."""

    def __init__(self, module: torch.jit.ScriptModule):
        super().__init__()
        self.module = module
        self.weights_sha256 = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x, rescale=False, resize=False, return_features=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the StyleGAN-V TorchScript detector exposes logits only, not Mixed_5c")


def load_i3d(weights: str | Path | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Build the I3D in eval mode. ``weights``: None (installed i3d-jax checkpoint), an i3d-jax ``.ckpt``,
    a navid state dict (``.pt`` / ``.safetensors``) or a StyleGAN-V ``i3d_torchscript.pt``."""
    path = default_checkpoint_path() if weights is None else Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights not found at {path}; install them with `{INSTALL_HINT}`")
    if path.suffix not in (".ckpt", ".safetensors", ".pt"):
        raise ValueError(f"{path}: unknown I3D weights format (expected .ckpt, .pt or .safetensors)")
    try:
        model = _read_weights(path)
    except Exception as err:  # whatever a damaged or foreign file makes the readers raise: one line naming it
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if reason.startswith(str(path)):
            raise ValueError(reason) from None
        raise ValueError(f"{path}: not readable as I3D weights ({reason})") from None
    model.weights_sha256 = file_sha256(path)
    return model.eval().requires_grad_(False).to(device)


def _read_weights(path: Path) -> nn.Module:
    """The I3D of a ``.ckpt`` (i3d-jax), ``.safetensors`` or ``.pt`` file."""
    if path.suffix == ".ckpt":
        model = InceptionI3d()
        model.load_jax_params(*read_jax_checkpoint(path))
        return model
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        model = InceptionI3d()
        model.load_state_dict(load_file(str(path)))
        return model
    return _load_pt(path)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with the module's code (``<name>/code/``); ``torch.save`` zips hold
    only pickled data."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _load_pt(path: Path) -> nn.Module:
    """A TorchScript archive (StyleGAN-V's detector) or a navid state dict."""
    if _is_torchscript(path):
        return TorchScriptI3D(torch.jit.load(str(path), map_location="cpu"))
    model = InceptionI3d()
    model.load_state_dict(load_checkpoint_file(path, "I3D --weights"))
    return model
