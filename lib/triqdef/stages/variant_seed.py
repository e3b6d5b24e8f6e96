"""Stage ``variant_seed`` (claim 18 at the seed level; docs/design.md#training-seeds): a TriQDef ablation variant of
``seeds.variants`` (by default ``every_step_full_res``, TriQDef with its speed settings off) trained with one seed of
``seeds.variant_seeds`` (base.seed and every training seed), from the same start checkpoint, data and patch sets as
stage ``defense``. DVC runs it as a matrix over ``seeds.common`` (variants × variant seeds), in the replica group:
``seed_summary`` compares these runs with TriQDef's own three seeds (its core run and ``defense_seed``'s replicas).
Files: ``results/replicas/models/variants/triqdef-<variant>-seed<k>.pt`` and
``results/replicas/{metadata,metrics,plots}/variants/``.
"""

from __future__ import annotations

from triqdef.config import Config, StageConfig
from triqdef.stages import defense

# stage defense's sections, ``ablations`` and ``seeds`` (a literal: tools/dvc_deps.py reads it from the source)
PARAMS = ("base", "data", "model", "quant", "defenses", "triqdef", "pbat", "dwq", "qadt_r", "patches", "ablations",
          "seeds")


def run_variant_seed(cfg: Config | StageConfig, variant: str, training_seed: int, progress: bool = True) -> dict:
    """Train TriQDef's ``variant`` (one of ``seeds.variants``) with ``training_seed`` (one of ``seeds.variant_seeds``)."""
    defense.check_training_seed(cfg, "triqdef", training_seed, variant)
    return defense.run_defense(cfg, "triqdef", variant, progress=progress, training_seed=training_seed)
