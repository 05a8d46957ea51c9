"""The generator's train/val split of a token cache keeps related clips (a UCF-101 group, a video's clips and
their mirror images) on one side."""

from __future__ import annotations

import numpy as np
import pytest

from navid.data.token_cache import TokenCache, TokenCacheError, split_rows, write_token_cache
from navid.data.ucf101 import video_group


def _cache(path, num_rows: int, **kwargs) -> TokenCache:
    tokens = np.zeros((num_rows, 1, 2, 2), dtype=np.int64)
    return TokenCache(write_token_cache(path, tokens, np.zeros(num_rows, dtype=np.int64), vocab_size=4,
                                       class_names=["a"], tokenizer_fingerprint="f", **kwargs))


def test_video_group_follows_the_ucf101_names():
    assert video_group("UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi") == "handstandpushups_g08"
    assert video_group("v_ApplyEyeMakeup_g1_c2.avi") == video_group("v_applyeyemakeup_g01_c05.avi")
    assert video_group("clips/other_name.mp4") == "other_name"


@pytest.mark.parametrize("seed", range(5))
def test_groups_stay_on_one_side_and_val_holds_its_share(tmp_path, seed):
    groups = np.repeat(np.arange(40), np.arange(40) % 5 + 1)  # 40 groups of 1..5 rows, 120 rows
    cache = _cache(tmp_path / "c", len(groups), groups=groups)
    train, val = split_rows(cache, 0.1, seed)
    assert sorted(train + val) == list(range(len(groups)))
    assert not set(groups[train]) & set(groups[val])
    assert 12 <= len(val) < 12 + 5  # the share, overshot by less than one group
    assert split_rows(cache, 0.1, seed) == (train, val)
    assert split_rows(cache, 0.0, seed) == (list(range(len(groups))), [])


def test_caches_without_groups_split_by_video_when_their_source_says_how(tmp_path):
    # 6 videos x 2 clips x (clip, mirror): rows 4v .. 4v+3 are video v
    cache = _cache(tmp_path / "c", 24, source={"clips_per_video": 2, "hflip": True})
    train, val = split_rows(cache, 0.25, seed=0)
    assert len(val) == 8 and not {r // 4 for r in train} & {r // 4 for r in val}
    alone = _cache(tmp_path / "alone", 24)  # no groups, no source: every row on its own
    assert len(split_rows(alone, 0.25, seed=0)[1]) == 6


def test_groups_of_the_wrong_length_are_refused(tmp_path):
    with pytest.raises(TokenCacheError, match=r"groups must be \(4,\)"):
        _cache(tmp_path / "c", 4, groups=np.zeros(3, dtype=np.int64))


def _pickled(path):
    np.save(path, np.array([{"not": "tokens"}], dtype=object), allow_pickle=True)


def _truncated(path):
    path.write_bytes(path.read_bytes()[:90])


def _without_grid(path):
    import json

    meta = json.loads(path.read_text())
    del meta["grid"]
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("name, damage, says", [
    ("meta.json", lambda p: p.write_text("{bad"), "not a readable token cache's meta.json"),
    ("meta.json", _without_grid, "no grid"),
    ("tokens.npy", _pickled, "holds Python objects, not numbers"),
    ("tokens.npy", _truncated, "not a readable token array"),
    ("tokens.npy", lambda p: p.write_bytes(b"garbage"), "not a readable token array"),
    ("labels.npy", lambda p: p.unlink(), "missing (label array"),
    ("labels.npy", lambda p: np.save(p, np.zeros(2, dtype=np.int64)), "labels.npy has shape (2,)"),
])
def test_a_damaged_cache_is_refused_in_one_error_naming_the_file(tmp_path, name, damage, says):
    # Before: JSON and numpy messages without the file (numpy's advising to unpickle the file), a KeyError, or a
    # cache with too few labels accepted.
    root = _cache(tmp_path / "cache", 3).root
    damage(root / name)
    with pytest.raises(TokenCacheError) as refused:
        TokenCache(root)
    assert str(root / name) in str(refused.value) and says in str(refused.value)
    assert "allow_pickle" not in str(refused.value)


def test_a_damaged_shard_is_named_with_what_to_do(tmp_path):
    from navid.data.token_cache import TokenCacheShards

    shards = TokenCacheShards.prepare(tmp_path / "out", {"data": "x"}, num_items=4, shard_size=2, overwrite=False)
    for shard in range(shards.num_shards):
        shards.write(shard, np.zeros((2, 1, 2, 2), dtype=np.int64), np.zeros(2, dtype=np.int64))
    whole = shards.path(1).read_bytes()
    for damaged in (b"garbage", whole[: len(whole) // 2]):  # a truncated archive: zipfile's BadZipFile before
        shards.path(1).write_bytes(damaged)
        with pytest.raises(TokenCacheError, match="remove it and rerun the same command to encode it again") as refused:
            shards.finish(vocab_size=4, class_names=["a"], tokenizer_fingerprint="f")
        assert str(shards.path(1)) in str(refused.value)
    (shards.dir / "plan.json").write_text("{bad")
    with pytest.raises(TokenCacheError, match="token-shard plan"):
        TokenCacheShards(tmp_path / "out")
