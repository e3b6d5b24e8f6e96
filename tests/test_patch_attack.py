"""PatchAttack (triqdef.attacks.patch_attack): black-box access only, the query budget, the agent's reach, the
texture dictionary, reproducibility, bad input."""

from dataclasses import replace

import pytest
import torch

from triqdef.attacks.patch_attack import (PatchAttackSettings, QueryCounter, TextureDictionary,
                                          build_texture_dictionary, location_grid, patch_attack)
from triqdef.attacks.patches import Patch, apply_patch
from triqdef.attacks.success import targeted_asr
from triqdef.errors import TriqdefError

COLOURS = torch.tensor([[0.5, 0.1, 0.1], [0.1, 0.5, 0.1], [0.1, 0.1, 0.5], [0.4, 0.4, 0.1]])
TARGET = 3
YELLOW = 2  # the trigger texture's index in the target's dictionary
GOOD_CORNERS = {(12, 12), (12, 10), (10, 12)}


class TriggerNet(torch.nn.Module):
    """Classifies a 16x16 image by its mean colour (the nearest of ``COLOURS``), except that yellow pixels near
    the bottom-right corner are evidence for class 3, weighted ``max(0, 1 − (15 − row + 15 − col) / 8)``: a
    yellow 4x4 patch at (12, 12), (12, 10) or (10, 12) turns every image into class 3; other textures, or
    other places on the stride-2 grid, fail on most images. Texture and position both matter, and the
    log-probability of class 3 grows towards the corner (far from where a uniform policy's mode points)."""

    def __init__(self):
        super().__init__()
        r = torch.arange(16.0)
        to_corner = 15 - r  # rows and columns counted from the bottom-right corner
        self.register_buffer("weight", (1 - (to_corner[:, None] + to_corner[None, :]) / 8).clamp(min=0))
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        logits = -20 * ((x.mean((2, 3))[:, None, :] - COLOURS) ** 2).sum(-1)
        yellowness = (x[:, 0] + x[:, 1]) / 2 - x[:, 2]  # 1 for yellow (1, 1, 0)
        evidence = (self.weight * (yellowness - 0.4).clamp(min=0) / 0.6).sum((1, 2))
        bonus = torch.nn.functional.one_hot(torch.tensor(TARGET), 4) * (2 * evidence[:, None] - 2)
        return logits + bonus + 0 * self.unused


class _NoVictimGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("the attack read a gradient of the victim")


class BlackBox(torch.nn.Module):
    """A victim that counts the images it sees, notes any forward with gradients enabled, and raises if a
    gradient is ever taken through it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seen = 0
        self.forwards_with_grad = 0

    def forward(self, x):
        self.seen += x.shape[0]
        self.forwards_with_grad += int(torch.is_grad_enabled())
        return self.inner(_NoVictimGradient.apply(x))


def trigger_data(n=48):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3  # no image of the target class
    x = (COLOURS[labels][:, :, None, None] + 0.05 * torch.randn(n, 3, 16, 16, generator=g)).clamp(0, 0.7)
    return x, labels


def trigger_dictionary():
    """Class 3: white, grey, yellow (the trigger, ``YELLOW``) and noise textures; other classes: noise."""
    g = torch.Generator().manual_seed(2)
    textures = torch.rand(4, 4, 3, 4, 4, generator=g)
    textures[TARGET, 0], textures[TARGET, 1] = 1.0, 0.5
    textures[TARGET, YELLOW] = torch.tensor([1.0, 1.0, 0.0])[:, None, None]
    return TextureDictionary(textures, "handmade")


SMALL = dict(iterations=30, actions_per_iteration=8, reward_images=8, learning_rate=0.3, location_stride=2,
             border=0, candidates=4, selection_images=16, max_queries=3_000)


def asr(model, x, labels, patch):
    with torch.no_grad():
        return targeted_asr(model(x).argmax(1), model(apply_patch(x, patch)).argmax(1), labels, patch.target).value


def test_the_agent_finds_the_trigger_from_outputs_only_and_a_random_action_does_not():
    model = TriggerNet()
    x, labels = trigger_data()
    victim = BlackBox(model)
    with pytest.raises(AssertionError, match="gradient"):  # the guard has teeth
        victim(x[:1].requires_grad_(True)).sum().backward()
    victim.seen = victim.forwards_with_grad = 0
    settings = PatchAttackSettings(**SMALL)
    patch = patch_attack(victim, x, labels, 4, TARGET, trigger_dictionary(), settings, seed=0, victim_name="trigger")
    assert patch.attack == "patchattack" and patch.source_model == "trigger" and patch.source_bits is None
    assert patch.info["texture_index"] == YELLOW and patch.location in GOOD_CORNERS
    assert asr(model, x, labels, patch) >= 0.95
    # the agent learnt, not only searched: its policy points at the trigger, and its rewards rose
    mode, history = patch.info["policy_mode"], patch.info["reward_history"]
    assert mode["texture_index"] == YELLOW and tuple(mode["location"]) in GOOD_CORNERS
    assert patch.info["policy_entropy"] < patch.info["max_entropy"] / 2
    assert sum(history[-5:]) / 5 > sum(history[:5]) / 5 + 2
    assert victim.forwards_with_grad == 0
    assert patch.info["queries"] == victim.seen <= settings.max_queries
    g = torch.Generator().manual_seed(5)
    grid = location_grid(4, 16, 0, 2)
    textures = trigger_dictionary().for_class(TARGET)
    random_rates = [asr(model, x, labels, Patch(textures[int(torch.randint(0, 4, (1,), generator=g))],
                                                tuple(grid[torch.randint(0, len(grid), (2,), generator=g)].tolist()),
                                                TARGET, "random", "none", None)) for _ in range(40)]
    assert sum(random_rates) / len(random_rates) <= 0.2


def test_a_fixed_seed_reproduces_the_patch_and_another_seed_searches_differently():
    x, labels = trigger_data()
    settings = PatchAttackSettings(**{**SMALL, "iterations": 6})
    a, b, c = (patch_attack(TriggerNet(), x, labels, 4, TARGET, trigger_dictionary(), settings, seed=s)
               for s in (1, 1, 2))
    assert torch.equal(a.content, b.content) and a.location == b.location and a.info == b.info
    assert a.info["reward_history"] != c.info["reward_history"]
    assert a.info["seed"] == 1 and a.info["iterations_run"] == 6 and a.info["max_queries"] == settings.max_queries


@pytest.mark.parametrize("max_queries", [0, 7, 100])
def test_the_query_budget_is_never_exceeded_and_stops_the_attack_cleanly(max_queries):
    x, labels = trigger_data()
    victim = BlackBox(TriggerNet())
    settings = PatchAttackSettings(**{**SMALL, "max_queries": max_queries})
    patch = patch_attack(victim, x, labels, 4, TARGET, trigger_dictionary(), settings, seed=0)
    assert patch.info["queries"] == victim.seen <= max_queries
    assert patch.size == 4 and patch.info["iterations_run"] < settings.iterations
    if max_queries == 100:  # one iteration of 4 actions x 8 images, then 4 candidates x 16 selection images
        assert victim.seen == 96 and patch.info["iterations_run"] == 1


def test_one_candidate_skips_the_selection_and_takes_the_best_mean_reward():
    x, labels = trigger_data()
    victim = BlackBox(TriggerNet())
    settings = PatchAttackSettings(**{**SMALL, "candidates": 1})
    patch = patch_attack(victim, x, labels, 4, TARGET, trigger_dictionary(), settings, seed=0)
    assert patch.info["selection"] is None and victim.seen == patch.info["queries"] == 30 * 8 * 8
    assert patch.info["texture_index"] == YELLOW and patch.location in GOOD_CORNERS


def test_the_query_counter_counts_images_and_refuses_to_overspend():
    victim = BlackBox(TriggerNet())
    counter = QueryCounter(victim, max_queries=10, batch_size=3)
    out = counter.log_probabilities(torch.rand(7, 3, 16, 16))
    assert out.shape == (7, 4) and torch.allclose(out.exp().sum(1), torch.ones(7))
    assert counter.used == victim.seen == 7 and counter.remaining == 3 and not counter.affords(4)
    with pytest.raises(TriqdefError, match="query budget"):
        counter.log_probabilities(torch.rand(4, 3, 16, 16))
    assert victim.seen == 7


def test_a_dictionary_from_the_surrogate_carries_class_evidence_and_feeds_a_black_box_attack():
    """TriggerNet is the surrogate (white-box, ours): class 3's textures, optimised at random locations, take
    images to class 3 at the corner where noise does not; the agent, querying a black-box copy, finds the
    corner."""
    model, (x, labels) = TriggerNet(), trigger_data()
    settings = PatchAttackSettings(textures_per_class=2, texture_steps=10, texture_step_size=0.2, texture_images=8,
                                   iterations=10, actions_per_iteration=8, reward_images=8, location_stride=2,
                                   border=0, selection_images=16, max_queries=1_000)
    dictionary = build_texture_dictionary(model, x, 4, 4, settings, seed=3, source_model="trigger")
    again = build_texture_dictionary(model, x, 4, 4, settings, seed=3, source_model="trigger")
    assert dictionary.textures.shape == (4, 2, 3, 4, 4) and torch.equal(dictionary.textures, again.textures)
    assert 0 <= dictionary.textures.min() and dictionary.textures.max() <= 1 and dictionary.source_model == "trigger"
    assert not torch.equal(dictionary.textures[0, 0], dictionary.textures[TARGET, 0])  # each class its own evidence
    one_step = build_texture_dictionary(model, x, 4, 4, replace(settings, texture_steps=1), seed=3)
    assert not torch.equal(one_step.textures[TARGET, 0], one_step.textures[TARGET, 1])  # each texture its own start
    noise = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(9))
    for texture in dictionary.for_class(TARGET):
        assert asr(model, x, labels, Patch(texture, (12, 12), TARGET, "t", "trigger", None)) >= 0.9
    assert asr(model, x, labels, Patch(noise, (12, 12), TARGET, "noise", "trigger", None)) <= 0.1
    victim = BlackBox(TriggerNet())
    patch = patch_attack(victim, x, labels, 4, TARGET, dictionary, settings, seed=0, victim_name="victim")
    assert asr(model, x, labels, patch) >= 0.9
    assert patch.info["queries"] == victim.seen <= 1_000 and victim.forwards_with_grad == 0
    assert patch.info["dictionary"]["source_model"] == "trigger"
    restored = TextureDictionary.from_dict(dictionary.to_dict())
    assert torch.equal(restored.textures, dictionary.textures) and restored.info == dictionary.info


@pytest.mark.parametrize("kwargs,needle", [({"max_queries": -1}, "query budget"),
                                           ({"textures_per_class": 0}, "textures_per_class"),
                                           ({"iterations": 0}, "iterations"), ({"learning_rate": 0.0}, "learning_rate"),
                                           ({"actions_per_iteration": 1}, "actions_per_iteration"),
                                           ({"selection_images": -1}, "selection_images"),
                                           ({"reward": "accuracy"}, "reward")])
def test_bad_settings_are_refused(kwargs, needle):
    with pytest.raises(TriqdefError, match=needle):
        PatchAttackSettings(**kwargs)


def test_bad_attacks_are_refused():
    x, labels = trigger_data(8)
    settings = PatchAttackSettings(**SMALL)
    with pytest.raises(TriqdefError, match="target class"):
        patch_attack(TriggerNet(), x, labels, 4, 7, trigger_dictionary(), settings, seed=0)
    with pytest.raises(TriqdefError, match="does not fit"):
        too_big = TextureDictionary(torch.rand(4, 1, 3, 18, 18))
        patch_attack(TriggerNet(), x, labels, 18, TARGET, too_big, settings, seed=0)
    with pytest.raises(TriqdefError, match="does not fit"):
        build_texture_dictionary(TriggerNet(), x, 14, 4, PatchAttackSettings(border=2), seed=0)
    with pytest.raises(TriqdefError, match="textures of the patch's size"):
        patch_attack(TriggerNet(), x, labels, 6, TARGET, trigger_dictionary(), settings, seed=0)
    with pytest.raises(TriqdefError, match="expected others"):
        patch_attack(TriggerNet(), x, torch.full((8,), TARGET), 4, TARGET, trigger_dictionary(), settings, seed=0)
    with pytest.raises(TriqdefError, match="switchable-precision"):
        patch_attack(TriggerNet(), x, labels, 4, TARGET, trigger_dictionary(), settings, seed=0, victim_bits=4)
    with pytest.raises(TriqdefError, match="dictionary of shape"):
        TextureDictionary(torch.rand(4, 0, 3, 4, 4))
