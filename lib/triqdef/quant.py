"""Switchable-precision fake quantization on one shared backbone (paper 3.4, 4.1).

One set of weights θ is shared by every bit-width b of a set B; per bit-width
the model keeps its own activation observers and its own BatchNorm (switchable
BN, as in DWQ / Any-Precision / AdaBits). ``Q_32`` is the identity.

* Weights: symmetric, zero-point 0, **per output channel**, signed restricted
  range ``[-(2^(b-1)-1), 2^(b-1)-1]`` (2 bits is ternary), scale =
  per-channel absmax / (2^(b-1)-1) of the current weights at every forward.
* Activations: **per tensor**, at every ReLU output (in a ResNet that includes
  the ReLU after the residual sum), unsigned ``[0, 2^b-1]``, zero-point 0,
  scale from a moving-average min/max observer (``torch.ao``'s, averaging
  constant 0.01) that updates in training mode and is frozen in eval mode. Its update is
  :func:`observe_moving_average`, the observer's own arithmetic without reading a value into Python (no host
  sync, issue 31). The model input and the logits are not quantized.
* Gradients are straight-through (with the clipping mask). Weights are rounded
  by PyTorch's ``torch.fake_quantize_per_channel_affine``; activations by
  :func:`fake_quantize_per_tensor`, a hand version of
  ``torch.fake_quantize_per_tensor_affine`` whose outputs, gradients and
  double-backward are bitwise PyTorch's (``tests/test_quant.py``) at 1.6-2x its
  speed on this CPU. Double backprop works through both (GPDP needs it).
* The first conv and last linear layer are quantized at ``max(b, first_last_bits)``
  (default 8, as DWQ, Any-Precision and LSQ do); ``first_last_bits=None``
  quantizes every weight tensor at ``b``, as the paper's "all weight tensors" says.

Public API: :func:`quantize_weight`, :func:`quantize_model`, :func:`use_bitwidth`,
:func:`calibrate`, :func:`post_training_quantize`, :func:`dynamic_quantization`, :func:`with_range_estimator`; for the statistics
(observers, BN) a forward updates: :func:`frozen_statistics`, :func:`eval_mode`, :func:`training_mode`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization.observer import MovingAverageMinMaxObserver

from triqdef.errors import TriqdefError

FP_BITS = 32
_ROUNDING_MAGIC = 12582912.0  # 1.5 * 2^23: adding then subtracting it rounds a float32 |v| < 2^22 half to even
MIN_BITS, MAX_INT_BITS = 2, 16


def check_bits(bits) -> int:
    """Validate one bit-width: an integer in [2, 16] or 32 (full precision)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not (bits == FP_BITS or MIN_BITS <= bits <= MAX_INT_BITS):
        raise TriqdefError(f"unknown bit-width {bits!r}: expected an integer in [{MIN_BITS}, {MAX_INT_BITS}] or {FP_BITS}")
    return bits


def check_bit_set(bits: Iterable) -> tuple[int, ...]:
    """Validate a set of bit-widths; returns them sorted high to low, without duplicates."""
    if isinstance(bits, (int, str)):
        bits = [bits]
    out = sorted({check_bits(b) for b in bits}, reverse=True)
    if not out:
        raise TriqdefError("empty bit-width set: expected at least one of 32, 8, 5, 4, 2, ...")
    return tuple(out)


def signed_qmax(bits: int) -> int:
    return 2 ** (bits - 1) - 1


def unsigned_qmax(bits: int) -> int:
    return 2**bits - 1


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric fake quantization of a weight tensor.

    ``w_q = s_c * clip(round(w / s_c), -(2^(b-1)-1), 2^(b-1)-1)`` with
    ``s_c = max|w_c| / (2^(b-1)-1)`` taken from ``w`` itself (channel ``c`` is
    dim 0). The gradient is straight-through: ``∂w_q/∂w = 1`` (no value is
    clipped, since the scale covers the absmax). ``bits=32`` returns ``w``.
    """
    check_bits(bits)
    if bits == FP_BITS:
        return w
    qmax = signed_qmax(bits)
    with torch.no_grad():
        absmax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1)
        scale = (absmax / qmax).clamp_min(torch.finfo(torch.float32).tiny).float()
    if w.dtype == torch.float32:
        # torch.fake_quantize_per_channel_affine's values, gradient and saved mask bit for bit (tests/test_quant.py),
        # without the op's check of the zero points, which reads them into Python: 160 host syncs a joint-QAT step
        # on a GPU (results/gpu/syncs/)
        return _FakeQuantizeWeight.apply(w, scale.view(-1, *[1] * (w.dim() - 1)), qmax)
    zero_point = torch.zeros(w.shape[0], dtype=torch.int32, device=w.device)
    return torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, -qmax, qmax)


class _FakeQuantizeWeight(torch.autograd.Function):
    """:func:`quantize_weight`'s per-channel fake quantization, zero-point 0, range [-qmax, qmax]: the arithmetic of
    ``torch.fake_quantize_per_channel_affine`` (``w`` times the float32 reciprocal of its channel's scale, rounded
    half to even, clamped, times the scale) and its saved boolean in-range mask (the same bytes for backward, so
    Table 17's memory column is unchanged); the gradient is ``g * mask``."""

    @staticmethod
    def forward(ctx, w, scale, qmax):
        rounded = (w * torch.reciprocal(scale)).add_(_ROUNDING_MAGIC).sub_(_ROUNDING_MAGIC)
        mask = (rounded >= -qmax) & (rounded <= qmax)
        ctx.save_for_backward(mask)
        return rounded.clamp_(-qmax, qmax).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None


class _FakeQuantizePerTensor(torch.autograd.Function):
    """``s * clamp(round(x / s), qmin, qmax)`` with zero-point 0 and the straight-through gradient ``g * mask``.

    The arithmetic is ``torch.fake_quantize_per_tensor_affine``'s: ``x`` times the float32 reciprocal of ``s``,
    rounded half to even, clamped, times ``s``; the mask is the in-range test of the rounded value. The
    backward is made of differentiable ops, so double backprop gives PyTorch's result too (``g * mask``
    is linear in ``g``).
    """

    @staticmethod
    def forward(ctx, x, scale, qmin, qmax):
        # Round half to even by adding and subtracting 1.5 * 2^23: exact for |v| < 2^22, and monotonic beyond, where
        # the clamp and the mask only need the side of the range (|qmin|, qmax <= 2^16). 20x faster than torch.round
        # on this CPU (0.2 against 4.6 ms on 2M elements), and -0.5 rounds to +0 as in PyTorch's integer arithmetic.
        rounded = (x * torch.reciprocal(scale)).add_(_ROUNDING_MAGIC).sub_(_ROUNDING_MAGIC)
        clamped = rounded.clamp(qmin, qmax)
        # The mask as float32 1.0 (in range) / +0.0 (clipped), by arithmetic on integers: the backward's grad * mask
        # is then a float product (0.17 ms) instead of a bool-promoting one (4.6 ms), with the same bits.
        mask = rounded.sub_(clamped).abs_().clamp_(max=1.0).neg_().add_(1.0)
        ctx.save_for_backward(mask)
        return clamped.mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


def fake_quantize_per_tensor(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """Per-tensor fake quantization with zero-point 0: bitwise ``torch.fake_quantize_per_tensor_affine``.

    ``scale`` is a one-element float32 tensor. Outputs, gradients and double-backward equal PyTorch's op
    bit for bit on float32 inputs (``tests/test_quant.py``, random and tie-heavy tensors, unsigned, signed
    and ternary ranges); NaN inputs are the one difference (PyTorch's op maps NaN to a range end, this
    one keeps NaN). Other dtypes go to PyTorch's op. Measured on the 2-core CPU, forward + backward of a
    batch-128 ResNet-20 activation: 5.1 -> 3.2 ms (16x32x32 maps), 1.0 -> 0.5 ms (64x8x8).
    """
    if x.dtype != torch.float32 or scale.dtype != torch.float32:
        zero_point = torch.zeros(1, dtype=torch.int32, device=x.device)
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)
    if not torch.is_grad_enabled():
        # Inference (evaluation, patch tables): the same arithmetic without the straight-through mask, which only a
        # backward reads, and with the clamp in place: 5 elementwise passes instead of 10, the same bits (ResNet-20
        # at 4 bits, 500 images, 2 threads: 0.920 -> 0.799 ms an image, 2026-12-05).
        return (x * torch.reciprocal(scale)).add_(_ROUNDING_MAGIC).sub_(_ROUNDING_MAGIC).clamp_(qmin, qmax).mul_(scale)
    return _FakeQuantizePerTensor.apply(x, scale, qmin, qmax)


RANGE_ESTIMATORS = ("max", "mse")
_CLIP_GRID = torch.linspace(0.05, 1.0, 20)


@functools.lru_cache(maxsize=None)
def _clip_grid(device: torch.device) -> torch.Tensor:
    """:data:`_CLIP_GRID` on ``device``, copied there once (a copy inside a step would block the host, and a CUDA
    graph cannot capture it)."""
    return _CLIP_GRID.to(device)


def mse_clip(x: torch.Tensor, qmin: int, qmax: int, max_samples: int = 8192) -> torch.Tensor:
    """Clipping threshold ``c`` minimising ``||x - Q_c(x)||²`` over a grid of 20 fractions of max|x|.

    ``Q_c`` is the symmetric zero-point-0 quantizer with scale ``c / qmax`` on
    ``[qmin, qmax]``. Estimated on a strided subsample of at most
    ``max_samples`` elements (cheap enough for every training step). This is
    the per-batch statistic the ``mse`` range estimator moving-averages
    instead of the raw max (docs/design.md#activation-range-estimator).
    """
    v = x.detach()
    if v.numel() > max_samples:  # every k-th element in logical order; torch.take reads them without a copy
        v = torch.take(v, torch.arange(0, v.numel(), v.numel() // max_samples, device=v.device))
    v = v.reshape(-1).float()
    top = v.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    clips = top * (_CLIP_GRID.to(v.device) if torch.compiler.is_compiling() else _clip_grid(v.device))  # (a graph
    # holds the grid as a constant; dynamo would trace through the cache and warn)
    scales = (clips / qmax)[:, None]
    rounded = (v[None] / scales).add_(_ROUNDING_MAGIC).sub_(_ROUNDING_MAGIC)  # torch.round's values, 20x faster here
    err = ((rounded.clamp_(qmin, qmax) * scales - v[None]) ** 2).mean(1)
    return clips.gather(0, err.argmin().view(1)).view(())   # no host sync (a 0-dim index reads its value into Python)


def estimator_for(range_estimator: str | Mapping, bits: int) -> str:
    """The activation range estimator of one bit-width: ``range_estimator`` is one name for every bit-width or a
    mapping bit-width -> name (keys may be ints or strings, as a params file or a checkpoint's JSON gives them)."""
    if isinstance(range_estimator, str):
        name = range_estimator
    else:
        table = {str(k): v for k, v in range_estimator.items()}
        if str(bits) not in table:
            raise TriqdefError(f"activation range estimator for {bits} bits is missing from {table}: expected an entry "
                               "for every quantized bit-width")
        name = table[str(bits)]
    if name not in RANGE_ESTIMATORS:
        raise TriqdefError(f"unknown activation range estimator {name!r}: expected one of {', '.join(RANGE_ESTIMATORS)}")
    return name


class ActivationQuantizer(nn.Module):
    """Per-tensor symmetric fake quantizer with a moving-average observer, for one bit-width.

    Unsigned range ``[0, 2^b-1]`` for post-ReLU tensors (``signed=False``),
    signed restricted range otherwise; zero-point 0; scale =
    max(|min|, |max|) / qmax of the observer's moving averages. The observer
    updates in training mode unless frozen (:func:`frozen_statistics`); in
    ``dynamic`` mode the range is taken from each batch instead (dynamic
    quantization).
    """

    def __init__(self, bits: int, signed: bool = False, averaging_constant: float = 0.01, range_estimator: str = "max"):
        super().__init__()
        self.bits = check_bits(bits)
        self.signed = signed
        if range_estimator not in RANGE_ESTIMATORS:
            raise TriqdefError(f"unknown activation range estimator {range_estimator!r}: expected one of {', '.join(RANGE_ESTIMATORS)}")
        self.range_estimator = range_estimator
        self.observer = MovingAverageMinMaxObserver(averaging_constant=averaging_constant)
        self.observer_enabled = True
        self.dynamic = False

    def batch_range(self, x: torch.Tensor) -> torch.Tensor:
        """What the observer averages for one batch: the tensor itself (``max``) or its MSE-optimal clip (``mse``)."""
        if self.range_estimator == "max":
            return _flat_view(x)
        clip = mse_clip(x, self.qmin, self.qmax)
        return torch.stack([-clip if self.signed else torch.zeros_like(clip), clip])

    @property
    def qmin(self) -> int:
        return -signed_qmax(self.bits) if self.signed else 0

    @property
    def qmax(self) -> int:
        return signed_qmax(self.bits) if self.signed else unsigned_qmax(self.bits)

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.observer.max_val).item())

    def _observer_state(self) -> tuple[int, int]:
        """Which observer state this is, read on the host: the max buffer's identity and its in-place version (every
        update, reset, ``load_state_dict`` or ``.to`` changes one of them)."""
        return id(self.observer.max_val), self.observer.max_val._version

    def _check_calibrated(self) -> None:
        """Refuse an uncalibrated quantizer, reading the observer (a host sync) only when its state is one not seen
        calibrated before: an update by :func:`observe_moving_average` counts as seen, so a training step never reads
        it; a checkpoint just loaded is read once, at its first forward. Under ``torch.compile`` (which cannot guard
        on a buffer's version) the check stays on the device, ``torch._assert_async``."""
        if torch.compiler.is_compiling():
            torch._assert_async(torch.isfinite(self.observer.max_val), f"{self.bits}-bit activation quantizer used "
                                "before calibration; run triqdef.quant.calibrate")
            return
        if getattr(self, "_calibrated_state", None) == self._observer_state():
            return
        if not self.calibrated:
            raise RuntimeError(f"{self.bits}-bit activation quantizer used before calibration; run triqdef.quant.calibrate")
        self._calibrated_state = self._observer_state()

    def scale(self, x: torch.Tensor | None = None) -> torch.Tensor:
        if self.dynamic and x is not None:
            lo, hi = torch.aminmax(self.batch_range(x.detach()))
        else:
            lo, hi = self.observer.min_val, self.observer.max_val
        rng = torch.maximum(lo.abs(), hi.abs()) if self.signed else hi.clamp_min(0)
        return (rng / self.qmax).clamp_min(torch.finfo(torch.float32).tiny).float().reshape(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.observer_enabled and not self.dynamic:
            values = self.batch_range(x.detach())
            if values.numel():  # the observer ignores an empty batch
                lo, hi = torch.aminmax(values.to(self.observer.min_val.dtype))
                observe_moving_average([self], lo.view(1), hi.view(1))
        elif not self.dynamic:  # (an observer that just updated holds a batch's range: calibrated)
            self._check_calibrated()
        return fake_quantize_per_tensor(x, self.scale(x).to(x.device), self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, range={self.range_estimator}, dynamic={self.dynamic}"


def observe_moving_average(quantizers: Sequence[ActivationQuantizer], batch_min: torch.Tensor,
                           batch_max: torch.Tensor) -> None:
    """``MovingAverageMinMaxObserver.forward`` for the observers of ``quantizers`` at once, given each one's batch
    min and max (1-D, one entry per quantizer), without reading a value into Python.

    torch.ao's forward branches in Python on the buffers' values (``if min_val == inf and max_val == -inf``: the first
    batch sets them, later ones move them by the averaging constant ``c``), a host sync on every forward. Here the
    branch is a ``torch.where`` on the same test and each side is the same float32 arithmetic, ``old + c * (new -
    old)``, so the buffers get torch.ao's values bit for bit (``tests/test_quant.py``); the buffers and their
    state-dict keys are the observer's own. Used by :class:`ActivationQuantizer` (one quantizer) and
    :mod:`triqdef.stacked` (every bit-width of a ReLU); marks each state as calibrated (:meth:`ActivationQuantizer.
    _check_calibrated` need not read it).
    """
    c = quantizers[0].observer.averaging_constant
    if any(q.observer.averaging_constant != c for q in quantizers):
        raise TriqdefError("observers updated together need the same averaging constant")
    old_min = torch.stack([q.observer.min_val.reshape(()) for q in quantizers])
    old_max = torch.stack([q.observer.max_val.reshape(()) for q in quantizers])
    fresh = (old_min == float("inf")) & (old_max == float("-inf"))
    new_min = torch.where(fresh, batch_min, old_min + c * (batch_min - old_min))
    new_max = torch.where(fresh, batch_max, old_max + c * (batch_max - old_max))
    torch._foreach_copy_([q.observer.min_val for q in quantizers] + [q.observer.max_val for q in quantizers],
                         list(new_min.unbind()) + list(new_max.unbind()))
    if not torch.compiler.is_compiling():  # (a compiled graph cannot keep a buffer's version; it checks on the device)
        for q in quantizers:
            q._calibrated_state = q._observer_state()


def _flat_view(x: torch.Tensor) -> torch.Tensor:
    """``x``'s elements as a 1-D view in memory order, without a copy where ``x`` is dense (contiguous or
    channels-last). A min/max observer sees the same values either way; ``torch.aminmax`` copies a
    channels-last tensor first (0.61 against 0.16 ms for a batch-128 16x32x32 map on the 2-core CPU)."""
    if x.is_contiguous():
        return x.view(-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1)
    return x.reshape(-1)


class _Switchable:
    """Mixin: a module with an ``active_bits`` attribute set by :func:`use_bitwidth`."""

    active_bits: int = FP_BITS


class _WeightQuantized(_Switchable):
    """Mixin: a layer whose weight is fake-quantized at the active bit-width, raised to ``min_bits`` if set."""

    min_bits: int | None = None

    @classmethod
    def from_float(cls, layer: nn.Module, min_bits: int | None = None):
        """A copy of the float ``layer`` (same parameters and state-dict keys) as this class, at 32 bits."""
        new = copy.deepcopy(layer)
        new.__class__ = cls
        new.min_bits = min_bits
        new.active_bits = FP_BITS
        return new

    def effective_bits(self) -> int:
        b = self.active_bits
        return b if b == FP_BITS or self.min_bits is None else max(b, self.min_bits)


class QuantConv2d(nn.Conv2d, _WeightQuantized):
    """``nn.Conv2d`` whose weight is fake-quantized per output channel at the active bit-width.

    Same parameters (and state-dict keys) as the convolution it replaces.
    ``min_bits`` raises the precision of this layer (first layer: 8).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, quantize_weight(self.weight, self.effective_bits()), self.bias)


class QuantLinear(nn.Linear, _WeightQuantized):
    """``nn.Linear`` whose weight is fake-quantized per output row at the active bit-width."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, quantize_weight(self.weight, self.effective_bits()), self.bias)


class SwitchableBatchNorm2d(nn.Module, _Switchable):
    """One ``BatchNorm2d`` per bit-width (statistics and affine parameters), selected by ``active_bits``."""

    def __init__(self, bn: nn.BatchNorm2d, bits: Sequence[int]):
        super().__init__()
        self.bns = nn.ModuleDict({str(b): copy.deepcopy(bn) for b in bits})
        self.active_bits = FP_BITS if FP_BITS in bits else bits[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bns[str(self.active_bits)](x)


class QuantReLU(nn.Module, _Switchable):
    """ReLU (or ReLU6) followed by the active bit-width's activation quantizer (identity at 32 bits)."""

    def __init__(self, bits: Sequence[int], averaging_constant: float = 0.01, six: bool = False,
                 range_estimator: str | Mapping = "max"):
        super().__init__()
        self.six = six
        self.quantizers = nn.ModuleDict(
            {str(b): ActivationQuantizer(b, averaging_constant=averaging_constant,
                                         range_estimator=estimator_for(range_estimator, b))
             for b in bits if b != FP_BITS}
        )
        self.active_bits = FP_BITS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(x) if self.six else F.relu(x)
        if self.active_bits == FP_BITS:
            return x
        return self.quantizers[str(self.active_bits)](x)


def _switchables(model: nn.Module) -> list[nn.Module]:
    """The switchable modules of ``model``, found by :func:`quantize_model` once and kept on the model, so that a
    bit-width switch is one loop over them rather than a walk of every module (``copy.deepcopy`` maps the list to
    the copy's modules)."""
    cached = model.__dict__.get("_triqdef_switchables")
    if cached is None:
        cached = [m for m in model.modules() if isinstance(m, _Switchable)]
        model.__dict__["_triqdef_switchables"] = cached
    return cached


def model_bits(model: nn.Module) -> tuple[int, ...]:
    """The bit-widths a quantized model was built for (``quantize_model``)."""
    bits = getattr(model, "triqdef_bits", None)
    if bits is None:
        raise TriqdefError("model is not switchable-precision: build it with triqdef.quant.quantize_model")
    return tuple(bits)


def set_bitwidth(model: nn.Module, bits: int) -> None:
    """Select the active bit-width of every quantizer and BN of ``model``."""
    check_bits(bits)
    if bits not in model_bits(model):
        raise TriqdefError(f"bit-width {bits} not in this model's bit-widths {model_bits(model)}")
    for m in _switchables(model):
        m.active_bits = bits
    model.triqdef_active_bits = bits


@contextlib.contextmanager
def use_bitwidth(model: nn.Module, bits: int | None):
    """Context manager: run ``model`` at ``bits`` inside the block, restore the previous bit-width after.

    ``bits=None`` is a no-op (the model runs as it is; it need not be switchable-precision), so that one
    call serves a float model and a quantized one: ``with use_bitwidth(model, bits): ...``.
    """
    if bits is None:
        yield model
        return
    previous = getattr(model, "triqdef_active_bits", FP_BITS)
    set_bitwidth(model, bits)
    try:
        yield model
    finally:
        set_bitwidth(model, previous)


def quantize_model(
    model: nn.Module,
    bits: Iterable[int],
    first_last_bits: int | None = 8,
    averaging_constant: float = 0.01,
    range_estimator: str | Mapping = "max",
) -> nn.Module:
    """Wrap a float model into a switchable-precision model for the bit-widths ``bits``.

    Returns a new model (the input is not modified) in which every ``Conv2d`` /
    ``Linear`` fake-quantizes its weight, every ``BatchNorm2d`` becomes one BN
    per bit-width (each a copy of the original), and every ``ReLU``/``ReLU6``
    module quantizes its output per bit-width. The first conv and the last
    linear layer use ``max(b, first_last_bits)`` bits (``None``: ``b``). The
    active bit-width starts at 32 (or the highest in ``bits``).
    ``range_estimator``: one estimator for every bit-width, or a mapping
    bit-width -> estimator (docs/design.md#activation-range-estimator).

    Modules reused several times in ``forward`` (e.g. torchvision's
    ``BasicBlock.relu``) share one observer; the CIFAR models of
    :mod:`triqdef.models` never reuse a module.
    """
    bit_set = check_bit_set(bits)
    if first_last_bits is not None:
        check_bits(first_last_bits)
    for b in bit_set:  # every quantized bit-width has a known estimator, before anything is built
        if b != FP_BITS:
            estimator_for(range_estimator, b)
    if not isinstance(range_estimator, str):
        range_estimator = {str(b): estimator_for(range_estimator, b) for b in bit_set if b != FP_BITS}
    qmodel = copy.deepcopy(model)
    named = list(qmodel.named_modules())
    convs = [n for n, m in named if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in named if isinstance(m, nn.Linear)]
    first, last = (convs[0] if convs else None), (linears[-1] if linears else None)

    def replace(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            edge = first_last_bits if full in (first, last) else None
            if isinstance(child, nn.Conv2d):
                setattr(parent, name, QuantConv2d.from_float(child, edge))
            elif isinstance(child, nn.Linear):
                setattr(parent, name, QuantLinear.from_float(child, edge))
            elif isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, SwitchableBatchNorm2d(child, bit_set))
            elif isinstance(child, (nn.ReLU, nn.ReLU6)):
                setattr(parent, name, QuantReLU(bit_set, averaging_constant, isinstance(child, nn.ReLU6), range_estimator))
            else:
                replace(child, full)

    replace(qmodel, "")
    # the new observers and BNs are built on the CPU: the model stays where the float model was (a GPU run's PTQ)
    where = next(model.parameters(), None)
    if where is not None:
        qmodel.to(where.device)
    qmodel.triqdef_bits = bit_set
    qmodel.triqdef_first_last_bits = first_last_bits
    qmodel.triqdef_range_estimator = range_estimator
    set_bitwidth(qmodel, bit_set[0])
    return qmodel


def activation_quantizers(model: nn.Module, bits: int | None = None) -> list[ActivationQuantizer]:
    qs = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    return [q for q in qs if bits is None or q.bits == bits]


def batchnorms(model: nn.Module, bits: int) -> list[nn.BatchNorm2d]:
    return [m.bns[str(bits)] for m in model.modules() if isinstance(m, SwitchableBatchNorm2d)]


@contextlib.contextmanager
def training_mode(model: nn.Module, training: bool) -> Iterator[nn.Module]:
    """Inside the block ``model`` (every submodule) is in training (``True``: observers and BN running statistics
    update, BN normalises with batch statistics) or eval (``False``) mode; on exit, even by an exception,
    ``model.train(was)`` puts it back in the mode its root module had before."""
    was = model.training
    model.train(training)
    try:
        yield model
    finally:
        model.train(was)


def eval_mode(model: nn.Module) -> contextlib.AbstractContextManager[nn.Module]:
    """``training_mode(model, False)``: inside the block BN uses its running statistics and observers stay frozen."""
    return training_mode(model, False)


def statistics_modules(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """The modules among ``modules`` that keep running statistics: activation quantizers (observers) and BNs."""
    return [m for m in modules if isinstance(m, (ActivationQuantizer, nn.BatchNorm2d))]


@contextlib.contextmanager
def frozen_statistics(model_or_modules: nn.Module | Iterable[nn.Module]):
    """Inside the block, observers do not update and BN running statistics stay fixed.

    Freezes every observer / BN of a model, or only those among an iterable of modules (for
    instance the ones a forward pass ran up to some layer). BN still normalises with batch
    statistics in training mode (momentum 0). Yields its argument.
    """
    modules = model_or_modules.modules() if isinstance(model_or_modules, nn.Module) else model_or_modules
    saved = [(m, m.observer_enabled if isinstance(m, ActivationQuantizer) else m.momentum)
             for m in statistics_modules(modules)]
    for m, _ in saved:
        if isinstance(m, ActivationQuantizer):
            m.observer_enabled = False
        else:
            m.momentum = 0.0
    try:
        yield model_or_modules
    finally:
        for m, v in saved:
            if isinstance(m, ActivationQuantizer):
                m.observer_enabled = v
            else:
                m.momentum = v


@torch.no_grad()
def calibrate(model: nn.Module, images: Iterable[torch.Tensor], bits: int, reset: bool = True) -> int:
    """Calibrate the observers and BN statistics of one bit-width, no weight update.

    Runs ``model`` at ``bits`` in training mode over the batches ``images``
    (floats in [0, 1]). The observers' moving averages become the plain mean
    of the per-batch min/max, and the BN running statistics the cumulative
    average over the batches (``momentum=None``); both are reset first unless
    ``reset=False``. Returns the number of images seen.
    """
    qs, bns = activation_quantizers(model, bits), batchnorms(model, bits)
    saved_momentum = [bn.momentum for bn in bns]
    saved_c = [q.observer.averaging_constant for q in qs]
    if reset:
        for q in qs:
            q.observer.reset_min_max_vals()
        for bn in bns:
            bn.reset_running_stats()
    for bn in bns:
        bn.momentum = None
    seen = 0
    try:
        with training_mode(model, True), use_bitwidth(model, bits):
            for k, x in enumerate(images):
                for q in qs:
                    q.observer.averaging_constant = 1.0 / (k + 1)
                model(x)
                seen += x.shape[0]
    finally:
        for bn, mom in zip(bns, saved_momentum):
            bn.momentum = mom
        for q, c in zip(qs, saved_c):
            q.observer.averaging_constant = c
    if seen == 0:
        raise TriqdefError("calibration got no images: expected a non-empty held-out split")
    return seen


def post_training_quantize(
    fp_model: nn.Module, bits: Iterable[int], calibration: Sequence[torch.Tensor], first_last_bits: int | None = 8,
    range_estimator: str = "max",
) -> nn.Module:
    """PTQ: wrap the float model and calibrate each bit-width's observers and BN statistics; no training."""
    qmodel = quantize_model(fp_model, bits, first_last_bits, range_estimator=range_estimator)
    for b in model_bits(qmodel):
        if b != FP_BITS:
            calibrate(qmodel, calibration, b)
    return qmodel.eval()


def with_range_estimator(model: nn.Module, estimator: str, calibration: Sequence[torch.Tensor]) -> nn.Module:
    """A copy of the switchable-precision ``model`` whose every activation quantizer uses ``estimator`` (``max`` or
    ``mse``), with each bit-width's observers and BN statistics recalibrated on ``calibration`` (same weights): the
    range estimator's own effect, docs/design.md#activation-range-estimator."""
    if estimator not in RANGE_ESTIMATORS:
        raise TriqdefError(f"unknown activation range estimator {estimator!r}: expected one of {', '.join(RANGE_ESTIMATORS)}")
    copy_ = copy.deepcopy(model)
    for q in activation_quantizers(copy_):
        q.range_estimator = estimator
    copy_.triqdef_range_estimator = estimator
    for b in model_bits(copy_):
        if b != FP_BITS:
            calibrate(copy_, calibration, b)
    return copy_.eval()


def dynamic_quantization(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Dynamic quantization: activation ranges taken per batch instead of from calibrated observers.

    Weights are quantized at run time either way; modifies ``model`` in place and returns it.
    """
    for q in activation_quantizers(model):
        q.dynamic = enabled
    return model
