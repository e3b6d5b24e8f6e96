"""Stage ``clean_outcomes`` (issue 29, item 1): per-image clean predictions as an outcome store, and the clean-accuracy
claim (paper Table 4) decided from it, paired on the same test images."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from triqdef.errors import TriqdefError
from triqdef.eval import outcome_store
from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE
from triqdef.eval.defense_claims import familywise
from triqdef.reporting import schemas as S
from triqdef.stages import clean_outcomes as stage

ROOT = Path(__file__).resolve().parents[1]


def _store(accuracies: dict[str, dict[int, float]], n: int = 2000, shared: float = 0.8, seed: int = 0) -> pd.DataFrame:
    """A clean store whose models get each image right with the given accuracy; the models' errors are correlated
    (``shared`` of the images are hard or easy for all), as on real test images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    common = rng.random(n)
    frames = []
    for model, by_bits in accuracies.items():
        for bits, acc in by_bits.items():
            own = rng.random(n)
            u = np.where(rng.random(n) < shared, common, own)
            right = u < acc
            preds = np.where(right, labels, (labels + 1 + rng.integers(0, 9, n)) % 10)
            frames.append(stage.store_rows(model, bits, preds, labels, 0))
    return pd.concat(frames, ignore_index=True)


def test_store_round_trips_and_gives_each_models_accuracy(tmp_path):
    store = _store({S.STANDARD_QAT: {32: 0.86, 2: 0.72}, S.TRIQDEF: {32: 0.84, 2: 0.66}}, n=1000)
    path = outcome_store.write(store, tmp_path / "clean.parquet")
    back = outcome_store.read(path)
    table = stage.accuracy_table(back)
    assert list(table.index) == [S.STANDARD_QAT, S.TRIQDEF] and list(table.columns) == ["32bit", "2bit", "n_test"]
    rows = back[(back["model"] == S.TRIQDEF) & (back["bits"] == 2)]
    assert table.loc[S.TRIQDEF, "2bit"] == pytest.approx(100 * (rows["clean_pred"] == rows["label"]).mean())
    assert (table["n_test"] == 1000).all()
    assert (back["set"] == stage.CLEAN_SET).all() and (back["clean_pred"] == back["patched_pred"]).all()


def test_paired_interval_matches_scipys_bootstrap_and_is_narrower_than_the_unpaired_one():
    """The paired difference of two accuracies on the same images against ``scipy.stats.bootstrap`` (percentile) on
    the per-image differences, and narrower than Newcombe's unpaired interval, since the models' errors correlate."""
    from scipy import stats

    from triqdef.reporting.report import wilson_interval

    store = _store({S.STANDARD_QAT: {32: 0.86}, S.TRIQDEF: {32: 0.83}})
    (claim,) = stage.clean_claims(store, S.TRIQDEF, S.STANDARD_QAT, n_boot=4000)
    a = stage.correct(store, S.TRIQDEF, 32).to_numpy(float)
    b = stage.correct(store, S.STANDARD_QAT, 32).to_numpy(float)
    ref = stats.bootstrap((100 * (a - b),), np.mean, n_resamples=4000, method="percentile",
                          random_state=np.random.default_rng(1)).confidence_interval
    assert claim["value"] == pytest.approx(100 * (a.mean() - b.mean()))
    assert claim["low"] == pytest.approx(ref.low, abs=0.25) and claim["high"] == pytest.approx(ref.high, abs=0.25)
    n = len(a)
    (la, ua), (lb, ub) = wilson_interval(int(a.sum()), n), wilson_interval(int(b.sum()), n)
    unpaired = 100 * (((a.mean() - la) ** 2 + (ub - b.mean()) ** 2) ** 0.5 + ((ua - a.mean()) ** 2 + (b.mean() - lb) ** 2) ** 0.5)
    assert claim["high"] - claim["low"] < 0.8 * unpaired
    assert claim["n_images"] == n and claim["n_patches"] == 1


@pytest.mark.parametrize("triqdef_2bit,verdict", [(0.855, HOLDS), (0.78, FAILS), (0.835, INCONCLUSIVE)])
def test_claim_is_decided_familywise_over_the_bit_widths(triqdef_2bit, verdict):
    """Close to standard QAT (above −2.5 points) at every bit-width: holds when each interval is above, does not
    hold when Holm's procedure finds one below, otherwise inconclusive."""
    store = _store({S.STANDARD_QAT: {32: 0.86, 4: 0.86, 2: 0.86}, S.TRIQDEF: {32: 0.86, 4: 0.86, 2: triqdef_2bit}}, n=4000)
    claims = stage.clean_claims(store, S.TRIQDEF, S.STANDARD_QAT)
    assert [c["bits"] for c in claims] == [32, 4, 2]
    assert familywise(claims) == verdict


def test_models_without_a_common_bit_width_or_image_are_refused_in_one_line():
    store = _store({S.STANDARD_QAT: {32: 0.86}, S.TRIQDEF: {4: 0.86}}, n=100)
    with pytest.raises(TriqdefError, match="share no bit-width"):
        stage.clean_claims(store, S.TRIQDEF, S.STANDARD_QAT)
    with pytest.raises(TriqdefError, match="has no DWQ at 32 bits"):
        stage.correct(store, S.DWQ, 32)
    other = _store({S.TRIQDEF: {32: 0.8}}, n=100).assign(image_id=lambda f: f["image_id"] + 1000)
    mixed = pd.concat([store[store["model"] == S.STANDARD_QAT], other], ignore_index=True)
    with pytest.raises(TriqdefError, match="share no test image"):
        stage.clean_claims(mixed, S.TRIQDEF, S.STANDARD_QAT)
    with pytest.raises(TriqdefError, match="one per test image"):
        stage.store_rows(S.TRIQDEF, 32, np.zeros(5), np.zeros(6), 0)


def test_report_decides_the_clean_claim_from_the_store_alone(tmp_path):
    from triqdef.reporting.report import build_report

    line = lambda text: next(ln for ln in text.splitlines() if ln.startswith("| [") and "§4.2, Table 4" in ln)
    assert "**not measured**" in line(build_report(tmp_path)) and "outcomes/clean.parquet" in build_report(tmp_path)
    store = _store({S.STANDARD_QAT: {32: 0.86, 2: 0.72}, S.TRIQDEF: {32: 0.80, 2: 0.60}})
    outcome_store.write(store, tmp_path / "outcomes" / "clean.parquet")
    text = build_report(tmp_path)
    assert "**does not hold**" in line(text)
    assert "2000 images, the same for both; 95 % paired bootstrap interval" in text


def test_committed_metrics_agree_with_table_4():
    """The committed run: the store's accuracies (its metrics) are Table 4's, model by model and bit-width by
    bit-width (both stages evaluate the same checkpoints on the same test images)."""
    metrics = json.loads((ROOT / "results" / "metrics" / "clean_outcomes.json").read_text())
    table4 = pd.read_csv(ROOT / "results" / "tables" / "table4_defenses_clean_accuracy.csv").set_index(S.MODEL)
    assert set(metrics["accuracy"]) == set(S.DEFENSE_LABELS.values())
    for model, by_bits in metrics["accuracy"].items():
        for column, value in by_bits.items():
            assert value == pytest.approx(table4.loc[model, column], abs=0.01), (model, column)
    assert metrics["n_test"] == int(table4["n_test"].iloc[0])


@pytest.mark.parametrize("triqdef_acc,verdict", [(0.86, "holds"), (0.80, "partly")])
def test_figure_3_clean_deviation_is_paired_from_the_store(tmp_path, triqdef_acc, verdict):
    """Claim 19: Grad-CAM cosines from stage training's measurement store, the '< 1 %' clean deviation from the
    clean store."""
    from triqdef.eval import measure_store
    from triqdef.reporting.report import build_report
    from triqdef.stages import training_measures

    rng = np.random.default_rng(0)
    cosines = {5: 0.97 + 0.01 * rng.standard_normal(200), 2: 0.85 + 0.02 * rng.standard_normal(200)}
    measure_store.write(training_measures.gradcam_rows(cosines, np.arange(200)),
                        tmp_path / "outcomes" / "training_measures.parquet")
    store = _store({S.STANDARD_QAT: {32: 0.86, 2: 0.86}, S.TRIQDEF: {32: 0.86, 2: triqdef_acc}}, n=6000, shared=0.95)
    outcome_store.write(store, tmp_path / "outcomes" / "clean.parquet")
    report = build_report(tmp_path)
    row = next(ln for ln in report.splitlines() if ln.startswith("| [") and "§4.6, Figure 3" in ln)
    assert f"**{verdict}**" in row and "clean deviation from QAT 32bit" in report   # the full text: the claim's section
