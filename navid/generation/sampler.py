"""One KV-cache sampler for every schedule (NAR wavefront, PAR-n x groups, raster tokens).

Loop over blocks (the only Python loop): feed block b through the cached model (one static-shape
step, optionally compiled), get the averaged head logits of the targets block b completes
(precomputed index tensors), apply classifier-free guidance / temperature / top-k / top-p in fp32,
sample with a seeded generator and scatter the sampled tokens into the flat grid that later blocks
read from. No host syncs inside the loop; tokens stay on the device. Padded targets are dropped
before sampling, so the random stream (and the tokens for a seed) do not depend on the layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.fx.experimental._config as shape_config
from tqdm.auto import tqdm

from navid.generation.decode_plan import DecodeBlock, DecodePlan
from navid.generation.schedule import Schedule
from navid.generation.transformer import Transformer


@dataclass
class SamplingConfig:
    cfg_scale: float = 1.0  # 1 = no guidance (no null-class rows are run)
    cfg_interval: Optional[Tuple[float, float]] = None  # guide only steps with lo <= step/num_steps < hi
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int = 0
    compile: bool = False  # torch.compile the cached step (CUDA: CUDA graphs); see compile_step
    padding: str = "auto"  # step layout (navid.generation.decode_plan): "padded", "exact", "auto" = padded on CUDA

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"bad sampling settings: need temperature >= 0 (got {self.temperature}), "
                f"top_k >= 0 (got {self.top_k}), "
                f"0 < top_p <= 1 (got {self.top_p})"
            )
        if self.padding not in ("auto", "padded", "exact"):
            raise ValueError(f"padding must be 'auto', 'padded' or 'exact', got {self.padding!r}")
        if self.cfg_interval is not None:
            lo, hi = self.cfg_interval
            if not 0 <= lo <= hi <= 1:
                raise ValueError(f"cfg_interval must satisfy 0 <= lo <= hi <= 1, got {self.cfg_interval}")

    def padded_blocks(self, device: torch.device) -> bool:
        """Padded steps where a padded row costs what a real one costs (a GPU, where CUDA graphs want few shapes);
        exact steps where the device is arithmetic-bound (a CPU)."""
        return self.padding == "padded" or (self.padding == "auto" and device.type == "cuda")


@dataclass
class SampleResult:
    tokens: torch.Tensor  # (B, T, H, W) int64
    steps: int  # forward steps (= schedule blocks)
    seconds: float  # wall time of the whole sampling loop (device synchronised)
    forward_seconds: float  # part of it spent inside model forwards (only measured with profile=True)
    compile_seconds: float = 0.0  # compile=True: compiling / graph recording before the loop (not in ``seconds``)


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Guided logits ``uncond + scale (cond - uncond)``, written so scale 1 returns ``cond`` exactly."""
    return cond + (scale - 1.0) * (cond - uncond)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """logits (..., V) with everything outside the top-k / nucleus set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(logits: torch.Tensor, sampling: SamplingConfig, generator: Optional[torch.Generator]) -> torch.Tensor:
    """logits (B, M, V) -> tokens (B, M) int64; argmax at temperature 0.

    Inverse-CDF sampling: one uniform per token and a ``searchsorted`` in the cumulative
    probabilities (two passes over V, no host sync), cheaper than Gumbel-max's V random numbers.
    """
    if sampling.temperature == 0:
        return logits.argmax(-1)
    if sampling.temperature != 1.0:
        logits = logits.float() / sampling.temperature
    logits = filter_logits(logits.float(), sampling.top_k, sampling.top_p)
    cdf = logits.softmax(-1).cumsum_(-1)  # (B, M, V)
    u = torch.rand((*cdf.shape[:-1], 1), device=cdf.device, generator=generator) * cdf[..., -1:]  # (B, M, 1)
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); timings read the clock only after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def enable_tf32() -> None:
    """Let fp32 matmuls use TF32 tensor cores (call on CUDA only; cuDNN convolutions use TF32 by default)."""
    torch.set_float32_matmul_precision("high")


def compile_step(model: Transformer, device: torch.device, padded: bool):
    """``torch.compile`` of the cached step: CUDA graphs on CUDA (``reduce-overhead``), inductor's default on CPU.

    The exact (unpadded) layout has one shape per block, so its sizes are compiled as dynamic, with
    sizes of 1 treated like any other size (``backed_size_oblivious``) and no equalities assumed
    between sizes that happen to coincide (``use_duck_shape=False``): one graph then serves almost
    every block (three graphs in all: the 1-key class block and 1-query blocks still get their own)
    instead of one compilation per block size. Compilation happens on the first call of each shape.
    The graphs take the cache's batch size and length as fixed (Dynamo treats module buffers as
    static), so a new batch size or grid compiles again.
    """
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    compiled = torch.compile(model.decode_step, mode=mode, dynamic=None if padded else True)

    def step(tokens: torch.Tensor, labels: torch.Tensor, block: DecodeBlock) -> torch.Tensor:
        with shape_config.patch(backed_size_oblivious=True, use_duck_shape=False):
            return compiled(tokens, labels, block)

    return step


def forward_block(step_fn, tokens: torch.Tensor, rows: torch.Tensor, block: DecodeBlock, count: int,
                  graphed: bool) -> torch.Tensor:
    """One forward of the cached step on ``block`` -> logits (B', count, V) in fp32 of the targets it completes
    (padded targets dropped). ``graphed``: a CUDA-graph step, whose previous outputs must be consumed by now."""
    if graphed:
        torch.compiler.cudagraph_mark_step_begin()
    return step_fn(tokens, rows, block)[:, :count].float()


def _warm_up(step_fn, plan: DecodePlan, tokens: torch.Tensor, rows: torch.Tensor, device: torch.device) -> float:
    """Run every distinct step shape once (compiling it; on CUDA also recording its graph); return the seconds.

    The cache garbage this leaves is harmless: every block writes all slots before its end before
    it attends to them.
    """
    first = {}
    for b, shape in enumerate(plan.shapes()):
        first.setdefault(shape, b)
    calls = 3 if device.type == "cuda" else 1  # CUDA graph trees warm up, then record, then replay
    synchronize(device)
    t0 = time.perf_counter()
    for b in first.values():
        for _ in range(calls):
            if device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            step_fn(tokens, rows, plan.blocks[b])
    synchronize(device)
    return time.perf_counter() - t0


@torch.no_grad()
def sample(
    model: Transformer,
    schedule: Schedule,
    labels: torch.Tensor,
    sampling: SamplingConfig,
    generator: Optional[torch.Generator] = None,
    progress: bool = False,
    profile: bool = False,
    keep_cache: bool = False,
) -> SampleResult:
    """Generate token grids (B, T, H, W) for ``labels`` (B,) with ``schedule``.

    ``generator`` defaults to one seeded with ``sampling.seed`` on the labels' device.
    ``profile=True`` synchronises around each model call to measure ``forward_seconds``.
    ``keep_cache=True`` leaves the KV cache and tables on the model for the next call, which reuses
    them in place (a loop over batches: CUDA graphs replay instead of recording again for every
    batch); the caller frees them with ``model.release_cache()``.
    The model runs in its own dtype (weights and KV cache); guidance, filtering and sampling run in fp32.
    """
    device = labels.device
    if generator is None:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    B, N, S = labels.shape[0], schedule.num_positions, schedule.num_steps
    guided = sampling.cfg_scale != 1.0
    rows = torch.cat([labels, torch.full_like(labels, model.cfg.num_classes)]) if guided else labels  # (B or 2B,)
    padded = sampling.padded_blocks(device)
    plan = model.setup_cache(rows.shape[0], schedule, padded)
    counts = plan.num_targets
    lo, hi = sampling.cfg_interval or (0.0, 1.0)
    tokens = torch.zeros(rows.shape[0], N, dtype=torch.long, device=device)  # (B', N) flat grid
    step_fn, compile_s = model.decode_step, 0.0
    if sampling.compile:
        step_fn = compile_step(model, device, padded)
        compile_s = _warm_up(step_fn, plan, tokens, rows, device)
    graphed = sampling.compile and device.type == "cuda"
    forward_s = 0.0
    synchronize(device)
    t0 = time.perf_counter()
    for b in tqdm(range(S), desc=f"sampling {schedule.kind}", disable=not progress, leave=False):
        if profile:
            synchronize(device)
            f0 = time.perf_counter()
        logits = forward_block(step_fn, tokens, rows, plan.blocks[b], counts[b], graphed)  # (B', Nb, V)
        if profile:
            synchronize(device)
            forward_s += time.perf_counter() - f0
        if guided:
            cond, uncond = logits.chunk(2)
            scale = sampling.cfg_scale if lo <= b / S < hi else 1.0
            logits = cfg_combine(cond, uncond, scale)
        new = sample_logits(logits, sampling, generator)  # (B, Nb)
        tokens[:, plan.target_pos[b]] = new.repeat(2, 1) if guided else new
    synchronize(device)
    seconds = time.perf_counter() - t0
    if not keep_cache:
        model.release_cache()
    return SampleResult(tokens[:B].view(B, *schedule.grid), S, seconds, forward_s, compile_s)
