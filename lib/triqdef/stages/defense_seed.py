"""Stage ``defense_seed`` (issue 30, item 5; docs/design.md#training-seeds): a defense trained again with another
training seed, from the same start checkpoint, data and patch sets as stage ``defense`` (which trains with
``base.seed``). DVC runs it as a matrix over ``seeds.common`` (methods × training seeds); the replicas feed the
seed level of the bootstrap (docs/design.md#intervals-and-verdicts). Files:
``results/replicas/models/seeds/<method>-seed<k>.pt`` and ``results/replicas/{metadata,metrics,plots}/seeds/``.
"""

from __future__ import annotations

from triqdef.config import Config, StageConfig
from triqdef.stages import defense

# stage defense's sections and ``seeds`` (a literal: tools/dvc_deps.py reads it from the source; a test keeps the two)
PARAMS = ("base", "data", "model", "quant", "defenses", "triqdef", "pbat", "dwq", "qadt_r", "patches", "seeds")


def run_seed(cfg: Config | StageConfig, method: str, training_seed: int, progress: bool = True) -> dict:
    """Train ``method`` with ``training_seed`` (one of ``seeds.training_seeds``; ``method`` one of ``seeds.methods``)."""
    defense.check_training_seed(cfg, method, training_seed)
    return defense.run_defense(cfg, method, progress=progress, training_seed=training_seed)
