"""Paired comparisons between models (triqdef.eval.comparisons): the evidence behind REPORT.md's verdicts."""

import numpy as np
import pandas as pd
import pytest

from triqdef.errors import TriqdefError
from triqdef.eval.comparisons import paired_comparisons
from triqdef.eval.intervals import overall_verdict
from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE


def _records(rates: dict, n=400, seed=0):
    """Records of models on the same 4 patches x n images; model m hits an image with probability rates[m]."""
    rng = np.random.default_rng(seed)
    base = rng.random((4, n))
    rows = []
    for model, rate in rates.items():
        for patch in range(4):
            hits = base[patch] < rate  # the same images are hard for every model: a paired design
            rows.append({"model": model, "patch_set": "unseen_bits4", "patch": patch, "attack": "lavan", "view": "4-bit",
                         "group": "unseen", "hits_asr": hits, "hits_fooling": hits, "eligible": np.ones(n, bool),
                         "eligible_common": np.ones(n, bool)})
    return pd.DataFrame(rows)


def test_a_consistent_difference_is_decided_and_noise_is_not():
    rec = _records({"TriQDef": 0.20, "PBAT": 0.25, "DWQ": 0.20})
    comp = paired_comparisons(rec, [("TriQDef", "PBAT"), ("TriQDef", "DWQ"), ("PBAT", "TriQDef")])
    v = dict(zip(zip(comp["model"], comp["against"]), comp["verdict"]))
    assert v[("TriQDef", "PBAT")] == HOLDS and v[("PBAT", "TriQDef")] == FAILS
    assert v[("TriQDef", "DWQ")] == INCONCLUSIVE   # identical outcomes: the interval is [0, 0]
    row = comp.iloc[0]
    assert row["difference"] == pytest.approx(row["rate"] - row["rate_against"]) and row["low"] <= row["difference"] <= row["high"]
    assert row["n_patches"] == 4 and row["n_images"] == 400
    assert overall_verdict(comp["verdict"][:1]) == HOLDS and overall_verdict(comp["verdict"]) == FAILS
    assert overall_verdict([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE and overall_verdict([]) == INCONCLUSIVE


def test_models_must_carry_the_same_patches():
    rec = _records({"A": 0.2, "B": 0.3})
    rec = rec[~((rec["model"] == "B") & (rec["patch"] == 3))]
    with pytest.raises(TriqdefError, match="different patches"):
        paired_comparisons(rec, [("A", "B")])
    assert paired_comparisons(rec, [("A", "C")]).empty  # a model without records: no row
