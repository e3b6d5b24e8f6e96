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

from collections.abc import Callable

import torch

from triqdef.errors import TriqdefError

Step = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


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
    return torch.optim.SGD(params, lr=torch.tensor(float(lr), device=device), momentum=momentum,
                           weight_decay=weight_decay, nesterov=nesterov, fused=True)


class CapturedStep:
    """``step(x, y)`` (zero the gradients, forward, backward, optimiser step; returns detached tensors to log)
    run eagerly ``warmup`` times, then captured in a CUDA graph at the next call and replayed from then on.

    Calling it is a training step either way; the returned tensors are fresh (cloned from the graph's outputs), so
    a caller may keep them across steps.
    """

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer, warmup: int = 3):
        if warmup < 1:
            raise TriqdefError(f"CapturedStep warmup = {warmup}: expected >= 1 (the momentum buffers must exist)")
        self.step, self.optimizer, self.warmup = step, optimizer, warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor] | None = None
        self._outputs: dict[str, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.step(x, y)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self._capture(x, y)
        static_x, static_y = self._static
        static_x.copy_(x)
        static_y.copy_(y)
        self.graph.replay()
        return {k: v.clone() for k, v in self._outputs.items()}

    def _capture(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self._static = (x.clone(), y.clone())
        self.optimizer.zero_grad(set_to_none=True)   # the gradients are allocated from the graph's own pool
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._outputs = self.step(*self._static)
