"""How often the report's intervals cover the truth: outcome cubes simulated with known truth (issue 29, item 3;
docs/design.md#interval-coverage).

A patch evaluation is a (patches × images) matrix of outcomes (:class:`triqdef.eval.intervals.Outcomes`). The
simulation draws such matrices from a logistic random-effects model whose population rate is known exactly:

    P(hit | patch p, image i, seed s) = sigmoid(mu + u_p + v_i + w_s)

- ``u_p ~ N(0, patch_sd²)``: the target effect. The pipeline's white-box row had one DWQ patch near 13 % and one near
  86 % (logits −1.9 and +1.8); ``patch_sd`` 2.0 is at least that spread.
- ``v_i ~ N(0, image_sd²)``: an image easy to fool is easy for every patch, so the patches' outcomes are correlated
  across the images they share.
- ``w_s ~ N(0, seed_sd²)``: the training seed. With one trained model the intervals are about *that* model (images
  and patches resampled); the truth they are scored against is then the rate of that model, ``w_s`` fixed.
- Eligibility as the pipeline defines it: the image's label is not the patch's target (targets spread over the
  classes) and the model classifies it correctly when clean (``clean_accuracy``).

The truth of a rate is the population mean over patches and images, E sigmoid(mu + u + v + w) (Gauss–Hermite
quadrature). Three kinds of estimate are scored, those the report uses: a rate, a paired difference (two models on
the same patches and images, the second with its own patch-by-model effect), and a difference against a multiple
of another rate (two patch sets on the same images, ``a − scale · b``).

    python -m triqdef.eval.coverage --reps 1000        # the coverage table in docs/design.md
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass

import numpy as np

from triqdef.errors import TriqdefError
from triqdef.eval.intervals import METHODS, Interval, Outcomes, bootstrap_rate, difference, studentised

KINDS = ("rate", "paired difference", "scaled difference")
N_CLASSES = 10


@dataclass(frozen=True)
class CubeModel:
    """The random-effects model of one simulated evaluation (see the module docstring); logits, not rates."""

    mu: float = -0.5               # sigmoid(-0.5) = 38 %: the mean logit of model A
    patch_sd: float = 2.0          # target effects: 13 % against 86 % is a logit spread of about 1.85 either side
    image_sd: float = 1.0          # shared across patches: correlation across images
    seed_sd: float = 0.3           # between training seeds (fixed within one trained model)
    clean_accuracy: float = 0.85
    shift: float = 0.4             # model B's mean logit above A's (paired difference)
    interaction_sd: float = 0.5    # model B's patch-by-model effect: B's target effects are A's plus this noise
    scale: float = 0.6             # the scaled difference a − scale · b ("40 % lower": scale 0.6)

    def truth(self, mu: float, extra_sd: float = 0.0, seed_effect: float = 0.0) -> float:
        """E sigmoid(mu + seed_effect + z), z ~ N(0, patch_sd² + image_sd² + extra_sd²): the population rate of one
        trained model (its seed effect fixed)."""
        sd = np.sqrt(self.patch_sd ** 2 + self.image_sd ** 2 + extra_sd ** 2)
        nodes, weights = np.polynomial.hermite_e.hermegauss(80)   # probabilists' Hermite: weight exp(-x²/2)
        return float((weights * _sigmoid(mu + seed_effect + sd * nodes)).sum() / weights.sum())


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _check_sizes(n_patches: int, n_images: int) -> None:
    for name, value, least in (("n_patches", n_patches, 1), ("n_images", n_images, 2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise TriqdefError(f"coverage simulation {name}={value!r}: expected an integer >= {least}")


def simulate(model: CubeModel, kind: str, n_patches: int, n_images: int, rng: np.random.Generator
             ) -> tuple[Outcomes, Outcomes | None, float]:
    """One simulated evaluation of ``kind``: ``(a, b, truth)``; ``b`` is None for a rate. The truth is that of the
    trained model(s) drawn here (their seed effect fixed), which is what an interval over images and patches is
    about."""
    _check_sizes(n_patches, n_images)
    if kind not in KINDS:
        raise TriqdefError(f"coverage simulation kind {kind!r}: expected one of {', '.join(KINDS)}")
    labels = rng.integers(0, N_CLASSES, n_images)
    image_effect = rng.normal(0.0, model.image_sd, n_images)
    seed_a = rng.normal(0.0, model.seed_sd)

    def evaluate(mu: float, seed_effect: float, target_effect: np.ndarray, targets: np.ndarray) -> Outcomes:
        logits = mu + seed_effect + target_effect[:, None] + image_effect[None, :]
        hits = rng.random(logits.shape) < _sigmoid(logits)
        clean_correct = rng.random(n_images) < model.clean_accuracy          # this model's clean predictions
        eligible = clean_correct[None, :] & (labels[None, :] != targets[:, None])
        return Outcomes(hits, eligible)

    targets = np.arange(n_patches) % N_CLASSES
    u = rng.normal(0.0, model.patch_sd, n_patches)
    a = evaluate(model.mu, seed_a, u, targets)
    truth_a = model.truth(model.mu, seed_effect=seed_a)
    if kind == "rate":
        return a, None, truth_a
    if kind == "paired difference":   # model B on the same patches: A's target effects plus an interaction
        seed_b = rng.normal(0.0, model.seed_sd)
        b = evaluate(model.mu + model.shift, seed_b, u + rng.normal(0.0, model.interaction_sd, n_patches), targets)
        return a, b, truth_a - model.truth(model.mu + model.shift, model.interaction_sd, seed_b)
    # another patch set (its own target effects) on the same images and the same model
    b = evaluate(model.mu + model.shift, seed_a, rng.normal(0.0, model.patch_sd, n_patches), targets)
    return a, b, truth_a - model.scale * model.truth(model.mu + model.shift, seed_effect=seed_a)


def estimate(kind: str, a: Outcomes, b: Outcomes | None, method: str, n_boot: int, seed: int,
             scale: float, level: float = 0.95) -> Interval:
    """The interval the report would give for ``kind`` (the pipeline's own functions)."""
    if kind == "rate":
        return bootstrap_rate(a, n_boot, seed, method=method, level=level)
    if kind == "paired difference":
        return difference(a, b, n_boot, seed, method=method, level=level)
    return difference(a, b, n_boot, seed, scale=scale, same_patches=False, method=method, level=level)


@dataclass(frozen=True)
class CoverageCell:
    kind: str
    method: str
    n_patches: int
    n_images: int
    reps: int
    covered: int
    mean_half_width: float

    @property
    def coverage(self) -> float:
        return self.covered / self.reps

    @property
    def mc_se(self) -> float:
        """The Monte-Carlo standard error of the coverage itself."""
        p = self.coverage
        return float(np.sqrt(max(p * (1 - p), 1e-12) / self.reps))

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "coverage": self.coverage, "mc_se": self.mc_se}


def coverage(kind: str, n_patches: int, n_images: int, reps: int = 400, n_boot: int = 1000,
             methods: tuple[str, ...] = METHODS, model: CubeModel = CubeModel(), seed: int = 0,
             level: float = 0.95) -> list[CoverageCell]:
    """Empirical coverage of each interval ``method`` for ``kind`` at ``n_patches`` × ``n_images``: ``reps``
    simulated evaluations, each scored by whether its interval holds the truth. Deterministic in ``seed``."""
    _check_sizes(n_patches, n_images)
    if kind not in KINDS:
        raise TriqdefError(f"coverage simulation kind {kind!r}: expected one of {', '.join(KINDS)}")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise TriqdefError(f"coverage level {level!r}: expected a number in (0, 1), e.g. 0.95")
    if isinstance(reps, bool) or not isinstance(reps, int) or reps < 1:
        raise TriqdefError(f"coverage reps={reps!r}: expected an integer >= 1")
    for m in methods:
        if m not in METHODS:
            raise TriqdefError(f"interval method {m!r}: expected one of {', '.join(METHODS)}")
    covered = {m: 0 for m in methods}
    widths = {m: 0.0 for m in methods}
    for r in range(reps):
        rng = np.random.default_rng([seed, n_patches, n_images, KINDS.index(kind), r])
        a, b, truth = simulate(model, kind, n_patches, n_images, rng)
        percentile = estimate(kind, a, b, "percentile", n_boot, seed=r, scale=model.scale, level=level)
        for m in methods:   # one set of replicates serves every method
            ci = percentile if m == "percentile" else studentised(percentile, n_patches, level)
            covered[m] += bool(ci.low <= truth <= ci.high)
            widths[m] += ci.half_width / reps
    return [CoverageCell(kind, m, n_patches, n_images, reps, covered[m], widths[m]) for m in methods]


def table(patches: tuple[int, ...], images: tuple[int, ...], kinds: tuple[str, ...] = KINDS, reps: int = 400,
          n_boot: int = 1000, model: CubeModel = CubeModel(), seed: int = 0, progress: bool = False):
    """The coverage table (a pandas DataFrame): one row per kind × method × patches × images."""
    import pandas as pd
    from tqdm.auto import tqdm

    for p in patches:
        for n in images:
            _check_sizes(p, n)   # every cell checked before the first is computed
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise TriqdefError(f"coverage simulation kind {unknown[0]!r}: expected one of {', '.join(KINDS)}")
    grid = [(k, p, n) for k in kinds for p in patches for n in images]
    rows = []
    for k, p, n in tqdm(grid, desc="coverage", unit="cell", disable=not progress):
        rows += [c.as_dict() for c in coverage(k, p, n, reps, n_boot, model=model, seed=seed)]
    return pd.DataFrame(rows)


def markdown(df) -> str:
    """The table as docs/design.md shows it: coverage in % (± its Monte-Carlo standard error) per method."""
    wide = df.assign(cell=[f"{100 * c:.1f} ± {100 * s:.1f}" for c, s in zip(df.coverage, df.mc_se)])
    wide = wide.pivot_table(index=["kind", "n_patches", "n_images"], columns="method", values="cell", aggfunc="first")
    return wide.reset_index().to_markdown(index=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m triqdef.eval.coverage", description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, nargs="+", default=[2, 4, 10, 20])
    ap.add_argument("--images", type=int, nargs="+", default=[100, 500, 1000])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--csv", help="also write the long table here")
    args = ap.parse_args(argv)
    try:
        df = table(tuple(args.patches), tuple(args.images), tuple(args.kinds), args.reps, args.n_boot, progress=True)
    except TriqdefError as exc:
        print(f"triqdef: error: {exc}", file=sys.stderr)
        return 2
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(markdown(df))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
