"""Stacked bit-widths (issue 31, item 1): one pass over every bit-width equals the sequential passes."""

import contextlib
import copy

import pytest
import torch

from triqdef import quant, stacked
from triqdef.errors import TriqdefError
from triqdef.models import CifarResNet, CifarVGG

BITS = [32, 8, 4, 2]
ESTIMATORS = {8: "max", 4: "max", 2: "mse"}


def _model(calibrated: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    model = quant.quantize_model(CifarResNet(8), BITS, range_estimator=ESTIMATORS)
    if calibrated:
        x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        for b in BITS[1:]:
            quant.calibrate(model, [x], b)
    return model.train()


def _assert_near(actual, expected, what: str, tol: float = 1e-2):
    """Equal up to float reassociation: the relative L2 error of the tensor. Not elementwise: a different summation
    order can flip a rounding decision of a quantizer (one level, at one element; at 2 bits a level is a third of the
    range) and move a 2-bit BN's gradient by up to 0.3 % (seen with one thread, fresh observers, third step). The
    loss is compared elementwise (rtol 1e-5): an observer average off by 2x fails there, a BN statistic that is not
    written back fails the state check."""
    actual, expected = actual.double(), expected.double()
    err = float((actual - expected).norm() / expected.norm().clamp_min(1e-12))
    assert err <= tol, f"{what}: relative L2 error {err:.2e} > {tol:g}"


def _batch(step: int):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.rand(32, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 10, (32,), generator=g)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("calibrated", [True, False])
def test_stacked_training_equals_sequential_for_three_steps(calibrated, channels_last):
    """Loss, every gradient, and after each SGD step every weight, BN statistic and observer range; the weights
    contiguous or channels-last (as the CPU and GPU profiles train)."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    seq, stk = _model(calibrated).to(memory_format=memory_format), _model(calibrated).to(memory_format=memory_format)
    opt_seq = torch.optim.SGD(seq.parameters(), lr=0.05, momentum=0.9)
    opt_stk = torch.optim.SGD(stk.parameters(), lr=0.05, momentum=0.9)
    for step in range(3):
        x, y = _batch(step)
        opt_seq.zero_grad()
        opt_stk.zero_grad()
        loss_seq = stacked.sequential_joint_backward(seq, x, y, BITS, label_smoothing=0.1)
        loss_stk, logits = stacked.joint_loss(stk, x, y, BITS, label_smoothing=0.1)
        loss_stk.backward()
        assert logits.shape == (len(BITS), 32, 10)
        torch.testing.assert_close(loss_stk.detach(), loss_seq, rtol=1e-5, atol=1e-6)
        for (name, p), q in zip(seq.named_parameters(), stk.parameters()):
            _assert_near(q.grad, p.grad, f"gradient of {name} (step {step})")
        opt_seq.step()
        opt_stk.step()
        for (name, a), b in zip(seq.state_dict().items(), stk.state_dict().values()):
            _assert_near(b.float(), a.float(), f"{name} after step {step}")


def test_stacked_eval_logits_equal_each_bit_width():
    model = _model().eval()
    x, _ = _batch(0)
    with torch.no_grad():
        logits = stacked.stacked_logits(model, x, [8, 2, 32])
        for g, b in enumerate([8, 2, 32]):
            with quant.use_bitwidth(model, b):
                torch.testing.assert_close(logits[g], model(x), rtol=1e-4, atol=1e-5)


def test_bad_requests_are_one_line_errors():
    model = _model()
    x, _ = _batch(0)
    with pytest.raises(TriqdefError, match="distinct bit-widths"):
        stacked.stacked_logits(model, x, [8, 8])
    with pytest.raises(TriqdefError, match="distinct bit-widths"):
        stacked.stacked_logits(model, x, [5])
    with pytest.raises(TriqdefError, match="CIFAR ResNets"):
        stacked.stacked_logits(quant.quantize_model(CifarVGG(16), BITS), x, BITS)
    frozen = copy.deepcopy(model)
    with quant.frozen_statistics(list(frozen.modules())[:12]):
        with pytest.raises(TriqdefError, match="freeze every bit-width's observers or none"):
            stacked.stacked_logits(frozen, x, BITS)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_weight_quantization_per_group_equals_quantize_weight(channels_last):
    """The fused weight quantization of every group (one autograd function) equals quant.quantize_weight at each
    bit-width bit for bit, on weights whose quotients sit on rounding ties (k + 1/2 at 4 bits, a power-of-two scale),
    and its gradient is the sum of the G copies' gradients, in the weight's memory format."""
    g = torch.Generator().manual_seed(3)
    bits = [32, 8, 5, 4, 2]
    ties = (torch.randint(-7, 7, (8, 4, 3, 3), generator=g) + 0.5) / 16   # 4 bits: scale 7/16 / 7 = 1/16
    ties[:, 0, 0, 0] = 7 / 16                                             # each channel's absmax
    for weight in (ties, torch.randn(8, 4, 3, 3, generator=g), torch.randn(10, 16, generator=g)):
        if channels_last and weight.dim() == 4:
            weight = weight.contiguous(memory_format=torch.channels_last)
        weight = weight.clone().requires_grad_()
        stacked_w = stacked.stacked_weight(weight, bits)
        o = weight.shape[0]
        for k, b in enumerate(bits):
            assert torch.equal(stacked_w[k * o:(k + 1) * o], quant.quantize_weight(weight, b).detach()), b
        upstream = torch.empty_like(stacked_w).copy_(torch.randn(stacked_w.shape, generator=g))   # in its format
        (grad,) = torch.autograd.grad(stacked_w, weight, upstream)
        # (to float rounding: the G copies are summed in memory order)
        torch.testing.assert_close(grad, upstream.view(len(bits), *weight.shape).sum(0))
        assert grad.stride() == weight.stride()


def test_stacked_relu_equals_each_bit_widths_quantizer():
    """One stacked ReLU (batch range, the 2-bit MSE clip, the observers' moving average, per-group fake quantization)
    gives each group's output and gradient, and each observer's min and max, bit for bit as the bit-width's own
    quantizer does on its channels: from fresh observers and from calibrated ones, on values with rounding ties."""
    bits = [32, 8, 4, 2]
    seq = quant.QuantReLU(bits, range_estimator={8: "max", 4: "max", 2: "mse"}).train()
    stk = copy.deepcopy(seq)
    g = torch.Generator().manual_seed(5)
    n, c = 16, 8
    for step in range(3):
        x = torch.randn(n, len(bits) * c, 12, 12, generator=g) * (1 + step)
        x[:, :, 0, 0] = torch.randint(0, 30, (n, len(bits) * c), generator=g) / 8   # quotients on ties, some clipped
        x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
        upstream = torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last)
        writes = stacked._StateWrites()
        out = stacked._relu(stk, x, bits, writes)
        writes.apply()
        (grad,) = torch.autograd.grad(out, x, upstream)
        for k, b in enumerate(bits):
            part = x.detach()[:, k * c:(k + 1) * c].clone().requires_grad_()
            seq.active_bits = b
            expected = seq(part)
            (expected_grad,) = torch.autograd.grad(expected, part, upstream[:, k * c:(k + 1) * c])
            assert torch.equal(out.detach()[:, k * c:(k + 1) * c], expected.detach()), (step, b)
            assert torch.equal(grad[:, k * c:(k + 1) * c], expected_grad), (step, b)
        for (name, a), b in zip(seq.state_dict().items(), stk.state_dict().values()):
            assert torch.equal(a, b), (step, name)


@pytest.mark.parametrize("shape", [(16, 32, 16, 16), (2, 12, 4, 4)], ids=["sampled", "whole"])
def test_mse_clip_of_a_group_equals_quant_mse_clip(shape):
    """The stacked MSE clip of one group (its samples taken from the stacked tensor) is quant.mse_clip's, bit for bit."""
    groups = 4
    h = torch.rand(shape, generator=torch.Generator().manual_seed(7)).contiguous(memory_format=torch.channels_last)
    for k in range(groups):
        samples = stacked._mse_samples(tuple(h.shape), k, groups, "cpu")
        clip = stacked._mse_clip(h, samples, 0, 3)
        assert torch.equal(clip.view(()), quant.mse_clip(h.unflatten(1, (groups, -1))[:, k], 0, 3)), k


def test_stacked_training_shares_the_buffers_storage_and_keeps_every_tensor():
    """The buffers a stacked training pass updates are laid out in one storage per set (stacked.py, "shared
    storage"): every parameter and buffer stays the same tensor under the same state-dict key, the parameters keep
    their own storage, an evaluation pass moves nothing, and buffers replaced (as ``.to(device)`` replaces them) are
    laid out again at the next training pass, which still trains as the sequential passes do."""
    seq, stk = _model(), _model()
    evaluated = copy.deepcopy(stk).eval()
    storages = {k: t.untyped_storage().data_ptr() for k, t in evaluated.state_dict(keep_vars=True).items()}
    with torch.no_grad():
        stacked.stacked_logits(evaluated, _batch(0)[0], BITS)
    assert {k: t.untyped_storage().data_ptr() for k, t in evaluated.state_dict(keep_vars=True).items()} == storages
    keys = list(stk.state_dict())
    for step in range(3):
        if step == 2:
            stk._apply(torch.clone)   # every buffer a new tensor of its own storage
        tensors = stk.state_dict(keep_vars=True)
        x, y = _batch(step)
        loss_seq = stacked.sequential_joint_backward(seq, x, y, BITS, label_smoothing=0.1)
        loss_stk, _ = stacked.joint_loss(stk, x, y, BITS, label_smoothing=0.1)
        loss_stk.backward()
        torch.testing.assert_close(loss_stk.detach(), loss_seq, rtol=1e-5, atol=1e-6)
        after = stk.state_dict(keep_vars=True)
        assert list(after) == keys and all(after[k] is tensors[k] for k in keys), step
        for (name, a), b in zip(seq.state_dict().items(), stk.state_dict().values()):
            _assert_near(b.float(), a.float(), f"{name} after step {step}")
        bns = [stk.layer1[0].bn2.bns[str(b)] for b in BITS]
        quantizers = [stk.relu.quantizers[str(b)].observer for b in BITS[1:]]
        for shared in ([bn.running_mean for bn in bns], [bn.running_var for bn in bns],
                       [q.min_val for q in quantizers] + [q.max_val for q in quantizers]):
            assert len({t.untyped_storage().data_ptr() for t in shared}) == 1, step
        assert len({bn.weight.untyped_storage().data_ptr() for bn in bns}) == len(BITS)


def test_stacked_step_issues_at_least_4x_fewer_aten_ops():
    """Issue 31's acceptance on the CPU (tools/bench_stacked.py's ResNet-20 step, at a small batch: the count does not
    depend on it): the whole joint QAT step, SGD included, counted by torch.profiler, nested operations included."""
    from torch.profiler import ProfilerActivity, profile

    from triqdef.models import build_model

    bits, estimators = [32, 8, 5, 4, 2], {8: "max", 5: "max", 4: "max", 2: "mse"}
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,), generator=g)
    torch.manual_seed(0)
    base = quant.quantize_model(build_model("resnet20"), bits, range_estimator=estimators)
    for b in bits[1:]:
        quant.calibrate(base, [x], b)
    base = base.to(memory_format=torch.channels_last).train()

    def sequential(model):
        stacked.sequential_joint_backward(model, x, y, bits, label_smoothing=0.1)

    def stacked_step(model):
        stacked.joint_loss(model, x, y, bits, label_smoothing=0.1)[0].backward()

    counts = {}
    for name, run in (("sequential", sequential), ("stacked", stacked_step)):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for profiled in (False, False, True):
            with profile(activities=[ProfilerActivity.CPU]) if profiled else contextlib.nullcontext() as prof:
                opt.zero_grad(set_to_none=True)
                run(model)
                opt.step()
        counts[name] = sum(e.name.startswith("aten::") for e in prof.events())
    assert counts["sequential"] >= 4.0 * counts["stacked"], counts
