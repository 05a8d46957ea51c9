"""A LLaMA-style decoder that serves every decoding schedule (NAR, PAR-n x, raster).

- RMSNorm, SwiGLU, ``F.scaled_dot_product_attention``; no biases.
- Positions: 3D RoPE from each slot's (t, h, w) coordinate (head dim split into t/h/w parts),
  never from the slot's index, so one model serves any order. Class and special slots carry no
  position (coordinate 0 = identity rotation); they are told apart by their embeddings. The
  rotation is real-valued (cos/sin tables built once as non-persistent buffers, gathered per
  slot), so it compiles and lives on the model's device.
- Inputs: token embedding, class embedding with a null class (index ``num_classes``) for
  classifier-free guidance, learnable special embeddings (PAR transition slots M1..M(n-1)).
- Heads: NAR follows the reference design (NAR-videos ``models/larp_ar.py``): the
  column head reads the trunk output, the row head one extra block deeper, the time head a second
  extra block deeper (:func:`head_taps`); each head is RMSNorm + a zero-initialised linear to the
  vocabulary (the K linears are stored as one (V, K*D) matrix so the mean of their logits is a
  single GEMM). PAR and raster: one head on the trunk. The extra blocks are ordinary blocks with
  their own KV cache, so the sampler treats them like trunk layers and only the taps differ.

Two modes, two methods: ``target_logits`` (training path: one forward over all slots with the
schedule's block-causal mask) and ``setup_cache`` / ``decode_step`` (inference with a static,
preallocated KV cache written at slot indices held in tensors; every step's shapes come from a
:class:`~navid.generation.decode_plan.DecodeBlock`, so the step compiles and captures in CUDA graphs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from navid.generation.decode_plan import DecodeBlock, DecodePlan, build_decode_plan
from navid.generation.schedule import Schedule, num_output_heads, num_special_slots

TRANSFORMER_SIZES: Dict[str, dict] = {
    "tiny": dict(dim=64, depth=4, num_heads=4, multiple_of=32),  # CPU tests and smoke runs
    "S": dict(dim=512, depth=8, num_heads=8),
    "B": dict(dim=768, depth=12, num_heads=12),
    "L": dict(dim=1024, depth=24, num_heads=16),  # NAR-L: ~369M parameters with vocab 8192
}
ROPE_MAX_COORD = 256  # the RoPE tables cover t, h, w coordinates 0 .. ROPE_MAX_COORD-1


@dataclass
class TransformerConfig:
    vocab_size: int = 1024
    num_classes: int = 101
    dim: int = 64
    depth: int = 2  # trunk layers (NAR adds 2 head blocks on top)
    num_heads: int = 4  # attention heads
    mlp_ratio: float = 8.0 / 3.0  # SwiGLU hidden = mlp_ratio * dim rounded up to multiple_of
    multiple_of: int = 256
    class_dropout: float = 0.1  # probability a training label becomes the null class (caller applies)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for key in ("dim", "num_heads", "multiple_of"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("mlp_ratio", "rope_theta", "norm_eps"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if not 0 <= self.class_dropout < 1 or self.init_std < 0:
            raise ValueError(f"need 0 <= class_dropout < 1 (got {self.class_dropout}) and init_std >= 0 "
                             f"(got {self.init_std})")
        if self.dim % self.num_heads:
            raise ValueError(f"dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if (self.dim // self.num_heads) % 2 or self.dim // self.num_heads < 6:
            raise ValueError(f"head dim {self.dim // self.num_heads} must be even and >= 6 for 3D RoPE")
        if min(self.vocab_size, self.num_classes, self.depth) < 1:
            raise ValueError("vocab_size, num_classes and depth must be >= 1")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        h = int(self.mlp_ratio * self.dim)
        return -(-h // self.multiple_of) * self.multiple_of

    @classmethod
    def from_size(cls, size: str, **overrides) -> "TransformerConfig":
        if size not in TRANSFORMER_SIZES:
            raise ValueError(f"unknown model size {size!r}; choose from {sorted(TRANSFORMER_SIZES)}")
        return cls(**{**TRANSFORMER_SIZES[size], **overrides})


def drop_labels(labels: torch.Tensor, p: float, num_classes: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Replace each label by the null class ``num_classes`` with probability ``p`` (CFG training)."""
    if p <= 0:
        return labels
    drop = torch.rand(labels.shape, device=labels.device, generator=generator) < p
    return torch.where(drop, torch.full_like(labels, num_classes), labels)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_frequencies(head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """3D RoPE layout: ``(axis, freq)``, each (head_dim/2,): rotation pair j turns by ``coord[axis[j]] * freq[j]``.

    The pairs are split over t/h/w (t gets the remainder); each axis has its own geometric ladder
    of frequencies, as in 1D RoPE.
    """
    pairs = head_dim // 2
    per_axis = [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3]
    axis = torch.tensor([a for a, n in enumerate(per_axis) for _ in range(n)])  # (pairs,)
    freqs = torch.cat([theta ** (-torch.arange(n, dtype=torch.float64) / n) for n in per_axis])  # (pairs,)
    return axis, freqs


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, swap: torch.Tensor) -> torch.Tensor:
    """x (..., S, hd); cos, sin (S, hd) from :meth:`Transformer.rope`; swap (hd,) = 1, 0, 3, 2, ... -> x with each
    (even, odd) channel pair rotated.

    (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin) = x * cos + swap(x) * sin with the sign folded into ``sin``.
    The swap is a gather on the channel axis, so no size but hd enters a view (dynamic shapes stay general).
    """
    return torch.addcmul(x * cos, x.index_select(-1, swap), sin)  # (..., S, hd)


class KVCache(nn.Module):
    """Static k/v buffers (B, heads, cache_len, hd) of one layer, written at the slots held in a tensor.

    Non-persistent buffers: they move with the model and are static inputs to CUDA graphs, but are
    no part of ``state_dict``; ``Transformer.setup_cache`` attaches one per layer, ``release_cache``
    drops them.
    """

    def __init__(self, shape: tuple, device, dtype):
        super().__init__()
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_keys: int):
        """Write k, v (B, h, P, hd) at ``slots`` (P,); return keys and values of slots [0, num_keys) (B, h, Lk, hd)."""
        self.k.index_copy_(2, slots, k)
        self.v.index_copy_(2, slots, v)
        return self.k[:, :, :num_keys], self.v[:, :, :num_keys]

    def fits(self, shape: tuple, device: torch.device, dtype: torch.dtype) -> bool:
        return self.k.shape == shape and self.k.device == device and self.k.dtype == dtype


class DecodeTables(nn.Module):
    """Per-slot inputs of a decoding run (from a :class:`DecodePlan`), as non-persistent buffers
    on the model's device."""

    def __init__(self, plan: DecodePlan, cos: torch.Tensor, sin: torch.Tensor):
        super().__init__()
        self.masked = plan.padded  # only padded blocks have keys to mask; exact blocks attend to all Lk keys
        self.register_buffer("slot_token", plan.slot_token, persistent=False)  # (Lc,)
        self.register_buffer("slot_special", plan.slot_special, persistent=False)  # (Lc,)
        self.register_buffer("slot_is_class", plan.slot_is_class, persistent=False)  # (Lc,)
        self.register_buffer("cos", cos, persistent=False)  # (Lc, hd)
        self.register_buffer("sin", sin, persistent=False)  # (Lc, hd)

    def refill(self, other: "DecodeTables") -> bool:
        """Copy ``other``'s tables into these buffers in place (their addresses stay) when every shape, dtype and
        device matches; return whether it did."""
        pairs = list(zip(self.buffers(), other.buffers()))
        if any(a.shape != b.shape or a.dtype != b.dtype or a.device != b.device for a, b in pairs):
            return False
        for mine, theirs in pairs:
            mine.copy_(theirs)
        self.masked = other.masked
        return True


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)
        swap = torch.arange(cfg.head_dim).view(-1, 2).flip(-1).flatten()  # (hd,): 1, 0, 3, 2, ...
        self.register_buffer("rope_swap", swap, persistent=False)
        self.cache: Optional[KVCache] = None

    def _qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """x (B, S, D) -> rotated q, rotated k, v, each (B, h, S, hd)."""
        B, S, _ = x.shape
        qkv = self.wqkv(x).view(B, S, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, S, hd)
        qk = apply_rope(qkv[:2], cos, sin, self.rope_swap)  # (2, B, h, S, hd)
        return qk[0], qk[1], qkv[2]

    def _out(self, y: torch.Tensor) -> torch.Tensor:
        B, _, S, _ = y.shape
        return self.wo(y.transpose(1, 2).reshape(B, S, -1))  # (B, S, D)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Full pass: x (B, L, D); cos, sin (L, hd); mask (L, L) bool, True = query may attend to key."""
        q, k, v = self._qkv(x, cos, sin)  # (B, h, L, hd) each
        return self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def decode(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slots: torch.Tensor,
               key_bias: torch.Tensor, masked: bool) -> torch.Tensor:
        """Cached pass: x (B, P, D) fed at ``slots`` (P,); attends to the first Lk cached keys, plus ``key_bias``
        (Lk,) where ``masked`` (unmasked, the CPU attention kernel skips reading and adding the bias)."""
        q, k, v = self._qkv(x, cos, sin)  # (B, h, P, hd) each
        k, v = self.cache.update(slots, k, v, key_bias.shape[0])  # (B, h, Lk, hd) each
        mask = key_bias[None, :] if masked else None  # (1, Lk)
        return self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))  # (B, P, D)


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = FeedForward(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)  # (B, L, D)
        return x + self.mlp(self.mlp_norm(x))

    def decode(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, slots: torch.Tensor,
               key_bias: torch.Tensor, masked: bool) -> torch.Tensor:
        x = x + self.attn.decode(self.attn_norm(x), cos, sin, slots, key_bias, masked)  # (B, P, D)
        return x + self.mlp(self.mlp_norm(x))


def head_taps(kind: str, depth: int) -> List[int]:
    """Layer count after which each output head reads (the reference layout, NAR-videos ``models/larp_ar.py``).

    NAR heads (time, row, column): column after the trunk, row after one extra block, time after a
    second extra block stacked on the first. PAR and raster: one head after the trunk.
    """
    return [depth + 2, depth + 1, depth] if num_output_heads(kind) == 3 else [depth]


class Transformer(nn.Module):
    """One decoder for every schedule of a kind; built as ``Transformer(cfg, "nar" | "par4" | "raster")``."""

    def __init__(self, cfg: TransformerConfig, schedule_kind: str):
        super().__init__()
        self.cfg, self.schedule_kind = cfg, schedule_kind
        num_out = num_output_heads(schedule_kind)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.dim)  # last row = null class
        self.special_emb = nn.Parameter(torch.zeros(num_special_slots(schedule_kind), cfg.dim))
        self.taps = head_taps(schedule_kind, cfg.depth)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(max(self.taps)))
        self.head_norms = nn.ModuleList(RMSNorm(cfg.dim, cfg.norm_eps) for _ in range(num_out))
        # column block k of head_out is head k's vocabulary projection (V, D)
        self.head_out = nn.Linear(num_out * cfg.dim, cfg.vocab_size, bias=False)
        axis, freqs = rope_frequencies(cfg.head_dim, cfg.rope_theta)
        angle = torch.arange(ROPE_MAX_COORD, dtype=torch.float64)[:, None] * freqs.repeat_interleave(2)  # (C, hd)
        sign = torch.tensor([-1.0, 1.0], dtype=torch.float64).repeat(cfg.head_dim // 2)  # (hd,)
        self.register_buffer("rope_axis", axis.repeat_interleave(2), persistent=False)  # (hd,) int64
        self.register_buffer("rope_cos", angle.cos().float(), persistent=False)  # (C, hd)
        self.register_buffer("rope_sin", (angle.sin() * sign).float(), persistent=False)  # (C, hd)
        self.decode_tables: Optional[DecodeTables] = None
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation lives here: normal(0, init_std) for linears/embeddings, zero output heads."""
        std = self.cfg.init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
        nn.init.normal_(self.special_emb, std=std)
        nn.init.zeros_(self.head_out.weight)

    # ---------------------------------------------------------------- shared pieces
    def rope(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """coords (L, 3) int64 (t, h, w) -> cos, sin (L, hd) in the model's dtype, gathered from the tables.

        Both are per channel (each pair's value twice); ``sin`` carries the rotation's sign (-, +) per pair.
        """
        index = coords[:, self.rope_axis]  # (L, hd): the coordinate each channel turns with
        return self.rope_cos.gather(0, index), self.rope_sin.gather(0, index)

    def _check_schedule(self, schedule: Schedule) -> None:
        if schedule.kind != self.schedule_kind:
            raise ValueError(f"model was built for schedule {self.schedule_kind!r}, got a {schedule.kind!r} schedule")
        if max(schedule.grid) > ROPE_MAX_COORD:
            raise ValueError(f"grid {schedule.grid}: RoPE tables cover grid sides up to {ROPE_MAX_COORD}")

    def _embed(self, tokens: torch.Tensor, labels: torch.Tensor, slot_token, slot_special,
               slot_is_class) -> torch.Tensor:
        """tokens (B, N) flat grid, labels (B,), per-slot descriptors (S,) -> inputs (B, S, D)."""
        tok = self.tok_emb(tokens[:, slot_token.clamp(min=0)])  # (B, S, D)
        cls = self.class_emb(labels)[:, None, :].expand_as(tok)  # (B, S, D)
        x = torch.where(slot_is_class[None, :, None], cls, tok)
        if self.special_emb.shape[0]:
            spec = self.special_emb[slot_special.clamp(min=0)][None].expand_as(tok)  # (B, S, D)
            x = torch.where((slot_special >= 0)[None, :, None], spec, x)
        return x

    def _head_logits(self, taps: Sequence[torch.Tensor], slot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """taps K x (B, S, D); slot (K, M) index into S; weight (K, M) -> averaged logits (B, M, V).

        sum_k w_k W_k norm_k(h_k) is computed as one matmul of the weighted, concatenated head
        features (B, M, K*D) with ``head_out`` (V, K*D): the K vocabulary projections in one GEMM.
        """
        feats = [norm(h[:, slot[k]]) * weight[k, None, :, None].to(h.dtype)
                 for k, (h, norm) in enumerate(zip(taps, self.head_norms))]
        return self.head_out(torch.cat(feats, dim=-1))  # (B, M, V)

    # ---------------------------------------------------------------- training path
    def target_logits(self, tokens: torch.Tensor, labels: torch.Tensor, schedule: Schedule) -> torch.Tensor:
        """tokens (B, T, H, W) int64, labels (B,) int64 (``num_classes`` = null) -> logits (B, N, V).

        One forward over all slots with the schedule's block-causal mask; position p's logits are
        the weighted (mean) sum over the heads that predict it, in flat (t, h, w) order.
        """
        self._check_schedule(schedule)
        dev = tokens.device
        flat = tokens.flatten(1)  # (B, N)
        x = self._embed(flat, labels, schedule.slot_token.to(dev), schedule.slot_special.to(dev),
                        schedule.slot_is_class.to(dev))
        cos, sin = self.rope(schedule.slot_coords.to(dev))  # (L, hd) each
        mask = schedule.attention_mask.to(dev)  # (L, L)
        outs = [x]
        for layer in self.layers:
            outs.append(layer(outs[-1], cos, sin, mask))  # (B, L, D)
        slot = schedule.target_slot.clamp(min=0).to(dev)  # (K, N)
        return self._head_logits([outs[t] for t in self.taps], slot, schedule.target_weight.to(dev))

    # ---------------------------------------------------------------- inference path
    def setup_cache(self, batch_size: int, schedule: Schedule, padded: bool = False) -> DecodePlan:
        """Allocate static KV buffers for ``batch_size`` rows (model's device and dtype); return the plan to step
        through.

        ``padded``: the layout of :mod:`navid.generation.decode_plan` (a handful of step shapes, for CUDA graphs).
        Buffers left by the previous run (not released) are reused in place where their shape, device and dtype
        fit: their addresses stay, so CUDA graphs recorded on them replay instead of recording again. Their old
        contents are harmless: every block writes the slots before its end before it attends to them.
        """
        self._check_schedule(schedule)
        p, cfg = self.tok_emb.weight, self.cfg
        plan = build_decode_plan(schedule, padded, p.device, p.dtype)
        shape = (batch_size, cfg.num_heads, plan.cache_len, cfg.head_dim)
        for layer in self.layers:
            if layer.attn.cache is None or not layer.attn.cache.fits(shape, p.device, p.dtype):
                layer.attn.cache = KVCache(shape, p.device, p.dtype)
        tables = DecodeTables(plan, *self.rope(plan.slot_coords))
        if self.decode_tables is None or not self.decode_tables.refill(tables):
            self.decode_tables = tables
        return plan

    def release_cache(self) -> None:
        """Free the KV buffers (they hold batch x layers x L x D activations) and the per-slot tables."""
        for layer in self.layers:
            layer.attn.cache = None
        self.decode_tables = None

    def decode_step(self, tokens: torch.Tensor, labels: torch.Tensor, block: DecodeBlock) -> torch.Tensor:
        """Feed one block through the cached model -> averaged logits (B, Q, V) of the targets it completes.

        tokens (B, N) flat grid holding every token fed at or before this block; labels (B,). Block 0
        (the class slot) is the prefill; it is a step like any other. Shapes come only from
        ``block``'s tensors, so the step compiles and captures in a CUDA graph.
        """
        tables = self.decode_tables
        slots = block.slots  # (P,)
        x = self._embed(tokens, labels, tables.slot_token[slots], tables.slot_special[slots],
                        tables.slot_is_class[slots])  # (B, P, D)
        cos = tables.cos[slots]  # (P, hd)
        sin = tables.sin[slots]  # (P, hd)
        outs = [x]
        for layer in self.layers:
            outs.append(layer.decode(outs[-1], cos, sin, slots, block.key_bias, tables.masked))  # (B, P, D)
        return self._head_logits([outs[t] for t in self.taps], block.head_slot, block.head_weight)  # (B, Q, V)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
