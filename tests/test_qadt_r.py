"""QADT-R (triqdef.defenses.qadt_r): DBWT's cycles, A-QAPA's perturbed inner attack, GIR, determinism, bad input."""

import copy
from collections import Counter

import pytest
import torch

from helpers import calibrated_resnet20
from triqdef.attacks.signed_gradient import signed_gradient_steps
from triqdef.defenses.qadt_r import QADTRStep, dbwt_bitwidth, gradient_cosine, noisy_signed_steps
from triqdef.errors import TriqdefError


def test_dbwt_visits_every_bit_width_once_per_cycle_in_shuffled_orders():
    bits = [32, 8, 5, 4, 2]
    cycles = [[dbwt_bitwidth(bits, 0, c * 5 + i) for i in range(5)] for c in range(6)]
    assert all(Counter(c) == Counter(bits) for c in cycles)
    assert len({tuple(c) for c in cycles}) > 1  # shuffled anew, not one fixed order
    assert cycles == [[dbwt_bitwidth(bits, 0, c * 5 + i) for i in range(5)] for c in range(6)]


def test_without_noise_the_inner_attack_is_plain_signed_ascent():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4)

    def loss(p, k):
        return (w * p).sum() + (p**2).sum()

    start = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))
    plain = signed_gradient_steps(loss, start, 3, 0.1, (0, 1))
    ours = noisy_signed_steps(loss, start, 3, 0.1, 0.0, torch.Generator().manual_seed(2))
    assert torch.equal(plain, ours)
    noisy = noisy_signed_steps(loss, start, 3, 0.1, 5.0, torch.Generator().manual_seed(2))
    assert not torch.equal(plain, noisy) and 0 <= noisy.min() and noisy.max() <= 1


def test_gradient_cosine_bounds():
    a = torch.randn(4, 3, 8, 8)
    assert gradient_cosine(a, a).item() == pytest.approx(1.0, abs=1e-6)
    assert gradient_cosine(a, -a).item() == pytest.approx(-1.0, abs=1e-6)


def _step_grads(step_fn, model, x, y, step):
    model.zero_grad(set_to_none=True)
    rec = step_fn(model, x, y, step)
    return rec, [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_a_step_is_deterministic_trains_one_bit_width_and_gir_adds_a_gradient():
    model, x = calibrated_resnet20(bits=(32, 8, 4), n_images=8)
    model.train()
    y = torch.arange(8) % 10
    pool = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    step = QADTRStep([32, 8, 4], seed=0, pool=pool, attack_steps=2, gir_sub_batch=4)
    rec1, g1 = _step_grads(step, copy.deepcopy(model), x, y, 7)
    rec2, g2 = _step_grads(step, copy.deepcopy(model), x, y, 7)
    assert rec1 == rec2 and all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert rec1["bits"] == dbwt_bitwidth([32, 8, 4], 0, 7) and rec1["gir_other_bits"] != rec1["bits"]
    assert -1 <= rec1["gir"] <= 1 and all(torch.isfinite(g).all() for g in g1)
    no_gir = QADTRStep([32, 8, 4], seed=0, pool=pool, attack_steps=2, gir_sub_batch=4, lambda_gir=0.0)
    rec0, g0 = _step_grads(no_gir, copy.deepcopy(model), x, y, 7)
    assert rec0["loss_adv"] == rec1["loss_adv"]  # the same patches and bit-width; only GIR's gradient differs
    assert any(not torch.equal(a, b) for a, b in zip(g0, g1))


def test_gir_lowers_the_gradient_cosine_it_penalises():
    """A few steps of GIR alone (SGD on lambda_gir * cosine) lower the cosine between the two bit-widths' input
    gradients on the same images: the regulariser pushes in its stated direction."""
    from triqdef.defenses.qadt_r import input_gradient
    from triqdef import quant

    model, x = calibrated_resnet20(bits=(32, 4), n_images=8)
    y = torch.arange(8) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def cosine():
        with quant.eval_mode(model):
            return gradient_cosine(input_gradient(model, x, y, 32, True), input_gradient(model, x, y, 4, False))

    before = cosine().item()
    for _ in range(5):
        opt.zero_grad()
        cosine().backward()
        opt.step()
    assert cosine().item() < before


@pytest.mark.parametrize("kwargs,needle", [({"bits": [32]}, "at least two"), ({"rho": 1.5}, "rho"),
                                           ({"sigma": -1.0}, "sigma"), ({"attack_steps": -1}, "attack_steps"),
                                           ({"pool": None}, "training pool")])
def test_bad_settings_are_refused(kwargs, needle):
    args = {"bits": [32, 4], "seed": 0, "pool": torch.rand(2, 3, 6, 6), **kwargs}
    with pytest.raises(TriqdefError, match=needle):
        QADTRStep(args.pop("bits"), args.pop("seed"), args.pop("pool"), **args)
