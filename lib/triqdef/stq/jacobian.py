"""Jacobian regularisation by random projections (Hoffman, Roberts and Yaida 2019, "Robust Learning with
Jacobian Regularization", sec. 2-3 and Algorithm 1); STQ's explicit JR option (Zakariyya et al. 2025,
"Mechanism 1" of its summary).

For an image ``x`` and logits ``z(x) ∈ R^C`` the input-logit Jacobian is ``J = ∂z/∂x`` (``C × D``). For ``v``
uniform on the unit sphere of ``R^C``, ``E[||vᵀJ||²] = ||J||_F² / C``, so

    ||J(x)||_F² ≈ C / n_proj · Σ_{i=1..n_proj} ||v_iᵀ J(x)||²,

where each ``v_iᵀJ = ∂(v_i · z)/∂x`` is one backward pass (for the whole batch at once: one ``v`` per image,
``∂(Σ_b v_b · z_b)/∂x``), taken with ``create_graph=True`` so that the estimate can be minimised. Unbiased
for any ``n_proj``; Hoffman et al. find one projection enough for training. ``orthogonal=True`` draws the
projections of an image as orthonormal rows of a random rotation (each row still uniform on the sphere), and
the estimate is then exact once ``n_proj = C`` (a variance reduction, not in the paper).

The training loss, as Hoffman et al.'s eq. (4) and Algorithm 1:

    L = L_data + (λ_JR / 2) · mean_b ||J(x_b)||_F²,

where ``L_data`` is cross-entropy, or a defensive-distillation loss (:mod:`triqdef.stq.distillation`).
Note the ``1/2`` (Hoffman's convention): λ_JR = 0.01 means what it means in their paper.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from triqdef.errors import TriqdefError
from triqdef.stq.distillation import DistillationStep, TemperatureStep

_PROJECTION_SALT = 29


def _generator(seed: int, step: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7919 + salt)


def _check_projections(n_projections) -> int:
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise TriqdefError(f"Jacobian n_projections={n_projections!r}: expected a positive integer")
    return n_projections


def random_projections(n_images: int, n_classes: int, n_projections: int, generator: torch.Generator | None = None,
                       orthogonal: bool = False) -> torch.Tensor:
    """Unit vectors in logit space, ``(n_projections, n_images, n_classes)``, uniform on the sphere.

    ``orthogonal``: an image's projections are the rows of random rotations (Haar, by QR with the sign fix),
    ``n_classes`` orthonormal rows per rotation.
    """
    _check_projections(n_projections)
    if not orthogonal:
        v = torch.randn(n_projections, n_images, n_classes, generator=generator)
        return v / v.norm(dim=2, keepdim=True).clamp_min(1e-12)
    blocks = []
    for _ in range(-(-n_projections // n_classes)):
        a = torch.randn(n_images, n_classes, n_classes, generator=generator)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)  # Haar-distributed rotation
        blocks.append(q.transpose(1, 2))  # rows are the projections: (n_images, n_classes, n_classes)
    rows = torch.cat(blocks, dim=1)[:, :n_projections]  # (n_images, n_projections, n_classes)
    return rows.transpose(0, 1).contiguous()


def jacobian_frobenius_sq(logits: torch.Tensor, inputs: torch.Tensor, n_projections: int = 1,
                          generator: torch.Generator | None = None, orthogonal: bool = False,
                          create_graph: bool = True) -> torch.Tensor:
    """Estimate of ``mean_b ||∂z_b/∂x_b||_F²`` over the batch (module docstring), a 0-d tensor.

    ``logits`` ``(N, C)`` must come from ``inputs`` (which requires grad) by a graph; ``create_graph=True``
    keeps the graph of the estimate for training. Images are assumed independent (eval-mode BN): with
    training-mode BN the batch statistics couple them and the estimate includes those (small) cross terms,
    as in Hoffman et al.'s implementation.
    """
    if logits.dim() != 2 or logits.shape[0] != inputs.shape[0]:
        raise TriqdefError(f"Jacobian of logits {tuple(logits.shape)} with respect to inputs {tuple(inputs.shape)}: "
                           "expected (N, C) logits of the N inputs")
    if not inputs.requires_grad:
        raise TriqdefError("Jacobian regularisation: expected inputs that require grad (x.requires_grad_(True) "
                           "before the forward)")
    n, c = logits.shape
    v = random_projections(n, c, n_projections, generator, orthogonal).to(logits.device, logits.dtype)
    total = logits.new_zeros(())
    for i in range(n_projections):
        (jv,) = torch.autograd.grad((logits * v[i]).sum(), inputs, create_graph=create_graph,
                                    retain_graph=True)
        total = total + jv.pow(2).sum()
    return total * c / (n_projections * n)


def exact_jacobian_frobenius_sq(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``||∂z_b/∂x_b||_F²`` per image, ``(N,)``, exactly: one backward pass per class (images independent,
    e.g. eval mode). A reference for the estimate; no graph is kept."""
    inputs = x.detach().clone().requires_grad_(True)
    logits = model(inputs)
    out = torch.zeros(x.shape[0], dtype=logits.dtype, device=logits.device)
    for k in range(logits.shape[1]):
        (g,) = torch.autograd.grad(logits[:, k].sum(), inputs, retain_graph=k + 1 < logits.shape[1])
        out += g.flatten(1).pow(2).sum(1)
    return out


class JacobianStep:
    """A training step for :func:`triqdef.training.loop.fit`: ``L_data + (λ_JR / 2) · ||J||_F²`` (estimated).

    ``base`` gives ``L_data``: a :class:`~triqdef.stq.distillation.TemperatureStep` (default ``T = 1``: plain
    cross-entropy) or a :class:`~triqdef.stq.distillation.DistillationStep` (JR on a distilled student). The
    Jacobian is that of the logits (at T = 1). The projections depend on (seed, step) only, so an interrupted
    run resumes exactly. ``log`` keys: the base's, ``jr`` (the estimate of ``mean ||J||_F²``) and ``total``.
    """

    def __init__(self, lambda_jr: float, n_projections: int = 1, seed: int = 0,
                 base: TemperatureStep | DistillationStep | None = None, orthogonal: bool = False):
        if isinstance(lambda_jr, bool) or not isinstance(lambda_jr, (int, float)) or not lambda_jr >= 0:
            raise TriqdefError(f"Jacobian regularisation lambda_jr={lambda_jr!r}: expected a number >= 0")
        self.lambda_jr, self.n_projections = float(lambda_jr), _check_projections(n_projections)
        self.seed, self.orthogonal = seed, bool(orthogonal)
        self.base = base if base is not None else TemperatureStep(1.0)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> dict[str, float]:
        inputs = x.detach().clone().requires_grad_(True)
        loss, logits, record = self.base.loss(model, inputs, y, step)
        jr = jacobian_frobenius_sq(logits, inputs, self.n_projections, _generator(self.seed, step, _PROJECTION_SALT),
                                   self.orthogonal, create_graph=self.lambda_jr > 0)
        total = loss + 0.5 * self.lambda_jr * jr if self.lambda_jr > 0 else loss
        total.backward()
        record.update(jr=jr.item(), total=total.item())
        return record
