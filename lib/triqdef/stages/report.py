"""Stage ``report``: ``results/REPORT.md``, every claim of the paper beside our figure.

The claims, their verdicts and the pipeline-time section live in
:mod:`triqdef.reporting.report`; this module is the stage's entry point and
declares the params sections it reads (``PARAMS``, checked against
``dvc.yaml`` by ``tools/dvc_deps.py``).
"""

from __future__ import annotations

from pathlib import Path

from triqdef.reporting.report import write_report

PARAMS = ("base",)  # the profile and commit in the report's header; every figure comes from results/


def run_report(cfg) -> Path:
    """Stage ``report``: write ``results/REPORT.md`` from ``results/tables`` and ``results/metrics``."""
    return write_report(cfg)
