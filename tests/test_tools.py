"""The helper scripts in tools/ that are not pipeline stages: stage_times.py and qat_probe.py's argument checks,
dag_run.py (the stage runner of the GPU machine) and set_profile.py."""

import argparse
import importlib.util
import json
import subprocess
import sys

import pytest
import torch

from triqdef.paths import project_root

ROOT = project_root()


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stage_times(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "stage_times.py"), *args], capture_output=True,
                          text=True, cwd=ROOT)


def _committed_metrics_unchanged() -> bool:
    diff = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "results/metrics"],
                          capture_output=True, text=True)
    return diff.returncode == 0 and not diff.stdout.strip()


@pytest.mark.skipif(not _committed_metrics_unchanged(), reason="results/metrics differ from HEAD's (a run in progress)")
def test_stage_times_against_head_finds_every_ratio_one_and_the_factor_one():
    out = _stage_times("--against", "HEAD", "--speed-from", "train_qat")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["total_min_here"] == summary["total_min_there"] > 0
    assert summary["speed_factor"] == 1.0 and summary["total_min_here_at_their_speed"] == summary["total_min_here"]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "stage" not in line]
    assert rows and all(r.endswith("| 1.00 |") or r.endswith("| – |") for r in rows)  # – : a skipped (0 s) stage


@pytest.mark.parametrize("args,message", [
    (["--against", "no-such-revision"], "git revision 'no-such-revision' not found"),
    (["--against", "HEAD", "--speed-from", "no_such_stage"], "--speed-from stage(s) no_such_stage not recorded"),
])
def test_stage_times_refuses_bad_input_in_one_line(args, message):
    out = _stage_times(*args)
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr


def test_qat_probe_test_images_accepts_a_count_or_all_and_refuses_the_rest():
    probe = _load("qat_probe")
    assert probe._count_or_all("all") == probe.CIFAR10_TEST_IMAGES == 10_000
    assert probe._count_or_all("2000") == 2000
    for bad in ("0", "10001", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a number of test images in 1..10000"):
            probe._count_or_all(bad)


def _dag_run(tmp_path, stages: list[dict], *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(stages))
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "dag_run.py"), "run", str(plan), "--log",
                          str(tmp_path / "log"), *args], capture_output=True, text=True, cwd=tmp_path)
    record = tmp_path / "log" / "dag_run.json"
    return out, (json.loads(record.read_text())["stages"] if record.exists() else {})


def test_dag_run_runs_upstream_first_in_parallel_and_skips_below_a_failure(tmp_path):
    stages = [{"name": "a", "cmd": "sleep 1; echo a >> order", "after": []},
              {"name": "b", "cmd": "sleep 1; echo b >> order", "after": []},
              {"name": "c", "cmd": "echo c >> order", "after": ["a", "b"]},
              {"name": "bad", "cmd": "exit 3", "after": ["a"]},
              {"name": "below@bad", "cmd": "echo never >> order", "after": ["bad"]}]
    out, state = _dag_run(tmp_path, stages, "--jobs", "2")
    assert out.returncode == 1, out.stdout
    assert (tmp_path / "order").read_text().split()[-1] == "c" and "never" not in (tmp_path / "order").read_text()
    assert state["a"]["start_s"] < 0.5 and state["b"]["start_s"] < 0.5  # side by side
    assert state["c"]["start_s"] >= max(state["a"]["end_s"], state["b"]["end_s"])
    assert (state["bad"]["state"], state["bad"]["rc"], state["below@bad"]["state"]) == ("failed", 3, "skipped")
    assert (tmp_path / "log" / "below-bad.log").exists() is False and (tmp_path / "log" / "a.log").exists()


def test_dag_run_stops_at_the_deadline_and_keeps_the_record(tmp_path):
    stages = [{"name": "fast", "cmd": "true", "after": []},
              {"name": "slow", "cmd": "sleep 30", "after": []},
              {"name": "later", "cmd": "true", "after": ["slow"]}]
    out, state = _dag_run(tmp_path, stages, "--deadline", "2")
    assert out.returncode == 1
    assert [state[n]["state"] for n in ("fast", "slow", "later")] == ["done", "killed", "not started"]
    assert state["slow"]["end_s"] < 15


def test_dag_run_refuses_a_broken_plan_in_one_line(tmp_path):
    out, _ = _dag_run(tmp_path, [{"name": "a", "cmd": "true", "after": ["missing"]}])
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "upstream ['missing'] not in the plan" in out.stderr


def test_dag_run_removes_a_stage_outputs_before_it_runs_as_dvc_repro_does(tmp_path):
    """A leftover checkpoint of an earlier run is gone when the stage starts (no stage resumes from it)."""
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_text("old")
    (tmp_path / "table.csv").write_text("old")
    stages = [{"name": "train", "cmd": "ls ckpt > seen 2>&1 || echo gone > seen; test ! -e table.csv && mkdir ckpt",
               "after": [], "outs": ["ckpt", "table.csv"]}]
    out, state = _dag_run(tmp_path, stages)
    assert out.returncode == 0, out.stdout
    assert (tmp_path / "seen").read_text().strip() == "gone" and (tmp_path / "ckpt").is_dir()
    out, _ = _dag_run(tmp_path, [{"name": "a", "cmd": "true", "after": [], "outs": ["../elsewhere"]}])
    assert out.returncode == 1 and "output '../elsewhere' is not a path inside the project" in out.stderr


def test_dag_run_plan_lists_dvc_outputs():
    """The plan's outputs are DVC's (the stage that trains the FP model owns its checkpoint folder)."""
    pytest.importorskip("dvc")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "dag_run.py"), "plan", "/dev/stdout"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    plan = {e["name"]: e for e in json.loads(out.stdout[:out.stdout.rindex("]") + 1])}
    assert "results/metrics/train_fp.json" in plan["train_fp"]["outs"] and plan["train_fp"]["after"] == ["prepare"]


def test_set_profile_sets_the_profile_merges_an_overlay_and_refuses_unknown_sections(tmp_path):
    (tmp_path / "params.yaml").write_text("base:\n  profile: cpu   # a comment\n  seed: 0\n"
                                          "train_fp:\n  cpu: {epochs: 30}\n  gpu: {epochs: 30, lr: 0.2}\n")
    script = str(ROOT / "tools" / "set_profile.py")
    assert subprocess.run([sys.executable, script, "gpu"], cwd=tmp_path).returncode == 0
    assert "profile: gpu   # a comment" in (tmp_path / "params.yaml").read_text()
    (tmp_path / "o.yaml").write_text("train_fp: {gpu: {epochs: 2, batch_size: 32}}\n")
    assert subprocess.run([sys.executable, script, "gpu", "o.yaml"], cwd=tmp_path).returncode == 0
    import yaml
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["train_fp"]["gpu"] == {"epochs": 2, "lr": 0.2,
                                                                                       "batch_size": 32}
    (tmp_path / "bad.yaml").write_text("nosuch: {gpu: {x: 1}}\n")
    out = subprocess.run([sys.executable, script, "gpu", "bad.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip() == "set_profile: error: overlay key nosuch is not in params.yaml"


@pytest.mark.parametrize(("args", "message"), [(["--steps", "0"], "--steps 0: expected at least 1"),
                                               (["--device", "cuda"], "no CUDA device is visible")])
def test_bench_stacked_refuses_bad_input_in_one_line(args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_stacked.py"), *args], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip().endswith(message) and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [(["--rounds", "0"], "--rounds 0: expected at least 1"),
                                               (["--eval-batches", "0"], "batch sizes: expected positive integers")])
def test_bench_batches_refuses_bad_input_in_one_line(args, message):
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_batches.py"), *args], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip().endswith(message) and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("stages,expected", [
    (["a", "b@x", "s1", "report"],
     ["reference before a b@x", "repro a", "repro b@x", "reference after a b@x", "repro s1", "repro report"]),
    (["s1", "report"], ["repro s1", "repro report"]),                       # only log readers: no measurement
    (["s1", "a"], ["reference before s1 a", "repro s1", "repro a", "reference after s1 a"]),   # a reader mid-list
])
def test_run_stages_measures_the_reference_before_the_stages_that_read_its_log(tmp_path, stages, expected):
    """tools/run_stages.sh takes its 'after' reference measurement before the trailing stages that depend on
    results/bench/reference_log.jsonl (the summaries, report), so that the measurement does not leave them stale.
    dvc and triqdef are stand-ins that log their calls."""
    import os
    import shutil

    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "run_stages.sh", tmp_path / "tools" / "run_stages.sh")
    log_dep = "results/bench/reference_log.jsonl"
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  a: {cmd: x, deps: [lib]}\n  b: {matrix: {k: [x]}, cmd: x, deps: [lib]}\n"
        f"  s1: {{cmd: x, deps: [{log_dep}]}}\n  report:\n    cmd: x\n    deps:\n      - {log_dep}\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    (bin_dir / "dvc").write_text(f'#!/bin/bash\n[ "$1" = repro ] && echo "repro $3" >> {calls}\nexit 0\n')
    (bin_dir / "triqdef").write_text(f'#!/bin/bash\necho "reference ${{5#tools/run_stages.sh, }}" >> {calls}\n')
    (bin_dir / "python").symlink_to(sys.executable)
    for f in ("dvc", "triqdef"):
        (bin_dir / f).chmod(0o755)
    env = {**os.environ, "LOG": str(tmp_path / "progress.log")}
    env.pop("REFERENCE", None)
    done = subprocess.run(["bash", "tools/run_stages.sh", *stages], cwd=tmp_path, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines() == expected
