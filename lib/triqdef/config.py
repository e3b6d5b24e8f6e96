"""Parameters: ``params.yaml`` with a shared ``base`` section and one section per stage.

Every stage section holds one sub-mapping per profile (``smoke``, ``cpu``,
``paper``); :func:`load_params` returns the sections resolved for the active
profile, which is ``base.profile`` unless overridden (CLI ``--profile`` or the
``TRIQDEF_PROFILE`` environment variable). ``dvc exp run -S train_fp.cpu.epochs=3``
therefore changes one profile's value only.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from .errors import TriqdefError
from .paths import project_root

PROFILES = ("smoke", "cpu", "paper")


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise TriqdefError(f"params file {path} not found: expected a YAML file with a 'base' section")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise TriqdefError(f"params file {path} is not valid YAML{where}") from None
    if not isinstance(raw, dict) or "base" not in raw:
        raise TriqdefError(f"params file {path} has no 'base' section: expected base: {{profile, seed, device}}")
    return raw


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise TriqdefError(f"unknown profile {profile!r}: expected one of {', '.join(PROFILES)}")
    return profile


def load_params(path: str | Path | None = None, profile: str | None = None) -> dict[str, Any]:
    """Read ``params.yaml`` and resolve every section for one profile.

    Returns ``{"base": {...}, "<section>": {...resolved...}, "_raw": {...}}``
    where ``base.profile`` is the profile actually used.
    """
    path = Path(path) if path else project_root() / "params.yaml"
    raw = _read_yaml(path)
    profile = profile or os.environ.get("TRIQDEF_PROFILE") or raw["base"].get("profile", "cpu")
    check_profile(profile)
    out: dict[str, Any] = {"base": dict(raw["base"], profile=profile), "_raw": copy.deepcopy(raw)}
    for name, section in raw.items():
        if name == "base":
            continue
        if isinstance(section, dict) and any(p in section for p in PROFILES):
            if profile not in section:
                raise TriqdefError(f"params section {name!r} has no {profile!r} entry: expected keys {', '.join(PROFILES)}")
            resolved = dict(section.get("common", {}))
            resolved.update(section[profile] or {})
            out[name] = resolved
        else:
            out[name] = section
    return out


def section(params: dict, name: str) -> dict:
    if name not in params:
        raise TriqdefError(f"params has no section {name!r}")
    return params[name]


def require_positive_int(value: Any, name: str, allow_zero: bool = False) -> int:
    """Validate a size/count parameter: an integer > 0 (or >= 0)."""
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        want = "an integer >= 0" if allow_zero else "a positive integer"
        raise TriqdefError(f"parameter {name} = {value!r}: expected {want}")
    return value


def require_fraction(value: Any, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
        raise TriqdefError(f"parameter {name} = {value!r}: expected a number in [0, 1]")
    return float(value)
