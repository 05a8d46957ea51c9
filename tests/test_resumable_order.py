"""The training order: seeded per epoch, split over ranks, continued where a resumed run stopped."""

from __future__ import annotations

import torch

from navid.data.resumable_order import ResumableShuffleSampler, training_loader


def _order(sampler: ResumableShuffleSampler) -> list[int]:
    return [key.index for key in sampler]


def _passes(sampler: ResumableShuffleSampler, count: int) -> list[list[int]]:
    return [_order(sampler) for _ in range(count)]


def test_each_pass_is_the_next_epochs_seeded_permutation_whatever_the_global_stream():
    data = range(10)
    torch.manual_seed(1)
    first = _passes(ResumableShuffleSampler(data, seed=3), 3)
    torch.manual_seed(2)
    again = _passes(ResumableShuffleSampler(data, seed=3), 3)
    assert first == again
    assert all(sorted(order) == list(range(10)) for order in first)
    assert first[0] != first[1] != first[2]
    assert _order(ResumableShuffleSampler(data, seed=4)) != first[0]
    sampler = ResumableShuffleSampler(data, seed=3)
    sampler.set_epoch(7)  # Lightning's epoch numbers are not the order's (see batches_consumed)
    assert [tuple(key) for key in sampler] == [(index, 0) for index in first[0]]


def test_ranks_share_out_one_permutation():
    whole = _order(ResumableShuffleSampler(range(12), seed=0))
    shares = [_order(ResumableShuffleSampler(range(12), seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(shares, [])) == list(range(12))
    assert shares[1] == whole[1::3]


def test_a_resumed_sampler_leaves_out_the_consumed_batches_of_its_first_pass():
    whole = _passes(ResumableShuffleSampler(range(10), seed=0), 3)
    resumed = ResumableShuffleSampler(range(10), seed=0, batch_size=2, consumed_batches=5 + 3)  # epoch 1, batch 3
    assert _passes(resumed, 2) == [whole[1][6:], whole[2]]


def test_training_loader_without_a_trainer_and_with_a_share_smaller_than_a_batch():
    loader = training_loader(list(range(10)), batch_size=4, num_workers=0, seed=0, trainer=None)
    assert [len(batch) for batch in loader] == [4, 4]
    assert [len(batch) for batch in training_loader(list(range(3)), 4, 0, 0, None)] == [3]


class _Draws(torch.utils.data.Dataset):
    """Item i: i and a draw from torch's global stream, as UCF101Clips draws a clip's start and flip."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[int, float]:
        return i, float(torch.rand(()))


def _items(workers: int, seed: int = 0) -> dict[int, float]:
    loader = training_loader(_Draws(), batch_size=2, num_workers=workers, seed=seed, trainer=None)
    return {int(i): float(d) for _ in range(2) for index, draw in loader for i, d in zip(index, draw)}


def test_an_items_draws_depend_on_the_seed_epoch_and_index_not_on_workers_or_the_global_stream():
    torch.manual_seed(5)
    alone = _items(workers=0)
    torch.manual_seed(6)
    assert _items(workers=2) == alone
    assert _items(workers=0, seed=1) != alone
    state = torch.random.get_rng_state()
    _items(workers=0)
    assert torch.equal(torch.random.get_rng_state(), state)
