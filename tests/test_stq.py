"""STQ (triqdef.stq): the ternary quantizer and quantized ReLU, TinySTQNet and its footprint, defensive
distillation, Jacobian regularisation, and bad input."""

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef.config import TrainParams
from triqdef.errors import TriqdefError
from triqdef.stq.distillation import (DistillationLoss, DistillationStep, TemperatureStep, distillation_loss,
                                      soft_labels)
from triqdef.stq.jacobian import (JacobianStep, exact_jacobian_frobenius_sq, jacobian_frobenius_sq,
                                  random_projections)
from triqdef.stq.model import (LUMA_WEIGHTS, Grayscale, TinySTQNet, build_stq, memory_footprint_kb,
                               parameter_count, storage_bits, stq_from_checkpoint)
from triqdef.stq.quantizers import (QuantizedReLU, StochasticTernaryQuantizer, TernaryConv2d, TernaryLinear,
                                    keep_probability, quantized_relu, ternarize, ternary_scale, ternary_threshold)
from triqdef.training.loop import fit

TINY = dict(widths=(4, 8, 8), hidden=(16, 8))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models run on one thread


# --------------------------------------------------------------------------- ternary weights

def test_threshold_and_scale_follow_the_twn_rule():
    w = torch.tensor([0.1, -0.5, 1.0, -2.0, 0.05, 0.0])
    mean_abs = (0.1 + 0.5 + 1.0 + 2.0 + 0.05) / 6
    delta = ternary_threshold(w)
    assert delta.item() == pytest.approx(0.7 * mean_abs)  # 0.42583...
    alpha = ternary_scale(w, delta)
    assert alpha.item() == pytest.approx((0.5 + 1.0 + 2.0) / 3)  # the weights above Δ: -0.5, 1.0, -2.0
    q = ternarize(w)  # deterministic: α · sign(w) · [|w| > Δ]
    a = alpha.item()
    assert q.tolist() == pytest.approx([0.0, -a, a, -a, 0.0, 0.0])
    assert torch.equal(ternarize(torch.zeros(5)), torch.zeros(5))  # no weight above Δ: α = 0


@pytest.mark.parametrize("rounding", [None, "unbiased", "sigmoid"])
def test_ternary_values_are_minus_alpha_zero_alpha(rounding):
    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    alpha = ternary_scale(w, ternary_threshold(w))
    q = ternarize(w, torch.Generator().manual_seed(1) if rounding else None, rounding or "unbiased")
    levels = torch.stack([-alpha, torch.zeros(()), alpha])
    assert set(q.unique().tolist()) <= set(levels.tolist())
    assert (q[q != 0].sign() == w[q != 0].sign()).all()  # never rounded across zero


def test_stochastic_rounding_is_unbiased_between_neighbouring_levels():
    w = torch.tensor([0.05, -0.2, 0.4, -0.7, 0.9, 1.6, -3.0, 0.0])
    reps = 4000  # a repeated tensor keeps mean|w|, Δ and α: every copy is one independent draw
    q = ternarize(w.repeat(reps), torch.Generator().manual_seed(0)).view(reps, -1)
    alpha = ternary_scale(w, ternary_threshold(w)).item()
    expected = w.clamp(-alpha, alpha)  # unbiased inside [-α, α]; beyond it the outer level
    assert (w.abs() <= alpha).sum() >= 5  # most of the test weights are in the unbiased range
    se = (alpha * w.abs().clamp(max=alpha) - expected**2).clamp_min(0).sqrt() / math.sqrt(reps)
    assert ((q.mean(0) - expected).abs() <= 4 * se + 1e-6).all(), (q.mean(0), expected)


def test_sigmoid_rounding_is_random_only_near_the_threshold():
    w = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    delta = ternary_threshold(w)
    p = keep_probability(w, "sigmoid", 8.0)
    std = w.std(unbiased=False)
    assert torch.allclose(p, torch.sigmoid(8.0 * (w.abs() - delta) / std))
    far = (w.abs() - delta).abs() > std  # a standard deviation away from Δ: practically deterministic
    assert ((p[far] > 0.999) | (p[far] < 0.001)).all()
    q = ternarize(w, torch.Generator().manual_seed(1), rounding="sigmoid")
    assert torch.equal(q[far], ternarize(w)[far])  # there it rounds as inference does
    sharp = ternarize(w, torch.Generator().manual_seed(1), rounding="sigmoid", temperature=1e6)
    assert (sharp != ternarize(w)).float().mean() < 0.002  # the deterministic limit is the inference rounding
    assert torch.allclose(keep_probability(w), (w.abs() / ternary_scale(w, delta)).clamp(max=1))
    with pytest.raises(TriqdefError, match="ternary rounding"):
        build_stq(True, rounding="nearest", **TINY)
    with pytest.raises(TriqdefError, match="temperature"):
        StochasticTernaryQuantizer(rounding="sigmoid", temperature=0)


def test_quantizer_is_deterministic_in_eval_and_reproducible_in_training():
    layer = TernaryConv2d(3, 4, 3, seed=7)
    x = torch.rand(2, 3, 8, 8)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    assert torch.equal(layer.quantized_weight(), ternarize(layer.weight))
    assert int(layer.weight_quantizer.draws) == 0  # eval forwards draw nothing
    layer.train()
    first, second = layer.quantized_weight(), layer.quantized_weight()
    assert not torch.equal(first, second) and int(layer.weight_quantizer.draws) == 2
    replay = copy.deepcopy(layer)
    replay.weight_quantizer.draws.zero_()  # the draw counter is state: resetting it replays the draws
    assert torch.equal(replay.quantized_weight(), first)
    assert "weight_quantizer.draws" in layer.state_dict()
    other_seed = TernaryConv2d(3, 4, 3, seed=8)
    other_seed.load_state_dict({k: v for k, v in layer.state_dict().items()})
    other_seed.weight_quantizer.draws.zero_()
    assert not torch.equal(other_seed.quantized_weight(), first)


def test_eval_weights_are_cached_until_the_weights_change():
    layer = TernaryLinear(6, 4, seed=0).eval()
    first = layer.quantized_weight()
    assert layer.quantized_weight() is not None and torch.equal(layer.quantized_weight(), first)
    opt = torch.optim.SGD(layer.parameters(), lr=10.0)
    (layer(torch.rand(3, 6)) ** 2).sum().backward()
    opt.step()  # an in-place update: the cache must not serve the old values
    assert torch.equal(layer.quantized_weight(), ternarize(layer.weight))
    assert not torch.equal(layer.quantized_weight(), first)
    other = TernaryLinear(6, 4, seed=0)
    layer.load_state_dict(other.state_dict())
    assert torch.equal(layer.quantized_weight(), ternarize(other.weight))
    eight = TernaryLinear(6, 4, weight_bits=8).eval()
    eight.quantized_weight()
    with torch.no_grad():
        eight.weight.mul_(-1)
    from triqdef import quant

    assert torch.equal(eight.quantized_weight(), quant.quantize_weight(eight.weight, 8))


@pytest.mark.parametrize("stochastic", [False, True])
def test_weight_gradient_is_straight_through(stochastic):
    q = StochasticTernaryQuantizer(seed=0, stochastic=stochastic).train()
    w = torch.randn(5, 6, requires_grad=True)
    g = torch.randn(5, 6)
    (q(w) * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_eight_bit_layers_use_per_channel_uniform_weights():
    from triqdef import quant

    lin = TernaryLinear(6, 3, weight_bits=8).eval()
    assert torch.equal(lin.quantized_weight(), quant.quantize_weight(lin.weight, 8))
    assert lin.scale_count() == 3 and TernaryLinear(6, 3).scale_count() == 1


def test_quantized_relu_grid_clip_and_gradient():
    x = torch.tensor([-0.3, 0.0, 0.02, 0.5, 0.95, 0.97, 1.4], requires_grad=True)
    y = quantized_relu(x, 4)
    assert y.tolist() == pytest.approx([0.0, 0.0, 0.0, 0.5, 15 / 16, 15 / 16, 15 / 16])
    assert ((y * 16) == (y * 16).round()).all() and y.max() < 1
    y.sum().backward()
    # as QKeras: ReLU's zero at and below 0, straight-through on (0, 1] (0.97 rounds to 16/16, clipped to 15/16,
    # and still passes the gradient), zero above 1
    assert x.grad.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    x2 = torch.tensor([0.3, 0.8], requires_grad=True)  # double backprop: the gradient is linear in the upstream one
    (g,) = torch.autograd.grad((quantized_relu(x2, 4) * x2).sum(), x2, create_graph=True)
    g.sum().backward()
    assert x2.grad.tolist() == [2.0, 2.0]
    assert QuantizedReLU(8)(torch.tensor([0.3])).item() == pytest.approx(round(0.3 * 256) / 256)


@pytest.mark.parametrize("bad", [0, 17, 2.5, True])
def test_bad_activation_bits_are_refused(bad):
    with pytest.raises(TriqdefError, match="quantized ReLU bits"):
        QuantizedReLU(bad)


@pytest.mark.parametrize("bad", [1, 33, "2"])
def test_bad_weight_bits_are_refused(bad):
    with pytest.raises(TriqdefError, match="STQ weight bits"):
        TernaryConv2d(3, 4, 3, weight_bits=bad)


# --------------------------------------------------------------------------- the model

@pytest.mark.parametrize("quantized", [False, True])
def test_forward_shapes_and_layers(quantized):
    torch.manual_seed(0)
    model = build_stq(quantized, **TINY)
    out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sum(c.groups > 1 for c in convs) == 3  # the depthwise layer and the two separable ones' depthwise parts
    assert len([m for m in model.modules() if isinstance(m, nn.Linear)]) == 3
    if quantized:
        assert model.conv1.weight_bits == 8 and model.fc3.weight_bits == 8 and model.act1.bits == 8
        assert model.conv2.weight_bits == 2 and model.fc1.weight_bits == 2 and model.act2.bits == 4
    rebuilt = TinySTQNet(**model.config())
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_output_depends_only_on_luma():
    torch.manual_seed(0)
    model = build_stq(False, **TINY).eval()
    x = 0.25 + 0.5 * torch.rand(2, 3, 32, 32)
    w = torch.tensor(LUMA_WEIGHTS)
    d = torch.tensor([w[1], -w[0], 0.0])  # orthogonal to the luma weights
    shifted = x + 0.2 * d.view(1, 3, 1, 1) * torch.rand(2, 1, 32, 32)
    assert (shifted - x).abs().max() > 0.05 and 0 <= shifted.min() and shifted.max() <= 1
    assert torch.allclose(Grayscale()(shifted), Grayscale()(x), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(model(shifted), model(x), atol=1e-4)
    gray = x.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    assert torch.allclose(Grayscale()(gray), gray[:, :1] * w.sum(), atol=1e-6)


def test_bad_model_arguments_are_refused():
    with pytest.raises(TriqdefError, match="widths"):
        build_stq(True, widths=(4, 8), hidden=(16, 8))
    with pytest.raises(TriqdefError, match="hidden"):
        build_stq(False, widths=(4, 8, 8), hidden=(16, 0))
    with pytest.raises(TriqdefError, match="expected RGB"):
        build_stq(False, **TINY)(torch.rand(2, 1, 32, 32))


def test_memory_footprint_counts_bits_per_stored_value():
    net = nn.Sequential(TernaryConv2d(2, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                        TernaryLinear(8, 10, weight_bits=8))
    bits = storage_bits(net)
    assert bits["0"] == 72 * 2 + 32           # 72 ternary weights, one float32 α
    assert bits["1"] == 4 * 4 * 32            # BN weight, bias, running mean and variance
    assert bits["2"] == (16 + 4) * 32         # full-precision conv weight and bias
    assert bits["3"] == 80 * 8 + 10 * 32 + 10 * 32  # 8-bit weights, a scale per output row, the bias
    assert memory_footprint_kb(net) == pytest.approx(sum(bits.values()) / 8 / 1024)


def test_default_widths_are_at_the_papers_scale():
    torch.manual_seed(0)
    fp, stq = build_stq(False), build_stq(True)
    assert parameter_count(fp) == parameter_count(stq)
    assert 0.5 * 998_000 <= parameter_count(fp) <= 1.5 * 998_000
    assert 0.5 * 4496 <= memory_footprint_kb(fp) <= 1.5 * 4496
    assert memory_footprint_kb(stq) < memory_footprint_kb(fp) / 10  # the paper: 410 against 4,496 KB


# --------------------------------------------------------------------------- distillation

def test_distillation_loss_is_the_soft_cross_entropy():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[4.0, 0.0, 1.0], [2.0, 2.0, -2.0]])
    T = 2.5
    by_hand = []
    for si, ti in zip(s.tolist(), t.tolist()):
        p = [math.exp(v / T) for v in ti]
        p = [v / sum(p) for v in p]
        log_q = [v / T - math.log(sum(math.exp(u / T) for u in si)) for v in si]
        by_hand.append(-sum(a * b for a, b in zip(p, log_q)))
    assert distillation_loss(s, t, T).item() == pytest.approx(sum(by_hand) / 2, rel=1e-6)
    assert distillation_loss(s, t, T, reduction="none").tolist() == pytest.approx(by_hand, rel=1e-6)
    assert distillation_loss(s, t, T, t_squared=True).item() == pytest.approx(T * T * sum(by_hand) / 2, rel=1e-6)
    assert DistillationLoss(T, reduction="sum")(s, t).item() == pytest.approx(sum(by_hand), rel=1e-6)
    assert torch.allclose(soft_labels(t, T), F.softmax(t / T, 1))
    # at T = 1 on one-hot-like teachers it is the cross-entropy
    assert distillation_loss(s, 1e4 * F.one_hot(torch.tensor([1, 2]), 3).float(), 1.0).item() == pytest.approx(
        F.cross_entropy(s, torch.tensor([1, 2])).item(), rel=1e-5)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), True, "50"])
def test_non_positive_temperature_is_refused(bad):
    with pytest.raises(TriqdefError, match=r"distillation temperature T=.*: expected a number > 0"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), bad)
    with pytest.raises(TriqdefError, match="distillation temperature"):
        TemperatureStep(bad)


def test_temperature_and_distillation_steps():
    torch.manual_seed(0)
    teacher, student = build_stq(False, **TINY), build_stq(True, **TINY)
    x, y = torch.rand(6, 3, 32, 32), torch.arange(6) % 10
    teacher.train()
    rec = TemperatureStep(50)(teacher, x, y, 0)
    assert set(rec) == {"loss", "acc"} and all(p.grad is not None for p in teacher.parameters())
    teacher.zero_grad(set_to_none=True)
    before = copy.deepcopy(teacher.state_dict())
    step = DistillationStep(teacher, 50)
    loss, logits, _ = step.loss(student, x, y, 0)
    with torch.no_grad():
        expected = distillation_loss(logits, teacher.eval()(x), 50)
    teacher.train()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    rec = step(student, x, y, 1)
    assert set(rec) == {"loss", "acc", "agreement"}
    assert all(p.grad is None for p in teacher.parameters()) and teacher.training  # untouched, mode restored
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # no BN update either
    assert all(p.grad is not None for p in student.parameters())


# --------------------------------------------------------------------------- Jacobian regularisation

def test_exact_jacobian_matches_autograd_and_the_linear_closed_form():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.randn(3, 3, 2, 2)
    exact = exact_jacobian_frobenius_sq(lin, x)
    assert torch.allclose(exact, lin[1].weight.pow(2).sum().expand(3), rtol=1e-5)  # J = W for every image
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 5))
    ref = torch.stack([torch.autograd.functional.jacobian(lambda v: mlp(v[None])[0], xi).pow(2).sum() for xi in x])
    assert torch.allclose(exact_jacobian_frobenius_sq(mlp, x), ref, rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_projection_estimate_converges_to_the_exact_frobenius_norm(kind):
    torch.manual_seed(0)
    if kind == "linear":
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 10))
    x0 = torch.randn(4, 3, 2, 2)
    exact = exact_jacobian_frobenius_sq(model, x0).mean()
    x = x0.repeat(500, 1, 1, 1).requires_grad_(True)  # 500 copies x 4 projections: 2,000 draws per image
    est = jacobian_frobenius_sq(model(x), x, n_projections=4, generator=torch.Generator().manual_seed(0))
    assert est.item() == pytest.approx(exact.item(), rel=0.04)
    x1 = x0.clone().requires_grad_(True)  # orthogonal projections, as many as classes: exact
    ortho = jacobian_frobenius_sq(model(x1), x1, n_projections=10, generator=torch.Generator().manual_seed(1),
                                  orthogonal=True)
    assert ortho.item() == pytest.approx(exact.item(), rel=1e-5)


def test_random_projections_are_unit_vectors_and_orthonormal_when_asked():
    v = random_projections(3, 5, 7, torch.Generator().manual_seed(0))
    assert v.shape == (7, 3, 5) and torch.allclose(v.norm(dim=2), torch.ones(7, 3))
    o = random_projections(3, 5, 5, torch.Generator().manual_seed(0), orthogonal=True)
    gram = torch.einsum("pic,qic->ipq", o, o)
    assert torch.allclose(gram, torch.eye(5).expand(3, 5, 5), atol=1e-5)


def test_jacobian_step_adds_half_lambda_times_the_estimate():
    torch.manual_seed(0)
    model = build_stq(True, **TINY).eval()  # eval: no stochastic draws, the same function in every call
    x, y = torch.rand(4, 3, 32, 32), torch.arange(4)

    def grads(step_fn):
        model.zero_grad(set_to_none=True)
        rec = step_fn(model, x, y, 3)
        return rec, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]

    rec0, g0 = grads(JacobianStep(0.0, seed=1))
    rec_ce, g_ce = grads(TemperatureStep(1.0))
    assert all(torch.allclose(a, b) for a, b in zip(g0, g_ce)) and rec0["total"] == pytest.approx(rec_ce["loss"])
    rec1, g1 = grads(JacobianStep(0.5, n_projections=2, seed=1))
    rec2, g2 = grads(JacobianStep(0.5, n_projections=2, seed=1))
    assert rec1 == rec2 and all(torch.equal(a, b) for a, b in zip(g1, g2))  # depends on (seed, step) only
    assert rec1["jr"] > 0 and rec1["total"] == pytest.approx(rec1["loss"] + 0.25 * rec1["jr"], rel=1e-5)
    assert any(not torch.allclose(a, b) for a, b in zip(g0, g1))  # the regulariser has a gradient


@pytest.mark.parametrize("kwargs,match", [({"lambda_jr": -1.0}, "lambda_jr"), ({"lambda_jr": 0.1, "n_projections": 0},
                                                                              "n_projections")])
def test_bad_jacobian_settings_are_refused(kwargs, match):
    with pytest.raises(TriqdefError, match=match):
        JacobianStep(**kwargs)


def test_steps_train_through_fit_and_resume_exactly(tmp_path):
    """Teacher at T, then a distilled student with JR, through training.loop.fit; the stochastic quantizers'
    draws are part of the checkpoint, so an interrupted student run ends where an uninterrupted one does."""
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(32) % 10
    cfg = TrainParams(steps=4, batch_size=8, lr=0.05, schedule="onecycle", checkpoint_every=2, momentum=0.9,
                      weight_decay=0.0, nesterov=False, milestones=(0.5, 0.75), pct_start=0.25, label_smoothing=0.0,
                      augment=False)
    torch.manual_seed(0)
    teacher = build_stq(False, **TINY)
    fit(teacher, images, labels, cfg, seed=0, out_path=tmp_path / "t.pt", meta={"kind": "stq-teacher"},
        work_dir=tmp_path / "wt", progress=False, step_fn=TemperatureStep(50))

    def student_run(out: str, stop_after=None):
        torch.manual_seed(1)
        student = build_stq(True, **TINY)
        step = JacobianStep(0.01, seed=0, base=DistillationStep(teacher, 50))
        r = fit(student, images, labels, cfg, seed=0, out_path=tmp_path / out,
                meta={"kind": "stq-student", **({"stq": student.config()} if out == "b.pt" else {})},
                work_dir=tmp_path / f"w{out}", progress=False, step_fn=step, stop_after=stop_after)
        return student, r

    straight, r = student_run("a.pt")
    with pytest.raises(TriqdefError, match="no 'stq' entry"):
        stq_from_checkpoint(tmp_path / "a.pt")  # saved without the model's config
    assert {"loss", "acc", "agreement", "jr", "total"} <= set(r["history"][0])
    assert int(straight.conv2.weight_quantizer.draws) == 4  # one draw per training forward
    student_run("b.pt", stop_after=2)
    resumed, _ = student_run("b.pt")
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    loaded, meta = stq_from_checkpoint(tmp_path / "b.pt")
    assert not loaded.training and meta["stq"] == resumed.config()
    assert all(torch.equal(v, b[k]) for k, v in loaded.state_dict().items())


def test_scaling_by_temperature_keeps_the_gradient_at_the_t1_scale():
    """T · CE(z / T, y) has the logit gradient softmax(z / T) − y (the plain loss's divided by T); the logged
    loss stays the plain CE."""
    import torch.nn.functional as F

    from triqdef.stq.distillation import TemperatureStep

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    T = 50.0
    plain, logits, rec = TemperatureStep(T).loss(model, x, y, 0)
    scaled, _, rec_scaled = TemperatureStep(T, scale_by_T=True).loss(model, x, y, 0)
    torch.testing.assert_close(scaled, plain * T)
    assert rec["loss"] == pytest.approx(rec_scaled["loss"])
    z = logits.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(T * F.cross_entropy(z / T, y), z)
    torch.testing.assert_close(g, (F.softmax(z / T, 1) - F.one_hot(y, 4)) / len(y))


def test_the_student_at_temperature_t_scaled_by_t_has_the_t1_gradient_scale():
    """T · softCE(s, t; T): logit gradient softmax(s / T) − softmax(t / T) (over the batch); the log keeps the plain loss."""
    import torch.nn.functional as F

    from triqdef.stq.distillation import DistillationStep

    torch.manual_seed(1)
    teacher, student = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    x, y, T = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0]), 50.0
    plain, logits, rec = DistillationStep(teacher, T).loss(student, x, y, 0)
    scaled, _, rec_scaled = DistillationStep(teacher, T, scale_by_T=True).loss(student, x, y, 0)
    torch.testing.assert_close(scaled, plain * T)
    assert rec["loss"] == pytest.approx(rec_scaled["loss"])
    z = logits.detach().requires_grad_(True)
    with torch.no_grad():
        t = teacher(x)
    (g,) = torch.autograd.grad(T * -(F.softmax(t / T, 1) * F.log_softmax(z / T, 1)).sum(1).mean(), z)
    torch.testing.assert_close(g, (F.softmax(z / T, 1) - F.softmax(t / T, 1)) / len(y))
