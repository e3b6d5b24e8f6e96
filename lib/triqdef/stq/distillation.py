"""Defensive distillation (Papernot et al. 2016, "Distillation as a Defense to Adversarial Perturbations",
sec. IV), STQ-T1 and STQ-T50 of Zakariyya et al. 2025 ("Mechanism 3" of its summary).

1. The *teacher* is trained on the hard labels with its softmax at temperature ``T``:
   ``CE(softmax(z / T), y)`` (:class:`TemperatureStep`).
2. The *student* (same architecture) is trained at the same ``T`` on the teacher's soft labels
   ``softmax(z_teacher / T)`` (:class:`DistillationStep`), with the soft cross-entropy
   :func:`distillation_loss`.
3. At test time the student's logits are used at ``T = 1`` (the model itself never divides by ``T``; only
   these losses do), which is what makes its softmax saturate and its gradients small.

**No T² factor.** Hinton et al. 2015 multiply the soft term by T² to keep its gradient on the scale of a hard
term it is mixed with; defensive distillation trains on the soft labels alone, as Papernot et al. do, so the
loss is the plain soft cross-entropy (``t_squared=True`` multiplies, for comparison). At T = 50 a factor of
2,500 would act as a 2,500-fold learning rate.

Both steps are step functions for :func:`triqdef.training.loop.fit`: ``step(model, x, y, step)`` computes the
loss, calls ``backward`` and returns the values to log. Their :meth:`loss` gives the loss without the
backward, which :class:`triqdef.stq.jacobian.JacobianStep` adds its regulariser to.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import quant
from triqdef.errors import TriqdefError

REDUCTIONS = ("mean", "sum", "none")


def check_temperature(T) -> float:
    """A distillation temperature: a finite number > 0."""
    ok = isinstance(T, (int, float)) and not isinstance(T, bool) and math.isfinite(T) and T > 0
    if not ok:
        raise TriqdefError(f"distillation temperature T={T!r}: expected a number > 0")
    return float(T)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in REDUCTIONS:
        raise TriqdefError(f"reduction {reduction!r}: expected one of {', '.join(REDUCTIONS)}")
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def soft_labels(teacher_logits: torch.Tensor, T: float) -> torch.Tensor:
    """The teacher's soft labels ``softmax(z_teacher / T)``."""
    return F.softmax(teacher_logits / check_temperature(T), dim=1)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float,
                      reduction: str = "mean", t_squared: bool = False) -> torch.Tensor:
    """Soft cross-entropy at temperature T: ``−Σ_k softmax(t / T)_k · log softmax(s / T)_k`` per image.

    ``student_logits`` and ``teacher_logits`` are ``(N, K)``; the teacher's are detached (it is not trained).
    ``reduction``: ``mean`` (over images), ``sum`` or ``none`` (``(N,)``). ``t_squared`` multiplies by T²
    (Hinton's scaling; off for defensive distillation, module docstring).
    """
    T = check_temperature(T)
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise TriqdefError(f"distillation logits of shapes {tuple(student_logits.shape)} and "
                           f"{tuple(teacher_logits.shape)}: expected two (N, K) tensors of the same shape")
    target = F.softmax(teacher_logits.detach() / T, dim=1)
    per_image = -(target * F.log_softmax(student_logits / T, dim=1)).sum(1)
    if t_squared:
        per_image = per_image * T * T
    return _reduce(per_image, reduction)


class DistillationLoss(nn.Module):
    """:func:`distillation_loss` as a module: ``DistillationLoss(T)(student_logits, teacher_logits)``."""

    def __init__(self, T: float, reduction: str = "mean", t_squared: bool = False):
        super().__init__()
        self.T, self.t_squared = check_temperature(T), bool(t_squared)
        _reduce(torch.zeros(1), reduction)
        self.reduction = reduction

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return distillation_loss(student_logits, teacher_logits, self.T, self.reduction, self.t_squared)

    def extra_repr(self) -> str:
        return f"T={self.T:g}, reduction={self.reduction}, t_squared={self.t_squared}"


class TemperatureStep:
    """Train on the hard labels at temperature T: ``CE(z / T, y)`` (the teacher; T = 1 is plain training).

    ``scale_by_T``: the loss that is back-propagated is ``T · CE(z / T, y)``, whose gradient in the logits,
    ``softmax(z / T) − y``, keeps the T = 1 scale (the plain loss's is T times smaller: at T = 50 and a few
    hundred steps the teacher does not learn; README "Deviations"). The logged ``loss`` is the unscaled CE.
    ``log`` keys: ``loss``, ``acc`` (training-batch accuracy of the argmax, the same at any T).
    """

    def __init__(self, T: float = 1.0, label_smoothing: float = 0.0, scale_by_T: bool = False):
        self.T = check_temperature(T)
        if not 0 <= label_smoothing < 1:
            raise TriqdefError(f"label_smoothing={label_smoothing!r}: expected a number in [0, 1)")
        self.label_smoothing, self.scale_by_T = label_smoothing, bool(scale_by_T)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int):
        """``(loss, logits, record)`` of one batch, without ``backward`` (``loss`` scaled by T when asked)."""
        logits = model(x)
        loss = F.cross_entropy(logits / self.T, y, label_smoothing=self.label_smoothing)
        record = {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}
        return (loss * self.T if self.scale_by_T else loss), logits, record

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float]:
        loss, _, record = self.loss(model, x, y, step)
        loss.backward()
        return record


class DistillationStep:
    """Train the student at temperature T on the teacher's soft labels (:func:`distillation_loss`).

    The teacher runs in eval mode without a graph (its BN statistics and quantizers do not change; its own
    mode is restored after each step); it is moved to the batch's device once. ``log`` keys: ``loss``,
    ``acc`` (student against the hard labels), ``agreement`` (student's argmax equals the teacher's).

    ``scale_by_T``: back-propagate ``T ·`` the soft loss. Its logit gradient is then ``softmax(s / T) −
    softmax(t / T)``, the T = 1 scale, for a teacher trained at the same T (defensive distillation), whose soft
    labels at T are as confident as a T = 1 model's. (Hinton's T² suits a teacher trained at T = 1, whose soft
    labels at a high T are near uniform; here it multiplies the gradient by T and the student diverges: at T = 50
    it stayed at 10 % after 300 steps, measured.) The logged ``loss`` is the unscaled one.
    """

    def __init__(self, teacher: nn.Module, T: float, t_squared: bool = False, scale_by_T: bool = False):
        self.teacher, self.T, self.t_squared = teacher, check_temperature(T), bool(t_squared)
        self.scale_by_T = bool(scale_by_T)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        device = next(self.teacher.parameters()).device
        if device != x.device:
            self.teacher.to(x.device)
        with quant.eval_mode(self.teacher):
            return self.teacher(x)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int):
        """``(loss, logits, record)`` of one batch, without ``backward``."""
        teacher = self.teacher_logits(x.detach())
        logits = model(x)
        loss = distillation_loss(logits, teacher, self.T, t_squared=self.t_squared)
        record = {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item(),
                  "agreement": (logits.argmax(1) == teacher.argmax(1)).float().mean().item()}
        return (loss * self.T if self.scale_by_T else loss), logits, record

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float]:
        loss, _, record = self.loss(model, x, y, step)
        loss.backward()
        return record
