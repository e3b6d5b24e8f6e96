"""dvc.yaml against the code (tools/dvc_deps.py): every stage lists the files it imports and the params it declares;
DVC's own views (headline metrics, metadata beside them, curves) as the stages write them."""

import ast
import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dvc_deps", ROOT / "tools" / "dvc_deps.py")
dvc_deps = importlib.util.module_from_spec(_spec)
sys.modules["dvc_deps"] = dvc_deps  # dataclasses look their module up
_spec.loader.exec_module(dvc_deps)


@pytest.fixture(scope="module")
def checked():
    return dvc_deps.check()


def test_dvc_yaml_lists_each_stage_code_and_params(checked):
    problems, _ = checked
    assert not problems, "dvc.yaml and the code disagree (fix with `python tools/dvc_deps.py --write`):\n" + "\n".join(problems)


def test_a_change_to_the_report_reruns_only_the_two_reports(checked):
    """REPORT.md's code re-runs stage report and the replica group's two summaries (which read the report's
    stage-time and Wilson helpers), each a few seconds; no training or attack stage."""
    _, codes = checked
    stages = dvc_deps.load_dvc_yaml()["stages"]
    direct, rerun = dvc_deps.affected("lib/triqdef/reporting/report.py", stages, codes)
    assert sorted(direct) == sorted(rerun) == ["length_summary", "report", "seed_summary"]
    direct, rerun = dvc_deps.affected("lib/triqdef/attacks/patches.py", stages, codes)
    assert {"patches", "motivation", "report"} <= set(rerun) and "train_fp" not in rerun


def test_stages_depend_on_their_own_profile_only():
    """Every stage lists base whole and, of each other section, its common and ${base.profile} keys: never a whole
    section (a change to the smoke or gpu values would then stale the cpu results)."""
    stages = dvc_deps.load_dvc_yaml()["stages"]
    for name in stages:
        keys = dvc_deps.listed_params(dvc_deps.stage_body(stages, name))
        assert "base" in keys, name
        assert all(k == "base" or k.endswith((".common", ".${base.profile}")) for k in keys), (name, keys)
    problems, _ = dvc_deps.check({"prepare": {**stages["prepare"], "params": ["base", "data"]}})
    assert "stage prepare: missing params key data.${base.profile} (section data is in triqdef.stages.prepare.PARAMS)" \
        in problems and any("extra params key data " in p for p in problems)


def test_dvc_fills_in_the_profile_key(tmp_path):
    """DVC itself, on a one-stage pipeline listed as dvc_deps writes it: a change to another profile's values leaves the
    stage up to date, a change to its own profile's values or to common stales it."""
    import shutil
    import subprocess

    dvc = shutil.which("dvc")
    if dvc is None:
        pytest.skip("dvc not installed")
    import yaml

    raw = {"base": {"profile": "cpu"}, "sec": {"common": {"a": 1}, "cpu": {"b": 2}, "smoke": {"b": 3}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    stage = {"cmd": "echo ok > out.txt", "params": dvc_deps.params_keys(("base", "sec"), raw), "outs": ["out.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": stage}}))

    def run(*args):
        return subprocess.run([dvc, *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    run("init", "--no-scm", "-q")
    run("repro", "-q")

    def stale_after(section, profile, value):
        raw[section][profile]["b" if profile != "common" else "a"] = value
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        return "up to date" not in run("status")

    assert not stale_after("sec", "smoke", 4)
    assert stale_after("sec", "cpu", 5)
    run("repro", "-q")
    assert stale_after("sec", "common", 6)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    lib = tmp_path / "lib"
    for name, text in files.items():
        path = lib / "triqdef" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return lib


def test_closure_follows_every_kind_of_import(tmp_path):
    lib = _package(tmp_path, {
        "__init__.py": "",
        "entry.py": "import os\n\ndef run():\n    from triqdef.sub import leaf\n    return leaf\n",
        "sub/__init__.py": '"""docstring only"""\n',
        "sub/leaf.py": "from . import sibling\nfrom .deep.mod import f\n",
        "sub/sibling.py": "from pathlib import Path\nSTYLE = Path(__file__).resolve().parent / 'style.txt'\n",
        "sub/style.txt": "x",
        "sub/deep/__init__.py": "",
        "sub/deep/mod.py": "def f():\n    import triqdef.late\n",
        "late.py": "",
        "unused.py": "",
    })
    got = dvc_deps.closure([(ast.parse("from triqdef import entry"), "__main__", False)], lib).files
    rel = sorted(p.relative_to(lib / "triqdef").as_posix() for p in got)
    assert rel == ["__init__.py", "entry.py", "late.py", "sub/__init__.py", "sub/deep/__init__.py", "sub/deep/mod.py",
                   "sub/leaf.py", "sub/sibling.py", "sub/style.txt"]


def test_declared_params_are_read_from_the_source(tmp_path):
    lib = _package(tmp_path, {"__init__.py": "", "stage.py": "import torch\nPARAMS = ('base', 'data')\n", "none.py": ""})
    assert dvc_deps.declared_params("triqdef.stage", lib) == ("base", "data")
    assert dvc_deps.declared_params("triqdef.none", lib) is None


def test_metrics_hold_the_headline_and_metadata_the_rest(tmp_path, monkeypatch):
    from triqdef.meta import write_curve, write_metrics
    from triqdef.reporting.report import stage_times

    monkeypatch.setenv("TRIQDEF_OUTPUT", str(tmp_path))
    write_metrics("defenses/pbat", {"acc_32bit": 0.5, "stage_wall_time_s": 61.0}, {"settings": {"rho": 0.5}})
    write_metrics("train_qat_all_layers", {"skipped": True}, {"skipped": True, "reason": "time budget"})
    results = tmp_path / "results"
    assert json.loads((results / "metrics" / "defenses" / "pbat.json").read_text()) == {"acc_32bit": 0.5, "stage_wall_time_s": 61.0}
    assert json.loads((results / "metadata" / "defenses" / "pbat.json").read_text()) == {"settings": {"rho": 0.5}}
    t = stage_times(results).set_index("stage")
    assert t.loc["defenses/pbat", "seconds"] == 61.0
    assert t.loc["train_qat_all_layers", "note"] == "skipped: time budget"

    path = write_curve("defenses/triqdef", [{"step": 0, "loss": 2.5, "gpdp": 0.1}, {"step": 1, "loss": 2.0}])
    assert path == results / "plots" / "defenses" / "triqdef.csv"
    with path.open() as f:
        assert list(csv.DictReader(f)) == [{"step": "0", "loss": "2.5", "gpdp": "0.1"}, {"step": "1", "loss": "2.0", "gpdp": ""}]


_store_spec = importlib.util.spec_from_file_location("dvc_store", ROOT / "tools" / "dvc_store.py")
dvc_store = importlib.util.module_from_spec(_store_spec)
_store_spec.loader.exec_module(dvc_store)


def test_every_locked_output_is_in_the_repository_store():
    """A fresh clone's `dvc pull` finds every cached output dvc.lock names in dvc-store/ (no missing `dvc push`)."""
    assert dvc_store.locked_outputs(), "dvc.lock names no cached output"
    gaps = dvc_store.missing()
    assert not gaps, "dvc-store/ lacks (run `dvc push`, commit dvc-store/):\n" + "\n".join(gaps)


def test_the_store_check_finds_a_missing_push(tmp_path):
    """The check can fail: a store without one of the locked objects is reported."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(dvc_store.STORE, store)
    stage, path, md5 = dvc_store.locked_outputs()[0]
    dvc_store.store_path(md5, store).unlink()
    assert any(path in gap for gap in dvc_store.missing(store))


def test_the_store_holds_the_exact_cifar10_mirror(tmp_path):
    """data.dvc tracks the JPEG mirror the results were made from, and dvc-store/ holds that very archive (its sha256
    is the one `triqdef data fetch` checks), so a clone anywhere pulls the same pixels; a store without it is caught."""
    import hashlib
    import shutil

    sys.path.insert(0, str(ROOT / "lib"))
    from triqdef.data.cifar import JPEG_MIRROR_SHA256

    tracked = dvc_store.tracked_files()
    assert [(f, p) for f, p, _ in tracked] == [("data.dvc", "data/cifar10-jpeg.tar.gz")]
    obj = dvc_store.store_path(tracked[0][2])
    assert obj.is_file(), "dvc-store/ lacks the CIFAR-10 archive: `dvc push data.dvc`, commit dvc-store/"
    assert hashlib.sha256(obj.read_bytes()).hexdigest() == JPEG_MIRROR_SHA256
    store = tmp_path / "store"
    shutil.copytree(dvc_store.STORE, store)
    dvc_store.store_path(tracked[0][2], store).unlink()
    assert any("data/cifar10-jpeg.tar.gz" in gap for gap in dvc_store.missing(store))


REPLICA_STAGES = ("defense_seed", "variant_seed", "defense_length", "seed_eval", "variant_eval", "length_eval",
                  "seed_summary", "length_summary")


def test_no_core_stage_and_not_the_report_depends_on_the_replica_group():
    """Issue 30: the seed, variant and training-length replicas are a group apart. Every output of theirs lies under
    results/replicas/, and no dependency of another stage is, or contains, such a path, so `dvc repro report`
    runs the core alone (before, the report's results/metrics dependency pulled every replica in)."""
    stages = dvc_deps.load_dvc_yaml()["stages"]

    def paths(entries):
        return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]

    replica_outs = [o for name in REPLICA_STAGES
                    for o in paths(stages[name].get("outs")) + paths(stages[name].get("metrics"))]
    assert replica_outs and all(o.startswith("results/replicas/") for o in replica_outs), replica_outs
    for name, body in stages.items():
        if name in REPLICA_STAGES:
            continue
        for dep in paths(body.get("deps")):
            assert not dep.startswith("results/replicas") and not "results/replicas/".startswith(dep.rstrip("/") + "/"), \
                f"stage {name} depends on {dep}, which holds the replica group's outputs"


def test_git_tracked_outputs_of_matrix_stages_are_not_asked_of_the_store():
    """`cache: false` outputs of a `matrix` stage (the replica group: ${item.method}, ${item.seed}, lists read from
    params.yaml) are git's, not dvc-store's: every combination is known uncached, the cached checkpoint is not."""
    uncached = dvc_store._uncached_paths()
    assert "results/replicas/metrics/seeds/qat-seed1_eval.json" in uncached
    assert "results/replicas/metadata/length/pbat-x0.25.json" in uncached
    assert "results/replicas/models/seeds/qat-seed1.pt" not in uncached
