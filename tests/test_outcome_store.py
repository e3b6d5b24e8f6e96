"""The outcome store (triqdef.eval.outcome_store): Parquet round trip, bad stores, rates and common-image pairing."""

import numpy as np
import pandas as pd
import pytest

from triqdef.errors import TriqdefError
from triqdef.eval import outcome_store as store
from triqdef.eval.intervals import bootstrap_rate


def _frame(model="qat", n_images=40, targets=(0, 1, 2), seed=0, rng_seed=0, bits=32, correct_share=0.8):
    """One patch per target on ``n_images`` images; labels cycle over the classes."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    labels = np.arange(n_images) % 10
    clean = np.where(rng.random(n_images) < correct_share, labels, (labels + 1) % 10)
    for p, t in enumerate(targets):
        patched = np.where(rng.random(n_images) < 0.4, t, clean)
        for i in range(n_images):
            rows.append(dict(model=model, seed=seed, bits=bits, attack="lavan", set="seen", patch_id=p, target=t,
                             loc_y=3, loc_x=5, image_id=i, label=int(labels[i]), clean_pred=int(clean[i]),
                             patched_pred=int(patched[i])))
    return pd.DataFrame(rows)


def test_round_trip_and_rates(tmp_path):
    frame = _frame()
    path = store.write(frame, tmp_path / "outcomes" / "seen.parquet")
    back = store.read(path)
    pd.testing.assert_frame_equal(back, store.validate(frame))
    o = store.outcomes(back, model="qat", attack="lavan")
    assert o.hits.shape == (3, 40)
    # the rate by hand: per patch, hits among clean-correct images not of the target class
    rates = []
    for t in (0, 1, 2):
        rows = frame[frame.target == t]
        elig = (rows.clean_pred == rows.label) & (rows.label != t)
        rates.append((rows.patched_pred[elig] == t).mean())
    assert o.rate() == pytest.approx(np.mean(rates))
    assert bootstrap_rate(o, n_boot=200).n_patches == 3
    assert [p.name for p in path.parent.iterdir()] == ["seen.parquet"]   # no temporary file left


def test_robust_outcomes_count_every_image():
    """Robust accuracy (Tables 6 and 13): the patched prediction is the true class, over every image, eligible or
    not; the same as triqdef.eval.robustness.robust_outcomes reads from the records."""
    from triqdef.eval.robustness import robust_outcomes as from_records

    frame = _frame(n_images=50, correct_share=0.7)
    o = store.robust_outcomes(frame, model="qat")
    assert o.eligible.all() and o.hits.shape == (3, 50)
    by_hand = [(frame[frame.target == t].patched_pred == frame[frame.target == t].label).to_numpy() for t in (0, 1, 2)]
    assert np.array_equal(o.hits, np.stack(by_hand))
    records = pd.DataFrame({"hits_fooling": [~h for h in by_hand]})   # what transfer_records keeps: patched != label
    assert np.array_equal(from_records(records).hits, o.hits)
    with pytest.raises(TriqdefError, match="no outcomes for"):
        store.robust_outcomes(frame, model="pbat")


def test_paired_comparison_uses_common_images_only():
    a = _frame("qat", rng_seed=1, correct_share=0.8)
    b = _frame("triqdef", rng_seed=2, correct_share=0.6)
    pair = store.paired(pd.concat([a, b]), {"model": "qat"}, {"model": "triqdef"})
    assert pair.a.hits.shape == pair.b.hits.shape == (3, 40)
    assert np.array_equal(pair.a.eligible, pair.b.eligible)
    for t, row in zip((0, 1, 2), pair.a.eligible):
        ea = (a[a.target == t].clean_pred == a[a.target == t].label).to_numpy() & (np.arange(40) % 10 != t)
        eb = (b[b.target == t].clean_pred == b[b.target == t].label).to_numpy() & (np.arange(40) % 10 != t)
        assert np.array_equal(row, ea & eb)
        assert pair.common_per_target[t] == int((ea & eb).sum())
    assert 0 < pair.n_common < 40


def test_paired_by_target_not_by_position():
    a = _frame("qat", targets=(0, 1, 2))
    b = _frame("triqdef", targets=(2, 1, 5))          # another order, one target unshared
    pair = store.paired(pd.concat([a, b]), {"model": "qat"}, {"model": "triqdef"})
    assert sorted(pair.common_per_target) == [1, 2] and pair.a.hits.shape[0] == 2


@pytest.mark.parametrize("mutate,needle", [
    (lambda f: f.drop(columns=["target", "label"]), "lacks column(s) target, label"),
    (lambda f: f.assign(bits=f.bits.astype(float)), "column bits is float64, expected integers"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "repeat a (model, seed, bits, attack, set, patch_id, image_id)"),
])
def test_a_bad_store_is_refused_and_nothing_is_written(tmp_path, mutate, needle):
    path = tmp_path / "bad.parquet"
    with pytest.raises(TriqdefError) as exc:
        store.write(mutate(_frame()), path)
    assert needle in str(exc.value) and "\n" not in str(exc.value) and str(path) in str(exc.value)
    assert not list(tmp_path.iterdir())


def test_reading_a_missing_corrupt_or_foreign_file(tmp_path):
    with pytest.raises(TriqdefError, match="not found"):
        store.read(tmp_path / "none.parquet")
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    with pytest.raises(TriqdefError, match="unreadable") as exc:
        store.read(corrupt)
    assert "\n" not in str(exc.value)
    foreign = tmp_path / "foreign.parquet"
    _frame().drop(columns=["clean_pred"]).to_parquet(foreign)
    with pytest.raises(TriqdefError, match="lacks column.s. clean_pred"):
        store.read(foreign)


def test_comparisons_without_common_images_or_pairs_are_errors():
    a = _frame("qat", correct_share=1.0)
    b = _frame("triqdef", correct_share=0.0)          # gets every image wrong: nothing eligible on both sides
    with pytest.raises(TriqdefError, match="no common images") as exc:
        store.paired(pd.concat([a, b]), {"model": "qat"}, {"model": "triqdef"})
    assert "model=qat" in str(exc.value) and "model=triqdef" in str(exc.value)
    with pytest.raises(TriqdefError, match="no .seed, target. in common"):
        store.paired(pd.concat([a, _frame("pbat", targets=(7,))]), {"model": "qat"}, {"model": "pbat"})
    with pytest.raises(TriqdefError, match="no outcomes for model=dwq"):
        store.paired(a, {"model": "qat"}, {"model": "dwq"})
    with pytest.raises(TriqdefError, match="selection by colour"):
        store.select(a, colour="red")
    two = pd.concat([a, a.assign(patch_id=a.patch_id + 10)])
    with pytest.raises(TriqdefError, match="several patches"):
        store.paired(pd.concat([two, b]), {"model": "qat"}, {"model": "triqdef"})
