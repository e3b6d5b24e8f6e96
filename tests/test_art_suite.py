"""The ART attack suite (triqdef.eval.art_suite): every attack runs on a tiny model with tiny budgets and returns
well-formed results (the smoke profile's acceptance item), budgets and bad settings are checked."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("art")

from triqdef import quant  # noqa: E402
from triqdef.errors import TriqdefError  # noqa: E402
from triqdef.eval.art_suite import (ATTACKS, BLACK_BOX, EPS, ZooSettings, art_classifier,  # noqa: E402
                                    attack_settings, robust_accuracy)
from triqdef.stq.model import build_stq  # noqa: E402

TINY_BUDGETS = {
    "fgsm": {},
    "pgd": {"max_iter": 3},
    "cw": {"max_iter": 3, "initial_const": 0.1, "const_factor": 10.0, "decrease_factor": 0.2},
    "square": {"max_iter": 10},
    "boundary": {"max_iter": 2, "num_trial": 2, "sample_size": 3, "init_size": 8},
    "zoo": {"max_iter": 3, "nb_parallel": 8},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models run on one thread


def _brightness_data(n: int, seed: int = 0):
    """Grey images whose class (of 4) is their brightness."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = ((0.1 + 0.25 * y.float())[:, None, None, None] + 0.05 * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    return x, y


def _trained_tiny(quantized: bool):
    """A tiny TinySTQNet trained to tell the brightness classes apart (STQ: ternary / 8-bit weights, 4-bit
    activations)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = _brightness_data(32)
    torch.manual_seed(0)
    model = build_stq(quantized, widths=(4, 8, 8), hidden=(16, 16), stochastic=False)
    opt = torch.optim.Adam(model.parameters(), 0.01)
    for _ in range(50):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    torch.set_num_threads(n)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_stq():
    return _trained_tiny(True)


@pytest.fixture(scope="module")
def images(tiny_stq):
    x, _ = _brightness_data(4, seed=1)
    with torch.no_grad():
        y = tiny_stq(x).argmax(1)  # its own predictions as labels: every image starts correct
    return x, y


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_runs_on_a_tiny_model(tiny_stq, images, attack):
    x, y = images
    r = robust_accuracy(tiny_stq, x, y, attack, TINY_BUDGETS[attack], seed=0, n_boot=200)
    for t in (r.correct, r.clean_correct, r.unbounded_correct):
        assert t.dtype == torch.bool and t.shape == (4,)
    assert r.clean_correct.all() and not (r.correct & ~r.clean_correct).any()
    assert r.linf.shape == (4,) and (r.linf >= 0).all() and (r.linf <= 1).all()
    if attack in ("fgsm", "pgd", "square"):  # the ε-bounded attacks stay in the ball by themselves
        assert (r.linf <= EPS + 1e-6).all() and torch.equal(r.correct, r.unbounded_correct)
    assert 0 <= r.robust.low <= r.robust.value <= r.robust.high <= 1
    assert r.robust.value == pytest.approx(r.correct.float().mean().item()) and r.robust.n_images == 4
    assert r.clean.value == 1.0 and r.budget > 0 and r.evaluations_per_image > 0
    assert torch.equal(r.clean_correct, r.clean_pred == y) and torch.equal(r.correct, r.clean_correct & (r.adv_pred == y))
    if attack in BLACK_BOX:
        assert r.budget_unit == "queries" and r.evaluations_per_image <= r.budget
    record = r.as_record()
    assert record["attack"] == attack and record["n_images"] == 4 and record["settings"] == r.settings
    assert not tiny_stq.training


@pytest.mark.parametrize("attack", ["pgd", "square", "boundary"])
def test_attacks_are_reproducible_from_the_seed(tiny_stq, images, attack):
    x, y = images
    a = robust_accuracy(tiny_stq, x, y, attack, TINY_BUDGETS[attack], seed=3, n_boot=200)
    b = robust_accuracy(tiny_stq, x, y, attack, TINY_BUDGETS[attack], seed=3, n_boot=200)
    assert torch.equal(a.correct, b.correct) and torch.equal(a.linf, b.linf)


def test_a_large_budget_fools_the_model_and_the_projection_bounds_it(tiny_stq, images):
    x, y = images
    fp = _trained_tiny(False)  # the tiny STQ's saturated 4-bit units can pass no input gradient at all
    with torch.no_grad():
        y_fp = fp(x).argmax(1)
    strong = robust_accuracy(fp, x, y_fp, "pgd", {"eps": 0.2, "eps_step": 0.05, "max_iter": 10}, n_boot=200)
    assert strong.clean.value == 1.0 and strong.robust.value < 1.0
    # a minimum-distortion attack far outside the ball: its projection is evaluated, its raw output kept apart
    far = robust_accuracy(tiny_stq, x, y, "boundary", {**TINY_BUDGETS["boundary"], "eps": 1e-3}, n_boot=200)
    assert (far.linf > 1e-3).all() and not far.unbounded_correct.any() and far.correct.all()


def test_classifier_runs_the_model_at_the_requested_bit_width(tiny_stq):
    torch.manual_seed(0)
    fp = build_stq(False, widths=(4, 8, 8), hidden=(16, 16))
    x, _ = _brightness_data(8)
    q = quant.quantize_model(fp, [32, 4])
    quant.calibrate(q, [x], 4)
    q.eval()
    clf = art_classifier(q, bits=4)
    with torch.no_grad(), quant.use_bitwidth(q, 4):
        expected = q(x).numpy()
    assert np.allclose(clf.predict(x.numpy()), expected, atol=1e-5)
    assert q.triqdef_active_bits == 32  # restored after each call
    assert clf.model.evaluations == 8
    with pytest.raises(TriqdefError, match="not switchable-precision"):
        art_classifier(tiny_stq, bits=4)


def test_unknown_attack_is_refused_with_the_known_names(tiny_stq, images):
    with pytest.raises(TriqdefError, match="unknown ART attack 'hopskipjump': expected one of fgsm, pgd, cw, square, "
                                           "boundary, zoo"):
        robust_accuracy(tiny_stq, *images, "hopskipjump")


@pytest.mark.parametrize("attack,key", [("square", "max_iter"), ("boundary", "init_size"), ("boundary", "sample_size"),
                                        ("zoo", "nb_parallel"), ("pgd", "max_iter"), ("cw", "max_iter")])
def test_negative_budget_is_refused(attack, key):
    with pytest.raises(TriqdefError, match=rf"ART {attack} {key}=-5: expected an integer >= \d"):
        attack_settings(attack, {key: -5})


def test_bad_settings_are_refused(tiny_stq, images):
    with pytest.raises(TriqdefError, match="unknown setting"):
        attack_settings("square", {"queries": 10})
    with pytest.raises(TriqdefError, match="expected SquareSettings"):
        attack_settings("square", ZooSettings())
    with pytest.raises(TriqdefError, match="eps"):
        attack_settings("fgsm", {"eps": 0})
    with pytest.raises(TriqdefError, match="zoo batch_size"):
        attack_settings("zoo", {"batch_size": 4})
    with pytest.raises(TriqdefError, match="labels"):
        robust_accuracy(tiny_stq, images[0], images[1][:2], "fgsm")
    with pytest.raises(TriqdefError, match=r"\[0, 1\]"):
        robust_accuracy(tiny_stq, images[0] * 3, images[1], "fgsm")


def test_uint8_images_are_accepted(tiny_stq, images):
    x, y = images
    r = robust_accuracy(tiny_stq, (x * 255).round().to(torch.uint8), y, "fgsm", n_boot=200)
    assert r.n_images == 4
