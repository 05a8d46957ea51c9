"""Static-shape decoding plans: a schedule's blocks as fixed-shape index tensors for the cached step.

The cached step (:meth:`navid.generation.transformer.Transformer.decode_step`) never slices by a
Python number: every block arrives as a :class:`DecodeBlock` of index tensors whose *shapes* are the
step's shapes, so eager mode, ``torch.compile`` and CUDA graphs run the same code and a compiled
step is reused by every block of the same shape.

Two layouts of the same schedule:

- exact (``padded=False``): each step has the block's own sizes and attends to exactly the slots
  before its end, so its attention needs no mask (the key bias is all zero and only its length
  counts). No arithmetic is wasted, which matters where the device is arithmetic-bound (a CPU); a
  compiler sees one shape per block and should treat the sizes as dynamic.
- padded (``padded=True``): queries and targets are padded to the next power of two of the larger
  of the two and every step attends to the whole cache under a mask, so a schedule has a handful of
  step shapes (NAR at 4x16x16: 6; PAR-4x: 2; raster: 1) — what CUDA graphs need, at the price of
  up to ~1.4x the matmul rows and ~2.7x the attention of the exact layout (NAR at 4x16x16).
  Padded queries sit at the slots after the block (the cache is long enough for the last block's
  padding); they are written to the cache but masked out as keys until the block that owns those
  slots overwrites them, and their outputs are dropped. Padded targets read query 0 with weight 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Tuple

import torch
import torch.nn.functional as F

from navid.generation.schedule import Schedule


class DecodeBlock(NamedTuple):
    """One forward step's index tensors; P queries, Lk keys, K heads, Q targets (P, Lk, Q fix the step's shape)."""

    slots: torch.Tensor  # (P,) int64: cache slot of each query (the block's slots, then padding)
    key_bias: torch.Tensor  # (Lk,) model dtype: 0 for key slots < the block's end, -inf after (exact layout: all 0)
    head_slot: torch.Tensor  # (K, Q) int64: query whose head-k output predicts target q
    head_weight: torch.Tensor  # (K, Q) float32: 1 / number of predicting heads (0 for padding)


@dataclass
class DecodePlan:
    """Everything the cached step and the sampler index with, on one device; built once per run."""

    cache_len: int  # slots the KV cache holds (the schedule's slots + the last block's padding)
    slot_token: torch.Tensor  # (cache_len,) int64: flat grid position fed at the slot, -1 otherwise
    slot_special: torch.Tensor  # (cache_len,) int64: special embedding index, -1 otherwise
    slot_is_class: torch.Tensor  # (cache_len,) bool
    slot_coords: torch.Tensor  # (cache_len, 3) int64 (t, h, w) RoPE coordinates
    blocks: List[DecodeBlock]  # one per forward step
    target_pos: List[torch.Tensor]  # step b: (n_b,) flat grid positions the step completes
    padded: bool

    @property
    def num_targets(self) -> List[int]:
        return [len(t) for t in self.target_pos]

    def shapes(self) -> List[Tuple[int, int, int]]:
        """(P, Lk, Q) of every step: equal tuples = one compiled graph / one CUDA graph."""
        return [(len(b.slots), len(b.key_bias), b.head_slot.shape[1]) for b in self.blocks]


def next_power_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _extend(per_slot: torch.Tensor, extra: int, value) -> torch.Tensor:
    """(L, ...) -> (L + extra, ...) with ``value`` in the new rows (the padding slots)."""
    return torch.cat([per_slot, per_slot.new_full((extra, *per_slot.shape[1:]), value)])


def build_decode_plan(schedule: Schedule, padded: bool, device: torch.device, dtype: torch.dtype) -> DecodePlan:
    """The schedule's blocks as :class:`DecodeBlock` tensors on ``device`` (see the module docstring)."""
    L = schedule.num_slots
    bounds = schedule.block_bounds.tolist()
    sizes = [end - start for start, end in zip(bounds[:-1], bounds[1:])]
    counts = [len(t) for t in schedule.step_targets]
    if padded:
        width = [next_power_of_two(max(s, n)) for s, n in zip(sizes, counts)]
        queries, targets, keys = width, width, [L] * len(sizes)
    else:
        queries, targets, keys = sizes, counts, bounds[1:]
    cache_len = max(start + p for start, p in zip(bounds[:-1], queries))
    pad = cache_len - L
    blocks = []
    for b, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        fill = targets[b] - counts[b]
        blocks.append(DecodeBlock(
            slots=torch.arange(start, start + queries[b], device=device),
            key_bias=torch.where(torch.arange(keys[b], device=device) < end, 0.0, -torch.inf).to(dtype),
            head_slot=F.pad(schedule.step_slots[b], (0, fill)).to(device),
            head_weight=F.pad(schedule.step_weights[b], (0, fill)).to(device),
        ))
    return DecodePlan(
        cache_len=cache_len,
        slot_token=_extend(schedule.slot_token, pad, -1).to(device),
        slot_special=_extend(schedule.slot_special, pad, -1).to(device),
        slot_is_class=_extend(schedule.slot_is_class, pad, False).to(device),
        slot_coords=_extend(schedule.slot_coords, pad, 0).to(device),
        blocks=blocks,
        target_pos=[t.to(device) for t in schedule.step_targets],
        padded=padded,
    )
