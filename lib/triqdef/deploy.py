"""The 8-bit view of a switchable-precision CIFAR ResNet on a real integer runtime (issue 32;
docs/design.md#int8-runtime).

Every number elsewhere in this repository comes from fake quantization: float arithmetic that imitates integer
arithmetic. :func:`to_int8` builds the same network on PyTorch's quantized CPU kernels (``torch.ao.nn.quantized``,
the ``x86`` / fbgemm or ``onednn`` engine), from the learned quantities of the 8-bit view and nothing else:

- **weights**: the view's per-output-channel symmetric int8 weights (scale ``max|w_c| / 127``, zero-point 0, as
  :func:`triqdef.quant.quantize_weight` defines them) with the 8-bit view's BatchNorm folded in. Folding a
  per-channel affine into per-channel weights keeps their integers: ``w_c · γ_c/σ_c`` is ``q_c`` (sign-flipped where
  ``γ_c < 0``) at scale ``s_c · |γ_c/σ_c|``, so the int8 weights are exactly the fake-quantized ones;
- **activations**: every ReLU's output at the view's own per-tensor scale (observer max / 255, zero-point 0,
  unsigned), fused into the convolution before it (``ConvReLU2d``) or into the residual sum (``add_relu``);
- **what fake quantization leaves in float** must be quantized on an integer runtime, and these are the points
  where the two can disagree: the normalised input (8-bit over its fixed range), each block's second convolution
  before the residual sum, and the logits. Their scales come from a calibration pass of the fake-quantized view
  over held-out images (min/max, asymmetric), as a deployment would take them.

Lower bit-widths have no integer kernel in PyTorch: they are refused, not emulated.
"""

from __future__ import annotations

import contextlib
import copy
import io
import statistics
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.models import BasicBlock, CifarResNet

INT8 = 8
ENGINES = ("x86", "fbgemm", "onednn")


@contextlib.contextmanager
def _quiet():
    """PyTorch 2.x warns that quantized tensor creation is deprecated; the kernels are what this module measures."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
        yield


def check_int8_bits(model: nn.Module, bits: int) -> None:
    """One-line errors for a request this module cannot serve: a bit-width below 8, or a model without an 8-bit
    view."""
    if bits != INT8:
        raise TriqdefError(f"int8 deployment at {bits} bits: PyTorch has integer kernels for 8 bits only; lower "
                           "bit-widths are not emulated and called integer (expected bits=8)")
    have = quant.model_bits(model) if hasattr(model, "triqdef_bits") else ()
    if INT8 not in have:
        raise TriqdefError(f"int8 deployment: the model has no 8-bit view (its bit-widths: "
                           f"{', '.join(map(str, have)) or 'none, a float model'}); expected a quantized model with 8 in "
                           "quant.bits")


def _view_parts(model: nn.Module):
    """The modules the 8-bit view runs: (conv, bn, act quantizer) triples, checked to be a CIFAR ResNet."""
    if not isinstance(model, CifarResNet):
        raise TriqdefError(f"int8 deployment of {type(model).__name__}: only the CIFAR ResNets are supported")
    return model


def _bn8(bn: nn.Module) -> nn.BatchNorm2d:
    return bn.bns[str(INT8)] if isinstance(bn, quant.SwitchableBatchNorm2d) else bn


def _act_scale(relu: nn.Module) -> float:
    q = relu.quantizers[str(INT8)]
    if not q.calibrated:
        raise TriqdefError(f"int8 deployment: the 8-bit activation quantizer of {relu} is not calibrated "
                           "(run triqdef.quant.calibrate at 8 bits first)")
    return float(q.scale())


def folded_int8_weight(conv: nn.Module, bn: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(qint8 per-channel weight, float bias)`` of ``conv`` at 8 bits with ``bn`` (its 8-bit BN) folded in."""
    w = conv.weight.detach().float()
    bits = conv.effective_bits() if hasattr(conv, "effective_bits") else INT8
    if bits != INT8:
        raise TriqdefError(f"int8 deployment: layer {conv} runs at {bits} bits in the 8-bit view, expected 8")
    qmax = quant.signed_qmax(INT8)
    absmax = w.abs().reshape(w.shape[0], -1).amax(1)
    scale = (absmax / qmax).clamp_min(torch.finfo(torch.float32).tiny)
    ints = torch.clamp(torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))), -qmax, qmax)
    bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(w.shape[0])
    if bn is not None:
        bn = _bn8(bn)
        g = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias.detach() + (bias - bn.running_mean) * g
        sign = torch.where(g < 0, -1.0, 1.0).view(-1, *[1] * (w.dim() - 1))
        ints = ints * sign                      # the same integers, sign-flipped where gamma < 0
        scale = scale * g.abs().clamp_min(torch.finfo(torch.float32).tiny)
    with _quiet():
        qw = torch._make_per_channel_quantized_tensor(ints.to(torch.int8), scale.double(),
                                                      torch.zeros(w.shape[0], dtype=torch.long), 0)
    return qw, bias


def _affine_params(lo: float, hi: float) -> tuple[float, int]:
    """quint8 scale and zero-point covering [lo, hi] (and 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max((hi - lo) / 255.0, 1e-8)
    return scale, int(np.clip(round(-lo / scale), 0, 255))


def _conv(conv: nn.Module, bn: nn.Module, relu: bool, scale: float, zero_point: int) -> nn.Module:
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    cls = nniq.ConvReLU2d if relu else nnq.Conv2d
    with _quiet():
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, True)
        q.set_weight_bias(*folded_int8_weight(conv, bn))
    q.scale, q.zero_point = float(scale), int(zero_point)
    return q


class Int8Block(nn.Module):
    """A basic block on integer kernels: ConvReLU, Conv, then the residual sum fused with its ReLU."""

    def __init__(self, block: BasicBlock, ranges: dict, name: str):
        super().__init__()
        import torch.ao.nn.quantized as nnq

        self.conv1 = _conv(block.conv1, block.bn1, True, _act_scale(block.relu1), 0)
        self.conv2 = _conv(block.conv2, block.bn2, False, *_affine_params(*ranges[f"{name}.bn2"]))
        self.add = nnq.QFunctional()
        self.add.scale, self.add.zero_point = _act_scale(block.relu2), 0
        self.stride, self.pad = block.stride, block.pad

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride].contiguous()
        if self.pad:
            with _quiet():
                zeros = torch.quantize_per_tensor(torch.zeros(x.shape[0], self.pad // 2, *x.shape[2:]), x.q_scale(),
                                                  x.q_zero_point(), x.dtype)
                extra = torch.quantize_per_tensor(torch.zeros(x.shape[0], self.pad - self.pad // 2, *x.shape[2:]),
                                                  x.q_scale(), x.q_zero_point(), x.dtype)
                x = torch.cat([zeros, x, extra], dim=1)   # zero-point 0: the padded channels are exact zeros
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add.add_relu(self.conv2(self.conv1(x)), self.shortcut(x))


class Int8ResNet(nn.Module):
    """A CIFAR ResNet's 8-bit view on PyTorch's integer kernels: float images in [0, 1] in, float logits out."""

    def __init__(self, model: CifarResNet, ranges: dict):
        super().__init__()
        import torch.ao.nn.quantized as nnq

        self.register_buffer("mean", model.normalize.mean.detach().clone())
        self.register_buffer("std", model.normalize.std.detach().clone())
        self.input_scale, self.input_zero_point = _affine_params(*ranges["input"])
        self.stem = _conv(model.conv1, model.bn1, True, _act_scale(model.relu), 0)
        self.layers = nn.Sequential(*[Int8Block(b, ranges, f"layer{i}.{j}")
                                      for i, layer in enumerate((model.layer1, model.layer2, model.layer3), 1)
                                      for j, b in enumerate(layer)])
        with _quiet():
            self.fc = nnq.Linear(model.fc.in_features, model.fc.out_features)
            self.fc.set_weight_bias(*folded_int8_weight(model.fc, None))
        self.fc.scale, self.fc.zero_point = _affine_params(*ranges["fc"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _quiet():
            q = torch.quantize_per_tensor(((x.float() - self.mean) / self.std).contiguous(), self.input_scale,
                                          self.input_zero_point, torch.quint8)
            q = self.layers(self.stem(q))
            q = F.adaptive_avg_pool2d(q, 1)   # quantized average pooling keeps the scale
            return self.fc(torch.flatten(q, 1)).dequantize()


def _ranges(model: nn.Module, calibration: Iterable[torch.Tensor]) -> dict:
    """Min/max of what fake quantization leaves in float (the normalised input, each block's BN2 output, the
    logits) at the 8-bit view, over ``calibration`` batches."""
    seen: dict[str, list[float]] = {}

    def note(key: str, t: torch.Tensor) -> None:
        lo, hi = float(t.min()), float(t.max())
        old = seen.get(key)
        seen[key] = [lo, hi] if old is None else [min(old[0], lo), max(old[1], hi)]

    hooks = [model.normalize.register_forward_hook(lambda m, i, o: note("input", o)),
             model.fc.register_forward_hook(lambda m, i, o: note("fc", o))]
    for i, layer in enumerate((model.layer1, model.layer2, model.layer3), 1):
        for j, block in enumerate(layer):
            hooks.append(block.bn2.register_forward_hook(lambda m, i_, o, k=f"layer{i}.{j}.bn2": note(k, o)))
    n = 0
    try:
        with quant.eval_mode(model), quant.use_bitwidth(model, INT8), torch.no_grad():
            for x in calibration:
                model(x.float() / 255.0 if x.dtype == torch.uint8 else x)
                n += 1
    finally:
        for h in hooks:
            h.remove()
    if not n:
        raise TriqdefError("int8 deployment: no calibration batch given (expected held-out images)")
    return seen


def to_int8(model: nn.Module, calibration: Iterable[torch.Tensor], bits: int = INT8, engine: str = "x86") -> Int8ResNet:
    """The 8-bit view of the switchable-precision CIFAR ResNet ``model`` as an integer model (module docstring).
    ``calibration``: held-out image batches for the scales of what the view keeps in float."""
    check_int8_bits(model, bits)
    _view_parts(model)
    if engine not in ENGINES or engine not in torch.backends.quantized.supported_engines:
        raise TriqdefError(f"int8 engine {engine!r}: expected one of "
                           f"{', '.join(e for e in ENGINES if e in torch.backends.quantized.supported_engines)}")
    torch.backends.quantized.engine = engine
    if not all(q.calibrated for q in quant.activation_quantizers(model, INT8)):
        raise TriqdefError("int8 deployment: the model's 8-bit activation quantizers are not calibrated (run "
                           "triqdef.quant.calibrate at 8 bits first)")
    model = copy.deepcopy(model).cpu().eval()
    ranges = _ranges(model, calibration)
    quant.set_bitwidth(model, INT8)   # the view whose layers are read: every conv and linear at 8 bits
    return Int8ResNet(model, ranges).eval()


@torch.no_grad()
def fake_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of the fake-quantized 8-bit view."""
    out = []
    with quant.eval_mode(model), quant.use_bitwidth(model, INT8):
        for i in range(0, len(images), batch_size):
            x = images[i: i + batch_size]
            out.append(model(x.float() / 255.0 if x.dtype == torch.uint8 else x).cpu())
    return torch.cat(out)


@torch.no_grad()
def int8_logits(int8: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i: i + batch_size]
        out.append(int8(x.float() / 255.0 if x.dtype == torch.uint8 else x))
    return torch.cat(out)


@dataclass(frozen=True)
class Agreement:
    """The int8 model against the fake-quantized 8-bit view on the same images."""

    n_images: int
    top1_agreement: float       # share of images with the same predicted class
    max_abs_logit_error: float
    mean_abs_logit_error: float
    logit_scale: float          # mean |logit| of the fake-quantized view, to read the errors against


def agreement(model: nn.Module, int8: nn.Module, images: torch.Tensor) -> Agreement:
    return compare_logits(fake_logits(model, images), int8_logits(int8, images))


def compare_logits(fake: torch.Tensor, real: torch.Tensor) -> Agreement:
    """:class:`Agreement` of the int8 logits ``real`` with the fake-quantized ``fake`` (same images, same order)."""
    err = (fake - real).abs()
    return Agreement(len(fake), float((fake.argmax(1) == real.argmax(1)).float().mean()), float(err.max()),
                     float(err.mean()), float(fake.abs().mean()))


def model_bytes(module: nn.Module) -> int:
    """Size of ``module``'s state dict as ``torch.save`` writes it (Table 18's "size on disk")."""
    buf = io.BytesIO()
    with _quiet():
        torch.save(module.state_dict(), buf)
    return buf.getbuffer().nbytes


@torch.no_grad()
def median_latency_ms(module: nn.Module, batch: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of one forward of ``batch`` (ms), after ``warmup`` untimed ones."""
    if repeats < 1:
        raise TriqdefError(f"latency repeats={repeats}: expected at least 1")
    for _ in range(warmup):
        module(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        module(batch)
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)
