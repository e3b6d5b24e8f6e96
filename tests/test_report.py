"""results/REPORT.md: claims read from the result tables; a missing result is 'not measured', never a made-up figure."""
import pytest

from triqdef.config import load_config
from triqdef.errors import TriqdefError
from triqdef.reporting.report import CLAIMS, build_report

CPU = load_config(profile="cpu")



def _row(text: str, where: str = "", contains: str = "") -> str:
    """A claim's line of REPORT's first table (found by the start of its "where | claim" cells, or by a text in it)
    together with its section below (the full figures and every interval)."""
    for line in text.splitlines():
        if not line.startswith("| ["):
            continue
        rest = line.split("|", 2)[2]
        if (where and rest.startswith(" " + where[2:])) or (contains and contains in line):
            number = line.split("](#claim-")[1].split(")")[0]
            section = text.split(f'<a id="claim-{number}"></a>', 1)[1].split("<a id=", 1)[0].split("## Pipeline time")[0]
            return line + "\n" + section
    raise AssertionError(f"no claim row for {where or contains!r}")

def test_missing_results_are_not_measured(tmp_path):
    text = build_report(tmp_path)
    out_of_scope = text.count("**not reproduced**")
    assert out_of_scope == 1 and text.count("**not measured**") == len(CLAIMS) - out_of_scope


def _table1_store(path, rates: dict, n=500, patches=None, info=None):
    """A Table 1 outcome store at ``path``: ``rates`` maps (attack, model, bits) to each patch's exact rate (or a list
    of per-patch rates); 10 seen patches per attack (``patches``: {attack: count})."""
    from helpers import outcome_rows, outcome_store_of

    from triqdef.eval import outcome_store

    parts = [outcome_rows(m, "seen", a, b, r if isinstance(r, list) else [r] * (patches or {}).get(a, 10), 7, n=n,
                          exact=True, first_id=100 if a == "gap" else 0) for (a, m, b), r in rates.items()]
    outcome_store.write(outcome_store_of(parts), path, info=info or {"patch_size": 12})


def _table1_rates(fp, q8, q4, q2, attacks=("lavan", "gap")):
    return {(a, m, b): r for a in attacks for (m, b), r in
            ((("FP", 32), fp), (("Standard QAT", 8), q8), (("Standard QAT", 4), q4), (("Standard QAT", 2), q2))}


def test_table1_claim_reads_its_outcome_store(tmp_path):
    _table1_store(tmp_path / "outcomes" / "table1.parquet", _table1_rates(0.8, 0.72, 0.7, 0.7))
    row = _row(build_report(tmp_path), "| §2, Table 1")
    assert "[paper's size] LAVAN 80.0 / 72.0 / 70.0 / 70.0" in row and "keeps 88 %" in row and "**holds**" in row
    _table1_store(tmp_path / "outcomes" / "table1.parquet", _table1_rates(0.8, 0.2, 0.2, 0.2))
    row = _row(build_report(tmp_path), "| §2, Table 1")
    assert "**does not hold**" in row


def _timed_stage(results, name, metrics, created=None):
    import json

    (results / "metrics" / name).parent.mkdir(parents=True, exist_ok=True)
    (results / "metrics" / f"{name}.json").write_text(json.dumps(metrics))
    if created:
        (results / "metadata" / name).parent.mkdir(parents=True, exist_ok=True)
        (results / "metadata" / f"{name}.json").write_text(json.dumps({"created": created}))


def _reference(results, *entries):
    import json

    (results / "bench").mkdir(parents=True, exist_ok=True)
    (results / "bench" / "reference_log.jsonl").write_text(
        "".join(json.dumps({"median_ms": ms, "measured_at": at}) + "\n" for at, ms in entries))


def test_pipeline_time_section_sums_the_recorded_stage_times_in_reference_steps(tmp_path):
    _timed_stage(tmp_path, "train_fp", {"wall_time_s": 100.0, "stage_wall_time_s": 120.0}, "2026-12-01T10:00:00+00:00")
    _timed_stage(tmp_path, "motivation", {"notebook_wall_time_s": 60.0}, "2026-12-01T11:00:00+00:00")
    _timed_stage(tmp_path, "defenses/pbat", {"stage_wall_time_s": 8820.0}, "2026-11-27T10:00:00+00:00")
    _timed_stage(tmp_path, "train_qat_all_layers", {"skipped": True, "reason": "budget"})
    text = build_report(tmp_path, CPU)
    assert "Total **150.0 min**; no reference measured" in text and "**not checkable** here" in text
    assert "| defenses/pbat | 2026-11-27 10:00 | 8820 |" in text and "skipped: budget" in text
    # 180 s at 600 ms (same session) + 8,820 s at 700 ms (2 days away, marked †) = 300 + 12,600 reference steps
    _reference(tmp_path, ("2026-12-01T10:30:00+00:00", 600.0), ("2026-11-29T10:00:00+00:00", 700.0))
    text = build_report(tmp_path, CPU)
    assert "Total **150.0 min** = **12,900 reference steps**" in text and "14,000 reference steps: **within**" in text
    assert "1 stage(s) converted with a reference measured more than 6 h" in text
    assert "| train_fp | 2026-12-01 10:00 | 120 | 600 | 1 | 200 |" in text
    assert "| defenses/pbat | 2026-11-27 10:00 | 8820 | 700 † | 1 | 12,600 | reference 2.0 days from the run |" in text
    _timed_stage(tmp_path, "patches", {"wall_time_s": 720.0}, "2026-12-01T10:40:00+00:00")   # +1,200 steps
    assert "14,000 reference steps: **over**" in build_report(tmp_path, CPU)
    _reference(tmp_path, ("2026-12-01", 600.0), ("2026-11-27T10:00:00+00:00", 700.0))   # a date alone: marked too
    assert "| train_fp | 2026-12-01 10:00 | 120 | 600 † | 1 | 200 | reference of that day, time not recorded |" in \
        build_report(tmp_path, CPU)
    # one measurement slowed by another job among its neighbours does not set the conversion: the median of those
    # within 2 h of the stage's end does (600, 610, 3,600 -> 610); further ones are left out
    _reference(tmp_path, ("2026-12-01T09:00:00+00:00", 600.0), ("2026-12-01T10:05:00+00:00", 3600.0),
               ("2026-12-01T11:30:00+00:00", 610.0), ("2026-12-01T13:00:00+00:00", 5000.0))
    assert "| train_fp | 2026-12-01 10:00 | 120 | 610 | 3 | 197 |" in build_report(tmp_path, CPU)


def test_a_notebook_stage_ends_at_its_provenance_start_plus_its_wall_time(tmp_path):
    """A notebook's metadata holds only its provenance, stamped as the notebook starts: the stage's end, which picks
    the reference measurements that convert it, is that start plus the notebook's wall time."""
    import json

    from triqdef.reporting.report import stage_times

    _timed_stage(tmp_path, "train_fp", {"stage_wall_time_s": 120.0}, "2026-12-01T10:00:00+00:00")
    (tmp_path / "metrics" / "stq.json").write_text(json.dumps({"notebook_wall_time_s": 5400.0}))
    (tmp_path / "metadata" / "stq.json").write_text(json.dumps({"provenance": {"created": "2026-12-01T10:00:00+00:00"}}))
    (tmp_path / "metrics" / "odd.json").write_text(json.dumps({"notebook_wall_time_s": 60.0}))
    (tmp_path / "metadata" / "odd.json").write_text(json.dumps({"provenance": {"created": "not a time"}}))
    t = stage_times(tmp_path).set_index("stage")
    assert t.loc["train_fp", "created"] == "2026-12-01T10:00:00+00:00"   # a stage's own: its end already
    assert t.loc["stq", "created"] == "2026-12-01T11:30:00+00:00"
    assert t.loc["odd", "created"] == ""
    # the end decides the conversion: 1,000 ms measured 30 min after the notebook's end, 9,000 ms 3 h after its start
    _reference(tmp_path, ("2026-12-01T12:00:00+00:00", 1000.0), ("2026-12-01T07:00:00+00:00", 9000.0))
    assert "| stq | 2026-12-01 11:30 | 5400 | 1,000 | 1 | 5,400 |" in build_report(tmp_path, CPU)


def test_reference_log_refuses_a_line_that_is_not_a_measurement(tmp_path):
    from triqdef.eval.reference import read_log

    (tmp_path / "log.jsonl").write_text('{"median_ms": 600, "measured_at": "2026-12-01"}\n{"median_ms": 0}\n')
    with pytest.raises(TriqdefError, match=r"log.jsonl, line 2: expected a reference measurement"):
        read_log(tmp_path / "log.jsonl")


def test_save_table_formats_columns_on_their_own(tmp_path):
    """A per-column float format keeps a ratio's decimals (Table 17's 1.44×) while other columns show one."""
    import pandas as pd

    from triqdef.reporting.tables import save_table

    df = pd.DataFrame({"method": ["QAT", "TriQDef"], "ms": [941.04, 1358.25], "time ×": [1.0, 1.443]})
    paths = save_table(df, "t", {"profile": "cpu"}, directory=tmp_path, floatfmt={"time ×": ".2f"})
    md = paths["md"].read_text()
    assert "1.44" in md and "1358.2" in md and "1358.25" not in md
    assert pd.read_csv(paths["csv"])["time ×"].tolist() == [1.0, 1.443]


def _table7_store(path, rates: dict, n=300, heterogeneous=None):
    """A Table 7 outcome store at ``path``: each model's 10 unseen LAVAN patches at 32 and 2 bits, the same patches
    (and the same hit draws, so that equal rates give equal outcomes) for every model."""
    from helpers import outcome_rows, outcome_store_of

    from triqdef.eval import outcome_store

    parts = [outcome_rows(m, "unseen_bits2", "lavan", b, (heterogeneous or {}).get(m, [r] * 10), 7, n=n)
             for m, r in rates.items() for b in (32, 2)]
    outcome_store.write(outcome_store_of(parts), path, info={"patch_size": 12})


def test_a_claim_whose_run_the_profile_leaves_out_says_so(tmp_path):
    from triqdef.reporting import schemas as S

    _table7_store(tmp_path / "outcomes" / "table7.parquet", {S.FULL: 0.05})
    row = _row(build_report(tmp_path), "| App. D (speed)")
    assert "not run in this profile" in row and "every_step_full_res" in row and "**not measured**" in row


def test_table7_verdict_comes_from_the_outcome_store_at_the_matched_size(tmp_path):
    """Table 7's verdict is recomputed from its outcome stores (no table at all): inconclusive where full TriQDef and
    the ablations are alike (the paper's size), holds where full TriQDef is clearly lowest (the matched size), and the
    matched size is the verdict's regime."""
    from triqdef.reporting import schemas as S

    _table7_store(tmp_path / "outcomes" / "table7.parquet", {S.NO_FDP: 0.1, S.NO_GPDP: 0.1, S.FULL: 0.1})
    row = _row(build_report(tmp_path), "| §4.5, Table 7 | removing")
    assert "**inconclusive at this sample size**" in row and "paper regime (" in row and "10 patches" in row
    _table7_store(tmp_path / "outcomes" / "table7_matched.parquet", {S.NO_FDP: 0.4, S.NO_GPDP: 0.3, S.FULL: 0.05})
    row = _row(build_report(tmp_path), "| §4.5, Table 7 | removing")
    assert "**holds**" in row and "[12×12, matched size]" in row


@pytest.mark.parametrize("full,slow,verdict", [(0.1, 0.1, "holds"), (0.4, 0.05, "does not hold"),
                                               ("spread", "spread", "inconclusive at this sample size")])
def test_speed_settings_verdict_comes_from_the_paired_interval(tmp_path, full, slow, verdict):
    """'The speed settings do not change the result': holds when the paired interval of full minus full without
    them lies inside +-5 points, does not hold when it excludes 0, inconclusive otherwise (here: equal means, but
    patches that disagree, so the interval is wide)."""
    from triqdef.reporting import schemas as S

    spread = {S.FULL: [0.0, 0.4] * 5, S.FULL_SLOW: [0.4, 0.0] * 5} if full == "spread" else None
    _table7_store(tmp_path / "outcomes" / "table7_matched.parquet", {S.FULL: full, S.FULL_SLOW: slow},
                  n=100, heterogeneous=spread)
    row = _row(build_report(tmp_path), "| App. D (speed)")
    assert f"**{verdict}**" in row, row


def _claim(statement, verdict, value=1.0, low=0.5, high=1.5, claim="higher than 0", **extra):
    return dict(statement=statement, value=value, low=low, high=high, claim=claim, n_images=1000, n_patches=20,
                n_boot=2000, verdict=verdict, **extra)


def test_table1_verdict_and_figures_come_from_the_matched_store_when_there_is_one(tmp_path):
    """The paper's size says 'holds'; the matched-size store, when there is one, decides and gives the figures
    (labelled with its size); a matched store that says its regime is absent leaves the paper's size."""
    from triqdef.eval import outcome_store

    _table1_store(tmp_path / "outcomes" / "table1.parquet", _table1_rates(0.8, 0.72, 0.7, 0.7))
    _table1_store(tmp_path / "outcomes" / "table1_matched.parquet", _table1_rates(0.9, 0.9, 0.8, 0.2),
                  info={"patch_size": 12, "regime": "matched"})
    row = _row(build_report(tmp_path), "| §2, Table 1")
    assert "**does not hold**" in row and "[12×12, matched size] LAVAN 90.0 / 90.0 / 80.0 / 20.0" in row
    assert "Intervals, matched regime (decides)" in row and "Intervals, paper regime:" in row
    outcome_store.write(outcome_store.empty(), tmp_path / "outcomes" / "table1_matched.parquet",
                        info={"regime": "matched", "absent": "no matched regime"})
    row = _row(build_report(tmp_path), "| §2, Table 1")
    assert "**holds**" in row and "[paper's size] LAVAN 80.0" in row


@pytest.mark.parametrize("tq,pb,verdict", [(["holds", "holds"], ["holds", "does not hold"], "holds"),
                                           (["holds", "does not hold"], ["holds", "holds"], "does not hold"),
                                           (["holds", "holds"], ["does not hold", "does not hold"], "does not hold"),
                                           (["holds", "inconclusive at this sample size"], ["holds", "holds"],
                                            "inconclusive at this sample size")])
def test_unseen_rise_needs_triqdef_marginal_everywhere_and_pbat_large_somewhere(tq, pb, verdict):
    from triqdef.reporting.report import _marginal_rise_verdict

    claims = ([_claim(f"{b} TriQDef GAP unseen − seen ASR (points)", v) for b, v in zip(("4-bit", "2-bit"), tq)]
              + [_claim(f"{b} PBAT GAP unseen − seen ASR (points)", v) for b, v in zip(("4-bit", "2-bit"), pb)])
    assert _marginal_rise_verdict(claims) == verdict


@pytest.mark.parametrize("direction,size,verdict", [("holds", "holds", "holds"), ("holds", "does not hold", "partly"),
                                                    ("does not hold", "holds", "does not hold"),
                                                    ("inconclusive at this sample size", "does not hold", "does not hold"),
                                                    ("holds", "at the noise floor", "at the noise floor"),
                                                    ("holds", "inconclusive at this sample size",
                                                     "inconclusive at this sample size")])
def test_a_reduction_claim_needs_its_direction_and_its_size(direction, size, verdict):
    """'TriQDef lowers unseen ASR by over 40 %': the paired 'lower' intervals and the 'TriQDef − 0.6 × PBAT'
    intervals, both in the matched regime when it exists."""
    from triqdef.reporting.report import _direction_and_size

    text, got = _direction_and_size("ours", {"matched": (direction, "m-dir"), "paper": ("holds", "p-dir")},
                                    {"matched": (size, "m-size")})
    assert got == verdict and text.startswith("ours. 95% CI: ") and "m-dir; m-size" in text and "p-dir" in text


@pytest.mark.parametrize("q2, verdict", [(0.9, "holds"), (0.4, "does not hold"),
                                         ([0.4, 1.0] * 5, "inconclusive at this sample size")])
def test_qadt_r_transfer_claim_is_decided_on_the_2bit_interval_against_70(tmp_path, q2, verdict):
    """QADT-R's "over 70 % ASR at 2 bits": the 95 % interval of Table 1's 2-bit rate (studentised over patches),
    every attack, from the store."""
    rates = _table1_rates(0.9, 0.9, 0.9, 0.9)
    rates[("lavan", "Standard QAT", 2)] = q2
    _table1_store(tmp_path / "outcomes" / "table1.parquet", rates)
    line = _row(build_report(tmp_path), contains="over 70 % ASR at 2 bits")
    mean = 100 * (sum(q2) / len(q2) if isinstance(q2, list) else q2)
    assert f"LAVAN {mean:.1f} [" in line and "10 patches per attack" in line and f"**{verdict}**" in line, line


def test_table13_with_the_default_setting_alone_is_not_measured(tmp_path):
    """A profile that trains no sensitivity variant has nothing to rank: not a trivial 'holds'."""
    import numpy as np
    from test_stage_tables import _robust_store

    from triqdef.eval import outcome_store

    full = {("full", b): np.ones((10, 50), dtype=bool) for b in (32, 2)}
    outcome_store.write(_robust_store(full), tmp_path / "outcomes" / "table13_matched.parquet", info={"regime": "matched"})
    line = _row(build_report(tmp_path), "| App. C, Table 13")
    assert "**not measured**" in line and "no sensitivity variant" in line


@pytest.mark.parametrize("correct,n", [(0, 10), (3, 10), (1730, 2000), (2000, 2000), (1, 1)])
def test_wilson_interval_matches_scipy(correct, n):
    from scipy.stats import binomtest

    from triqdef.reporting.report import wilson_interval

    ref = binomtest(correct, n).proportion_ci(0.95, method="wilson")
    assert wilson_interval(correct, n) == pytest.approx((ref.low, ref.high), abs=1e-7)


def test_the_committed_reports_first_screen_reads_on_a_screen():
    """REPORT's first table (built from the committed results) has one short line per claim (issue 29, item 8: no
    cell over 200 characters) and a section for each, linked from it."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    text = build_report(results)
    rows = [line for line in text.splitlines() if line.startswith("| [")]
    assert len(rows) == len(CLAIMS)
    assert max(len(cell) for line in rows for cell in line.split("|")) <= 200
    assert all(f'<a id="claim-{n}"></a>' in text for n in range(1, len(CLAIMS) + 1))


def test_fewer_than_ten_patches_decide_nothing_unless_enough_patches_already_fail(tmp_path):
    """The patch floor (docs/design.md#interval-coverage): a verdict resting on an interval over 4 patches reads
    'too few patches to decide'; a 'does not hold' stands when an interval over 10 patches already fails."""
    from triqdef.reporting.report import patch_floor

    few = dict(n_patches=4, verdict="does not hold")
    enough_fails = dict(n_patches=10, verdict="does not hold")
    enough_holds = dict(n_patches=10, verdict="holds")
    assert patch_floor("does not hold", [few, enough_holds]) == "too few patches to decide"
    assert patch_floor("does not hold", [few, enough_fails]) == "does not hold"
    assert patch_floor("holds", [few, enough_holds]) == "too few patches to decide"
    assert patch_floor("holds", [enough_holds]) == "holds"
    assert patch_floor("partly", [few]) == "partly"
    assert patch_floor("holds", [dict(n_patches=1, verdict="holds")]) == "holds"   # an accuracy


def test_the_forest_plot_draws_every_deciding_interval(tmp_path):
    from triqdef.reporting.report import evaluate_claims, forest_evidence
    from triqdef.reporting.forest import COLOURS, forest

    rates = _table1_rates(0.8, 0.8, 0.8, 0.2, attacks=("lavan",))
    rates.update({("gap", m, b): 0.6 for m, b in (("FP", 32), ("Standard QAT", 8), ("Standard QAT", 4),
                                                  ("Standard QAT", 2))})
    _table1_store(tmp_path / "outcomes" / "table1_matched.parquet", rates, patches={"gap": 4},
                  info={"patch_size": 12, "regime": "matched"})
    rows = evaluate_claims(tmp_path)
    evidence = [e for e in forest_evidence(rows) if e.claim_number == 1]
    assert [(e.statement.split()[0], e.verdict) for e in evidence] == [("GAP", "too few patches to decide"),
                                                                       ("LAVAN", "does not hold")]
    assert evidence[1].oriented()[0] == pytest.approx(20.0 - 0.7 * 80.0)   # "higher than 0": the value itself
    fig = forest(evidence, {1: "Table 1"})
    drawn = [line.get_color() for line in fig.axes[0].get_lines()
             if len(line.get_xdata()) == 2 and line.get_color() in (*COLOURS.values(), "#7f7f7f")]
    assert drawn == [COLOURS["too few patches to decide"], COLOURS["does not hold"]]


def test_int8_claim_is_decided_from_its_outcome_store_alone(tmp_path):
    """Issue 32's REPORT row, from results/outcomes/int8.parquet alone: per model and set, ASR int8 − fake on the
    same patches and the images eligible on both runtimes; every set within ±2 points holds, one clearly outside
    does not (Holm over the one-sided claims), a small sample is inconclusive."""
    from helpers import outcome_rows, outcome_store_of

    from triqdef.eval import outcome_store

    def store(fake, int8, n=1000, patches=10, seed_int8=1):
        frame = outcome_store_of([outcome_rows("TriQDef · fake", "seen", "lavan", 8, [fake] * patches, 1, n=n),
                                  outcome_rows("TriQDef · int8", "seen", "lavan", 8, [int8] * patches, seed_int8, n=n)])
        outcome_store.write(frame, tmp_path / "outcomes" / "int8.parquet", info={"regime": "matched", "patch_size": 12})

    store(0.5, 0.5)   # the same draws: a difference of exactly 0
    row = _row(build_report(tmp_path), contains="holds on the int8 runtime")
    assert "**holds**" in row and "[12×12, matched size] TriQDef ASR int8 − fake seen +0.00 points" in row
    assert "Holm over 2 one-sided comparisons" in row
    store(0.5, 0.6, seed_int8=2)
    assert "**does not hold**" in _row(build_report(tmp_path), contains="holds on the int8 runtime")
    store(0.5, 0.51, n=40, seed_int8=2)
    assert "**inconclusive at this sample size**" in _row(build_report(tmp_path), contains="holds on the int8 runtime")


def test_table6_claim_is_decided_from_its_outcome_store_alone(tmp_path):
    """Section 4.4 (Table 6) from results/outcomes/table6.parquet alone: robust accuracy (the patched prediction is
    the true class, every image counted), TriQDef against each preprocessing defense named in the store's info."""
    import numpy as np

    from helpers import outcome_rows, outcome_store_of

    from triqdef.eval import outcome_store

    def rows(model, bits, fooled, seed):   # patched_pred = label except on a share ``fooled`` of the images
        frames = outcome_rows(model, "seen", "lavan", bits, [0.0] * 10, seed, n=1000)
        rng = np.random.default_rng(seed)
        for f in frames:
            wrong = rng.random(len(f)) < fooled
            f.loc[wrong, "patched_pred"] = (f.loc[wrong, "label"] + 1) % 10
        return frames

    jedi = "Jedi-style + TriQDef"
    store = outcome_store_of([rows("TriQDef", 32, 0.1, 1), rows("TriQDef", 2, 0.2, 2), rows(jedi, 32, 0.5, 3),
                              rows(jedi, 2, 0.6, 4)])
    outcome_store.write(store, tmp_path / "outcomes" / "table6.parquet",
                        info={"regime": "matched", "patch_size": 12, "preprocessing": [jedi]})
    row = _row(build_report(tmp_path), contains="Table 6")
    assert "**holds**" in row and "[12×12, matched size] robust accuracy under seen LAVAN (32-bit / 2-bit)" in row
    assert f"TriQDef 89.9 / 79.7; {jedi} 49.7 / 40.3" in row   # 1 − the share fooled, as drawn
    store = outcome_store_of([rows("TriQDef", 32, 0.5, 1), rows("TriQDef", 2, 0.2, 2), rows(jedi, 32, 0.1, 3),
                              rows(jedi, 2, 0.6, 4)])   # TriQDef below the preprocessing at 32 bits
    outcome_store.write(store, tmp_path / "outcomes" / "table6.parquet",
                        info={"regime": "matched", "patch_size": 12, "preprocessing": [jedi]})
    assert "**does not hold**" in _row(build_report(tmp_path), contains="Table 6")


def test_a_sections_method_line_names_the_method_of_the_intervals_it_read():
    """A claim declared with percentile intervals whose deciding intervals are studentised ('t') says so: the
    "Method" line follows the intervals; without a method on them, the claim's declaration stands."""
    from triqdef.reporting.report import METHOD_NOTES, STUDENTISED_NOTE, Row, _method, _section

    claim = next(c for c in CLAIMS if c.method == "percentile")
    entry = dict(regime="matched", statement="s", value=10.0, low=5.0, high=15.0, direction="higher", margin=70.0,
                 verdict="does not hold", n_images=500, n_patches=10, method="t")
    row = Row(4, claim, "ours", "does not hold", [entry])
    assert _method(row) == "studentised"
    assert any(STUDENTISED_NOTE in line for line in _section(row, "cpu"))
    assert _method(Row(4, claim, "ours", "does not hold", [dict(entry, method=None)])) == "percentile"
    mixed = [entry, dict(entry, method="percentile")]
    assert _method(Row(4, claim, "ours", "does not hold", mixed)) == claim.method
    assert set(METHOD_NOTES) >= {"studentised", "percentile"}
