"""Bootstrap intervals (triqdef.eval.intervals): against scipy's bootstrap, coverage, pairing, verdicts."""

import numpy as np
import pytest
from scipy import stats

from triqdef.errors import TriqdefError
from triqdef.eval.intervals import (FAILS, HOLDS, INCONCLUSIVE, Outcomes, bootstrap_rate, difference,
                                    paired_difference, verdict)


def _outcomes(rates, n_images, seed, eligible_share=0.9):
    rng = np.random.default_rng(seed)
    hits = rng.random((len(rates), n_images)) < np.asarray(rates)[:, None]
    eligible = rng.random((len(rates), n_images)) < eligible_share
    return Outcomes(hits, eligible)


def test_one_patch_matches_scipys_percentile_bootstrap():
    """With one patch and every image eligible the two-way bootstrap is the ordinary one: scipy's percentile
    interval of a mean (another random stream: agreement within Monte-Carlo error)."""
    correct = np.random.default_rng(0).random(800) < 0.7
    ours = bootstrap_rate(Outcomes.accuracy(correct), n_boot=4000, seed=1)
    ref = stats.bootstrap((correct.astype(float),), np.mean, n_resamples=4000, method="percentile",
                          random_state=np.random.default_rng(2)).confidence_interval
    assert ours.value == pytest.approx(correct.mean())
    assert ours.low == pytest.approx(ref.low, abs=0.006) and ours.high == pytest.approx(ref.high, abs=0.006)
    assert ours.n_images == 800 and ours.n_patches == 1 and ours.n_eligible == 800


def test_the_patches_are_a_sample_too():
    """Patches of very different strength: resampling them widens the interval far beyond what the images
    alone give (a bootstrap over images only would call 4 patches a precise measurement)."""
    o = _outcomes([0.05, 0.2, 0.6, 0.9], 1000, seed=3)
    both = bootstrap_rate(o, seed=0)
    images_only = bootstrap_rate(Outcomes(o.hits[:1], o.eligible[:1]), seed=0)
    assert both.half_width > 3 * images_only.half_width
    assert both.low < o.rate() < both.high and both.n_patches == 4


def test_coverage_is_near_95_percent():
    """Patches whose true rates are drawn around 0.3: the interval covers the population mean in about 95 % of
    repeated experiments (200 experiments; a percentile bootstrap with 8 patches runs a little short)."""
    covered = 0
    for k in range(200):
        rng = np.random.default_rng(100 + k)
        rates = np.clip(rng.normal(0.3, 0.1, 8), 0, 1)
        o = _outcomes(rates, 300, seed=1000 + k, eligible_share=1.0)
        ci = bootstrap_rate(o, n_boot=500, seed=k)
        covered += ci.low <= 0.3 <= ci.high
    assert 0.85 <= covered / 200 <= 0.99


def test_paired_differences():
    a = _outcomes([0.3, 0.4, 0.5], 1000, seed=5)
    same = paired_difference(a, a, seed=0)
    assert same.value == 0 and same.low == 0 and same.high == 0
    # b: a's hits plus 10 % more images fooled on every patch: a small, consistent difference
    rng = np.random.default_rng(6)
    b = Outcomes(a.hits | (rng.random(a.hits.shape) < 0.1), a.eligible)
    diff = paired_difference(b, a, seed=0)
    unpaired_width = bootstrap_rate(b).half_width + bootstrap_rate(a).half_width
    assert diff.low > 0 and diff.half_width < unpaired_width / 3
    assert verdict(diff, "higher") == HOLDS and verdict(diff, "lower") == FAILS
    noisy = paired_difference(_outcomes([0.3, 0.4], 100, seed=7), _outcomes([0.3, 0.4], 100, seed=8), seed=0)
    assert noisy.low < 0 < noisy.high and verdict(noisy, "lower") == INCONCLUSIVE
    with pytest.raises(TriqdefError, match="same patches on the same images"):
        paired_difference(a, _outcomes([0.3], 1000, seed=1))


def test_rates_without_images_and_bad_input():
    empty = Outcomes(np.zeros((2, 5), bool), np.zeros((2, 5), bool))
    ci = bootstrap_rate(empty)
    assert np.isnan(ci.value) and ci.percent() == "–" and verdict(paired_difference(empty, empty), "lower") == INCONCLUSIVE
    o = _outcomes([0.5], 200, seed=1)
    assert bootstrap_rate(o).percent().count("±") == 1
    with pytest.raises(TriqdefError, match="n_boot=10"):
        bootstrap_rate(o, n_boot=10)
    with pytest.raises(TriqdefError, match="same shape"):
        Outcomes(np.zeros((2, 5), bool), np.zeros((2, 4), bool))
    with pytest.raises(TriqdefError, match="claim 'equal'"):
        verdict(bootstrap_rate(o), "equal")


def test_difference_of_two_patch_sets_on_the_same_images():
    """Two different patch sets (seen against unseen, or each model's own white-box patches): the images are drawn
    together, each set's patches on their own; same_patches=True is exactly the paired difference."""
    a = _outcomes([0.3, 0.4, 0.5], 1000, seed=5)
    b = _outcomes([0.6, 0.7], 1000, seed=9)
    assert difference(a, a, seed=3) == paired_difference(a, a, seed=3)
    with pytest.raises(TriqdefError, match="same patches"):
        difference(a, b)
    d = difference(a, b, seed=0, same_patches=False)
    assert d.value == pytest.approx(a.rate() - b.rate()) and d.low < d.value < d.high
    assert d.n_patches == 5 and d.n_images == 1000
    assert verdict(d, "lower") == HOLDS and verdict(d, "higher") == FAILS
    # the patches are a sample: with 3 and 2 patches a 30-point gap is still decided, a 5-point one is not
    close = difference(a, _outcomes([0.35, 0.45], 1000, seed=11), seed=0, same_patches=False)
    assert verdict(close, "lower") == INCONCLUSIVE
    with pytest.raises(TriqdefError, match="same images"):
        difference(a, _outcomes([0.3], 500, seed=1), same_patches=False)


def test_proportion_and_margin_claims():
    """``scale``: "a keeps at least 70 % of b"; ``margin``: "more than 20 points", "over 50 %"."""
    b = _outcomes([0.8, 0.85, 0.9], 2000, seed=1)
    a = Outcomes(b.hits & (np.random.default_rng(2).random(b.hits.shape) < 0.9), b.eligible)  # keeps ~90 % of b
    kept = difference(a, b, seed=0, scale=0.7)
    assert kept.value == pytest.approx(a.rate() - 0.7 * b.rate())
    assert verdict(kept, "higher") == HOLDS
    assert verdict(difference(a, b, seed=0, scale=0.95), "higher") == FAILS
    rate = bootstrap_rate(b, seed=0)  # ~85 %
    assert verdict(rate, "higher", margin=0.5) == HOLDS and verdict(rate, "higher", margin=0.95) == FAILS
    assert verdict(rate, "lower", margin=0.95) == HOLDS
    gap = difference(b, a, seed=0)  # ~8.5 points
    assert verdict(gap, "higher", margin=0.2) == FAILS and verdict(gap, "higher", margin=0.02) == HOLDS


def test_claim_evidence_reads_the_verdict_off_the_interval():
    from triqdef.eval.intervals import claim_evidence, claim_text

    rate = bootstrap_rate(_outcomes([0.8, 0.85, 0.9], 2000, seed=1), seed=0)
    e = claim_evidence("ASR over 50 %", rate, "higher", 0.5)
    assert e["verdict"] == HOLDS and e["claim"] == "higher than 50" and e["n_patches"] == 3
    assert e["low"] == pytest.approx(100 * rate.low) and e["n_images"] == 2000
    assert claim_text(e).startswith("ASR over 50 %: +") and claim_text(e).endswith(HOLDS)
    assert claim_evidence("ASR over 95 %", rate, "higher", 0.95)["verdict"] == FAILS
