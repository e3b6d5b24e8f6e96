"""TinySTQNet: STQ's tiny CIFAR-10 network, as a full-precision baseline or as the STQ model.

The summary of Zakariyya et al. 2025 (arXiv 2503.08973; "Architecture Onboarding") gives the topology but
not the widths: grayscale 32×32 input, 6 convolutional layers (standard, depthwise and separable) each
followed by BatchNorm and a (quantized) ReLU, residual connections, then 3 dense layers; 998K parameters and
4,496 KB in full precision, 410 KB as STQ. Our network:

=====  ==========================================  ============  ========================================
layer  operation                                   output        STQ precision (heterogeneous)
=====  ==========================================  ============  ========================================
 in    RGB [0, 1] → luma (ITU-R 601) → normalise   1×32×32       –
 1     conv 3×3, 1 → c1                            c1×32×32      8-bit weights, 8-bit ReLU
 2     conv 3×3, c1 → c1, **+ residual**; maxpool  c1×16×16      ternary weights, 4-bit ReLU
 3     depthwise 3×3, c1, **+ residual**           c1×16×16      ternary, 4-bit
 4     separable 3×3 (depthwise + 1×1), c1 → c2;   c2×8×8        ternary, 4-bit
       maxpool
 5     separable 3×3, c2 → c2, **+ residual**      c2×8×8        ternary, 4-bit
 6     conv 3×3, c2 → c3; maxpool                  c3×4×4        ternary, 4-bit
 7-8   dense 16·c3 → h1 → h2                       h2            ternary, 4-bit
 9     dense h2 → 10 (logits)                      10            8-bit weights, logits not quantized
=====  ==========================================  ============  ========================================

Defaults c1, c2, c3 = 32, 64, 128 and h1, h2 = 384, 192: 953K parameters (3,729 KB at 32 bits, with
BatchNorm's running statistics; within the ±50 % of the paper's 998K / 4,496 KB) at about 16M
multiply-accumulates per image, 2.5x fewer than ResNet-20, so that it trains quickly on a CPU; most parameters
sit in the first dense layer, as in a Keras flatten-dense head. As STQ the same network stores 240 KB
(:func:`memory_footprint_kb`).

* The RGB → gray conversion (``0.2989 R + 0.587 G + 0.114 B``, torchvision's ``rgb_to_grayscale``) and the
  normalisation are the model's first layers, so it takes [0, 1] RGB ``(N, 3, 32, 32)`` as every model of
  the repository does and attacks perturb the same pixels; its output depends on the input's luma only.
* A residual adds the block's (quantized) activation to its input: ``y = act(bn(conv(x))) + x``, as a Keras
  ``Add()`` after a ``QActivation``; two values on the ``2^-b`` grid add to one on that grid.
* The FP baseline (``quantized=False``) is the same network with ``nn.Conv2d``/``nn.Linear``/``nn.ReLU``; the
  STQ model uses :class:`~triqdef.stq.quantizers.TernaryConv2d` / ``TernaryLinear`` (same parameter names) and
  :class:`~triqdef.stq.quantizers.QuantizedReLU`. The logits are at temperature 1; defensive distillation
  divides them by T in its losses only (:mod:`triqdef.stq.distillation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from triqdef.errors import TriqdefError
from triqdef.models import MEMORY_FORMAT, Normalize
from triqdef.stq.quantizers import (SCALE_BITS, SIGMOID_TEMPERATURE, QuantizedReLU, TernaryConv2d, TernaryLinear,
                                    _QuantizedWeights, check_activation_bits, check_rounding, check_weight_bits)

#: ITU-R BT.601 luma weights, as torchvision's ``rgb_to_grayscale``.
LUMA_WEIGHTS = (0.2989, 0.587, 0.114)
#: Mean and standard deviation of the luma of the 50,000 CIFAR-10 training images (prepared copy, measured once).
GRAY_MEAN, GRAY_STD = (0.4807,), (0.2388,)
FP_STORAGE_BITS = 32


class Grayscale(nn.Module):
    """RGB ``(N, 3, H, W)`` → luma ``(N, 1, H, W)`` with :data:`LUMA_WEIGHTS`."""

    def __init__(self):
        super().__init__()
        self.register_buffer("weights", torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise TriqdefError(f"TinySTQNet input of shape {tuple(x.shape)}: expected RGB images (N, 3, H, W)")
        return (x * self.weights).sum(1, keepdim=True)


class SeparableConv2d(nn.Module):
    """Keras ``SeparableConv2D``: a depthwise ``k×k`` convolution then a pointwise ``1×1`` one (no BN between)."""

    def __init__(self, depthwise: nn.Conv2d, pointwise: nn.Conv2d):
        super().__init__()
        self.depthwise, self.pointwise = depthwise, pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _check_widths(name: str, values: Sequence[int], n: int) -> tuple[int, ...]:
    values = tuple(values)
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise TriqdefError(f"TinySTQNet {name}={list(values)!r}: expected {n} positive integers")
    return values


class TinySTQNet(nn.Module):
    """The STQ network (module docstring); build it with :func:`build_stq`.

    ``quantized``: STQ (heterogeneous ternary / 8-bit weights, 4- / 8-bit activations) or the FP baseline.
    ``widths`` = (c1, c2, c3) channels, ``hidden`` = (h1, h2) dense units. ``seed`` seeds the ternary
    quantizers' draws (layer ``i`` gets ``seed * 1000 + i``); ``rounding`` / ``temperature`` choose their
    training rounding (:mod:`triqdef.stq.quantizers`); ``stochastic=False`` makes them deterministic in
    training too. :meth:`config` gives the arguments that rebuild it (for a checkpoint's metadata).
    """

    def __init__(self, quantized: bool, widths: Sequence[int] = (32, 64, 128), hidden: Sequence[int] = (384, 192),
                 num_classes: int = 10, activation_bits: int = 4, edge_bits: int = 8, seed: int = 0,
                 stochastic: bool = True, rounding: str = "unbiased", temperature: float = SIGMOID_TEMPERATURE):
        super().__init__()
        c1, c2, c3 = _check_widths("widths", widths, 3)
        h1, h2 = _check_widths("hidden", hidden, 2)
        (num_classes,) = _check_widths("num_classes", [num_classes], 1)
        self._config = {"quantized": bool(quantized), "widths": [c1, c2, c3], "hidden": [h1, h2],
                        "num_classes": num_classes, "activation_bits": activation_bits, "edge_bits": edge_bits,
                        "seed": seed, "stochastic": bool(stochastic), "rounding": rounding,
                        "temperature": float(temperature)}
        check_rounding(rounding, temperature)
        layer = iter(range(1, 100))

        def conv(cin: int, cout: int, k: int, groups: int = 1, bits: int = 2) -> nn.Conv2d:
            kw = {"padding": k // 2, "groups": groups, "bias": False}
            if not quantized:
                return nn.Conv2d(cin, cout, k, **kw)
            return TernaryConv2d(cin, cout, k, weight_bits=bits, seed=seed * 1000 + next(layer), stochastic=stochastic,
                                 rounding=rounding, temperature=temperature, **kw)

        def dense(cin: int, cout: int, bits: int = 2) -> nn.Linear:
            if not quantized:
                return nn.Linear(cin, cout)
            return TernaryLinear(cin, cout, weight_bits=bits, seed=seed * 1000 + next(layer), stochastic=stochastic,
                                 rounding=rounding, temperature=temperature)

        def act(bits: int = activation_bits) -> nn.Module:
            return QuantizedReLU(bits) if quantized and bits != FP_STORAGE_BITS else nn.ReLU()

        check_weight_bits(edge_bits)
        for bits in (activation_bits, edge_bits):
            if bits != FP_STORAGE_BITS:
                check_activation_bits(bits)

        self.gray = Grayscale()
        self.normalize = Normalize(GRAY_MEAN, GRAY_STD)
        self.conv1, self.bn1, self.act1 = conv(1, c1, 3, bits=edge_bits), nn.BatchNorm2d(c1), act(edge_bits)
        self.conv2, self.bn2, self.act2 = conv(c1, c1, 3), nn.BatchNorm2d(c1), act()
        self.pool1 = nn.MaxPool2d(2)
        self.conv3, self.bn3, self.act3 = conv(c1, c1, 3, groups=c1), nn.BatchNorm2d(c1), act()
        self.conv4 = SeparableConv2d(conv(c1, c1, 3, groups=c1), conv(c1, c2, 1))
        self.bn4, self.act4 = nn.BatchNorm2d(c2), act()
        self.pool2 = nn.MaxPool2d(2)
        self.conv5 = SeparableConv2d(conv(c2, c2, 3, groups=c2), conv(c2, c2, 1))
        self.bn5, self.act5 = nn.BatchNorm2d(c2), act()
        self.conv6, self.bn6, self.act6 = conv(c2, c3, 3), nn.BatchNorm2d(c3), act()
        self.pool3 = nn.MaxPool2d(2)
        self.fc1, self.act7 = dense(16 * c3, h1), act()
        self.fc2, self.act8 = dense(h1, h2), act()
        self.fc3 = dense(h2, num_classes, bits=edge_bits)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def config(self) -> dict:
        """The keyword arguments that rebuild this network (``TinySTQNet(**config)`` or ``build_stq(**config)``)."""
        return dict(self._config, widths=list(self._config["widths"]), hidden=list(self._config["hidden"]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened output of the convolutional part, ``(N, 16 · c3)``."""
        h = self.act1(self.bn1(self.conv1(self.normalize(self.gray(x)))))
        h = self.pool1(self.act2(self.bn2(self.conv2(h))) + h)
        h = self.act3(self.bn3(self.conv3(h))) + h
        h = self.pool2(self.act4(self.bn4(self.conv4(h))))
        h = self.act5(self.bn5(self.conv5(h))) + h
        h = self.pool3(self.act6(self.bn6(self.conv6(h))))
        return torch.flatten(h, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act8(self.fc2(self.act7(self.fc1(self.features(x))))))


def build_stq(quantized: bool, *, widths: Sequence[int] = (32, 64, 128), hidden: Sequence[int] = (384, 192),
              num_classes: int = 10, activation_bits: int = 4, edge_bits: int = 8, seed: int = 0,
              stochastic: bool = True, rounding: str = "unbiased",
              temperature: float = SIGMOID_TEMPERATURE) -> TinySTQNet:
    """The FP baseline (``quantized=False``) or the STQ model (``True``) of :class:`TinySTQNet`.

    Weights are initialised from PyTorch's global generator (seed it first for a reproducible start) and laid
    out channels-last, as :func:`triqdef.models.build_model` does.
    """
    model = TinySTQNet(quantized, widths, hidden, num_classes, activation_bits, edge_bits, seed, stochastic, rounding,
                       temperature)
    return model.to(memory_format=MEMORY_FORMAT)


def stq_from_checkpoint(path) -> tuple[TinySTQNet, dict]:
    """Rebuild a :class:`TinySTQNet` from a checkpoint of :func:`triqdef.training.loop.fit` whose metadata holds
    its :meth:`TinySTQNet.config` under ``"stq"``; returns the model (eval mode) and the metadata."""
    from triqdef.training.loop import read_checkpoint

    ckpt = read_checkpoint(path)
    config = ckpt["meta"].get("stq")
    if not isinstance(config, dict):
        raise TriqdefError(f"checkpoint {path} has no 'stq' entry in its metadata: expected a TinySTQNet checkpoint "
                           "(meta={'stq': model.config(), ...})")
    model = build_stq(**config)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160]
        raise TriqdefError(f"checkpoint {path} does not match TinySTQNet {config}: {first}") from None
    return model.eval(), ckpt["meta"]


# --------------------------------------------------------------------------- footprint

def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters())


def storage_bits(model: nn.Module) -> dict[str, int]:
    """Bits each module of ``model`` stores for inference, by module name (modules that store nothing left out).

    * a quantized layer (:class:`~triqdef.stq.quantizers.TernaryConv2d` / ``TernaryLinear``): its weight at
      ``weight_bits`` per value (2 for ternary), plus one float32 scale per tensor (ternary α) or per output
      channel (k-bit), plus its bias at 32 bits;
    * any other parameter (FP conv / dense weights and biases, BatchNorm's weight and bias) at 32 bits;
    * BatchNorm's running mean and variance at 32 bits (what a Keras model counts as non-trainable
      parameters); other buffers (the normalisation constants, draw counters, ``num_batches_tracked``) are
      not counted.
    """
    out: dict[str, int] = {}
    for name, m in model.named_modules():
        bits = 0
        for pname, p in m.named_parameters(recurse=False):
            if pname == "weight" and isinstance(m, _QuantizedWeights):
                bits += p.numel() * m.weight_bits + m.scale_count() * SCALE_BITS
            else:
                bits += p.numel() * FP_STORAGE_BITS
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            bits += (m.running_mean.numel() + m.running_var.numel()) * FP_STORAGE_BITS
        if bits:
            out[name] = bits
    return out


def memory_footprint_kb(model: nn.Module) -> float:
    """Stored size of ``model`` in KB (1 KB = 1024 bytes): the sum of :func:`storage_bits` / 8 / 1024."""
    return sum(storage_bits(model).values()) / 8 / 1024
