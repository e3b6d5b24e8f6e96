"""The two attack regimes of the notebook tables: the paper's patch size and the matched size
(docs/design.md#attack-regime).

The patch stage makes the training pool at the paper's size and, when stage ``attack_strength`` found a different
second size, again at that size (``pool_matched``); the sets the tables evaluate (``seen``, ``unseen_bits4``, ...)
in the regimes they are evaluated in (parameter ``regimes.evaluate``: ``both``, or ``deciding``, only the regime
REPORT.md decides in, :func:`deciding_regime`). A notebook table function takes ``regime`` (``paper`` or
``matched``), reads that regime's sets and saves its table under :func:`regime_table`'s name; a regime the patch
stage did not make, or that the profile does not evaluate, gets a table that says so and why
(:func:`save_absent_regime`, :func:`not_evaluated`), so that every declared output exists.
"""

from __future__ import annotations

import pandas as pd

from triqdef.attacks.patchsets import MATCHED, PAPER, regime_set, select
from triqdef.reporting.tables import save_table
from triqdef.stages.common import NotebookInputs

#: ``regimes.evaluate``: both regimes, or only the deciding one.
BOTH, DECIDING = "both", "deciding"


def regime_size(inp: NotebookInputs, regime: str) -> int | None:
    """The patch size of ``regime`` in this run's patch sets (as the patch stage recorded its regimes), or None when
    the patch stage made no such regime."""
    regimes = (getattr(inp, "patch_meta", None) or {}).get("regimes")
    if regimes is not None:
        return int(regimes[regime]["size"]) if regime in regimes else None
    seen = select(inp.patches, regime_set("seen", regime))   # a patch file from before the regimes were recorded
    return seen[0].size if seen else None


def deciding_regime(inp: NotebookInputs) -> str:
    """The regime REPORT.md decides in: the matched size when the patch stage made it, else the paper's."""
    return MATCHED if regime_size(inp, MATCHED) is not None else PAPER


def other_regime(inp: NotebookInputs) -> str:
    """The regime that is not :func:`deciding_regime`."""
    return PAPER if deciding_regime(inp) == MATCHED else MATCHED


def regime_note(inp: NotebookInputs) -> str:
    """One sentence for a notebook: the regime its tables decide in, and whether (or why not) the other is made."""
    deciding, other = deciding_regime(inp), other_regime(inp)
    why = not_evaluated(inp, other)
    return (f"Tables first in the {deciding} regime ({regime_label(inp, deciding)}), where REPORT.md decides; the "
            f"{other} regime: " + (f"{why}." if why else f"{regime_label(inp, other)}, evaluated after them."))


def not_evaluated(inp: NotebookInputs, regime: str) -> str | None:
    """Why the tables of ``regime`` are not evaluated in this run, or None when they are: the patch stage did not
    make that regime (the matched size equals the paper's), or the profile evaluates the deciding regime only
    (``regimes.evaluate: deciding``; the patch stage then made only the other regime's training pool) and this is
    the other one."""
    if regime_size(inp, regime) is None:
        return (f"no {regime} regime: the attack-strength stage's size equals the paper's {inp.cfg.patches.size} px; "
                "see the paper-size table")
    if inp.cfg.regimes.evaluate == DECIDING and regime != deciding_regime(inp):
        return (f"not evaluated in profile `{inp.profile}` (time budget): regimes.evaluate is '{DECIDING}', so only the "
                f"{deciding_regime(inp)} regime, the one REPORT.md decides in, is; set "
                f"regimes.{inp.profile}.evaluate: {BOTH} to make this table")
    return None


def regime_label(inp: NotebookInputs, regime: str) -> str:
    """``6×6 (the paper's size)`` / ``12×12 (matched size)``, for captions."""
    size = regime_size(inp, regime)
    return f"{size}×{size} ({'the paper' if regime == PAPER else 'matched'} size)"


def regime_table(name: str, regime: str) -> str:
    """A table's file name in a regime: ``table1_transfer_asr`` / ``table1_transfer_asr_matched``."""
    return name if regime == PAPER else f"{name}_{regime}"


def save_absent_regime(inp: NotebookInputs, names: list[str], regime: str, stores=(), why: str | None = None) -> pd.DataFrame:
    """The tables of a regime not evaluated in this run (``why``, by default :func:`not_evaluated`'s reason): each
    says so; and each outcome store of ``stores`` (paths) is written empty, its info saying why (a declared output
    exists)."""
    from triqdef.eval import outcome_store

    why = why or not_evaluated(inp, regime) or f"{regime} regime not evaluated"
    note = pd.DataFrame({"note": [why]})
    for name in names:
        save_table(note, regime_table(name, regime), dict(inp.meta, regime=regime, not_evaluated=why),
                   caption=f"No table in this regime: {why}.")
    for path in stores:
        outcome_store.write(outcome_store.empty(), path, info={"regime": regime, "absent": why})
    return note
