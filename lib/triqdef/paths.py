"""Where things live.

The project root is the folder that holds ``dvc.yaml``. Everything the
pipeline writes lives under an *output root*, which is the project root
unless ``TRIQDEF_OUTPUT`` names another folder (the tests and the smoke
notebooks use a temporary one so they never touch the real results).
"""

from __future__ import annotations

import os
from pathlib import Path

from triqdef.errors import TriqdefError


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd, then this file) holding ``dvc.yaml``."""
    candidates = [Path(start or Path.cwd()).resolve(), Path(__file__).resolve()]
    for c in candidates:
        for p in [c, *c.parents]:
            if (p / "dvc.yaml").is_file():
                return p
    raise TriqdefError("project root not found: expected a folder holding dvc.yaml at or above the current directory")


def output_root() -> Path:
    """Root of everything the pipeline writes (``$TRIQDEF_OUTPUT`` or the project root)."""
    env = os.environ.get("TRIQDEF_OUTPUT")
    return Path(env).resolve() if env else project_root()


def data_dir() -> Path:
    """The prepared CIFAR-10 copy (built by ``triqdef data fetch`` from the ``data.source`` archive)."""
    env = os.environ.get("TRIQDEF_DATA_DIR")
    return Path(env).resolve() if env else output_root() / "data" / "cifar10"


def results_dir() -> Path:
    return output_root() / "results"


def replicas_dir() -> Path:
    """``results/replicas``: the replica group (training seeds, training length; issue 30), apart from the core
    pipeline's results so that no core stage, and not the report, depends on it (docs/design.md#training-seeds)."""
    return results_dir() / "replicas"


def models_dir() -> Path:
    return results_dir() / "models"


def tables_dir() -> Path:
    return results_dir() / "tables"


def figures_dir() -> Path:
    return results_dir() / "figures"


def metrics_dir() -> Path:
    return results_dir() / "metrics"


def sample_archive() -> Path:
    """The small class-balanced CIFAR-10 sample shipped in the repository."""
    return Path(__file__).resolve().parent / "_sample" / "cifar10-sample-jpeg.tar.gz"


def mirror_archive() -> Path:
    """The JPEG mirror of CIFAR-10 the committed results were made from: ``data/cifar10-jpeg.tar.gz`` in the
    project, tracked by ``data.dvc`` and stored in the repository's DVC remote (``dvc pull data.dvc``)."""
    return project_root() / "data" / "cifar10-jpeg.tar.gz"
