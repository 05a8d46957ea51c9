"""Does a generator follow its labels? The per-class verdict and how sure it is.

The verdict: in the per-class FVD matrix (generated class i against real class j), more than
half of the generated classes are nearest their own real class. On a few clips per class one
class moves the share by 1/C, so the verdict comes with its resampling confidence: the share of
bootstrap draws (every class's generated and real clips resampled with replacement) whose
matrix also clears the bar. ``benchmarks/per_class_robustness.py`` uses the same draws, without
replacement from a larger set, to choose how many clips per class the demo needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from navid.generation.evaluation import own_class_share, per_class_fvd

BAR = 0.5  # the verdict passes when the own-class share is above this


@dataclass(frozen=True)
class ClassVerdict:
    share: float  # own-class-nearest share on all the clips
    passed: bool  # share > BAR
    confidence: float  # share of bootstrap draws that also clear BAR
    draws: int
    clips_per_class: int

    def describe(self) -> str:
        """One line for reports, e.g. '70% (bar: more than half): met; 93% of 200 bootstrap draws clear the bar'."""
        return (f"{self.share:.0%} (bar: more than half): {'met' if self.passed else 'missed'}; "
                f"{self.confidence:.0%} of {self.draws} bootstrap draws ({self.clips_per_class} clips per class "
                f"and side, resampled) clear the bar")


def draw_shares(gen: np.ndarray, gen_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                per_class: int, draws: int, seed: int, replace: bool = False) -> np.ndarray:
    """Own-class-nearest shares (draws,) of per-class FVD matrices, each on ``per_class`` random
    clips of every class and side (features (N, D) with labels (N,)); ``replace`` draws a bootstrap."""
    rng = np.random.default_rng(seed)
    classes = int(real_labels.max()) + 1
    members = [(np.flatnonzero(gen_labels == c), np.flatnonzero(real_labels == c)) for c in range(classes)]

    def pick(side: int) -> np.ndarray:
        return np.concatenate([rng.choice(m[side], per_class, replace=replace) for m in members])

    shares = np.empty(draws)
    for i in range(draws):
        g, r = pick(0), pick(1)
        shares[i] = own_class_share(per_class_fvd(gen[g], gen_labels[g], real[r], real_labels[r], classes))
    return shares


def class_verdict(gen: np.ndarray, gen_labels: np.ndarray, real: np.ndarray, real_labels: np.ndarray,
                  draws: int, seed: int) -> ClassVerdict:
    """The verdict on all clips and its bootstrap confidence (the same number of clips of every class on both sides)."""
    gen_counts, real_counts = np.bincount(gen_labels), np.bincount(real_labels)
    balanced = len(gen_counts) == len(real_counts) and len({*gen_counts.tolist(), *real_counts.tolist()}) == 1
    if not balanced or gen_counts[0] < 2:
        raise ValueError(f"the per-class verdict needs the same number (>= 2) of clips of every class on both sides, "
                         f"got generated {gen_counts.tolist()} and real {real_counts.tolist()}")
    classes, per_class = len(real_counts), int(real_counts[0])
    share = own_class_share(per_class_fvd(gen, gen_labels, real, real_labels, classes))
    shares = draw_shares(gen, gen_labels, real, real_labels, per_class, draws, seed, replace=True)
    return ClassVerdict(share=share, passed=share > BAR, confidence=float(np.mean(shares > BAR)), draws=draws,
                        clips_per_class=per_class)
