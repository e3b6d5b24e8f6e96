"""Training steps of TriQDef (paper section 3, Algorithms 1 and 2) and of the DWQ baseline (PBAT's:
:mod:`triqdef.defenses.pbat`).

Each defense is a *step function* for :func:`triqdef.training.loop.fit`: called with
``(model, x, y, step)`` on a switchable-precision model, it computes its losses,
calls ``backward`` and returns the values to log. Everything random depends
on (seed, step) only, so an interrupted run resumes exactly.

* :class:`TriQDefStep`: L_total = L_clean + λ_adv L_adv + λ_FDP L_FDP + λ_GPDP L_GPDP
  (section 3.3), over the bit-widths the BACT schedule has active
  (:mod:`triqdef.bact`); a share ρ of each batch is patched with patches drawn
  from the training pool (random pool patch and random location inside the
  training region, per image) or optimised on the fly. The clean and the
  patched part each have their own forward (and BN batch statistics), as in
  adversarial-training code that forwards the two halves separately. FDP
  (eq. 2) is on the tap layers' features of the patched part and GPDP (eq. 3) on the input
  gradients of a sub-batch of it (double backprop, its own forward, eval-mode
  BN so the sub-batch does not couple to the rest of the batch). Both are
  computed one bit-width at a time (:func:`triqdef.losses.one_sided_penalty`):
  a first pass without a graph over the patched part, which stops at the last
  tap layer, gives the descriptors of every bit-width but the first one the
  second pass takes (whose second-pass descriptors serve instead; a
  fake-quantized one, so that the first pass runs the cheaper full-precision
  forward in its place) and updates their observers and
  BN statistics up to there; the second pass, with the graph, keeps those
  frozen (and updates the later layers' itself), so it sees exactly the same
  quantizer scales and BN batch statistics, and the accumulated gradient is
  that of the full penalty.
* :class:`DWQStep` (Fu et al. 2021): one random bit-width per step; PGD-ℓ∞
  adversarial examples made at that bit-width; cross-entropy on them.

The inner attacks run :func:`triqdef.attacks.signed_gradient.signed_gradient_steps` and paste with
:func:`triqdef.attacks.patches.paste`; the taps are read with :mod:`triqdef.taps`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from triqdef import quant
from triqdef.attacks.patches import paste, random_locations
from triqdef.attacks.signed_gradient import pgd_linf, signed_gradient_steps
from triqdef.bact import Schedule, enable_bits
from triqdef.config import TriQDefParams, as_dict
from triqdef.errors import TriqdefError
from triqdef.losses import PenaltySettings, describe, one_sided_penalty, pairwise_penalty
from triqdef.syncguard import host_int, host_to_device
from triqdef.taps import StopForward, stop_after, tap_outputs
from triqdef.training.records import Later, StepRecord, mean_of


def _generator(seed: int, step: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 7919 + salt)


@contextlib.contextmanager
def _record_statistics_modules(modules, ran: list):
    """Append to ``ran`` every observer / BN module among ``modules`` that runs inside the block (each once)."""
    seen: set[int] = set()

    def note(module, inputs, output):
        if id(module) not in seen:
            seen.add(id(module))
            ran.append(module)

    handles = [m.register_forward_hook(note) for m in quant.statistics_modules(modules)]
    try:
        yield ran
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- TriQDef


@dataclass
class TriQDefSettings:
    """The hyper-parameters of section 3.3 / 4.1 (a ``triqdef`` params section)."""

    lambda_adv: float = 1.0
    lambda_fdp: float = 0.8
    lambda_gpdp: float = 0.5
    rho: float = 0.5
    penalty: PenaltySettings = field(default_factory=PenaltySettings)
    taps: Sequence[str] = ()  # FDP tap layers: params.yaml triqdef.taps (TriQDefParams.taps_of), the one list
    gpdp_sub_batch: int = 8
    gpdp_every: int = 1
    gpdp_scaled: bool = True  # GPDP's weight x gpdp_every on the steps it runs: lambda_gpdp per step on average
    gpdp_joint: bool = False  # hold every bit-width's sub-batch graph at once (no detached first pass)
    patch_source: str = "pool"  # pool | on_the_fly
    otf_steps: int = 3
    otf_step_size: float = 0.1
    border: int = 4
    label_smoothing: float = 0.0

    def __post_init__(self):
        if not self.taps:
            raise TriqdefError("parameter triqdef.taps is empty: expected the FDP tap layers of the model (params.yaml)")
        for name in ("lambda_adv", "lambda_fdp", "lambda_gpdp"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise TriqdefError(f"parameter triqdef.{name} = {v!r}: expected a number >= 0")
        if not isinstance(self.rho, (int, float)) or not 0 < self.rho < 1:
            raise TriqdefError(f"parameter triqdef.rho = {self.rho!r}: expected a number in (0, 1)")
        for name in ("gpdp_sub_batch", "gpdp_every", "otf_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise TriqdefError(f"parameter triqdef.{name} = {v!r}: expected a positive integer")
        if self.patch_source not in ("pool", "on_the_fly"):
            raise TriqdefError(f"parameter triqdef.patch_source = {self.patch_source!r}: expected 'pool' or 'on_the_fly'")

    @classmethod
    def from_params(cls, cfg: dict) -> TriQDefSettings:
        pen_keys = set(PenaltySettings.__dataclass_fields__)
        own = {k: v for k, v in cfg.items() if k in cls.__dataclass_fields__ and k != "penalty"}
        pen = PenaltySettings(**{k: v for k, v in cfg.items() if k in pen_keys})
        if "taps" in own and isinstance(own["taps"], list):
            own["taps"] = tuple(own["taps"])
        return cls(penalty=pen, **own)


def triqdef_settings(tq: TriQDefParams, model_name: str, **overrides) -> TriQDefSettings:
    """:class:`TriQDefSettings` from the ``triqdef`` params section, the taps of ``model_name``, and overrides (None = keep)."""
    cfg = {k: v for k, v in as_dict(tq).items() if k not in ("taps", "bact")}
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    return TriQDefSettings.from_params(dict(cfg, taps=list(tq.taps_of(model_name))))


@dataclass(frozen=True)
class Prepared:
    """What a step's host-side part hands its device part: ``key``, the Python-side decisions (a CUDA graph per
    key, :class:`triqdef.training.graphed.CapturedStep`), and ``inputs``, the device tensors it computes on."""

    key: tuple
    inputs: tuple[torch.Tensor, ...]


class TriQDefStep:
    """One TriQDef training step (see the module docstring); ``log`` keys: loss_clean, loss_adv, fdp, gpdp, total, n_bits."""

    def __init__(self, settings: TriQDefSettings, schedule: Schedule, pool: torch.Tensor | Mapping[int, torch.Tensor] | None,
                 holdout_batches: Sequence[torch.Tensor], seed: int, calibrate_new_bits: bool = True,
                 copy_bn: bool = True, measure: Callable[[nn.Module, int], torch.Tensor] | None = None):
        self.s, self.schedule, self.seed = settings, schedule, seed
        # BACT (docs/design.md#bact): calibrate each newly enabled bit-width on the held-out batches; its BN first
        # copied from the lowest active one (copy_bn; False when the start checkpoint trained every bit-width)
        self.calibrate_new_bits, self.copy_bn = calibrate_new_bits, copy_bn
        # measure(model, b): a held-out accuracy (a 0-dim tensor, read later), taken at each enabled bit-width just
        # before and just after its calibration; the pairs go to ``calibrations``
        self.measure, self.calibrations = measure, []
        # training-pool contents by size, {s: (P_s, 3, s, s)} (a tensor: one size)
        self.pool = {int(pool.shape[-1]): pool} if isinstance(pool, torch.Tensor) else dict(pool or {})
        self.pool = {k: v for k, v in self.pool.items() if len(v)}
        self.holdout = list(holdout_batches)
        if settings.patch_source == "pool" and not self.pool:
            raise TriqdefError("TriQDef with patch_source 'pool' needs the training pool: expected the 'pool' set of "
                               "results/patches/patches.pt (run 'triqdef patches make')")

    # -- patches
    def _patched(self, model, x, y, step, active) -> torch.Tensor:
        g = _generator(self.seed, step, 1)
        n = x.shape[0]
        sizes = sorted(self.pool) or [6]
        size = sizes[host_int(torch.randint(0, len(sizes), (1,), generator=g))] if len(sizes) > 1 else sizes[0]
        if self.s.patch_source == "pool":  # one size per step (the pool mixes the paper's and the matched size)
            pool = self.pool[size]
            idx = torch.randint(0, len(pool), (n,), generator=g)
            contents = host_to_device(pool[idx], x.device)
        else:
            contents = self._on_the_fly(model, x, y, g, active, size)
        loc = host_to_device(random_locations(n, size, g, x.shape[-1], self.s.border), x.device)
        return paste(x, contents, loc)

    def _on_the_fly(self, model, x, y, g, active, size) -> torch.Tensor:
        """K signed steps on one universal patch, expectation over location and over the active bit-widths."""

        def loss(patch: torch.Tensor, step: int) -> torch.Tensor:  # a random active bit-width, then random locations
            b = active[host_int(torch.randint(0, len(active), (1,), generator=g))]
            loc = random_locations(x.shape[0], size, g, x.shape[-1], self.s.border).to(x.device)
            with quant.use_bitwidth(model, b):  # expand: the patch's gradient is torch's sum over the images
                return F.cross_entropy(model(paste(x, patch.expand(x.shape[0], -1, -1, -1), loc)), y)

        patch = torch.rand(3, size, size, generator=g).to(x.device)
        with quant.eval_mode(model):
            patch = signed_gradient_steps(loss, patch, self.s.otf_steps, self.s.otf_step_size, (0, 1))
        return patch.expand(x.shape[0], -1, -1, -1)

    # -- penalties
    def _fdp_descriptors(self, feats: dict[str, torch.Tensor]):
        return [describe(feats[t], "feature", self.s.penalty) for t in self.s.taps]

    def _input_gradient(self, model, xs, ys, b, create_graph: bool) -> torch.Tensor:
        xs = xs.detach().clone().requires_grad_(True)
        with quant.use_bitwidth(model, b):
            loss = F.cross_entropy(model(xs), ys, reduction="sum")
        (g,) = torch.autograd.grad(loss, xs, create_graph=create_graph)
        return g

    @property
    def gpdp_weight(self) -> float:
        """GPDP's weight on the steps it runs (eq. 4's lambda_GPDP): times ``gpdp_every`` when ``gpdp_scaled``, so that
        running it every n-th step keeps its average weight per step at the paper's lambda_GPDP."""
        s = self.s
        return s.lambda_gpdp * (s.gpdp_every if s.gpdp_scaled else 1)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> StepRecord:
        """The step, eagerly: :meth:`prepare`, then :meth:`compute` (timing each of its three phases)."""
        prepared = self.prepare(model, x, y, step)
        return self.compute(model, *prepared.inputs, key=prepared.key, timed=True)

    def prepare(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int) -> Prepared:
        """The part of a step that draws on the host and decides in Python: BACT's newly enabled bit-widths (BN
        copied, calibrated), the patched images (pool patches and locations from the step's generator), and which
        bit-widths and penalties this step runs, the :class:`Prepared` key. Runs eagerly, also when the rest is
        replayed from a CUDA graph (``base.compile``, :class:`triqdef.training.graphed.CapturedStep`)."""
        s = self.s
        new = self.schedule.enabled_at(step)
        if new and self.calibrate_new_bits:
            prev = [b for b in self.schedule.active(step) if b not in new]
            measured = [b for b in new if b != quant.FP_BITS] if self.measure else []
            before = {b: self.measure(model, b) for b in measured}
            enable_bits(model, new, prev, [h.to(x.device) for h in self.holdout], copy_bn=self.copy_bn)
            self.calibrations += [{"step": step, "bits": b, "before": before[b], "after": self.measure(model, b)}
                                  for b in measured]
        active = tuple(self.schedule.active(step))
        n_adv = max(1, int(round(s.rho * x.shape[0])))
        n_clean = x.shape[0] - n_adv
        x_adv = self._patched(model, x[n_clean:], y[n_clean:], step, list(active))
        use_gpdp = s.lambda_gpdp > 0 and len(active) >= 2 and step % s.gpdp_every == 0
        return Prepared((active, use_gpdp), (x[:n_clean], y[:n_clean], x_adv, y[n_clean:]))

    def compute(self, model: nn.Module, x_clean: torch.Tensor, y_clean: torch.Tensor, x_adv: torch.Tensor,
                y_adv: torch.Tensor, *, key: tuple, timed: bool = False) -> StepRecord:
        """The losses of one step and their ``backward`` (eq. 4): the device part of the step, reading nothing
        into Python, so that a CUDA graph can hold it. ``key`` = (active bit-widths, GPDP this step) from
        :meth:`prepare`; ``timed`` logs each phase's wall time (``ms_*``; meaningless inside a graph)."""
        s = self.s
        active, use_gpdp = key
        active = list(active)
        n_bits = len(active)
        use_fdp = s.lambda_fdp > 0 and n_bits >= 2
        rec = StepRecord({"n_bits": n_bits})
        lambda_gpdp = self.gpdp_weight

        # pass 2 takes a fake-quantized bit-width first, so that pass 1 runs the cheap full-precision forward
        # instead of a fake-quantized one (ResNet-20, 32 patched images: ~20 against ~45 ms on 2 CPU cores)
        order = sorted(active, key=lambda b: b == quant.FP_BITS)
        modules = dict(model.named_modules()) if use_fdp else None
        detached_fdp, ran = {}, []
        t0 = time.perf_counter()
        if use_fdp:  # pass 1: the descriptors of the patched half, no graph, stopping at the last tap, for every
            # bit-width but the first one pass 2 runs (that one's pass-2 descriptors are the same; pass 2 gives them)
            with torch.no_grad(), tap_outputs(model, s.taps, modules) as feats, \
                    _record_statistics_modules(modules.values(), ran), stop_after(modules[s.taps[-1]]):
                for b in order[1:]:
                    with quant.use_bitwidth(model, b), contextlib.suppress(StopForward):
                        model(x_adv)
                    detached_fdp[b] = self._fdp_descriptors(feats)
        t1 = time.perf_counter()
        ce_cleans, ce_advs = [], []
        for b in order:  # pass 2: one bit-width's graph at a time
            with quant.use_bitwidth(model, b):
                # the patched half first: up to the last tap it sees the statistics pass 1 left (frozen there), so
                # its descriptors are exactly pass 1's; the later layers' statistics update here, once per step
                # (without FDP there was no pass 1: ``ran`` is empty and nothing is frozen)
                with quant.frozen_statistics(ran), tap_outputs(model, s.taps if use_fdp else [], modules) as feats:
                    logits_adv = model(x_adv)
                    own = self._fdp_descriptors(feats) if use_fdp else None
                logits_clean = model(x_clean)  # its own forward (and BN batch statistics), as the patched half
            ce_clean = F.cross_entropy(logits_clean, y_clean, label_smoothing=s.label_smoothing)
            ce_adv = F.cross_entropy(logits_adv, y_adv, label_smoothing=s.label_smoothing)
            loss = (ce_clean + s.lambda_adv * ce_adv) / n_bits
            if use_fdp:
                others = {o: d for o, d in detached_fdp.items() if o != b}
                loss = loss + s.lambda_fdp * one_sided_penalty(own, others, n_bits, s.penalty)
                if b not in detached_fdp:  # the first bit-width: no pass 1, its own descriptors serve the others
                    detached_fdp[b] = [d.detach() for d in own]
                    rec["fdp"] = pairwise_penalty({k: detached_fdp[k] for k in active}, s.penalty)
            loss.backward()
            ce_cleans.append(ce_clean.detach())
            ce_advs.append(ce_adv.detach())
            rec[f"acc_adv_{b}"] = (logits_adv.argmax(1) == y_adv).float().mean()
        rec["loss_clean"], rec["loss_adv"] = mean_of(ce_cleans), mean_of(ce_advs)
        t2 = time.perf_counter()

        if use_gpdp:  # GPDP on a sub-batch of the patched part, in its own eval-mode forward
            rec["gpdp_weight"] = lambda_gpdp
            xs, ys = x_adv[: s.gpdp_sub_batch], y_adv[: s.gpdp_sub_batch]
            with quant.eval_mode(model):
                if s.gpdp_joint:  # every bit-width's (small) double-backprop graph at once, one backward
                    descs = {b: [describe(self._input_gradient(model, xs, ys, b, True), "gradient", s.penalty)]
                             for b in active}
                    pen = pairwise_penalty(descs, s.penalty)
                    (lambda_gpdp * pen).backward()
                    rec["gpdp"] = pen
                else:
                    detached = {b: [describe(self._input_gradient(model, xs, ys, b, False), "gradient", s.penalty)]
                                for b in active}
                    rec["gpdp"] = pairwise_penalty(detached, s.penalty)
                    for b in active:
                        own = [describe(self._input_gradient(model, xs, ys, b, True), "gradient", s.penalty)]
                        others = {o: d for o, d in detached.items() if o != b}
                        (lambda_gpdp * one_sided_penalty(own, others, n_bits, s.penalty)).backward()
        t3 = time.perf_counter()
        if timed:
            rec.update(ms_fdp_pass=1000 * (t1 - t0), ms_main_pass=1000 * (t2 - t1), ms_gpdp=1000 * (t3 - t2))
        rec["total"] = Later(lambda r: r["loss_clean"] + s.lambda_adv * r["loss_adv"] + s.lambda_fdp * r.get("fdp", 0.0)
                             + lambda_gpdp * r.get("gpdp", 0.0))
        return rec


# --------------------------------------------------------------------------- baselines


class DWQStep:
    """DWQ (Fu et al. 2021): one random bit-width per step, PGD-ℓ∞ examples at that bit-width, CE on them."""

    def __init__(self, bits: Sequence[int], seed: int, eps: float = 8 / 255, alpha: float = 2 / 255, attack_steps: int = 3):
        self.bits, self.seed, self.eps, self.alpha, self.attack_steps = list(bits), seed, eps, alpha, attack_steps

    def __call__(self, model, x, y, step) -> StepRecord:
        g = _generator(self.seed, step, 2)
        b = self.bits[host_int(torch.randint(0, len(self.bits), (1,), generator=g))]
        x_adv = pgd_linf(model, x, y, b, self.eps, self.alpha, self.attack_steps, g)
        with quant.use_bitwidth(model, b):
            logits = model(x_adv)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return StepRecord({"bits": b, "loss_adv": loss, "acc_adv": (logits.argmax(1) == y).float().mean()})
