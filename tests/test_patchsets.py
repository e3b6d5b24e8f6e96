"""The patch plan: every set's targets are balanced over the classes, drawn with the set's own seed."""

from collections import Counter

import pytest

from triqdef.attacks.patchsets import balanced_targets, plan
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
