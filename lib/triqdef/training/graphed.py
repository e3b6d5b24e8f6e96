"""A training step captured once in a CUDA graph and replayed (issue 31, item 3; docs/design.md#one-graph-per-step).

On a GPU the project's steps are bound by kernel launches, not arithmetic: a ResNet-20 step at batch 128 is about
16 GFLOP, well under a millisecond of an H200's time, while eager PyTorch launches a few thousand kernels for it.
``torch.cuda.graph`` records the kernels of one whole step (forward, backward and the optimiser's update) and
replays them with one launch. That needs a step that

* reads no tensor value into Python (a host sync cannot be captured): the stacked joint-QAT step
  (:mod:`triqdef.stacked`) and the FP step qualify;
* keeps its shapes and its memory: the batch is copied into static input tensors before each replay, and the
  outputs (the logged loss and accuracy) are the same static tensors each time, cloned after the replay;
* takes its learning rate from a tensor: a float would be frozen into the graph at capture, and the schedule
  would stop moving. :func:`capturable_optimizer` builds fused SGD with the rate as a one-element CUDA tensor,
  which the schedulers update in place (``LRScheduler`` fills a tensor rate).

The first ``warmup`` calls run eagerly on a side stream, as PyTorch's whole-network capture example does: they are
real training steps (nothing is thrown away), and they create the momentum buffers and cuDNN plans that capture
must find in place. ``base.compile`` turns this on (``training.loop.fit``); it stays off until a GPU measurement
turns it on, and on a device that cannot capture it is refused in one line.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable

import torch

from triqdef.errors import TriqdefError
from triqdef.training.records import snapshot

def check_capturable(device: torch.device) -> None:
    """Refuse ``base.compile`` where no CUDA graph can be captured (one line)."""
    if device.type != "cuda":
        raise TriqdefError(f"parameter base.compile = true: expected a CUDA device, where a training step can be "
                           f"captured in a CUDA graph; this run's device is {device.type} (set base.compile: false)")


def capturable_optimizer(params, lr: float, momentum: float, weight_decay: float, nesterov: bool,
                         device: torch.device) -> torch.optim.SGD:
    """SGD whose update a CUDA graph can hold: fused, its learning rate a tensor on ``device`` (the same maths as
    :func:`triqdef.training.loop.make_optimizer`'s SGD, in one fused kernel)."""
    check_capturable(device)
    opt = torch.optim.SGD(params, lr=torch.tensor(float(lr), device=device), momentum=momentum,
                          weight_decay=weight_decay, nesterov=nesterov, fused=True)
    fill_momentum_buffers(opt)
    return opt


def fill_momentum_buffers(optimizer: torch.optim.SGD) -> None:
    """Give every parameter without one a zero momentum buffer (after building the optimizer, and after loading its
    state from a checkpoint). The first update is the same as with SGD's lazily made buffer (0 * momentum + grad =
    grad), and a parameter whose first gradient comes late (a BN that BACT enables mid-run) meets buffers beside
    it, not the mix of buffers and None that fused SGD refuses."""
    for group in optimizer.param_groups:
        if group["momentum"]:
            for p in group["params"]:
                if optimizer.state[p].get("momentum_buffer") is None:
                    optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


class CapturedStep:
    """``step(*inputs)`` (zero the gradients, forward, backward, optimiser step; returns the values to log) run
    eagerly ``warmup`` times, then captured in a CUDA graph at the next call and replayed from then on.

    ``key`` names the graph a call replays: a step whose Python-side decisions change from call to call (which
    bit-widths are active, whether GPDP runs this step: :class:`triqdef.defenses.steps.TriQDefStep`) passes them as
    the key, and each key gets its own warm-up calls and its own graph; a graph replays only calls of its key. The
    inputs are copied into the graph's static inputs before each replay, so their shapes belong to the key too.

    Calling it is a training step either way; the returned values are fresh (tensors, and those a
    :class:`~triqdef.training.records.Later` reads, cloned from the graph's outputs), so a caller may keep them
    across steps. Python values in the record are those of the capture: constants of the key.
    """

    def __init__(self, step: Callable[..., dict], optimizer: torch.optim.Optimizer, warmup: int = 3):
        if warmup < 1:
            raise TriqdefError(f"CapturedStep warmup = {warmup}: expected >= 1 (the momentum buffers must exist)")
        self.step, self.optimizer, self.warmup = step, optimizer, warmup
        self.calls: dict[Hashable, int] = {}
        self._graphs: dict[Hashable, _Graph] = {}

    @property
    def graphs(self) -> int:
        """How many graphs have been captured (one per key)."""
        return len(self._graphs)

    def __call__(self, *inputs: torch.Tensor, key: Hashable = None) -> dict:
        key = (key, tuple((tuple(t.shape), t.dtype) for t in inputs))
        run = self.step if key[0] is None else functools.partial(self.step, key=key[0])
        self.calls[key] = self.calls.get(key, 0) + 1
        graph = self._graphs.get(key)
        if graph is None and self.calls[key] <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = run(*inputs)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if graph is None:
            graph = self._graphs[key] = self._capture(run, inputs)
        for static, value in zip(graph.inputs, inputs):
            static.copy_(value)
        graph.graph.replay()
        return {k: snapshot(v) for k, v in graph.outputs.items()}

    def _capture(self, run: Callable[..., dict], inputs: tuple[torch.Tensor, ...]) -> _Graph:
        static = tuple(t.clone() for t in inputs)
        self.optimizer.zero_grad(set_to_none=True)   # the gradients are allocated from the graph's own pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = run(*static)
        return _Graph(graph, static, outputs)


@dataclasses.dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor, ...]
    outputs: dict
