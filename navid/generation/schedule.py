"""Decoding schedules as data: NAR (planes, 3 heads), PAR-n x (groups + transition slots), raster.

A :class:`Schedule` for a token grid (T, H, W) says everything the transformer, the training loss
and the KV-cache sampler need, so one model / one loss / one sampler serve every decoding order:

- the input slots in sequence order: slot 0 is the class slot; other slots feed either the token
  of a grid position (``slot_token``) or a learnable special embedding (``slot_special``),
- the blocks: consecutive slot ranges ``[block_bounds[b], block_bounds[b+1])`` fed to the model
  together (causal across blocks, bidirectional inside a block); one block = one forward step,
- for every target grid position p (flat (t, h, w) raster order) and every output head k,
  the slot ``target_slot[k, p]`` whose head-k logits predict p (-1: head k does not predict p)
  and ``target_weight[k, p]`` (1/#predictors), so predictions are a weighted sum = the mean.

Builders run once per grid (vectorised numpy); decoding steps only index precomputed tensors.
Step counts: NAR T+H+W-2 (He et al. 2025, arXiv 2503.10696), PAR-n x N/n+n-1 (Wang et al. 2024,
arXiv 2412.15119), raster N.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Tuple

import numpy as np
import torch

Grid = Tuple[int, int, int]

NAR_HEADS = ("time", "row", "column")


@dataclass(frozen=True, eq=False)
class Schedule:
    """An immutable decoding schedule; see the module docstring for the meaning of each field.

    Shapes: L = number of input slots, N = T*H*W grid positions, K = number of heads,
    S = number of blocks (= forward steps).
    """

    kind: str  # "nar", "par4" (any "parN"), "raster"
    grid: Grid  # (T, H, W)
    slot_token: torch.Tensor  # (L,) int64: flat grid position fed at this slot, -1 for class/special
    slot_special: torch.Tensor  # (L,) int64: index of the special embedding, -1 otherwise
    block_bounds: torch.Tensor  # (S+1,) int64: block b = slots [block_bounds[b], block_bounds[b+1])
    target_slot: torch.Tensor  # (K, N) int64: slot predicting position p through head k, -1 if none
    num_special: int
    head_names: Tuple[str, ...]
    # derived in __post_init__
    target_weight: torch.Tensor = field(init=False)  # (K, N) float32: 1/#predictors or 0
    slot_coords: torch.Tensor = field(init=False)  # (L, 3) int64 (t, h, w); 0 for class/special slots
    slot_is_token: torch.Tensor = field(init=False)  # (L,) bool
    slot_is_class: torch.Tensor = field(init=False)  # (L,) bool
    slot_block: torch.Tensor = field(init=False)  # (L,) int64
    target_block: torch.Tensor = field(init=False)  # (N,) int64: the block whose outputs predict p
    fed_block: torch.Tensor = field(init=False)  # (N,) int64: block where p's token is fed (S if never)
    attention_mask: torch.Tensor = field(init=False)  # (L, L) bool, True = query row may attend to key
    step_targets: Tuple[torch.Tensor, ...] = field(init=False)  # S x (Nb,) flat positions completed
    step_slots: Tuple[torch.Tensor, ...] = field(init=False)  # S x (K, Nb) slot index local to the block
    step_weights: Tuple[torch.Tensor, ...] = field(init=False)  # S x (K, Nb) float32

    def __post_init__(self) -> None:
        T, H, W = self.grid
        N, L, K = T * H * W, self.num_slots, self.num_heads
        bounds = self.block_bounds
        slot_block = torch.repeat_interleave(torch.arange(len(bounds) - 1), bounds.diff())  # (L,)
        is_token = self.slot_token >= 0
        pos = self.slot_token.clamp(min=0)
        coords = torch.stack([pos // (H * W), (pos // W) % H, pos % W], dim=1) * is_token[:, None]  # (L, 3)
        valid = self.target_slot >= 0  # (K, N)
        count = valid.sum(0)  # (N,)
        if self.target_slot.shape != (K, N) or bool((count == 0).any()):
            raise ValueError(f"schedule {self.kind} {self.grid}: some grid position has no predictor")
        src_block = torch.where(valid, slot_block[self.target_slot.clamp(min=0)], -1)  # (K, N)
        target_block = src_block.max(0).values  # (N,)
        if bool(((src_block != target_block) & valid).any()):
            raise ValueError(f"schedule {self.kind} {self.grid}: a target's predictors span several blocks")
        fed_block = torch.full((N,), len(bounds) - 1, dtype=torch.int64)
        fed_block[self.slot_token[is_token]] = slot_block[is_token]
        if bool((fed_block <= target_block).any()):
            raise ValueError(f"schedule {self.kind} {self.grid}: a token is fed before it is predicted")
        weight = valid.float() / count.float()  # (K, N)
        order = torch.argsort(target_block, stable=True)
        per_block = torch.bincount(target_block, minlength=len(bounds) - 1).tolist()
        step_targets = torch.split(order, per_block)
        local = (self.target_slot - bounds[target_block][None, :]).clamp(min=0)  # (K, N)
        mask = slot_block[None, :] <= slot_block[:, None]  # (L, L): key block <= query block
        set_ = object.__setattr__
        set_(self, "target_weight", weight)
        set_(self, "slot_coords", coords)
        set_(self, "slot_is_token", is_token)
        set_(self, "slot_is_class", torch.arange(L) == 0)
        set_(self, "slot_block", slot_block)
        set_(self, "target_block", target_block)
        set_(self, "fed_block", fed_block)
        set_(self, "attention_mask", mask)
        set_(self, "step_targets", tuple(step_targets))
        set_(self, "step_slots", tuple(local[:, t] for t in step_targets))
        set_(self, "step_weights", tuple(weight[:, t] for t in step_targets))

    def to(self, device: torch.device | str) -> "Schedule":
        """A copy whose tensors live on ``device`` (built once, so training steps copy nothing)."""
        moved = copy.copy(self)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                object.__setattr__(moved, f.name, value.to(device))
            elif isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):
                object.__setattr__(moved, f.name, tuple(v.to(device) for v in value))
        return moved

    @property
    def num_positions(self) -> int:
        T, H, W = self.grid
        return T * H * W

    @property
    def num_slots(self) -> int:
        return int(self.slot_token.shape[0])

    @property
    def num_heads(self) -> int:
        return len(self.head_names)

    @property
    def num_steps(self) -> int:
        return int(self.block_bounds.shape[0]) - 1

    @property
    def blocks(self) -> Tuple[Tuple[int, int], ...]:
        """``(start, end)`` slot range of every block, in decoding order."""
        b = self.block_bounds.tolist()
        return tuple(zip(b[:-1], b[1:]))


def _flat_coords(grid: Grid) -> np.ndarray:
    """(N, 3) int64 (t, h, w) of every grid position in flat raster order."""
    T, H, W = grid
    return np.stack(np.unravel_index(np.arange(T * H * W), (T, H, W)), axis=1).astype(np.int64)


def _check_grid(grid: Grid) -> Grid:
    grid = tuple(int(g) for g in grid)
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid must be three positive sizes (T, H, W), got {grid}")
    return grid  # type: ignore[return-value]


def _schedule(kind, grid, slot_token, slot_special, block_sizes, target_slot, num_special, heads) -> Schedule:
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64))  # noqa: E731
    bounds = np.concatenate([[0], np.cumsum(block_sizes)])
    return Schedule(kind, grid, t(slot_token), t(slot_special), t(bounds), t(target_slot), num_special, heads)


def nar(grid: Grid) -> Schedule:
    """Next-neighbour AR: block 0 = class slot, block c+1 = plane t+h+w = c (the last plane is never fed).

    Heads: time -> (t+1, h, w), row -> (t, h+1, w), column -> (t, h, w+1); the class slot predicts
    (0, 0, 0) through all three heads. Steps: 1 + (T+H+W-3) = T+H+W-2.
    """
    grid = _check_grid(grid)
    T, H, W = grid
    coords = _flat_coords(grid)  # (N, 3)
    plane = coords.sum(1)  # (N,)
    last = T + H + W - 3
    fed = np.argsort(plane, kind="stable")
    fed = fed[plane[fed] < last]  # positions in plane order, last plane dropped
    slot_token = np.concatenate([[-1], fed])  # (L,)
    pos_slot = np.full(T * H * W, -1, dtype=np.int64)
    pos_slot[fed] = np.arange(1, len(fed) + 1)
    strides = np.array([H * W, W, 1])
    flat = np.arange(T * H * W)
    target = np.stack([np.where(coords[:, d] > 0, pos_slot[flat - strides[d]], -1) for d in range(3)])  # (3, N)
    target[:, 0] = 0  # class slot predicts (0, 0, 0) with all three heads
    block_sizes = np.concatenate([[1], np.bincount(plane[fed], minlength=last)])
    return _schedule("nar", grid, slot_token, np.full(len(slot_token), -1), block_sizes, target, 0, NAR_HEADS)


def par(grid: Grid, n: int = 4) -> Schedule:
    """PAR-n x: the grid splits into M x M spatial regions (n = M^2), each spanning all T frames.

    Input sequence ``[class, r0[0], ..., r(n-1)[0], M1..M(n-1), r0[1], ..., r(n-1)[1], r0[2], ...]``
    (rk[j] = j-th token of region k in in-region raster order). Blocks: class, r0[0], ...,
    r(n-2)[0] one by one, then the group [r(n-1)[0], M1..M(n-1)] predicting [r0[1]..r(n-1)[1]]
    element-wise, then each group j predicting group j+1. Steps: N/n + n - 1.
    """
    grid = _check_grid(grid)
    T, H, W = grid
    m = math.isqrt(n)
    if n < 1 or m * m != n:
        raise ValueError(f"PAR-n x needs n = M*M regions (1, 4, 9, 16, ...), got n={n}")
    if H % m or W % m:
        raise ValueError(f"PAR-{n}x splits the {H}x{W} token grid into {m}x{m} regions: "
                         f"H and W must be divisible by {m}")
    rh, rw = H // m, W // m
    J = T * rh * rw  # tokens per region
    t, hh, ww = np.unravel_index(np.arange(J), (T, rh, rw))  # in-region raster order
    kh, kw = np.divmod(np.arange(n), m)
    region_pos = (t[None] * H * W + (kh[:, None] * rh + hh[None]) * W + kw[:, None] * rw + ww[None])  # (n, J)
    first = region_pos[:, 0]  # r0[0] .. r(n-1)[0]
    if J == 1:
        slot_token = np.concatenate([[-1], first[:-1]])
        slot_special = np.full(n, -1)
        block_sizes = np.ones(n, dtype=np.int64)
    else:
        groups = region_pos[:, 1 : J - 1].T.reshape(-1)  # groups j=1..J-2, each r0[j]..r(n-1)[j]
        slot_token = np.concatenate([[-1], first, np.full(n - 1, -1), groups])
        slot_special = np.concatenate([np.full(n + 1, -1), np.arange(n - 1), np.full(len(groups), -1)])
        block_sizes = np.concatenate([np.ones(n, dtype=np.int64), np.full(J - 1, n)])
    L = len(slot_token)
    target = np.full(T * H * W, -1, dtype=np.int64)
    target[first] = np.arange(n)  # class -> r0[0]; slot k (= r(k-1)[0]) -> rk[0]
    if J > 1:
        # group j (j >= 0; slots n + j*n .. n + j*n + n-1 with j=0 the transition group) -> r.[j+1]
        target[region_pos[:, 1:].T.reshape(-1)] = n + np.arange((J - 1) * n)
    assert target.max() < L
    return _schedule(f"par{n}", grid, slot_token, slot_special, block_sizes, target[None], n - 1, ("next",))


def raster(grid: Grid) -> Schedule:
    """Raster AR: class, then positions 0..N-2 one per block; slot s predicts position s. Steps: N."""
    grid = _check_grid(grid)
    N = grid[0] * grid[1] * grid[2]
    slot_token = np.arange(-1, N - 1)
    return _schedule("raster", grid, slot_token, np.full(N, -1), np.ones(N, dtype=np.int64), np.arange(N)[None], 0,
                     ("next",))


def build_schedule(kind: str, grid: Grid) -> Schedule:
    """``kind`` is "nar", "raster" or "par<n>" (e.g. "par4" = PAR-4x)."""
    if kind == "nar":
        return nar(grid)
    if kind == "raster":
        return raster(grid)
    if kind.startswith("par") and kind[3:].isdigit():
        return par(grid, int(kind[3:]))
    raise ValueError(f"unknown schedule kind {kind!r}; expected 'nar', 'par4' (any 'par<n>') or 'raster'")


def num_special_slots(kind: str) -> int:
    """Learnable special embeddings a model needs for this schedule kind (PAR-n x: n-1)."""
    if kind.startswith("par") and kind[3:].isdigit():
        return int(kind[3:]) - 1
    if kind in ("nar", "raster"):
        return 0
    raise ValueError(f"unknown schedule kind {kind!r}; expected 'nar', 'par4' (any 'par<n>') or 'raster'")


def num_output_heads(kind: str) -> int:
    """Output heads a model needs for this schedule kind (NAR: time, row, column)."""
    num_special_slots(kind)
    return 3 if kind == "nar" else 1
