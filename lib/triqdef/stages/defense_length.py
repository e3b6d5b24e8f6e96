"""Stage ``defense_length`` (issue 30, item 7; docs/design.md#training-length): a defense trained with a multiple
of the core run's steps (stage ``defense``), one seed, from the same start checkpoint, data and patch sets. DVC
runs it as a matrix over ``training_length.common`` (methods × factors; ``cpu``: TriQDef and PBAT at 100 and
1,600 steps beside the core's 400). Files: ``results/replicas/models/length/<method>-x<f>.pt`` and
``results/replicas/{metadata,metrics,plots}/length/``.
"""

from __future__ import annotations

from triqdef.config import Config, StageConfig
from triqdef.stages import defense

# stage defense's sections and ``training_length`` (a literal: tools/dvc_deps.py reads it from the source)
PARAMS = ("base", "data", "model", "quant", "defenses", "triqdef", "pbat", "dwq", "qadt_r", "patches",
          "training_length")


def run_length(cfg: Config | StageConfig, method: str, factor: float, progress: bool = True) -> dict:
    """Train ``method`` for ``factor`` × the core run's steps (one of ``training_length.factors``)."""
    defense.check_length_factor(cfg, method, factor)
    return defense.run_defense(cfg, method, progress=progress, length_factor=factor)
