"""A LLaMA-style decoder that serves every decoding schedule (NAR, PAR-n x, raster).

- RMSNorm, SwiGLU, ``F.scaled_dot_product_attention``; no biases.
- Positions: 3D RoPE from each slot's (t, h, w) coordinate (head dim split into t/h/w parts),
  never from the slot's index, so one model serves any order. Class and special slots carry no
  position (coordinate 0 = identity rotation); they are told apart by their embeddings.
- Inputs: token embedding, class embedding with a null class (index ``num_classes``) for
  classifier-free guidance, learnable special embeddings (PAR transition slots M1..M(n-1)).
- Heads: NAR follows the reference design (DESIGN.md §1): the column head reads the trunk output,
  the time head one extra block deeper, the row head a second extra block deeper; each head is
  RMSNorm + a zero-initialised linear to the vocabulary (the K linears are
  stored as one (V, K*D) matrix so the mean of their logits is a single GEMM). PAR and raster: one head on the trunk.
  The extra blocks are ordinary blocks with their own KV cache, so the sampler treats them like
  trunk layers and only the taps differ.

Two modes, two methods: ``target_logits`` (training path: one forward over all slots with the
schedule's block-causal mask) and ``setup_cache`` / ``prefill`` / ``decode_step`` (inference with a
static, preallocated KV cache; block b's queries see exactly the slots < end of block b, so the
cache path needs no mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from navid.generation.schedule import Schedule, num_output_heads, num_special_slots

TRANSFORMER_SIZES: Dict[str, dict] = {
    "tiny": dict(dim=64, depth=4, num_heads=4, multiple_of=32),  # CPU tests and smoke runs
    "S": dict(dim=512, depth=8, num_heads=8),
    "B": dict(dim=768, depth=12, num_heads=12),
    "L": dict(dim=1024, depth=24, num_heads=16),  # NAR-L: ~369M parameters with vocab 8192
}


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


def drop_labels(labels: torch.Tensor, p: float, num_classes: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
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


def rope_3d(coords: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """(L, 3) int coordinates -> (L, head_dim/2) complex128 rotations; pairs split over t/h/w (t gets the rest)."""
    pairs = head_dim // 2
    per_axis = [pairs - 2 * (pairs // 3), pairs // 3, pairs // 3]
    angles = []
    for axis, n in enumerate(per_axis):
        freqs = theta ** (-torch.arange(n, dtype=torch.float64, device=coords.device) / n)  # (n,)
        angles.append(coords[:, axis, None].double() * freqs)  # (L, n)
    angle = torch.cat(angles, dim=1)  # (L, pairs)
    return torch.polar(torch.ones_like(angle), angle)


def rope_dtype(dtype: torch.dtype) -> torch.dtype:
    """Rotations run in float64 for float64 models and in float32 otherwise (also under bf16/fp16)."""
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """x (..., S, hd) real, rope (S, hd/2) complex (see :func:`rope_dtype`) -> rotated x (..., S, hd) in x's dtype."""
    xc = torch.view_as_complex(x.to(torch.float64 if rope.dtype == torch.complex128 else torch.float32).unflatten(-1, (-1, 2)))
    return torch.view_as_real(xc * rope).flatten(-2).to(x.dtype)


class KVCache:
    """Static k/v buffers (B, heads, L, hd) of one layer, written at slot ranges.

    A plain object, not a module: it is no part of the model's state, so EMA copies, ``state_dict``
    and ``deepcopy`` never see it; ``Transformer.setup_cache`` allocates one per layer per run.
    """

    def __init__(self, batch: int, heads: int, length: int, head_dim: int, device, dtype):
        shape = (batch, heads, length, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v (B, h, S, hd) at slots [start, start+S); return keys/values of slots [0, start+S)."""
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor, mask: Optional[torch.Tensor], cache: Optional[KVCache],
                start: int) -> torch.Tensor:
        """x (B, S, D); rope (S, hd/2) complex; full pass: mask (S, S) bool, no cache;
        cache pass: ``cache`` and ``start`` = the block's first slot (the block sees every slot < start+S)."""
        B, S, D = x.shape
        qkv = self.wqkv(x).view(B, S, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, h, S, hd)
        q, k = apply_rope(qkv[:2], rope)  # (B, h, S, hd) each
        v = qkv[2]
        if cache is not None:
            k, v = cache.update(start, k, v)  # (B, h, start+S, hd); all visible to this block
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, S, hd)
        return self.wo(y.transpose(1, 2).reshape(B, S, D))


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

    def forward(self, x, rope, mask, cache, start):
        x = x + self.attn(self.attn_norm(x), rope, mask, cache, start)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """One decoder for every schedule of a kind; built as ``Transformer(cfg, "nar" | "par4" | "raster")``."""

    def __init__(self, cfg: TransformerConfig, schedule_kind: str):
        super().__init__()
        self.cfg, self.schedule_kind = cfg, schedule_kind
        num_out = num_output_heads(schedule_kind)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, cfg.dim)  # last row = null class
        self.special_emb = nn.Parameter(torch.zeros(num_special_slots(schedule_kind), cfg.dim))
        extra = 2 if num_out == 3 else 0
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.depth + extra))
        # layer count after which each head reads: NAR (time, row, column) = (depth+1, depth+2, depth)
        self.taps: List[int] = [cfg.depth + 1, cfg.depth + 2, cfg.depth] if num_out == 3 else [cfg.depth]
        self.head_norms = nn.ModuleList(RMSNorm(cfg.dim, cfg.norm_eps) for _ in range(num_out))
        # column block k of head_out is head k's vocabulary projection (V, D)
        self.head_out = nn.Linear(num_out * cfg.dim, cfg.vocab_size, bias=False)
        self._step: Dict[str, object] = {}
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
    def _embed(self, tokens: torch.Tensor, labels: torch.Tensor, slot_token, slot_special, slot_is_class) -> torch.Tensor:
        """tokens (B, N) flat grid, labels (B,), per-slot descriptors (S,) -> inputs (B, S, D)."""
        tok = self.tok_emb(tokens[:, slot_token.clamp(min=0)])  # (B, S, D)
        cls = self.class_emb(labels)[:, None, :].expand_as(tok)  # (B, S, D)
        x = torch.where(slot_is_class[None, :, None], cls, tok)
        if self.special_emb.shape[0]:
            spec = self.special_emb[slot_special.clamp(min=0)][None].expand_as(tok)  # (B, S, D)
            x = torch.where((slot_special >= 0)[None, :, None], spec, x)
        return x

    def _run_layers(self, x, rope, mask, caches, start) -> List[torch.Tensor]:
        """Run all blocks; return the hidden state (B, S, D) read by each head."""
        outs = {0: x}
        for i, layer in enumerate(self.layers):
            x = layer(x, rope, mask, caches[i] if caches else None, start)
            outs[i + 1] = x
        return [outs[t] for t in self.taps]

    def _head_logits(self, taps: Sequence[torch.Tensor], slot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """taps K x (B, S, D); slot (K, M) index into S; weight (K, M) -> averaged logits (B, M, V).

        sum_k w_k W_k norm_k(h_k) is computed as one matmul of the weighted, concatenated head
        features (B, M, K*D) with ``head_out`` (V, K*D): the K vocabulary projections in one GEMM.
        """
        feats = [norm(h[:, slot[k]]) * weight[k, None, :, None].to(h.dtype) for k, (h, norm) in enumerate(zip(taps, self.head_norms))]
        return self.head_out(torch.cat(feats, dim=-1))  # (B, M, V)

    def _check_kind(self, schedule: Schedule) -> None:
        if schedule.kind != self.schedule_kind:
            raise ValueError(f"model was built for schedule {self.schedule_kind!r}, got a {schedule.kind!r} schedule")

    # ---------------------------------------------------------------- training path
    def target_logits(self, tokens: torch.Tensor, labels: torch.Tensor, schedule: Schedule) -> torch.Tensor:
        """tokens (B, T, H, W) int64, labels (B,) int64 (``num_classes`` = null) -> logits (B, N, V).

        One forward over all slots with the schedule's block-causal mask; position p's logits are
        the weighted (mean) sum over the heads that predict it, in flat (t, h, w) order.
        """
        self._check_kind(schedule)
        dev = tokens.device
        flat = tokens.flatten(1)  # (B, N)
        x = self._embed(flat, labels, schedule.slot_token.to(dev), schedule.slot_special.to(dev), schedule.slot_is_class.to(dev))
        rope = rope_3d(schedule.slot_coords.to(dev), self.cfg.head_dim, self.cfg.rope_theta)  # (L, hd/2) complex
        rope = rope.to(rope_dtype(self.tok_emb.weight.dtype))
        taps = self._run_layers(x, rope, schedule.attention_mask.to(dev), None, 0)  # K x (B, L, D)
        slot = schedule.target_slot.clamp(min=0).to(dev)  # (K, N)
        return self._head_logits(taps, slot, schedule.target_weight.to(dev))

    # ---------------------------------------------------------------- inference path
    def setup_cache(self, batch_size: int, schedule: Schedule, device=None, dtype=None) -> None:
        """Allocate static KV buffers for ``batch_size`` rows and move the schedule's per-step indices."""
        self._check_kind(schedule)
        p = next(self.parameters())
        device, dtype = device or p.device, dtype or p.dtype
        self._step = dict(
            caches=[KVCache(batch_size, self.cfg.num_heads, schedule.num_slots, self.cfg.head_dim, device, dtype) for _ in self.layers],
            bounds=schedule.block_bounds.tolist(),
            slot_token=schedule.slot_token.to(device),
            slot_special=schedule.slot_special.to(device),
            slot_is_class=schedule.slot_is_class.to(device),
            rope=rope_3d(schedule.slot_coords.to(device), self.cfg.head_dim, self.cfg.rope_theta).to(rope_dtype(dtype)),
            slots=[s.to(device) for s in schedule.step_slots],
            weights=[w.to(device) for w in schedule.step_weights],
        )

    def release_cache(self) -> None:
        """Free the KV buffers (they hold batch x layers x L x D activations)."""
        self._step = {}

    def block_forward(self, tokens: torch.Tensor, labels: torch.Tensor, block: int) -> torch.Tensor:
        """Feed block ``block`` through the cached model -> logits (B, Nb, V) of the targets it completes.

        tokens (B, N) flat grid holding every token fed at or before this block; labels (B,).
        """
        st = self._step
        start, end = st["bounds"][block], st["bounds"][block + 1]
        x = self._embed(tokens, labels, st["slot_token"][start:end], st["slot_special"][start:end], st["slot_is_class"][start:end])
        taps = self._run_layers(x, st["rope"][start:end], None, st["caches"], start)  # K x (B, Sb, D)
        return self._head_logits(taps, st["slots"][block], st["weights"][block])

    def prefill(self, labels: torch.Tensor, num_positions: int) -> torch.Tensor:
        """Block 0 (the class slot) -> logits (B, N0, V) of its targets; fills the cache."""
        tokens = torch.zeros(labels.shape[0], num_positions, dtype=torch.long, device=labels.device)
        return self.block_forward(tokens, labels, 0)

    def decode_step(self, tokens: torch.Tensor, labels: torch.Tensor, block: int) -> torch.Tensor:
        """Blocks 1..S-1: see :meth:`block_forward`."""
        return self.block_forward(tokens, labels, block)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
