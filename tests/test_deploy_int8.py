"""The int8 runtime (triqdef.deploy): a CIFAR ResNet's 8-bit view on PyTorch's integer kernels (issue 32)."""

import numpy as np
import pytest
import torch

from triqdef import deploy, quant
from triqdef.errors import TriqdefError
from triqdef.models import CifarResNet, build_model


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images of 10 separable classes: a class colour per quadrant, plus noise."""
    palette = torch.rand(10, 3, 2, 2, generator=torch.Generator().manual_seed(0)) * 200 + 20   # the classes
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n,), generator=g)
    x = palette[labels].repeat_interleave(16, 2).repeat_interleave(16, 3)
    x = x + torch.randn(n, 3, 32, 32, generator=g) * 25
    return x.clamp(0, 255).to(torch.uint8), labels


@pytest.fixture(scope="module")
def view8():
    """A ResNet-8 trained briefly on the separable images, quantized at (32, 8, 4) and calibrated at 8 bits."""
    torch.manual_seed(0)
    fp = CifarResNet(8)
    x, y = _images(1024, 1)
    opt = torch.optim.SGD(fp.parameters(), lr=0.05, momentum=0.9)
    fp.train()
    for step in range(60):
        idx = torch.arange(step * 64 % 1024, step * 64 % 1024 + 64)
        loss = torch.nn.functional.cross_entropy(fp(x[idx].float() / 255), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    q = quant.quantize_model(fp, [32, 8, 4])
    cal = [x[i: i + 128] for i in range(0, 512, 128)]
    quant.calibrate(q, [c.float() / 255 for c in cal], bits=8)
    quant.calibrate(q, [c.float() / 255 for c in cal], bits=4)
    return q, cal


def test_int8_model_agrees_with_the_fake_quantized_view(view8):
    model, cal = view8
    int8 = deploy.to_int8(model, cal)
    test, labels = _images(256, 2)
    a = deploy.agreement(model, int8, test)
    assert a.n_images == 256 and a.top1_agreement >= 0.99
    assert a.mean_abs_logit_error < 0.1 * a.logit_scale
    fake_acc = (deploy.fake_logits(model, test).argmax(1) == labels).float().mean()
    assert fake_acc > 0.9   # a model with decisive logits: the check is not of near-ties
    # it really runs on integer kernels
    assert int8.stem.weight().dtype == torch.qint8 and isinstance(int8.fc, torch.ao.nn.quantized.Linear)
    assert deploy.model_bytes(int8) < deploy.model_bytes(model) / 3


def test_mismatched_observers_fail_the_agreement_check(view8):
    """The check can fail: a fake view whose 8-bit observers no longer match the converted scales (here each
    activation range shrunk to a quarter, as a stale or wrong calibration would) disagrees on far more than 1 %."""
    import copy

    model, cal = view8
    int8 = deploy.to_int8(model, cal)
    stale = copy.deepcopy(model)
    for q in quant.activation_quantizers(stale, 8):
        q.observer.max_val.mul_(0.25)
    assert deploy.agreement(stale, int8, _images(256, 2)[0]).top1_agreement < 0.99


def test_folding_keeps_the_fake_quantized_integers(view8):
    model, _ = view8
    block = model.layer1[0]
    with quant.use_bitwidth(model, 8):
        qw, bias = deploy.folded_int8_weight(block.conv1, block.bn1)
        fake_w = quant.quantize_weight(block.conv1.weight.detach(), 8)
    bn = block.bn1.bns["8"]
    g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(qw.dequantize(), fake_w * g.view(-1, 1, 1, 1), rtol=1e-5, atol=1e-7)
    ints = torch.round(fake_w / (fake_w.abs().amax((1, 2, 3), keepdim=True) / 127))
    assert torch.equal(qw.int_repr().abs().to(torch.float32), ints.abs())
    torch.testing.assert_close(bias, bn.bias.detach() - bn.running_mean * g)


def test_bad_requests_are_one_line_errors(view8):
    model, cal = view8
    with pytest.raises(TriqdefError, match="integer kernels for 8 bits only") as exc:
        deploy.to_int8(model, cal, bits=4)
    assert "\n" not in str(exc.value)
    no8 = quant.quantize_model(CifarResNet(8), [32, 4, 2])
    with pytest.raises(TriqdefError, match=r"no 8-bit view \(its bit-widths: 32, 4, 2\)"):
        deploy.to_int8(no8, cal)
    with pytest.raises(TriqdefError, match="no 8-bit view .*a float model"):
        deploy.to_int8(CifarResNet(8), cal)
    with pytest.raises(TriqdefError, match="only the CIFAR ResNets"):
        deploy.to_int8(quant.quantize_model(build_model("vgg16_bn"), [32, 8]), cal)
    with pytest.raises(TriqdefError, match="no calibration batch"):
        deploy.to_int8(model, [])
    with pytest.raises(TriqdefError, match="int8 engine 'tpu'"):
        deploy.to_int8(model, cal, engine="tpu")
    uncalibrated = quant.quantize_model(CifarResNet(8), [32, 8])
    with pytest.raises(TriqdefError, match="not calibrated"):
        deploy.to_int8(uncalibrated, cal)


def test_latency_is_a_median_of_timed_runs(view8):
    model, cal = view8
    int8 = deploy.to_int8(model, cal)
    ms = deploy.median_latency_ms(int8, cal[0][:4].float() / 255, repeats=3, warmup=1)
    assert np.isfinite(ms) and ms > 0
    with pytest.raises(TriqdefError, match="repeats=0"):
        deploy.median_latency_ms(int8, cal[0][:4].float() / 255, repeats=0)
