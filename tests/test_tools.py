"""The helper scripts in tools/ that are not pipeline stages: stage_times.py and qat_probe.py's argument checks."""

import argparse
import importlib.util
import json
import subprocess
import sys

import pytest

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
