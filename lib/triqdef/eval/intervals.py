"""95 % intervals on every rate and on every difference between two rates: a bootstrap over test images and
patches together (issue 12; docs/design.md#intervals-and-verdicts).

A patch set's rate on one view (a model at a bit-width) is the mean over its P patches of each patch's rate
on its eligible images (docs/design.md#success-rate). Its outcomes are two (P, N) boolean matrices over the
N test images: ``hits`` (the patched image is classified as the target, or is no longer classified correctly
for the fooling rate) and ``eligible`` (the image counts for that patch).

One bootstrap replicate resamples the N images and the P patches with replacement, each once for the whole
replicate (a two-way bootstrap: both the images and the patches are samples), and recomputes the mean of
the per-patch rates; the interval is the 2.5 and 97.5 percentiles over the replicates (percentile method).
A patch left with no eligible image in a replicate is left out of that replicate's mean.

A *paired* difference ``rate(A) − rate(B)`` draws the same images and the same patches for A and B in every
replicate (same test images, same patches: two models, or a model with and without a component), so what
the two share cancels. :func:`verdict` reads a claim off that interval: "holds" when it lies on the
claimed side of zero, "does not hold" when it lies on the other side, otherwise "inconclusive at this
sample size".

Accuracies are rates with one "patch" whose every image is eligible (``hits``: correct predictions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from triqdef.errors import TriqdefError

LEVEL = 0.95
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive at this sample size"


@dataclass(frozen=True)
class Outcomes:
    """Per-image outcomes of P patches on N images: ``hits`` and ``eligible``, both (P, N) booleans."""

    hits: np.ndarray
    eligible: np.ndarray

    def __post_init__(self) -> None:
        hits, eligible = np.asarray(self.hits, dtype=bool), np.asarray(self.eligible, dtype=bool)
        if hits.ndim != 2 or hits.shape != eligible.shape:
            raise TriqdefError(f"outcomes of shapes {hits.shape} and {eligible.shape}: expected two (patches, images) "
                               "matrices of the same shape")
        object.__setattr__(self, "hits", hits)
        object.__setattr__(self, "eligible", eligible)

    @property
    def n_patches(self) -> int:
        return self.hits.shape[0]

    @property
    def n_images(self) -> int:
        return self.hits.shape[1]

    @classmethod
    def accuracy(cls, correct) -> Outcomes:
        """Outcomes of an accuracy: one row, every image eligible."""
        correct = np.asarray(correct, dtype=bool).reshape(1, -1)
        return cls(correct, np.ones_like(correct))

    def rate(self) -> float:
        """The point estimate: the mean over patches of each patch's rate (NaN when no patch has an image)."""
        return _mean_of_rates((self.hits & self.eligible).sum(1, dtype=float)[:, None],
                              self.eligible.sum(1, dtype=float)[:, None], np.ones((self.n_patches, 1)))[0]


@dataclass(frozen=True)
class Interval:
    """A rate (or a difference of rates), in [0, 1] units, with its 95 % bootstrap interval and its sample:
    the number of test images, of patches, and of eligible (image, patch) pairs behind it."""

    value: float
    low: float
    high: float
    n_images: int
    n_patches: int
    n_eligible: int
    n_boot: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def percent(self, digits: int = 1) -> str:
        """``rate ± half-width`` in percent, as the tables show it."""
        if np.isnan(self.value):
            return "–"
        return f"{100 * self.value:.{digits}f} ± {100 * self.half_width:.{digits}f}"

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in (("value", self.value), ("low", self.low), ("high", self.high),
                                                ("n_images", self.n_images), ("n_patches", self.n_patches),
                                                ("n_eligible", self.n_eligible), ("n_boot", self.n_boot))}


def _mean_of_rates(hit_counts: np.ndarray, eligible_counts: np.ndarray, patch_weights: np.ndarray) -> np.ndarray:
    """Per replicate: the weighted mean over patches of hits / eligible (patches without images left out).
    Arrays (P, B); returns (B,)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = hit_counts / eligible_counts
    present = eligible_counts > 0
    weights = np.where(present, patch_weights, 0.0)
    total = weights.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (np.where(present, rates, 0.0) * weights).sum(0) / total, np.nan)


def _draws(n_images: int, n_patches: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampling counts: images (N, B) and patches (P, B), each column one replicate's multinomial draw."""
    rng = np.random.default_rng([seed, 95])
    images = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=n_boot).T.astype(float)
    patches = rng.multinomial(n_patches, np.full(n_patches, 1 / n_patches), size=n_boot).T.astype(float)
    return images, patches


def _replicates(o: Outcomes, images: np.ndarray, patches: np.ndarray) -> np.ndarray:
    hit_counts = (o.hits & o.eligible).astype(float) @ images      # (P, B)
    eligible_counts = o.eligible.astype(float) @ images
    return _mean_of_rates(hit_counts, eligible_counts, patches)


def _interval(value: float, reps: np.ndarray, o: Outcomes, n_boot: int) -> Interval:
    reps = reps[~np.isnan(reps)]
    alpha = (1 - LEVEL) / 2
    low, high = (np.quantile(reps, [alpha, 1 - alpha]) if reps.size else (np.nan, np.nan))
    return Interval(float(value), float(low), float(high), o.n_images, o.n_patches, int(o.eligible.sum()), n_boot)


def bootstrap_rate(o: Outcomes, n_boot: int = 2000, seed: int = 0) -> Interval:
    """The rate of ``o`` with its 95 % interval from ``n_boot`` replicates resampling images and patches."""
    _check_boot(n_boot)
    images, patches = _draws(o.n_images, o.n_patches, n_boot, seed)
    return _interval(o.rate(), _replicates(o, images, patches), o, n_boot)


def paired_difference(a: Outcomes, b: Outcomes, n_boot: int = 2000, seed: int = 0) -> Interval:
    """``rate(a) − rate(b)`` with its 95 % interval, the same images and patches drawn for both in every
    replicate. ``a`` and ``b`` must be the same patches on the same images (same shapes)."""
    _check_boot(n_boot)
    if a.hits.shape != b.hits.shape:
        raise TriqdefError(f"paired difference of outcomes of shapes {a.hits.shape} and {b.hits.shape}: expected the "
                           "same patches on the same images")
    images, patches = _draws(a.n_images, a.n_patches, n_boot, seed)
    reps = _replicates(a, images, patches) - _replicates(b, images, patches)
    both = Outcomes(a.hits, a.eligible | b.eligible)
    return _interval(a.rate() - b.rate(), reps, both, n_boot)


def verdict(difference: Interval, claim: str) -> str:
    """Read a claim off a difference's interval: ``claim`` is ``"lower"`` (the first rate is claimed below the
    second) or ``"higher"``."""
    if claim not in ("lower", "higher"):
        raise TriqdefError(f"claim {claim!r}: expected 'lower' or 'higher'")
    if np.isnan(difference.low):
        return INCONCLUSIVE
    below, above = difference.high < 0, difference.low > 0
    if (claim == "lower" and below) or (claim == "higher" and above):
        return HOLDS
    if (claim == "lower" and above) or (claim == "higher" and below):
        return FAILS
    return INCONCLUSIVE


def _check_boot(n_boot: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 100:
        raise TriqdefError(f"bootstrap replicates n_boot={n_boot!r}: expected an integer >= 100")


def overall_verdict(verdicts: Sequence[str]) -> str:
    """Several comparisons that must all hold (e.g. at every bit-width): ``holds`` when every one holds, ``does not
    hold`` when any does not, otherwise ``inconclusive at this sample size``."""
    verdicts = list(verdicts)
    if not verdicts:
        return INCONCLUSIVE
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v == FAILS for v in verdicts):
        return FAILS
    return INCONCLUSIVE
