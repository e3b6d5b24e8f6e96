"""Tap layers: reading the outputs of named modules during a forward pass (forward hooks).

TriQDef's feature penalty (FDP, paper eq. 2) and the alignment measurements of section 2
(:mod:`triqdef.eval.alignment`) both compare the feature maps of a few *tap layers* (module names such
as ``layer1.0.relu1``) across bit-widths; :func:`tap_outputs` collects them, and :func:`stop_after`
ends a forward that only needs them at the last tap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn as nn

from triqdef.errors import TriqdefError


@contextlib.contextmanager
def tap_outputs(model: nn.Module, taps: Sequence[str], modules: dict[str, nn.Module] | None = None,
                transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Collect the outputs of the named modules during the block, in a dict ``{name: output}`` (the tensors
    themselves, graph included; a later forward replaces them); the hooks are removed on exit.

    ``modules``: ``dict(model.named_modules())`` when the caller has it (walking the model costs ~1 ms).
    ``transform``: applied to each output inside its hook, before any later layer runs (so an in-place
    operation downstream cannot change what is kept); None keeps the output itself.
    """
    modules = dict(model.named_modules()) if modules is None else modules
    missing = [t for t in taps if t not in modules]
    if missing:
        raise TriqdefError(f"tap layers {missing} not found in the model: expected module names such as "
                           f"{[n for n in modules if n.endswith('relu1')][:3]}")
    out: dict[str, torch.Tensor] = {}
    keep = (lambda o: o) if transform is None else transform
    hooks = [modules[t].register_forward_hook(lambda m, i, o, t=t: out.__setitem__(t, keep(o))) for t in taps]
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


class StopForward(Exception):
    """Raised by :func:`stop_after`'s hook to end a forward pass that only needs the outputs up to a module."""


@contextlib.contextmanager
def stop_after(module: nn.Module) -> Iterator[None]:
    """Inside the block a forward pass raises :class:`StopForward` once ``module`` has run (catch it with
    ``contextlib.suppress(StopForward)`` around the call); the hook is removed on exit."""
    def stop(module, inputs, output):
        raise StopForward

    handle = module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()
