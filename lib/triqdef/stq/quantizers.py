"""STQ's quantizers: stochastic ternary weights, k-bit quantized ReLU, and the layers that use them.

STQ (Zakariyya et al. 2025, arXiv 2503.08973; "Method Summary" and "Mechanism 2" of its summary) is trained
with quantization-aware training in QKeras with a *heterogeneous* scheme: the first and the last layer at 8
bits, every other layer with stochastic ternary weights and 4-bit quantized-ReLU activations. The summary
leaves the quantizers' details open; these are our readings.

**Ternary weights** (Ternary Weight Networks, Li et al. 2016, per tensor): threshold ``Δ = 0.7 · mean|w|``,
scale ``α = mean of |w| over the weights with |w| > Δ`` (0 when there is none), levels ``{−α, 0, α}``.

* Inference (``model.eval()``): deterministic, ``q = α · sign(w) · [|w| > Δ]``.
* Training, ``rounding="unbiased"`` (the default): *unbiased stochastic rounding* between the two ternary
  levels that bracket ``w``: for ``|w| ≤ α``, ``q = α · sign(w)`` with probability ``|w| / α`` and ``0``
  otherwise, so ``E[q] = w``; a weight beyond the outer levels (``|w| > α``) is ``α · sign(w)``
  (``E[q] = clip(w, −α, α)``). The closer a weight lies to a level, the more often it is rounded to it: the
  probability of each level falls with its quantization error, which is the summary's "probability
  inversely proportional to quantization error". Δ sets α (and the inference rounding); the training draws
  do not use it, so training and inference round differently.
* Training, ``rounding="sigmoid"``: QKeras's ``stochastic_ternary`` rule, on TWN's Δ and α: ``q = α ·
  sign(w)`` with probability ``σ(t · (|w| − Δ) / std(w))`` (temperature ``t``, 8 as QKeras), else 0. Only the
  weights near the threshold are random, and the most probable value is the inference one. (QKeras itself
  uses a per-channel least-squares scale, the threshold at half of it and two sigmoids, which can flip a
  sign with a tiny probability.)
* The summary's other reading, Dong et al. 2017's stochastic quantization (a growing share of the weights
  quantized, the rest kept in full precision), is not implemented.
* The draws come from an explicit ``torch.Generator`` seeded from (layer seed, draw counter); the counter is
  a buffer of the layer (saved in its ``state_dict``), so a run resumed from a checkpoint draws the same.
* Gradient: straight-through, ``∂q/∂w = 1`` everywhere (the TWN / QKeras estimator); double backprop works.

**8-bit weights** (first and last layer): symmetric, per output channel, as the switchable-precision models
(:func:`triqdef.quant.quantize_weight`), straight-through.

**Quantized ReLU** (QKeras ``quantized_relu(bits, integer=0)``): a fixed, unsigned range with no learned or
observed scale, ``y = clamp(round(relu(x) · 2^b), 0, 2^b − 1) / 2^b``, i.e. ``2^b`` levels on ``[0, 1)`` with
step ``2^-b``. Gradient: QKeras's, ``[0 < x ≤ 1]`` (straight-through over the rounding, zero where ReLU or the
clip at 1 saturates); double backprop works.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import quant
from triqdef.errors import TriqdefError

TERNARY_BITS = 2
TERNARY_THRESHOLD_FACTOR = 0.7
ROUNDINGS = ("unbiased", "sigmoid")
SIGMOID_TEMPERATURE = 8.0  # QKeras stochastic_ternary's default
SCALE_BITS = 32  # a stored scale (α of a ternary tensor, one per output channel of a k-bit one) is a float32


def check_weight_bits(bits) -> int:
    """Weight precision of an STQ layer: 2 (stochastic ternary), 3-16 (k-bit uniform) or 32 (full precision)."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not (bits == quant.FP_BITS or 2 <= bits <= 16):
        raise TriqdefError(f"STQ weight bits {bits!r}: expected 2 (ternary), an integer in [3, 16], or 32")
    return bits


def check_activation_bits(bits) -> int:
    """Precision of a quantized ReLU: an integer in [1, 16]."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise TriqdefError(f"quantized ReLU bits {bits!r}: expected an integer in [1, 16]")
    return bits


# --------------------------------------------------------------------------- ternary weights

def ternary_threshold(w: torch.Tensor) -> torch.Tensor:
    """TWN's threshold ``Δ = 0.7 · mean|w|`` (a 0-d tensor)."""
    return TERNARY_THRESHOLD_FACTOR * w.detach().abs().mean()


def ternary_scale(w: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """TWN's scale ``α``: the mean of ``|w|`` over the weights with ``|w| > Δ`` (0 when there is none)."""
    magnitude = w.detach().abs()
    above = magnitude > delta
    return (magnitude * above).sum() / above.sum().clamp_min(1)


class _StraightThrough(torch.autograd.Function):
    """Returns ``q`` (computed without a graph) with the gradient of the identity in ``w``."""

    @staticmethod
    def forward(ctx, w, q):
        return q

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def check_rounding(rounding, temperature) -> None:
    """A training rounding of :data:`ROUNDINGS` and a sigmoid temperature > 0."""
    if rounding not in ROUNDINGS:
        raise TriqdefError(f"ternary rounding {rounding!r}: expected one of {', '.join(ROUNDINGS)}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise TriqdefError(f"ternary sigmoid temperature {temperature!r}: expected a number > 0")


def keep_probability(w: torch.Tensor, rounding: str = "unbiased",
                     temperature: float = SIGMOID_TEMPERATURE) -> torch.Tensor:
    """Probability that each weight is rounded to ``α · sign(w)`` rather than 0 in training (module docstring)."""
    check_rounding(rounding, temperature)
    v = w.detach()
    delta = ternary_threshold(v)
    if rounding == "unbiased":
        alpha = ternary_scale(v, delta)
        return (v.abs() / alpha.clamp_min(torch.finfo(v.dtype).tiny)).clamp_(max=1.0)
    std = v.std(unbiased=False) if v.numel() > 1 else v.abs().mean()
    return torch.sigmoid(temperature * (v.abs() - delta) / std.clamp_min(torch.finfo(v.dtype).tiny))


@torch.no_grad()
def _ternary_values(v: torch.Tensor, generator: torch.Generator | None, rounding: str, temperature: float):
    delta = ternary_threshold(v)
    alpha = ternary_scale(v, delta)
    if generator is None:
        keep = v.abs() > delta
    else:
        p = keep_probability(v, rounding, temperature)
        u = torch.rand(v.shape, generator=generator, dtype=v.dtype).to(v.device)
        keep = u < p
    return torch.where(keep, alpha * torch.sign(v), torch.zeros_like(v))


def ternarize(w: torch.Tensor, generator: torch.Generator | None = None, rounding: str = "unbiased",
              temperature: float = SIGMOID_TEMPERATURE) -> torch.Tensor:
    """Ternary weights ``{−α, 0, α}`` of ``w`` with the straight-through gradient (module docstring).

    ``generator=None``: the deterministic inference rounding ``α · sign(w) · [|w| > Δ]``. A (CPU) generator:
    the stochastic rounding of training (``rounding``: ``unbiased`` or ``sigmoid``), its uniform draws taken
    from that generator.
    """
    return _StraightThrough.apply(w, _ternary_values(w.detach(), generator, rounding, temperature))


class _DeterministicCache:
    """Mixin: remembers the deterministic quantized weight of the current weight values, so that the many
    forwards of an evaluation or an attack quantize each weight once. The key is the weight's storage and
    version counter, which every in-place update (optimizer step, ``load_state_dict``) bumps."""

    def _cached(self, w: torch.Tensor, compute) -> torch.Tensor:
        key = (w.data_ptr(), w._version, w.dtype, w.device, tuple(w.shape))
        cache = self.__dict__.get("_quantized_cache")
        if cache is None or cache[0] != key:
            cache = (key, compute(w.detach()))
            self.__dict__["_quantized_cache"] = cache
        return _StraightThrough.apply(w, cache[1])


class StochasticTernaryQuantizer(nn.Module, _DeterministicCache):
    """The ternary weight quantizer of one layer: stochastic in training mode, deterministic in eval mode.

    ``seed`` identifies the layer's stream of draws; ``draws`` (a buffer) counts the training forwards so far,
    and the generator of a draw is seeded from both. ``rounding`` / ``temperature``: the training rounding
    (module docstring). ``stochastic=False`` rounds deterministically in training as well (plain TWN QAT).
    """

    def __init__(self, seed: int = 0, stochastic: bool = True, rounding: str = "unbiased",
                 temperature: float = SIGMOID_TEMPERATURE):
        super().__init__()
        check_rounding(rounding, temperature)
        self.seed, self.stochastic = int(seed), bool(stochastic)
        self.rounding, self.temperature = rounding, float(temperature)
        self.register_buffer("draws", torch.zeros((), dtype=torch.int64))

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.draws) * 7919 + 17)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.stochastic):
            return self._cached(w, lambda v: _ternary_values(v, None, self.rounding, self.temperature))
        g = self.generator()
        self.draws += 1
        return ternarize(w, g, self.rounding, self.temperature)

    def extra_repr(self) -> str:
        return f"seed={self.seed}, stochastic={self.stochastic}, rounding={self.rounding}"


class UniformWeightQuantizer(nn.Module, _DeterministicCache):
    """k-bit symmetric per-output-channel weights (:func:`triqdef.quant.quantize_weight`, straight-through);
    32 bits: identity."""

    def __init__(self, bits: int = 8):
        super().__init__()
        self.bits = quant.check_bits(bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.bits == quant.FP_BITS:
            return w
        return self._cached(w, lambda v: quant.quantize_weight(v, self.bits))

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def weight_quantizer(bits: int, seed: int = 0, stochastic: bool = True, rounding: str = "unbiased",
                     temperature: float = SIGMOID_TEMPERATURE) -> nn.Module:
    """The weight quantizer of ``bits``: stochastic ternary at 2 bits, uniform k-bit otherwise (32: identity)."""
    check_weight_bits(bits)
    if bits == TERNARY_BITS:
        return StochasticTernaryQuantizer(seed, stochastic, rounding, temperature)
    return UniformWeightQuantizer(bits)


# --------------------------------------------------------------------------- layers

class _QuantizedWeights:
    """Mixin: a layer whose ``weight`` goes through ``self.weight_quantizer`` at every forward."""

    weight_bits: int = quant.FP_BITS

    def _setup(self, weight_bits: int, seed: int, stochastic: bool, rounding: str, temperature: float) -> None:
        self.weight_bits = check_weight_bits(weight_bits)
        self.weight_quantizer = weight_quantizer(weight_bits, seed, stochastic, rounding, temperature)

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward uses (in eval mode: the deterministic one, as deployed)."""
        return self.weight_quantizer(self.weight)

    def scale_count(self) -> int:
        """How many float32 scales the quantized weight stores (0 at 32 bits)."""
        if self.weight_bits == quant.FP_BITS:
            return 0
        return 1 if self.weight_bits == TERNARY_BITS else self.weight.shape[0]


class TernaryConv2d(nn.Conv2d, _QuantizedWeights):
    """``nn.Conv2d`` with quantized weights: stochastic ternary by default, ``weight_bits=8`` for the
    heterogeneous scheme's first layer (or 32: full precision). Same parameters and state-dict keys as
    ``nn.Conv2d`` plus the quantizer's draw counter. Grouped (depthwise) convolutions work the same way."""

    def __init__(self, *args, weight_bits: int = TERNARY_BITS, seed: int = 0, stochastic: bool = True,
                 rounding: str = "unbiased", temperature: float = SIGMOID_TEMPERATURE, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(weight_bits, seed, stochastic, rounding, temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"


class TernaryLinear(nn.Linear, _QuantizedWeights):
    """``nn.Linear`` with quantized weights: stochastic ternary by default, ``weight_bits=8`` for the last layer."""

    def __init__(self, *args, weight_bits: int = TERNARY_BITS, seed: int = 0, stochastic: bool = True,
                 rounding: str = "unbiased", temperature: float = SIGMOID_TEMPERATURE, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup(weight_bits, seed, stochastic, rounding, temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}"


# --------------------------------------------------------------------------- activations

class _QuantizedReLUFunction(torch.autograd.Function):
    """``clamp(round(relu(x) · 2^b), 0, 2^b − 1) / 2^b`` with the gradient ``g · [0 < x ≤ 1]``."""

    @staticmethod
    def forward(ctx, x, bits):
        levels = 2.0**bits
        q = F.relu(x).mul_(levels)
        if q.dtype == torch.float32:  # torch.round's values (half to even), 20x faster on this CPU (triqdef.quant)
            q.add_(quant._ROUNDING_MAGIC).sub_(quant._ROUNDING_MAGIC)
        else:
            q = torch.round(q)
        q.clamp_(max=levels - 1).div_(levels)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(((x > 0) & (x <= 1)).to(x.dtype))
        return q

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None  # linear in grad: double backprop works


def quantized_relu(x: torch.Tensor, bits: int) -> torch.Tensor:
    """QKeras ``quantized_relu(bits, integer=0)``: ``clamp(round(relu(x) · 2^b), 0, 2^b − 1) / 2^b``.

    Values on ``{0, 2^-b, ..., 1 − 2^-b}``. Gradient as QKeras's (the gradient of ``relu(x)`` for ``x ≤ 1``,
    0 above): ``[0 < x ≤ 1]``, straight-through over the rounding. Units saturated above 1 or below 0 pass no
    gradient, so a trained network's input gradient can be sparse or vanish (gradient masking against the
    white-box attacks; :mod:`triqdef.eval.art_suite` also runs black-box ones).
    """
    check_activation_bits(bits)
    return _QuantizedReLUFunction.apply(x, bits)


class QuantizedReLU(nn.Module):
    """:func:`quantized_relu` as a module (one per activation, as every ReLU of the repository's models)."""

    def __init__(self, bits: int = 4):
        super().__init__()
        self.bits = check_activation_bits(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_relu(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
