"""Sampler: per-step cached logits == training-path logits, determinism, CFG scale 1, greedy, filters."""

from __future__ import annotations

import pytest
import torch

from navid.generation.sampler import SamplingConfig, cfg_combine, compile_step, filter_logits, sample, sample_logits
from navid.generation.schedule import build_schedule
from navid.generation.transformer import Transformer, TransformerConfig

KINDS = ["nar", "par4", "raster"]
GRID = (2, 4, 4)
TINY = dict(vocab_size=31, num_classes=5, dim=48, depth=2, num_heads=4, multiple_of=16)


def random_model(kind: str) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(**TINY), kind).eval()
    torch.nn.init.normal_(model.head_out.weight, std=0.5)
    return model


@pytest.mark.numerics
@pytest.mark.parametrize("padded", [False, True], ids=["exact", "padded"])
@pytest.mark.parametrize("kind", KINDS)
def test_cached_steps_equal_full_forward(kind, padded):
    """Each cached step's logits equal the training path's; padded queries and targets change nothing.

    1e-4: both paths do the same float32 arithmetic on O(1) activations, only in a different order
    (a block attends over its prefix vs the full masked sequence), so they differ by a few ulps.
    """
    plan = _assert_cached_steps_equal_full_forward(kind, GRID, padded)
    schedule = build_schedule(kind, GRID)
    assert len(set(plan.shapes())) < schedule.num_steps if padded else len(plan.shapes()) == schedule.num_steps


@pytest.mark.numerics
@pytest.mark.parametrize("padded", [False, True], ids=["exact", "padded"])
@pytest.mark.parametrize("kind, grid", [
    ("nar", (2, 3, 5)), ("nar", (1, 1, 5)), ("nar", (1, 1, 1)), ("raster", (2, 3, 5)),
    ("par4", (3, 2, 4)), ("par4", (1, 2, 2)), ("par4", (2, 2, 2)), ("par9", (2, 3, 6)),
])
def test_cached_steps_equal_full_forward_on_odd_and_edge_grids(kind, grid, padded):
    """Odd sides, single-token planes, PAR with no group phase (1x2x2: every block one token) or no group after
    the transition slots (2x2x2), and PAR with 3x3 regions; the tolerance is the one above, for the same reason."""
    _assert_cached_steps_equal_full_forward(kind, grid, padded)


def _assert_cached_steps_equal_full_forward(kind: str, grid: tuple, padded: bool):
    """Every cached step's logits of a sampled grid equal the training path's for the targets it completes."""
    schedule = build_schedule(kind, grid)
    model = random_model(kind)
    with torch.no_grad():
        torch.nn.init.normal_(model.special_emb, std=1.0)  # transition slots must carry their own embedding
    labels = torch.tensor([0, 3, 5])  # 5 = null class
    tokens = sample(model, schedule, labels, SamplingConfig(seed=3)).tokens
    with torch.no_grad():
        full = model.target_logits(tokens, labels, schedule)  # (B, N, V)
        plan = model.setup_cache(len(labels), schedule, padded=padded)
        flat = tokens.flatten(1)
        steps = [model.decode_step(flat, labels, block) for block in plan.blocks]
    for b, logits in enumerate(steps):
        n = len(schedule.step_targets[b])
        torch.testing.assert_close(logits[:, :n], full[:, schedule.step_targets[b]], atol=1e-4, rtol=1e-4)
    return plan


def test_padded_layout_samples_the_same_tokens():
    """The layout only changes the step's shapes: same seed, same tokens (padding never reaches the sampler)."""
    schedule = build_schedule("nar", GRID)
    model = random_model("nar")
    labels = torch.tensor([1, 2])
    exact = sample(model, schedule, labels, SamplingConfig(seed=5, padding="exact")).tokens
    padded = sample(model, schedule, labels, SamplingConfig(seed=5, padding="padded")).tokens
    assert torch.equal(exact, padded)


@pytest.mark.parametrize("kind", KINDS)
def test_kept_cache_is_reused_in_place_and_samples_what_a_fresh_one_does(kind):
    """A loop over batches keeps one KV cache and one set of tables at fixed addresses (what lets CUDA graphs replay),
    whatever the previous batch left in them; a new batch size or layout gets buffers of its own shape."""
    schedule = build_schedule(kind, GRID)
    model = random_model(kind)
    runs = [([4, 0, 1], 1, "exact"), ([1, 2, 3], 2, "exact"), ([3, 3, 0], 3, "padded"), ([2, 4], 4, "exact")]
    fresh = [sample(model, schedule, torch.tensor(labels), SamplingConfig(seed=seed, padding=layout)).tokens
             for labels, seed, layout in runs]
    assert model.decode_tables is None and model.layers[0].attn.cache is None
    addresses = []
    for (labels, seed, layout), expected in zip(runs, fresh):
        kept = sample(model, schedule, torch.tensor(labels), SamplingConfig(seed=seed, padding=layout), keep_cache=True)
        assert torch.equal(kept.tokens, expected)
        cache = model.layers[-1].attn.cache
        assert cache.k.shape[0] == len(labels) and model.decode_tables.masked == (layout == "padded")
        addresses.append((cache.k.data_ptr(), model.decode_tables.cos.data_ptr()))
    assert addresses[1] == addresses[0] and addresses[3] != addresses[2]
    model.release_cache()
    assert model.decode_tables is None and all(layer.attn.cache is None for layer in model.layers)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_tokens(kind):
    schedule = build_schedule(kind, GRID)
    model = random_model(kind)
    labels = torch.tensor([1, 2])
    settings = SamplingConfig(seed=7, cfg_scale=2.0, top_k=10, top_p=0.9)
    a = sample(model, schedule, labels, settings)
    b = sample(model, schedule, labels, settings)
    c = sample(model, schedule, labels, SamplingConfig(seed=8, cfg_scale=2.0, top_k=10, top_p=0.9))
    assert torch.equal(a.tokens, b.tokens) and not torch.equal(a.tokens, c.tokens)
    assert a.steps == schedule.num_steps and a.tokens.shape == (2, *GRID)


def test_cfg_scale_one_is_no_guidance():
    cond, uncond = torch.randn(2, 5, 31), torch.randn(2, 5, 31)
    assert torch.equal(cfg_combine(cond, uncond, 1.0), cond)
    torch.testing.assert_close(cfg_combine(cond, uncond, 3.0), uncond + 3.0 * (cond - uncond))
    schedule = build_schedule("nar", GRID)
    model = random_model("nar")
    labels = torch.tensor([1, 2])
    plain = sample(model, schedule, labels, SamplingConfig(temperature=0)).tokens
    # guidance active on no step (empty interval) runs the null rows but must not change anything
    idle = sample(model, schedule, labels, SamplingConfig(temperature=0, cfg_scale=4.0, cfg_interval=(1.0, 1.0))).tokens
    guided = sample(model, schedule, labels, SamplingConfig(temperature=0, cfg_scale=4.0)).tokens
    assert torch.equal(plain, idle) and not torch.equal(plain, guided)


@pytest.mark.numerics
def test_greedy_is_argmax_of_full_forward():
    schedule = build_schedule("raster", GRID)
    model = random_model("raster")
    labels = torch.tensor([4])
    tokens = sample(model, schedule, labels, SamplingConfig(temperature=0)).tokens
    with torch.no_grad():
        logits = model.target_logits(tokens, labels, schedule)
    # Exact only while no two top logits lie within round-off (~1e-6, logits ~4) of each other: this seeded
    # model's smallest top-2 gap over the 32 positions is 0.02, four orders above, so a failure means a wrong step.
    assert torch.equal(logits.argmax(-1), tokens.flatten(1))


def test_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)[0, 2:]).all()
    kept = filter_logits(logits, 0, 0.7)  # softmax = .64, .24, ... -> keeps the first two
    assert torch.isfinite(kept[0, :2]).all() and torch.isinf(kept[0, 2:]).all()
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)


def test_sampling_follows_the_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0]).log_softmax(-1).expand(1, 20000, 4)
    tokens = sample_logits(logits, SamplingConfig(), torch.Generator().manual_seed(0))
    freq = torch.bincount(tokens.flatten(), minlength=4).float() / tokens.numel()
    # 20,000 draws: a frequency's standard deviation is ≤ √(0.25/20000) = 0.0035, so 0.015 is > 4σ.
    torch.testing.assert_close(freq, logits[0, 0].softmax(-1), atol=0.015, rtol=0)


def _step_logits(model: Transformer, schedule, tokens: torch.Tensor, labels: torch.Tensor,
                 step_fn=None) -> torch.Tensor:
    """Every cached step's logits (B, N, V) in float32, fed the given tokens (B, T, H, W), in schedule step order."""
    with torch.no_grad():
        plan = model.setup_cache(len(labels), schedule)
        step_fn = step_fn or model.decode_step
        out = [step_fn(tokens.flatten(1), labels, block).float() for block in plan.blocks]
        model.release_cache()
    return torch.cat(out, dim=1)


@pytest.mark.numerics
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_logits_agree_with_fp32(kind):
    """Weights and KV cache in bf16 give the fp32 logits to within 32 u times the logits' spread (u = 2^-8).

    Error analysis: every matmul, norm and residual add rounds its inputs to bf16 (relative error
    u = 2^-8; CPU and GPU bf16 matmuls accumulate in fp32), so the features reaching the heads carry
    a relative error of a few u, and so does each logit: a dot product of RMS-normalised features,
    its error is that relative error times the logits' scale. The largest of the ~10^3 logits
    compared sits a few standard deviations out: about 10 u times std(logits); 32 u leaves margin.
    """
    schedule = build_schedule(kind, GRID)
    model = random_model(kind)
    labels = torch.tensor([1, 2, 3])
    tokens = sample(model, schedule, labels, SamplingConfig(seed=1)).tokens
    reference = _step_logits(model, schedule, tokens, labels)  # (B, N, V)
    model.to(torch.bfloat16)
    assert model.setup_cache(1, schedule) and model.layers[0].attn.cache.k.dtype == torch.bfloat16
    model.release_cache()
    low = _step_logits(model, schedule, tokens, labels)
    assert (low - reference).abs().max() <= 32 * 2**-8 * reference.std()
    result = sample(model, schedule, labels, SamplingConfig(seed=1, cfg_scale=2.0, top_k=10, top_p=0.9))
    assert result.tokens.shape == (3, *GRID) and int(result.tokens.max()) < TINY["vocab_size"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_greedy_sampling_equals_eager(kind):
    """torch.compile of the cached step: the same greedy tokens as eager, and logits equal to the full forward.

    1e-4 as in test_cached_steps_equal_full_forward: inductor reorders and fuses the same float32 arithmetic.
    """
    torch._dynamo.reset()  # each kind compiles its own graphs (the recompile limit counts across models)
    schedule = build_schedule(kind, GRID)
    model = random_model(kind)
    labels = torch.tensor([1, 4])
    eager = sample(model, schedule, labels, SamplingConfig(temperature=0))
    compiled = sample(model, schedule, labels, SamplingConfig(temperature=0, compile=True))
    assert torch.equal(compiled.tokens, eager.tokens) and compiled.compile_seconds > 0
    with torch.no_grad():
        full = model.target_logits(eager.tokens, labels, schedule)  # (B, N, V)
    steps = _step_logits(model, schedule, eager.tokens, labels, compile_step(model, labels.device, padded=False))
    order = torch.cat(schedule.step_targets)
    torch.testing.assert_close(steps, full[:, order], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_compiled_padded_layout_samples_the_eager_tokens():
    """The layout CUDA uses (padded blocks, whole-cache attention under a mask, static shapes), compiled on the
    CPU: inductor's graphs for its handful of shapes give the eager greedy tokens (the GPU test adds CUDA graphs)."""
    torch._dynamo.reset()
    schedule = build_schedule("nar", GRID)
    model = random_model("nar")
    labels = torch.tensor([2, 3])
    eager = sample(model, schedule, labels, SamplingConfig(temperature=0, padding="exact"))
    compiled = sample(model, schedule, labels, SamplingConfig(temperature=0, padding="padded", compile=True))
    assert torch.equal(compiled.tokens, eager.tokens) and compiled.compile_seconds > 0


@pytest.mark.slow
@pytest.mark.parametrize("padding", ["exact", "padded"])
def test_compiled_batches_on_a_kept_cache_sample_the_eager_tokens(padding):
    """What ``navid evaluate --compile`` does: compiled batches of 2, 2 and 1 on one kept cache (refilled in place,
    then re-allocated for the smaller last batch) give each batch's eager greedy tokens."""
    torch._dynamo.reset()
    schedule = build_schedule("nar", GRID)
    model = random_model("nar")
    batches = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4])]
    eager = [sample(model, schedule, labels, SamplingConfig(temperature=0, padding=padding)).tokens
             for labels in batches]
    settings = SamplingConfig(temperature=0, padding=padding, compile=True)
    compiled = [sample(model, schedule, labels, settings, keep_cache=True).tokens for labels in batches]
    model.release_cache()
    assert all(torch.equal(c, e) for c, e in zip(compiled, eager))
