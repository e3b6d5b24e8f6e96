"""The six attacks STQ is evaluated with (Zakariyya et al. 2025, "Method Summary" of its summary), from the
Adversarial Robustness Toolbox (ART, a core dependency): white-box FGSM, PGD and C&W,
black-box (query-based) Square, Boundary and ZOO.

Threat model: untargeted, ℓ∞ ball of radius ``eps = 8/255`` around the test image, pixels in [0, 1]. FGSM,
PGD and Square take ``eps`` themselves. C&W, Boundary and ZOO are minimum-distortion attacks without a
budget; their output is *projected* onto the ε-ball (``clip(x + clip(x_adv − x, −ε, ε), 0, 1)``) before it
is classified, which keeps every attack inside the same threat model (a projected example that still fools
the model is a valid ε-bounded attack; one that no longer does counts as robust). Each result also keeps
the unprojected outcome and the ℓ∞ distance of ART's output.

* **C&W**: ART's ``CarliniLInfMethod`` (``norm="inf"``, the default): the ℓ∞ variant matches the ℓ∞ threat
  model the other attacks share, and its ``tau`` schedule searches for the smallest ℓ∞ perturbation, which
  the ε-projection then bounds. ``norm="2"`` runs ``CarliniL2Method`` instead (batched, but not cheaper per
  image on the 2-core CPU), projected the same way.
* **Boundary**: ART's ``BoundaryAttack`` (Brendel et al. 2018; not HopSkipJump), untargeted. Its start is a
  uniform-noise image the model classifies differently from the clean image, drawn by us from a seeded pool
  of ``init_size`` noise images (ART's own draw is not seeded), or else another test image classified
  differently.
* **ZOO**: ART's ``ZooAttack`` without resizing or importance sampling (both only matter above 32×32), one
  image at a time (:class:`ZooSettings`).

Budgets are explicit settings (one frozen dataclass per attack, small defaults for a 2-core CPU; a
profile sets them from ``params.yaml``). Every result records the attack's budget (gradient steps for the
white-box attacks, the upper bound on queries per image for the black-box ones) and the model evaluations
per image actually used (forward passes the classifier ran, gradient passes included, divided by the
number of images).

At the small budgets a CPU affords, Boundary and ZOO rarely get inside the ε-ball (Boundary's raw output
fools the model from far away, ZOO's few coordinate steps often change nothing): read their robust accuracy
with the budget beside it. Against STQ's quantized ReLU, whose saturated units pass no gradient, the
white-box attacks can meet masked gradients, which the black-box ones do not depend on.

Robust accuracy counts an image as robust when the model classifies it correctly both clean and under
attack; its 95 % interval is the bootstrap over test images of :mod:`triqdef.eval.intervals` (one
"patch": every image eligible).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn

from triqdef import quant
from triqdef.errors import TriqdefError
from triqdef.eval.intervals import Interval, Outcomes, bootstrap_rate

EPS = 8 / 255
INPUT_SHAPE, NB_CLASSES, CLIP_VALUES = (3, 32, 32), 10, (0.0, 1.0)
INPUT_SIZE = 3 * 32 * 32
WHITE_BOX, BLACK_BOX = ("fgsm", "pgd", "cw"), ("square", "boundary", "zoo")
ATTACKS = WHITE_BOX + BLACK_BOX


def _require_art() -> None:
    if importlib.util.find_spec("art") is None:
        raise TriqdefError("the Adversarial Robustness Toolbox is not installed: expected `pip install -e .` "
                           "(package adversarial-robustness-toolbox, a core dependency)")


# --------------------------------------------------------------------------- settings

def _check_count(attack: str, name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "query budget" if attack in BLACK_BOX else "iteration budget"
        raise TriqdefError(f"ART {attack} {name}={value!r}: expected an integer >= {minimum} (part of the attack's {what})")


def _check_positive(attack: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 and math.isfinite(value)):
        raise TriqdefError(f"ART {attack} {name}={value!r}: expected a number > 0")


@dataclass(frozen=True)
class _Settings:
    """Common to every attack: the ℓ∞ radius of the threat model and ART's batch size."""

    name: ClassVar[str] = ""
    counts: ClassVar[tuple[tuple[str, int], ...]] = ()  # (field, minimum) of the budget fields, checked on creation
    eps: float = EPS
    batch_size: int = 128

    def __post_init__(self) -> None:
        _check_positive(self.name, "eps", self.eps)
        _check_count(self.name, "batch_size", self.batch_size, 1)
        for key, minimum in self.counts:
            _check_count(self.name, key, getattr(self, key), minimum)

    def budget(self) -> tuple[int, str]:
        """``(value, unit)``: the attack's budget per image."""
        raise NotImplementedError

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True)
class FGSMSettings(_Settings):
    """FGSM (Goodfellow et al. 2015): one signed-gradient step of size ``eps``."""

    name: ClassVar[str] = "fgsm"

    def budget(self) -> tuple[int, str]:
        return 1, "gradient steps"


@dataclass(frozen=True)
class PGDSettings(_Settings):
    """PGD-ℓ∞ (Madry et al. 2018): ``max_iter`` steps of ``eps_step`` from ``num_random_init`` random starts
    (0: from the image)."""

    name: ClassVar[str] = "pgd"
    counts: ClassVar[tuple] = (("max_iter", 1), ("num_random_init", 0))
    eps_step: float = 2 / 255
    max_iter: int = 10
    num_random_init: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self.name, "eps_step", self.eps_step)

    def budget(self) -> tuple[int, str]:
        return self.max_iter * max(1, self.num_random_init), "gradient steps"


@dataclass(frozen=True)
class CWSettings(_Settings):
    """Carlini & Wagner (2017): ``norm="inf"`` (``CarliniLInfMethod``, per image: a ``tau`` schedule shrunk by
    ``decrease_factor``, for each tau the constant ``c`` raised by ``const_factor`` from ``initial_const`` to
    ``largest_const``, ``max_iter`` Adam steps each) or ``"2"`` (``CarliniL2Method``: ``binary_search_steps``
    × ``max_iter`` steps, batched). The result is projected onto the ε-ball (module docstring)."""

    name: ClassVar[str] = "cw"
    counts: ClassVar[tuple] = (("max_iter", 1), ("binary_search_steps", 1))
    norm: str = "inf"
    max_iter: int = 5             # ART's default 10, initial_const 1e-5, const_factor 2, decrease_factor 0.9: up to
    learning_rate: float = 0.01   # 100x the Adam steps; these (c in {0.1, 1, 10}, at most 5 tau levels) cost
    confidence: float = 0.0       # 0.2-0.4 s per image on the 2-core CPU and still found perturbations below 8/255
    initial_const: float = 0.1
    largest_const: float = 20.0
    const_factor: float = 10.0
    decrease_factor: float = 0.3
    binary_search_steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.norm not in ("inf", "2"):
            raise TriqdefError(f"ART cw norm={self.norm!r}: expected 'inf' (CarliniLInfMethod) or '2' (CarliniL2Method)")
        for key in ("learning_rate", "initial_const", "largest_const"):
            _check_positive(self.name, key, getattr(self, key))
        if not 0 < self.decrease_factor < 1:
            raise TriqdefError(f"ART cw decrease_factor={self.decrease_factor!r}: expected a number in (0, 1)")
        if not self.const_factor > 1:
            raise TriqdefError(f"ART cw const_factor={self.const_factor!r}: expected a number > 1")

    def budget(self) -> tuple[int, str]:
        if self.norm == "2":
            return self.binary_search_steps * self.max_iter, "gradient steps"
        consts = max(1, math.ceil(math.log(self.largest_const / self.initial_const) / math.log(self.const_factor)))
        taus = max(1, math.ceil(math.log(1 / 256) / math.log(self.decrease_factor)))
        return taus * consts * self.max_iter, "gradient steps (upper bound)"


@dataclass(frozen=True)
class SquareSettings(_Settings):
    """Square Attack ℓ∞ (Andriushchenko et al. 2020): ``max_iter`` random square updates (one query each) per
    restart; ``p_init`` the initial share of pixels a square covers (0.05, the authors' ℓ∞ setting)."""

    name: ClassVar[str] = "square"
    counts: ClassVar[tuple] = (("max_iter", 1), ("nb_restarts", 1))
    max_iter: int = 100
    p_init: float = 0.05
    nb_restarts: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.p_init <= 1:
            raise TriqdefError(f"ART square p_init={self.p_init!r}: expected a number in (0, 1]")

    def budget(self) -> tuple[int, str]:
        # ART's loop evaluates the model 3 times per iteration (which images still resist, the current loss, the
        # candidate's loss) and 3 times per restart before it; the Square paper counts 1 query per iteration
        return self.nb_restarts * 3 * (self.max_iter + 1), "queries"


@dataclass(frozen=True)
class BoundarySettings(_Settings):
    """Boundary attack (Brendel et al. 2018), untargeted: ``max_iter`` iterations, each at most ``num_trial``
    rounds of ``sample_size`` orthogonal steps and as many steps towards the image; the start from
    ``init_size`` uniform-noise images (module docstring). The result is projected onto the ε-ball."""

    name: ClassVar[str] = "boundary"
    counts: ClassVar[tuple] = (("max_iter", 1), ("num_trial", 1), ("sample_size", 1), ("init_size", 1))
    batch_size: int = 64
    max_iter: int = 20
    num_trial: int = 5
    sample_size: int = 5
    init_size: int = 20
    delta: float = 0.01
    epsilon: float = 0.01
    step_adapt: float = 0.667

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("delta", "epsilon"):
            _check_positive(self.name, key, getattr(self, key))
        if not 0 < self.step_adapt < 1:
            raise TriqdefError(f"ART boundary step_adapt={self.step_adapt!r}: expected a number in (0, 1)")

    def budget(self) -> tuple[int, str]:
        # 3 single predictions (image, start, ART's final success count), our start pool and ART's own fallback
        # draw (init_size each at most), 2 x num_trial x sample_size per iteration at most
        return 3 + 2 * self.init_size + 2 * self.max_iter * self.num_trial * self.sample_size, "queries"


@dataclass(frozen=True)
class ZooSettings(_Settings):
    """ZOO (Chen et al. 2017): ``binary_search_steps`` × ``max_iter`` coordinate-Adam iterations, each
    estimating ``nb_parallel`` coordinates' gradients by symmetric differences (2 queries each);
    one image at a time (``batch_size`` 1: ART 1.20's ``ZooAttack`` updates only the first image of a larger
    batch, its coordinates being drawn modulo one image). The result is projected onto the ε-ball."""

    name: ClassVar[str] = "zoo"
    counts: ClassVar[tuple] = (("max_iter", 1), ("binary_search_steps", 1), ("nb_parallel", 1))
    batch_size: int = 1
    max_iter: int = 10
    binary_search_steps: int = 1
    nb_parallel: int = 32
    learning_rate: float = 0.01
    initial_const: float = 1e-3
    confidence: float = 0.0
    abort_early: bool = True
    variable_h: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("learning_rate", "initial_const", "variable_h"):
            _check_positive(self.name, key, getattr(self, key))
        if self.batch_size != 1:
            raise TriqdefError(f"ART zoo batch_size={self.batch_size!r}: expected 1 (ART's ZooAttack perturbs only "
                               "the first image of a larger batch)")
        if self.nb_parallel > INPUT_SIZE:
            raise TriqdefError(f"ART zoo nb_parallel={self.nb_parallel!r}: expected at most {INPUT_SIZE} (the "
                               "coordinates of one image)")

    def budget(self) -> tuple[int, str]:
        return 2 + self.binary_search_steps * (self.max_iter * (2 * self.nb_parallel + 1) + 1), "queries"


SETTINGS: dict[str, type[_Settings]] = {"fgsm": FGSMSettings, "pgd": PGDSettings, "cw": CWSettings,
                                         "square": SquareSettings, "boundary": BoundarySettings, "zoo": ZooSettings}


def check_attack(name) -> str:
    """``name`` if it is one of :data:`ATTACKS`, else a one-line error listing them."""
    if not isinstance(name, str) or name not in SETTINGS:
        raise TriqdefError(f"unknown ART attack {name!r}: expected one of {', '.join(ATTACKS)}")
    return name


def attack_settings(name: str, overrides: Mapping | _Settings | None = None) -> _Settings:
    """The settings of attack ``name``: its defaults, with ``overrides`` (a mapping, e.g. a params section)
    applied, or ``overrides`` itself when it is already that attack's settings."""
    cls = SETTINGS[check_attack(name)]
    if isinstance(overrides, _Settings):
        if not isinstance(overrides, cls):
            raise TriqdefError(f"settings {type(overrides).__name__} given for ART attack {name!r}: expected {cls.__name__}")
        return overrides
    overrides = dict(overrides or {})
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TriqdefError(f"unknown setting(s) {', '.join(unknown)} for ART attack {name!r}: expected some of "
                           f"{', '.join(known)}")
    return cls(**overrides)


# --------------------------------------------------------------------------- the classifier

class _AtBitWidth(nn.Module):
    """``model`` run at a fixed bit-width in eval mode, counting the images it is evaluated on."""

    def __init__(self, model: nn.Module, bits: int | None):
        super().__init__()
        self.model, self.bits, self.evaluations = model, bits, 0
        self.train(False)

    def train(self, mode: bool = True):
        """ART switches modes around its calls; the model under attack stays in eval mode (frozen BN,
        observers and deterministic quantizers)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.evaluations += x.shape[0]
        if x.dtype != torch.float32:  # ART's BoundaryAttack hands float64 arrays over under NumPy 2's promotion rules
            x = x.float()
        with quant.use_bitwidth(self.model, self.bits):
            return self.model(x)


def art_classifier(model: nn.Module, bits: int | None = None):
    """ART's ``PyTorchClassifier`` around ``model`` at ``bits`` (``None``: as it is) in eval mode.

    Inputs ``(3, 32, 32)`` in [0, 1] (``clip_values``), 10 classes, cross-entropy loss, on the model's device.
    ``model`` is put in eval mode (and stays so). The wrapped module (``classifier.model``) counts the images it
    is evaluated on in ``.evaluations``.
    """
    _require_art()
    from art.estimators.classification import PyTorchClassifier

    if bits is not None:
        quant.check_bits(bits)
        quant.model_bits(model)
    device = next(model.parameters()).device
    wrapped = _AtBitWidth(model, bits)
    return PyTorchClassifier(model=wrapped, loss=nn.CrossEntropyLoss(), input_shape=INPUT_SHAPE, nb_classes=NB_CLASSES,
                             clip_values=CLIP_VALUES, device_type="gpu" if device.type == "cuda" else "cpu")


def make_attack(classifier, name: str, settings: _Settings):
    """The ART attack object of ``name`` with ``settings`` (untargeted, quiet)."""
    _require_art()
    from art.attacks import evasion

    s = attack_settings(name, settings)
    if name == "fgsm":
        return evasion.FastGradientMethod(classifier, norm=np.inf, eps=s.eps, batch_size=s.batch_size)
    if name == "pgd":
        return evasion.ProjectedGradientDescent(classifier, norm=np.inf, eps=s.eps, eps_step=s.eps_step,
                                                max_iter=s.max_iter, num_random_init=s.num_random_init,
                                                batch_size=s.batch_size, verbose=False)
    if name == "cw" and s.norm == "inf":
        return evasion.CarliniLInfMethod(classifier, confidence=s.confidence, learning_rate=s.learning_rate,
                                         max_iter=s.max_iter, decrease_factor=s.decrease_factor,
                                         initial_const=s.initial_const, largest_const=s.largest_const,
                                         const_factor=s.const_factor, batch_size=s.batch_size, verbose=False)
    if name == "cw":
        return evasion.CarliniL2Method(classifier, confidence=s.confidence, learning_rate=s.learning_rate,
                                       binary_search_steps=s.binary_search_steps, max_iter=s.max_iter,
                                       initial_const=s.initial_const, batch_size=s.batch_size, verbose=False)
    if name == "square":
        return evasion.SquareAttack(classifier, norm=np.inf, max_iter=s.max_iter, eps=s.eps, p_init=s.p_init,
                                    nb_restarts=s.nb_restarts, batch_size=s.batch_size, verbose=False)
    if name == "boundary":
        return evasion.BoundaryAttack(classifier, batch_size=s.batch_size, targeted=False, delta=s.delta,
                                      epsilon=s.epsilon, step_adapt=s.step_adapt, max_iter=s.max_iter,
                                      num_trial=s.num_trial, sample_size=s.sample_size, init_size=s.init_size,
                                      verbose=False)
    return evasion.ZooAttack(classifier, confidence=s.confidence, targeted=False, learning_rate=s.learning_rate,
                             max_iter=s.max_iter, binary_search_steps=s.binary_search_steps,
                             initial_const=s.initial_const, abort_early=s.abort_early, use_resize=False,
                             use_importance=False, nb_parallel=s.nb_parallel, batch_size=s.batch_size,
                             variable_h=s.variable_h, verbose=False)


def boundary_starts(classifier, x: np.ndarray, predictions: np.ndarray, init_size: int,
                    rng: np.random.Generator) -> np.ndarray:
    """Starting points of the Boundary attack: for each image the first of ``init_size`` uniform-noise images
    (one seeded pool for all) that the model classifies differently; failing that, the first other input
    image it classifies differently; failing that, the image itself (ART then tries its own draw)."""
    pool = rng.uniform(*CLIP_VALUES, size=(init_size,) + x.shape[1:]).astype(np.float32)
    pool_pred = classifier.predict(pool, batch_size=256).argmax(1)
    starts = x.copy()
    for i, p in enumerate(predictions):
        other = np.flatnonzero(pool_pred != p)
        if other.size:
            starts[i] = pool[other[0]]
            continue
        other = np.flatnonzero(predictions != p)
        if other.size:
            starts[i] = x[other[0]]
    return starts


# --------------------------------------------------------------------------- evaluation

@dataclass
class AttackResult:
    """Outcome of one attack on N images: per-image booleans (CPU tensors ``(N,)``), budgets and intervals.

    ``correct``: correct clean *and* on the ε-projected adversarial image (robust); ``clean_correct``;
    ``unbounded_correct``: the same on ART's output before the projection; ``linf``: ``||x_adv − x||∞`` of
    ART's output. ``clean_pred`` / ``adv_pred``: the predicted labels behind ``clean_correct`` and ``correct`` (an
    outcome store's clean and attacked predictions). ``budget`` / ``budget_unit``: the setting's budget per image; ``evaluations_per_image``: model
    evaluations used (forwards, gradient passes included) per image.
    """

    attack: str
    settings: dict
    bits: int | None
    correct: torch.Tensor
    clean_correct: torch.Tensor
    unbounded_correct: torch.Tensor
    linf: torch.Tensor
    budget: int
    budget_unit: str
    evaluations_per_image: float
    seconds: float
    seed: int
    robust: Interval = field(repr=False)
    clean: Interval = field(repr=False)
    clean_pred: torch.Tensor | None = field(default=None, repr=False)   # (N,) predicted labels, clean ...
    adv_pred: torch.Tensor | None = field(default=None, repr=False)     # ... and on the ε-projected adversarial image

    @property
    def n_images(self) -> int:
        return int(self.correct.numel())

    def as_record(self) -> dict:
        """A flat JSON-able record (rates in [0, 1], with their intervals and denominators)."""
        return {"attack": self.attack, "bits": self.bits, "n_images": self.n_images,
                **self.robust.as_dict("robust_"), **self.clean.as_dict("clean_"),
                "unbounded_robust": float(self.unbounded_correct.float().mean()),
                "median_linf": float(self.linf.median()) if self.n_images else float("nan"),
                "budget": self.budget, "budget_unit": self.budget_unit,
                "evaluations_per_image": self.evaluations_per_image, "seconds": self.seconds, "seed": self.seed,
                "settings": dict(self.settings)}


@contextlib.contextmanager
def _seeded(seed: int):
    """ART draws from NumPy's and PyTorch's global generators: seed both inside, restore them after."""
    state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(state)


def _as_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    x = torch.as_tensor(images)
    if x.dtype == torch.uint8:
        x = x.float().div(255)
    if x.dim() != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
        raise TriqdefError(f"ART suite images of shape {tuple(x.shape)}: expected (N, 3, 32, 32) in [0, 1]")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise TriqdefError("ART suite images outside [0, 1]: expected pixel values in [0, 1] (or uint8)")
    return x.detach().cpu().float().contiguous().numpy()


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, attack_name: str,
                    settings: Mapping | _Settings | None = None, bits: int | None = None, seed: int = 0,
                    n_boot: int = 2000) -> AttackResult:
    """Run one ART attack on ``images`` (``(N, 3, 32, 32)`` in [0, 1], or uint8) with true ``labels`` against
    ``model`` at ``bits`` (``None``: as it is), untargeted; see the module docstring for the threat model.

    ``settings``: the attack's settings or a mapping of overrides of its defaults. ``seed`` seeds ART's random
    draws (NumPy's and PyTorch's global generators, restored after) and the bootstrap. The model's training
    mode is restored after.
    """
    check_attack(attack_name)
    s = attack_settings(attack_name, settings)
    x = _as_images(images)
    y = torch.as_tensor(labels).long().cpu().numpy()
    if y.shape != (x.shape[0],):
        raise TriqdefError(f"ART suite labels of shape {y.shape}: expected ({x.shape[0]},), one per image")
    if x.shape[0] == 0:
        raise TriqdefError("ART suite got no images: expected at least one")
    t0 = time.perf_counter()
    with quant.eval_mode(model):
        classifier = art_classifier(model, bits)
        counter = classifier.model
        clean_pred = classifier.predict(x, batch_size=256).argmax(1)
        counter.evaluations = 0
        with _seeded(seed):
            attack = make_attack(classifier, attack_name, s)
            kwargs = {}
            if attack_name == "boundary":
                kwargs["x_adv_init"] = boundary_starts(classifier, x, clean_pred, s.init_size,
                                                       np.random.default_rng([seed, 14]))
            x_adv = np.asarray(attack.generate(x=x, y=y, **kwargs), dtype=np.float32)
        evaluations = counter.evaluations
        projected = np.clip(x + np.clip(x_adv - x, -s.eps, s.eps), *CLIP_VALUES).astype(np.float32)
        adv_pred = classifier.predict(projected, batch_size=256).argmax(1)
        unbounded_pred = classifier.predict(x_adv, batch_size=256).argmax(1)
    seconds = time.perf_counter() - t0
    clean_ok = torch.from_numpy(clean_pred == y)
    robust_ok = clean_ok & torch.from_numpy(adv_pred == y)
    unbounded_ok = clean_ok & torch.from_numpy(unbounded_pred == y)
    linf = torch.from_numpy(np.abs(x_adv - x).reshape(x.shape[0], -1).max(1))
    budget, unit = s.budget()
    return AttackResult(attack_name, s.as_dict(), bits, robust_ok, clean_ok, unbounded_ok, linf, budget, unit,
                        evaluations / x.shape[0], round(seconds, 3), seed,
                        robust=bootstrap_rate(Outcomes.accuracy(robust_ok.numpy()), n_boot, seed),
                        clean=bootstrap_rate(Outcomes.accuracy(clean_ok.numpy()), n_boot, seed),
                        clean_pred=torch.from_numpy(clean_pred.astype(np.int64)),
                        adv_pred=torch.from_numpy(adv_pred.astype(np.int64)))
