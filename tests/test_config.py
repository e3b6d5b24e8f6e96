import dataclasses
"""The typed config: every profile of params.yaml loads; each bad value is refused with its full key."""

import typing
from pathlib import Path

import pytest
import yaml

from triqdef import quant
from triqdef.attacks.universal import ATTACKS, SHAPED
from triqdef.config import (PROFILES, SECTIONS, Config, CrossArchParams, ModelParams, QuantParams, TrainParams,
                            as_dict, load_config, override)
from triqdef.errors import TriqdefError
from triqdef.models import MODEL_NAMES
from triqdef.paths import project_root

PARAMS = project_root() / "params.yaml"


def _write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(PARAMS.read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_of_params_yaml_loads(profile):
    cfg = load_config(PARAMS, profile)
    assert isinstance(cfg, Config) and cfg.base.profile == profile
    assert set(SECTIONS) == set(yaml.safe_load(PARAMS.read_text()))
    assert cfg.triqdef.taps_of(cfg.model.name)  # the one list of FDP taps covers the main model ...
    assert cfg.triqdef.taps_of(cfg.cross_arch.model)  # ... and the cross-architecture one


def test_values_are_the_yaml_values_resolved_for_the_profile():
    raw = yaml.safe_load(PARAMS.read_text())
    cfg = load_config(PARAMS, "cpu")
    for key, value in {**raw["train_fp"]["common"], **raw["train_fp"]["cpu"]}.items():
        got = getattr(cfg.train_fp, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, key
    assert as_dict(cfg.patches) == {**raw["patches"]["common"], **raw["patches"]["cpu"]}


def test_literal_choices_match_the_library():
    """The config's choices are the library's lists (models, range estimators, attacks)."""
    with pytest.raises(TriqdefError, match="expected one of " + ", ".join(MODEL_NAMES)):
        ModelParams(name="resnet99")
    with pytest.raises(TriqdefError, match="expected one of " + ", ".join(MODEL_NAMES)):
        CrossArchParams(model="resnet99", bits=(32,), patches_per_attack=1, min_accuracy=0.5, train_fp={}, train_qat={})
    one, per_bits = typing.get_args(typing.get_type_hints(QuantParams)["activation_range"])
    assert set(typing.get_args(one)) == set(quant.RANGE_ESTIMATORS)
    assert set(typing.get_args(typing.get_args(per_bits)[1])) == set(quant.RANGE_ESTIMATORS)
    from triqdef.attacks.objectives import LOSSES
    from triqdef.attacks.universal import METHODS
    from triqdef.config import PatchParams

    hints = typing.get_type_hints(PatchParams)
    item = typing.get_args(hints["attacks"])[0]
    assert set(typing.get_args(item)) == set(ATTACKS) - set(SHAPED)  # DPR's sets are notebook 04's (stage appendix)
    assert set(typing.get_args(hints["method"])) == set(METHODS)
    from triqdef.config import ART_ATTACKS
    from triqdef.eval.art_suite import ATTACKS as ART_SUITE

    assert ART_ATTACKS == ART_SUITE  # notebook 05's attack names, checked by the config without importing the suite
    with pytest.raises(TriqdefError, match="expected an attack .* one of " + ", ".join(LOSSES)):
        dataclasses.replace(load_config(None, "smoke").patches, loss={"lavan": "nope", "gap": "ce"})


@pytest.mark.parametrize("edit,message", [
    (lambda r: r["train_fp"]["cpu"].update(lr=-1), r"parameter train_fp.cpu.lr = -1: expected a number > 0"),
    (lambda r: r["train_fp"]["cpu"].update(schedule="cosine"), r"train_fp.cpu.schedule = 'cosine': expected one of 'step', 'onecycle'"),
    (lambda r: r["patches"]["cpu"].update(steps=0), r"patches.cpu.steps = 0"),
    (lambda r: r["patches"]["common"].update(attacks=["lavan", "dpr"]), r"patches.cpu.attacks"),
    (lambda r: r["patches"]["common"].update(size=30), r"parameter patches.cpu.size = 30: a patch that does not fit"),
    (lambda r: r["patches"]["common"].update(size=20, border=0), r"size = 20: GAP's transformation canvas"),
    (lambda r: r["patches"]["common"].update(method="lbfgs"), r"patches.cpu.method = 'lbfgs': expected one of 'sign', 'adam'"),
    (lambda r: r["patches"]["common"].update(loss={"lavan": "hinge", "gap": "ce"}), r"patches.cpu.loss.lavan = .hinge."),
    (lambda r: r["patches"]["common"].update(loss={"lavan": "ce"}), r"loss has no entry for attack 'gap'"),
    (lambda r: r["patches"]["cpu"].update(pool_per_attack=0), r"patches.cpu.pool_per_attack = 0"),
    (lambda r: r["data"]["cpu"].pop("test_size"), r"parameter data.cpu.test_size is missing"),
    (lambda r: r["data"]["cpu"].update(test_sise=3), r"parameter data.cpu.test_sise is unknown"),
    (lambda r: r["quant"]["common"].update(bits=[32, 8, 1]), r"quant.cpu: unknown bit-width 1"),
    (lambda r: r["model"]["common"].update(name="resnet99"), r"model.cpu.name = 'resnet99'"),
    (lambda r: r["ablations"]["cpu"].update(run=["no_fdp", "nope"]), r"ablations.run names 'nope'"),
    (lambda r: r["triqdef"]["common"].update(rho=1.5), r"triqdef.cpu.rho = 1.5: expected a number <= 1"),
    (lambda r: r["base"].update(seed=-2), r"parameter base.seed = -2"),
    (lambda r: r["train_qat"]["cpu"].update(independent_share=0), r"train_qat.cpu.independent_share = 0: expected a number > 0"),
    (lambda r: r["train_qat"]["cpu"].update(independent_share=1.5), r"train_qat.cpu.independent_share = 1.5: expected a number <= 1"),
    (lambda r: r["seeds"]["common"].update(variant_seeds=[0, 3]), r"seeds.variant_seeds = \[0, 3\]: expected one or more of base.seed 0"),
    (lambda r: r["seeds"]["common"].update(variant_seeds=[]), r"seeds.variant_seeds = \[\]: expected one or more"),
    (lambda r: r["seeds"]["common"].update(variant_seeds=[0, 1, 1, 2]), r"seeds.variant_seeds = \[0, 1, 1, 2\]: \[1\] appear"),
    (lambda r: r["seeds"]["common"].update(variants=["nope"]), r"seeds.variants names 'nope'"),
    (lambda r: r["patch_attack"]["cpu"].update(bits=[]), r"patch_attack.bits = \[\]: expected distinct"),
    (lambda r: r["patch_attack"]["cpu"].update(bits=[32, 8]), r"patch_attack.bits = \[32, 8\].*robustness.bits"),
    (lambda r: r.pop("dwq"), r"no section 'dwq'"),
    (lambda r: r["dwq"].pop("cpu"), r"params section 'dwq' has no 'cpu' entry"),
])
def test_bad_values_are_refused_with_their_key(tmp_path, edit, message):
    path = _write(tmp_path, edit)
    with pytest.raises(TriqdefError, match=message) as exc:
        load_config(path, "cpu")
    assert "\n" not in str(exc.value)


def test_a_stage_cannot_read_a_section_it_does_not_declare():
    cfg = load_config(PARAMS, "cpu", sections=("data", "train_fp"))
    assert cfg.train_fp.batch_size == 128 and cfg.base.seed == 0
    with pytest.raises(TriqdefError, match="params section 'patches' is read by a stage that does not declare it"):
        cfg.patches


def test_override_checks_its_values_as_params_yaml_would():
    cfg = load_config(PARAMS, "cpu")
    assert override(cfg.train_fp, {"epochs": 3.5}, "cross_arch.train_fp").epochs == 3.5
    with pytest.raises(TriqdefError, match="cross_arch.train_fp.batch_size = 0"):
        override(cfg.train_fp, {"batch_size": 0}, "cross_arch.train_fp")
    with pytest.raises(TriqdefError, match="cross_arch.train_fp.epoch is unknown"):
        override(cfg.train_fp, {"epoch": 3}, "cross_arch.train_fp")


def test_the_independent_qat_model_trains_for_its_share_of_the_run():
    from triqdef.stages.train_qat import shortened

    cfg = load_config(PARAMS, "cpu")
    assert cfg.train_qat.steps == 800 and cfg.train_qat.independent_share == 0.5
    half = shortened(cfg.train_qat, cfg.train_qat.independent_share)
    assert (half.steps, half.lr, half.schedule) == (400, cfg.train_qat.lr, cfg.train_qat.schedule)
    assert shortened(dataclasses.replace(cfg.train_qat, steps=3), 0.1).steps == 1   # never a run of no steps
    by_epochs = load_config(PARAMS, "paper").train_qat
    assert by_epochs.steps is None and shortened(by_epochs, 0.25).epochs == by_epochs.epochs * 0.25


def test_train_params_need_epochs_or_steps():
    cfg = load_config(PARAMS, "cpu")
    values = {k: v for k, v in as_dict(cfg.train_fp).items() if k not in ("epochs", "steps")}
    with pytest.raises(TriqdefError, match="epochs or steps"):
        from triqdef.config import build

        build(TrainParams, values, "train_fp.cpu")


def test_a_range_estimator_per_bit_width_must_cover_the_bit_widths(tmp_path):
    ok = load_config(_write(tmp_path, lambda r: r["quant"]["common"].update(
        activation_range={8: "max", 5: "max", 4: "max", 2: "mse"})), "cpu")
    assert ok.quant.activation_range == {"8": "max", "5": "max", "4": "max", "2": "mse"}
    with pytest.raises(TriqdefError, match="one estimator for each quantized bit-width"):
        load_config(_write(tmp_path, lambda r: r["quant"]["common"].update(activation_range={8: "max"})), "cpu")
    with pytest.raises(TriqdefError, match="activation_range"):
        load_config(_write(tmp_path, lambda r: r["quant"]["common"].update(activation_range={8: "minmax"})), "cpu")


def test_cross_arch_bits_use_the_per_bit_width_estimators():
    from triqdef.stages.cross_arch import cross_arch_params

    cfg = load_config(None, "cpu")
    second = cross_arch_params(cfg)
    assert second.quant.bits == tuple(cfg.cross_arch.bits) and second.quant.activation_range == cfg.quant.activation_range
