"""PatchAttack (Yang et al., ECCV 2020, "PatchAttack: a black-box texture-based attack with reinforcement
learning"): the black-box attack of TriQDef's Table 5, columns "PatchAttack" (32, 5, 4 and 2 bits).

The attack has two parts.

1. **A texture dictionary**, ``T`` textures of ``s × s`` pixels per class. The original takes Gram-matrix style
   textures of class-relevant regions from an ImageNet VGG; there is no ImageNet VGG here, so our reading is
   *class-evidence textures of our own surrogate model* (white-box access to our own model; never to the
   victim): for each class ``c``, ``T`` random starts, each optimised for ``texture_steps`` signed-gradient
   steps that raise class ``c``'s log-probability (loss ``ce``) with the texture pasted at random locations
   inside the region into ``texture_images`` attacker images per step. These are short LAVAN runs on the
   surrogate, made by the package's one patch optimiser (:func:`triqdef.attacks.universal.optimise_patches`);
   there is no Gram-matrix style term. Deterministic in ``seed``: :func:`build_texture_dictionary`.
2. **A REINFORCE agent** that chooses one action ``a = (texture k of the target's dictionary, row, column)``
   on a grid of top-left corners inside the region (stride ``location_stride``, the last corner of the region
   always included). The policy is three independent categorical distributions (texture, row, column) whose
   logits are the learnable parameters, starting uniform. Each iteration it samples ``actions_per_iteration``
   actions, pastes each action's patch into the same ``reward_images`` attack images (drawn afresh each
   iteration, only images whose label is not the target) and scores it by the victim's **outputs only**:

       R(a) = mean_i log p_t(x_i ⊕ a)      (``reward="logprob"``, the original's targeted reward)
       R(a) = mean_i p_t(x_i ⊕ a)          (``reward="prob"``)

   The update is REINFORCE, ``∇ J = mean_a (R(a) − b_a) ∇ log π(a)``, with the leave-one-out baseline
   ``b_a`` = mean reward of the iteration's other actions (they saw the same images, so the baseline removes
   how easy the images are), advantages divided by the iteration's reward spread, and an Adam step on the
   logits. Every reward is remembered per action; at the end the best actions by mean reward (and the
   policy's mode) are evaluated on one fixed selection batch and the one with the highest targeted success
   (ties: reward) is returned.

Differences from the original, our reading: the patch is **universal** (one texture at one location for a set
of images, as LAVAN in this package, so that it is evaluated like every other Table 5 patch: targeted ASR
at its stored location, docs/design.md#success-rate), where the original attacks one image with several
patches chosen in sequence by an LSTM controller; one square patch and no crop of the texture (the
original also chooses a crop offset within a larger texture).

**Queries.** The victim is only ever called through :class:`QueryCounter`: under ``torch.no_grad()``, in
eval mode at ``victim_bits``, returning log-probabilities; every image it evaluates is one query, and a hard
budget ``max_queries`` is never exceeded: the search stops before an iteration it cannot pay for, and the
final selection's queries are reserved before the search starts. The returned :class:`Patch` records the
queries used (``info["queries"]``): report them beside the ASR.

Call::

    dictionary = build_texture_dictionary(surrogate, images, 6, 10, settings, seed=0)
    patch = patch_attack(victim, images, labels, 6, target=3, dictionary=dictionary, settings=settings, seed=1,
                         victim_bits=4, victim_name="triqdef")
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from triqdef import quant
from triqdef.attacks.patches import Patch, check_images, paste, region_locations
from triqdef.attacks.universal import PatchRequest, optimise_patches, recipe
from triqdef.errors import TriqdefError

ATTACK_NAME = "patchattack"  # the name Table 5's columns carry (reporting.schemas.PATCHATTACK)
REWARDS = ("logprob", "prob")
_TEXTURE_SALT, _SELECT_SALT = 7_919, 104_729


def _derived_seed(seed: int, *parts: int) -> int:
    """A seed derived from ``seed`` for one purpose (a texture of a class, the selection batch)."""
    value = int(seed)
    for p in parts:
        value = (value * 1_000_003 + int(p)) % (2**63 - 1)
    return value


def check_query_budget(max_queries) -> int:
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 0:
        raise TriqdefError(f"PatchAttack query budget max_queries={max_queries!r}: expected an integer >= 0")
    return max_queries


@dataclass(frozen=True, kw_only=True)
class PatchAttackSettings:
    """One PatchAttack run (dictionary and agent). The defaults are the ``cpu`` profile's: 5,376 queries per
    targeted patch (20 × 8 × 32 searching, 4 × 64 selecting). Measured on 2 CPU cores, ResNet-20, 200 attack
    images: 1.7–2.6 s per 6×6 or 12×12 patch (float or 4-bit victim), 5.7 s per dictionary (10 classes × 4).

    Dictionary: ``textures_per_class`` textures per class, each ``texture_steps`` signed steps of size
    ``texture_step_size`` (cosine decay) on ``texture_images`` surrogate images per step.
    Agent: ``iterations`` REINFORCE iterations of ``actions_per_iteration`` actions, each scored on the same
    ``reward_images`` images (``reward``: ``logprob`` | ``prob``), Adam at ``learning_rate`` on the policy's
    logits; corners on a grid of stride ``location_stride`` inside the image minus a ``border``-pixel frame.
    Selection: the best ``candidates`` actions re-scored on ``selection_images`` fixed images (0: no
    selection, the best mean reward wins). ``max_queries``: the hard budget of victim queries (search and
    selection together); ``batch_size``: images per victim forward.
    """

    textures_per_class: int = 4
    texture_steps: int = 20
    texture_step_size: float = 0.1
    texture_images: int = 8
    iterations: int = 20
    actions_per_iteration: int = 8
    reward_images: int = 32
    learning_rate: float = 0.3
    reward: str = "logprob"
    location_stride: int = 3
    border: int = 4
    candidates: int = 4
    selection_images: int = 64
    max_queries: int = 6_000
    batch_size: int = 256

    def __post_init__(self) -> None:
        check_query_budget(self.max_queries)
        for name in ("textures_per_class", "texture_steps", "texture_images", "iterations", "reward_images",
                     "location_stride", "candidates", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TriqdefError(f"PatchAttack {name}={value!r}: expected a positive integer")
        value = self.actions_per_iteration
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise TriqdefError(f"PatchAttack actions_per_iteration={value!r}: expected an integer >= 2 (the "
                               f"REINFORCE baseline of an action is the mean reward of the others)")
        for name in ("border", "selection_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise TriqdefError(f"PatchAttack {name}={value!r}: expected an integer >= 0")
        for name in ("texture_step_size", "learning_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise TriqdefError(f"PatchAttack {name}={value!r}: expected a positive number")
        if self.reward not in REWARDS:
            raise TriqdefError(f"PatchAttack reward {self.reward!r}: expected one of {', '.join(REWARDS)}")

    def queries_per_patch(self) -> int:
        """The most victim queries one patch can use: search and selection (at most ``max_queries``)."""
        search = self.iterations * self.actions_per_iteration * self.reward_images
        return min(self.max_queries, search + self.candidates * self.selection_images)


@dataclass
class TextureDictionary:
    """The attacker's textures: ``textures`` (C, T, 3, s, s) in [0, 1], ``T`` per class of the ``C`` classes,
    made on ``source_model`` (the surrogate) at ``source_bits``; ``info`` records how."""

    textures: torch.Tensor
    source_model: str = "surrogate"
    source_bits: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = self.textures
        if t.ndim != 5 or t.shape[2] != 3 or t.shape[-1] != t.shape[-2] or t.shape[0] < 1 or t.shape[1] < 1:
            raise TriqdefError(f"texture dictionary of shape {tuple(t.shape)}: "
                               f"expected (classes, textures >= 1, 3, s, s)")

    @property
    def num_classes(self) -> int:
        return int(self.textures.shape[0])

    @property
    def per_class(self) -> int:
        return int(self.textures.shape[1])

    @property
    def size(self) -> int:
        return int(self.textures.shape[-1])

    def for_class(self, target: int) -> torch.Tensor:
        """The textures (T, 3, s, s) of class ``target``."""
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < self.num_classes:
            raise TriqdefError(f"PatchAttack target class {target!r}: expected a class in 0..{self.num_classes - 1} "
                               f"of the texture dictionary")
        return self.textures[target]

    def to_dict(self) -> dict:
        return {"textures": self.textures.detach().cpu().clone(), "source_model": self.source_model,
                "source_bits": self.source_bits, "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict) -> TextureDictionary:
        return cls(d["textures"].float(), d["source_model"], d["source_bits"], dict(d.get("info", {})))


def build_texture_dictionary(surrogate: nn.Module, images: torch.Tensor, size: int, num_classes: int,
                             settings: PatchAttackSettings, seed: int, bits: int | None = None,
                             source_model: str = "surrogate") -> TextureDictionary:
    """The texture dictionary of PatchAttack (Yang 2020) from our own ``surrogate`` (white-box, at ``bits``):
    ``settings.textures_per_class`` class-evidence textures of ``size`` pixels for each of ``num_classes``
    classes, each a short ``ce`` LAVAN run at random locations inside the region on ``images`` (N, 3, H, W)
    in [0, 1] (labels are not needed: the loss only raises the texture's class). Texture ``j`` of class ``c``
    has its own seed, derived from ``seed``; all ``C·T`` textures are optimised together."""
    check_images(images)
    s = settings
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise TriqdefError(f"PatchAttack num_classes={num_classes!r}: expected a positive integer")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise TriqdefError(f"PatchAttack patch size {size!r}: expected a positive integer")
    region_locations(size, images.shape[-1], s.border)
    requests = [PatchRequest(target=c, seed=_derived_seed(seed, _TEXTURE_SALT, c, j), border=s.border)
                for c in range(num_classes) for j in range(s.textures_per_class)]
    optimiser = recipe("lavan", loss="ce", steps=s.texture_steps, step_size=s.texture_step_size,
                       images_per_patch=s.texture_images, max_batch=s.batch_size)
    unused_labels = torch.zeros(images.shape[0], dtype=torch.long)  # the ce loss ignores the true labels
    patches = optimise_patches(surrogate, images, unused_labels, size, requests, optimiser, bits=bits,
                               source_model=source_model)
    textures = torch.stack([p.content for p in patches]).view(num_classes, s.textures_per_class, 3, size, size)
    info = {"kind": "class-evidence textures of the surrogate (ce, random locations)", "seed": int(seed),
            "texture_steps": s.texture_steps, "texture_step_size": s.texture_step_size,
            "texture_images": s.texture_images, "border": s.border, "images": int(images.shape[0])}
    return TextureDictionary(textures, source_model, bits, info)


class QueryCounter:
    """Black-box access to a victim: log-probabilities only, every evaluated image one query, a hard budget.

    The victim runs under ``torch.no_grad()`` in eval mode at ``bits`` (None: as it is), in forwards of at most
    ``batch_size`` images; nothing else of it is touched. :meth:`log_probabilities` refuses a batch that would
    exceed ``max_queries`` (:meth:`affords` says beforehand whether it fits)."""

    def __init__(self, victim: nn.Module, max_queries: int, bits: int | None = None, batch_size: int = 256):
        self.max_queries = check_query_budget(max_queries)
        if bits is not None:
            quant.check_bits(bits)
            if bits not in quant.model_bits(victim):
                raise TriqdefError(f"bit-width {bits} not in the victim's bit-widths {quant.model_bits(victim)}")
        self._victim, self.bits, self.batch_size, self.used = victim, bits, int(batch_size), 0
        first = next(victim.parameters(), None)
        self._device = first.device if first is not None else torch.device("cpu")

    @property
    def remaining(self) -> int:
        return self.max_queries - self.used

    def affords(self, n: int) -> bool:
        return n <= self.remaining

    def log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """The victim's log-probabilities (N, C) on ``images``, on the CPU; ``N`` queries."""
        n = int(images.shape[0])
        if not self.affords(n):
            raise TriqdefError(f"PatchAttack query budget: {n} more queries after {self.used} of {self.max_queries}")
        self.used += n
        out = []
        with torch.no_grad(), quant.eval_mode(self._victim), quant.use_bitwidth(self._victim, self.bits):
            for start in range(0, n, self.batch_size):
                logits = self._victim(images[start:start + self.batch_size].to(self._device))
                out.append(F.log_softmax(logits.float(), 1).cpu())
        return torch.cat(out) if out else torch.empty(0, 0)


def location_grid(size: int, image_size: int, border: int, stride: int) -> torch.Tensor:
    """Top-left coordinates the agent may choose along one axis: ``lo, lo + stride, ...`` inside the region
    (:func:`~triqdef.attacks.patches.region_locations`), with the region's last corner always included."""
    lo, hi = region_locations(size, image_size, border)
    values = list(range(lo, hi + 1, stride))
    if values[-1] != hi:
        values.append(hi)
    return torch.tensor(values, dtype=torch.long)


class FactorisedPolicy(nn.Module):
    """π(texture, row, column) = Cat(texture) · Cat(row) · Cat(column), logits as parameters (uniform at the
    start): a good row or column is learnt across textures and the other axis."""

    def __init__(self, textures: int, rows: int, cols: int):
        super().__init__()
        self.logits = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in (textures, rows, cols)])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` actions (n, 3): texture index, row index, column index."""
        with torch.no_grad():
            return torch.stack([torch.multinomial(F.softmax(l, 0), n, replacement=True, generator=generator)
                                for l in self.logits], 1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return sum(F.log_softmax(l, 0)[actions[:, i]] for i, l in enumerate(self.logits))

    def entropy(self) -> float:
        with torch.no_grad():
            return float(sum(-(F.softmax(l, 0) * F.log_softmax(l, 0)).sum() for l in self.logits))

    def mode(self) -> tuple[int, int, int]:
        return tuple(int(l.detach().argmax()) for l in self.logits)


def _scores(counter: QueryCounter, images: torch.Tensor, textures: torch.Tensor, grid: torch.Tensor,
            actions: list[tuple[int, int, int]], target: int, reward: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(reward, targeted success) of each action on the same ``images``: one batch of ``len(actions)·m``
    queries."""
    k, m = len(actions), images.shape[0]
    act = torch.tensor(actions, dtype=torch.long)
    contents = textures[act[:, 0]].repeat_interleave(m, 0)
    locations = torch.stack([grid[act[:, 1]], grid[act[:, 2]]], 1).repeat_interleave(m, 0)
    logp = counter.log_probabilities(paste(images.repeat(k, 1, 1, 1), contents, locations)).view(k, m, -1)
    target_logp = logp[..., target]
    rewards = target_logp.mean(1) if reward == "logprob" else target_logp.exp().mean(1)
    return rewards, (logp.argmax(-1) == target).float().mean(1)


def patch_attack(victim: nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int, target: int,
                 dictionary: TextureDictionary, settings: PatchAttackSettings, seed: int,
                 victim_bits: int | None = None, *, victim_name: str = "victim",
                 progress: str | None = None) -> Patch:
    """A universal targeted PatchAttack patch (Yang 2020; TriQDef Table 5, "PatchAttack") of ``size`` pixels
    against ``victim`` at ``victim_bits``, found by querying its outputs only.

    ``images`` (N, 3, H, W) in [0, 1] with true ``labels``: the attacker's images (those labelled ``target``
    are left out); ``dictionary``: textures of ``size`` pixels (:func:`build_texture_dictionary`), the agent
    choosing among class ``target``'s. Returns the chosen texture at the chosen corner as a :class:`Patch`
    of attack ``"patchattack"`` made on ``victim_name`` at ``victim_bits``; its ``info`` holds the queries
    used, the iterations run, the policy's final entropy, the seed, the settings and the search's history.
    Never exceeds ``settings.max_queries`` and never errors on a spent budget: it stops and returns the best
    action found so far.
    """
    s = settings
    check_images(images)
    if images.shape[0] != labels.shape[0]:
        raise TriqdefError(f"{images.shape[0]} images and {labels.shape[0]} labels: expected one label per image")
    textures = dictionary.for_class(target).float()
    if dictionary.size != size:
        raise TriqdefError(f"texture dictionary of {dictionary.size}px textures for a {size}px patch: "
                           f"expected textures of the patch's size")
    grid = location_grid(size, images.shape[-1], s.border, s.location_stride)
    pool = torch.nonzero(labels.cpu() != target)[:, 0]
    if pool.numel() == 0:
        raise TriqdefError(f"PatchAttack on target {target}: every attack image has that label; expected others")
    counter = QueryCounter(victim, s.max_queries, victim_bits, s.batch_size)
    g = torch.Generator().manual_seed(int(seed))
    policy = FactorisedPolicy(textures.shape[0], len(grid), len(grid))
    adam = torch.optim.Adam(policy.parameters(), lr=s.learning_rate)
    x_pool = images[pool].float()

    m = min(s.reward_images, len(pool))
    n_select = min(s.selection_images, len(pool)) if s.candidates > 1 else 0  # one candidate needs no selection
    search_budget = max(0, s.max_queries - s.candidates * n_select)  # the selection's queries, reserved
    seen: dict[tuple[int, int, int], list[float]] = {}  # action -> [sum of rewards, number of rewards]
    history, iterations = [], 0
    for _ in tqdm(range(s.iterations), desc=progress, disable=progress is None, leave=False, unit="it"):
        k = min(s.actions_per_iteration, (search_budget - counter.used) // m)
        if k < 2:  # the leave-one-out baseline needs two actions: the budget is spent
            break
        actions = policy.sample(k, g)
        idx = torch.randperm(len(pool), generator=g)[:m]
        rewards, _ = _scores(counter, x_pool[idx], textures, grid, [tuple(a) for a in actions.tolist()], target,
                             s.reward)
        for a, r in zip(actions.tolist(), rewards.tolist()):
            total = seen.setdefault(tuple(a), [0.0, 0])
            total[0] += r
            total[1] += 1
        advantage = rewards - (rewards.sum() - rewards) / (k - 1)  # leave-one-out baseline
        spread = rewards.std()
        advantage = advantage / spread if spread > 1e-8 else torch.zeros_like(advantage)
        loss = -(advantage * policy.log_prob(actions)).mean()
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()
        iterations += 1
        history.append(round(float(rewards.mean()), 5))

    mode = policy.mode()
    candidates = sorted(seen, key=lambda a: (-seen[a][0] / seen[a][1], -seen[a][1], a))[:s.candidates]  # best first
    if mode not in candidates:  # the policy's mode competes too (it replaces the weakest when the list is full)
        if len(candidates) < s.candidates:
            candidates.append(mode)
        elif s.candidates > 1:
            candidates[-1] = mode
    n_select = min(n_select, counter.remaining // len(candidates))
    selection = None
    if n_select > 0 and len(candidates) > 1:
        gs = torch.Generator().manual_seed(_derived_seed(seed, _SELECT_SALT))
        idx = torch.randperm(len(pool), generator=gs)[:n_select]
        rewards, success = _scores(counter, x_pool[idx], textures, grid, candidates, target, s.reward)
        best = max(range(len(candidates)), key=lambda i: (float(success[i]), float(rewards[i])))
        selection = {"images": n_select, "candidates": [list(a) for a in candidates],
                     "success": [round(float(v), 5) for v in success], "reward": [round(float(v), 5) for v in rewards]}
        chosen = candidates[best]
    else:
        chosen = candidates[0]
    texture, row, col = chosen
    location = (int(grid[row]), int(grid[col]))
    info = {"attack": ATTACK_NAME, **asdict(s), "seed": int(seed), "queries": counter.used,
            "iterations_run": iterations, "policy_entropy": policy.entropy(),
            "max_entropy": math.log(textures.shape[0]) + 2 * math.log(len(grid)),
            "texture_index": int(texture), "location_grid": grid.tolist(), "reward_history": history,
            "policy_mode": {"texture_index": mode[0], "location": [int(grid[mode[1]]), int(grid[mode[2]])]},
            "selection": selection, "attack_images": int(len(pool)),
            "dictionary": {"source_model": dictionary.source_model, "source_bits": dictionary.source_bits,
                           **dictionary.info}}
    return Patch(textures[texture].detach().clone().cpu(), location, int(target), ATTACK_NAME, victim_name,
                 victim_bits, info)
