"""Attack success rates exactly as docs/design.md#success-rate defines them.

* Targeted ASR: among the images the attacked model classifies correctly when
  clean and whose label is not the target, the share classified as the
  target with the patch.
* Untargeted fooling rate: among the images classified correctly when clean
  (label not the target), the share no longer classified correctly with the patch.
* Common-subset rate: the targeted ASR restricted to the images that *every*
  compared model classifies correctly when clean.

Every rate comes with the number of images it is computed over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Rate:
    """A rate in [0, 1] (NaN when ``n == 0``) and its denominator."""

    value: float
    n: int

    @property
    def percent(self) -> float:
        return 100.0 * self.value


def _rate(hits: torch.Tensor, eligible: torch.Tensor) -> Rate:
    n = int(eligible.sum())
    return Rate(float(hits[eligible].float().mean()) if n else float("nan"), n)


def eligible_images(clean_pred: torch.Tensor, labels: torch.Tensor, target: int) -> torch.Tensor:
    """Images classified correctly when clean and whose label is not the target."""
    return (clean_pred == labels) & (labels != target)


def targeted_asr(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor, target: int,
                 subset: torch.Tensor | None = None) -> Rate:
    """Share of eligible images (optionally within ``subset``) classified as ``target`` with the patch."""
    elig = eligible_images(clean_pred, labels, target)
    if subset is not None:
        elig = elig & subset
    return _rate(adv_pred == target, elig)


def fooling_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor, labels: torch.Tensor, target: int,
                 subset: torch.Tensor | None = None) -> Rate:
    """Share of eligible images whose prediction is no longer the true label with the patch (untargeted)."""
    elig = eligible_images(clean_pred, labels, target)
    if subset is not None:
        elig = elig & subset
    return _rate(adv_pred != labels, elig)


def common_subset(clean_preds: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Images that every compared model classifies correctly when clean."""
    mask = torch.ones_like(labels, dtype=torch.bool)
    for p in clean_preds:
        mask &= p == labels
    return mask
