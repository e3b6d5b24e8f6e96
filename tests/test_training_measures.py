"""Stage ``training``'s measurement store (issue 29, item 1): Table 17's step times, Table 18's latencies and Figure 3's
Grad-CAM cosines per item, and claims 9, 11 and 19 decided from it alone."""

import numpy as np
import pytest

from triqdef.errors import TriqdefError
from triqdef.eval import measure_store
from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE
from triqdef.reporting import schemas as S
from triqdef.stages import training_measures as TM


def _bench(triqdef_ms, qat_ms, gpdp, **extra) -> dict:
    """A :func:`triqdef.eval.bench.train_step_benchmark` record with the given per-step times."""
    out = {"triqdef_ms_steps": list(triqdef_ms), "qat_ms_steps": list(qat_ms), "triqdef_gpdp_steps": list(gpdp)}
    out.update({f"{k}_ms_steps": list(v) for k, v in extra.items()})
    return out


INFO = {"gpdp_every": 4, "peak_mb": {S.TRIQDEF: 110.0, "QAT": 100.0, S.DWQ: 101.0}, "batch_size": 128,
        "bench_device": "cpu"}


def test_step_time_ratio_weights_gpdp_steps_by_their_training_share():
    """GPDP runs on 1 step in 4: a window of 8 steps holding 3 GPDP steps must not count them 3/8 of the time.
    TriQDef 200 ms with GPDP, 100 without, QAT 100: the training-time ratio is 0.25 × 2 + 0.75 × 1 = 1.25."""
    gpdp = [False, True, False, True, False, False, True, False]
    tq = [200.0 if g else 100.0 for g in gpdp]
    store = TM.bench_rows(_bench(tq, [100.0] * 8, gpdp))
    r = TM.step_time_ratio(store, INFO)
    assert r["value"] == pytest.approx(1.25) and np.mean(tq) / 100 == pytest.approx(1.375)
    assert r["low"] == pytest.approx(1.25) and r["high"] == pytest.approx(1.25)   # no noise, no width
    assert r["n_rounds"] == 8 and r["n_gpdp_rounds"] == 3


def test_step_time_ratio_interval_is_paired_over_rounds():
    """Machine noise that hits both methods in a round cancels in the paired interval: TriQDef = 1.3 × QAT in every
    round, QAT's time drifting by ±30 %, gives a ratio of 1.3 with a narrow interval; unpaired noise widens it."""
    rng = np.random.default_rng(0)
    qat = 100 * (1 + 0.3 * rng.standard_normal(16))
    gpdp = [i % 4 == 3 for i in range(16)]
    paired = TM.step_time_ratio(TM.bench_rows(_bench(1.3 * qat, qat, gpdp)), INFO)
    assert paired["value"] == pytest.approx(1.3) and paired["high"] - paired["low"] < 1e-9
    noisy = TM.step_time_ratio(TM.bench_rows(_bench(1.3 * qat * (1 + 0.2 * rng.standard_normal(16)), qat, gpdp)), INFO)
    assert noisy["low"] < 1.3 < noisy["high"] and noisy["high"] - noisy["low"] > 0.05


def test_step_time_ratio_refuses_a_bad_level():
    store = TM.bench_rows(_bench([1.0, 2.0], [1.0, 1.0], [False, True]))
    with pytest.raises(TriqdefError, match=r"coverage level in \(0, 1\)"):
        TM.step_time_ratio(store, INFO, level=1.5)


def test_cost_table_comes_from_the_store_with_memory_from_its_info(tmp_path):
    gpdp = [False, False, False, True] * 2
    store = TM.bench_rows(_bench([120.0] * 8, [100.0] * 8, gpdp, dwq=[50.0] * 8))
    path = measure_store.write(store, tmp_path / "training_measures.parquet", info=INFO)
    back, info = measure_store.read(path), measure_store.read_info(path)
    t = TM.cost_table(back, info).set_index(S.METHOD)
    assert list(t.index) == ["QAT", S.DWQ, S.TRIQDEF]
    assert t.loc[S.TRIQDEF, S.T17_TIME_RATIO] == 1.2 and t.loc[S.DWQ, S.T17_TIME_RATIO] == 0.5
    assert t.loc[S.TRIQDEF, S.T17_MEM_RATIO] == 1.1 and t.loc["QAT", S.T17_IMAGES_PER_S] == 1280.0


def test_latency_table_pairs_runs_and_takes_structure_from_the_info():
    times = {4: {S.TRIQDEF: [0.010, 0.011, 0.012, 0.013], S.STANDARD_QAT: [0.010, 0.010, 0.012, 0.013]},
             32: {S.TRIQDEF: [0.020] * 4, S.STANDARD_QAT: [0.010] * 4}}
    info = {"structure": {"4": {"same_structure": True, "hooks": 0}, "32": {"same_structure": False, "hooks": 1}}}
    t = TM.latency_table(TM.latency_rows(times), info).set_index(S.T18_BITS)
    assert t.loc[4, S.T18_SAME_STRUCTURE] and not t.loc[32, S.T18_SAME_STRUCTURE] and t.loc[32, S.T18_HOOKS] == 1
    assert t.loc[4, S.T18_TRIQDEF_MS] == pytest.approx(11.5) and t.loc[32, S.T18_RATIO] == 2.0


@pytest.mark.parametrize("centre,verdict", [(0.95, HOLDS), (0.6, FAILS), (0.8, INCONCLUSIVE)])
def test_gradcam_claim_reads_per_image_cosines(centre, verdict):
    rng = np.random.default_rng(1)
    cos = {5: np.clip(0.97 + 0.02 * rng.standard_normal(300), 0, 1),
           2: np.clip(centre + 0.1 * rng.standard_normal(300), 0, 1)}
    means, decided = TM.gradcam_claims(TM.gradcam_rows(cos, np.arange(300)), 0.8)
    assert decided == verdict
    assert set(means) == {"5", "2"} and means["2"][3] == 300 and means["2"][1] < means["2"][0] < means["2"][2]


def test_gradcam_claim_without_cosines_names_what_is_missing():
    store = TM.bench_rows(_bench([1.0], [1.0], [False]))
    with pytest.raises(TriqdefError, match="gradcam_cosine_to_fp"):
        TM.gradcam_claims(store, 0.8)


def test_a_real_benchmark_run_fills_the_store():
    """A small :func:`train_step_benchmark` run (ResNet-20, batch 4) gives one step time per round and method, and
    TriQDef's GPDP flags on the steps it ran GPDP (every 2nd here)."""
    from triqdef.defenses.steps import TriQDefSettings
    from triqdef.eval.bench import train_step_benchmark

    settings = TriQDefSettings(taps=("layer1.0.relu1", "layer2.0.relu1"), gpdp_every=2, gpdp_sub_batch=2)
    tb = train_step_benchmark(settings, "resnet20", (32, 4), batch_size=4, steps=4, warmup=1)
    store = measure_store.validate(TM.bench_rows(tb))
    steps = store[store["measure"] == TM.STEP_MS]
    assert sorted(steps["model"].unique()) == ["QAT", S.TRIQDEF] and len(steps) == 8
    flags = store.loc[store["measure"] == TM.GPDP_STEP, "value"].tolist()
    assert flags == [1.0, 0.0, 1.0, 0.0]   # measured steps 2..5 (warm-up: step 1): GPDP on 2 and 4
    info = dict(INFO, gpdp_every=2, peak_mb={S.TRIQDEF: tb["triqdef_peak_mb"], "QAT": tb["qat_peak_mb"]})
    r = TM.step_time_ratio(store, info)
    assert r["low"] <= r["value"] <= r["high"] and r["n_gpdp_rounds"] == 2
