"""How much training each bit-width gets (issue 30, item 4): forward and backward passes of the model per
bit-width, the images they carry, and the optimiser steps whose loss a bit-width entered.

:class:`PassCounter` hooks the model's root module: a forward pass counts at the bit-width the model runs at
(``quant.use_bitwidth``), whatever runs it (a loss, an inner attack, BACT's calibration); a backward pass counts
when a gradient reaches that forward's output (``torch.autograd.grad`` of an inner attack as well as the step's
``backward``). A step counts for every bit-width that had a backward pass in it. Python integers only: nothing is
read from a tensor, so the count costs no host sync. The monitor's evaluations, and reads wrapped in
:func:`uncounted`, are left out. A stacked pass (``base.stacked``) or a captured step does not run the root
module's hooks; :func:`triqdef.training.loop.fit` reports no count then.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn as nn

from triqdef import quant

_active: list[PassCounter] = []


@contextlib.contextmanager
def uncounted():
    """Inside the block, the running counter (if any) counts nothing: evaluations that are not training."""
    counter = _active[-1] if _active else None
    paused = counter.paused if counter else None
    if counter:
        counter.paused = True
    try:
        yield
    finally:
        if counter:
            counter.paused = paused


class PassCounter:
    """Counts ``model``'s passes per bit-width while entered (``with PassCounter(model) as c``); ``state``: the
    counts of an interrupted run, to resume from. :meth:`end_step` closes an optimiser step."""

    def __init__(self, model: nn.Module, state: dict | None = None):
        self.model = model
        self.counts: dict[int, dict[str, int]] = {int(b): dict(c) for b, c in (state or {}).items()}
        self.paused = False
        self._step_bits: set[int] = set()
        self._handles: list = []

    def _entry(self, bits: int) -> dict[str, int]:
        return self.counts.setdefault(bits, {"steps": 0, "forward": 0, "backward": 0, "forward_images": 0})

    def _bits(self) -> int:
        return int(getattr(self.model, "triqdef_active_bits", quant.FP_BITS))

    def _before_forward(self, module, args) -> None:
        if self.paused:
            return
        entry = self._entry(self._bits())
        entry["forward"] += 1
        if args and isinstance(args[0], torch.Tensor):
            entry["forward_images"] += int(args[0].shape[0])

    def _after_forward(self, module, args, output) -> None:
        if not self.paused and isinstance(output, torch.Tensor) and output.requires_grad:
            output.register_hook(functools.partial(self._backward, self._bits()))

    def _backward(self, bits: int, grad: torch.Tensor) -> None:
        self._entry(bits)["backward"] += 1
        self._step_bits.add(bits)

    def end_step(self) -> None:
        for b in self._step_bits:
            self._entry(b)["steps"] += 1
        self._step_bits.clear()

    def table(self) -> dict[str, dict[str, int]]:
        """``{bits: {steps, forward, backward, forward_images}}``, bit-widths from the highest."""
        return {str(b): dict(self.counts[b]) for b in sorted(self.counts, reverse=True)}

    def __enter__(self) -> PassCounter:
        self._handles = [self.model.register_forward_pre_hook(self._before_forward),
                         self.model.register_forward_hook(self._after_forward)]
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        _active.remove(self)
