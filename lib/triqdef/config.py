"""Parameters: ``params.yaml`` read once into typed, validated, frozen objects.

``params.yaml`` holds a ``base`` section (profile, seed, device) and one
section per stage; every stage section has one sub-mapping per profile
(``smoke``, ``cpu``, ``paper``) and optionally ``common`` keys shared by all
profiles. :func:`load_config` resolves every section for the active profile
(``base.profile`` unless the CLI's ``--profile`` or ``TRIQDEF_PROFILE``
overrides it) into the dataclasses below, and checks every value there: a bad
or missing value ends with one ``triqdef: error:`` line naming its key, e.g.
``parameter train_fp.cpu.lr = -1: expected a number > 0``.

Why dataclasses (and not pydantic or OmegaConf): they are the standard
library, frozen instances are hashable and printable, and the checks we need
(types, ranges, choices) fit in :func:`_convert` below; the error text is ours.

Values live in one place, ``params.yaml`` (its ``common`` entries are the
defaults every profile shares): the dataclasses below give types and checks,
not values. A key missing from the resolved section is an error naming it;
only ``epochs`` / ``steps`` (one of the two) and ``motivation.test_images``
(None: every test image) may be left out.

``dvc exp run -S train_fp.cpu.epochs=3`` changes one profile's value only.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from triqdef.errors import TriqdefError
from triqdef.paths import project_root

PROFILES = ("smoke", "cpu", "gpu", "paper")
CIFAR_IMAGE_SIZE = 32  # every dataset of the project is CIFAR-10


def _check(**rules: Any) -> dict:
    """Field metadata: ``gt``/``ge``/``le``/``lt`` bounds, checked by :func:`_convert`."""
    return {"rules": rules}


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True, kw_only=True)
class Base:
    profile: Literal["smoke", "cpu", "gpu", "paper"]
    seed: int = field(metadata=_check(ge=0))
    device: Literal["auto", "cpu", "cuda"]
    # issue 31 (docs/design.md#stacked-bit-widths): joint QAT's bit-widths in one stacked pass. auto: on CUDA only
    # (on the 2-core CPU the stacked step is 1.78x slower); the same maths either way, to float rounding
    stacked: Literal["auto", "on", "off"] = "auto"
    # issue 31 (training/graphed.py): the FP and stacked joint-QAT steps captured in one CUDA graph; CUDA only
    compile: bool = False


@dataclass(frozen=True, kw_only=True)
class DataParams:
    """Subsets drawn from the prepared CIFAR-10 copy (:func:`triqdef.data.cifar.load_splits`)."""

    source: Literal["mirror", "official", "sample"]   # triqdef.data.cifar.fetch: where the pixels come from
    train_size: int = field(metadata=_check(gt=0))
    holdout_size: int = field(metadata=_check(ge=0))
    test_size: int = field(metadata=_check(gt=0))
    class_balanced: bool


def _check_model_name(name: str, key: str) -> None:
    from triqdef.models import MODEL_NAMES  # the one list of buildable models

    if name not in MODEL_NAMES:
        raise TriqdefError(f"parameter {key} = {name!r}: expected one of {', '.join(MODEL_NAMES)}")


@dataclass(frozen=True, kw_only=True)
class ModelParams:
    name: str

    def __post_init__(self) -> None:
        _check_model_name(self.name, "name")


@dataclass(frozen=True, kw_only=True)
class QuantParams:
    """docs/design.md#quantization: one backbone, per-bit observers and BN (:func:`triqdef.quant.quantize_model`)."""

    bits: tuple[int, ...]
    first_last_bits: int | None          # first conv / last linear at max(b, 8); None: every layer at b
    averaging_constant: float = field(metadata=_check(gt=0, le=1))
    # one estimator for every bit-width, or one per quantized bit-width ({8: max, 2: mse})
    activation_range: Literal["mse", "max"] | dict[str, Literal["mse", "max"]]

    def __post_init__(self) -> None:
        from triqdef import quant  # the bit-width checks live with the quantizers

        quant.check_bit_set(self.bits)
        if self.first_last_bits is not None:
            quant.check_bits(self.first_last_bits)
        if isinstance(self.activation_range, dict):  # every quantized bit-width covered (a subset may be used:
            quantized = {str(b) for b in self.bits if b != quant.FP_BITS}  # cross_arch's bits)
            for key in self.activation_range:
                if not key.isdigit() or int(key) == quant.FP_BITS:
                    raise TriqdefError(f"parameter activation_range = {self.activation_range}: key {key!r} is not a "
                                       "quantized bit-width")
                quant.check_bits(int(key))
            if not quantized <= set(self.activation_range):
                raise TriqdefError(f"parameter activation_range = {self.activation_range}: expected one estimator for "
                                   f"each quantized bit-width {sorted(quantized, key=int, reverse=True)}")


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    """One training run (paper 4.1: SGD, momentum 0.9, weight decay 1e-4, batch 128).

    ``steps`` overrides ``epochs`` when set; ``milestones`` are fractions of
    the run (``schedule: step``), ``pct_start`` the warm-up share of ``onecycle``.
    """

    lr: float = field(metadata=_check(gt=0))
    checkpoint_every: int = field(metadata=_check(gt=0))
    epochs: float | None = field(default=None, metadata=_check(gt=0))
    steps: int | None = field(default=None, metadata=_check(gt=0))
    batch_size: int = field(metadata=_check(gt=0))
    momentum: float = field(metadata=_check(ge=0, le=1))
    weight_decay: float = field(metadata=_check(ge=0))
    nesterov: bool
    schedule: Literal["step", "onecycle"]
    milestones: tuple[float, ...]
    pct_start: float = field(metadata=_check(ge=0, le=1))
    label_smoothing: float = field(metadata=_check(ge=0, le=1))
    augment: bool

    def __post_init__(self) -> None:
        if self.steps is None and self.epochs is None:
            raise TriqdefError("parameter epochs or steps is missing: expected a positive number of epochs or steps")

    def total_steps(self, n_train: int) -> int:
        """Optimiser steps of the run on ``n_train`` images (``steps``, or ``epochs`` x batches per epoch)."""
        if n_train < self.batch_size:
            raise TriqdefError(f"training set of {n_train} images is smaller than one batch ({self.batch_size})")
        if self.steps is not None:
            return self.steps
        return max(1, int(round(self.epochs * (n_train // self.batch_size))))


@dataclass(frozen=True, kw_only=True)
class QATParams(TrainParams):
    every_layer_variant: bool   # also train the every-layer-at-b model (Table 4's second standard-QAT row)
    independent_model: bool     # also train one with another seed: the unseen-bit-width patches' source
    independent_share: float = field(metadata=_check(gt=0, le=1))   # its steps (or epochs): this share of the run's


@dataclass(frozen=True, kw_only=True)
class DefenseParams(TrainParams):
    """Every defense's fine-tune (docs/design.md#one-shared-checkpoint-for-every-defense), and its convergence
    curve (notebook 02): each defense evaluated every ``monitor_every`` steps (0: never) on the first
    ``monitor_images`` held-out images (never the test images) at ``monitor_bits``: clean accuracy and the seen
    patch sets' targeted ASR."""

    init: Literal["fp", "qat"]
    monitor_every: int = field(metadata=_check(ge=0))
    monitor_images: int = field(metadata=_check(gt=0))
    monitor_bits: tuple[int, ...]

    def __post_init__(self) -> None:
        from triqdef import quant

        super().__post_init__()
        for b in self.monitor_bits:
            quant.check_bits(b)


@dataclass(frozen=True, kw_only=True)
class PatchParams:
    """docs/design.md#patch-sets: LAVAN and GAP, training pool / seen / unseen (bits, size, location), made by
    the one patch optimiser (docs/design.md#one-patch-optimiser)."""

    steps: int = field(metadata=_check(gt=0))
    pool_per_attack: int = field(metadata=_check(gt=0))
    seen_per_attack: int = field(metadata=_check(gt=0))
    unseen_per_kind: int = field(metadata=_check(gt=0))
    attack_images: int = field(metadata=_check(gt=0))
    attacks: tuple[Literal["lavan", "gap"], ...]
    size: int = field(metadata=_check(gt=0))
    unseen_bits: tuple[int, ...]
    unseen_sizes: tuple[int, ...]
    extra_sizes: tuple[int, ...]
    border: int = field(metadata=_check(ge=0))
    method: Literal["sign", "adam"]     # signed-gradient steps | Adam, the step (lr) cosine-decayed to a tenth
    step_size: float = field(metadata=_check(gt=0))
    images_per_patch: int = field(metadata=_check(gt=0))   # images each patch sees per step
    restarts: int = field(metadata=_check(gt=0))
    max_batch: int = field(metadata=_check(gt=0))          # images per forward (K patches x images_per_patch, chunked)
    loss: dict[str, str]                # attack -> logprob | ce | margin
    unseen_bits_source: Literal["independent_qat", "shared_qat"]   # docs/design.md#kinds

    def __post_init__(self) -> None:
        from triqdef.attacks.objectives import LOSSES

        for attack in self.attacks:
            if attack not in self.loss:
                raise TriqdefError(f"parameter loss has no entry for attack {attack!r}: expected one of {', '.join(LOSSES)}")
        for attack, loss in self.loss.items():
            if attack not in ("lavan", "gap") or loss not in LOSSES:
                raise TriqdefError(f"parameter loss.{attack} = {loss!r}: expected an attack (lavan, gap) mapped to "
                                   f"one of {', '.join(LOSSES)}")
        for key, sizes in (("size", (self.size,)), ("unseen_sizes", self.unseen_sizes), ("extra_sizes", self.extra_sizes)):
            for s in sizes:
                if s < 1 or s > CIFAR_IMAGE_SIZE - 2 * self.border:
                    raise TriqdefError(f"parameter {key} = {s}: a patch that does not fit a {CIFAR_IMAGE_SIZE}px image "
                                       f"inside its {self.border}px border; expected 1..{CIFAR_IMAGE_SIZE - 2 * self.border}")
                if "gap" in self.attacks and s > CIFAR_IMAGE_SIZE // 2:
                    raise TriqdefError(f"parameter {key} = {s}: GAP's transformation canvas (twice the patch) does not "
                                       f"fit a {CIFAR_IMAGE_SIZE}px image; expected <= {CIFAR_IMAGE_SIZE // 2}")


@dataclass(frozen=True, kw_only=True)
class AttackStrengthParams:
    """Issue 12, docs/design.md#attack-regime: white-box targeted ASR against the patch size on the FP model
    (LAVAN, GAP; the ``patches`` section's optimiser), its transfer to standard QAT, a random-noise baseline,
    and the matched size: the smallest of ``sizes`` whose mean white-box LAVAN ASR reaches ``threshold``."""

    sizes: tuple[int, ...]
    attacks: tuple[Literal["lavan", "gap"], ...]
    transfer_bits: tuple[int, ...]
    threshold: float = field(metadata=_check(gt=0, le=1))
    targets: int = field(metadata=_check(gt=0))          # patches per (attack, size): balanced over the classes
    test_images: int = field(metadata=_check(gt=0))      # first images of the test split the rates are read on
    n_boot: int = field(metadata=_check(ge=100))         # bootstrap replicates of every interval

    def __post_init__(self) -> None:
        from triqdef import quant

        if not self.sizes or list(self.sizes) != sorted(set(self.sizes)):
            raise TriqdefError(f"parameter sizes = {list(self.sizes)}: expected increasing patch sizes")
        limit = CIFAR_IMAGE_SIZE // 2 if "gap" in self.attacks else CIFAR_IMAGE_SIZE
        for s in self.sizes:
            if s < 1 or s > limit:
                raise TriqdefError(f"parameter sizes = {s}: a patch that does not fit a {CIFAR_IMAGE_SIZE}px image"
                                   f"{' with GAP (twice the patch)' if limit < CIFAR_IMAGE_SIZE else ''}; "
                                   f"expected 1..{limit}")
        for b in self.transfer_bits:
            quant.check_bits(b)


@dataclass(frozen=True, kw_only=True)
class CrossArchParams:
    """Table 8: the second architecture, its own training overrides and patches (stage ``cross_arch``)."""

    model: str
    bits: tuple[int, ...]
    patches_per_attack: int = field(metadata=_check(gt=0))
    min_accuracy: float = field(metadata=_check(ge=0, le=1))
    train_fp: dict[str, Any]    # overrides of train_fp for this model
    train_qat: dict[str, Any]   # overrides of train_qat

    def __post_init__(self) -> None:
        _check_model_name(self.model, "model")


@dataclass(frozen=True, kw_only=True)
class BactStage:
    bits: tuple[int, ...]
    share: float = field(metadata=_check(gt=0, le=1))


@dataclass(frozen=True, kw_only=True)
class TriQDefParams:
    """Paper 3.3 and 4.1 (eq. 2-4), docs/design.md#losses; ``bact``: the curriculum stages (docs/design.md#bact)."""

    taps: dict[str, tuple[str, ...]]   # FDP tap layers per architecture: the one list every stage and notebook reads
    bact: tuple[BactStage, ...]
    lambda_adv: float = field(metadata=_check(ge=0))
    lambda_fdp: float = field(metadata=_check(ge=0))
    lambda_gpdp: float = field(metadata=_check(ge=0))
    rho: float = field(metadata=_check(ge=0, le=1))
    alpha: float = field(metadata=_check(ge=0))
    beta: float = field(metadata=_check(ge=0))
    k: float = field(metadata=_check(gt=0))
    q: float = field(metadata=_check(ge=0, le=1))
    pair_reduction: Literal["mean", "sum"]
    gpdp_sub_batch: int = field(metadata=_check(gt=0))
    gpdp_every: int = field(metadata=_check(gt=0))
    gpdp_scaled: bool           # lambda_gpdp x gpdp_every on the steps GPDP runs: its weight per step stays the paper's
    gpdp_joint: bool
    downsample: int = field(metadata=_check(gt=0))
    patch_source: Literal["pool", "on_the_fly"]
    otf_steps: int = field(metadata=_check(gt=0))
    otf_step_size: float = field(metadata=_check(gt=0))
    bact_calibrate: bool        # calibrate each bit-width BACT enables on the held-out split (paper 3.4)

    def taps_of(self, model_name: str) -> tuple[str, ...]:
        """The FDP tap layers of ``model_name`` (post-ReLU conv1 of each stage's first block)."""
        if model_name not in self.taps:
            raise TriqdefError(f"parameter triqdef.taps has no entry for model {model_name!r}: "
                               "expected module names of its FDP tap layers")
        return self.taps[model_name]


@dataclass(frozen=True, kw_only=True)
class PBATParams:
    """docs/design.md#pbat: Rao et al. 2020's location-optimised patch training on the multi-bit backbone; a share
    ``rho`` of the batch with per-image untargeted patches, content and location optimised (``attack_steps``
    signed steps of ``step_size``, moves of ``stride`` px; 0: no location optimisation), started from the
    training pool (``init: pool``) or from noise."""

    rho: float = field(metadata=_check(ge=0, le=1))
    attack_steps: int = field(metadata=_check(gt=0))
    step_size: float = field(metadata=_check(gt=0))
    stride: int = field(metadata=_check(ge=0))
    init: Literal["pool", "noise"]


@dataclass(frozen=True, kw_only=True)
class DWQParams:
    """Fu et al. 2021: one random bit-width per step, PGD-linf at that bit-width."""

    eps: float = field(metadata=_check(gt=0))
    alpha: float = field(metadata=_check(gt=0))
    attack_steps: int = field(metadata=_check(gt=0))


@dataclass(frozen=True, kw_only=True)
class QADTRParams:
    """QADT-R (the developers' notes, "Related systems"): DBWT + A-QAPA + GIR (:mod:`triqdef.defenses.qadt_r`)."""

    rho: float = field(metadata=_check(ge=0, le=1))          # share of each batch that is patched
    pool_share: float = field(metadata=_check(ge=0, le=1))   # of the patched share: pool patches; the rest on the fly
    attack_steps: int = field(metadata=_check(ge=0))         # A-QAPA: signed steps of the on-the-fly patch
    step_size: float = field(metadata=_check(gt=0))
    lambda_gir: float = field(metadata=_check(ge=0))
    sigma: float = field(metadata=_check(ge=0))              # GIR's gradient noise, in units of the gradient's rms
    gir_sub_batch: int = field(metadata=_check(gt=0))


@dataclass(frozen=True, kw_only=True)
class PatchAttackParams:
    """Table 5's PatchAttack columns (docs/design.md#patchattack): black-box patches found by querying each defended
    model at each of ``bits`` (some of ``robustness.bits``; stage ``training`` checks), at the matched size; the rest
    of :class:`triqdef.attacks.patch_attack.PatchAttackSettings` keeps its defaults."""

    bits: tuple[int, ...]                                    # the bit-widths queried (some of robustness.bits)
    targets: int = field(metadata=_check(gt=0))              # patches (targets, balanced) per (model, bit-width)
    attack_images: int = field(metadata=_check(gt=0))        # the attacker's training images
    textures_per_class: int = field(metadata=_check(gt=0))
    texture_steps: int = field(metadata=_check(gt=0))
    iterations: int = field(metadata=_check(gt=0))
    actions_per_iteration: int = field(metadata=_check(ge=2))
    reward_images: int = field(metadata=_check(gt=0))
    selection_images: int = field(metadata=_check(ge=0))
    max_queries: int = field(metadata=_check(ge=0))


@dataclass(frozen=True, kw_only=True)
class AblationParams:
    """Tables 7 and 13: TriQDef variants (overrides of ``triqdef``) and the ones this profile trains."""

    variants: dict[str, dict[str, Any]]
    run: tuple[str, ...]

    def __post_init__(self) -> None:
        for v in self.run:
            if v not in self.variants:
                raise TriqdefError(f"parameter ablations.run names {v!r}: expected one of {', '.join(self.variants)}")


@dataclass(frozen=True, kw_only=True)
class RobustnessParams:
    """Notebooks 02 / 03: evaluating the defended models (Tables 2, 5, 7, 13, 17, 18)."""

    bits: tuple[int, ...]
    test_images: int = field(metadata=_check(gt=0))
    whitebox_patches: int = field(metadata=_check(gt=0))
    whitebox_steps: int = field(metadata=_check(gt=0))
    bench_steps: int = field(metadata=_check(gt=0))
    latency_batch: int = field(metadata=_check(gt=0))
    latency_repeats: int = field(metadata=_check(gt=0))


@dataclass(frozen=True, kw_only=True)
class RegimeParams:
    """Which attack regimes the notebook tables evaluate (docs/design.md#attack-regime; ``triqdef.stages.regimes``):
    ``both`` (the paper's patch size and the matched size, whenever the patch stage made both) or ``deciding`` (only
    the regime REPORT.md decides in, the matched size when it was made; Table 1's transfer study stays in both)."""

    evaluate: Literal["both", "deciding"]


@dataclass(frozen=True, kw_only=True)
class CrossBitParams:
    """Stage ``cross_bit`` (issue 30, item 1; docs/design.md#cross-bit-transfer): each defended model's cross-bit
    transfer matrix, LAVAN patches made white-box at each source bit-width, evaluated at every bit-width."""

    source_bits: tuple[int, ...]
    patches: int = field(metadata=_check(gt=0))        # per source bit-width (one per class at 10)
    restarts: int = field(metadata=_check(gt=0))       # starts per patch; the one most successful on its images is kept
    steps: int = field(metadata=_check(gt=0))          # optimiser steps per start
    test_images: int = field(metadata=_check(gt=0))


#: The defenses of stage ``defense`` (``triqdef.stages.defense.METHODS``), named here for the seed check.
DEFENSE_METHODS = ("qat", "pbat", "dwq", "triqdef", "qadt_r")


def check_replica_lists(section: str, methods: tuple[str, ...], name: str, values: tuple) -> None:
    """The lists of a replica section (``seeds``, ``training_length``): both non-empty, no value twice, every
    method one of :data:`DEFENSE_METHODS`; otherwise one :class:`TriqdefError` line naming the parameter."""
    if not methods or not values:
        raise TriqdefError(f"parameter {section}: expected at least one method and one of {name}")
    for key, items in (("methods", methods), (name, values)):
        repeated = sorted({v for v in items if items.count(v) > 1})
        if repeated:
            raise TriqdefError(f"parameter {section}.{key} = {list(items)}: {repeated} appear more than once; "
                               "expected distinct values (one run each)")
    unknown = [m for m in methods if m not in DEFENSE_METHODS]
    if unknown:
        raise TriqdefError(f"parameter {section}.methods has {unknown[0]!r}: expected some of {', '.join(DEFENSE_METHODS)}")


@dataclass(frozen=True, kw_only=True)
class SeedParams:
    """Training-seed replicas (issue 30, item 5; docs/design.md#training-seeds): each of ``methods`` trained again
    with each of ``training_seeds`` (the core run's seed is ``base.seed``), from the same start checkpoint, data
    and patch sets; only the training's own draws (batches, augmentation, patches and locations) change. The DVC
    stage ``defense_seed`` runs them as a matrix over ``seeds.common``."""

    methods: tuple[str, ...]
    training_seeds: tuple[int, ...]
    # TriQDef ablation variants (``ablations.variants``) trained with every seed, base.seed included (stage
    # ``variant_seed``): claim 18 at the seed level; ``variant_seeds`` lists those seeds for the DVC matrix
    variants: tuple[str, ...] = ()
    variant_seeds: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_replica_lists("seeds", self.methods, "training_seeds", self.training_seeds)
        bad = [s for s in (*self.training_seeds, *self.variant_seeds)
               if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad:
            raise TriqdefError(f"parameter seeds.training_seeds / variant_seeds has {bad[0]!r}: expected integers >= 0")
        for key, items in (("variants", self.variants), ("variant_seeds", self.variant_seeds)):
            repeated = sorted({v for v in items if items.count(v) > 1})
            if repeated:
                raise TriqdefError(f"parameter seeds.{key} = {list(items)}: {repeated} appear more than once; "
                                   "expected distinct values (one run each)")

    def check_variant_seeds(self, base_seed: int) -> None:
        """``variant_seeds``: seeds TriQDef is trained with too, base.seed and the training seeds (all of them in
        params.yaml; the DVC matrix cannot join the two lists), so that every variant run has TriQDef's beside it."""
        allowed = sorted({base_seed, *self.training_seeds})
        if self.variants and (not self.variant_seeds or any(s not in allowed for s in self.variant_seeds)):
            raise TriqdefError(f"parameter seeds.variant_seeds = {list(self.variant_seeds)}: expected one or more of "
                               f"base.seed {base_seed} and seeds.training_seeds {list(self.training_seeds)}")


@dataclass(frozen=True, kw_only=True)
class LengthParams:
    """Training-length runs (issue 30, item 7; docs/design.md#training-length): each of ``methods`` trained with
    ``factors`` times the core run's steps (``defenses``), one seed. The DVC stage ``defense_length`` runs them as
    a matrix over ``training_length.common``."""

    methods: tuple[str, ...]
    factors: tuple[float, ...]

    def __post_init__(self) -> None:
        check_replica_lists("training_length", self.methods, "factors", self.factors)
        bad = [f for f in self.factors if f <= 0 or f == 1]
        if bad:
            raise TriqdefError(f"parameter training_length.factors has {bad[0]!r}: expected numbers > 0 other than 1 "
                               "(1 is the core run, stage defense)")


#: The six ART attacks of notebook 05, as :mod:`triqdef.eval.art_suite` names them (a test keeps the two equal;
#: named here so that the config does not import the attack suite, which every stage would then depend on).
ART_ATTACKS = ("fgsm", "pgd", "cw", "square", "boundary", "zoo")


@dataclass(frozen=True, kw_only=True)
class STQParams:
    """Notebook 05 (docs/design.md#stq): the tiny grayscale network, stochastic ternary QAT, defensive distillation,
    explicit Jacobian regularisation, and the ART attack suite against them and against our ResNet-20."""

    widths: tuple[int, ...]
    hidden: tuple[int, ...]
    activation_bits: int = field(metadata=_check(gt=0))
    edge_bits: int = field(metadata=_check(gt=0))
    rounding: Literal["unbiased", "sigmoid", "deterministic"]
    rounding_temperature: float = field(metadata=_check(gt=0))
    distill_temperature: float = field(metadata=_check(gt=0))     # STQ-T50's T (STQ-T1: T = 1)
    temperature_scaling: bool              # teacher's and student's losses x T (the T = 1 gradient scale)
    lambda_jr: float = field(metadata=_check(ge=0))
    jr_projections: int = field(metadata=_check(gt=0))
    train: dict[str, Any]                  # overrides of train_fp: the recipe of every STQ-notebook model
    attacks: dict[str, dict[str, Any]]     # overrides of triqdef.eval.art_suite's settings, per attack
    attack_images: dict[str, int]          # test images per attack (the first ones)
    resnet_bits: tuple[int, ...]           # our standard-QAT ResNet-20 attacked at these bit-widths
    jacobian_images: int = field(metadata=_check(gt=0))

    def __post_init__(self) -> None:
        for key in ("attacks", "attack_images"):
            for name in getattr(self, key):
                if name not in ART_ATTACKS:
                    raise TriqdefError(f"parameter stq.{key} names attack {name!r}: expected one of {', '.join(ART_ATTACKS)}")
        for name in ART_ATTACKS:
            n = self.attack_images.get(name)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise TriqdefError(f"parameter stq.attack_images.{name} = {n!r}: expected a positive integer")


@dataclass(frozen=True, kw_only=True)
class AppendixParams:
    """Notebook 04 (paper appendix C, section 4.4): Table 16 (DPR), Table 6 (preprocessing), Table 14, QADT-R."""

    test_images: int = field(metadata=_check(gt=0))         # Tables 6 and 16: the first test images
    dpr_per_set: int = field(metadata=_check(gt=0))         # DPR patches per set (seen, unseen 2-bit source)
    dpr_steps: int = field(metadata=_check(gt=0))
    dpr_method: Literal["sign", "adam"]                     # the texture's steps (the shape always takes Adam's)
    dpr_step_size: float = field(metadata=_check(gt=0))
    dpr_shape_step_size: float = field(metadata=_check(gt=0))
    dpr_area_budget: float = field(metadata=_check(gt=0, lt=1))
    dpr_sectors: int = field(metadata=_check(ge=3))
    dpr_sharpness: float = field(metadata=_check(gt=0))
    jedi_window: int = field(metadata=_check(gt=0))         # odd side of the local-entropy window (pixels)
    jedi_bins: int = field(metadata=_check(gt=1))           # grey levels of the entropy histogram
    jedi_threshold_std: float                               # mask: entropy above mean + this many std of the image
    jedi_dilate: int = field(metadata=_check(ge=0))         # mask dilation (pixels)
    jedi_inpaint_steps: int = field(metadata=_check(gt=0))  # diffusion inpainting iterations


@dataclass(frozen=True, kw_only=True)
class MotivationParams:
    """Notebook 01: ``n_align`` test images for Tables 3, 12 and Figure 2; ``test_images`` for the patch tables (None: all)."""

    n_align: int = field(metadata=_check(gt=0))
    per_image_images: int = field(metadata=_check(gt=0))   # Table 1's per-image LAVAN protocol: one patch per image
    test_images: int | None = field(default=None, metadata=_check(gt=0))


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every section of ``params.yaml``, resolved for one profile and validated."""

    base: Base
    data: DataParams
    model: ModelParams
    quant: QuantParams
    train_fp: TrainParams
    train_qat: QATParams
    attack_strength: AttackStrengthParams
    patches: PatchParams
    cross_arch: CrossArchParams
    defenses: DefenseParams
    triqdef: TriQDefParams
    pbat: PBATParams
    dwq: DWQParams
    qadt_r: QADTRParams
    patch_attack: PatchAttackParams
    ablations: AblationParams
    robustness: RobustnessParams
    regimes: RegimeParams
    cross_bit: CrossBitParams
    seeds: SeedParams
    training_length: LengthParams
    motivation: MotivationParams
    appendix: AppendixParams
    stq: STQParams

    def __post_init__(self) -> None:
        """The checks across sections: the variants of ``seeds`` are ablation variants, trained with base.seed and
        every training seed; PatchAttack queries some of the bit-widths Table 5 evaluates."""
        unknown = [v for v in self.seeds.variants if v not in self.ablations.variants]
        if unknown:
            raise TriqdefError(f"parameter seeds.variants names {unknown[0]!r}: expected one of "
                               f"{', '.join(self.ablations.variants)} (ablations.variants)")
        self.seeds.check_variant_seeds(self.base.seed)
        pa, have = list(self.patch_attack.bits), list(self.robustness.bits)
        if not pa or len(set(pa)) != len(pa) or any(b not in have for b in pa):
            raise TriqdefError(f"parameter patch_attack.bits = {pa}: expected distinct bit-widths, one or more of "
                               f"robustness.bits {have}")

    def only(self, sections: typing.Iterable[str]) -> "StageConfig":
        """A view that refuses every section but ``sections`` (and ``base``): what a stage declares it reads."""
        return StageConfig(self, frozenset(sections) | {"base"})

    def replace(self, **sections: Any) -> "Config":
        return dataclasses.replace(self, **sections)


class StageConfig:
    """:class:`Config` seen by one stage: reading a section it did not declare (``PARAMS``) is an error.

    So a stage module's ``PARAMS`` tuple, which ``dvc.yaml``'s ``params:`` lists
    are checked against (``tools/dvc_deps.py``), cannot silently fall short.
    """

    def __init__(self, config: Config, sections: frozenset[str]):
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_sections", sections)

    def __getattr__(self, name: str) -> Any:
        config, sections = object.__getattribute__(self, "_config"), object.__getattribute__(self, "_sections")
        if name in SECTIONS and name not in sections:
            raise TriqdefError(f"params section {name!r} is read by a stage that does not declare it: "
                               f"add it to the stage's PARAMS ({', '.join(sorted(sections))})")
        return getattr(config, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a stage's config is read-only")

    def replace(self, **sections: Any) -> "StageConfig":
        config = object.__getattribute__(self, "_config")
        return StageConfig(config.replace(**sections), object.__getattribute__(self, "_sections"))


SECTIONS = tuple(f.name for f in dataclasses.fields(Config))


# --------------------------------------------------------------------------- conversion and checks

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list ({_type_name(typing.get_args(tp)[0])} each)"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            type(None): "null", Any: "any value"}.get(tp, str(tp))


class _Bad(Exception):
    pass


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# scalar type -> (accepts the YAML value?, conversion); YAML's true/false are not numbers here
_SCALARS = {
    type(None): (lambda v: v is None, lambda v: v),
    bool: (lambda v: isinstance(v, bool), lambda v: v),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), lambda v: v),
    float: (_is_number, float),
    str: (lambda v: isinstance(v, str), lambda v: v),
}


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (lists become tuples, mappings dataclasses), or :class:`_Bad`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Bad
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(value, arg, key)
            except _Bad:
                continue
        raise _Bad
    if tp in _SCALARS:
        accepts, as_type = _SCALARS[tp]
        if accepts(value):
            return as_type(value)
        raise _Bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Bad
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise _Bad
        _, item = typing.get_args(tp)
        return {str(k): _convert(v, item, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Bad
        return build(tp, value, key)
    raise TypeError(f"config field type {tp!r} is not supported")


def _check_rules(value: Any, rules: dict, key: str) -> None:
    if value is None or not rules:
        return
    for rule, bound in rules.items():
        ok = {"gt": value > bound, "ge": value >= bound, "le": value <= bound, "lt": value < bound}[rule]
        if not ok:
            want = {"gt": f"> {bound}", "ge": f">= {bound}", "le": f"<= {bound}", "lt": f"< {bound}"}[rule]
            raise TriqdefError(f"parameter {key} = {value!r}: expected a number {want}")


def build(cls: type, mapping: dict, where: str) -> Any:
    """An instance of dataclass ``cls`` from ``mapping``, every key checked; ``where`` prefixes the error's key."""
    if not isinstance(mapping, dict):
        raise TriqdefError(f"parameter {where} = {mapping!r}: expected a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in mapping if k not in fields]
    if unknown:
        raise TriqdefError(f"parameter {where}.{unknown[0]} is unknown: expected one of {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in mapping:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TriqdefError(f"parameter {key} is missing: expected {_type_name(hints[name])}")
            continue
        try:
            values[name] = _convert(mapping[name], hints[name], key)
        except _Bad:
            raise TriqdefError(f"parameter {key} = {mapping[name]!r}: expected {_type_name(hints[name])}") from None
        _check_rules(mapping[name], f.metadata.get("rules", {}), key)
    try:
        return cls(**values)
    except TriqdefError as exc:  # a check in __post_init__: name the section
        raise TriqdefError(str(exc).replace("parameter ", f"parameter {where}.", 1) if str(exc).startswith("parameter ")
                           else f"{where}: {exc}") from None


def override(obj: Any, changes: dict, where: str) -> Any:
    """``obj`` (a section dataclass) with ``changes`` applied, checked as if they were in ``params.yaml``."""
    current = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return build(type(obj), _as_plain({**current, **changes}), where)


def _as_plain(obj: Any) -> Any:
    """Dataclasses and tuples as the mappings and lists ``params.yaml`` would hold."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _as_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_as_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _as_plain(v) for k, v in obj.items()}
    return obj


def as_dict(obj: Any) -> Any:
    """A section (or the whole :class:`Config`) as plain mappings and lists, for provenance records."""
    if isinstance(obj, StageConfig):
        obj = object.__getattribute__(obj, "_config")
    return _as_plain(obj)


# --------------------------------------------------------------------------- loading

def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise TriqdefError(f"params file {path} not found: expected a YAML file with a 'base' section")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise TriqdefError(f"params file {path} is not valid YAML{where}") from None
    if not isinstance(raw, dict) or "base" not in raw:
        raise TriqdefError(f"params file {path} has no 'base' section: expected base: {{profile, seed, device}}")
    return raw


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise TriqdefError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return profile


def load_config(path: str | Path | None = None, profile: str | None = None,
                sections: typing.Iterable[str] | None = None) -> Config | StageConfig:
    """Read ``params.yaml`` once and resolve every section for one profile into a :class:`Config`.

    ``profile``: None takes ``TRIQDEF_PROFILE``, else ``base.profile``.
    ``sections``: the sections a stage declares (its ``PARAMS``); the result
    then refuses the others (:class:`StageConfig`).
    """
    path = Path(path) if path else project_root() / "params.yaml"
    raw = _read_yaml(path)
    profile = check_profile(profile or os.environ.get("TRIQDEF_PROFILE") or raw["base"].get("profile", "cpu"))
    resolved: dict[str, Any] = {"base": dict(raw["base"], profile=profile)}
    hints = typing.get_type_hints(Config)
    for name in SECTIONS[1:]:
        section = raw.get(name)
        if not isinstance(section, dict):
            raise TriqdefError(f"params file {path} has no section {name!r}: expected {name}: {{common, smoke, cpu, paper}}")
        if profile not in section:
            raise TriqdefError(f"params section {name!r} has no {profile!r} entry: expected keys {', '.join(PROFILES)}")
        unknown = [k for k in section if k not in (*PROFILES, "common")]
        if unknown:
            raise TriqdefError(f"params section {name!r} has key {unknown[0]!r}: expected common, {', '.join(PROFILES)}")
        resolved[name] = {**(section.get("common") or {}), **(section[profile] or {})}
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise TriqdefError(f"params file {path} has an unknown section {unknown[0]!r}: expected {', '.join(SECTIONS)}")
    built = {}
    for name in SECTIONS:
        where = name if name == "base" else f"{name}.{profile}"
        built[name] = build(hints[name], resolved[name], where)
    config = Config(**built)
    return config.only(sections) if sections is not None else config


# --------------------------------------------------------------------------- checks of plain arguments

def require_positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    """Validate a size/count argument: an integer > 0 (or >= 0)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        want = "an integer >= 0" if allow_zero else "a positive integer"
        raise TriqdefError(f"parameter {name} = {value!r}: expected {want}")
    return value


def require_fraction(value: Any, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise TriqdefError(f"parameter {name} = {value!r}: expected a number in [0, 1]")
    return float(value)
