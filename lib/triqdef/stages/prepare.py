"""Stage ``prepare``: the data subsets every later stage draws, recorded."""

from __future__ import annotations

import logging

from triqdef import paths
from triqdef.config import Config, StageConfig, as_dict
from triqdef.meta import write_json
from triqdef.stages.common import data_record, load_data

PARAMS = ("base", "data")

log = logging.getLogger(__name__)


def run_prepare(cfg: Config | StageConfig) -> dict:
    """Stage ``prepare``: draw the train / holdout / test subsets the params ask for and record them.

    Writes ``results/data/splits.json``: data source, requested and actual
    sizes, images per class in each subset, and a checksum of the indices, so
    every later stage (which draws the same seeded subsets) can be traced to it.
    """
    import hashlib

    import numpy as np

    splits = load_data(cfg)
    record = dict(data_record(splits), seed=cfg.base.seed, profile=cfg.base.profile, params=as_dict(cfg.data))
    for name in ("train", "holdout", "test"):
        sub = getattr(splits, name)
        record[f"{name}_per_class"] = np.bincount(sub.labels.numpy(), minlength=10).tolist()
        record[f"{name}_indices_sha1"] = hashlib.sha1(np.asarray(sub.indices, dtype=np.int64).tobytes()).hexdigest()
    write_json(paths.results_dir() / "data" / "splits.json", record)
    log.info("data: source %s, sizes %s", record["source"], splits.sizes["actual"])
    return record
