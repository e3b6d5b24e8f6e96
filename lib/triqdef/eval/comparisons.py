"""Paired comparisons between models on the same patches and images: the evidence behind each verdict of
REPORT.md on a patch claim (issue 12; docs/design.md#intervals-and-verdicts).

From the records of :func:`triqdef.eval.robustness.defense_records` (every model evaluated on the same patch
sets and test images, with per-image outcomes), :func:`paired_comparisons` gives, for each patch group,
attack and view, the difference ``rate(A) − rate(B)`` between two models with its 95 % paired-bootstrap
interval (:func:`triqdef.eval.intervals.paired_difference`) and the verdict on the claim that A's rate is
lower than B's. White-box patches are left out: each model has its own, so they are not paired.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from triqdef.errors import TriqdefError
from triqdef.eval.intervals import paired_difference, verdict
from triqdef.eval.transfer import N_BOOT, records_outcomes

#: Columns of a comparisons table.
COLUMNS = ["group", "attack", "view", "model", "against", "rate", "rate_against", "difference", "low", "high",
           "n_images", "n_patches", "claim", "verdict"]


def paired_comparisons(records: pd.DataFrame, pairs: Sequence[tuple[str, str]], group: str = "group",
                       value: str = "asr", groups: Sequence[str] | None = None, n_boot: int = N_BOOT,
                       seed: int = 0) -> pd.DataFrame:
    """One row per (group, attack, view, pair ``(A, B)``): A's and B's rates (%), ``A − B`` with its 95 %
    paired interval (points), the numbers of images and patches, and the verdict on "A is lower than B".

    ``records`` need ``model``, ``patch_set``, ``patch``, ``attack``, ``view``, the ``group`` column and the
    per-image outcomes; both models of a pair must carry the same patches of the group in that view."""
    rows = []
    for (g, attack, view), block in records.groupby([group, "attack", "view"], sort=False):
        if groups is not None and g not in groups:
            continue
        for a, b in pairs:
            ra = block[block["model"] == a].sort_values(["patch_set", "patch"])
            rb = block[block["model"] == b].sort_values(["patch_set", "patch"])
            if ra.empty or rb.empty:
                continue
            if ra[["patch_set", "patch"]].values.tolist() != rb[["patch_set", "patch"]].values.tolist():
                raise TriqdefError(f"models {a!r} and {b!r} carry different patches in {g} / {attack} / {view}: "
                                   "expected the same patch sets for a paired comparison")
            oa, ob = records_outcomes(ra, value), records_outcomes(rb, value)
            diff = paired_difference(oa, ob, n_boot, seed)
            rows.append({"group": g, "attack": attack, "view": view, "model": a, "against": b,
                         "rate": 100 * oa.rate(), "rate_against": 100 * ob.rate(), "difference": 100 * diff.value,
                         "low": 100 * diff.low, "high": 100 * diff.high, "n_images": diff.n_images,
                         "n_patches": diff.n_patches, "claim": f"{a} lower than {b}",
                         "verdict": verdict(diff, "lower")})
    return pd.DataFrame(rows, columns=COLUMNS)
