"""The DVC pipeline's stages run without DVC, in parallel where the stage graph allows: for a machine that has no DVC
and no network (the GPU machine of tools/gpu_device.sh), where independent stages share one accelerator.

    python tools/dag_run.py plan PLAN.json                 # here, with DVC: every stage's command and upstream stages
    python tools/dag_run.py run PLAN.json --jobs 8 --deadline 480 --log DIR   # there: run them

``plan`` reads the stage graph from DVC itself (``Repo.index.graph``), in the profile that params.yaml names, so the
commands are DVC's own, with ``${...}`` resolved, and so are its outputs. ``run`` starts every stage whose upstream
stages have finished, at most ``--jobs`` at a time, in the plan's (topological) order, each after removing its
outputs as ``dvc repro`` does (so no stage resumes from an earlier run's checkpoint); a stage whose upstream stage
failed is skipped.
At ``--deadline`` seconds it stops the running stages (the whole process group) and starts no more, so that what
has finished can still be collected. Each stage's output goes to DIR/<stage>.log; DIR/dag_run.json records each
stage's start, end (seconds from the run's start), exit status and state, rewritten at every event.
Nothing here decides what is up to date: ``run`` runs every stage of the plan, as ``dvc repro -f`` would.
On the 2-core CPU it does not pay (README "Time": a stage left alone on one thread wastes the other core).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def plan(path: Path) -> None:
    try:
        import networkx as nx
        from dvc.repo import Repo
    except ImportError as err:
        sys.exit(f"dag_run: error: 'plan' needs DVC ({err}): run it in the project's venv")

    repo = Repo(".")
    graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
    stages = [s for s in reversed(list(nx.topological_sort(graph))) if s.cmd]
    runnable = {s.addressing for s in stages}
    entries = [{"name": s.addressing,
                "cmd": s.cmd if isinstance(s.cmd, str) else " && ".join(s.cmd),
                "after": sorted(d.addressing for d in graph.successors(s) if d.addressing in runnable),
                "outs": sorted(os.path.relpath(o.fs_path, repo.root_dir) for o in s.outs)}
               for s in stages]
    path.write_text(json.dumps(entries, indent=1) + "\n")
    print(f"{path}: {len(entries)} stages")


def _load(path: Path) -> list[dict]:
    try:
        entries = json.loads(path.read_text())
        names = {e["name"] for e in entries}
        for e in entries:
            missing = set(e["after"]) - names
            if missing or not e["cmd"]:
                raise ValueError(f"stage {e['name']}: upstream {sorted(missing)} not in the plan or no command")
            outside = [o for o in e.get("outs", []) if Path(o).is_absolute() or ".." in Path(o).parts]
            if outside:
                raise ValueError(f"stage {e['name']}: output {outside[0]!r} is not a path inside the project")
    except (OSError, ValueError, KeyError, TypeError) as err:
        sys.exit(f"dag_run: error: {path}: {err}: expected a plan written by 'python tools/dag_run.py plan'")
    return entries


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal a stage's whole process group (its shell and what the shell started); gone already is fine."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _remove_outputs(outs: list[str]) -> None:
    """A stage's outputs removed before it runs, as ``dvc repro`` removes them (DVC's cache keeps its copies)."""
    for o in map(Path, outs):
        if o.is_dir() and not o.is_symlink():
            shutil.rmtree(o)
        elif o.exists() or o.is_symlink():
            o.unlink()


def run(path: Path, jobs: int, deadline: float, log: Path) -> int:
    entries = _load(path)
    log.mkdir(parents=True, exist_ok=True)
    state = {e["name"]: {"state": "waiting"} for e in entries}
    running: dict[str, subprocess.Popen] = {}
    t0 = time.monotonic()

    def now() -> float:
        return round(time.monotonic() - t0, 1)

    def record(name: str, message: str) -> None:
        (log / "dag_run.json").write_text(json.dumps({"plan": str(path), "jobs": jobs, "deadline_s": deadline,
                                                      "stages": state}, indent=1) + "\n")
        done = sum(s["state"] == "done" for s in state.values())
        print(f"[{now():7.1f} s] {done}/{len(entries)} done, {len(running)} running | {name}: {message}", flush=True)

    while True:
        for name, proc in list(running.items()):
            rc = proc.poll()
            if rc is not None:
                del running[name]
                state[name].update(end_s=now(), rc=rc, state="done" if rc == 0 else "failed")
                state[name]["seconds"] = round(state[name]["end_s"] - state[name]["start_s"], 1)
                record(name, f"{state[name]['state']} in {state[name]['seconds']} s (rc {rc})")
        for e in entries:
            s = state[e["name"]]
            if s["state"] == "waiting" and any(state[a]["state"] in ("failed", "skipped", "killed") for a in e["after"]):
                s["state"] = "skipped"
                record(e["name"], "skipped: an upstream stage did not finish")
        if now() >= deadline:
            for name, proc in running.items():
                _signal_group(proc, signal.SIGTERM)
            for name, proc in running.items():
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
                state[name].update(end_s=now(), state="killed")
                record(name, f"killed at the deadline ({deadline:g} s)")
            running.clear()
            for s in state.values():
                if s["state"] == "waiting":
                    s["state"] = "not started"
            record("-", "deadline reached")
            break
        for e in entries:
            if len(running) >= jobs:
                break
            s = state[e["name"]]
            if s["state"] == "waiting" and all(state[a]["state"] == "done" for a in e["after"]):
                _remove_outputs(e.get("outs", []))
                out = open(log / f"{e['name'].replace('@', '-')}.log", "w")
                running[e["name"]] = subprocess.Popen(e["cmd"], shell=True, executable="/bin/bash", stdout=out,
                                                      stderr=subprocess.STDOUT, start_new_session=True)
                s.update(state="running", start_s=now())
                record(e["name"], "started")
        if not running:
            break
        time.sleep(0.5)
    failed = [n for n, s in state.items() if s["state"] != "done"]
    record("-", f"finished in {now()} s; not done: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("plan", help="write the stage plan (needs DVC)")
    p.add_argument("out", type=Path)
    r = sub.add_parser("run", help="run a plan's stages (no DVC needed)")
    r.add_argument("plan", type=Path)
    r.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="stages at a time (default: CPU count)")
    r.add_argument("--deadline", type=float, default=float("inf"), help="seconds, then stop (default: none)")
    r.add_argument("--log", type=Path, default=Path("results/dag_run"), help="folder for the stage logs")
    args = ap.parse_args()
    if args.verb == "plan":
        plan(args.out)
    else:
        if args.jobs < 1:
            sys.exit(f"dag_run: error: --jobs {args.jobs}: expected at least 1")
        sys.exit(run(args.plan, args.jobs, args.deadline, args.log))


if __name__ == "__main__":
    main()
