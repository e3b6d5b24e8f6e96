"""Stage ``seed_eval`` (issue 30, item 5; docs/design.md#training-seeds): a training-seed replica of stage
``defense_seed`` evaluated as the core run of its method is (:mod:`triqdef.stages.replica_eval`): Table 5's seen
and unseen sets, and cross-bit patches made on the replica itself. DVC runs it as a matrix over ``seeds.common``.
Files: ``results/replicas/outcomes/seeds/<method>-seed<k>.parquet``, ``results/replicas/metrics/seeds/*_eval.json``.
"""

from __future__ import annotations

from triqdef.stages import replica_eval

# replica_eval.EVAL_PARAMS and ``seeds`` (a literal: tools/dvc_deps.py reads it from the source; a test keeps the two)
PARAMS = ("base", "data", "model", "quant", "patches", "robustness", "cross_bit", "seeds")


def run_seed_eval(cfg, method: str, training_seed: int, progress: bool = True) -> dict:
    """Evaluate ``method``'s replica trained with ``training_seed``."""
    return replica_eval.evaluate_replica(cfg, method, training_seed=training_seed, progress=progress)
