"""What a training step logs, read into Python late (issue 31: no host sync inside a step).

A step logs losses and accuracies that are device tensors. Reading each one with ``.item()`` inside the step would
make the host wait for the device every step; a :class:`StepRecord` keeps them as detached tensors and converts
them once, when the record is first looked at: :func:`triqdef.training.loop.fit` settles its records when it shows
the progress bar (every 10 steps), when it writes a checkpoint and at the end, so its ``history`` is the list of
dicts of Python floats and ints it always was, value for value.

A value may be a Python number (kept), a tensor (read with ``.item()``), or a :class:`Later`: a number computed in
Python from the values settled before it, with the arithmetic the step did before (a float sum of ``.item()``
values, in order), so that every logged value is the same to the last bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import torch


class Later:
    """A record value computed at settling time: ``fn(settled)``, ``settled`` the values of the keys before it.

    ``tensors``: the device tensors ``fn`` reads (if any), so that :meth:`cloned` can give a copy that no later write
    to them can change (a CUDA graph's outputs are overwritten by its next replay, :mod:`triqdef.training.graphed`);
    ``fn`` then takes them as its second argument."""

    def __init__(self, fn: Callable[..., Any], tensors: Sequence[torch.Tensor] = ()):
        self.fn, self.tensors = fn, tuple(tensors)

    def value(self, settled: dict) -> Any:
        return self.fn(settled, self.tensors) if self.tensors else self.fn(settled)

    def cloned(self) -> Later:
        """The same value, reading copies of its tensors taken now."""
        return Later(self.fn, [t.clone() for t in self.tensors]) if self.tensors else self


def snapshot(value: Any) -> Any:
    """A logged value as it stands now: a tensor or a :class:`Later`'s tensors copied, a Python value as it is."""
    return value.clone() if isinstance(value, torch.Tensor) else value.cloned() if isinstance(value, Later) else value


def mean_of(values: Sequence[torch.Tensor]) -> Later:
    """The mean of one-element tensors as the steps logged it: ``(0.0 + v_1.item() + v_2.item() + ...) / n``,
    added left to right in Python floats (not ``sum()``, whose float sum is compensated from Python 3.12)."""
    def mean(_: dict, values: Sequence[torch.Tensor]) -> float:
        total = 0.0
        for v in values:
            total += v.item()
        return total / len(values)

    return Later(mean, values)


class StepRecord(MutableMapping):
    """A step's logged values, settled into Python values (:func:`settle`) the first time one is read.

    Writing (``rec[k] = v``, ``update``, :meth:`extend`) never reads a tensor; iterating over the keys neither.
    Reading a value, ``items()``, ``==`` settle the whole record once.
    """

    def __init__(self, values: Mapping | None = None):
        self._raw: dict[str, Any] = {}
        self._settled: dict | None = None
        if values is not None:
            self.extend(values)

    def __setitem__(self, key: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach()
        self._raw[key] = value
        self._settled = None

    def extend(self, values: Mapping) -> StepRecord:
        """Add ``values`` (a plain mapping or another record, whose unsettled values stay unsettled)."""
        for k, v in (values._raw if isinstance(values, StepRecord) else values).items():
            self[k] = v
        return self

    def settled(self) -> dict:
        """The record as a plain dict of Python values (tensors read, :class:`Later` values computed)."""
        if self._settled is None:
            out: dict[str, Any] = {}
            for k, v in self._raw.items():
                out[k] = v.item() if isinstance(v, torch.Tensor) else v.value(out) if isinstance(v, Later) else v
            self._settled = out
        return self._settled

    def unsettled(self) -> dict:
        """The values as they were written (tensors not read): what a captured step hands back from its graph."""
        return dict(self._raw)

    def __delitem__(self, key: str) -> None:
        del self._raw[key]
        self._settled = None

    def __getitem__(self, key: str) -> Any:
        return self.settled()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __repr__(self) -> str:
        return f"StepRecord({self._raw!r})"


def settle(record: Mapping) -> dict:
    """A record as a plain dict of Python values (a :class:`StepRecord` settled, any other mapping copied)."""
    return dict(record.settled()) if isinstance(record, StepRecord) else dict(record)
