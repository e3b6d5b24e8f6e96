"""A guard against host syncs: no tensor value read into Python inside a training step (issue 31, item 2).

A read of a tensor's value into Python (``t.item()``, ``if t:``, ``int(t)``, ``float(t)``, ``t.tolist()``,
``t.numpy()``, a tensor as a list index, a tensor in an f-string) makes the host wait for the device: on a GPU the
kernel queue drains and the step can no longer be captured as one CUDA graph. :func:`no_host_reads` makes any such
read raise :class:`HostReadError` inside its block, so a test can prove a step reads nothing
(``tests/test_no_sync.py``).

Mechanism: a :class:`torch.overrides.TorchFunctionMode`. On torch 2.14 it sees every one of these ``Tensor``
methods (``item``, ``__bool__``, ``tolist``, ``__int__``, ``__float__``, ``__index__``, ``numpy``, ``__format__``,
``__array__``; none of them is in ``torch.overrides.get_ignored_functions()``, and ``tests/test_no_sync.py`` checks
each), so no method of ``torch.Tensor`` is patched. It sees Python-level reads only: a sync inside a C++ operator (a boolean-mask
index, ``nonzero``, a copy from pageable host memory to the GPU) is invisible to it.

The one sanctioned read is :func:`host_int`: a random choice drawn from a CPU ``torch.Generator`` (which bit-width,
which patch size) is host data, read by the host without waiting for the device. It asserts that its tensor is on
the CPU and reads it inside :func:`host_reads`, the allow block. The random streams are the committed results', so
those draws stay ``torch.randint(..., generator=g)`` on the CPU, read through this one helper.

The guard's blind spot showed on an H200 (``tools/gpu_syncs.py``, ``results/gpu/syncs/``): the copies of such CPU
draws (noise, patch contents, locations, index lists) to the GPU inside a step are copies from pageable memory,
which wait for the device. :func:`host_to_device` copies them from pinned memory without waiting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

from triqdef.errors import TriqdefError

_T = torch.Tensor
#: The Tensor methods that read a value into Python (``__format__``: ``f"{t:.3f}"``; ``__array__``: ``np.asarray(t)``).
READS = frozenset({_T.item, _T.__bool__, _T.tolist, _T.__int__, _T.__float__, _T.__index__, _T.numpy, _T.__format__,
                   _T.__array__})


class HostReadError(TriqdefError, RuntimeError):
    """A tensor value was read into Python inside :func:`no_host_reads`."""


class _NoHostReads(TorchFunctionMode):
    """Raises on the reads of :data:`READS`, except inside :func:`host_reads` (which sets ``allowed``)."""

    def __init__(self) -> None:
        super().__init__()
        self.allowed = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READS and not self.allowed:
            name = getattr(func, "__name__", str(func))
            raise HostReadError(f"host sync: Tensor.{name} read a tensor value into Python inside no_host_reads(); "
                                "keep the value a tensor (or read a CPU generator's draw with syncguard.host_int)")
        return func(*args, **(kwargs or {}))


_active: list[_NoHostReads] = []


@contextlib.contextmanager
def no_host_reads() -> Iterator[None]:
    """Inside the block, reading a tensor value into Python raises :class:`HostReadError` (module docstring)."""
    mode = _NoHostReads()
    _active.append(mode)
    try:
        with mode:
            yield
    finally:
        _active.remove(mode)


@contextlib.contextmanager
def host_reads() -> Iterator[None]:
    """The allow block: reads inside it pass :func:`no_host_reads` (used by :func:`host_int` only)."""
    for mode in _active:
        mode.allowed += 1
    try:
        yield
    finally:
        for mode in _active:
            mode.allowed -= 1


def host_int(t: torch.Tensor) -> int:
    """The value of a one-element CPU tensor (a draw of a CPU ``torch.Generator``) as a Python int: a host read,
    no device sync. A tensor on another device is refused, since reading it would wait for that device."""
    if t.device.type != "cpu":
        raise TriqdefError(f"host_int of a tensor on {t.device}: expected a CPU tensor (reading a device tensor syncs)")
    with host_reads():
        return int(t)


def host_to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` (host data: a CPU draw, an index list) on ``device``. To a GPU it is copied from pinned memory without
    blocking, where ``t.to(device)`` from pageable memory waits for the device (a host sync inside the step); on the
    CPU it is ``t`` itself, so the CPU's results are unchanged."""
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
