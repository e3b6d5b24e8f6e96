"""Stage ``int8`` (issue 32): its committed table covers every model and patch set, REPORT's familywise verdict over
its one-sided claims, its figure, and notebook 04's reader of its outputs."""

import matplotlib

matplotlib.use("Agg")

import math
from pathlib import Path

import pandas as pd
import pytest

from triqdef.errors import TriqdefError
from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE, MIN_PATCHES
from triqdef.reporting import schemas as S
from triqdef.reporting.int8_figure import int8_differences
from triqdef.eval.defense_claims import familywise as _holm_verdict   # the report's Holm rule for a row
from triqdef.stages import appendix, int8

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "tables" / "int8_runtime.csv"


def test_committed_table_has_every_model_and_set_with_enough_patches():
    """The `cpu` run's table: the five defenses and Table 9's PTQ model, each set (seen, unseen, white-box) with at
    least the report's patch floor, compared on a non-empty set of common images, every interval around its value."""
    t = pd.read_csv(COMMITTED)
    assert list(t[S.MODEL]) == [*S.DEFENSE_LABELS.values(), int8.PTQ_LABEL]
    for name in int8.SETS:
        assert (t[f"{name} patches"] >= MIN_PATCHES).all(), name
        assert (t[f"{name} common images"] > 0).all(), name
        assert (t[f"{name} int8 − fake low"] <= t[f"{name} int8 − fake"]).all()
        assert (t[f"{name} int8 − fake"] <= t[f"{name} int8 − fake high"]).all()
    assert (t["size int8 (KB)"] < t["size fp32 (KB)"]).all()


def _claim(verdict, p_fails):
    return {"verdict": verdict, "p_fails": p_fails}


def test_holm_verdict_decides_the_row_familywise():
    holds = [_claim(HOLDS, 0.9)] * 36
    assert _holm_verdict(holds) == HOLDS
    # one comparison clearly outside the band: Holm rejects it even among 36 (1e-6 < 0.025 / 36)
    assert _holm_verdict(holds[:-1] + [_claim(FAILS, 1e-6)]) == FAILS
    # uncorrected this one would "not hold" (0.01 < 0.025); Holm over 36 needs p <= 0.025 / 36
    assert _holm_verdict(holds[:-1] + [_claim(FAILS, 0.01)]) == INCONCLUSIVE
    # a claim stored without its p-value never decides "does not hold"
    assert _holm_verdict(holds[:-1] + [{"verdict": INCONCLUSIVE}]) == INCONCLUSIVE


def test_figure_draws_every_model_and_set():
    t = pd.read_csv(COMMITTED)
    fig = int8_differences(t, int8.SETS, int8.EQUIVALENCE_POINTS)
    left = fig.axes[0]
    assert [tick.get_text() for tick in left.get_yticklabels()] == list(t[S.MODEL])
    assert len(left.containers) == len(int8.SETS)   # one errorbar series per set
    assert math.isclose(left.patches[0].get_x(), -int8.EQUIVALENCE_POINTS)


def test_notebook_reader_names_the_missing_output(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIQDEF_OUTPUT", str(tmp_path))
    with pytest.raises(TriqdefError, match=r"int8_runtime\.csv is missing: expected stage int8's output"):
        appendix.int8_runtime(None)
