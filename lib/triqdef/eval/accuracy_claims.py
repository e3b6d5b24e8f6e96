"""A claim on the difference of two accuracies measured on the same test images (issue 29: comparisons on common
images; docs/design.md#clean-outcomes).

An accuracy has no patch level, so its interval is the percentile bootstrap over images of
:func:`triqdef.eval.intervals.paired_difference` (the same images drawn for both sides in every replicate), and
the one-sided p-values that Holm's procedure needs (:func:`triqdef.eval.defense_claims.familywise`) come from the
normal approximation on the replicates' standard error: the images, hundreds to thousands, are the only sample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from triqdef.errors import TriqdefError


def one_sided_normal_p(value: float, se: float, claim: str, margin: float = 0.0) -> tuple[float, float]:
    """``(p_holds, p_fails)`` of ``value`` claimed ``"higher"`` or ``"lower"`` than ``margin``, from its standard
    error on the normal approximation; NaN where the standard error is not positive."""
    from scipy import stats

    if claim not in ("lower", "higher"):
        raise TriqdefError(f"claim {claim!r}: expected 'lower' or 'higher'")
    if not (np.isfinite(se) and se > 0):
        return float("nan"), float("nan")
    z = (value - margin) / se
    above, below = float(stats.norm.sf(z)), float(stats.norm.cdf(z))
    return (above, below) if claim == "higher" else (below, above)


def paired_accuracy_claim(a: pd.Series, b: pd.Series, statement: str, claim: str, margin: float = 0.0,
                          n_boot: int = 2000, seed: int = 0, **extra) -> dict:
    """``accuracy(a) − accuracy(b)`` on the images both index (two boolean Series indexed by image id), with its
    paired 95 % bootstrap interval, as a claim record (:func:`triqdef.eval.intervals.claim_evidence`; ``margin``
    in [0, 1] units) with its one-sided p-values and the number of common images (``n_common``); ``extra`` is
    added to the record. No common image ends with one TriqdefError line."""
    from triqdef.eval.intervals import Outcomes, claim_evidence, paired_difference

    images = a.index.intersection(b.index)
    if images.empty:
        raise TriqdefError(f"{statement}: the two sides share no test image, expected accuracies on common images")
    d = paired_difference(Outcomes.accuracy(a.loc[images].to_numpy()), Outcomes.accuracy(b.loc[images].to_numpy()),
                          n_boot, seed)
    p_holds, p_fails = one_sided_normal_p(d.value, d.se, claim, margin)
    return dict(claim_evidence(statement, d, claim, margin), p_holds=p_holds, p_fails=p_fails,
                n_common=int(len(images)), **extra)
