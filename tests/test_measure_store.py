"""Measurement stores (issue 29, item 1): per-image continuous measurements in one Parquet file, the means and
intervals a claim reads recomputed from it; bad files refused in one line, nothing written."""

import numpy as np
import pandas as pd
import pytest

from triqdef.errors import TriqdefError
from triqdef.eval import measure_store as M


def _frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 50.0, n)
    return pd.concat([pd.DataFrame({"measure": "jacobian_fro_sq", "model": m, "view": "", "item": np.arange(n),
                                    "value": base * f + rng.normal(0, 5, n)}) for m, f in (("FP (tiny)", 1.0), ("STQ", 0.7))],
                     ignore_index=True)


def test_round_trip_keeps_values_and_info(tmp_path):
    path = M.write(_frame(), tmp_path / "m.parquet", info={"seed": 3})
    back = M.read(path)
    assert M.read_info(path) == {"seed": 3}
    pd.testing.assert_series_equal(M.values(back, "jacobian_fro_sq", "STQ"),
                                   M.values(_frame(), "jacobian_fro_sq", "STQ"))


def test_intervals_match_scipys_bootstrap():
    from scipy import stats

    f = _frame()
    a, b = M.values(f, "jacobian_fro_sq", "STQ"), M.values(f, "jacobian_fro_sq", "FP (tiny)")
    mean, low, high = M.mean_interval(a, 4000)
    ref = stats.bootstrap((a.to_numpy(),), np.mean, n_resamples=4000, method="percentile",
                          random_state=np.random.default_rng(1)).confidence_interval
    assert mean == pytest.approx(a.mean())
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=0.03)
    d, dlow, dhigh, n = M.paired_mean_difference(a, b, 4000)
    ref = stats.bootstrap(((a - b).to_numpy(),), np.mean, n_resamples=4000, method="percentile",
                          random_state=np.random.default_rng(1)).confidence_interval
    assert n == 200 and d == pytest.approx((a - b).mean()) and dhigh < 0
    assert (dlow, dhigh) == pytest.approx((ref.low, ref.high), rel=0.05)


@pytest.mark.parametrize("change,needle", [
    (lambda f: f.drop(columns="value"), "lacks column(s) value"),
    (lambda f: f.assign(item=f["item"].astype(float)), "column item is float64, expected integers"),
    (lambda f: f.assign(value="x"), "column value is .*, expected numbers"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "appears twice"),
])
def test_bad_stores_are_refused_in_one_line_and_nothing_is_written(tmp_path, change, needle):
    with pytest.raises(TriqdefError, match=needle.replace("(s)", r"\(s\)")):
        M.write(change(_frame()), tmp_path / "m.parquet")
    assert not list(tmp_path.iterdir())


def test_missing_unreadable_and_empty_selections_are_named(tmp_path):
    with pytest.raises(TriqdefError, match="not found"):
        M.read(tmp_path / "none.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(TriqdefError, match="unreadable"):
        M.read(tmp_path / "bad.parquet")
    with pytest.raises(TriqdefError, match="no jacobian_fro_sq of STQ-T1"):
        M.values(_frame(), "jacobian_fro_sq", "STQ-T1")
    f = _frame()
    with pytest.raises(TriqdefError, match="no item in common"):
        M.paired_mean_difference(M.values(f, "jacobian_fro_sq", "STQ"),
                                 M.values(f, "jacobian_fro_sq", "FP (tiny)").set_axis(np.arange(1000, 1200)))


def test_report_decides_stqs_jacobian_claim_from_the_store(tmp_path):
    from triqdef.reporting.report import build_report

    M.write(_frame(), tmp_path / "outcomes" / "stq_jacobian.parquet", info={"seed": 0})
    row = next(ln for ln in build_report(tmp_path).splitlines() if ln.startswith("| [") and "input–logit Jacobian" in ln)
    assert "**holds**" in row and "mean ‖J‖_F²: FP (tiny)" in row
