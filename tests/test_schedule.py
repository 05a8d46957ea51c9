"""Schedule properties for many grids: coverage, causality, step counts, mask, PAR layout."""

from __future__ import annotations

import pytest
import torch

from navid.generation.schedule import build_schedule, nar, par, raster

GRIDS = [(1, 16, 16), (4, 8, 8), (4, 16, 16), (5, 16, 16), (3, 5, 7), (1, 1, 1), (2, 3, 1)]


def _schedules(grid):
    out = [nar(grid), raster(grid)]
    if grid[1] % 2 == 0 and grid[2] % 2 == 0:
        out.append(par(grid, 4))
    return out


def expected_steps(s):
    T, H, W = s.grid
    N = T * H * W
    if s.kind == "nar":
        return T + H + W - 2
    if s.kind == "raster":
        return N
    n = int(s.kind[3:])
    return N // n + n - 1


@pytest.mark.parametrize("grid", GRIDS)
def test_schedule_properties(grid):
    for s in _schedules(grid):
        N = s.num_positions
        assert s.num_steps == expected_steps(s)
        # every position is predicted exactly once (one prediction group, weights sum to 1)
        assert torch.allclose(s.target_weight.sum(0), torch.ones(N))
        # each position's token is fed at most once, and every source is fed in an earlier block
        fed = s.slot_token[s.slot_token >= 0]
        assert len(fed) == len(set(fed.tolist()))
        valid = s.target_slot >= 0
        src_block = s.slot_block[s.target_slot.clamp(min=0)]
        assert bool((src_block[valid] < s.fed_block.expand_as(src_block)[valid]).all())
        # blocks cover the slots contiguously; the mask is block-causal with the class slot visible to all
        assert s.blocks[0] == (0, 1) and s.blocks[-1][1] == s.num_slots
        m = s.attention_mask
        assert bool(m[:, 0].all())
        blk = s.slot_block
        assert torch.equal(m, blk[None, :] <= blk[:, None])
        # each step completes some targets and the steps partition the grid
        assert sorted(torch.cat(s.step_targets).tolist()) == list(range(N))


def test_step_counts_at_paper_grid():
    assert [build_schedule(k, (4, 16, 16)).num_steps for k in ("nar", "par4", "raster")] == [34, 259, 1024]
    assert build_schedule("par4", (5, 16, 16)).num_steps == 323
    assert nar((1, 16, 16)).num_steps == 31


def test_nar_heads_point_at_neighbours():
    s = nar((3, 5, 7))
    T, H, W = s.grid
    pos = s.slot_token
    for k, stride in enumerate((H * W, W, 1)):  # time, row, column
        src = s.target_slot[k]
        has = src > 0
        targets = torch.nonzero(has).squeeze(1)
        assert torch.equal(pos[src[has]] + stride, targets)
    assert s.target_slot[:, 0].tolist() == [0, 0, 0]  # class slot -> (0, 0, 0) with all three heads
    planes = (s.slot_coords.sum(1))[1:]
    assert torch.equal(s.slot_block[1:], planes + 1)  # block c+1 = plane c


def test_par_sequence_layout():
    s = par((1, 4, 4), 4)  # regions of 2x2, J = 4 tokens per region
    # [class, r0[0], r1[0], r2[0], r3[0], M1, M2, M3, r0[1], r1[1], r2[1], r3[1], r0[2], ...]
    assert s.slot_token[:5].tolist() == [-1, 0, 2, 8, 10]
    assert s.slot_special[5:8].tolist() == [0, 1, 2]
    assert s.slot_token[8:12].tolist() == [1, 3, 9, 11]
    assert [e - b for b, e in s.blocks] == [1, 1, 1, 1, 4, 4, 4]
    assert s.num_special == 3


def test_errors():
    with pytest.raises(ValueError, match="divisible by 2"):
        par((3, 5, 7), 4)
    with pytest.raises(ValueError, match="n = M\\*M"):
        par((4, 8, 8), 3)
    with pytest.raises(ValueError, match="unknown schedule kind"):
        build_schedule("zigzag", (4, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        nar((0, 4, 4))
