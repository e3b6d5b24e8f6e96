"""Bit-width-Aware Curriculum Training (BACT, paper section 3.4; docs/design.md#bact).

A schedule is a list of stages ``[{"bits": [32, 8], "share": 0.3}, ...]``:
the active bit-widths and the share of the training steps each stage lasts
(shares sum to 1). Bit-widths only ever get enabled, never disabled. When a
stage enables new bit-widths, each one's BatchNorm copies the BN of the
lowest bit-width already active (from FP weights; a start checkpoint that
trained every bit-width keeps its own), then its observers and BN statistics
are calibrated on the held-out split (no weight update, no weight copy: one
shared backbone).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from triqdef import quant
from triqdef.errors import TriqdefError

log = logging.getLogger("triqdef.bact")


@dataclass(frozen=True)
class Stage:
    bits: tuple[int, ...]
    start: int  # first step of the stage


class Schedule:
    """Active bit-widths per step for a run of ``total_steps`` steps."""

    def __init__(self, stages: Sequence[dict], total_steps: int):
        if not stages:
            raise TriqdefError("parameter bact.stages is empty: expected a list of {bits: [...], share: s}")
        shares, bit_sets = [], []
        for i, st in enumerate(stages):
            if not isinstance(st, dict) or "bits" not in st or "share" not in st:
                raise TriqdefError(f"parameter bact.stages[{i}] = {st!r}: expected {{bits: [...], share: s}}")
            share = st["share"]
            if not isinstance(share, (int, float)) or isinstance(share, bool) or share <= 0:
                raise TriqdefError(f"parameter bact.stages[{i}].share = {share!r}: expected a number > 0")
            bit_sets.append(quant.check_bit_set(st["bits"]))
            shares.append(float(share))
        if abs(sum(shares) - 1.0) > 1e-6:
            raise TriqdefError(f"parameter bact.stages: shares sum to {sum(shares):.3f}, expected 1")
        for i in range(1, len(bit_sets)):
            if not set(bit_sets[i - 1]) <= set(bit_sets[i]):
                raise TriqdefError(f"parameter bact.stages[{i}].bits = {list(bit_sets[i])}: expected a superset of the "
                                   f"previous stage's {list(bit_sets[i - 1])} (BACT only enables bit-widths)")
        self.total_steps = total_steps
        starts, acc = [], 0.0
        for share in shares:
            starts.append(int(round(acc * total_steps)))
            acc += share
        self.stages = [Stage(tuple(sorted(b, reverse=True)), s) for b, s in zip(bit_sets, starts)]

    @classmethod
    def constant(cls, bits: Sequence[int], total_steps: int) -> Schedule:
        """Every bit-width active from the first step (standard multi-bit QAT, PBAT)."""
        return cls([{"bits": list(bits), "share": 1.0}], total_steps)

    @property
    def all_bits(self) -> tuple[int, ...]:
        return self.stages[-1].bits

    def stage_at(self, step: int) -> Stage:
        current = self.stages[0]
        for st in self.stages:
            if st.start <= step:
                current = st
        return current

    def active(self, step: int) -> tuple[int, ...]:
        return self.stage_at(step).bits

    def enabled_at(self, step: int) -> tuple[int, ...]:
        """Bit-widths that become active exactly at ``step`` (the first stage's count as enabled at step 0)."""
        for i, st in enumerate(self.stages):
            if st.start == step:
                prev = set(self.stages[i - 1].bits) if i else set()
                # several stages may start at the same step on very short runs: take the last one
                later = [s for s in self.stages if s.start == step]
                return tuple(b for b in later[-1].bits if b not in prev)
        return ()

    def to_list(self) -> list[dict]:
        return [{"bits": list(s.bits), "start_step": s.start} for s in self.stages]


def enable_bits(model: nn.Module, new_bits: Sequence[int], active_bits: Sequence[int],
                holdout_batches: Sequence[torch.Tensor], copy_bn: bool = True) -> None:
    """Enable ``new_bits``: copy the BN of the lowest already-active bit-width (``copy_bn``), then calibrate the
    observers and BN statistics on held-out batches. ``copy_bn=False`` when the start checkpoint trained every
    bit-width's BN already (``defenses.init: qat``): its affine parameters are kept, and only the statistics and
    the observers, stale since the shared weights moved without that bit-width, are re-estimated."""
    lowest = min(active_bits) if active_bits else None
    for b in new_bits:
        if b == quant.FP_BITS:
            continue
        if copy_bn and lowest is not None and lowest != b:
            copy_batchnorm(model, src_bits=lowest, dst_bits=b)
        quant.calibrate(model, holdout_batches, b)
        log.info("BACT: enabled %d-bit (BN %s), calibrated on %d batches", b,
                 f"from {lowest}-bit" if copy_bn and lowest not in (None, b) else "kept", len(holdout_batches))


@torch.no_grad()
def copy_batchnorm(model: nn.Module, src_bits: int, dst_bits: int) -> None:
    """Copy affine parameters and statistics of every switchable BN from one bit-width to another."""
    for m in model.modules():
        if isinstance(m, quant.SwitchableBatchNorm2d):
            m.bns[str(dst_bits)].load_state_dict(m.bns[str(src_bits)].state_dict())
