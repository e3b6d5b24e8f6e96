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
import dataclasses
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
    return difference(a, b, n_boot, seed)


def difference(a: Outcomes, b: Outcomes, n_boot: int = 2000, seed: int = 0, scale: float = 1.0,
               same_patches: bool = True) -> Interval:
    """``rate(a) − scale · rate(b)`` with its 95 % interval; the same test images are drawn for both in every
    replicate (``a`` and ``b`` must be outcomes on the same images, in the same order).

    ``same_patches``: ``a`` and ``b`` are the same patches (two models, or two views of one model): they are drawn
    together, as :func:`paired_difference` does. ``False``: two different patch sets on the same images (seen
    against unseen patches, or each model's own white-box patches): each set's patches are drawn on their own.
    ``scale`` tests a proportion, e.g. "the 2-bit ASR keeps 70 % of the white-box ASR": ``scale=0.7``, claim
    ``"higher"``."""
    _check_boot(n_boot)
    if same_patches and a.hits.shape != b.hits.shape:
        raise TriqdefError(f"paired difference of outcomes of shapes {a.hits.shape} and {b.hits.shape}: expected the "
                           "same patches on the same images")
    if a.n_images != b.n_images:
        raise TriqdefError(f"difference of outcomes on {a.n_images} and {b.n_images} images: expected the same images")
    images, patches_a = _draws(a.n_images, a.n_patches, n_boot, seed)
    patches_b = patches_a if same_patches else _draws(b.n_images, b.n_patches, n_boot, seed + 1)[1]
    reps = _replicates(a, images, patches_a) - scale * _replicates(b, images, patches_b)
    n_patches = a.n_patches if same_patches else a.n_patches + b.n_patches
    eligible = int((a.eligible | b.eligible).sum()) if same_patches else int(a.eligible.sum() + b.eligible.sum())
    ci = _interval(a.rate() - scale * b.rate(), reps, a, n_boot)
    return dataclasses.replace(ci, n_patches=n_patches, n_eligible=eligible)


def verdict(interval: Interval, claim: str, margin: float = 0.0) -> str:
    """Read a claim off an interval: ``claim`` is ``"lower"`` (the value, e.g. the first rate minus the second,
    is claimed below ``margin``) or ``"higher"`` (above it). ``margin`` (same units as the interval, [0, 1]) turns
    a difference into "more than 20 points higher" (``margin=0.2``) and a rate into "over 50 %" (``margin=0.5``)."""
    if claim not in ("lower", "higher"):
        raise TriqdefError(f"claim {claim!r}: expected 'lower' or 'higher'")
    if np.isnan(interval.low):
        return INCONCLUSIVE
    below, above = interval.high < margin, interval.low > margin
    if (claim == "lower" and below) or (claim == "higher" and above):
        return HOLDS
    if (claim == "lower" and above) or (claim == "higher" and below):
        return FAILS
    return INCONCLUSIVE


def claim_evidence(statement: str, interval: Interval, claim: str, margin: float = 0.0) -> dict:
    """One claim's evidence as a table's metadata keeps it (key ``claims``, read by REPORT.md): what the interval
    measures (``statement``), its value and 95 % interval in points (or %), the sample behind it, the claimed
    side of ``margin`` and the :func:`verdict`."""
    return {"statement": statement, "value": 100 * interval.value, "low": 100 * interval.low, "high": 100 * interval.high,
            "claim": f"{claim} than {100 * margin:g}", "n_images": interval.n_images, "n_patches": interval.n_patches,
            "n_boot": interval.n_boot, "verdict": verdict(interval, claim, margin)}


def claim_text(evidence: dict) -> str:
    """``statement: value [low, high] (claimed higher than m; N images, P patches): verdict``, as captions show it."""
    e = evidence
    return (f"{e['statement']}: {e['value']:+.1f} [{e['low']:+.1f}, {e['high']:+.1f}] (claimed {e['claim']}; "
            f"{e['n_images']} images, {e['n_patches']} patches): {e['verdict']}")


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
