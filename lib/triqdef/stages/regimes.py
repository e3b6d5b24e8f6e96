"""The two attack regimes of the notebook tables: the paper's patch size and the matched size
(docs/design.md#attack-regime).

The patch stage makes every set at the paper's size (``seen``, ``unseen_bits4``, ...) and, when stage
``attack_strength`` found a different second size, again at that size (``seen_matched``, ...). A notebook table
function takes ``regime`` (``paper`` or ``matched``), reads that regime's sets and saves its table under
:func:`regime_table`'s name; when the patch stage made no matched regime, :func:`save_absent_regime` writes a
table that says so, so that every declared output exists.
"""

from __future__ import annotations

import pandas as pd

from triqdef.attacks.patchsets import MATCHED, PAPER, regime_set, select
from triqdef.reporting.tables import save_table
from triqdef.stages.common import NotebookInputs

REGIMES = (PAPER, MATCHED)


def regime_size(inp: NotebookInputs, regime: str) -> int | None:
    """The patch size of ``regime`` in this run's patch sets, or None when the patch stage made no such regime."""
    seen = select(inp.patches, regime_set("seen", regime))
    return seen[0].size if seen else None


def regime_label(inp: NotebookInputs, regime: str) -> str:
    """``6×6 (the paper's size)`` / ``12×12 (matched size)``, for captions."""
    size = regime_size(inp, regime)
    return f"{size}×{size} ({'the paper' if regime == PAPER else 'matched'} size)"


def regime_table(name: str, regime: str) -> str:
    """A table's file name in a regime: ``table1_transfer_asr`` / ``table1_transfer_asr_matched``."""
    return name if regime == PAPER else f"{name}_{regime}"


def save_absent_regime(inp: NotebookInputs, names: list[str], regime: str, stores=()) -> pd.DataFrame:
    """The tables of a regime the patch stage did not make (the matched size equals the paper's): each says so; and
    each outcome store of ``stores`` (paths) is written empty, its info saying why (a declared output exists)."""
    from triqdef.eval import outcome_store

    why = (f"no {regime} regime: the attack-strength stage's size equals the paper's {inp.cfg.patches.size} px; see "
           "the paper-size table")
    note = pd.DataFrame({"note": [why]})
    for name in names:
        save_table(note, regime_table(name, regime), dict(inp.meta, regime=regime), caption="No table in this regime.")
    for path in stores:
        outcome_store.write(outcome_store.empty(), path, info={"regime": regime, "absent": why})
    return note
