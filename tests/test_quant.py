"""Quantizers against an independent integer reference (NumPy round-and-clip), not against torch's own ops."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.models import build_model


def numpy_weight_reference(w: np.ndarray, bits: int) -> np.ndarray:
    """Per-output-channel symmetric quantization, round half to even, signed restricted range."""
    qmax = 2 ** (bits - 1) - 1
    flat = w.reshape(w.shape[0], -1)
    scale = np.abs(flat).max(axis=1, keepdims=True) / qmax
    q = np.clip(np.rint(flat / scale), -qmax, qmax)
    return (q * scale).reshape(w.shape)


@pytest.mark.parametrize("bits", [8, 5, 4, 3, 2])
@pytest.mark.parametrize("shape", [(16, 3, 3, 3), (10, 64)])
def test_weight_quantizer_matches_numpy_reference(bits, shape, rng):
    w = torch.randn(*shape, generator=rng)
    got = quant.quantize_weight(w, bits).numpy()
    ref = numpy_weight_reference(w.numpy().astype(np.float64), bits)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # at most 2^b - 1 distinct levels per output channel
    for c in range(shape[0]):
        assert len(np.unique(got[c])) <= 2**bits - 1


def test_two_bit_weights_are_ternary_hand_computed():
    w = torch.tensor([[0.9, -0.3, 0.2, -0.5], [0.1, 0.04, -0.06, 0.0]])
    # channel 0: scale 0.9 -> round(w/0.9) = [1, -0.333->0, 0.222->0, -0.556->-1]
    # channel 1: scale 0.1 -> [1, 0.4->0, -0.6->-1, 0]
    expected = torch.tensor([[0.9, 0.0, 0.0, -0.9], [0.1, 0.0, -0.1, 0.0]])
    torch.testing.assert_close(quant.quantize_weight(w, 2), expected)


def test_32_bits_is_identity_and_bad_bits_rejected():
    w = torch.randn(4, 4)
    assert quant.quantize_weight(w, 32) is w
    for bad in (1, 0, 17, 33, "8", 8.0, True):
        with pytest.raises(TriqdefError, match="bit-width"):
            quant.quantize_weight(w, bad)


def test_weight_gradient_is_straight_through(rng):
    w = torch.randn(8, 5, generator=rng, requires_grad=True)
    g = torch.randn(8, 5, generator=rng)
    (quant.quantize_weight(w, 4) * g).sum().backward()
    torch.testing.assert_close(w.grad, g)


def test_activation_quantizer_matches_reference_and_clips(rng):
    q = quant.ActivationQuantizer(4)
    q.train()
    x = torch.rand(64, generator=rng) * 3.0
    q(x)  # first observation sets the range
    scale = q.observer.max_val.item() / 15
    y = torch.tensor([0.0, 0.4 * scale, 0.6 * scale, 7.2 * scale, 15 * scale, 40 * scale])
    q.eval()
    out = q(y).numpy()
    ref = np.clip(np.rint(y.numpy() / scale), 0, 15) * scale
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)
    # straight-through inside the range, zero gradient where clipped
    y.requires_grad_(True)
    q(y).sum().backward()
    assert y.grad.tolist() == [1, 1, 1, 1, 1, 0]


def test_observer_is_moving_average_and_frozen_in_eval():
    q = quant.ActivationQuantizer(8, averaging_constant=0.01).train()
    q(torch.tensor([0.0, 2.0]))
    q(torch.tensor([0.0, 4.0]))
    assert q.observer.max_val.item() == pytest.approx(2.0 + 0.01 * (4.0 - 2.0))
    q.eval()
    q(torch.tensor([0.0, 100.0]))
    assert q.observer.max_val.item() == pytest.approx(2.02)


def test_double_backprop_through_fake_quant(rng):
    model = quant.quantize_model(build_model("resnet20"), [32, 4])
    x = torch.rand(4, 3, 32, 32, generator=rng)
    quant.calibrate(model, [x], 4)
    model.train()
    with quant.use_bitwidth(model, 4):
        x = x.clone().requires_grad_(True)
        loss = model(x).logsumexp(1).sum()
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        g.abs().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def _snapshot(model, bits):
    qs = quant.activation_quantizers(model, bits)
    bns = quant.batchnorms(model, bits)
    return [q.observer.max_val.clone() for q in qs] + [t.clone() for bn in bns for t in (bn.running_mean, bn.running_var, bn.weight.data)]


def test_switching_bitwidth_leaves_other_bitwidths_untouched(rng):
    model = quant.quantize_model(build_model("resnet20"), [32, 8, 4, 2])
    x = torch.rand(8, 3, 32, 32, generator=rng)
    for b in (8, 4, 2):
        quant.calibrate(model, [x], b)
    before = {b: _snapshot(model, b) for b in (32, 8, 2)}
    model.train()
    with quant.use_bitwidth(model, 4):
        model(torch.rand(8, 3, 32, 32, generator=rng) * 2)
    changed4 = any(not torch.equal(a, b) for a, b in zip(_snapshot(model, 4), _snapshot(model, 4)))
    assert not changed4  # snapshot is deterministic
    for b in (32, 8, 2):
        assert all(torch.equal(a, c) for a, c in zip(before[b], _snapshot(model, b))), f"{b}-bit state changed"


def test_use_bitwidth_restores_and_validates():
    model = quant.quantize_model(build_model("resnet20"), [32, 8])
    assert model.triqdef_active_bits == 32
    with quant.use_bitwidth(model, 8):
        assert {m.active_bits for m in model.modules() if isinstance(m, quant._Switchable)} == {8}
    assert model.triqdef_active_bits == 32
    with pytest.raises(TriqdefError, match="not in this model's bit-widths"):
        with quant.use_bitwidth(model, 4):
            pass


def test_use_bitwidth_none_is_a_no_op_on_float_and_quantized_models():
    fp = build_model("resnet20")
    with quant.use_bitwidth(fp, None) as m:  # a float model has no bit-widths: nothing is looked up
        assert m is fp
    model = quant.quantize_model(build_model("resnet20"), [32, 8])
    with quant.use_bitwidth(model, 8), quant.use_bitwidth(model, None):
        assert model.triqdef_active_bits == 8
    assert model.triqdef_active_bits == 32


def test_frozen_statistics_of_a_model_or_of_some_modules(rng):
    model = quant.quantize_model(build_model("resnet20"), [32, 4]).train()
    quant.calibrate(model, [torch.rand(4, 3, 32, 32, generator=rng)], 4)
    stats = quant.statistics_modules(model.modules())
    assert stats and all(isinstance(m, (quant.ActivationQuantizer, torch.nn.BatchNorm2d)) for m in stats)
    first, rest = stats[:3], stats[3:]
    with quant.frozen_statistics(first):
        assert all(not m.observer_enabled if isinstance(m, quant.ActivationQuantizer) else m.momentum == 0.0 for m in first)
        assert all(m.observer_enabled if isinstance(m, quant.ActivationQuantizer) else m.momentum == 0.1 for m in rest)
    with quant.frozen_statistics(model) as same:
        assert same is model and all(getattr(m, "observer_enabled", False) is False and getattr(m, "momentum", 0.0) == 0.0
                                     for m in stats)
        before = _snapshot(model, 4)
        with quant.use_bitwidth(model, 4):
            model(torch.rand(4, 3, 32, 32, generator=rng) * 3)
        assert all(torch.equal(a, b) for a, b in zip(before, _snapshot(model, 4)))
    assert all(m.observer_enabled if isinstance(m, quant.ActivationQuantizer) else m.momentum == 0.1 for m in stats)


def test_eval_and_training_mode_restore_the_mode_even_after_an_error():
    model = build_model("resnet20").train()
    with quant.eval_mode(model) as m:
        assert m is model and not any(mod.training for mod in model.modules())
    assert all(mod.training for mod in model.modules())
    model.eval()
    with pytest.raises(ValueError), quant.training_mode(model, True):
        assert all(mod.training for mod in model.modules())
        raise ValueError
    assert not any(mod.training for mod in model.modules())


def test_first_and_last_layer_precision():
    model = quant.quantize_model(build_model("resnet20"), [32, 2], first_last_bits=8)
    convs = [m for m in model.modules() if isinstance(m, quant.QuantConv2d)]
    lin = [m for m in model.modules() if isinstance(m, quant.QuantLinear)]
    with quant.use_bitwidth(model, 2):
        assert convs[0].effective_bits() == 8 and lin[-1].effective_bits() == 8
        assert all(c.effective_bits() == 2 for c in convs[1:])
    every = quant.quantize_model(build_model("resnet20"), [32, 2], first_last_bits=None)
    with quant.use_bitwidth(every, 2):
        assert all(m.effective_bits() == 2 for m in every.modules() if isinstance(m, (quant.QuantConv2d, quant.QuantLinear)))


def test_quantize_model_keeps_fp_weights_and_32bit_equals_fp(rng):
    fp = build_model("resnet20").eval()
    model = quant.quantize_model(fp, [32, 8]).eval()
    x = torch.rand(4, 3, 32, 32, generator=rng)
    torch.testing.assert_close(model(x), fp(x))
    assert all(isinstance(m, quant.QuantReLU) for m in model.modules() if isinstance(m, (nn.ReLU, quant.QuantReLU)))


def test_ptq_and_dynamic_quantization(rng):
    fp = build_model("resnet20")
    calib = [torch.rand(16, 3, 32, 32, generator=rng)]
    for m in fp.modules():  # give the float BN the calibration statistics too, so 8-bit PTQ ~ FP
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        fp.train()(calib[0])
    fp.eval()
    ptq = quant.post_training_quantize(fp, [32, 8, 4], calib)
    x = torch.rand(4, 3, 32, 32, generator=rng)
    with quant.use_bitwidth(ptq, 8):
        y8 = ptq(x)
    assert torch.allclose(y8, fp(x), atol=0.1 * fp(x).abs().max().item())
    quant.dynamic_quantization(ptq)
    with quant.use_bitwidth(ptq, 4):
        assert torch.isfinite(ptq(x)).all()
    # an uncalibrated quantizer is refused rather than silently used
    raw = quant.quantize_model(fp, [32, 4]).eval()
    with quant.use_bitwidth(raw, 4), pytest.raises(RuntimeError, match="calibration"):
        raw(x)


def test_mse_clip_matches_numpy_grid_search(rng):
    x = torch.relu(torch.randn(5000, generator=rng)) ** 2  # heavy-tailed, post-ReLU-like
    for bits in (2, 4):
        qmax = 2**bits - 1
        v = x.numpy().astype(np.float64)
        top = v.max()
        best = min(np.linspace(0.05, 1.0, 20) * top,
                   key=lambda c: np.mean((np.clip(np.rint(v / (c / qmax)), 0, qmax) * (c / qmax) - v) ** 2))
        assert quant.mse_clip(x, 0, qmax).item() == pytest.approx(best, rel=1e-5)
    # the MSE clip is below the max for a heavy tail at 2 bits
    assert quant.mse_clip(x, 0, 3) < x.max()


def test_mse_range_estimator_is_moving_average_of_batch_clips(rng):
    q = quant.ActivationQuantizer(2, averaging_constant=0.5, range_estimator="mse").train()
    a, b = torch.rand(4000, generator=rng), torch.rand(4000, generator=rng) * 3
    q(a)
    q(b)
    expected = quant.mse_clip(a, 0, 3) + 0.5 * (quant.mse_clip(b, 0, 3) - quant.mse_clip(a, 0, 3))
    assert q.observer.max_val.item() == pytest.approx(expected.item(), rel=1e-6)
    assert q.observer.min_val.item() == 0.0
    with pytest.raises(TriqdefError, match="range estimator"):
        quant.ActivationQuantizer(2, range_estimator="percentile")


def test_one_range_estimator_per_bit_width():
    """docs/design.md#activation-range-estimator: min/max where it trains, the MSE clip where it does not."""
    from triqdef.models import build_model

    m = quant.quantize_model(build_model("resnet20"), [32, 8, 4, 2], range_estimator={8: "max", "4": "max", 2: "mse"})
    by_bits = {q.bits: q.range_estimator for q in quant.activation_quantizers(m)}
    assert by_bits == {8: "max", 4: "max", 2: "mse"}
    assert m.triqdef_range_estimator == {"8": "max", "4": "max", "2": "mse"}  # JSON-ready for checkpoint metadata
    with pytest.raises(TriqdefError, match="for 2 bits is missing"):
        quant.quantize_model(build_model("resnet20"), [32, 8, 2], range_estimator={8: "max"})
    with pytest.raises(TriqdefError, match="'percentile'"):
        quant.quantize_model(build_model("resnet20"), [32, 8], range_estimator={8: "percentile"})


def _bits_of(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().view(torch.int32)


@pytest.mark.parametrize("qmin,qmax", [(0, 255), (0, 15), (0, 3), (-7, 7), (-1, 1)])
@pytest.mark.parametrize("kind", ["random", "ties"])
def test_hand_fake_quantize_is_bitwise_pytorchs(rng, qmin, qmax, kind):
    """quant.fake_quantize_per_tensor against torch.fake_quantize_per_tensor_affine, bit for bit: output, gradient and
    double-backward, channels-last, on random tensors and on tensors made of exact half-steps (round-half-to-even
    ties, -0.5 rounding to zero, values past both ends of the range)."""
    shape = (8, 16, 12, 12)
    scale = torch.tensor([0.0371])
    if kind == "random":
        x = torch.randn(shape, generator=rng) * scale * (qmax - qmin) / 2
    else:
        x = torch.randint(2 * qmin - 6, 2 * qmax + 6, shape, generator=rng).float() * 0.5 * scale
        x.view(-1)[:4] = torch.tensor([float("inf"), -float("inf"), 3e38, -3e38])
    x = x.contiguous(memory_format=torch.channels_last)
    g = torch.randn(shape, generator=rng)
    gg = torch.randn(shape, generator=rng)
    results = []
    for op in (lambda t: torch.fake_quantize_per_tensor_affine(t, scale, torch.zeros(1, dtype=torch.int32), qmin, qmax),
               lambda t: quant.fake_quantize_per_tensor(t, scale, qmin, qmax)):
        xi = x.clone().requires_grad_(True)
        gi = g.clone().requires_grad_(True)
        y = op(xi)
        (dx,) = torch.autograd.grad(y, xi, gi, create_graph=True)
        (dgi,) = torch.autograd.grad(dx, gi, gg)  # double backward: d(dx . gg)/d(grad_output)
        results.append((y, dx, dgi))
    for ref, hand in zip(*results):
        assert torch.equal(_bits_of(ref), _bits_of(hand))
    with torch.no_grad():   # the inference path (no mask, in-place clamp): the same bits, and x left as it was
        before = x.clone()
        assert torch.equal(_bits_of(quant.fake_quantize_per_tensor(x, scale, qmin, qmax)), _bits_of(results[0][0]))
        assert torch.equal(_bits_of(x), _bits_of(before))
    clipped = (torch.round(x / scale) < qmin) | (torch.round(x / scale) > qmax)
    assert clipped.any() or kind == "random"  # the tie-heavy tensors do reach past the range


def _joint_qat_pass(model, x, y, bits):
    """Logits and parameter gradients of one joint multi-bit QAT step (observers updating), on a copy of ``model``."""
    import copy

    import torch.nn.functional as F

    model = copy.deepcopy(model).train()
    logits = []
    for b in bits:
        with quant.use_bitwidth(model, b):
            out = model(x)
            (F.cross_entropy(out, y) / len(bits)).backward()
            logits.append(out.detach())
    return logits, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("estimator", ["max", {8: "max", 5: "max", 4: "max", 2: "mse"}])
def test_joint_qat_step_is_bitwise_pytorchs(rng, monkeypatch, estimator):
    """A 5-bit-width joint QAT step of ResNet-20 (channels-last, as training runs it): logits and every parameter's
    gradient are bit for bit those of the same step with F.relu and PyTorch's torch.fake_quantize_per_tensor_affine
    (the hand op, the observers' flat views and the fast rounding all included)."""
    from triqdef.models import MEMORY_FORMAT

    bits = (32, 8, 5, 4, 2)
    model = quant.quantize_model(build_model("resnet20"), bits, range_estimator=estimator)
    x = torch.rand(16, 3, 32, 32, generator=rng).contiguous(memory_format=MEMORY_FORMAT)
    y = torch.randint(0, 10, (16,), generator=rng)
    for b in bits[1:]:
        quant.calibrate(model, [x], b)
    hand = _joint_qat_pass(model, x, y, bits)

    def pytorch_op(t, scale, qmin, qmax):
        return torch.fake_quantize_per_tensor_affine(t, scale, torch.zeros(1, dtype=torch.int32), qmin, qmax)

    monkeypatch.setattr(quant, "fake_quantize_per_tensor", pytorch_op)
    reference = _joint_qat_pass(model, x, y, bits)
    for got, want in zip(hand[0] + hand[1], reference[0] + reference[1]):
        assert torch.equal(_bits_of(got), _bits_of(want))


def test_mse_clip_rounds_as_torch_round(rng):
    """mse_clip's fast rounding picks the clip that torch.round's arithmetic picks, on channels-last maps."""
    x = torch.relu(torch.randn(32, 16, 16, 16, generator=rng)).contiguous(memory_format=torch.channels_last)
    for qmax in (3, 15, 255):
        v = torch.take(x, torch.arange(0, x.numel(), x.numel() // 8192))
        clips = v.abs().max() * quant._CLIP_GRID
        scales = (clips / qmax)[:, None]
        err = ((torch.clamp(torch.round(v[None] / scales), 0, qmax) * scales - v[None]) ** 2).mean(1)
        assert quant.mse_clip(x, 0, qmax).item() == clips[err.argmin()].item()


def test_with_range_estimator_recalibrates_a_copy(rng):
    """with_range_estimator: same weights, every quantizer switched and recalibrated on the given batches (the MSE
    clip below the min/max range), the original model untouched; an unknown estimator is a one-line error."""
    model = quant.quantize_model(build_model("resnet20"), [32, 4, 2], range_estimator="max")
    batches = [torch.rand(16, 3, 32, 32, generator=rng) for _ in range(2)]
    for b in (4, 2):
        quant.calibrate(model, batches, b)
    before = [q.observer.max_val.clone() for q in quant.activation_quantizers(model)]
    clipped = quant.with_range_estimator(model, "mse", batches)
    assert all(q.range_estimator == "mse" for q in quant.activation_quantizers(clipped))
    assert all(q.range_estimator == "max" for q in quant.activation_quantizers(model))
    assert all(torch.equal(a, q.observer.max_val) for a, q in zip(before, quant.activation_quantizers(model)))
    assert all(torch.equal(p, c) for p, c in zip(model.parameters(), clipped.parameters()))
    after = [q.observer.max_val for q in quant.activation_quantizers(clipped)]
    assert all(a <= m for a, m in zip(after, before)) and any(a < m for a, m in zip(after, before))
    with pytest.raises(TriqdefError, match="unknown activation range estimator"):
        quant.with_range_estimator(model, "percentile", batches)



def test_mse_clip_grid_is_copied_to_a_device_once():
    """Issue 31: the clip grid is moved to a device once and reused (a copy per call blocks the host on a GPU, and a
    CUDA graph cannot capture it; tools/bench_stacked.py counts the host syncs there); the clip is one of the grid's
    values times max|x|, a 0-dim tensor."""
    cpu = torch.device("cpu")
    assert quant._clip_grid(cpu) is quant._clip_grid(cpu)
    x = torch.rand(20_000, generator=torch.Generator().manual_seed(0)) * 3
    clip = quant.mse_clip(x, 0, 3)
    assert clip.shape == () and bool((x.abs().max() * quant._CLIP_GRID == clip).any())


def test_observer_update_is_torch_ao_bit_for_bit_and_calibration_is_rechecked_after_a_reset():
    """ActivationQuantizer updates its observer with quant.observe_moving_average (no Python branch on a value): the
    buffers equal torch.ao's MovingAverageMinMaxObserver.forward bit for bit, first batch and later ones; a reset (or
    a load) makes the next eval forward read the observer again and refuse it."""
    from torch.ao.quantization.observer import MovingAverageMinMaxObserver

    g = torch.Generator().manual_seed(0)
    for estimator in ("max", "mse"):
        q = quant.ActivationQuantizer(4, averaging_constant=0.01, range_estimator=estimator).train()
        ref = MovingAverageMinMaxObserver(averaging_constant=0.01)
        for k in range(4):
            x = torch.relu(torch.randn(8, 3, 5, 5, generator=g) * (k + 1))
            q(x)
            ref(q.batch_range(x))
            assert torch.equal(q.observer.min_val, ref.min_val) and torch.equal(q.observer.max_val, ref.max_val)
        assert list(q.state_dict()) == ["observer.eps", "observer.min_val", "observer.max_val"]
        q.eval()
        q(x)  # calibrated: passes
        q.observer.reset_min_max_vals()
        with pytest.raises(RuntimeError, match="calibration"):
            q(x)


@pytest.mark.parametrize("bits", [8, 5, 4, 2])
def test_weight_quantization_is_pytorchs_per_channel_op_bit_for_bit(bits):
    """quantize_weight skips torch.fake_quantize_per_channel_affine (whose zero-point check syncs with the GPU) but
    keeps its values and gradient, on random and tie-heavy weights of the network's shapes."""
    g = torch.Generator().manual_seed(bits)
    qmax = quant.signed_qmax(bits)
    for shape in [(16, 3, 3, 3), (64, 64, 3, 3), (10, 64)]:
        for ties in (False, True):
            w = torch.randn(shape, generator=g) * 0.3
            w = (torch.round(w * 8) / 8 if ties else w).requires_grad_()
            with torch.no_grad():
                scale = (w.abs().reshape(shape[0], -1).amax(1) / qmax).clamp_min(torch.finfo(torch.float32).tiny)
            ref = torch.fake_quantize_per_channel_affine(w, scale, torch.zeros(shape[0], dtype=torch.int32), 0, -qmax, qmax)
            ours = quant.quantize_weight(w, bits)
            upstream = torch.randn(shape, generator=g)
            assert torch.equal(ours, ref)
            assert torch.equal(torch.autograd.grad(ours, w, upstream)[0], torch.autograd.grad(ref, w, upstream)[0])
    # what backward keeps: the op's boolean mask, byte for byte (Table 17's memory column)
    from triqdef.eval.bench import SavedTensorMeter

    peaks = []
    for fake in (lambda v: quant.quantize_weight(v, bits),
                 lambda v: torch.fake_quantize_per_channel_affine(v, scale, torch.zeros(shape[0], dtype=torch.int32),
                                                                  0, -qmax, qmax)):
        meter = SavedTensorMeter()
        with meter.hooks():
            out = fake(w * 1.0)
        peaks.append(meter.peak)
        del out
    assert peaks[0] == peaks[1]
