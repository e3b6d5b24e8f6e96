"""Set params.yaml's ``base.profile`` (in place, comments kept) and merge an overlay of params into it, key by key.

    python tools/set_profile.py PROFILE [OVERLAY.yaml]

Used on a copy of the repository: by tools/pipeline_copy.sh (smoke, gpu) and tools/gpu_device.sh. An overlay changes
sizes, not settings: a section and its profile must exist in params.yaml; keys inside a profile may be new. With an
overlay, params.yaml is rewritten by PyYAML (comments dropped).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml


def merge(into: dict, new: dict, where: str = "", depth: int = 0) -> None:
    for key, value in new.items():
        if key not in into and depth < 2:  # a section and its profile must exist; keys inside a profile may be new
            sys.exit(f"set_profile: error: overlay key {where}{key} is not in params.yaml")
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value, f"{where}{key}.", depth + 1)
        else:
            into[key] = value


def main() -> None:
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python tools/set_profile.py PROFILE [OVERLAY.yaml]")
    profile, overlay = sys.argv[1], (sys.argv[2] if len(sys.argv) == 3 else "")
    p = Path("params.yaml")
    text, n = re.subn(r"(?m)^(base:\n(?:[ \t]+.*\n|\s*\n)*?[ \t]+profile:[ \t]*)\w+", rf"\g<1>{profile}",
                      p.read_text(), count=1)
    if n != 1 or yaml.safe_load(text)["base"]["profile"] != profile:
        sys.exit("set_profile: error: params.yaml: base.profile not found")
    known = set(yaml.safe_load(text)["train_fp"]) - {"common"}
    if profile not in known:
        sys.exit(f"set_profile: error: profile {profile!r}: expected one of {', '.join(sorted(known))}")
    if overlay:
        if not Path(overlay).is_file():
            sys.exit(f"set_profile: error: overlay {overlay} not found: expected a YAML file of params")
        params = yaml.safe_load(text)
        merge(params, yaml.safe_load(Path(overlay).read_text()) or {})
        text = yaml.safe_dump(params, sort_keys=False)
    p.write_text(text)


if __name__ == "__main__":
    main()
