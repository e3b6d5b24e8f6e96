"""Stage ``length_eval`` (issue 30, item 7; docs/design.md#training-length): a training-length run of stage
``defense_length`` evaluated as the core run of its method is (:mod:`triqdef.stages.replica_eval`): Table 5's
seen and unseen sets, and cross-bit patches made on the run's model itself. DVC runs it as a matrix over
``training_length.common``. Files: ``results/replicas/outcomes/length/<method>-x<f>.parquet``,
``results/replicas/metrics/length/*_eval.json``.
"""

from __future__ import annotations

from triqdef.stages import replica_eval

# replica_eval.EVAL_PARAMS and ``training_length`` (a literal: tools/dvc_deps.py reads it from the source)
PARAMS = ("base", "data", "model", "quant", "patches", "robustness", "cross_bit", "training_length")


def run_length_eval(cfg, method: str, factor: float, progress: bool = True) -> dict:
    """Evaluate ``method``'s run trained for ``factor`` × the core run's steps."""
    return replica_eval.evaluate_replica(cfg, method, length_factor=factor, progress=progress)
