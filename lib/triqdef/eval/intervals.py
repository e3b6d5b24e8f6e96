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

Two ways to turn the replicates into an interval (``method``; issue 29, docs/design.md#interval-coverage):

- ``"percentile"``: the 2.5 and 97.5 percentiles of the replicates (the tables' method so far). With few patches it
  runs short: the bootstrap's spread of a mean over P resampled patches is (P − 1)/P of the true one, and its
  percentiles are normal quantiles. Measured by :mod:`triqdef.eval.coverage`: 57–69 % at 2 patches.
- ``"t"``: studentised over patches: the value ± t(P − 1) × the replicates' standard deviation × √(P / (P − 1)),
  P the number of patches (for a difference of two patch sets, the smaller). One patch (an accuracy) has no patch
  level: the percentile interval is used. :mod:`triqdef.eval.coverage` measures both.

:func:`familywise_verdict` decides a claim that must hold at several bit-widths or attacks with Holm's step-down
correction on the "does not hold" side (issue 29, item 5).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from dataclasses import dataclass

import numpy as np

from triqdef.errors import TriqdefError

LEVEL = 0.95
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive at this sample size"
METHODS = ("percentile", "t")
TOO_FEW = "too few patches to decide"
#: The fewest patches behind a rate from which the "t" interval reaches 93 % coverage for every kind of estimate in
#: the coverage simulation (docs/design.md#interval-coverage: at 4 patches a rate's runs 90–92 %).
MIN_PATCHES = 10


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
    method: str = "percentile"
    se: float = float("nan")   # the replicates' standard deviation (for "t": × √(P / (P − 1)))
    df: int = 0                # "t": the degrees of freedom of its quantile (patches − 1); 0 for a percentile interval

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


def resampling_counts(n_images: int, n_patches: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampling counts: images (N, B) and patches (P, B), each column one replicate's multinomial draw."""
    rng = np.random.default_rng([seed, 95])
    images = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=n_boot).T.astype(float)
    patches = rng.multinomial(n_patches, np.full(n_patches, 1 / n_patches), size=n_boot).T.astype(float)
    return images, patches


def replicates_of(o: Outcomes, images: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """The mean-of-rates replicates of ``o`` under resampling counts (:func:`resampling_counts`): one per column."""
    hit_counts = (o.hits & o.eligible).astype(float) @ images      # (P, B)
    eligible_counts = o.eligible.astype(float) @ images
    return _mean_of_rates(hit_counts, eligible_counts, patches)


def interval_from(value: float, reps: np.ndarray, o: Outcomes, n_boot: int, method: str = "percentile",
                  n_patches: int | None = None, level: float = LEVEL) -> Interval:
    """The ``level`` interval of ``method`` from the replicates; ``n_patches`` (default ``o``'s) sets the t
    quantile's degrees of freedom."""
    reps = reps[~np.isnan(reps)]
    alpha = (1 - level) / 2
    sd = float(reps.std(ddof=1)) if reps.size > 1 else float("nan")
    low, high = (np.quantile(reps, [alpha, 1 - alpha]) if reps.size else (np.nan, np.nan))
    ci = Interval(float(value), float(low), float(high), o.n_images, o.n_patches, int(o.eligible.sum()), n_boot,
                  "percentile", sd, 0)
    return studentised(ci, o.n_patches if n_patches is None else n_patches, level) if method == "t" else ci


def studentised(percentile: Interval, n_patches: int, level: float = LEVEL) -> Interval:
    """The ``"t"`` interval from a percentile one's replicate standard deviation (``se``): value ± t(P − 1) ×
    se × √(P / (P − 1)), P = ``n_patches``. With fewer than 2 patches (an accuracy) it stays the percentile
    interval: there is no patch level to studentise over."""
    value, sd = percentile.value, percentile.se
    if n_patches < 2 or not np.isfinite(sd) or np.isnan(value):
        return percentile
    from scipy import stats

    se = sd * np.sqrt(n_patches / (n_patches - 1))
    half = float(stats.t.ppf(1 - (1 - level) / 2, n_patches - 1)) * se
    return dataclasses.replace(percentile, low=value - half, high=value + half, method="t", se=float(se),
                               df=n_patches - 1)


def undecided(n_boot: int = 0) -> Interval:
    """The interval of a comparison that cannot be made (no common image): NaN everywhere, no sample, method
    ``"none"``; its verdict is *inconclusive* and it has no p-values."""
    nan = float("nan")
    return Interval(nan, nan, nan, 0, 0, 0, n_boot, "none", nan, 0)


def bootstrap_rate(o: Outcomes, n_boot: int = 2000, seed: int = 0, method: str = "percentile",
                   level: float = LEVEL) -> Interval:
    """The rate of ``o`` with its 95 % (``level``) interval from ``n_boot`` replicates resampling images and
    patches (``method``: ``"percentile"`` or ``"t"``, see the module docstring)."""
    _check_boot(n_boot)
    _check_method(method, level)
    images, patches = resampling_counts(o.n_images, o.n_patches, n_boot, seed)
    return interval_from(o.rate(), replicates_of(o, images, patches), o, n_boot, method, level=level)


def paired_difference(a: Outcomes, b: Outcomes, n_boot: int = 2000, seed: int = 0, method: str = "percentile",
                      level: float = LEVEL) -> Interval:
    """``rate(a) − rate(b)`` with its 95 % interval, the same images and patches drawn for both in every
    replicate. ``a`` and ``b`` must be the same patches on the same images (same shapes)."""
    return difference(a, b, n_boot, seed, method=method, level=level)


def difference(a: Outcomes, b: Outcomes, n_boot: int = 2000, seed: int = 0, scale: float = 1.0,
               same_patches: bool = True, method: str = "percentile", level: float = LEVEL) -> Interval:
    """``rate(a) − scale · rate(b)`` with its 95 % interval; the same test images are drawn for both in every
    replicate (``a`` and ``b`` must be outcomes on the same images, in the same order).

    ``same_patches``: ``a`` and ``b`` are the same patches (two models, or two views of one model): they are drawn
    together, as :func:`paired_difference` does. ``False``: two different patch sets on the same images (seen
    against unseen patches, or each model's own white-box patches): each set's patches are drawn on their own.
    ``scale`` tests a proportion, e.g. "the 2-bit ASR keeps 70 % of the white-box ASR": ``scale=0.7``, claim
    ``"higher"``."""
    _check_boot(n_boot)
    _check_method(method, level)
    if same_patches and a.hits.shape != b.hits.shape:
        raise TriqdefError(f"paired difference of outcomes of shapes {a.hits.shape} and {b.hits.shape}: expected the "
                           "same patches on the same images")
    if a.n_images != b.n_images:
        raise TriqdefError(f"difference of outcomes on {a.n_images} and {b.n_images} images: expected the same images")
    images, patches_a = resampling_counts(a.n_images, a.n_patches, n_boot, seed)
    patches_b = patches_a if same_patches else resampling_counts(b.n_images, b.n_patches, n_boot, seed + 1)[1]
    reps = replicates_of(a, images, patches_a) - scale * replicates_of(b, images, patches_b)
    n_patches = a.n_patches if same_patches else a.n_patches + b.n_patches
    eligible = int((a.eligible | b.eligible).sum()) if same_patches else int(a.eligible.sum() + b.eligible.sum())
    ci = interval_from(a.rate() - scale * b.rate(), reps, a, n_boot, method,
                       n_patches=a.n_patches if same_patches else min(a.n_patches, b.n_patches), level=level)
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


def checked_verdict(interval: Interval, claim: str, margin: float = 0.0, min_patches: int = MIN_PATCHES) -> str:
    """:func:`verdict`, except that an interval over fewer than ``min_patches`` patches (more than one: an accuracy
    has no patch level) decides nothing: no interval method reaches its coverage there
    (docs/design.md#interval-coverage), so it reads *too few patches to decide*."""
    if 1 < interval.n_patches < min_patches:
        return TOO_FEW
    return verdict(interval, claim, margin)


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


def _check_method(method: str, level: float = LEVEL) -> None:
    if method not in METHODS:
        raise TriqdefError(f"interval method {method!r}: expected one of {', '.join(METHODS)}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise TriqdefError(f"interval level {level!r}: expected a coverage level in (0, 1), e.g. 0.95")


def one_sided_p(interval: Interval, claim: str, margin: float = 0.0) -> tuple[float, float]:
    """``(p_holds, p_fails)`` of a ``"t"`` interval: the one-sided p-values against "the claim does not hold"
    (small: evidence that it holds) and against "the claim holds" (small: evidence that it does not), from
    (value − margin) / se on ``df`` degrees of freedom. At 2.5 % each reads as the 95 % interval does."""
    if claim not in ("lower", "higher"):
        raise TriqdefError(f"claim {claim!r}: expected 'lower' or 'higher'")
    if interval.method != "t" or not interval.df or not np.isfinite(interval.se) or interval.se <= 0:
        return float("nan"), float("nan")
    from scipy import stats

    t = (interval.value - margin) / interval.se
    above, below = float(stats.t.sf(t, interval.df)), float(stats.t.cdf(t, interval.df))
    return (above, below) if claim == "higher" else (below, above)


def holm(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm's step-down procedure: which of the hypotheses are rejected at familywise level ``alpha`` (a NaN
    p-value is never rejected and counts in the family)."""
    if not 0 < alpha < 1:
        raise TriqdefError(f"familywise level alpha={alpha!r}: expected a number in (0, 1)")
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="stable")
    rejected = [False] * len(p)
    for rank, i in enumerate(order):
        if np.isnan(p[i]) or p[i] > alpha / (len(p) - rank):
            break
        rejected[i] = True
    return rejected


def holm_verdict(verdicts: Sequence[str], p_fails: Sequence[float], alpha: float = (1 - LEVEL) / 2) -> str:
    """One verdict for comparisons that must all hold, from their stored verdicts and one-sided ``p_fails``
    (:func:`one_sided_p`): *holds* when each holds (an intersection-union test, no correction needed), *does not
    hold* when Holm's procedure rejects "it holds" for at least one at familywise level ``alpha``, otherwise
    *inconclusive at this sample size* (also for no comparison at all)."""
    verdicts = list(verdicts)
    if not verdicts:
        return INCONCLUSIVE
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if any(holm(list(p_fails), alpha)) else INCONCLUSIVE


def familywise_verdict(intervals: Sequence[Interval], claim: str, margin: float = 0.0,
                       alpha: float = (1 - LEVEL) / 2) -> str:
    """A claim that must hold in every one of several comparisons (bit-widths, attacks), from ``"t"`` intervals:

    - *holds* when each comparison holds at one-sided level ``alpha`` (its 95 % interval on the claimed side): an
      intersection-union test, which needs no correction;
    - *does not hold* when Holm's step-down procedure at familywise level ``alpha`` rejects "the claim holds" for at
      least one comparison (uncorrected, one of 8 intervals lands on the wrong side by chance far more often);
    - otherwise *inconclusive at this sample size*."""
    intervals = list(intervals)
    if not intervals:
        return INCONCLUSIVE
    if any(ci.method != "t" for ci in intervals):
        raise TriqdefError("familywise_verdict needs 't' intervals (method='t'): their p-values feed Holm's procedure")
    ps = [one_sided_p(ci, claim, margin) for ci in intervals]
    return holm_verdict([HOLDS if p_hold <= alpha else INCONCLUSIVE for p_hold, _ in ps], [p for _, p in ps], alpha)


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
