"""``triqdef`` command line: the entry points that the DVC stages call.

    triqdef [--params FILE] [--profile smoke|cpu|paper] [--quiet] COMMAND ...

Errors in the user's input end with one line ``triqdef: error: ...`` and exit
status 2; no traceback.

``torchrun --nproc-per-node N -m triqdef train fp|qat`` trains data-parallel
(:mod:`triqdef.training.distributed`); rank 0 alone prints, logs and writes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from triqdef.errors import TriqdefError

log = logging.getLogger("triqdef")


def _cmd_data_fetch(args, cfg) -> int:
    from triqdef.data import cifar as data

    src = data.fetch(source=cfg.data.source, allow_download=not args.no_download, progress=not args.quiet)
    print(json.dumps(src, indent=2))
    return 0


def _cmd_data_info(args, cfg) -> int:
    from triqdef.stages.common import data_record, load_data

    print(json.dumps(data_record(load_data(cfg)), indent=2))
    return 0


def _cmd_data_prepare(args, cfg) -> int:
    from triqdef.stages import prepare

    rec = prepare.run_prepare(cfg.only(prepare.PARAMS))
    print(json.dumps({k: rec[k] for k in ("source", "sizes")}))
    return 0


def _writer() -> bool:
    """Whether this process prints and writes: the only one, or rank 0 under ``torchrun`` (``RANK``)."""
    return os.environ.get("RANK", "0") == "0"


def _say(obj) -> None:
    """Print ``obj`` as JSON, from rank 0 only under ``torchrun``."""
    if _writer():
        print(json.dumps(obj))


def _cmd_train_fp(args, cfg) -> int:
    from triqdef.stages import train_fp
    from triqdef.training.distributed import command_session

    with command_session(cfg, "train_fp"):
        m = train_fp.run_train_fp(cfg.only(train_fp.PARAMS), progress=not args.quiet)
    _say({k: m[k] for k in ("model", "test_accuracy", "n_test", "wall_time_s")})
    return 0


def _cmd_train_qat(args, cfg) -> int:
    from triqdef.meta import write_metrics
    from triqdef.stages import train_qat
    from triqdef.training.distributed import command_session

    cfg = cfg.only(train_qat.PARAMS)
    choice, why = args.all_layers, "--all-layers no was given"
    if choice is None:  # from params: train_qat.<profile>.every_layer_variant (also train the every-layer-at-b model)
        choice = "both" if cfg.train_qat.every_layer_variant else "no"
        why = "train_qat.every_layer_variant is false in this profile (time budget)"
    variants = [False, True] if choice == "both" else [choice == "yes"]
    with command_session(cfg, "train_qat"):
        for all_layers in variants:
            m = train_qat.run_train_qat(cfg, all_layers=all_layers, progress=not args.quiet)
            _say({k: m[k] for k in ("model", "first_last_bits", "test_accuracy", "n_test", "wall_time_s")})
        if choice != "yes" and cfg.train_qat.independent_model:
            m = train_qat.run_train_qat(cfg, progress=not args.quiet, independent=True)
            _say({k: m[k] for k in ("model", "test_accuracy", "n_test", "wall_time_s")})
    if not _writer():
        return 0
    if choice == "no":  # the stage declares this file: say why it holds no model
        write_metrics("train_qat_all_layers", {"skipped": True},
                      {"skipped": True, "profile": cfg.base.profile,
                       "reason": f"{why}; run 'triqdef train qat --all-layers yes' for the every-layer-at-b model"})
    if choice != "yes" and not cfg.train_qat.independent_model:  # the unseen-bit-width patches' source model
        write_metrics("train_qat_independent", {"skipped": True},
                          {"skipped": True, "profile": cfg.base.profile,
                           "reason": "train_qat.independent_model is false in this profile: the unseen-bit-width "
                                     "patches are made on the shared standard-QAT model"})
    return 0


def _cmd_patches_make(args, cfg) -> int:
    from triqdef.stages import patches

    m = patches.run_make_patches(cfg.only(patches.PARAMS), progress=not args.quiet)
    print(json.dumps({k: m[k] for k in ("n_patches", "wall_time_s", "seconds_per_patch_mean")}))
    return 0


def _cmd_patches_strength(args, cfg) -> int:
    from triqdef.stages import attack_strength

    m = attack_strength.run_attack_strength(cfg.only(attack_strength.PARAMS), progress=not args.quiet)
    print(json.dumps({k: m[k] for k in ("matched_size", "threshold", "lavan_fp_asr", "stage_wall_time_s")}))
    return 0


def _cmd_evaluate(args, cfg) -> int:
    from triqdef import quant
    from triqdef.stages.common import load_data
    from triqdef.eval.accuracy import accuracy
    from triqdef.training.loop import model_from_checkpoint

    model, meta = model_from_checkpoint(args.checkpoint)
    splits = load_data(cfg)
    bits = args.bits or (meta.get("bits") or [None])
    out = {}
    for b in bits:
        if b is not None:
            quant.check_bits(b)
        out[str(b or 32)] = accuracy(model, splits.test.images, splits.test.labels, bits=b)
    print(json.dumps({"checkpoint": args.checkpoint, "n_test": int(splits.test.labels.numel()), "accuracy": out}))
    return 0


def _cmd_bench_throughput(args, cfg) -> int:
    from triqdef.eval.bench import train_throughput
    from triqdef.meta import provenance, write_json

    res = train_throughput(args.model, args.bits, args.single_bits, args.batch_size, args.steps, args.warmup)
    res["provenance"] = provenance(cfg)
    if args.out:
        write_json(args.out, res)
    print(json.dumps(res))
    return 0


def _cmd_bench_reference(args, cfg) -> int:
    from triqdef.eval import reference
    from triqdef.training.loop import resolve_device

    device = resolve_device(args.device or cfg.base.device)
    entry = reference.measure(args.steps, args.warmup, device)
    if args.note:
        entry["note"] = args.note
    if args.log != "none":
        reference.append_log(entry, args.log)
    print(json.dumps(entry))
    return 0


def _cmd_train_cross_arch(args, cfg) -> int:
    from triqdef.stages import cross_arch

    m = cross_arch.run_cross_arch(cfg.only(cross_arch.PARAMS), progress=not args.quiet)
    print(json.dumps({"model": m["model"], "fp_test_accuracy": m["fp"]["test_accuracy"],
                      "qat_test_accuracy": m["qat"]["test_accuracy"], "n_patches": m["n_patches"],
                      "stage_wall_time_s": m["stage_wall_time_s"]}))
    return 0


def _cmd_train_stq(args, cfg) -> int:
    from triqdef.stages import stq_train

    m = stq_train.run_stq_train(cfg.only(stq_train.PARAMS), progress=not args.quiet)
    print(json.dumps({"runs": {r: {k: v[k] for k in ("test_accuracy", "memory_kb")} for r, v in m["runs"].items()},
                      "stage_wall_time_s": m["stage_wall_time_s"]}))
    return 0


def _repeated_train_step(runs: list[dict]) -> dict:
    """Several ``bench train-step`` runs as one result: the ms are the means over every measured step of every run
    (so ``time_ratio`` is the ratio of those means), peak memory the largest; ``runs`` keeps each run's own figures."""
    import statistics

    out = dict(runs[0])
    for k in ("triqdef_ms", "qat_ms"):
        out[k] = round(statistics.mean(r[k] for r in runs), 1)  # every run has the same number of steps
    for k in ("triqdef_peak_mb", "qat_peak_mb"):
        out[k] = max(r[k] for r in runs)
    out["triqdef_phases_ms"] = {k: round(statistics.mean(r["triqdef_phases_ms"][k] for r in runs), 1)
                                for k in runs[0]["triqdef_phases_ms"]}
    out["time_ratio"] = round(out["triqdef_ms"] / out["qat_ms"], 3)
    out["mem_ratio"] = round(out["triqdef_peak_mb"] / out["qat_peak_mb"], 3)
    ratios = [r["time_ratio"] for r in runs]
    out.update(repeat=len(runs), time_ratio_min=min(ratios), time_ratio_max=max(ratios))
    out["runs"] = [{k: r[k] for k in ("triqdef_ms", "qat_ms", "time_ratio", "mem_ratio", "triqdef_phases_ms")} for r in runs]
    for k in ("triqdef_ms_median", "qat_ms_median"):
        out.pop(k, None)
    return out


def _cmd_bench_train_step(args, cfg) -> int:
    from triqdef.eval.bench import train_step_benchmark
    from triqdef.config import require_positive_int
    from triqdef.defenses.steps import triqdef_settings
    from triqdef.meta import provenance, write_json

    settings = triqdef_settings(cfg.triqdef, args.model, gpdp_sub_batch=args.gpdp_sub_batch, gpdp_every=args.gpdp_every,
                                downsample=args.downsample,
                                gpdp_joint=None if args.gpdp_joint is None else args.gpdp_joint == "yes")
    require_positive_int(args.repeat, "--repeat")
    # defaults: what the profile's defenses train with (defenses.batch_size, quant.bits, quant.activation_range)
    bits = args.bits or list(cfg.quant.bits)
    batch_size = cfg.defenses.batch_size if args.batch_size is None else require_positive_int(args.batch_size, "--batch-size")
    runs = [train_step_benchmark(settings, args.model, bits, batch_size, args.steps, args.warmup,
                                 device=cfg.base.device, range_estimator=cfg.quant.activation_range)
            for _ in range(args.repeat)]
    res = runs[0] if len(runs) == 1 else _repeated_train_step(runs)
    res["provenance"] = provenance(cfg)
    if args.out:
        write_json(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "provenance"}))
    return 0


def _print_run(m: dict) -> None:
    """One trained run's headline (stage ``defense``'s metrics), as a JSON line."""
    print(json.dumps({k: m[k] for k in ("run", "test_accuracy", "n_test", "wall_time_s", "ms_per_step")}))


def _cmd_train_ablations(args, cfg) -> int:
    from triqdef.stages import ablations

    for m in ablations.run_ablations(cfg.only(ablations.PARAMS), progress=not args.quiet):
        _print_run(m)
    return 0


def _cmd_train_defense(args, cfg) -> int:
    from triqdef.stages import defense

    cfg = cfg.only(defense.PARAMS + (("ablations",) if args.variant else ()))  # a variant: Tables 7 / 13's overrides
    for method in args.methods:
        m = defense.run_defense(cfg, method, args.variant, progress=not args.quiet)
        _print_run(m)
    return 0


def _cmd_train_seed(args, cfg) -> int:
    from triqdef.stages import defense_seed

    m = defense_seed.run_seed(cfg.only(defense_seed.PARAMS), args.method, args.seed, progress=not args.quiet)
    _print_run(m)
    return 0


def _cmd_train_variant(args, cfg) -> int:
    from triqdef.stages import variant_seed

    m = variant_seed.run_variant_seed(cfg.only(variant_seed.PARAMS), args.variant, args.seed, progress=not args.quiet)
    _print_run(m)
    return 0


def _cmd_train_length(args, cfg) -> int:
    from triqdef.stages import defense_length

    m = defense_length.run_length(cfg.only(defense_length.PARAMS), args.method, args.factor, progress=not args.quiet)
    _print_run(m)
    return 0


def _cmd_replicas_seed(args, cfg) -> int:
    from triqdef.stages import seed_eval

    m = seed_eval.run_seed_eval(cfg.only(seed_eval.PARAMS), args.method, args.seed, progress=not args.quiet)
    print(json.dumps(m))
    return 0


def _cmd_replicas_variant(args, cfg) -> int:
    from triqdef.stages import variant_eval

    m = variant_eval.run_variant_eval(cfg.only(variant_eval.PARAMS), args.variant, args.seed, progress=not args.quiet)
    print(json.dumps(m))
    return 0


def _cmd_replicas_length(args, cfg) -> int:
    from triqdef.stages import length_eval

    m = length_eval.run_length_eval(cfg.only(length_eval.PARAMS), args.method, args.factor, progress=not args.quiet)
    print(json.dumps(m))
    return 0


def _cmd_replicas_seed_summary(args, cfg) -> int:
    from triqdef.stages import seed_summary

    m = seed_summary.run_seed_summary(cfg.only(seed_summary.PARAMS), progress=not args.quiet)
    print(json.dumps({"stage_wall_time_s": m["stage_wall_time_s"], "report": "results/replicas/SEEDS.md"}))
    return 0


def _cmd_replicas_length_summary(args, cfg) -> int:
    from triqdef.stages import length_summary

    m = length_summary.run_length_summary(cfg.only(length_summary.PARAMS), progress=not args.quiet)
    print(json.dumps({"stage_wall_time_s": m["stage_wall_time_s"], "report": "results/replicas/LENGTH.md"}))
    return 0


def _cmd_patches_cross_bit(args, cfg) -> int:
    from triqdef.stages import cross_bit

    print(json.dumps(cross_bit.run_cross_bit(cfg.only(cross_bit.PARAMS), progress=not args.quiet)))
    return 0


def _cmd_clean_outcomes(args, cfg) -> int:
    from triqdef.stages import clean_outcomes

    print(json.dumps(clean_outcomes.run_clean_outcomes(cfg.only(clean_outcomes.PARAMS), progress=not args.quiet)))
    return 0


def _cmd_deploy_int8(args, cfg) -> int:
    from triqdef.stages import int8

    print(json.dumps(int8.run_int8(cfg.only(int8.PARAMS), progress=not args.quiet)))
    return 0


def _cmd_report(args, cfg) -> int:
    from triqdef.stages import report

    print(report.run_report(cfg.only(report.PARAMS)))
    return 0


def _cmd_outcomes(args, cfg) -> int:
    """``triqdef outcomes rate|compare``: a rate or a comparison computed from an outcome store, no attack run."""
    from triqdef.eval import intervals, outcome_store

    if not 0 < args.level < 1:
        raise TriqdefError(f"--level {args.level}: expected a coverage level in (0, 1), e.g. 0.95")
    store = outcome_store.read(args.store)
    a = outcome_store.parse_selection(args.a, "--a")
    if args.action == "rate":
        ci = intervals.bootstrap_rate(outcome_store.outcomes(store, **a), args.n_boot, args.seed, "t", args.level)
        out = {"selection": a, "rate": 100 * ci.value, "low": 100 * ci.low, "high": 100 * ci.high,
               "n_images": ci.n_images, "n_patches": ci.n_patches, "method": ci.method, "level": args.level}
    else:
        if args.b is None:
            raise TriqdefError("outcomes compare needs --b: the second selection (e.g. --b model=PBAT,set=seen,bits=4)")
        b = outcome_store.parse_selection(args.b, "--b")
        pair_by = outcome_store.BY_TARGET if args.pair_by == "target" else outcome_store.SAME_PATCHES
        p = outcome_store.paired(store, a, b, pair_by=pair_by)
        ci = intervals.difference(p.a, p.b, args.n_boot, args.seed, scale=args.scale, method="t", level=args.level)
        out = {"a": a, "b": b, "rate_a": 100 * p.a.rate(), "rate_b": 100 * p.b.rate(), "scale": args.scale,
               "difference": 100 * ci.value, "low": 100 * ci.low, "high": 100 * ci.high,
               "n_common_images": p.n_common, "common_per_target": p.common_per_target, "n_patches": ci.n_patches,
               "pair_by": list(pair_by), "method": ci.method, "level": args.level}
    print(json.dumps(out, indent=2))
    return 0


def _replica_commands(subparsers, seed: tuple, variant: tuple, length: tuple) -> None:
    """The sub-commands ``seed METHOD K``, ``variant VARIANT K`` and ``length METHOD F`` of a replica command group
    (``train``, ``replicas``); ``seed``, ``variant`` and ``length``: (help, command function)."""
    se = subparsers.add_parser("seed", help=seed[0])
    se.add_argument("method", metavar="METHOD", help="one of seeds.methods")
    se.add_argument("seed", type=int, metavar="K", help="one of seeds.training_seeds")
    se.set_defaults(func=seed[1])
    va = subparsers.add_parser("variant", help=variant[0])
    va.add_argument("variant", metavar="VARIANT", help="one of seeds.variants (a TriQDef ablation variant)")
    va.add_argument("seed", type=int, metavar="K", help="one of seeds.variant_seeds (base.seed included)")
    va.set_defaults(func=variant[1])
    le = subparsers.add_parser("length", help=length[0])
    le.add_argument("method", metavar="METHOD", help="one of training_length.methods")
    le.add_argument("factor", type=float, metavar="F", help="one of training_length.factors (x the core run's steps)")
    le.set_defaults(func=length[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="triqdef", description="TriQDef reproduction: data, training and evaluation stages of the DVC pipeline.")
    p.add_argument("--params", default=None, help="params file (default: params.yaml at the project root)")
    p.add_argument("--profile", default=None, help="smoke | cpu | gpu | paper (default: base.profile in params, or $TRIQDEF_PROFILE)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    d = sub.add_parser("data", help="CIFAR-10: fetch a prepared copy, show the subsets")
    dsub = d.add_subparsers(dest="action", metavar="ACTION")
    dsub.required = True
    f = dsub.add_parser("fetch", help="prepare data/cifar10 from the source data.source names (mirror | official | sample)")
    f.add_argument("--no-download", action="store_true", help="data.source official: never download (CIFAR10_ARCHIVE only)")
    f.set_defaults(func=_cmd_data_fetch)
    dsub.add_parser("prepare", help="draw and record the subsets the params select (stage 'prepare')").set_defaults(func=_cmd_data_prepare)
    dsub.add_parser("info", help="the data source and subset sizes the params select").set_defaults(func=_cmd_data_info)

    t = sub.add_parser("train", help="train the FP model or the standard multi-bit QAT model")
    tsub = t.add_subparsers(dest="what", metavar="WHAT")
    tsub.required = True
    tsub.add_parser("fp", help="float model from scratch (params: train_fp)").set_defaults(func=_cmd_train_fp)
    q = tsub.add_parser("qat", help="standard multi-bit QAT from the FP checkpoint (params: train_qat, quant)")
    q.add_argument("--all-layers", choices=("no", "yes", "both"), default=None,
                   help="quantize the first/last layer at b too ('yes'), or train both variants "
                        "(default: 'both' if train_qat.every_layer_variant, else 'no')")
    q.set_defaults(func=_cmd_train_qat)
    de = tsub.add_parser("defense", help="a defense from the shared checkpoint: qat | pbat | dwq | triqdef | qadt_r (params: defenses, <method>)")
    de.add_argument("methods", nargs="+", metavar="METHOD", help="qat, pbat, dwq, triqdef or qadt_r")
    de.add_argument("--variant", default=None, help="a TriQDef ablation of ablations.variants (e.g. no_fdp)")
    de.set_defaults(func=_cmd_train_defense)
    _replica_commands(tsub, ("a training-seed replica of a defense (params: seeds; stage defense_seed): "
                             "results/replicas/models/seeds/<method>-seed<K>.pt", _cmd_train_seed),
                      ("a TriQDef ablation variant with a training seed (params: seeds; stage variant_seed): "
                       "results/replicas/models/variants/triqdef-<variant>-seed<K>.pt", _cmd_train_variant),
                      ("a training-length run of a defense (params: training_length; stage defense_length): "
                       "results/replicas/models/length/<method>-x<F>.pt", _cmd_train_length))
    tsub.add_parser("ablations", help="the TriQDef variants of ablations.run (Tables 7 and 13)").set_defaults(
        func=_cmd_train_ablations)
    tsub.add_parser("cross-arch", help="Table 8's second architecture: FP, multi-bit QAT and its patches (params: cross_arch)"
                    ).set_defaults(func=_cmd_train_cross_arch)
    tsub.add_parser("stq", help="notebook 05's tiny networks: FP, STQ, STQ-T1, STQ-T50 (teacher, student), STQ-JR "
                    "(params: stq, train_fp)").set_defaults(func=_cmd_train_stq)

    pa = sub.add_parser("patches", help="adversarial patch sets (LAVAN, GAP)")
    pasub = pa.add_subparsers(dest="what", metavar="WHAT")
    pasub.required = True
    pasub.add_parser("make", help="make the training pool, seen and unseen patch sets (params: patches)").set_defaults(
        func=_cmd_patches_make)
    pasub.add_parser("strength", help="ASR against patch size on the FP model, and the matched size "
                     "(params: attack_strength, patches)").set_defaults(func=_cmd_patches_strength)

    pasub.add_parser("cross-bit", help="cross-bit transfer inside each defended model: patches made white-box at each "
                                       "source bit-width, evaluated at every bit-width (stage 'cross_bit'; params: "
                                       "cross_bit)").set_defaults(func=_cmd_patches_cross_bit)
    rp = sub.add_parser("replicas", help="the replica group (training seeds, training length): evaluation and summary")
    rpsub = rp.add_subparsers(dest="what", metavar="WHAT")
    rpsub.required = True
    _replica_commands(rpsub, ("evaluate a training-seed replica as its core run is (stage seed_eval): "
                              "results/replicas/outcomes/seeds/<method>-seed<K>.parquet", _cmd_replicas_seed),
                      ("evaluate a variant's seed run as TriQDef's core run is (stage variant_eval): "
                       "results/replicas/outcomes/variants/triqdef-<variant>-seed<K>.parquet", _cmd_replicas_variant),
                      ("evaluate a training-length run as its core run is (stage length_eval): "
                       "results/replicas/outcomes/length/<method>-x<F>.parquet", _cmd_replicas_length))
    rpsub.add_parser("seed-summary", help="seed spread, TriQDef against standard QAT and PBAT and against its seeds.variants at the seed level: "
                                          "results/replicas/SEEDS.md (stage seed_summary)"
                     ).set_defaults(func=_cmd_replicas_seed_summary)
    rpsub.add_parser("length-summary", help="the head-to-head against training steps, table and figure: "
                                            "results/replicas/LENGTH.md (stage length_summary)"
                     ).set_defaults(func=_cmd_replicas_length_summary)

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="what", metavar="WHAT")
    bsub.required = True
    bt = bsub.add_parser("throughput", help="images/s of FP, fake-quantized and joint multi-bit QAT training steps")
    bt.add_argument("--model", default="resnet20")
    bt.add_argument("--bits", type=int, nargs="+", default=[32, 8, 5, 4, 2])
    bt.add_argument("--single-bits", type=int, default=4, help="bit-width of the single fake-quantized step")
    bt.add_argument("--batch-size", type=int, default=128)
    bt.add_argument("--steps", type=int, default=20)
    bt.add_argument("--warmup", type=int, default=3)
    bt.add_argument("--out", default=None, help="also write the JSON here")
    bt.set_defaults(func=_cmd_bench_throughput)

    br = bsub.add_parser("reference", help="the machine's unit of time: median ms of the reference step (joint 5-bit-width "
                         "QAT, ResNet-20, batch 128), appended to the reference log (REPORT's 'Pipeline time')")
    br.add_argument("--steps", type=int, default=20, help="timed steps (median over them)")
    br.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    br.add_argument("--device", default=None, help="cpu | cuda | auto (default: base.device)")
    br.add_argument("--note", default=None, help="a word on the occasion (stored with the measurement)")
    br.add_argument("--log", default="results/bench/reference_log.jsonl", help="the log to append to ('none': print only)")
    br.set_defaults(func=_cmd_bench_reference)

    bs = bsub.add_parser("train-step", help="ms and peak memory of a TriQDef training step vs a vanilla multi-bit QAT step")
    bs.add_argument("--model", default="resnet20")
    bs.add_argument("--bits", type=int, nargs="+", default=None,
                    help="active bit-widths (default: quant.bits of the profile, as the defenses train)")
    bs.add_argument("--batch-size", type=int, default=None,
                    help="batch size (default: defenses.batch_size of the profile, as the defenses train)")
    bs.add_argument("--steps", type=int, default=10)
    bs.add_argument("--warmup", type=int, default=2)
    bs.add_argument("--gpdp-sub-batch", type=int, default=None, help="override triqdef.gpdp_sub_batch")
    bs.add_argument("--gpdp-every", type=int, default=None, help="override triqdef.gpdp_every")
    bs.add_argument("--downsample", type=int, default=None, help="override triqdef.downsample")
    bs.add_argument("--gpdp-joint", choices=("yes", "no"), default=None, help="override triqdef.gpdp_joint")
    bs.add_argument("--repeat", type=int, default=1,
                    help="independent runs in one process (machine noise): ms averaged over all, each run listed")
    bs.add_argument("--out", default=None, help="also write the JSON here")
    bs.set_defaults(func=_cmd_bench_train_step)

    sub.add_parser("report", help="write results/REPORT.md: every paper claim beside our figure").set_defaults(func=_cmd_report)

    oc = sub.add_parser("outcomes", help="a rate or a paired comparison from an outcome store (results/outcomes/*.parquet), "
                                         "no attack run")
    oc.add_argument("action", choices=("rate", "compare"))
    oc.add_argument("store", help="the outcome store, e.g. results/outcomes/table5_matched.parquet")
    oc.add_argument("--a", required=True, help="selection: key=value pairs of model, seed, bits, attack, set, comma-"
                                               "separated; several values with '|' (set=unseen_bits4|unseen_bits2)")
    oc.add_argument("--b", default=None, help="compare: the second selection")
    oc.add_argument("--pair-by", choices=("target", "same"), default="target",
                    help="target: each side its own patches, one per class; same: the very same patches (default target)")
    oc.add_argument("--scale", type=float, default=1.0, help="compare: rate(a) - scale x rate(b) (e.g. 0.6: '40%% lower')")
    oc.add_argument("--level", type=float, default=0.95, help="interval coverage level in (0, 1) (default 0.95)")
    oc.add_argument("--n-boot", type=int, default=2000)
    oc.add_argument("--seed", type=int, default=0)
    oc.set_defaults(func=_cmd_outcomes)

    dp = sub.add_parser("deploy", help="the 8-bit views on PyTorch's integer kernels")
    dpsub = dp.add_subparsers(dest="action", metavar="ACTION")
    dpsub.required = True
    dpsub.add_parser("int8", help="int8 runtime against fake quantization: agreement, accuracy, patch ASR, latency, "
                                  "size (stage 'int8')").set_defaults(func=_cmd_deploy_int8)

    sub.add_parser("clean-outcomes", help="every defended model's prediction on every test image at every bit-width, "
                                          "an outcome store (stage 'clean_outcomes')").set_defaults(func=_cmd_clean_outcomes)

    e = sub.add_parser("evaluate", help="clean test accuracy of a checkpoint per bit-width")
    e.add_argument("checkpoint")
    e.add_argument("--bits", type=int, nargs="*", help="bit-widths (default: all of the checkpoint's)")
    e.set_defaults(func=_cmd_evaluate)
    return p


DATA_PARALLEL = (_cmd_train_fp, _cmd_train_qat)  # the commands that run under torchrun
RANK_ERROR_GRACE_S = 3.0  # a torchrun rank but 0 waits this long before it reports an error (see main)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    writer = _writer()  # torchrun's other ranks stay silent
    logging.basicConfig(level=logging.WARNING if args.quiet or not writer else logging.INFO, format="[%(name)s] %(message)s")
    if os.environ.get("TQDM_DISABLE") or not writer:
        args.quiet = True
    try:
        from triqdef.config import load_config

        world = os.environ.get("WORLD_SIZE", "1")
        if world != "1" and args.func not in DATA_PARALLEL:
            raise TriqdefError(f"WORLD_SIZE is {world} (torchrun): expected 'train fp' or 'train qat', the commands "
                               "that train data-parallel; run the others as one process")
        return args.func(args, load_config(args.params, args.profile))
    except TriqdefError as exc:
        if not writer:  # under torchrun rank 0 meets the same input and says so; torchrun then stops this rank
            time.sleep(RANK_ERROR_GRACE_S)  # still here: an error of this rank alone
        print(f"triqdef: error: {exc}" if writer else f"triqdef: error: rank {os.environ['RANK']}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("triqdef: interrupted; partial training progress is kept in results/.work and resumes on the next run", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``triqdef`` command: re-executed once with glibc's allocator tuned (:mod:`triqdef.allocator`), then
    :func:`main`."""
    from triqdef.allocator import reexec_tuned

    reexec_tuned(["-m", "triqdef", *sys.argv[1:]])
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
