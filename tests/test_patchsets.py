"""The patch plan: every set's targets are balanced over the classes, drawn with the set's own seed."""

from collections import Counter

import pytest
import torch

from triqdef.attacks.patchsets import (balanced_targets, base_set, distinct_scaled_sizes, largest_size, plan, regime_sizes,
                                       evaluated_regimes)
from triqdef.config import load_config


def test_balanced_targets_cover_the_classes_evenly_and_depend_on_the_seed():
    for n in (1, 3, 10, 15, 20):
        counts = Counter(balanced_targets(n, seed=4))
        assert sum(counts.values()) == n and max(counts.values()) - min(counts.values(), default=0) <= 1
        assert len(counts) == min(n, 10)
    assert balanced_targets(10, 1) != balanced_targets(10, 2)
    assert sorted(balanced_targets(20, 1)) == sorted(list(range(10)) * 2)


@pytest.mark.parametrize("profile", ["cpu", "paper"])
def test_every_set_of_the_plan_draws_balanced_targets(profile):
    """The review of issue 12 found the pool targeting only {0, 2, 4, 6, 8} and the seen sets other classes;
    now the pool, the seen set and the unseen group each cover the ten classes with the same distribution."""
    cfg = load_config(None, profile).patches
    specs = plan(cfg, seed=0)
    for attack in cfg.attacks:
        mine = [s for s in specs if s.attack == attack]
        pool = Counter(s.target for s in mine if s.set_name == "pool")
        seen = Counter(s.target for s in mine if s.set_name == "seen")
        unseen = Counter(s.target for s in mine if s.set_name.startswith("unseen_"))
        assert pool == Counter({c: cfg.pool_per_attack // 10 for c in range(10)}), (attack, pool)
        assert seen == Counter({c: cfg.seen_per_attack // 10 for c in range(10)}), (attack, seen)
        kinds = {s.set_name for s in mine if s.set_name.startswith("unseen_")}
        assert unseen == Counter({c: len(kinds) * cfg.unseen_per_kind // 10 for c in range(10)}), (attack, unseen)
        for kind in kinds:  # each kind: distinct classes
            targets = [s.target for s in mine if s.set_name == kind]
            assert len(targets) == cfg.unseen_per_kind and len(set(targets)) == len(targets)
        # the sets are not the same draw
        assert [s.target for s in mine if s.set_name == "pool"] != [s.target for s in mine if s.set_name == "seen"]
    assert len({s.seed for s in specs}) == len(specs)
    assert plan(cfg, seed=0) == specs and plan(cfg, seed=1) != specs


def test_the_matched_regime_repeats_every_set_at_the_scaled_sizes():
    cfg = load_config(None, "cpu").patches
    paper = plan(cfg, seed=0)
    both = plan(cfg, seed=0, second_size=12)
    names = {s.set_name for s in paper}
    assert {s.set_name for s in both} == names | {f"{n}_matched" for n in names}
    sizes = {s.set_name: s.size for s in both}
    assert sizes["seen"] == 6 and sizes["seen_matched"] == 12 and sizes["pool_matched"] == 12
    # 8, 9 and 10 px scaled by 2 pass the largest patch GAP can place (16 px): one pixel apart below it
    assert (sizes["unseen_size8_matched"], sizes["unseen_size10_matched"]) == (14, 16)
    assert regime_sizes(cfg, 12)["matched"]["extra"] == {"size9": 15}   # a size only: Table 9 makes its own set
    assert not any(s.set_name.startswith("size") for s in both)
    assert all(s.regime == ("matched" if s.set_name.endswith("_matched") else "paper") for s in both)
    assert len({s.seed for s in both}) == len(both)
    assert plan(cfg, seed=0, second_size=6) == paper   # the matched size is the paper's: one regime


def test_evaluation_sets_are_made_only_in_the_evaluated_regimes_and_no_other_patch_changes():
    """Issue 30 (budget): with ``regimes.evaluate: deciding`` the paper regime keeps only its pool (the defenses
    train on both sizes); every patch made has the target and seed it has in the full plan."""
    cfg = load_config(None, "cpu").patches
    full = plan(cfg, seed=0, second_size=12)
    assert evaluated_regimes("deciding", 12, cfg.size) == ("matched",)
    assert evaluated_regimes("both", 12, cfg.size) == ("paper", "matched")
    assert evaluated_regimes("deciding", None, cfg.size) == evaluated_regimes("both", 6, cfg.size) == ("paper",)
    part = plan(cfg, seed=0, second_size=12, evaluated=("matched",))
    assert set(part) <= set(full)
    assert {s.set_name for s in part if s.regime == "paper"} == {"pool"}
    assert {s.set_name for s in part if s.regime == "matched"} == {s.set_name for s in full if s.regime == "matched"}


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper", "gpu"])
@pytest.mark.parametrize("second", [8, 10, 12])
def test_no_two_patch_sets_share_a_size_through_clamping(profile, second):
    """Issue 30, item 3: in each regime, the seen size and every unseen-size and Table 9 set are distinct sizes,
    and the scaled sets stay on their side of the seen size (an unseen size is larger than the seen one)."""
    cfg = load_config(None, profile).patches
    specs = plan(cfg, seed=0, second_size=second)
    table9 = regime_sizes(cfg, second)
    for regime in ("paper", "matched"):
        sizes = {}
        for s in specs:
            if s.regime == regime and s.attack == "lavan":
                sizes.setdefault(s.size, set()).add(base_set(s.set_name))
        for name, size in table9[regime]["extra"].items():   # Table 9's own sets (stage motivation) at these sizes
            sizes.setdefault(size, set()).add(name)
        by_set = {name: size for size, names in sizes.items() for name in names}
        sized = [n for n in by_set if n.startswith("unseen_size") or n.startswith("size")]
        assert len({by_set[n] for n in sized} | {by_set["seen"]}) == len(sized) + 1, (regime, sizes)
        assert all(by_set[n] > by_set["seen"] for n in sized), (regime, by_set)
        assert max(by_set.values()) <= largest_size(cfg)


def test_sizes_that_cannot_stay_distinct_are_refused_in_one_line():
    from triqdef.errors import TriqdefError

    cfg = load_config(None, "cpu").patches
    assert distinct_scaled_sizes([8, 9, 10], 6, 12, 16) == {10: 16, 9: 15, 8: 14}
    assert distinct_scaled_sizes([4, 8], 6, 12, 16) == {8: 16, 4: 8}
    with pytest.raises(TriqdefError, match=r"patches.unseen_sizes / extra_sizes \[8, 9, 10\] at the matched size 14"):
        distinct_scaled_sizes([8, 9, 10], 6, 14, 16)
    with pytest.raises(TriqdefError, match="matched size 15"):
        plan(cfg, seed=0, second_size=15)


def test_the_second_size_is_read_from_the_attack_strength_record(tmp_path):
    import json

    from triqdef.errors import TriqdefError
    from triqdef.stages.attack_strength import second_size

    path = tmp_path / "matched_size.json"
    path.write_text(json.dumps({"matched_size": 12, "lavan_fp_asr": {"6": 12.0, "12": 85.0}}))
    assert second_size(path) == (12, "matched")
    path.write_text(json.dumps({"matched_size": None, "lavan_fp_asr": {"6": 12.0, "12": 70.0, "14": 69.0}}))
    assert second_size(path) == (12, "strongest")
    for text, match in (("{", "corrupt"), (json.dumps({"matched_size": None}), "corrupt")):
        path.write_text(text)
        with pytest.raises(TriqdefError, match=match):
            second_size(path)
    with pytest.raises(TriqdefError, match="not found"):
        second_size(tmp_path / "missing.json")


def _patch(set_name: str, target: int, attack: str = "lavan", size: int = 6):
    import torch

    from triqdef.attacks.patches import Patch

    return Patch(torch.zeros(3, size, size), (0, 0), target, attack, "resnet20", None, {"set": set_name})


def test_the_caption_note_counts_each_sets_targets_from_the_patches():
    """Tables 2, 5 and 7 say how the targets spread, counted from the patch file, so a skewed file shows."""
    from triqdef.eval.robustness import evaluation_sets_note, set_targets, target_coverage

    even = [_patch("pool", c) for c in range(10)] + [_patch("seen", c) for c in range(10)]
    even += [_patch(f"unseen_bits{4 if c < 5 else 2}", c) for c in range(10)]
    note = target_coverage(even, {"pool": ["pool"], "seen": ["seen"], "unseen": ["unseen_bits4", "unseen_bits2"]})
    assert note.startswith("Patch targets (counted from the patch file): every set covers the 10 classes evenly")
    assert "pool: lavan 10 (each class 1×)" in note and "unseen: lavan 10 (each class 1×)" in note
    skewed = even[:-1] + [_patch("unseen_bits2", 0)]
    note = target_coverage(skewed, {"unseen": ["unseen_bits4", "unseen_bits2"]})
    assert "NOT every set covers the classes evenly" in note and "0–2 per class (uneven)" in note
    assert set_targets(even, {"made at 4 bits": "unseen_bits4"}) == "Sizes and targets per set: made at 4 bits (6×6): lavan 0, 1, 2, 3, 4."
    independent = {"params": {"unseen_bits_source": "independent_qat"},
                   "unseen_bits_source": "results/models/qat/resnet20_independent.pt"}
    assert "trained with another seed (results/models/qat/resnet20_independent.pt)" in evaluation_sets_note(even, independent, "paper")
    shared = {"params": {"unseen_bits_source": "shared_qat"}, "unseen_bits_source": "results/models/qat/resnet20.pt"}
    assert "partly white-box" in evaluation_sets_note(even, shared, "paper")


@pytest.mark.parametrize("profile", ["cpu", "paper"])
def test_table9_has_its_own_sets_of_as_many_patches_as_the_seen_set_at_each_size(profile):
    """Issue 29, item 4: Table 9 read stage ``patches``'s unseen-size sets, 2 patches each in ``cpu``; its own sets
    hold ``seen_per_attack`` LAVAN patches (10, one per class) at each of its three sizes, the same targets at every
    size, with seeds no other patch of the patch stage has."""
    from triqdef.stages import motivation as M

    cfg = load_config(None, profile).patches
    main_plan = plan(cfg, seed=0, second_size=12)
    regimes = regime_sizes(cfg, 12)
    for regime, expected in (("paper", {8: 8, 9: 9, 10: 10}), ("matched", {8: 14, 9: 15, 10: 16})):
        sizes = M.table9_sizes(regimes, regime, M.TABLE9_SETS)
        assert sizes == expected
        specs = M.table9_plan(cfg, sizes, seed=0, regime=regime)
        by_set = {}
        for s in specs:
            by_set.setdefault(s.set_name, []).append(s)
        suffix = "" if regime == "paper" else "_matched"
        assert set(by_set) == {f"table9_size{n}{suffix}" for n in (8, 9, 10)}
        targets = [[s.target for s in by_set[f"table9_size{n}{suffix}"]] for n in (8, 9, 10)]
        assert targets[0] == targets[1] == targets[2] and len(targets[0]) == cfg.seen_per_attack
        assert Counter(targets[0]) == Counter({c: cfg.seen_per_attack // 10 for c in range(10)})
        assert all(s.attack == "lavan" and s.source == "fp" and s.placement == "inside" and s.regime == regime
                   and s.size == sizes[int(s.set_name.split("size")[1].split("_")[0])] for s in specs)
        seeds = [s.seed for s in specs]
        assert len(set(seeds)) == len(seeds) and not set(seeds) & {s.seed for s in main_plan}
    matched = M.table9_plan(cfg, M.table9_sizes(regimes, "matched", M.TABLE9_SETS), 0, "matched")
    paper = M.table9_plan(cfg, M.table9_sizes(regimes, "paper", M.TABLE9_SETS), 0, "paper")
    assert not {s.seed for s in matched} & {s.seed for s in paper}


def test_table9_sizes_name_what_is_missing_in_one_line():
    from triqdef.errors import TriqdefError
    from triqdef.stages import motivation as M

    regimes = regime_sizes(load_config(None, "cpu").patches, None)
    with pytest.raises(TriqdefError, match="regime 'matched' is not in the patch stage's metadata"):
        M.table9_sizes(regimes, "matched", M.TABLE9_SETS)
    with pytest.raises(TriqdefError, match=r"Table 9's sets \['size11'\] are not in"):
        M.table9_sizes(regimes, "paper", ("size11",))


def test_table2_has_its_own_made_at_2_bits_set_one_patch_per_seen_patch():
    """Issue 29, item 4: Table 2's claim compared the seen set (10 per attack) with stage ``patches``'s
    ``unseen_bits2`` (2 per attack); its own set has one patch per seen patch, with its attack, size and target,
    made on standard QAT at 2 bits, with seeds no patch of the patch stage has."""
    from triqdef.attacks.patches import Patch
    from triqdef.stages import training as T

    cfg = load_config(None, "cpu").patches
    main_plan = plan(cfg, seed=0, second_size=12)
    for regime in ("paper", "matched"):
        seen_specs = [s for s in main_plan if s.set_name == ("seen" if regime == "paper" else "seen_matched")]
        seen = [Patch(torch.zeros(3, s.size, s.size), (0, 0), s.target, s.attack, "resnet20", None) for s in seen_specs]
        specs = T.table2_specs(seen, regime, seed=0)
        assert len(specs) == len(seen) == 2 * cfg.seen_per_attack
        assert [(s.attack, s.size, s.target) for s in specs] == [(p.attack, p.size, p.target) for p in seen]
        assert all(s.source == "qat" and s.source_bits == 2 and s.placement == "inside" and s.regime == regime
                   for s in specs)
        assert {s.set_name for s in specs} == {"table2_bits2" if regime == "paper" else "table2_bits2_matched"}
        assert len({s.seed for s in specs}) == len(specs) and not {s.seed for s in specs} & {s.seed for s in main_plan}
