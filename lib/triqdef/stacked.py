"""Every bit-width of a switchable-precision CIFAR ResNet in one pass (issue 31, item 1; docs/design.md#stacked-bit-widths).

The sequential form runs the shared backbone once per bit-width b of B (:func:`triqdef.quant.use_bitwidth`), each
pass launching its own few hundred kernels. Here the G = |B| passes run side by side along the channel axis:

* a convolution's weight is fake-quantized at every bit-width at once (one per-channel absmax shared by all of
  them, a per-(bit-width, channel) scale) and the G copies are concatenated, then one convolution runs with
  ``groups=G`` (the first convolution, whose input is shared, with ``groups=1``);
* the per-bit-width BatchNorms are one BatchNorm over the stacked channels (their statistics and affine
  parameters concatenated; the updated running statistics are written back to each bit-width's own BN);
* the activation quantizers of one ReLU run as one per-group fake quantization, each group at its own bit-width
  and scale, with a min/max moving average that reads no tensor value into Python (no host sync;
  :func:`triqdef.quant.observe_moving_average`, shared with the sequential form);
* the last linear layer is one batched matrix product over the groups.

It is the sequential passes, mathematically: the same weights, statistics and straight-through gradients
(``tests/test_stacked.py`` checks the loss, every gradient and every running statistic against the sequential form
for 3 training steps). Only :class:`triqdef.models.CifarResNet` (ResNet-20/56) is stacked; other models raise.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.models import BasicBlock, CifarResNet

_INF = float("inf")


@functools.lru_cache(maxsize=None)
def _constant(values: tuple, dtype: torch.dtype, device: str) -> torch.Tensor:
    """A small constant tensor, made once per device: no host-to-device copy inside a step (CUDA-graph capturable)."""
    return torch.tensor(values, dtype=dtype, device=device)


def _effective(layer: nn.Module, bits: Sequence[int]) -> list[int]:
    """Each bit-width as ``layer`` quantizes its weight at it (``min_bits`` raises the first and last layers)."""
    return [b if b == quant.FP_BITS or layer.min_bits is None else max(b, layer.min_bits) for b in bits]


def stacked_weight(weight: torch.Tensor, bits: Sequence[int]) -> torch.Tensor:
    """``weight`` fake-quantized at each of ``bits`` (:func:`triqdef.quant.quantize_weight`, per output channel),
    stacked on a new first axis: (G, *weight.shape). One absmax per channel serves every bit-width; the gradient
    is straight-through (the scale covers the absmax, so nothing is clipped) and sums over the bit-widths."""
    g = len(bits)
    expanded = weight.unsqueeze(0).expand(g, *weight.shape)
    quantized = [i for i, b in enumerate(bits) if b != quant.FP_BITS]
    if not quantized:
        return expanded
    shape = (g,) + (1,) * weight.dim()
    with torch.no_grad():
        qmax = _constant(tuple(quant.signed_qmax(b) if b != quant.FP_BITS else 1 for b in bits), weight.dtype,
                         str(weight.device)).view(shape)
        absmax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
        scale = (absmax.view(1, -1, *(1,) * (weight.dim() - 1)) / qmax).clamp_min(torch.finfo(torch.float32).tiny)
        rounded = (weight.detach().unsqueeze(0) * torch.reciprocal(scale)).round_()
        q = rounded.clamp_(-qmax, qmax).mul_(scale)
        if len(quantized) < g:   # a 32-bit group keeps the float weight
            fp = _constant(tuple(b == quant.FP_BITS for b in bits), torch.bool, str(weight.device)).view(shape)
            q = torch.where(fp, weight.detach().unsqueeze(0), q)
    return q + (expanded - expanded.detach())   # the value is q exactly; the gradient reaches weight


def _conv(layer: quant.QuantConv2d, h: torch.Tensor, bits: Sequence[int], shared_input: bool) -> torch.Tensor:
    w = stacked_weight(layer.weight, _effective(layer, bits)).flatten(0, 1)
    groups = 1 if shared_input else len(bits)
    return F.conv2d(h, w, None if layer.bias is None else layer.bias.repeat(len(bits)), layer.stride,
                    layer.padding, layer.dilation, groups)


def _batchnorm(layer: quant.SwitchableBatchNorm2d, h: torch.Tensor, bits: Sequence[int]) -> torch.Tensor:
    """One BatchNorm over the stacked channels; in training mode the running statistics it updates are copied back
    to each bit-width's BN (as the sequential passes would have updated them)."""
    bns = [layer.bns[str(b)] for b in bits]
    first = bns[0]
    if any(bn.momentum != first.momentum or bn.eps != first.eps for bn in bns):
        raise TriqdefError("stacked BatchNorm: every bit-width's BN needs the same momentum and eps")
    training = layer.training and first.track_running_stats
    mean = torch.cat([bn.running_mean for bn in bns])
    var = torch.cat([bn.running_var for bn in bns])
    if training and first.momentum is None:
        raise TriqdefError("stacked BatchNorm: a cumulative average (momentum None) is the calibration pass, not a "
                           "training step; calibrate with triqdef.quant.calibrate")
    out = F.batch_norm(h, mean, var, torch.cat([bn.weight for bn in bns]), torch.cat([bn.bias for bn in bns]),
                       layer.training, first.momentum or 0.0, first.eps)
    if training:
        with torch.no_grad():
            torch._foreach_copy_([bn.running_mean for bn in bns] + [bn.running_var for bn in bns],
                                 list(mean.chunk(len(bns))) + list(var.chunk(len(bns))))
            torch._foreach_add_([bn.num_batches_tracked for bn in bns], 1)
    return out


class _StackedFakeQuantize(torch.autograd.Function):
    """Per-group fake quantization of a post-ReLU tensor (x >= 0), zero-point 0: ``s_g * clamp(round(x / s_g), 0,
    qmax_g)`` on each group's
    channels (``scale`` and ``qmax`` broadcast per channel), the straight-through gradient ``g * mask`` (the mask
    is the in-range test). A group with ``qmax`` = inf passes through unchanged (the 32-bit view)."""

    @staticmethod
    def forward(ctx, x, scale, qmax, passthrough):
        # x >= 0 after the ReLU, so only the top of the range clips; rounded half to even by the 1.5 * 2^23 trick of
        # quant._FakeQuantizePerTensor (exact below 2^22; beyond, only the side of qmax matters)
        rounded = (x * torch.reciprocal(scale)).add_(quant._ROUNDING_MAGIC).sub_(quant._ROUNDING_MAGIC)
        mask = (rounded <= qmax) | passthrough
        ctx.save_for_backward(mask)
        return torch.where(passthrough, x, torch.minimum(rounded, qmax).mul_(scale))

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None


@functools.lru_cache(maxsize=None)
def _channel_ranges(group_qmax: tuple, channels: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per stacked channel, made once per layout: the top of its group's integer range (inf for the 32-bit group)
    and whether it passes through unquantized, both shaped (1, G·C, 1, 1)."""
    qmax = torch.tensor(group_qmax, device=device).repeat_interleave(channels).view(1, -1, 1, 1)
    return qmax, torch.isinf(qmax)


def _relu(layer: quant.QuantReLU, h: torch.Tensor, bits: Sequence[int]) -> torch.Tensor:
    """ReLU, then each group's activation quantizer (identity for the 32-bit group)."""
    h = F.relu6(h) if layer.six else F.relu(h)
    quantized = [(i, layer.quantizers[str(b)]) for i, b in enumerate(bits) if b != quant.FP_BITS]
    if not quantized:
        return h
    g, channels = len(bits), h.shape[1] // len(bits)
    qs = [q for _, q in quantized]
    if any(q.dynamic or q.signed for q in qs):
        raise TriqdefError("stacked activation quantizers: dynamic or signed quantizers are not stacked")
    if layer.training and any(q.observer_enabled for q in qs):
        if not all(q.observer_enabled for q in qs):
            raise TriqdefError("stacked observers: freeze every bit-width's observers or none")
        with torch.no_grad():
            grouped = h.unflatten(1, (g, channels))
            index = _constant(tuple(i for i, _ in quantized), torch.long, str(h.device))
            # per channel first (a reduction over N, H, W that channels-last memory reads in order), then per group
            lo = h.amin(dim=(0, 2, 3)).view(g, channels).amin(1).index_select(0, index)
            hi = h.amax(dim=(0, 2, 3)).view(g, channels).amax(1).index_select(0, index)
            mse = [k for k, (_, q) in enumerate(quantized) if q.range_estimator == "mse"]
            if mse:   # the mse estimator averages [0, its clip] (ActivationQuantizer.batch_range)
                clips = torch.stack([quant.mse_clip(grouped[:, quantized[k][0]], qs[k].qmin, qs[k].qmax) for k in mse])
                at = _constant(tuple(mse), torch.long, str(h.device))
                lo, hi = lo.index_fill(0, at, 0.0), hi.index_copy(0, at, clips)
        quant.observe_moving_average(qs, lo, hi)
    with torch.no_grad():
        device, per_channel = str(h.device), (1, g * channels, 1, 1)
        index = _constant(tuple(i for i, _ in quantized), torch.long, device)
        qmax_q = _constant(tuple(float(q.qmax) for q in qs), torch.float32, device)
        top = torch.stack([q.observer.max_val.reshape(()) for q in qs]).clamp_min(0)
        scale_q = (top / qmax_q).clamp_min(torch.finfo(torch.float32).tiny)
        scale = _constant((1.0,) * g, torch.float32, device).index_copy(0, index, scale_q)
        scale = scale.repeat_interleave(channels).view(per_channel)
        qmax, passthrough = _channel_ranges(tuple(float(layer.quantizers[str(b)].qmax) if b != quant.FP_BITS
                                                  else _INF for b in bits), channels, device)
    return _StackedFakeQuantize.apply(h, scale, qmax, passthrough)


def _shortcut(block: BasicBlock, h: torch.Tensor, groups: int) -> torch.Tensor:
    if block.stride != 1:
        h = h[:, :, :: block.stride, :: block.stride]
    if block.pad:
        h = F.pad(h.unflatten(1, (groups, -1)), (0, 0, 0, 0, block.pad // 2, block.pad - block.pad // 2)).flatten(1, 2)
    return h


def stacked_logits(model: nn.Module, x: torch.Tensor, bits: Sequence[int]) -> torch.Tensor:
    """The logits of ``model`` (a switchable-precision :class:`~triqdef.models.CifarResNet`) at each of ``bits``, in
    one pass: (G, N, classes), group g the logits ``model`` gives at ``bits[g]``. In training mode its observers
    and BN statistics update as the G sequential passes would update them."""
    inner = getattr(model, "module", model)
    if not isinstance(inner, CifarResNet):
        raise TriqdefError(f"stacked bit-widths support the CIFAR ResNets; got {type(inner).__name__}")
    bits = [quant.check_bits(b) for b in bits]
    missing = [b for b in bits if b not in quant.model_bits(inner)]
    if missing or len(set(bits)) != len(bits) or not bits:
        raise TriqdefError(f"stacked bit-widths {bits}: expected distinct bit-widths of the model's {quant.model_bits(inner)}")
    g = len(bits)
    h = _conv(inner.conv1, inner.normalize(x), bits, shared_input=True)
    h = _relu(inner.relu, _batchnorm(inner.bn1, h, bits), bits)
    for block in (*inner.layer1, *inner.layer2, *inner.layer3):
        out = _relu(block.relu1, _batchnorm(block.bn1, _conv(block.conv1, h, bits, False), bits), bits)
        out = _batchnorm(block.bn2, _conv(block.conv2, out, bits, False), bits)
        h = _relu(block.relu2, out + _shortcut(block, h, g), bits)
    pooled = torch.flatten(inner.pool(h), 1).unflatten(1, (g, -1))            # (N, G, C)
    w = stacked_weight(inner.fc.weight, _effective(inner.fc, bits))          # (G, classes, C)
    return torch.einsum("ngc,gkc->gnk", pooled, w) + inner.fc.bias


def joint_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: Sequence[int],
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint QAT's loss, the mean over ``bits`` of each bit-width's cross-entropy, from one stacked pass; returns
    (loss, logits (G, N, classes)). Its gradient is the sequential loop's ``sum_b CE_b / G``."""
    logits = stacked_logits(model, x, bits)
    g = len(bits)
    loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(g), label_smoothing=label_smoothing)
    return loss, logits


def sequential_joint_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: Sequence[int],
                              label_smoothing: float = 0.0) -> torch.Tensor:
    """The reference :func:`joint_loss` is checked and timed against: the training loop's joint QAT step, one pass
    per bit-width, each ``CE_b / G`` backpropagated in turn (``training/loop.py``). Returns the mean loss, detached."""
    total = torch.zeros((), device=x.device)
    for b in bits:
        with quant.use_bitwidth(model, b):
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
            (loss / len(bits)).backward()
        total = total + loss.detach() / len(bits)
    return total
