"""Per-image losses of the targeted patch attacks (each is minimised; docs/design.md#lavan-and-gap).

* ``logprob`` (LAVAN, Karmon et al. 2018): ``−log p_t(x) + [y ≠ t] · log p_y(x)``: raise the target's
  log-probability and lower the true class's (the second term is dropped for images of the target class).
* ``ce`` (GAP, Brown et al. 2017): ``−log p_t(x)``, the cross-entropy towards the target.
* ``margin`` (Carlini & Wagner 2017, κ = 0): ``max(max_{j≠t} z_j − z_t, 0)`` on the logits ``z``: zero once
  the image is classified as the target, so the images not yet fooled carry the whole gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from triqdef.errors import TriqdefError

LOSSES = ("logprob", "ce", "margin")


def per_image_loss(name: str, logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss ``name`` of each image (N,), for logits (N, C), true ``labels`` (N,) and ``targets`` (N,)."""
    if name == "logprob":
        logp = F.log_softmax(logits, 1)
        keep_true = (labels != targets).to(logits.dtype)
        return -logp.gather(1, targets[:, None])[:, 0] + keep_true * logp.gather(1, labels[:, None])[:, 0]
    if name == "ce":
        return F.cross_entropy(logits, targets, reduction="none")
    if name == "margin":
        target_logit = logits.gather(1, targets[:, None])[:, 0]
        others = logits.scatter(1, targets[:, None], float("-inf"))
        return (others.amax(1) - target_logit).clamp(min=0)
    raise TriqdefError(f"unknown patch loss {name!r}: expected one of {', '.join(LOSSES)}")
