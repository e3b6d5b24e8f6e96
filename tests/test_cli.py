"""Bad input through the CLI: one line 'triqdef: error: ...', exit status 2, no traceback, nothing overwritten."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_process(args, tmp_path, env_extra=None):
    """``python -m triqdef ARGS`` as its own process (the allocator's re-exec included): what a user runs."""
    env = dict(os.environ, TRIQDEF_OUTPUT=str(tmp_path / "out"), TRIQDEF_OFFLINE="1", TQDM_DISABLE="1",
               PYTHONPATH=str(ROOT / "lib"), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "triqdef", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def run(args, tmp_path, env_extra=None):
    """:func:`triqdef.cli.main` on ``args`` in this process, with the environment :func:`run_process` gives it, its
    stdout and stderr captured: the same exit status and messages without two interpreter starts per call (the
    process-level path, ``entry`` and the allocator's re-exec, is checked by the tests that call :func:`run_process`).
    An exception that escapes ``main`` (a traceback for a user) fails the test as it is."""
    import contextlib
    import io
    from types import SimpleNamespace

    from triqdef.cli import main

    env = dict(TRIQDEF_OUTPUT=str(tmp_path / "out"), TRIQDEF_OFFLINE="1", TQDM_DISABLE="1", **(env_extra or {}))
    saved, cwd = {k: os.environ.get(k) for k in env}, os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.update(env)
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:   # argparse: --help (0) and usage errors (2)
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return SimpleNamespace(returncode=code or 0, stdout=out.getvalue(), stderr=err.getvalue())


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("[triqdef")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("triqdef: error:") and "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def params_with(tmp_path, **overrides):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in overrides.items():
        node = params
        *head, last = dotted.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return str(path)


def test_help_lists_the_stages(tmp_path):
    out = run_process(["--help"], tmp_path)
    assert out.returncode == 0
    for cmd in ("data", "train", "evaluate"):
        assert cmd in out.stdout


def test_unknown_profile(tmp_path):
    # as its own process: one line on stderr, exit status 2, no traceback, through ``entry`` and the re-exec
    assert_one_line_error(run_process(["--profile", "laptop", "data", "info"], tmp_path), "unknown profile 'laptop'", "smoke")


def test_missing_and_invalid_params_file(tmp_path):
    assert_one_line_error(run(["--params", str(tmp_path / "nope.yaml"), "data", "info"], tmp_path), "nope.yaml", "not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed\n")
    assert_one_line_error(run(["--params", str(bad), "data", "info"], tmp_path), "not valid YAML")


@pytest.mark.parametrize("key,value,needle", [
    ("data.smoke.train_size", -5, "train_size"),
    ("data.smoke.test_size", 0, "test_size"),
    ("model.common.name", "resnet21", "model.smoke.name = 'resnet21'"),
    ("quant.common.bits", [32, 7, 1], "bit-width 1"),
    ("train_fp.smoke.epochs", 0, "train_fp.smoke.epochs"),
])
def test_bad_parameters(tmp_path, key, value, needle):
    p = params_with(tmp_path, **{key: value})
    cmd = ["train", "qat"] if key.startswith("quant") else ["train", "fp"]
    assert_one_line_error(run(["--params", p, "--profile", "smoke", *cmd], tmp_path, {"TRIQDEF_DATA_DIR": str(tmp_path / "nodata")}
                              if key.startswith("model") else None), needle)


@pytest.mark.parametrize("cmd", [["train", "fp"], ["train", "qat"], ["train", "defense", "qat"]])
def test_compile_on_a_device_that_cannot_capture_is_refused(tmp_path, cmd):
    """Issue 31: base.compile (a step captured in a CUDA graph) on the CPU: one line before any data is read."""
    p = params_with(tmp_path, **{"base.compile": True, "base.device": "cpu"})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", *cmd], tmp_path,
                              {"TRIQDEF_DATA_DIR": str(tmp_path / "nodata")}), "base.compile = true", "device is cpu")
    assert not (tmp_path / "out").exists() and not (tmp_path / "nodata").exists()


def test_missing_data_and_missing_archive(tmp_path):
    env = {"TRIQDEF_DATA_DIR": str(tmp_path / "nodata")}
    assert_one_line_error(run(["--profile", "smoke", "data", "info"], tmp_path, env), "triqdef data fetch")
    env["CIFAR10_ARCHIVE"] = str(tmp_path / "missing.tar.gz")
    assert_one_line_error(run(["data", "fetch"], tmp_path, env), "missing.tar.gz")
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b\x08not really gzip")
    env["CIFAR10_ARCHIVE"] = str(corrupt)
    assert_one_line_error(run(["data", "fetch"], tmp_path, env), "corrupt.tar.gz", "not the JPEG mirror")
    # data.source official, offline: one line naming the source and the fix, never another source in its place
    del env["CIFAR10_ARCHIVE"]
    official = params_with(tmp_path, **{"data.common.source": "official"})
    assert_one_line_error(run(["--params", official, "data", "fetch"], tmp_path, env),
                          "data.source = official", "TRIQDEF_OFFLINE=1", "CIFAR10_ARCHIVE", "data.source: mirror")
    bad = params_with(tmp_path, **{"data.common.source": "web"})
    assert_one_line_error(run(["--params", bad, "data", "fetch"], tmp_path, env), "data.cpu.source = 'web'")
    assert not (tmp_path / "nodata").exists()


def test_bad_checkpoints_leave_earlier_results_intact(tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(run(["evaluate", str(tmp_path / "missing.pt")], tmp_path), "missing.pt", "not found")
    # a corrupt FP checkpoint where train_qat expects one; an earlier QAT metrics file must survive
    fp = out / "results" / "models" / "fp" / "resnet20.pt"
    fp.parent.mkdir(parents=True)
    fp.write_bytes(b"PK\x03\x04 truncated")
    metrics = out / "results" / "metrics" / "train_qat.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"earlier": True}))
    sample_env = {"TRIQDEF_DATA_DIR": str(tmp_path / "data")}
    assert run(["--quiet", "--profile", "smoke", "data", "fetch"], tmp_path, sample_env).returncode == 0
    assert_one_line_error(run(["--profile", "smoke", "train", "qat"], tmp_path, sample_env), "resnet20.pt", "corrupt")
    assert json.loads(metrics.read_text()) == {"earlier": True}
    # a valid checkpoint of the wrong kind
    torch.save({"format": "triqdef-checkpoint/1", "meta": {"kind": "qat", "model": "resnet20"}, "model": {}}, fp)
    assert_one_line_error(run(["--profile", "smoke", "train", "qat"], tmp_path, sample_env), "expected 'fp'")


def test_patches_and_bench_refuse_bad_input(tmp_path):
    p = params_with(tmp_path, **{"patches.common.attacks": ["lavan", "pgd"]})
    env = {"TRIQDEF_DATA_DIR": str(tmp_path / "data")}
    assert run(["--quiet", "--profile", "smoke", "data", "fetch"], tmp_path, env).returncode == 0
    # nothing upstream yet: the first missing input is named (the attack-strength record, then the FP checkpoint)
    assert_one_line_error(run(["--profile", "smoke", "patches", "make"], tmp_path, env), "matched_size.json", "not found")
    assert_one_line_error(run(["--profile", "smoke", "patches", "strength"], tmp_path, env), "resnet20.pt", "not found")
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "patches", "make"], tmp_path, env), "'pgd'")
    assert_one_line_error(run(["bench", "throughput", "--batch-size", "0"], tmp_path), "batch_size")
    assert_one_line_error(run(["bench", "throughput", "--bits", "32", "7", "1"], tmp_path), "bit-width 1")
    assert_one_line_error(run(["--profile", "smoke", "bench", "train-step", "--repeat", "0"], tmp_path), "--repeat")
    # issue 31: was silently the profile's batch (``args.batch_size or ...``)
    assert_one_line_error(run(["--profile", "smoke", "bench", "train-step", "--batch-size", "0"], tmp_path), "--batch-size = 0")
    assert_one_line_error(run(["bench", "reference", "--steps", "0", "--log", str(tmp_path / "log.jsonl")], tmp_path),
                          "--steps = 0")
    assert not (tmp_path / "log.jsonl").exists()


def test_bench_reference_appends_one_measurement_to_the_log(tmp_path):
    """Issue 31: the machine's unit of time, measured and logged, read back by REPORT's "Pipeline time"."""
    from triqdef.eval.reference import REFERENCE, read_log

    log = tmp_path / "reference_log.jsonl"
    for note in ("first", "second"):
        proc = run(["--quiet", "bench", "reference", "--steps", "2", "--warmup", "0", "--device", "cpu", "--note", note,
                    "--log", str(log)], tmp_path)
        assert proc.returncode == 0, proc.stderr
    entries = read_log(log)
    assert [e["note"] for e in entries] == ["first", "second"]
    assert all(e["reference"] == REFERENCE and e["median_ms"] > 0 and e["steps"] == 2 for e in entries)


@pytest.mark.parametrize("command,key,value,needle", [
    ("make", "patches.common.size", 30, "patches.smoke.size = 30"),
    ("strength", "patches.common.method", "lbfgs", "'lbfgs'"),
    ("make", "patches.common.loss", {"lavan": "hinge", "gap": "ce"}, "'hinge'"),
    ("make", "patches.smoke.pool_per_attack", 0, "pool_per_attack = 0"),
    ("strength", "attack_strength.smoke.targets", 0, "targets = 0"),
    ("strength", "attack_strength.smoke.sizes", [4, 40], "sizes = 40"),
])
def test_patch_commands_refuse_bad_optimiser_settings_and_write_nothing(tmp_path, command, key, value, needle):
    """A patch that does not fit, K = 0, an unknown optimiser or loss: one line, before anything is read or written."""
    p = params_with(tmp_path, **{key: value})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "patches", command], tmp_path), needle)
    assert not (tmp_path / "out").exists()


def test_repeated_train_step_runs_average_every_step():
    from triqdef.cli import _repeated_train_step

    def one(tq, qat, peak):
        return {"triqdef_ms": tq, "qat_ms": qat, "triqdef_ms_median": tq, "qat_ms_median": qat, "time_ratio": round(tq / qat, 3),
                "triqdef_peak_mb": peak, "qat_peak_mb": 100.0, "mem_ratio": peak / 100.0, "steps": 20,
                "triqdef_phases_ms": {"ms_fdp_pass": tq / 10, "ms_main_pass": tq / 2, "ms_gpdp": 0.0}}

    out = _repeated_train_step([one(900.0, 600.0, 102.0), one(1100.0, 700.0, 103.0), one(1000.0, 650.0, 102.0)])
    assert out["triqdef_ms"] == 1000.0 and out["qat_ms"] == 650.0 and out["time_ratio"] == round(1000 / 650, 3)
    assert out["time_ratio_min"] == 1.5 and out["time_ratio_max"] == round(1100 / 700, 3) and out["repeat"] == 3
    assert out["triqdef_peak_mb"] == 103.0 and out["mem_ratio"] == 1.03 and len(out["runs"]) == 3
    assert out["triqdef_phases_ms"]["ms_main_pass"] == 500.0 and "triqdef_ms_median" not in out


def test_defense_commands_refuse_bad_input(tmp_path):
    assert_one_line_error(run(["--profile", "smoke", "train", "defense", "fgsm"], tmp_path), "unknown defense 'fgsm'", "triqdef")
    assert_one_line_error(run(["--profile", "smoke", "train", "defense", "triqdef", "--variant", "nope"], tmp_path),
                          "unknown variant 'nope'", "no_fdp")
    p = params_with(tmp_path, **{"ablations.smoke.run": ["no_fdp", "typo"]})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "ablations"], tmp_path), "ablations.run", "'typo'")
    p = params_with(tmp_path, **{"triqdef.common.rho": 2})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "bench", "train-step", "--steps", "1"], tmp_path),
                          "triqdef.smoke.rho")
    p = params_with(tmp_path, **{"triqdef.common.bact": [{"bits": [32, 8], "share": 0.5}]})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "defense", "triqdef"], tmp_path), "shares sum")
    p = params_with(tmp_path, **{"defenses.smoke.init": "imagenet"})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "defense", "pbat"], tmp_path),
                          "defenses.smoke.init", "'imagenet'", "'fp', 'qat'")


def test_seed_replicas_refuse_bad_seed_lists_with_one_line_and_write_nothing(tmp_path):
    """Issue 30: a seed list with duplicates, a seed outside the list (or base.seed, the core run) and a method
    outside seeds.methods end with one line, before any data or checkpoint is read."""
    p = params_with(tmp_path, **{"seeds.common.training_seeds": [1, 2, 1]})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "seed", "pbat", "1"], tmp_path),
                          "seeds.training_seeds = [1, 2, 1]", "[1] appear more than once")
    p = params_with(tmp_path, **{"seeds.common.methods": ["qat", "qat"]})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "seed", "qat", "1"], tmp_path),
                          "seeds.methods", "more than once")
    p = params_with(tmp_path, **{"seeds.common.methods": ["fgsm"]})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "seed", "qat", "1"], tmp_path),
                          "seeds.methods has 'fgsm'")
    assert_one_line_error(run(["--profile", "smoke", "train", "seed", "pbat", "0"], tmp_path),
                          "that is base.seed")
    assert_one_line_error(run(["--profile", "smoke", "train", "seed", "pbat", "7"], tmp_path),
                          "training seed 7 for pbat", "seeds.training_seeds [1, 2]")
    assert_one_line_error(run(["--profile", "smoke", "train", "seed", "dwq", "1"], tmp_path),
                          "seeds.methods ['qat', 'pbat', 'triqdef']")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.pt"))


def test_training_length_runs_refuse_bad_factor_lists_with_one_line(tmp_path):
    p = params_with(tmp_path, **{"training_length.common.factors": [0.25, 4, 4]})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "length", "pbat", "4"], tmp_path),
                          "training_length.factors = [0.25, 4.0, 4.0]", "more than once")
    p = params_with(tmp_path, **{"training_length.common.factors": [1]})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "length", "pbat", "1"], tmp_path),
                          "training_length.factors has 1.0", "the core run")
    assert_one_line_error(run(["--profile", "smoke", "train", "length", "qat", "4"], tmp_path),
                          "training length x4 for qat", "training_length.methods ['triqdef', 'pbat']")


def test_defense_needs_its_start_checkpoint(tmp_path):
    env = {"TRIQDEF_DATA_DIR": str(tmp_path / "data")}
    assert run(["--quiet", "--profile", "smoke", "data", "fetch"], tmp_path, env).returncode == 0
    for init, folder in (("qat", "qat"), ("fp", "fp")):
        p = params_with(tmp_path, **{"defenses.smoke.init": init})
        assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "defense", "dwq"], tmp_path, env),
                              f"{folder}/resnet20.pt", "not found")


def test_clean_outcomes_needs_the_defense_checkpoints_and_writes_nothing(tmp_path):
    env = {"TRIQDEF_DATA_DIR": str(tmp_path / "data")}
    assert run(["--quiet", "--profile", "smoke", "data", "fetch"], tmp_path, env).returncode == 0
    assert_one_line_error(run(["--profile", "smoke", "clean-outcomes"], tmp_path, env), "defenses", "not found")
    assert not (tmp_path / "out" / "results" / "outcomes" / "clean.parquet").exists()
    assert not list((tmp_path / "out").rglob("clean*"))


def test_cross_arch_refuses_unknown_model(tmp_path):
    p = params_with(tmp_path, **{"cross_arch.common.model": "resnet7"})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", "train", "cross-arch"], tmp_path), "cross_arch.smoke.model", "resnet7")


def test_train_qat_refuses_a_non_boolean_every_layer_variant(tmp_path):
    p = params_with(tmp_path, **{"train_qat.cpu.every_layer_variant": "maybe"})
    assert_one_line_error(run(["--params", str(p), "--profile", "cpu", "train", "qat"], tmp_path),
                          "train_qat.cpu.every_layer_variant", "expected true or false")


def test_pipeline_processes_start_with_the_tuned_allocator():
    """The triqdef command re-executes itself once with glibc's allocator tunables; python -m triqdef.allocator runs
    any command with them; TRIQDEF_MALLOC=default turns both off (triqdef.allocator)."""
    import os
    import subprocess
    import sys

    from triqdef.allocator import TUNABLES

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "TRIQDEF_MALLOC")}
    if not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
        pytest.skip("glibc's tunables only")
    show = "import os; print(os.environ.get('GLIBC_TUNABLES'))"
    reexec = f"from triqdef.allocator import reexec_tuned; reexec_tuned(['-c', {show!r}]); print('not re-executed')"
    out = subprocess.run([sys.executable, "-c", reexec], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == TUNABLES
    out = subprocess.run([sys.executable, "-m", "triqdef.allocator", sys.executable, "-c", show], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == TUNABLES
    off = dict(env, TRIQDEF_MALLOC="default")
    out = subprocess.run([sys.executable, "-c", reexec], env=off, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "not re-executed"


def test_bench_train_step_defaults_to_what_the_profile_trains(tmp_path):
    """Issue 13: the bench's defaults are the profile's training batch, bit-widths and range estimators, so that
    its ratio is the one the pipeline pays (not a batch and bit set of its own)."""
    p = params_with(tmp_path, **{"defenses.smoke.batch_size": 24, "quant.common.bits": [32, 8, 2],
                                 "quant.common.activation_range": {8: "max", 2: "mse"}})
    proc = run(["--params", p, "--profile", "smoke", "--quiet", "bench", "train-step", "--steps", "1", "--warmup", "0"],
               tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["batch_size"] == 24 and out["bits"] == [32, 8, 2]
    proc = run(["--params", p, "--profile", "smoke", "--quiet", "bench", "train-step", "--steps", "1", "--warmup", "0",
                "--batch-size", "16", "--bits", "32", "2"], tmp_path)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["batch_size"] == 16 and out["bits"] == [32, 2]


def test_bench_models_use_the_range_estimator_given():
    """The bench times models with the profile's activation range estimators (issue 13), not the MSE clip everywhere."""
    from triqdef import quant
    from triqdef.eval.bench import _bench_models

    x = torch.rand(4, 3, 32, 32)
    models = _bench_models("resnet20", (32, 8, 2), x, 0, ["a"], "cpu", {8: "max", 2: "mse"})
    by_bits = {q.bits: q.range_estimator for q in quant.activation_quantizers(models["a"])}
    assert by_bits == {8: "max", 2: "mse"}


@pytest.mark.parametrize("key,value,command,needle", [
    ("stq.smoke.attacks", {"deepfool": {}}, ["train", "stq"], "attack 'deepfool'"),
    ("stq.common.distill_temperature", 0, ["train", "stq"], "distill_temperature"),
    ("stq.common.distill_temperature", -50, ["train", "stq"], "distill_temperature"),
    ("appendix.common.dpr_area_budget", 1.5, ["report"], "dpr_area_budget"),
    ("appendix.common.dpr_area_budget", 0.0, ["report"], "dpr_area_budget"),
    ("patch_attack.smoke.max_queries", -1, ["report"], "max_queries"),
    ("qadt_r.common.sigma", -0.1, ["train", "defense", "qadt_r"], "sigma"),
])
def test_issue14_parameters_refuse_bad_values_with_one_line(tmp_path, key, value, command, needle):
    """An unknown ART attack, a DPR area budget outside (0, 1), a negative PatchAttack query budget, a distillation
    temperature <= 0, a negative GIR noise: one 'triqdef: error:' line naming the parameter, before any work."""
    p = params_with(tmp_path, **{key: value})
    assert_one_line_error(run(["--params", p, "--profile", "smoke", *command], tmp_path), needle)
    assert not (tmp_path / "out" / "results" / "models").exists()


def test_cross_bit_source_lists_are_refused_in_one_line_before_anything_is_read(tmp_path):
    """Issue 30: an empty list of source bit-widths, a repeat, or a bit-width the models lack (not in quant.bits)
    ends with one line, before any model or data is loaded; nothing is written. The same for a replica's
    evaluation (stage seed_eval)."""
    cases = [([], "cross_bit.source_bits is empty"), ([32, 32], "expected distinct bit-widths"),
             ([32, 3], "bit-width 3 is not one of quant.bits")]
    for bits, needle in cases:
        p = params_with(tmp_path, **{"cross_bit.smoke": {"source_bits": bits, "patches": 2, "steps": 2, "test_images": 64}})
        assert_one_line_error(run(["--params", p, "--profile", "smoke", "patches", "cross-bit"], tmp_path), needle)
        assert_one_line_error(run(["--params", p, "--profile", "smoke", "replicas", "seed", "qat", "1"], tmp_path), needle)
    assert not (tmp_path / "out").exists() or not any(f.is_file() for f in (tmp_path / "out").rglob("*"))
