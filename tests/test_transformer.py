"""Transformer: leak tests per schedule (float64, bit-exact), sizes and parameter count, init."""

from __future__ import annotations

import pytest
import torch

from navid.generation.schedule import build_schedule
from navid.generation.transformer import Transformer, TransformerConfig, count_parameters, drop_labels

KINDS = ["nar", "par4", "raster"]
TINY = dict(vocab_size=23, num_classes=5, dim=48, depth=2, num_heads=4, multiple_of=16)


def random_model(kind: str) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(**TINY), kind).double().eval()
    torch.nn.init.normal_(model.head_out.weight)  # zero-initialised heads would make every logit 0
    return model


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("grid", [(2, 4, 6), (1, 4, 4)])
def test_no_leak(kind, grid):
    """Changing position p's token leaves every target decoded in p's step or earlier unchanged."""
    schedule = build_schedule(kind, grid)
    model = random_model(kind)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, TINY["vocab_size"], (2, *grid), generator=g)
    labels = torch.tensor([1, 4])
    with torch.no_grad():
        base = model.target_logits(tokens, labels, schedule)  # (B, N, V)
        fed = torch.nonzero(schedule.fed_block < schedule.num_steps).squeeze(1)
        for p in fed[:: max(1, len(fed) // 6)].tolist():
            changed = tokens.clone().flatten(1)
            changed[:, p] = (changed[:, p] + 1) % TINY["vocab_size"]
            out = model.target_logits(changed.view_as(tokens), labels, schedule)
            early = schedule.target_block <= schedule.target_block[p]
            assert torch.equal(out[:, early], base[:, early]), f"leak from position {p}"
            assert not torch.equal(out[:, ~early], base[:, ~early])


def test_output_heads_zero_initialised():
    model = Transformer(TransformerConfig(**TINY), "nar")
    schedule = build_schedule("nar", (2, 3, 3))
    logits = model.target_logits(torch.zeros(1, 2, 3, 3, dtype=torch.long), torch.tensor([0]), schedule)
    assert torch.count_nonzero(logits) == 0
    assert model.head_out.in_features == 3 * TINY["dim"] and len(model.layers) == TINY["depth"] + 2
    assert len(Transformer(TransformerConfig(**TINY), "par4").special_emb) == 3


def test_schedule_kind_mismatch_is_an_error():
    model = Transformer(TransformerConfig(**TINY), "raster")
    with pytest.raises(ValueError, match="built for schedule 'raster'"):
        model.target_logits(torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.tensor([0]),
                            build_schedule("nar", (1, 2, 2)))


def test_nar_l_parameter_count():
    """NAR-L (dim 1024, 24 trunk layers + 2 head blocks, 16 heads) is ~369M with a 8192-token vocabulary."""
    with torch.device("meta"):
        model = Transformer(TransformerConfig.from_size("L", vocab_size=8192, num_classes=101), "nar")
    n = count_parameters(model)
    assert 360e6 < n < 378e6, n


def test_drop_labels():
    labels = torch.arange(1000) % 5
    out = drop_labels(labels, 0.3, 5, torch.Generator().manual_seed(0))
    share = (out == 5).float().mean().item()
    assert 0.25 < share < 0.35 and torch.equal(out[out != 5], labels[out != 5])
    assert drop_labels(labels, 0.0, 5) is labels


def test_nar_heads_tap_the_reference_depths():
    """Column head after the trunk, row head after extra block 1, time head after extra block 2 (DESIGN.md §1).

    (1,0,0), (0,1,0) and (0,0,1) each have one predictor, (0,0,0) through the time, row and column
    head respectively, so perturbing only the last extra block moves the time-only target alone.
    """
    schedule = build_schedule("nar", (2, 2, 2))
    model = random_model("nar")
    tokens = torch.randint(0, TINY["vocab_size"], (1, 2, 2, 2), generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([3])
    with torch.no_grad():
        base = model.target_logits(tokens, labels, schedule)  # (1, 8, V)
        for p in model.layers[-1].parameters():
            p.add_(0.5 * torch.randn_like(p))
        out = model.target_logits(tokens, labels, schedule)
    time_only, row_only, column_only = 4, 2, 1  # flat (t, h, w) indices of (1,0,0), (0,1,0), (0,0,1)
    assert not torch.allclose(out[:, time_only], base[:, time_only])
    assert torch.equal(out[:, row_only], base[:, row_only]) and torch.equal(out[:, column_only], base[:, column_only])
    assert model.taps == [TINY["depth"] + 2, TINY["depth"] + 1, TINY["depth"]]


def _saved_nar_generator(tmp_path, record_taps: bool):
    """A NAR generator checkpoint (default config, tiny trunk) written by the training module, optionally
    without its head-tap record (as checkpoints from before the tap fix)."""
    from navid.generation.config import GeneratorTrainConfig
    from navid.generation.lightning_module import GeneratorModule

    meta = dict(grid=[2, 2, 2], class_names=["a", "b"], tokenizer_fingerprint="f", vocab_size=16, num_classes=2,
                num_clips=4)
    module = GeneratorModule(GeneratorTrainConfig(), meta)
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    if not record_taps:
        del checkpoint["navid"]["head_taps"]
    path = tmp_path / f"nar_{record_taps}.ckpt"
    torch.save(checkpoint, path)
    return path


def test_checkpoints_record_the_head_taps(tmp_path):
    from navid.generation.checkpoint import load_generator

    model, _, meta = load_generator(_saved_nar_generator(tmp_path, record_taps=True))
    assert meta["head_taps"] == model.taps == [6, 5, 4]
    with pytest.raises(ValueError, match=r"heads read layers \[5, 6, 4\].*retrain the generator"):
        load_generator(_saved_nar_generator(tmp_path, record_taps=False))
