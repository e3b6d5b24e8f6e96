"""What several stages share: their data, the model name, the quantization settings, checkpoint paths.

Every stage module of :mod:`triqdef.stages` takes the typed config
(:func:`triqdef.config.load_config`, restricted to the sections its
``PARAMS`` declares), writes its outputs atomically, and returns a small
metrics record that also lands in ``results/metrics/<stage>.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from triqdef import paths
from triqdef.config import Config, StageConfig
from triqdef.data import cifar as data_mod


def load_data(cfg: Config | StageConfig) -> data_mod.Splits:
    """The train / holdout / test subsets of ``cfg.data``, drawn with ``base.seed``."""
    return data_mod.load_splits(cfg.data, cfg.base.seed)


def data_record(splits: data_mod.Splits) -> dict:
    """What every result records about its data: source, origin, archive hash, requested/actual sizes."""
    src = splits.source
    return {"source": src.get("source"), "origin": src.get("origin"), "sha256": src.get("sha256"), "sizes": splits.sizes}


def calibration_batches(splits: data_mod.Splits, batch_size: int = 128):
    """Float batches of the held-out split (observer / BN calibration, never trained on)."""
    return data_mod.iter_batches(splits.holdout.images, batch_size)


def fp_checkpoint(cfg: Config | StageConfig, root: Path | None = None) -> Path:
    """``<root>/fp/<model>.pt``; ``root`` defaults to ``results/models`` (stage ``train_fp``)."""
    return (root or paths.models_dir()) / "fp" / f"{cfg.model.name}.pt"


def qat_checkpoint(cfg: Config | StageConfig, all_layers: bool = False, root: Path | None = None,
                   independent: bool = False) -> Path:
    """``<root>/qat/<model>[_all_layers|_independent].pt``; ``root`` defaults to ``results/models`` (stage
    ``train_qat``). ``independent``: the standard-QAT model trained with another seed, which the unseen-bit-width
    patches are made on (docs/design.md#kinds)."""
    suffix = "_all_layers" if all_layers else "_independent" if independent else ""
    return (root or paths.models_dir()) / "qat" / f"{cfg.model.name}{suffix}.pt"


@dataclass(kw_only=True)
class NotebookInputs:
    """What a notebook stage's tables read, besides its models: the config, the data, the patch sets,
    the test images of its patch tables and the provenance block written beside each table.

    Each notebook stage (:mod:`.motivation`, :mod:`.training`, :mod:`.ablation_tables`) extends it with its models.
    """

    cfg: Config | StageConfig
    splits: data_mod.Splits
    patches: list
    test_x: torch.Tensor
    test_y: torch.Tensor
    meta: dict
    started: float = field(default_factory=time.perf_counter)  # the stage's start (open_notebook), for its wall time

    def wall_time_s(self) -> float:
        """Seconds since the notebook opened (the stage time its metrics record)."""
        return time.perf_counter() - self.started

    @property
    def profile(self) -> str:
        return self.cfg.base.profile

    @property
    def model_name(self) -> str:
        return self.cfg.model.name

    @property
    def n_eval(self) -> int:
        """Test images of the patch tables."""
        return len(self.test_y)


def open_notebook(stage, profile: str, params_file: str | None = None) -> NotebookInputs:
    """A notebook stage's first cell: quiet logging, the plot style, ``stage.load`` on the config restricted to
    ``stage.PARAMS``, and the inputs' one-paragraph description printed. ``stage``: its module, e.g.
    :mod:`triqdef.stages.training`. The returned inputs' :meth:`~NotebookInputs.wall_time_s` counts from here."""
    from triqdef.config import load_config
    from triqdef.reporting.plots import use_style

    started = time.perf_counter()
    logging.basicConfig(level=logging.WARNING)
    use_style()
    inputs = stage.load(load_config(params_file, profile, stage.PARAMS))
    inputs.started = started
    print(inputs.describe())
    return inputs


def work_dir() -> Path:
    """Interrupted runs' resumable state (``results/.work``, not a DVC output)."""
    return paths.results_dir() / ".work"
