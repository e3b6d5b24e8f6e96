"""The tables, heatmaps and figures of the notebook stages, built from small synthetic models and records.

Each notebook (01 motivation, 02 training, 03 ablations) only calls these functions; here they get inputs small
enough to check by hand: column names (from :mod:`triqdef.reporting.schemas`), row order, and the numbers.
"""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import LabelNet, calibrated_resnet20

from triqdef import quant
from triqdef.attacks.patches import Patch
from triqdef.reporting import schemas as S

TAPS = ["layer1.0.relu1", "layer2.0.relu1", "layer3.0.relu1"]


def _qmodel(bits=(32, 8, 4), seed=0):
    m, x = calibrated_resnet20(bits, 8, seed)
    return m.eval(), x


def _label_images():
    labels = torch.tensor([0, 2, 3, 4, 1, 5])
    images = torch.zeros(6, 3, 12, 12)
    images[:, 1, 10, 10] = labels.float() / 9
    return images, labels


def _patch(location=(0, 0), **info):
    return Patch(torch.ones(3, 2, 2), location, target=1, attack="lavan", source_model="toy", source_bits=None,
                 info={"set": "seen", **info})


# --------------------------------------------------------------------------- schemas


def test_schema_columns():
    assert S.accuracy_column(4) == "4bit" and S.bit_view(4) == "4-bit"
    assert S.attack_column(S.LAVAN, S.bit_view(4)) == "lavan 4-bit" and S.view_of("lavan 4-bit") == "4-bit"
    cols = ["model", "group", "gap 4-bit", "lavan 32-bit", "lavan 4-bit", "lavan random", "n images"]
    assert S.attack_columns(cols, "lavan") == ["lavan 32-bit", "lavan 4-bit"]
    assert S.is_accuracy_column("32bit") and not S.is_accuracy_column("32-bit") and not S.is_accuracy_column("eval_s")
    assert S.metric_column("edge_iou", "chance") == "edge_iou (chance)" and S.pair_label(32, 5) == "32-5"


# --------------------------------------------------------------------------- Table 3, Figure 2, Table 12


def test_gradient_similarity_rows_and_chance():
    from triqdef.eval.alignment import gradient_similarity

    m, x = _qmodel((32, 4))
    x = x[:4]
    y = torch.arange(len(x)) % 10
    views = {"fp": (m, None), "4": (m, 4), "fp again": (m, None)}
    t = gradient_similarity(views, x, y, seed=0)
    assert list(t.columns) == [S.PAIR, S.METRIC, S.VALUE, S.CHANCE, S.ABOVE_CHANCE]
    assert list(t[S.PAIR].unique()) == ["fp-4", "fp-fp again", "4-fp again"]
    assert list(t[S.METRIC].unique()) == [S.RAW_COSINE, S.EDGE_IOU, S.HOG_COSINE]
    same = t[t[S.PAIR] == "fp-fp again"].set_index(S.METRIC)
    assert same.loc[S.RAW_COSINE, S.VALUE] == pytest.approx(1.0) and same.loc[S.EDGE_IOU, S.VALUE] == 1.0
    assert (t[S.ABOVE_CHANCE] == t[S.VALUE] - t[S.CHANCE]).all()
    assert t.equals(gradient_similarity(views, x, y, seed=0))  # the chance baselines are seeded


def test_feature_alignment_records_heatmaps_and_table12():
    from triqdef.eval.alignment import METRICS, TAP_LABELS, feature_alignment, hard_vs_soft_table
    from triqdef.reporting.plots import alignment_heatmaps, pair_matrix

    m, x = _qmodel((32, 8, 4))
    x = x[:4]
    rec = feature_alignment(m, {"clean": x, "patched": x.flip(0)}, [32, 8, 4], TAPS, seed=0)
    assert list(rec.columns) == [S.INPUT, S.TAP, S.PAIR, S.METRIC, S.VALUE, S.CHANCE]
    assert len(rec) == 2 * len(TAPS) * 3 * len(METRICS)  # inputs x taps x pairs x metrics
    assert list(rec[S.PAIR].unique()) == ["32-8", "32-4", "8-4"] and set(rec[S.TAP]) == set(TAP_LABELS.values())

    t12 = hard_vs_soft_table(rec, ["32-8", "8-4"])
    assert list(t12.columns[:2]) == [S.TAP, S.PAIR] and len(t12) == 2 * len(TAPS)
    assert list(t12.columns[2:4]) == [S.metric_column("cosine", "value"), S.metric_column("cosine", "chance")]
    row = rec[(rec[S.INPUT] == "clean") & (rec[S.PAIR] == "8-4") & (rec[S.METRIC] == "edge_iou") & (rec[S.TAP] == "L1.conv1")]
    got = t12[(t12[S.TAP] == "L1.conv1") & (t12[S.PAIR] == "8-4")][S.metric_column("edge_iou", "value")].item()
    assert got == round(row[S.VALUE].item(), 3)

    sub = pd.DataFrame({S.PAIR: ["32-8", "8-4"], S.VALUE: [0.25, 0.5]})
    assert np.array_equal(pair_matrix(sub, [32, 8, 4]), [[1, 0.25, 0], [0.25, 1, 0.5], [0, 0.5, 1]])
    fig = alignment_heatmaps(rec, ["clean", "patched"], [TAP_LABELS[t] for t in TAPS], [32, 8, 4])
    assert len(fig.axes) == 4 * len(TAPS) + 1  # (input, metric) rows x taps, and the colour bar


# --------------------------------------------------------------------------- figures


def test_figures_draw_every_line():
    import matplotlib.pyplot as plt

    from triqdef.reporting.plots import accuracy_vs_bits, gradcam_grid, loss_terms, training_curves

    t4 = pd.DataFrame({"model": ["FP", "QAT"], "32bit": [90.0, 89.0], "8bit": [math.nan, 88.0], "4bit": [math.nan, 80.0]})
    fig = accuracy_vs_bits(t4, [32, 8, 4], "title")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["FP", "QAT"]  # FP: a horizontal reference line
    assert list(ax.lines[1].get_ydata()) == [89.0, 88.0, 80.0] and ax.get_title() == "title"
    plt.close(fig)

    steps = pd.DataFrame({"step": range(5), "loss_fp": np.linspace(2, 1, 5), "loss_8": np.ones(5), "loss_4": np.ones(5)})
    fig = training_curves(steps, steps, [8, 4], 0.1)
    assert [len(a.lines) for a in fig.axes] == [1, 2] and "0.1" in fig.axes[0].get_title()
    plt.close(fig)

    hist = pd.DataFrame({"step": range(4), "loss_clean": [1.0] * 4, "loss_adv": [2.0] * 4, "fdp": [0.5, None, 0.4, None]})
    fig = loss_terms(hist, "mean", [2])
    assert [line.get_label() for line in fig.axes[1].lines][0] == "L_FDP" and len(fig.axes[0].lines) == 3
    plt.close(fig)

    images = torch.rand(2, 3, 8, 8)
    fig = gradcam_grid(images, torch.tensor([3, 4]), {32: torch.rand(2, 8, 8), 4: torch.rand(2, 8, 8)})
    assert len(fig.axes) == 2 * 3 and [a.get_title() for a in fig.axes[:3]] == ["label 3", "fp", "4-bit"]
    plt.close(fig)


# --------------------------------------------------------------------------- Tables 2, 17, 18, Figure 3


def test_asr_by_model_and_set_keeps_the_given_order():
    from triqdef.eval.transfer import asr_by_model_and_set

    images, labels = _label_images()
    net = LabelNet()
    views = {"B": {"v2": (net, None), "v1": (net, None)}, "A": {"v2": (net, None), "v1": (net, None)}}
    sets = {"far": [_patch((4, 4))], "near": [_patch((0, 0))]}
    rec, t = asr_by_model_and_set(views, sets, images, labels)
    assert list(t.columns) == ["model", "patch_set", "v2", "v2 low", "v2 high", "v1", "v1 low", "v1 high"]
    assert t[["model", "patch_set"]].values.tolist() == [["B", "far"], ["B", "near"], ["A", "far"], ["A", "near"]]
    assert t["v1"].tolist() == [0.0, 100.0, 0.0, 100.0] and len(rec) == 2 * 2 * 2


def test_clean_deviation_and_training_headline():
    from types import SimpleNamespace

    from triqdef.stages.training import clean_deviation, metrics

    t4 = pd.DataFrame({"model": [S.STANDARD_QAT, S.TRIQDEF], "32bit": [90.0, 89.5], "4bit": [80.0, 81.25],
                       "n_test": [10, 10], "eval_s": [1.0, 2.0]})
    assert clean_deviation(t4) == {"32bit": -0.5, "4bit": 1.25}
    t5 = pd.DataFrame({"model": [S.TRIQDEF, S.TRIQDEF], "group": ["seen", "unseen"], "gap 4-bit": [1.0, 2.0],
                       "lavan 32-bit": [3.0, 4.0], "lavan 4-bit": [5.0, 6.0], "lavan random": [7.0, 8.0],
                       "patchattack 4-bit": [math.nan, math.nan]})
    inp = SimpleNamespace(profile="smoke", n_eval=10, meta={"commit": "x"}, patches=[])  # no matched regime: paper decides
    bench = {"time_ratio": 1.5, "mem_ratio": 1.1, "device": "cpu", "settings": {"rho": 0.5}}
    head, details = metrics(inp, t4, t5, bench, {"4-bit": 0.9}, 12.34)
    # the headline: flat numbers, one dvc-metrics column each; the per-bit records go to the metadata
    assert head == {"unseen_lavan_32bit": 4.0, "unseen_lavan_4bit": 6.0, "time_ratio": 1.5, "mem_ratio": 1.1,
                    "stage_wall_time_s": 12.3}
    assert details["clean_deviation_triqdef_minus_qat"] == {"32bit": -0.5, "4bit": 1.25}
    assert details["gradcam_cosine_to_fp"] == {"4-bit": 0.9}
    assert details["bench"] == {"time_ratio": 1.5, "mem_ratio": 1.1, "device": "cpu"} and len(details["table5"]) == 2
    assert details["regime"] == "paper"


# --------------------------------------------------------------------------- Table 13 and the ablation headline


def test_sensitivity_grid_and_table():
    from triqdef.stages.ablation_tables import DEFAULT_SETTING, metrics, sensitivity_grid, sensitivity_table

    variants = {"no_fdp": {"lambda_fdp": 0.0}, "ab": {"alpha": 1.0, "beta": 0.5}}
    grid = sensitivity_grid(["no_fdp", "ab"], variants)
    assert grid == {"full": DEFAULT_SETTING, "ab": "alpha = 1.0, beta = 0.5"}

    m, x = _qmodel((32, 4))
    y = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    with torch.no_grad(), quant.use_bitwidth(m, 4):
        y = m(x).argmax(1)  # every image correct at 4 bits
    patch = Patch(torch.ones(3, 4, 4), (0, 0), target=int((y[0] + 1) % 10), attack="lavan", source_model="toy",
                  source_bits=None, info={"set": "seen"})
    adv = {}
    t = sensitivity_table({"full": m, "ab": m}, grid, [4], [patch], x, y, x, y, adv)
    assert list(t.columns) == [S.VARIANT, S.SETTING, S.METRIC, "4bit"]
    assert set(adv) == {("full", 4), ("ab", 4)} and t["4bit"].iloc[1] == pytest.approx(100 * adv[("full", 4)].rate())
    assert t[S.METRIC].tolist() == [S.CLEAN, S.ADV, S.ASR] * 2 and t[S.SETTING].tolist()[:2] == [DEFAULT_SETTING, ""]
    assert t["4bit"].iloc[0] == 100.0 and 0 <= t["4bit"].iloc[1] <= 100 and 0 <= t["4bit"].iloc[2] <= 100

    t7 = pd.DataFrame({"model": [S.FULL, S.FULL, S.NO_FDP], "group": ["seen", "unseen", "unseen"],
                       "lavan 4-bit": [1.0, 2.0, 3.0], "gap 4-bit": [4.0, 5.0, 6.0]})
    from types import SimpleNamespace

    head, details = metrics(SimpleNamespace(profile="smoke", meta={}, patches=[]), t7, t, 3.0)
    assert head == {"unseen_lavan_mean_full": 2.0, "unseen_lavan_mean_no_fdp": 3.0, "stage_wall_time_s": 3.0}
    assert len(details["table13"]) == 6


def _robust_store(correct: dict) -> pd.DataFrame:
    """Outcome-store rows from ``{(variant, bits): (patches, images) bool}``: right where True, fooled elsewhere."""
    frames = []
    for (v, b), ok in correct.items():
        n_patch, n_img = ok.shape
        labels = np.arange(n_img) % 10
        for p in range(n_patch):
            frames.append(pd.DataFrame({
                "model": v, "seed": 0, "bits": b, "attack": "lavan", "set": "seen", "patch_id": p, "target": p,
                "loc_y": 0, "loc_x": 0, "image_id": np.arange(n_img), "label": labels, "clean_pred": labels,
                "patched_pred": np.where(ok[p], labels, (labels + 1) % 10)}))
    return pd.concat(frames, ignore_index=True)


def test_table13_claims_pair_full_with_each_variant_from_the_store():
    from triqdef.eval import outcome_store
    from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE
    from triqdef.stages.ablation_tables import table13_claims

    rng = np.random.default_rng(0)
    u = rng.random((3, 2000))
    correct = {(v, b): u < r + 0.02 * (b == 2)
               for v, r in (("full", 0.6), ("worse", 0.4), ("same", 0.6), ("better", 0.8)) for b in (4, 2)}
    store = outcome_store.validate(_robust_store(correct))
    claims = {c["statement"].split("full − ")[1].split(" ")[0]: c for c in table13_claims(store, seed=0)}
    assert claims["worse"]["verdict"] == HOLDS and claims["better"]["verdict"] == FAILS
    assert claims["same"]["verdict"] == INCONCLUSIVE and claims["same"]["n_patches"] == 6  # (bit-width, patch) units
    assert claims["worse"]["value"] == pytest.approx(100 * (correct[("full", 4)].mean() + correct[("full", 2)].mean()
                                                            - correct[("worse", 4)].mean() - correct[("worse", 2)].mean()) / 2)
    only = outcome_store.validate(_robust_store({("ab", 4): correct[("worse", 4)]}))
    assert table13_claims(only, seed=0) == []  # no full row: nothing to claim


def test_report_decides_table13_from_its_store_alone(tmp_path):
    """Issue 29: claim 'the default setting is the most balanced' recomputed from results/outcomes/table13*.parquet;
    with the default setting alone (the cpu profile trains no sensitivity variant) it is not in the profile."""
    from triqdef.eval import outcome_store
    from triqdef.reporting.report import build_report

    rng = np.random.default_rng(1)
    u = rng.random((10, 500))
    correct = {(v, b): u < r for v, r in (("full", 0.7), ("ab", 0.5)) for b in (32, 4)}
    outcome_store.write(_robust_store(correct), tmp_path / "outcomes" / "table13_matched.parquet",
                        info={"regime": "matched", "patch_size": 12})
    row = next(ln for ln in build_report(tmp_path).splitlines() if ln.startswith("| [") and "Table 13" in ln)
    assert "**holds**" in row, row
    outcome_store.write(_robust_store({k: v for k, v in correct.items() if k[0] == "full"}),
                        tmp_path / "outcomes" / "table13_matched.parquet", info={"regime": "matched", "patch_size": 12})
    row = next(ln for ln in build_report(tmp_path).splitlines() if ln.startswith("| [") and "Table 13" in ln)
    assert "**not measured**" in row and "not run in this profile" in row, row


def test_motivation_headline_reads_the_tables():
    from types import SimpleNamespace

    from triqdef.stages import motivation

    t4 = pd.DataFrame({"model": ["FP", "QAT"], "32bit": [90.0, 89.0], "4bit": [math.nan, 80.0], "n_test": [4, 4]})
    t1 = pd.DataFrame({"attack": ["gap", "lavan"], S.FP_WHITEBOX_VIEW: [50.0, 60.0], "4": [10.0, 20.0], "n 4": [3, 3]})
    t8 = pd.DataFrame({"source": ["a"], "target": ["b"], "attack": ["lavan"], "FP": [1.0], "4-bit": [2.0], "n FP": [3]})
    records = pd.DataFrame({"view": ["4", "4", S.FP_WHITEBOX_VIEW], "eval_s": [1.0, 2.0, 3.0]})
    inp = SimpleNamespace(qat_label="QAT", qat=None, fp=None, qat_meta={"bits": [4]}, profile="smoke", n_test=4,
                          splits=SimpleNamespace(source={"source": "sample"}), test_y=torch.zeros(3), meta={},
                          patches=[])
    note = pd.DataFrame({"note": ["no matched regime"]})  # a regime not made: its table is a note, skipped
    head, details = motivation.metrics(inp, t4, {"paper": t1, "matched": note}, records, t8, 1.25)
    assert head == {"qat_acc_32bit": 89.0, "qat_acc_4bit": 80.0, "lavan_asr_whitebox": 60.0, "lavan_asr_4bit": 20.0,
                    "stage_wall_time_s": 1.2}
    both, both_details = motivation.metrics(inp, t4, {"matched": t1.assign(**{"4": [11.0, 21.0]}), "paper": t1}, records, note, 1.25)
    assert both["lavan_asr_4bit"] == 20.0 and both["lavan_asr_4bit_matched"] == 21.0  # each regime under its own key
    assert details["regime"] == "paper"
    assert details["table1_asr"]["gap"] == {S.FP_WHITEBOX_VIEW: 50.0, "4": 10.0}
    assert details["accuracy"]["FP"] == {"32bit": 90.0} and details["table8_asr"] == {"a -> b lavan": {"FP": 1.0, "4-bit": 2.0}}
    assert both_details["table8_asr"] == {}  # Table 8 not made in the deciding regime
    assert details["seconds_per_patch_evaluation"] == {"n_images": 3, "4": 1.5, S.FP_WHITEBOX_VIEW: 3.0}


def _records(rates_by_view: dict, n_images=400, attack="lavan", seed=0, **columns):
    """Synthetic transfer records: one row per (patch, view), hits drawn at the given per-patch rates."""
    rng = np.random.default_rng(seed)
    base = rng.random((len(next(iter(rates_by_view.values()))), n_images))
    return pd.DataFrame([{"patch": i, "view": view, "attack": attack, **columns, "hits_asr": base[i] < r,
                          "eligible": np.ones(n_images, dtype=bool)}
                         for view, rates in rates_by_view.items() for i, r in enumerate(rates)])


def test_motivation_claims_are_decided_on_intervals_from_the_store():
    """Table 1 / 11's "keeps most of its success" (ASR − 0.7 × FP, the same patches on common images) and Table 9's
    level, each a verdict read off a 95 % interval studentised over patches; too few images give "inconclusive"."""
    from helpers import outcome_rows, outcome_store_of

    from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE
    from triqdef.stages import motivation as M

    def store(fp, low, n=400, patches=10):
        # one uniform draw per patch (seed 3) for both models: a lower rate is a subset of a higher one (paired)
        return outcome_store_of([outcome_rows(M.FP, "seen", "lavan", 32, [fp] * patches, 3, n=n),
                                 outcome_rows(M.QAT, "seen", "lavan", 2, [low] * patches, 3, n=n)])

    (c,) = M.table1_claims(store(0.85, 0.8))
    assert c["verdict"] == HOLDS and c["n_patches"] == 10 and c["n_images"] == 400 and c["statement"].startswith("LAVAN")
    assert c["n_common"] == 400 and c["method"] == "t"
    assert M.table1_claims(store(0.85, 0.25))[0]["verdict"] == FAILS
    assert M.table1_claims(store(0.85, 0.6, n=30, patches=3))[0]["verdict"] == INCONCLUSIVE
    ptq = outcome_store_of([outcome_rows(M.PTQ, "unseen_size8", "lavan", 2, [0.8, 0.9] * 5, 1, n=400)])
    (level,) = M.table9_claims(ptq, {"unseen_size8": 16})
    assert level["verdict"] == HOLDS and level["statement"] == "LAVAN 16×16 ASR on PTQ 2-bit (%)"
    assert M.table9_claims(ptq.assign(patched_pred=ptq["label"]), {"unseen_size8": 16})[0]["verdict"] == FAILS


def test_table2_and_table8_claims_are_decided_from_their_stores():
    """Claim 12 (Table 2: PBAT's 8-bit ASR on patches made at 2 bits minus the seen ones of the same size, the
    sets' patches each on their own) and Table 8's levels come from outcome stores alone; the views map onto the
    store's (model, bit-width) one to one."""
    from helpers import outcome_rows, outcome_store_of

    from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE
    from triqdef.stages import motivation as M
    from triqdef.stages import training as T

    def t2(unseen, seen, n=400, patches=10):
        return outcome_store_of([outcome_rows(S.PBAT, S.T2_UNSEEN_2BIT, "lavan", 8, [unseen] * patches, 1, n=n),
                                 outcome_rows(S.PBAT, S.T2_SEEN_SAME_SIZE, "lavan", 8, [seen] * patches, 2, n=n),
                                 outcome_rows(S.PBAT + " · PTQ", S.T2_SEEN_SAME_SIZE, "lavan", 8, [0.9] * patches, 3, n=n)])

    (c,) = T.table2_claims(t2(0.6, 0.2))
    assert c["verdict"] == HOLDS and c["topic"] == "table2" and c["n_patches"] == 20 and 35 < c["value"] < 45  # 10 + 10
    assert T.table2_claims(t2(0.25, 0.2))[0]["verdict"] == FAILS   # a rise of 5 points is not one of 20
    assert T.table2_claims(t2(0.45, 0.2, n=40, patches=2))[0]["verdict"] == INCONCLUSIVE
    records = pd.DataFrame({"model": [S.PBAT] * 5, "view": [S.T2_32BIT, S.T2_8BIT, S.T2_PTQ8, f"{S.T2_8BIT} (MSE clip)",
                                                            f"{S.T2_PTQ8} (MSE clip)"]})
    rows = T.table2_store_rows(records)
    assert rows["model"].tolist() == [S.PBAT, S.PBAT, f"{S.PBAT} · PTQ", f"{S.PBAT} (MSE clip)", f"{S.PBAT} · PTQ (MSE clip)"]
    assert rows["view"].tolist() == ["32-bit"] + ["8-bit"] * 4

    rows8 = M.table8_store_rows(pd.DataFrame({"target_model": ["R56", "R56"], "target": [3, 3], "view": [S.FP_VIEW, "2-bit"],
                                              "set": ["seen"] * 2}))
    assert rows8["model"].tolist() == ["R56 FP", "R56 QAT"] and rows8["view"].tolist() == ["32-bit", "2-bit"]
    store8 = outcome_store_of([outcome_rows("R56 QAT", "seen", "lavan", 2, [0.9] * 10, 1, n=400),
                               outcome_rows("R56 QAT", "seen", "lavan", 8, [0.95] * 10, 2, n=400),
                               outcome_rows("R20 QAT", "cross_arch", "lavan", 2, [0.1] * 10, 3, n=400)])
    directions = [{"source": "R20", "target": "R56", "set": "seen"}, {"source": "R56", "target": "R20", "set": "cross_arch"},
                  {"source": "R56", "target": "R56 (white-box)", "set": "cross_arch"}]   # no QAT model: no claim
    up, down = M.table8_claims(store8, directions)
    assert up["statement"] == "LAVAN R20→R56 ASR at 2 bits (%)" and up["verdict"] == HOLDS
    assert down["statement"] == "LAVAN R56→R20 ASR at 2 bits (%)" and down["verdict"] == FAILS


def test_report_reads_the_training_measurements_where_the_stage_writes_them(tmp_path, monkeypatch):
    """The report's Table 17, Table 18 and Figure 3 claims read the measurement store that notebook 02 writes with
    :func:`triqdef.stages.training.write_measurement_store` (issue 29: verdicts from stores alone)."""
    from types import SimpleNamespace

    from triqdef.reporting.report import build_report
    from triqdef.stages import training_measures as TM
    from triqdef.stages.training import write_measurement_store

    monkeypatch.setenv("TRIQDEF_OUTPUT", str(tmp_path))
    gpdp = [False, False, True, False] * 2
    bench = {"triqdef_ms_steps": [140.0] * 8, "qat_ms_steps": [100.0] * 8, "triqdef_gpdp_steps": gpdp}
    times = {4: {S.TRIQDEF: [0.010] * 5, S.STANDARD_QAT: [0.010] * 5}}
    inp = SimpleNamespace(measures=[TM.bench_rows(bench), TM.latency_rows(times),
                                    TM.gradcam_rows({4: np.full(50, 0.9)}, np.arange(50))],
                          measures_info={"gpdp_every": 4, "peak_mb": {S.TRIQDEF: 110.0, "QAT": 100.0}, "batch_size": 128,
                                         "bench_device": "cpu", "structure": {"4": {"same_structure": True, "hooks": 0}}},
                          meta={"data": {"source": "test"}}, model_name="resnet20")
    write_measurement_store(inp)
    # claim 19's clean deviation comes from the clean outcome store (stage clean_outcomes): 90.0 against 89.5 %
    from triqdef.eval import outcome_store
    from triqdef.stages.clean_outcomes import store_rows

    labels = np.zeros(200, dtype=np.int64)
    rows = [store_rows(m, 32, np.where(np.arange(200) < k, 0, 1), labels, 0) for m, k in ((S.STANDARD_QAT, 180), (S.TRIQDEF, 179))]
    outcome_store.write(pd.concat(rows, ignore_index=True), tmp_path / "results" / "outcomes" / "clean.parquet")
    report = build_report(tmp_path / "results")
    lines = report.splitlines()
    bench_row = next(line for line in lines if line.startswith("| [") and "| App. D, Table 17 |" in line)
    deploy_row = next(line for line in lines if line.startswith("| [") and "Table 18" in line)
    cam_row = next(line for line in lines if line.startswith("| [") and "| §4.6, Figure 3 |" in line)
    assert "time 1.40× [1.40, 1.40]" in bench_row and "memory 1.10×" in bench_row and "**holds**" in bench_row
    assert "latency ratio (median) 1.00–1.00" in deploy_row and "**holds**" in deploy_row
    # the maps hold; the clean deviation (-0.5 points on 200 images) is inconclusive: partly
    assert "4-bit 0.90 [0.90, 0.90]" in cam_row and "**partly**" in cam_row and "32bit -0.5" in report


def test_writing_the_training_measurements_before_measuring_names_what_is_missing(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from triqdef.errors import TriqdefError
    from triqdef.stages.training import write_measurement_store

    monkeypatch.setenv("TRIQDEF_OUTPUT", str(tmp_path))
    with pytest.raises(TriqdefError, match="no training measurement"):
        write_measurement_store(SimpleNamespace(measures=[], measures_info={}, meta={}, model_name="resnet20"))
    assert not any(tmp_path.rglob("*.parquet"))


def test_the_matched_size_is_the_smallest_size_reaching_the_threshold():
    import pandas as pd

    from triqdef.attacks.patches import Patch
    from triqdef.stages.attack_strength import FP_VIEW, matched_size, noise_patch

    rows = []
    for size, asr in ((4, 10.0), (6, 40.0), (8, 79.9), (10, 80.0), (12, 95.0)):
        rows.append({"attack": "lavan", "size": size, "patch": "optimised", "view": FP_VIEW, "asr": asr})
        rows.append({"attack": "lavan", "size": size, "patch": "noise", "view": FP_VIEW, "asr": 99.0})
        rows.append({"attack": "gap", "size": size, "patch": "optimised", "view": FP_VIEW, "asr": 99.0})
        rows.append({"attack": "lavan", "size": size, "patch": "optimised", "view": "QAT 2-bit", "asr": 99.0})
    curve = pd.DataFrame(rows)
    assert matched_size(curve, 0.8) == 10   # not the noise rows, not GAP, not the transfer rows
    assert matched_size(curve, 0.96) is None
    p = Patch(torch.zeros(3, 6, 6), (5, 7), 3, "lavan", "resnet20", None)
    n = noise_patch(p, 1)
    assert n.location == p.location and n.target == 3 and n.content.shape == (3, 6, 6) and n.attack == "noise"
    assert torch.equal(n.content, noise_patch(p, 1).content) and not torch.equal(n.content, noise_patch(p, 2).content)


# --------------------------------------------------------------------------- which regimes the notebooks evaluate


def test_regimes_evaluate_the_deciding_one_or_both(tmp_path, monkeypatch):
    """``regimes.evaluate: deciding`` skips the other regime's tables (each then says why) but never Table 1's
    transfer study; ``both`` makes both; a regime the patch stage did not make is absent either way."""
    from types import SimpleNamespace

    from triqdef.stages import regimes

    monkeypatch.setattr(regimes, "save_table", lambda table, name, meta, caption: saved.update({name: (meta, caption)}))
    seen = lambda size, name: Patch(torch.ones(3, size, size), (0, 0), 1, "lavan", "fp", None, {"set": name})
    both_made = [seen(6, "seen"), seen(12, "seen_matched")]

    def inp(evaluate, patches):
        cfg = SimpleNamespace(regimes=SimpleNamespace(evaluate=evaluate), patches=SimpleNamespace(size=6))
        return SimpleNamespace(cfg=cfg, patches=patches, profile="cpu", meta={})

    deciding = inp("deciding", both_made)
    assert regimes.deciding_regime(deciding) == "matched" and regimes.other_regime(deciding) == "paper"
    assert regimes.not_evaluated(deciding, "matched") is None
    why = regimes.not_evaluated(deciding, "paper")
    assert "not evaluated in profile `cpu`" in why and "regimes.cpu.evaluate: both" in why
    assert "paper regime: not evaluated" in regimes.regime_note(deciding)
    # issue 30: the patch stage records its regimes; with `deciding` it made only the paper regime's pool
    pool_only = SimpleNamespace(**vars(inp("deciding", both_made[1:])),
                                patch_meta={"regimes": {"paper": {"size": 6}, "matched": {"size": 12}}})
    assert regimes.regime_size(pool_only, "paper") == 6 and regimes.deciding_regime(pool_only) == "matched"
    assert "not evaluated in profile `cpu`" in regimes.not_evaluated(pool_only, "paper")
    assert regimes.not_evaluated(inp("both", both_made), "paper") is None
    assert "evaluated after them" in regimes.regime_note(inp("both", both_made))
    only_paper = inp("deciding", both_made[:1])  # no matched regime: the paper's decides and is made
    assert regimes.deciding_regime(only_paper) == "paper" and regimes.not_evaluated(only_paper, "paper") is None
    assert "no matched regime" in regimes.not_evaluated(only_paper, "matched")

    saved = {}
    note = regimes.save_absent_regime(deciding, ["table5_asr"], "paper")
    assert list(saved) == ["table5_asr"] and saved["table5_asr"][0]["not_evaluated"] == why
    assert note["note"].tolist() == [why] and why in saved["table5_asr"][1]


@pytest.mark.parametrize("evaluate,regimes", [("deciding", {"matched"}), ("both", {"paper", "matched"})])
def test_cross_arch_makes_ten_patches_per_attack_one_per_class_in_the_evaluated_regimes(evaluate, regimes):
    """Issue 29, item 4: Table 8's and Table 14's second-architecture sources have 10 patches per attack and rate, one
    per class; with ``regimes.evaluate: deciding`` (the cpu profile) only the deciding regime's are made, the other
    regime being evaluated nowhere."""
    from collections import Counter

    from triqdef.config import load_config, override
    from triqdef.stages import cross_arch

    cfg = load_config(profile="cpu", sections=cross_arch.PARAMS)
    cfg = cfg.replace(regimes=override(cfg.regimes, {"evaluate": evaluate}, "regimes.evaluate"))
    assert cfg.cross_arch.patches_per_attack == 10
    specs = cross_arch.patch_specs(cfg, second_size=12)
    assert {s.regime for s in specs} == regimes
    for (regime, attack), n in Counter((s.regime, s.attack) for s in specs).items():
        targets = sorted(s.target for s in specs if (s.regime, s.attack) == (regime, attack))
        assert n == 10 and targets == list(range(10)), (regime, attack)
    assert len({s.seed for s in specs}) == len(specs)
