"""Stage ``variant_eval`` (claim 18 at the seed level; docs/design.md#training-seeds): a run of stage ``variant_seed``
evaluated as TriQDef's core run is (:mod:`triqdef.stages.replica_eval`): Table 5's seen and unseen sets, and
cross-bit patches made on the run itself. DVC runs it as a matrix over ``seeds.common`` (variants × variant seeds).
Files: ``results/replicas/outcomes/variants/triqdef-<variant>-seed<k>.parquet``,
``results/replicas/metrics/variants/*_eval.json``.
"""

from __future__ import annotations

from triqdef.stages import replica_eval

# replica_eval.EVAL_PARAMS and ``seeds`` (a literal: tools/dvc_deps.py reads it from the source; a test keeps the two)
PARAMS = ("base", "data", "model", "quant", "patches", "robustness", "cross_bit", "seeds")


def run_variant_eval(cfg, variant: str, training_seed: int, progress: bool = True) -> dict:
    """Evaluate TriQDef's ``variant`` trained with ``training_seed``."""
    return replica_eval.evaluate_replica(cfg, "triqdef", training_seed=training_seed, variant=variant,
                                         progress=progress)
