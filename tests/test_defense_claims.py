"""Table 5's comparisons and claims from its outcome store (issue 29, items 1, 2, 5, 7): common images, pairing,
the noise floor, Holm."""

import numpy as np
import pandas as pd
import pytest

from triqdef.errors import TriqdefError
from triqdef.eval import defense_claims as D
from triqdef.eval import outcome_store
from triqdef.eval.intervals import FAILS, HOLDS, INCONCLUSIVE, holm_verdict
from helpers import outcome_rows as _rows, outcome_store_of as _store

N = 1500


def test_claims_decide_rises_white_box_and_reductions_from_the_store():
    parts = []
    for k, (model, seen, unseen, wb, noise) in enumerate(((D.TRIQDEF, 0.2, 0.2, 0.1, 0.0), (D.PBAT, 0.2, 0.5, 0.6, 0.0),
                                                          (D.DWQ, 0.3, 0.3, 0.7, 0.0))):
        parts += [_rows(model, "seen", D.GAP, 4, [seen] * 10, 1),
                  _rows(model, "unseen_bits2", D.GAP, 4, [unseen] * 10, 2),
                  _rows(model, "whitebox", D.LAVAN, 4, [wb] * 10, 3 + k, first_id=10 * k),  # its own patches
                  _rows(model, "noise", D.GAP, 4, [noise] * 10, 4)]
    store = _store(parts)
    claims = D.claims(store, n_boot=500)
    assert [c["topic"] for c in claims] == ["unseen_rise", "unseen_rise", "pbat_unseen", "whitebox", "whitebox",
                                            "seen_lowest_bits", "seen_lowest_bits"]
    by = {c["statement"]: c for c in claims}
    assert by["4-bit TriQDef GAP unseen − seen ASR (points)"]["verdict"] == HOLDS          # no rise: below 3
    assert by["4-bit PBAT GAP unseen − seen ASR (points)"]["verdict"] == HOLDS             # +30 > 15
    assert all(c["verdict"] == HOLDS and c["n_patches"] == 10 for c in claims if c["topic"] == "whitebox")
    # TriQDef 20 % vs PBAT 20 % and DWQ 30 %: neither "20 % below PBAT" nor "50 % below DWQ"
    assert [c["verdict"] for c in claims if c["topic"] == "seen_lowest_bits"] == [FAILS, FAILS]
    assert all(c["method"] == "t" and np.isfinite(c["p_fails"]) for c in claims)


def test_a_comparison_uses_only_the_images_both_models_classify_correctly():
    wrong = np.zeros(N, dtype=bool)
    wrong[: N // 3] = True
    store = _store([_rows(D.TRIQDEF, "seen", D.LAVAN, 4, [0.1] * 10, 1),
                    _rows(D.PBAT, "seen", D.LAVAN, 4, [0.3] * 10, 1, wrong=wrong)])
    comp = D.comparisons(store, pairs=[(D.TRIQDEF, D.PBAT)], groups=["seen"], n_boot=500)
    (row,) = comp.itertuples()
    assert row.n_images == N - N // 3 and row.verdict == HOLDS and row.n_patches == 10
    # no image correct on both: one line naming the comparison
    store = _store([_rows(D.TRIQDEF, "seen", D.LAVAN, 4, [0.1] * 10, 1),
                    _rows(D.PBAT, "seen", D.LAVAN, 4, [0.3] * 10, 1, wrong=np.ones(N, dtype=bool))])
    with pytest.raises(TriqdefError, match="no common images"):
        outcome_store.paired(store, {"model": D.TRIQDEF}, {"model": D.PBAT}, pair_by=outcome_store.SAME_PATCHES)
    # ... which a table of comparisons shows as an undecided row on 0 images (tiny smoke models at 2 bits)
    (row,) = D.comparisons(store, pairs=[(D.TRIQDEF, D.PBAT)], groups=["seen"], n_boot=500).itertuples()
    assert row.n_images == 0 and row.verdict == INCONCLUSIVE and np.isnan(row.difference)


def test_a_relative_claim_at_the_noise_floor_is_not_judged():
    def store(noise):
        return _store([_rows(m, s, D.LAVAN, 4, [r] * 10, k) for k, (m, s, r) in enumerate(
            [(D.TRIQDEF, "unseen_bits2", 0.04), (D.PBAT, "unseen_bits2", 0.12),
             (D.TRIQDEF, "noise", noise), (D.PBAT, "noise", noise)])])

    (red,) = [c for c in D.claims(store(0.0), n_boot=500) if c["topic"] == "unseen_reduction"]
    assert red["verdict"] == HOLDS                      # 4 % < 0.6 × 12 %, both far above a 0 % floor
    (red,) = [c for c in D.claims(store(0.04), n_boot=500) if c["topic"] == "unseen_reduction"]
    assert red["verdict"] == D.AT_FLOOR and "TriQDef not clearly above the random patch" in red["statement"]
    assert np.isnan(red["p_fails"]) and D.familywise([red]) == D.AT_FLOOR


def test_several_bit_widths_are_decided_familywise():
    assert holm_verdict([HOLDS, HOLDS], [0.9, 0.8]) == HOLDS
    # one of four comparisons on the wrong side at p = 0.02: Holm needs p <= 0.025 / 4
    assert holm_verdict([HOLDS, HOLDS, HOLDS, FAILS], [0.9, 0.9, 0.9, 0.02]) == INCONCLUSIVE
    assert holm_verdict([HOLDS, HOLDS, HOLDS, FAILS], [0.9, 0.9, 0.9, 0.001]) == FAILS
    assert holm_verdict([], []) == INCONCLUSIVE


def test_the_report_decides_table_5_from_the_outcome_store_alone(tmp_path):
    """No table at all: REPORT's Table 5 claims (and QADT-R's, which read Table 5) are recomputed from
    results/outcomes/table5_matched.parquet, with the common images and patches they rest on."""
    from triqdef.reporting import report

    parts, k = [], 0
    models = {D.TRIQDEF: 0.05, D.PBAT: 0.2, D.DWQ: 0.4, D.QADT_R: 0.1, D.STANDARD_QAT: 0.5}
    for model, r in models.items():
        for bits in (32, 4):
            for attack in (D.LAVAN, D.GAP):
                for set_, rate in (("seen", r), ("unseen_bits2", r * 1.2), ("noise", 0.0)):
                    k += 1
                    parts.append(_rows(model, set_, attack, bits, [rate] * 10, k, n=300))
            k += 1
            parts.append(_rows(model, "whitebox", D.LAVAN, bits, [min(1, 2 * r)] * 10, k, n=300))
            parts.append(_rows(model, "blackbox", D.PATCHATTACK, bits, [r] * 10, k + 1000, n=300))
    outcome_store.write(_store(parts), tmp_path / "outcomes" / "table5_matched.parquet",
                        info={"regime": "matched", "patch_size": 12, "patchattack_queries": {"mean": 10, "budget": 20}})
    rows = {r.number: r for r in report.evaluate_claims(tmp_path)}
    for number in (7, 13, 14, 15, 16, 22, 23):
        row = rows[number]
        assert row.verdict not in ("not measured", "not decided"), (number, row.ours)
        assert row.ours.startswith("[12×12, matched size]") and row.read, number
        assert all(e["n_patches"] >= 10 for e in row.read if e["n_patches"] > 1), number
    assert rows[16].verdict == "holds"                       # white-box: TriQDef 10 % against PBAT 40 %, DWQ 80 %
    assert rows[15].verdict == "holds" and "queries per patch" in rows[15].ours
    assert rows[7].verdict == "holds"                        # unseen 6 % against PBAT's 24 %: over 40 % lower
    # the comparisons say on how many common images they rest (eligible for both models under some patch)
    assert {e["n_images"] for e in rows[22].read} == {300}


def test_outcomes_cli_compares_from_a_store_and_refuses_bad_input(tmp_path, capsys):
    """`triqdef outcomes compare` computes a new comparison from a store alone; a store without its columns, two
    models with no common image and a coverage level outside (0, 1) each end with one error line, exit 2."""
    from triqdef import cli

    path = tmp_path / "s.parquet"
    outcome_store.write(_store([_rows(D.TRIQDEF, "seen", D.LAVAN, 4, [0.1] * 10, 1, n=200),
                                _rows(D.PBAT, "seen", D.LAVAN, 4, [0.5] * 10, 2, n=200)]), path)
    args = ["outcomes", "compare", str(path), "--a", "model=TriQDef,set=seen", "--b", "model=PBAT,set=seen",
            "--n-boot", "200"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert '"n_common_images": 200' in out and '"n_patches": 10' in out
    assert cli.main(args + ["--level", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "triqdef: error: --level 1.5: expected a coverage level in (0, 1), e.g. 0.95"
    wrong = tmp_path / "w.parquet"
    outcome_store.write(_store([_rows(D.TRIQDEF, "seen", D.LAVAN, 4, [0.1] * 10, 1, n=50),
                                _rows(D.PBAT, "seen", D.LAVAN, 4, [0.5] * 10, 2, n=50, wrong=np.ones(50, bool))]), wrong)
    assert cli.main(["outcomes", "compare", str(wrong), "--a", "model=TriQDef", "--b", "model=PBAT", "--n-boot", "200"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("triqdef: error: comparison between") and "no common images" in err[0]
    broken = tmp_path / "b.parquet"
    pd.DataFrame({"model": ["x"]}).to_parquet(broken)
    assert cli.main(["outcomes", "rate", str(broken), "--a", "model=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lacks column(s) seed, bits" in err[0]
