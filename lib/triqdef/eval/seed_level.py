"""Intervals with a training-seed level: seeds, then patches, then images (issue 29, item 6; docs/design.md#training-seeds).

A rate measured on one trained model varies with the test images and the patches drawn (what the two-way
bootstrap of :mod:`triqdef.eval.intervals` resamples) *and* with the training run that made the model. With S
training seeds of one method, each evaluated on the same images and patches, the method's rate is the mean of
the S runs' rates, and one replicate of its hierarchical bootstrap

1. draws S runs with replacement (the seed level),
2. takes each drawn run's own two-way replicate (its patches, then its images, resampled; one draw per run and
   replicate, so a run drawn twice contributes the same replicate twice),
3. averages them.

The interval is the 2.5 and 97.5 percentiles of those replicates. With three seeds the seed level has only ten
distinct draws, so the interval is coarse; it is what the data allow, and it says so (``method`` ``"seeds"``).

:func:`spread` gives the seed-to-seed spread of the runs' point values (mean, standard deviation, range) beside
the runs' own sampling error (the mean of their bootstrap standard errors), and :func:`dominant` says which of
the two is larger: whether a verdict drawn from one run is at the mercy of the training seed or of the sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from triqdef.errors import TriqdefError
from triqdef.eval.intervals import LEVEL, Interval, Outcomes, resampling_counts, replicates_of

SEEDS = "seeds"
SEED_SPREAD, SAMPLING = "seed spread", "sampling"


def rate_replicates(o: Outcomes, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """A run's rate replicates (the two-way bootstrap of :func:`triqdef.eval.intervals.bootstrap_rate`)."""
    images, patches = resampling_counts(o.n_images, o.n_patches, n_boot, seed)
    return replicates_of(o, images, patches)


def seed_level_interval(values: Sequence[float], replicates: Sequence[np.ndarray], n_boot: int = 2000, seed: int = 0,
                        level: float = LEVEL, n_images: int = 0, n_patches: int = 0) -> Interval:
    """The mean of the runs' ``values`` with its hierarchical-bootstrap interval (module docstring). ``replicates``:
    each run's (``n_boot``,) bootstrap replicates, drawn independently per run. ``n_images`` / ``n_patches``:
    the sample behind each run, for the record."""
    return _percentile(float(np.nanmean(np.asarray(values, dtype=float))), _level_replicates(values, replicates, n_boot, seed),
                       n_boot, level, n_images, n_patches)


def seed_level_paired_difference(values: np.ndarray, replicates: np.ndarray, n_boot: int = 2000, seed: int = 0,
                                 level: float = LEVEL) -> Interval:
    """mean(A) − mean(B) of two methods' runs compared pair by pair on common images and paired patches.

    ``values[i, j]``: run i of A minus run j of B, each pair's paired difference (the same patches or targets, on
    the images eligible for both, :func:`triqdef.eval.outcome_store.aligned`); ``replicates[i, j]``: its (``n_boot``,)
    two-way replicates, the same images and patches drawn for both runs. One replicate of the seed level draws the
    runs of A and, independently, those of B with replacement and averages the drawn pairs' replicates of that
    index, so the interval holds the seed spread of both methods and the sampling of patches and images, without
    the patch-to-patch spread both runs share. NaN pairs (no common image) are left out."""
    values = np.asarray(values, dtype=float)
    reps = np.asarray(replicates, dtype=float)
    if values.ndim != 2 or reps.shape != (*values.shape, n_boot):
        raise TriqdefError(f"paired seed-level difference of values {values.shape} and replicates {reps.shape}: "
                           f"expected (runs of A, runs of B) and (runs of A, runs of B, {n_boot})")
    n_a, n_b = values.shape
    rng = np.random.default_rng([seed, 98])
    drawn_a, drawn_b = rng.integers(0, n_a, size=(n_boot, n_a)), rng.integers(0, n_b, size=(n_boot, n_b))
    picked = reps[drawn_a[:, :, None], drawn_b[:, None, :], np.arange(n_boot)[:, None, None]]   # (B, n_a, n_b)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # (a replicate whose drawn pairs are all NaN)
        diff = np.nanmean(picked.reshape(n_boot, -1), axis=1)
        value = float(np.nanmean(values))
    return _percentile(value, diff, n_boot, level)


def _level_replicates(values: Sequence[float], replicates: Sequence[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot,) replicates of the mean over runs: per replicate, the runs drawn with replacement (the seed level),
    each contributing its own replicate of that index."""
    n = len(values)
    reps = np.stack([np.asarray(r, dtype=float) for r in replicates]) if len(replicates) else np.empty((0, n_boot))
    if n == 0 or reps.shape != (n, n_boot):
        raise TriqdefError(f"seed-level interval of {n} runs with replicates of shape {reps.shape}: expected one "
                           f"({n_boot},) array per run")
    drawn = np.random.default_rng([seed, 96]).integers(0, n, size=(n_boot, n))
    with np.errstate(invalid="ignore"):
        return np.nanmean(reps[drawn, np.arange(n_boot)[:, None]], axis=1)


def _percentile(value: float, reps: np.ndarray, n_boot: int, level: float, n_images: int = 0,
                n_patches: int = 0) -> Interval:
    reps = reps[~np.isnan(reps)]
    alpha = (1 - level) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha]) if reps.size else (np.nan, np.nan)
    sd = float(reps.std(ddof=1)) if reps.size > 1 else float("nan")
    return Interval(value, float(low), float(high), n_images, n_patches, 0, n_boot, SEEDS, sd, 0)


def spread(values: Sequence[float], within_se: Sequence[float]) -> dict:
    """The runs' point values summarised: mean, seed-to-seed standard deviation (ddof 1; NaN for one run),
    min, max, and the runs' mean sampling standard error (``within_se``: each run's bootstrap sd)."""
    v = np.asarray(values, dtype=float)
    return {"mean": float(np.nanmean(v)), "sd_seeds": float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else
            float("nan"), "min": float(np.nanmin(v)), "max": float(np.nanmax(v)),
            "se_sampling": float(np.nanmean(np.asarray(within_se, dtype=float)))}


def dominant(sd_seeds: float, se_sampling: float) -> str:
    """Which varies a single run's value more: ``"seed spread"`` when the seed-to-seed sd exceeds the runs' mean
    sampling se, else ``"sampling"`` ("–" when either is unknown)."""
    if not (np.isfinite(sd_seeds) and np.isfinite(se_sampling)):
        return "–"
    return SEED_SPREAD if sd_seeds > se_sampling else SAMPLING
