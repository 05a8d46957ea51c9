"""The demo's per-class verdict and its bootstrap confidence, on feature sets whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from navid.generation.class_verdict import class_verdict, draw_shares


def _features(rng, centres, labels, noise):
    return centres[labels] + noise * rng.normal(size=(len(labels), centres.shape[1]))


def test_separated_classes_pass_with_full_confidence():
    rng = np.random.default_rng(0)
    centres = 10.0 * rng.normal(size=(5, 16))
    labels = np.repeat(np.arange(5), 6)
    verdict = class_verdict(_features(rng, centres, labels, 1.0), labels, _features(rng, centres, labels, 1.0), labels,
                            draws=40, seed=0)
    assert verdict.share == 1.0 and verdict.passed and verdict.confidence == 1.0
    assert verdict.clips_per_class == 6 and "40 bootstrap draws" in verdict.describe()


def test_generated_clips_that_ignore_their_labels_fail():
    rng = np.random.default_rng(1)
    centres = 10.0 * rng.normal(size=(5, 16))
    labels = np.repeat(np.arange(5), 6)
    every_clip_class_0 = _features(rng, centres, np.zeros_like(labels), 1.0)
    verdict = class_verdict(every_clip_class_0, labels, _features(rng, centres, labels, 1.0), labels, draws=40, seed=0)
    assert verdict.share == 0.2 and not verdict.passed and verdict.confidence == 0.0


def test_draws_are_seeded_and_draw_the_asked_number_of_clips():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 8))
    labels = np.repeat(np.arange(3), 5)
    gen, real = _features(rng, centres, labels, 1.0), _features(rng, centres, labels, 1.0)
    first = draw_shares(gen, labels, real, labels, per_class=3, draws=10, seed=7)
    assert np.array_equal(first, draw_shares(gen, labels, real, labels, per_class=3, draws=10, seed=7))
    assert set(np.round(first * 3).astype(int)) <= {0, 1, 2, 3}  # shares of 3 classes
    with pytest.raises(ValueError):  # 6 clips of a class cannot be drawn from 5 without replacement
        draw_shares(gen, labels, real, labels, per_class=6, draws=1, seed=0)


def test_unbalanced_sets_are_refused():
    labels = np.array([0, 0, 1, 1, 1])
    features = np.zeros((5, 4))
    with pytest.raises(ValueError, match="same number"):
        class_verdict(features, labels, features, labels, draws=1, seed=0)


def test_balanced_clips_of_a_second_set_avoid_the_first():
    from navid.generation.evaluation import balanced_real_clips

    labels = np.repeat(np.arange(10), 51)  # the demo's 51 training videos per class
    real = balanced_real_clips(labels, 12, seed=0)
    other = balanced_real_clips(labels, 12, seed=1, exclude=real)
    assert not set(real) & set(other)  # independent draws would share about a fifth of the clips
    assert np.array_equal(np.bincount(labels[other]), np.full(10, 12)) and len(set(other)) == 120
    small = balanced_real_clips(np.repeat(np.arange(2), 3), 4, seed=0, exclude=[0, 1])  # 1 clip left in class 0
    assert list(small[:4]) == [2, 2, 2, 2] and not {0, 1} & set(small)
