"""QADT-R (Guesmi et al., the TriQDef authors' earlier defense): A-QAPA + DBWT + GIR on the shared multi-bit
backbone, a step function for :func:`triqdef.training.loop.fit` beside PBAT, DWQ and TriQDef
(:mod:`triqdef.defenses.steps`), from the same checkpoint for the same steps.

Our reading of what the summary leaves open (docs/design.md#qadt-r):

* **DBWT** (dynamic bit-width training): one bit-width per step, cycled through ``B`` in an order shuffled
  anew for every cycle (TriQDef instead trains every active bit-width each step).
* **A-QAPA** (adaptive quantization-aware patch generation): a share ``rho`` of the batch is patched; half of
  those images (``pool_share``) get a patch of the FP-made training pool, the others one universal patch made
  on the fly inside the quantized model: ``attack_steps`` signed steps at a bit-width drawn from ``B`` each
  step, with expectation over location.
* **GIR** (gradient-inconsistent regularisation): λ_GIR times the mean cosine similarity of the input
  gradients of the patched images at the step's bit-width and at one other bit-width drawn from ``B`` (the
  other's detached; no perceptual descriptors, unlike TriQDef's GPDP), so that minimising it pulls the
  bit-widths' gradients apart; plus Gaussian noise of std ``sigma · rms(g)`` added to the gradient that the
  on-the-fly patch generation follows ("controlled gradient perturbations").

Loss of a step at bit-width ``b``: ``CE(clean) + CE(patched) + λ_GIR · GIR``. Everything random depends on
(seed, step) only, so an interrupted run resumes exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from triqdef import quant
from triqdef.attacks.patches import paste, random_locations
from triqdef.errors import TriqdefError
from triqdef.syncguard import host_int, host_to_device
from triqdef.training.records import Later, StepRecord

_CYCLE_SALT, _PATCH_SALT = 11, 13


def _generator(seed: int, step: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7919 + salt)


def dbwt_bitwidth(bits: Sequence[int], seed: int, step: int) -> int:
    """DBWT: the bit-width of ``step``, cycling through ``bits`` in an order shuffled for every cycle."""
    n = len(bits)
    cycle, position = divmod(int(step), n)
    order = torch.randperm(n, generator=_generator(seed, cycle, _CYCLE_SALT))
    return list(bits)[host_int(order[position])]


def noisy_signed_steps(loss, start: torch.Tensor, steps: int, step_size: float, sigma: float,
                       generator: torch.Generator) -> torch.Tensor:
    """Signed-gradient *ascent* steps ``x ← clip(x + η sign(∇ + ξ), 0, 1)`` with GIR's perturbation
    ``ξ ~ N(0, (sigma · rms(∇))²)``; ``sigma = 0``: plain signed steps (as PBAT's inner attack)."""
    x = start
    for k in range(steps):
        leaf = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(leaf, k), leaf)
        if sigma > 0:
            rms = grad.pow(2).mean().sqrt()
            grad = grad + sigma * rms * host_to_device(torch.randn(grad.shape, generator=generator), grad.device)
        x = (x.detach() + step_size * grad.sign()).clamp(0, 1)
    return x


def input_gradient(model, x: torch.Tensor, y: torch.Tensor, bits: int, create_graph: bool) -> torch.Tensor:
    """∇_x of the summed cross-entropy at ``bits`` (eval-mode BN, as TriQDef's GPDP)."""
    x = x.detach().clone().requires_grad_(True)
    with quant.use_bitwidth(model, bits):
        loss = F.cross_entropy(model(x), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, x, create_graph=create_graph)
    return g


def gradient_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over images of the cosine similarity of two input-gradient batches (GIR's term)."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1, eps=1e-12).mean()


class QADTRStep:
    """One QADT-R training step (module docstring); ``log`` keys: bits, attack_bits, loss_clean, loss_adv, gir, total."""

    def __init__(self, bits: Sequence[int], seed: int, pool: torch.Tensor | Mapping[int, torch.Tensor] | None, *,
                 rho: float = 0.5, pool_share: float = 0.5, attack_steps: int = 3, step_size: float = 0.1,
                 lambda_gir: float = 0.5, sigma: float = 0.1, gir_sub_batch: int = 8, border: int = 4):
        self.bits, self.seed = quant.check_bit_set(bits), seed
        if len(self.bits) < 2:
            raise TriqdefError(f"QADT-R bit-widths {list(bits)}: expected at least two (DBWT cycles, GIR compares two)")
        for name, value in (("rho", rho), ("pool_share", pool_share)):
            if not 0 <= value <= 1:
                raise TriqdefError(f"QADT-R {name}={value!r}: expected a fraction in [0, 1]")
        for name, value in (("lambda_gir", lambda_gir), ("sigma", sigma), ("step_size", step_size)):
            if not value >= 0:
                raise TriqdefError(f"QADT-R {name}={value!r}: expected a number >= 0")
        if isinstance(attack_steps, bool) or not isinstance(attack_steps, int) or attack_steps < 0:
            raise TriqdefError(f"QADT-R attack_steps={attack_steps!r}: expected an integer >= 0")
        self.pool = {int(pool.shape[-1]): pool} if isinstance(pool, torch.Tensor) else dict(pool or {})
        self.pool = {k: v for k, v in self.pool.items() if len(v)}
        if pool_share > 0 and not self.pool:
            raise TriqdefError("QADT-R with pool_share > 0 needs the training pool: expected the 'pool' set of "
                               "results/patches/patches.pt (run 'triqdef patches make')")
        self.rho, self.pool_share, self.attack_steps, self.step_size = rho, pool_share, attack_steps, step_size
        self.lambda_gir, self.sigma, self.gir_sub_batch, self.border = lambda_gir, sigma, gir_sub_batch, border

    def _patched(self, model, x, y, g) -> tuple[torch.Tensor, int]:
        """A-QAPA: pool patches on the first ``pool_share`` of ``x``, one on-the-fly patch on the rest."""
        n = x.shape[0]
        sizes = sorted(self.pool) or [6]
        size = sizes[host_int(torch.randint(0, len(sizes), (1,), generator=g))]
        n_pool = int(round(self.pool_share * n))
        contents = torch.empty(n, 3, size, size, device=x.device)
        if n_pool:
            pool = self.pool[size]
            contents[:n_pool] = host_to_device(pool[torch.randint(0, len(pool), (n_pool,), generator=g)], x.device)
        attack_bits = self.bits[host_int(torch.randint(0, len(self.bits), (1,), generator=g))]
        if n_pool < n:
            rest_x, rest_y = x[n_pool:], y[n_pool:]

            def loss(patch: torch.Tensor, k: int) -> torch.Tensor:  # expectation over location
                loc = host_to_device(random_locations(rest_x.shape[0], size, g, x.shape[-1], self.border), x.device)
                with quant.use_bitwidth(model, attack_bits):
                    return F.cross_entropy(model(paste(rest_x, patch.expand(rest_x.shape[0], -1, -1, -1), loc)), rest_y)

            start = host_to_device(torch.rand(3, size, size, generator=g), x.device)
            with quant.eval_mode(model):
                patch = noisy_signed_steps(loss, start, self.attack_steps, self.step_size, self.sigma, g)
            contents[n_pool:] = patch
        loc = host_to_device(random_locations(n, size, g, x.shape[-1], self.border), x.device)
        return paste(x, contents, loc).detach(), attack_bits

    def __call__(self, model, x, y, step) -> StepRecord:
        b = dbwt_bitwidth(self.bits, self.seed, step)
        g = _generator(self.seed, step, _PATCH_SALT)
        n_adv = max(1, int(round(self.rho * x.shape[0])))
        n_clean = x.shape[0] - n_adv
        x_adv, attack_bits = self._patched(model, x[n_clean:], y[n_clean:], g)
        with quant.use_bitwidth(model, b):
            logits_adv = model(x_adv)
            logits_clean = model(x[:n_clean]) if n_clean else None
        ce_adv = F.cross_entropy(logits_adv, y[n_clean:])
        ce_clean = F.cross_entropy(logits_clean, y[:n_clean]) if n_clean else torch.zeros((), device=x.device)
        (ce_clean + ce_adv).backward()
        rec = StepRecord({"bits": b, "attack_bits": attack_bits, "loss_clean": ce_clean, "loss_adv": ce_adv,
                          "acc_adv": (logits_adv.argmax(1) == y[n_clean:]).float().mean()})
        gir = 0.0
        if self.lambda_gir > 0:  # GIR on a sub-batch of the patched images, against one other bit-width
            others = [o for o in self.bits if o != b]
            other = others[host_int(torch.randint(0, len(others), (1,), generator=g))]
            xs, ys = x_adv[: self.gir_sub_batch], y[n_clean:][: self.gir_sub_batch]
            with quant.eval_mode(model):
                reference = input_gradient(model, xs, ys, other, create_graph=False)
                own = input_gradient(model, xs, ys, b, create_graph=True)
                cos = gradient_cosine(own, reference)
                (self.lambda_gir * cos).backward()
            gir = cos
            rec["gir_other_bits"] = other
        rec["gir"] = gir
        rec["total"] = Later(lambda r: r["loss_clean"] + r["loss_adv"] + self.lambda_gir * r["gir"])
        return rec
