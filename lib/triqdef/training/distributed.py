"""Data-parallel training under ``torchrun`` (``triqdef train fp`` / ``train qat``).

``torchrun --nproc-per-node N -m triqdef train fp`` starts N processes and sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in each; :func:`session` then joins
them in one process group (nccl on CUDA, gloo on the CPU) and
:func:`triqdef.training.loop.fit` wraps the model in
``DistributedDataParallel``. Without those variables, or with ``WORLD_SIZE=1``,
nothing here does anything and training is the single-process run, unchanged.

* **Shard rule.** Every rank draws the same global batch of a step
  (``loop.step_batch``, ``batch_size`` images) and takes the contiguous slice
  ``[r*B/N, (r+1)*B/N)`` of it (:func:`shard`). ``N`` must divide ``B``
  (:func:`check_world`): equal shards make DDP's mean of the ranks' gradients
  the gradient of the global batch's mean loss.
* **Writer.** Rank 0 alone writes checkpoints, metrics and logs and shows
  progress bars (:func:`is_writer`); the others wait at a :func:`barrier`
  where they must see what it wrote.
* BN and observers: docs/design.md, "Data-parallel training".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from triqdef.errors import TriqdefError


def env_world_size() -> int:
    """The world size ``torchrun`` announced (``WORLD_SIZE``), 1 when it is unset."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def active() -> bool:
    """True inside a process group of more than one process (set up by :func:`session`)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_writer() -> bool:
    """Whether this process writes files, logs and progress: rank 0, or the only process. Read from ``RANK``
    too, so that it holds before the process group exists (argument errors, logging set-up)."""
    return rank() == 0 and os.environ.get("RANK", "0") == "0"


def check_world(batch_size: int, name: str, world: int | None = None) -> None:
    """Refuse a world size that does not split the global batch ``name`` (``batch_size``) into equal shards."""
    world = env_world_size() if world is None else world
    if world > 1 and batch_size % world:
        raise TriqdefError(f"{name} is {batch_size} and torchrun --nproc-per-node (WORLD_SIZE) is {world}: expected a "
                           f"number of processes that divides the global batch (shards of equal size)")


@contextlib.contextmanager
def session(device_type: str) -> Iterator[torch.device | None]:
    """Join the ``torchrun`` process group for the block (nccl when ``device_type`` is ``cuda``, else gloo) and
    leave it after; yields this rank's device (``cuda:LOCAL_RANK``, or None on the CPU). A no-op yielding None
    when ``WORLD_SIZE`` is unset or 1, or when a group already exists (the tests' own)."""
    if env_world_size() <= 1 or dist.is_initialized():
        yield None
        return
    device = None
    if device_type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", device_id=device)
    except ValueError as exc:  # WORLD_SIZE set by hand, without torchrun's rendezvous variables
        raise TriqdefError(f"WORLD_SIZE is {env_world_size()} but the process group cannot start ({exc}): expected "
                           "a start by torchrun --nproc-per-node N") from None
    try:
        yield device
    finally:
        dist.destroy_process_group()


def command_session(cfg, section: str) -> contextlib.AbstractContextManager:
    """:func:`session` for a training command on ``cfg.base.device``, after checking (before anything is
    written) that the world size splits ``<section>.batch_size`` into equal shards."""
    from triqdef.training.loop import resolve_device

    check_world(getattr(cfg, section).batch_size, f"{section}.{cfg.base.profile}.batch_size")
    return session(resolve_device(cfg.base.device).type)


def shard(t: torch.Tensor) -> torch.Tensor:
    """This rank's rows of a global batch: the contiguous ``r``-th of ``world_size`` equal slices (all of it in a
    single process)."""
    n = world_size()
    if n == 1:
        return t
    size = t.shape[0] // n
    return t[rank() * size : (rank() + 1) * size]


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` inside a process group, else ``model`` itself.

    Every parameter must get a gradient in each synchronised backward (``find_unused_parameters=False``): the
    joint QAT step runs every bit-width in one DDP forward (``loop.JointCrossEntropy``; docs/design.md,
    "Data-parallel training"). Buffers are broadcast from rank 0 at a step's forward (DDP's default).
    """
    if not active():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``values`` (one-element tensors on the rank's device) averaged over the ranks, each a mean over an equal
    shard: the global batch's means. One all-reduce, no read into Python (the loop reads the records later)."""
    if not active() or not values:
        return values
    t = torch.stack([v.detach().reshape(()).double() for v in values.values()])
    dist.all_reduce(t)
    return dict(zip(values, (t / world_size()).unbind()))


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if active():
        dist.barrier()
