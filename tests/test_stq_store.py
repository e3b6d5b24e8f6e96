"""Stage ``stq``'s outcome store (issue 29, item 1): the STQ claims recomputed from it alone, paired on the same
images, the distillation claim decided familywise over the three white-box attacks."""

import numpy as np
import pandas as pd
import pytest

from triqdef.eval import outcome_store
from triqdef.eval.accuracy_claims import one_sided_normal_p
from triqdef.errors import TriqdefError
from triqdef.stages import stq

N, N_ATTACKED = 400, 100


def _rows(model, attack, labels, clean, attacked):
    return pd.DataFrame({"model": model, "seed": 0, "bits": 32, "attack": attack,
                         "set": "clean" if attack == "none" else "whitebox", "patch_id": 0, "target": -1,
                         "loc_y": -1, "loc_x": -1, "image_id": np.arange(len(labels)), "label": labels,
                         "clean_pred": clean, "patched_pred": attacked})


def _store(clean_acc: dict, robust_acc: dict, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, N)
    wrong = lambda ok: np.where(ok, labels[: len(ok)], (labels[: len(ok)] + 1) % 10)
    frames = []
    for model, acc in clean_acc.items():
        clean = wrong(rng.random(N) < acc)
        frames.append(_rows(model, "none", labels, clean, clean))
        for attack in stq.WHITE_BOX:
            kept = rng.random(N_ATTACKED) < robust_acc.get(model, 0.1)
            frames.append(_rows(model, attack, labels[:N_ATTACKED], clean[:N_ATTACKED], wrong(kept)))
    return pd.concat(frames, ignore_index=True)


def test_claims_and_rates_come_from_the_store_alone(tmp_path):
    store = _store({"STQ": 0.6, "FP (tiny)": 0.5, "STQ-T1": 0.55, "STQ-T50": 0.55}, {"STQ-T50": 0.5, "STQ-T1": 0.05})
    path = outcome_store.write(store, tmp_path / "stq.parquet", info={"memory_kb": {"STQ": 242.0, "FP (tiny)": 3729.0}})
    back = outcome_store.read(path)
    claims = stq.stq_claims(back)
    assert [c["statement"].split(",")[0] for c in claims] == ["clean accuracy", "FGSM robust accuracy",
                                                               "PGD robust accuracy", "CW robust accuracy"]
    assert claims[0]["n_common"] == N and all(c["n_common"] == N_ATTACKED for c in claims[1:])
    rates = stq.rates(back)
    # robust accuracy counts an image only when it is correct clean *and* under the attack
    rows = back[(back["model"] == "STQ-T50") & (back["attack"] == "pgd")]
    robust = ((rows["clean_pred"] == rows["label"]) & (rows["patched_pred"] == rows["label"])).mean()
    assert rates.loc["STQ-T50", "pgd"] == pytest.approx(100 * robust)
    assert claims[2]["value"] == pytest.approx(rates.loc["STQ-T50", "pgd"] - rates.loc["STQ-T1", "pgd"])
    assert all(c["verdict"] == "holds" and c["p_holds"] < 0.025 for c in claims[1:])


def test_report_reads_the_stq_claims_from_the_store(tmp_path):
    from triqdef.reporting.report import build_report

    store = _store({"STQ": 0.6, "FP (tiny)": 0.5, "STQ-T1": 0.55, "STQ-T50": 0.55}, {"STQ-T50": 0.5, "STQ-T1": 0.05})
    outcome_store.write(store, tmp_path / "outcomes" / "stq.parquet", info={"memory_kb": {"STQ": 242.0, "FP (tiny)": 3729.0}})
    text = build_report(tmp_path)
    row = lambda needle: next(ln for ln in text.splitlines() if ln.startswith("| [") and needle in ln)
    assert "memory 242 vs 3729 KB" in row("tiny stochastic-ternary") and "**holds**" in row("defensive distillation")
    assert "familywise: Holm over 3" in text


def test_missing_view_and_bad_claim_side_are_refused_in_one_line():
    store = _store({"STQ": 0.6, "FP (tiny)": 0.5}, {})
    with pytest.raises(TriqdefError, match="no rows for STQ-T50 under fgsm"):
        stq.stq_claims(store)
    with pytest.raises(TriqdefError, match="expected 'lower' or 'higher'"):
        one_sided_normal_p(0.1, 0.01, "above")


def test_normal_p_values_read_as_the_interval_does():
    """At 2.5 % each one-sided p-value says what the 95 % normal interval says."""
    p_holds, p_fails = one_sided_normal_p(0.05, 0.02, "higher", 0.0)    # z = 2.5: holds
    assert p_holds < 0.025 < p_fails and p_holds + p_fails == pytest.approx(1)
    assert one_sided_normal_p(0.05, 0.02, "lower", 0.0) == (p_fails, p_holds)
    assert np.isnan(one_sided_normal_p(0.05, 0.0, "higher")[0])
