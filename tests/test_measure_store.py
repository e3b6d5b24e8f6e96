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


def test_every_item_claim_holds_fails_with_bonferroni_or_stays_open():
    fixed = lambda low, high: (lambda level: (low, high))
    assert M.every_item_claim({"a": fixed(0.1, 0.2), "b": fixed(0.15, 0.25)}, "lower", 0.3) == "holds"
    assert M.every_item_claim({"a": fixed(0.1, 0.2), "b": fixed(0.35, 0.4)}, "lower", 0.3) == "does not hold"
    assert M.every_item_claim({"a": fixed(0.1, 0.2), "b": fixed(0.25, 0.35)}, "lower", 0.3) == \
        "inconclusive at this sample size"
    # a failure must show on the Bonferroni interval (wider), not only on the 95 % one
    widening = lambda level: (0.31, 0.4) if level <= 0.95 else (0.29, 0.42)
    assert M.every_item_claim({"a": fixed(0.1, 0.2), "b": widening}, "lower", 0.3) == "inconclusive at this sample size"
    assert M.every_item_claim({}, "lower", 0.3) == "inconclusive at this sample size"
    with pytest.raises(TriqdefError, match="coverage level"):
        M.mean_interval(pd.Series([1.0, 2.0]), level=1.5)


def _alignment_items(cos: float, hog: float, iou_gap: float, n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Measurement rows like stage ``motivation``'s: Table 3's metrics per pair, Figure 2's Edge IoU and HOG per tap
    and pair (clean inputs), each with its chance baseline."""
    from triqdef.eval.alignment import FEATURES, GRADIENTS, chance_measure

    rng = np.random.default_rng(seed)
    rows = []
    def add(measure, model, view, mean, sd=0.05):
        rows.append(pd.DataFrame({"measure": measure, "model": model, "view": view, "item": np.arange(n),
                                  "value": rng.normal(mean, sd, n)}))
    for pair in ("fp-5", "fp-4", "fp-2"):
        for metric, mean, chance in (("cosine (raw gradient)", cos, 0.0), ("edge_iou", 0.2, 0.1), ("hog_cosine", hog, 0.66)):
            add(metric, GRADIENTS, pair, mean)
            add(chance_measure(metric), GRADIENTS, pair, chance)
    for tap in ("L0.conv1", "L1.conv1"):
        for pair in ("32-5", "5-4"):
            view = f"clean|{tap}|{pair}"
            add("edge_iou", FEATURES, view, 0.2 + iou_gap)
            add(chance_measure("edge_iou"), FEATURES, view, 0.1)
            add("hog_cosine", FEATURES, view, 0.8)
            add(chance_measure("hog_cosine"), FEATURES, view, 0.66)
    return pd.concat(rows, ignore_index=True)


@pytest.mark.parametrize("cos,hog,verdict", [(0.1, 0.8, "holds"), (0.1, 0.7, "partly"), (0.4, 0.7, "does not hold")])
def test_claim_2_is_decided_on_intervals_from_the_store(cos, hog, verdict):
    from triqdef.stages import motivation

    ours, got = motivation.table3_claim(_alignment_items(cos, hog, 0.1))
    assert got == verdict and "95% CI: 300 images" in ours


@pytest.mark.parametrize("gap,verdict", [(0.1, "holds"), (-0.05, "partly"), (0.0, "inconclusive at this sample size")])
def test_claim_3_compares_each_cell_with_its_own_chance(gap, verdict):
    """Edge IoU 0.2 + gap against twice a chance baseline of 0.1: above, below, or at it."""
    from triqdef.stages import motivation

    assert motivation.figure2_claim(_alignment_items(0.1, 0.8, gap))[1] == verdict


def test_report_reads_claims_2_and_3_from_their_stores_alone(tmp_path):
    from triqdef.reporting.report import build_report

    items = _alignment_items(0.1, 0.7, 0.1)
    M.write(items[items["model"] == "input gradients"], tmp_path / "outcomes" / "table3.parquet", info={"seed": 0})
    M.write(items[items["model"] != "input gradients"], tmp_path / "outcomes" / "figure2.parquet", info={"seed": 0})
    lines = [ln for ln in build_report(tmp_path).splitlines() if ln.startswith("| [")]
    assert "**partly**" in next(ln for ln in lines if "§3.3, Table 3" in ln)
    assert "**holds**" in next(ln for ln in lines if "§3.2, Figure 2" in ln)
