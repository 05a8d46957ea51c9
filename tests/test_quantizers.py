"""FSQ and VQ: exact index round trips, straight-through gradients, usage stats, dead-code restarts."""

import pytest
import torch

from navid.tokenizer.fsq import FSQ
from navid.tokenizer.losses import code_counts, codebook_stats
from navid.tokenizer.vq import VectorQuantizer

pytestmark = pytest.mark.numerics


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [8, 8, 8, 6, 5], [3, 2]])
def test_fsq_indices_round_trip_every_code(levels):
    fsq = FSQ(levels)
    assert fsq.vocab_size == torch.tensor(levels).prod().item()
    all_ids = torch.arange(fsq.vocab_size).view(1, -1, 1, 1)  # (1, T=K, 1, 1)
    codes = fsq.indices_to_codes(all_ids)
    assert codes.shape == (1, len(levels), fsq.vocab_size, 1, 1)
    assert codes.abs().max() <= 1.0
    assert torch.equal(fsq.codes_to_indices(codes), all_ids)


def test_fsq_forward_is_exact_inverse_and_reaches_every_level():
    fsq = FSQ([8, 5, 5, 5])
    z = torch.randn(2, 4, 4, 8, 8) * 3
    z_q, ids, aux = fsq(z)
    assert ids.shape == (2, 4, 8, 8) and ids.dtype == torch.int64 and aux.item() == 0
    # Both sides are the same level k/h computed by one float32 division: equal up to its half-ulp rounding.
    assert torch.allclose(fsq.indices_to_codes(ids), z_q)
    big = torch.linspace(-6, 6, 1000).view(1, 1, -1, 1, 1).expand(1, 4, -1, 1, 1)
    digits = (fsq(big)[0] * fsq._view(fsq.levels // 2)).round()
    for d, level in enumerate([8, 5, 5, 5]):
        assert digits[0, d].unique().numel() == level


def test_fsq_straight_through_gradient_is_nonzero():
    fsq = FSQ([8, 5, 5, 5])
    z = torch.randn(1, 4, 2, 2, 2, requires_grad=True)
    fsq(z)[0].sum().backward()
    assert z.grad is not None and (z.grad.abs() > 0).all()


def test_fsq_runs_in_fp32_under_autocast():
    fsq = FSQ([8, 5, 5, 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_q, ids, _ = fsq(torch.randn(1, 4, 2, 2, 2).bfloat16())
    assert z_q.dtype == torch.float32


def test_vq_straight_through_commitment_and_usage():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=16, dim=4)
    z = torch.randn(2, 4, 2, 4, 4, requires_grad=True)
    z_q, ids, loss = vq(z)
    assert z_q.shape == z.shape and ids.shape == (2, 2, 4, 4)
    assert loss.item() > 0
    (z_q.sum() + loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    vq.eval()  # in training the EMA update moves the codebook after the lookup
    z_q, ids, _ = vq(z)
    # z_q = z + (code - z): two float32 roundings of |z| ≲ 4, i.e. ≤ 2·4·eps32 ≈ 1e-6.
    assert torch.allclose(vq.indices_to_codes(ids), z_q.detach(), atol=1e-6)
    usage, perplexity = codebook_stats(ids, 16)
    assert 0 < usage <= 1 and 1 <= perplexity <= 16
    assert torch.equal(code_counts(ids, 16), torch.bincount(ids.flatten(), minlength=16))


def test_vq_dead_codes_restart_from_batch_latents():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=32, dim=4, decay=0.5, dead_code_threshold=0.1)
    z = torch.randn(1, 4, 1, 2, 2)  # only 4 latents: most codes get no assignments
    for _ in range(3):  # unused codes' EMA usage decays 1 -> 0.125, still alive
        vq(z)
    before = vq.embed.clone()
    assert (vq.cluster_size > 0.1).all()
    vq(z)  # 4th update: unused codes fall to 0.0625 < 0.1 and are re-seeded
    flat = torch.nn.functional.normalize(z.movedim(1, -1).reshape(-1, 4), dim=-1)
    changed = ~torch.isclose(vq.embed, before, atol=1e-6).all(-1)
    reseeded = (vq.embed @ flat.t()).max(-1).values > 1 - 1e-5  # unit vectors: a 4-term dot is 1 within ~4·eps32
    assert changed.sum() >= 28 and (changed & reseeded).sum() >= 28
    # only the dead codes were replaced: a restart sets a code's EMA sum to its new unit vector and its usage to 1;
    # the live codes keep the EMA's (usage above the threshold, sum not a unit vector)
    restarted = (vq.embed_sum == vq.embed).all(-1)
    assert restarted.sum() >= 28 and reseeded[restarted].all() and (vq.cluster_size[restarted] == 1.0).all()
    assert (vq.cluster_size[~restarted] >= 0.1).all()


def test_vq_ema_moves_codes_towards_latents():
    torch.manual_seed(0)
    vq = VectorQuantizer(codebook_size=4, dim=3, decay=0.5)
    z = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1, 1).expand(1, 3, 1, 4, 4).contiguous()
    for _ in range(10):
        _, ids, _ = vq(z)
    # decay 0.5 for 10 updates leaves ≤ 2⁻¹⁰ ≈ 1e-3 of the initial code: 1e-2 is convergence, not round-off
    assert torch.allclose(vq.embed[ids[0, 0, 0, 0]], torch.tensor([1.0, 0.0, 0.0]), atol=1e-2)


def test_fsq_entropy_penalty_only_in_training_and_bounded():
    fsq = FSQ([8, 5, 5, 5], entropy_weight=1.0)
    z = torch.randn(2, 4, 4, 8, 8)
    penalty = fsq.train()(z)[2]
    assert -1.0 <= penalty.item() < 0.0  # in units of log(vocab)
    assert fsq.eval()(z)[2].item() == 0.0
    with pytest.raises(ValueError, match="entropy"):
        FSQ([8, 5], entropy_weight=-1.0)


def test_fsq_entropy_penalty_spreads_correlated_latents_over_more_codes():
    """Latents whose four channels move together use few level combinations; the penalty alone decorrelates them."""
    torch.manual_seed(0)
    fsq = FSQ([8, 5, 5, 5], entropy_weight=1.0).train()
    z = (torch.randn(1, 1, 4, 16, 16) * 2).repeat(1, 4, 1, 1, 1).requires_grad_(True)  # 1,024 tokens
    before = codebook_stats(fsq(z)[1], fsq.vocab_size)[0].item()
    opt = torch.optim.Adam([z], lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        fsq(z)[2].backward()
        opt.step()
    after = codebook_stats(fsq(z)[1], fsq.vocab_size)[0].item()
    assert before < 0.05 and after > 0.25
