"""The notebooks are Jupytext pairs: ``notebooks/NN_name.py`` (percent format, the source) and the ``.ipynb`` beside it
(what papermill and nbval run). A pair out of sync, a committed output, a lost ``parameters`` tag, or a cell that
uses a name only a later cell defines fails here. Fix a pair with ``jupytext --sync notebooks/*.py``."""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
#: Notebook -> its stage module (the contract: one module per DVC stage, ``triqdef.stages.<stage>``).
STAGES = {"01_motivation": "motivation", "02_training": "training", "03_ablations": "ablation_tables",
          "04_appendix": "appendix", "05_stq": "stq"}


def _cells(nb) -> list[tuple[str, str, list[str]]]:
    return [(c.cell_type, c.source.strip("\n"), list(c.metadata.get("tags", []))) for c in nb.cells]


def test_every_notebook_is_a_pair():
    ipynbs = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert SOURCES, "no notebook sources under notebooks/"
    assert {p.stem for p in SOURCES} == ipynbs, "each notebooks/NN_name.ipynb needs its NN_name.py (and back)"
    assert set(STAGES) == ipynbs
    toml = (ROOT / "jupytext.toml").read_text()
    assert 'formats = "ipynb,py:percent"' in toml


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_pair_in_sync(source):
    """The .ipynb holds the cells of the .py: same types, sources and tags, in the same order."""
    from_py = jupytext.read(source)
    ipynb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert _cells(ipynb) == _cells(from_py), (
        f"{source.name} and {source.with_suffix('.ipynb').name} differ: run `jupytext --sync notebooks/{source.name}`")


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs_and_stable_ids(source):
    nb = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{source.stem}.ipynb carries outputs"
    ids = [c.get("id") for c in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_parameters_cell_for_papermill(source):
    """Papermill injects ``profile`` after the one cell tagged ``parameters``, before any other code runs."""
    nb = jupytext.read(source)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [i for i, c in enumerate(code) if "parameters" in c.metadata.get("tags", [])]
    assert tagged == [0], "the first code cell, and only it, carries the tag `parameters`"
    assert "profile = " in code[0].source


def _names(tree: ast.AST) -> tuple[set[str], list[tuple[str, int]]]:
    """Names a cell binds, and the names it reads (with their line) that it does not bind itself."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    read = [(n.id, n.lineno) for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)]
    return bound, [(n, line) for n, line in read if n not in bound]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_cells_use_only_names_defined_above(source):
    """Run top to bottom, every cell reads only names an earlier cell (or itself) defines."""
    defined = set(dir(builtins))
    for i, cell in enumerate(c for c in jupytext.read(source).cells if c.cell_type == "code"):
        bound, read = _names(ast.parse(cell.source))
        missing = [(n, line) for n, line in read if n not in defined]
        assert not missing, f"{source.name}, code cell {i}: {missing} used before any cell defines them"
        defined |= bound


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_notebook_calls_its_stage_module(source):
    """Thin notebooks: the tables come from ``triqdef.stages.<stage>``, which declares the params it reads."""
    stage = STAGES[source.stem]
    text = source.read_text()
    # open_notebook(stage, ...) loads the config restricted to stage.PARAMS
    assert re.search(rf"^from triqdef\.stages import (\w+, )*{stage}\b", text, re.M), f"{source.name} imports no {stage}"
    assert f"open_notebook({stage}, profile, params_file)" in text
    module = importlib.import_module(f"triqdef.stages.{stage}")
    assert isinstance(module.PARAMS, tuple) and "base" in module.PARAMS
    code = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    assert not any(isinstance(n, (ast.For, ast.While)) for c in code for n in ast.walk(ast.parse(c.source))), \
        "loops that build a table or figure belong in the package"
