"""Every bit-width of a switchable-precision CIFAR ResNet in one pass (issue 31, item 1; docs/design.md#stacked-bit-widths).

The sequential form runs the shared backbone once per bit-width b of B (:func:`triqdef.quant.use_bitwidth`), each
pass launching its own few hundred kernels. Here the G = |B| passes run side by side along the channel axis:

* a convolution's weight is fake-quantized at every bit-width at once (one per-channel absmax shared by all of
  them, a per-(bit-width, channel) scale; one autograd function whose gradient is the sum over the copies) and the
  G copies are concatenated, then one convolution runs with ``groups=G`` (the first convolution, whose input is
  shared, with ``groups=1``);
* the per-bit-width BatchNorms are one BatchNorm over the stacked channels (their affine parameters concatenated;
  their running statistics one view of the storage they share, updated in place: shared storage, below);
* the activation quantizers of one ReLU run as one per-group fake quantization, each group at its own bit-width
  and scale (the 32-bit group at scale 1, unrounded), with the observers' min/max moving average computed for all
  groups at once on a (2, G) view of their buffers and written into it in place, reading no tensor value into
  Python (no host sync; the arithmetic of :func:`triqdef.quant.observe_moving_average`);
* the last linear layer is one batched matrix product over the groups;
* the BNs' batch counts are one ``add_`` on a view of all of them.

Shared storage (docs/design.md#stacked-bit-widths): the per-bit-width buffers a training pass updates (each
layer's BN running means, its running variances, each ReLU's observers' minima and maxima, every BN's
``num_batches_tracked``) are laid out, on the first training pass, as consecutive runs of one storage per set, in
the pass's bit-width order (:func:`_shared_view`): each buffer stays its own tensor object, with its own value,
shape, dtype and state-dict key, only its memory moves (``Tensor.set_``). The pass then reads and updates each set
through one view of that storage, one aten op, where per-tensor reads and write-backs cost two a tensor (on the
CPU, a foreach call is one aten op per tensor). A set whose storage something replaced (``.to``, a buffer
assigned anew) is laid out again at the next training pass, which copies its values; never inside a CUDA graph
capture (refused). Parameters are not moved: each keeps its own storage, and the optimiser sees the same tensors.

It is the sequential passes, mathematically: the same weights, statistics and straight-through gradients
(``tests/test_stacked.py`` checks the loss, every gradient and every running statistic against the sequential form
for 3 training steps, and one stacked ReLU and the weight quantization against each bit-width's own, bit for bit).
Only :class:`triqdef.models.CifarResNet` (ResNet-20/56) is stacked; other models raise.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.models import BasicBlock, CifarResNet

_INF = float("inf")
_TINY = torch.finfo(torch.float32).tiny


@functools.lru_cache(maxsize=None)
def _constant(values: float | tuple, dtype: torch.dtype, device: str, shape: tuple | None = None) -> torch.Tensor:
    """A small constant tensor (``values`` a number or a tuple, viewed as ``shape``), made once per device: no
    host-to-device copy inside a step (CUDA-graph capturable)."""
    t = torch.tensor(values, dtype=dtype, device=device)
    return t if shape is None else t.view(shape)


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 0-dim tensor of ``like``'s dtype and device (cached): the same arithmetic as the Python number in
    a tensor op, whose conversion to a tensor costs four aten ops on every call."""
    return _constant(float(value), like.dtype, str(like.device))


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """The strides of a contiguous tensor of ``shape``."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    return tuple(strides)


def _slices(flat: torch.Tensor, offsets: Sequence[int], shape: Sequence[int]) -> list[torch.Tensor]:
    """Views of ``shape`` into the contiguous ``flat`` at the given element offsets, one ``as_strided`` each (``unbind``
    and ``chunk`` cost two and three aten ops a piece): a gradient's pieces."""
    if not flat.is_contiguous():
        flat = flat.contiguous()
    strides = _contiguous_strides(shape)
    return [flat.as_strided(shape, strides, flat.storage_offset() + o) for o in offsets]


def _shared_view(tensors: Sequence[torch.Tensor], offsets: Sequence[int], shape: Sequence[int],
                 lay_out: bool, fill: float = 0.0) -> torch.Tensor | None:
    """``tensors`` (one dtype and device) as one contiguous tensor of ``shape`` over the storage they share, tensor k
    its elements from offset ``offsets[k]`` on: an ``as_strided`` view (one aten op) whose in-place updates are the
    tensors'. Where they do not lie so (checked on the host, no tensor read), ``lay_out`` moves them there first
    (:func:`_lay_out`, elements no tensor covers set to ``fill``); otherwise returns None."""
    first = tensors[0]
    ptr, base = first.untyped_storage().data_ptr(), first.storage_offset() - offsets[0]
    numel = 1
    for size in shape:
        numel *= size
    shared = base >= 0 and (base + numel) * first.element_size() <= first.untyped_storage().nbytes() and all(
        t.dtype == first.dtype and t.device == first.device and t.is_contiguous()
        and t.untyped_storage().data_ptr() == ptr
        and t.storage_offset() - o == base for t, o in zip(tensors, offsets))
    if not shared:
        if not lay_out:
            return None
        _lay_out(tensors, offsets, numel, fill)
    return first.as_strided(tuple(shape), _contiguous_strides(shape), first.storage_offset() - offsets[0])


def _lay_out(tensors: Sequence[torch.Tensor], offsets: Sequence[int], numel: int, fill: float) -> None:
    """Moves each of ``tensors`` into one new storage of ``numel`` elements at its offset, values kept and tensor
    objects kept (``Tensor.set_``: the modules, and DDP's buffer list, taken when it wraps the model, still hold
    them)."""
    first = tensors[0]
    if any(t.dtype != first.dtype or t.device != first.device or t.requires_grad for t in tensors):
        raise TriqdefError("stacked state: the bit-widths' buffers of one layer need one dtype and device")
    if first.is_cuda and torch.cuda.is_current_stream_capturing():
        raise TriqdefError("stacked state: the bit-widths' buffers are laid out at the first training pass, not "
                           "inside a CUDA graph capture; run an eager pass (a warm-up step) first")
    with torch.no_grad():
        block = torch.full((numel,), fill, dtype=first.dtype, device=first.device)
        for t, o in zip(tensors, offsets):
            block[o:o + t.numel()].copy_(t.reshape(-1))
        storage = block.untyped_storage()
        for t, o in zip(tensors, offsets):
            t.set_(storage, o, t.shape, _contiguous_strides(t.shape))


def _effective(layer: nn.Module, bits: Sequence[int]) -> list[int]:
    """Each bit-width as ``layer`` quantizes its weight at it (``min_bits`` raises the first and last layers)."""
    return [b if b == quant.FP_BITS or layer.min_bits is None else max(b, layer.min_bits) for b in bits]


class _QuantizeWeightPerGroup(torch.autograd.Function):
    """``weight`` fake-quantized at every group's bit-width at once, the G copies concatenated along the output
    channels: (G·O, ...). Per output channel one absmax serves every group; group g's scale is absmax / qmax[g]
    (:func:`triqdef.quant.quantize_weight`'s arithmetic), and a group marked ``fp`` keeps the float weight. The
    gradient is straight-through (the scale covers the absmax, so nothing is clipped): the sum of the G copies'
    gradients, one reduction instead of an expand's autograd graph."""

    @staticmethod
    def forward(ctx, weight, qmin, qmax, fp):
        # qmin, qmax, fp: (G, 1, ..., 1); broadcast against the per-channel absmax (O, 1, ..., 1) and the weight
        ctx.groups, ctx.shape, ctx.stride = qmax.shape[0], weight.shape, weight.stride()
        absmax = torch.linalg.vector_norm(weight, _INF, dim=tuple(range(1, weight.dim())), keepdim=True)
        scale = (absmax / qmax).clamp_min(_TINY)
        q = (weight * torch.reciprocal(scale)).round_().clamp_(qmin, qmax).mul_(scale)
        return torch.where(fp, weight, q, out=q).view(-1, *weight.shape[1:])

    @staticmethod
    def backward(ctx, grad):
        g, n = ctx.groups, grad.numel() // ctx.groups
        if grad.stride() == ctx.stride:   # in the weight's memory format: G runs of n elements, summed in place
            total = grad.as_strided((g, n), (n, 1), grad.storage_offset()).sum(0)
            return total.as_strided(ctx.shape, ctx.stride), None, None, None   # (no copy into the weight's format)
        return grad.view(g, *ctx.shape).sum(0), None, None, None


@functools.lru_cache(maxsize=None)
def _weight_ranges(bits: tuple, dim: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group, shaped (G, 1, ..., 1) for a ``dim``-dimensional weight: the signed integer range, -qmax and qmax (1
    for a 32-bit group, whose values are not used), and whether the group keeps the float weight."""
    shape = (len(bits),) + (1,) * dim
    qmax = tuple(float(quant.signed_qmax(b)) if b != quant.FP_BITS else 1.0 for b in bits)
    return (_constant(tuple(-q for q in qmax), torch.float32, device, shape),
            _constant(qmax, torch.float32, device, shape),
            _constant(tuple(b == quant.FP_BITS for b in bits), torch.bool, device, shape))


def stacked_weight(weight: torch.Tensor, bits: Sequence[int]) -> torch.Tensor:
    """``weight`` fake-quantized at each of ``bits`` (:func:`triqdef.quant.quantize_weight`, per output channel), the
    copies concatenated along the first axis: (G·O, ...), rows [g·O, (g+1)·O) at ``bits[g]``. The gradient is
    straight-through and sums over the bit-widths."""
    return _QuantizeWeightPerGroup.apply(weight, *_weight_ranges(tuple(bits), weight.dim(), str(weight.device)))


def _conv(layer: quant.QuantConv2d, h: torch.Tensor, bits: Sequence[int], shared_input: bool) -> torch.Tensor:
    w = stacked_weight(layer.weight, _effective(layer, bits))
    groups = 1 if shared_input else len(bits)
    return F.conv2d(h, w, None if layer.bias is None else layer.bias.repeat(len(bits)), layer.stride,
                    layer.padding, layer.dilation, groups)


class _StateWrites:
    """The observers' buffers a stacked training pass updated in place through a shared view (each one's min and max,
    :func:`_observer_state`). :meth:`apply`, when the pass has run, marks them modified (their version counters,
    which a write through another tensor does not move, and which :meth:`triqdef.quant.ActivationQuantizer.
    _observer_state` reads; no aten op) and their states as calibrated, as
    :func:`triqdef.quant.observe_moving_average` does."""

    def __init__(self):
        self.targets: list[torch.Tensor] = []
        self.observed: list[quant.ActivationQuantizer] = []

    def add(self, targets: Sequence[torch.Tensor]) -> None:
        self.targets += targets

    def apply(self) -> None:
        if self.targets:
            torch.autograd.graph.increment_version(self.targets)
        if not torch.compiler.is_compiling():   # as observe_moving_average: the update counts as a calibrated state
            for q in self.observed:
                q._calibrated_state = q._observer_state()


class _Concatenate(torch.autograd.Function):
    """``torch.cat`` of equally long 1-D tensors (the bit-widths' BN weights, or biases), whose backward hands each
    its piece of the gradient as a view, one aten op per tensor (``CatBackward0`` spends three)."""

    @staticmethod
    def forward(ctx, *tensors):
        ctx.length = tensors[0].numel()
        ctx.count = len(tensors)
        return torch.cat(tensors)

    @staticmethod
    def backward(ctx, grad):
        return tuple(_slices(grad, range(0, ctx.count * ctx.length, ctx.length), (ctx.length,)))


def _batchnorm(layer: quant.SwitchableBatchNorm2d, h: torch.Tensor, bits: Sequence[int],
               writes: _StateWrites) -> torch.Tensor:
    """One BatchNorm over the stacked channels. Its running statistics are views of the bit-widths' BNs' own (their
    shared storage, :func:`_shared_view`), so that in training mode it updates each BN's as the sequential passes
    would have; where they share none and nothing is written (evaluation), a concatenation. (Their version counters
    are left as the update leaves them: the backward saves the views and checks theirs.) Their
    ``num_batches_tracked`` counts are :func:`_count_batches`'."""
    bns = [layer.bns[str(b)] for b in bits]
    first = bns[0]
    if any(bn.momentum != first.momentum or bn.eps != first.eps for bn in bns):
        raise TriqdefError("stacked BatchNorm: every bit-width's BN needs the same momentum and eps")
    training = layer.training and first.track_running_stats
    if training and first.momentum is None:
        raise TriqdefError("stacked BatchNorm: a cumulative average (momentum None) is the calibration pass, not a "
                           "training step; calibrate with triqdef.quant.calibrate")
    c = first.running_mean.numel()
    stats = []
    for running in ([bn.running_mean for bn in bns], [bn.running_var for bn in bns]):
        view = _shared_view(running, range(0, len(bns) * c, c), (len(bns) * c,), lay_out=training)
        stats.append(torch.cat(running) if view is None else view)
    weight = _Concatenate.apply(*[bn.weight for bn in bns])
    bias = _Concatenate.apply(*[bn.bias for bn in bns])
    return F.batch_norm(h, stats[0], stats[1], weight, bias, layer.training, first.momentum or 0.0, first.eps)


def _count_batches(layers: Sequence[quant.SwitchableBatchNorm2d], bits: Sequence[int]) -> None:
    """``num_batches_tracked += 1`` for the bit-widths' BNs of ``layers`` that a training step updated: one ``add_`` on
    a view of all of them (:func:`_shared_view`)."""
    counters = [bn.num_batches_tracked for layer in layers if layer.training for bn in (layer.bns[str(b)] for b in bits)
                if bn.track_running_stats and bn.num_batches_tracked is not None]
    if counters:
        with torch.no_grad():
            _shared_view(counters, range(len(counters)), (len(counters),), lay_out=True).add_(1)


class _StackedFakeQuantize(torch.autograd.Function):
    """Per-group fake quantization of a post-ReLU tensor (x >= 0), zero-point 0: ``s_g * min(round(x / s_g), qmax_g)``
    on each group's channels (``scale``, ``qmax`` and the rounding constant broadcast per channel), the
    straight-through gradient ``g`` where the rounded value is in range, 0 where it clipped. The 32-bit group's
    channels pass unchanged: their scale is 1, their rounding constant 0 (``x * 1 + 0 - 0`` is ``x``, not rounded) and
    their qmax inf."""

    @staticmethod
    def forward(ctx, x, scale, qmax, magic):
        # x >= 0 after the ReLU, so only the top of the range clips; rounded half to even by the 1.5 * 2^23 trick of
        # quant._FakeQuantizePerTensor (exact below 2^22; beyond, only the side of qmax matters)
        rounded = (x * torch.reciprocal(scale)).add_(magic).sub_(magic)
        mask = rounded <= qmax
        ctx.save_for_backward(mask)
        return torch.minimum(rounded, qmax, out=rounded).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        # a select, not grad * mask: the bool mask would be converted to float first (one op and a pass more)
        return torch.where(mask, grad, _scalar(0.0, grad)), None, None, None


class _ReluLayout(NamedTuple):
    """The constants a stacked ReLU of G groups of C channels quantizes with, made once per layout (:func:`_relu_layout`).
    The observers' state is a (2, G) tensor, row 0 the moving minima, row 1 the maxima, column g group g's."""

    placeholder: torch.Tensor   # (1,): the 32-bit group's entry in the state (it has no observer)
    fresh: torch.Tensor         # (2, 1): (inf, -inf), the state of an observer that has seen no batch
    group_qmax: torch.Tensor    # (G,): each group's top integer (1 for the 32-bit group)
    float_group: torch.Tensor   # (G,): whether the group is the 32-bit one (its scale is 1)
    scale_index: torch.Tensor   # (1, G·C, 1, 1): each channel's group's entry in the flattened state's max row
    qmax: torch.Tensor          # (1, G·C, 1, 1): each channel's top integer, inf in the 32-bit group
    magic: torch.Tensor         # (1, G·C, 1, 1): each channel's rounding constant, 0 in the 32-bit group


@functools.lru_cache(maxsize=None)
def _relu_layout(group_qmax: tuple, channels: int, device: str) -> _ReluLayout:
    g = len(group_qmax)
    float_group = tuple(q == _INF for q in group_qmax)
    return _ReluLayout(
        placeholder=_constant((1.0,), torch.float32, device),
        fresh=_constant((_INF, -_INF), torch.float32, device, (2, 1)),
        group_qmax=_constant(tuple(1.0 if fp else q for q, fp in zip(group_qmax, float_group)), torch.float32, device),
        float_group=_constant(float_group, torch.bool, device),
        scale_index=(g + torch.arange(g * channels) // channels).view(1, -1, 1, 1).to(device),
        qmax=torch.tensor(group_qmax).repeat_interleave(channels).view(1, -1, 1, 1).to(device),
        magic=torch.tensor([0.0 if fp else quant._ROUNDING_MAGIC for fp in float_group]
                           ).repeat_interleave(channels).view(1, -1, 1, 1).to(device))


def _observer_state(quantized: dict, groups: int, placeholder: torch.Tensor, lay_out: bool) -> torch.Tensor:
    """The observers' moving (min, max) as a (2, G) tensor (:class:`_ReluLayout`); ``quantized`` maps a group to its
    activation quantizer. A view of their buffers' shared storage (:func:`_shared_view`), laid out there if
    ``lay_out``, so that an update of the view is theirs; the 32-bit group's column, which no observer has, is scratch
    there (its scale is 1 whatever it holds). Otherwise, where they share none, their concatenation, the 32-bit
    group's column ``placeholder``."""
    items = list(quantized.items())
    view = _shared_view([q.observer.min_val for _, q in items] + [q.observer.max_val for _, q in items],
                        [g for g, _ in items] + [groups + g for g, _ in items], (2, groups), lay_out,
                        fill=1.0)   # (the placeholder's value)
    if view is not None:
        return view
    rows = [[quantized[g].observer.min_val.view(1) if g in quantized else placeholder for g in range(groups)],
            [quantized[g].observer.max_val.view(1) if g in quantized else placeholder for g in range(groups)]]
    return torch.cat(rows[0] + rows[1]).view(2, groups)


_MSE_SAMPLES = inspect.signature(quant.mse_clip).parameters["max_samples"].default


@functools.lru_cache(maxsize=None)
def _mse_samples(shape: tuple, group: int, groups: int, device: str) -> torch.Tensor:
    """The elements :func:`triqdef.quant.mse_clip` samples of group ``group``'s (N, C, H, W) part of a stacked
    (N, G·C, H, W) tensor (every k-th in that part's logical order), as indices into the stacked tensor for
    ``torch.take``."""
    n, gc, hgt, wid = shape
    c = gc // groups
    numel = n * c * hgt * wid
    k = torch.arange(0, numel, numel // _MSE_SAMPLES) if numel > _MSE_SAMPLES else torch.arange(numel)
    image, rest = k // (c * hgt * wid), k % (c * hgt * wid)
    return (image * gc * hgt * wid + group * c * hgt * wid + rest).to(device)


@functools.lru_cache(maxsize=None)
def _clip_grid_column(device: str) -> torch.Tensor:
    """:func:`triqdef.quant.mse_clip`'s grid of clip fractions on ``device``, as a column (20, 1)."""
    return quant._clip_grid(torch.device(device)).view(-1, 1)


def _mse_clip(h: torch.Tensor, samples: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """:func:`triqdef.quant.mse_clip` of the elements ``samples`` picks from ``h`` (:func:`_mse_samples`), its
    arithmetic op for op, in fewer ops (the sample index made once, no reshapes); shape (1, 1)."""
    v = torch.take(h, samples)
    top = torch.linalg.vector_norm(v, _INF).clamp_min(_TINY)   # max |v|
    clips = top * _clip_grid_column(str(v.device))
    scales = clips / _scalar(qmax, v)
    magic = _scalar(quant._ROUNDING_MAGIC, v)
    rounded = (v / scales).add_(magic).sub_(magic)
    diff = rounded.clamp_(_scalar(qmin, v), _scalar(qmax, v)).mul_(scales).sub_(v)
    # pow(diff, 2) is diff * diff; the CPU's mean is the sum divided by the count (on CUDA it multiplies by the
    # count's reciprocal: there the error may differ from quant.mse_clip's in its last bit)
    err = diff.mul_(diff).sum(1, keepdim=True).div_(_scalar(v.numel(), v))
    return clips.gather(0, err.argmin(0, keepdim=True))


def _batch_range(h: torch.Tensor, quantized: dict, groups: int) -> torch.Tensor:
    """What each group's observer averages for this batch, (2, G) as the state: its channels' (min, max), or (0, its
    MSE clip) for the ``mse`` estimator (:meth:`triqdef.quant.ActivationQuantizer.batch_range`)."""
    device = str(h.device)
    # per channel first (a reduction over N, H, W that channels-last memory reads in order), then per group, where
    # one amax serves both rows as the minima are negated (-max(-x) is min(x), exactly)
    per_channel = torch.cat([h.amin(dim=(0, 2, 3)).neg_(), h.amax(dim=(0, 2, 3))]).view(2, groups, -1)
    batch = per_channel.amax(2).mul_(_constant((-1.0, 1.0), torch.float32, device, (2, 1)))
    for g in [g for g, q in quantized.items() if q.range_estimator == "mse"]:
        clip = _mse_clip(h, _mse_samples(tuple(h.shape), g, groups, device), quantized[g].qmin, quantized[g].qmax)
        column = _constant(tuple(k == g for k in range(groups)), torch.bool, device)
        torch.where(column, clip * _constant((0.0, 1.0), torch.float32, device, (2, 1)), batch, out=batch)
    return batch


def _moving_average(state: torch.Tensor, batch: torch.Tensor, quantizers: Sequence[quant.ActivationQuantizer],
                    fresh: torch.Tensor) -> torch.Tensor:
    """The observers' state after this batch, written into ``state`` (the view of their buffers,
    :func:`_observer_state`): :func:`triqdef.quant.observe_moving_average`'s arithmetic (an observer that saw no
    batch takes the batch's range, the others move by the averaging constant c, ``old + c * (new - old)``), on the
    stacked (2, G) state at once."""
    c = quantizers[0].observer.averaging_constant
    if any(q.observer.averaging_constant != c for q in quantizers):
        raise TriqdefError("observers updated together need the same averaging constant")
    moved = (batch - state).mul_(_scalar(c, state)).add_(state)   # state + c * (batch - state), the same float ops
    return torch.where((state == fresh).all(0), batch, moved, out=state)


def _relu(layer: quant.QuantReLU, h: torch.Tensor, bits: Sequence[int], writes: _StateWrites) -> torch.Tensor:
    """ReLU, then each group's activation quantizer (identity for the 32-bit group)."""
    h = F.relu6(h) if layer.six else F.relu(h)
    quantized = {g: layer.quantizers[str(b)] for g, b in enumerate(bits) if b != quant.FP_BITS}
    if not quantized:
        return h
    g, qs = len(bits), list(quantized.values())
    if any(q.dynamic or q.signed for q in qs):
        raise TriqdefError("stacked activation quantizers: dynamic or signed quantizers are not stacked")
    layout = _relu_layout(tuple(float(quantized[k].qmax) if k in quantized else _INF for k in range(g)),
                          h.shape[1] // g, str(h.device))
    observe = layer.training and any(q.observer_enabled for q in qs)
    if observe and not all(q.observer_enabled for q in qs):
        raise TriqdefError("stacked observers: freeze every bit-width's observers or none")
    with torch.no_grad():
        state = _observer_state(quantized, g, layout.placeholder, lay_out=observe)
        if observe:   # in place: the observers' buffers
            _moving_average(state, _batch_range(h, quantized, g), qs, layout.fresh)
            writes.add([q.observer.min_val for q in qs] + [q.observer.max_val for q in qs])
            writes.observed += qs
        # each channel's scale: its group's max / qmax, at least tiny (ActivationQuantizer.scale, whose clamp of the
        # max at 0 changes nothing once the quotient is clamped at tiny), 1 in the 32-bit group
        scales = (state / layout.group_qmax).clamp_min_(_TINY)
        scale = torch.take(torch.where(layout.float_group, _scalar(1.0, scales), scales, out=scales),
                           layout.scale_index)
    return _StackedFakeQuantize.apply(h, scale, layout.qmax, layout.magic)


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
    blocks = (*inner.layer1, *inner.layer2, *inner.layer3)
    h = _conv(inner.conv1, inner.normalize(x), bits, shared_input=True)
    writes = _StateWrites()
    h = _relu(inner.relu, _batchnorm(inner.bn1, h, bits, writes), bits, writes)
    for block in blocks:
        out = _relu(block.relu1, _batchnorm(block.bn1, _conv(block.conv1, h, bits, False), bits, writes), bits, writes)
        out = _batchnorm(block.bn2, _conv(block.conv2, out, bits, False), bits, writes)
        h = _relu(block.relu2, out + _shortcut(block, h, g), bits, writes)
    writes.apply()
    _count_batches([inner.bn1] + [bn for block in blocks for bn in (block.bn1, block.bn2)], bits)
    pooled = torch.flatten(inner.pool(h), 1).unflatten(1, (g, -1)).transpose(0, 1)     # (G, N, C)
    w = stacked_weight(inner.fc.weight, _effective(inner.fc, bits)).unflatten(0, (g, -1))   # (G, classes, C)
    return torch.bmm(pooled, w.transpose(1, 2)) + inner.fc.bias


def joint_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bits: Sequence[int],
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint QAT's loss, the mean over ``bits`` of each bit-width's cross-entropy, from one stacked pass; returns
    (loss, logits (G, N, classes)). Its gradient is the sequential loop's ``sum_b CE_b / G``."""
    logits = stacked_logits(model, x, bits)
    loss = F.cross_entropy(logits.flatten(0, 1), torch.cat([y] * len(bits)), label_smoothing=label_smoothing)
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
