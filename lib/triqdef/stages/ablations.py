"""Stage ``ablations``: the TriQDef variants of Tables 7 and 13 (``ablations.run``)."""

from __future__ import annotations

from triqdef.config import Config, StageConfig
from triqdef.stages.defense import run_defense, validate_settings

PARAMS = ("base", "data", "model", "quant", "defenses", "triqdef", "ablations")


def run_ablations(cfg: Config | StageConfig, progress: bool = True) -> list[dict]:
    """Stage ``ablations``: every TriQDef variant of ``ablations.run``, each from the shared checkpoint."""
    for v in cfg.ablations.run:  # every variant's settings, before the first (long) run
        validate_settings("triqdef", cfg, v)
    return [run_defense(cfg, "triqdef", v, progress) for v in cfg.ablations.run]
