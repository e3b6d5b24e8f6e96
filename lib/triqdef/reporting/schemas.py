"""Column names and row labels of the result tables, defined once.

The code that builds a table (the notebook stages :mod:`triqdef.stages.motivation`,
:mod:`triqdef.stages.training`, :mod:`triqdef.stages.ablation_tables`, and the
table helpers of :mod:`triqdef.eval`) and the code that reads it back
(:mod:`triqdef.reporting.report`, which writes ``results/REPORT.md``) both take
the names from here, so a renamed column cannot silently leave a claim of the
report unmeasured.

Two kinds of bit-width columns exist, as in the paper: clean-accuracy tables
(Tables 4 and 13) name a column ``"<b>bit"`` (:func:`accuracy_column`); ASR
tables (Tables 2, 5, 7, 8) name a view ``"<b>-bit"`` (:func:`bit_view`) and,
when one table holds several attacks, ``"<attack> <b>-bit"``
(:func:`attack_column`, e.g. ``"lavan 4-bit"``).
"""

from __future__ import annotations

from collections.abc import Iterable

# --------------------------------------------------------------------------- shared column builders


def accuracy_column(bits: int) -> str:
    """Clean accuracy (%) at ``bits`` (Tables 4 and 13): ``"32bit"``, ``"4bit"``."""
    return f"{bits}bit"


def is_accuracy_column(column: str) -> bool:
    return str(column).endswith("bit") and not str(column).endswith("-bit")


def bit_view(bits: int) -> str:
    """A model evaluated at ``bits`` in an ASR table: ``"4-bit"``."""
    return f"{bits}-bit"


def is_bit_view(column: str) -> bool:
    return str(column).endswith("-bit")


def attack_column(attack: str, view: str) -> str:
    """ASR of ``attack`` in ``view`` when a table holds several attacks (Tables 5, 7): ``"lavan 4-bit"``."""
    return f"{attack} {view}"


def attack_columns(columns: Iterable[str], attack: str) -> list[str]:
    """The bit-width columns of ``attack`` (``"<attack> <b>-bit"``), in table order."""
    return [c for c in columns if c.startswith(f"{attack} ") and is_bit_view(c)]


def view_of(column: str) -> str:
    """The view of an :func:`attack_column` (``"lavan 4-bit"`` -> ``"4-bit"``)."""
    return column.split(" ", 1)[1]


def count_column(view: str) -> str:
    """Mean number of images each rate of ``view`` is computed over (:func:`triqdef.eval.transfer.pivot_rates`)."""
    return f"n {view}"


PATCHES = "patches"  # number of patches a row averages over
N_IMAGES = "n images"  # mean number of images per rate (Tables 5, 7)
RANDOM_VIEW = "random"  # DWQ's random-precision inference (Table 5)
MODEL = "model"
GROUP = "group"  # seen / unseen / whitebox (Tables 5, 7)
ATTACK = "attack"
LAVAN, GAP, PATCHATTACK = "lavan", "gap", "patchattack"
SEEN, UNSEEN, WHITEBOX = "seen", "unseen", "whitebox"

# --------------------------------------------------------------------------- Table 4 (clean accuracy)

N_TEST = "n_test"
EVAL_SECONDS = "eval_s"  # a timing column: differs between runs

# --------------------------------------------------------------------------- Table 1 (transfer to standard QAT)

FP_WHITEBOX_VIEW = "32 (FP, white-box)"


def qat_view(bits: int) -> str:
    """Table 1: the standard multi-bit QAT model at ``bits``: ``"4"``."""
    return f"{bits}"


# --------------------------------------------------------------------------- Table 3 (input-gradient similarity)

PAIR, METRIC, VALUE, CHANCE, ABOVE_CHANCE = "pair", "metric", "value", "chance", "above_chance"
RAW_COSINE = "cosine (raw gradient)"
EDGE_IOU, HOG_COSINE = "edge_iou", "hog_cosine"


def pair_label(a, b) -> str:
    """Two views compared: ``"fp-5"``, ``"32-5"``."""
    return f"{a}-{b}"


# --------------------------------------------------------------------------- Figure 2 / Table 12 (feature alignment)

INPUT, TAP = "input", "tap"


def metric_column(metric: str, kind: str) -> str:
    """Table 12: ``"edge_iou (value)"``, ``"edge_iou (chance)"``."""
    return f"{metric} ({kind})"


# --------------------------------------------------------------------------- Tables 8, 9, 11 (transfer)

SOURCE, TARGET, SIZE = "source", "target", "size"
FP_VIEW = "FP"  # Table 8: the target's FP model
WHITEBOX_TARGET_SUFFIX = " (white-box)"  # Table 8: a source's patches on its own FP model
FP32_VIEW = "32 (FP)"  # Tables 9 and 11
DYNAMIC_8BIT_VIEW = "dynamic 8-bit"


def ptq_view(bits: int) -> str:
    """Table 9: the FP model post-training-quantized at ``bits``: ``"PTQ 4"``."""
    return f"PTQ {bits}"


# --------------------------------------------------------------------------- Tables 4, 5, 2 (defended models)

STANDARD_QAT, PBAT, DWQ, TRIQDEF, QADT_R = "Standard QAT", "PBAT", "DWQ", "TriQDef", "QADT-R"
#: Row label of each defense run (``results/models/defenses/<run>.pt``), in table order.
DEFENSE_LABELS = {"qat": STANDARD_QAT, "pbat": PBAT, "dwq": DWQ, "qadt_r": QADT_R, "triqdef": TRIQDEF}

PATCH_SET = "patch_set"
#: Table 2's views, in column order.
T2_32BIT, T2_8BIT, T2_PTQ8 = bit_view(32), bit_view(8), "8-bit PTQ of 32-bit weights"
#: Table 2's patch sets (label -> set of the ``patches`` stage), in row order.
#: "seen (FP-made)" is the seen set, the size of the sets made at 4 and 2 bits: Table 2's claim compares those two
#: (issue 30, item 3: equal sizes; the paper's 10×10 'seen' row is larger than our sets made at 4 / 2 bits).
T2_PATCH_SETS = {"seen (FP-made)": "seen", "seen 8x8": "unseen_size8", "seen 10x10": "unseen_size10",
                 "unseen (made at 4 bits)": "unseen_bits4", "unseen (made at 2 bits)": "unseen_bits2"}
T2_SEEN_SAME_SIZE, T2_UNSEEN_2BIT = "seen (FP-made)", "unseen (made at 2 bits)"

# --------------------------------------------------------------------------- Table 17 (training cost)

METHOD = "method"
T17_IMAGES_PER_S, T17_ITER_MS, T17_PEAK_MB = "images/s", "iter (ms)", "peak saved-for-backward (MB)"
T17_TIME_RATIO, T17_MEM_RATIO = "time ×", "mem ×"

# --------------------------------------------------------------------------- Table 18 (deployed inference cost)

T18_BITS, T18_SAME_STRUCTURE, T18_HOOKS = "bits", "same modules/params/buffers", "hooks"
T18_TRIQDEF_MS, T18_QAT_MS, T18_RATIO, T18_RATIO_RANGE = "TriQDef ms", "QAT ms", "ratio (median)", "ratio p10–p90"

# --------------------------------------------------------------------------- Table 7 (ablation)

NO_FDP, NO_GPDP, FULL = "w/o FDP", "w/o GPDP", "Full TriQDef"
FULL_SLOW = "Full TriQDef, GPDP every step, full-resolution maps"
#: Row label of each TriQDef run of Table 7 (``full``: the ``defense`` stage's; others: ``ablations.variants``).
T7_LABELS = {"no_fdp": NO_FDP, "no_gpdp": NO_GPDP, "full": FULL, "every_step_full_res": FULL_SLOW}

# --------------------------------------------------------------------------- Table 13 (sensitivity)

VARIANT, SETTING = "variant", "setting"
CLEAN, ADV, ASR = "Clean", "Adv", "ASR"
T13_METRICS = (CLEAN, ADV, ASR)
