"""The one patch optimiser: K targeted patches optimised together, one forward per step (issue 12;
docs/design.md#one-patch-optimiser).

An attack is a recipe: a per-image loss (:mod:`triqdef.attacks.objectives`) and a placement
(:mod:`triqdef.attacks.placement`). LAVAN (Karmon et al. 2018) is ``logprob`` + ``square``, GAP (Brown et al.
2017) is ``ce`` + ``eot``; either may take another loss from params. DPR (Chen et al. 2022; TriQDef Table 16)
is ``logprob`` + ``square`` with a learned shape: each patch also carries a centre and ``sectors`` radii
(:mod:`triqdef.attacks.deformable`), its soft mask blends the patch into its box, the shape takes an Adam step
(learning rate ``shape_step_size``, cosine-decayed as the content's) after each content step and is then
projected back onto the area budget.

One step, for patches ``k = 1..K`` (each restart of a patch counts as its own patch):

1. patch ``k`` draws ``m = images_per_patch`` images from its pool and its placements from **its own**
   generator, seeded by its request's seed;
2. the ``K·m`` patched images go through the model in one forward (in chunks of whole patches when ``K·m``
   exceeds ``max_batch``);
3. the objective is ``Σ_k mean_i ℓ(x_{k,i})``: patch ``k``'s gradient is that of its own mean loss;
4. every content takes a step: a signed-gradient step ``P ← clip(P − η_t sign(∇), 0, 1)`` or an Adam step
   with learning rate ``η_t``, where ``η_t`` decays with a cosine from ``step_size`` to ``step_size / 10``.

Because each patch's draws and loss are its own, a batched run gives each patch what a run of that patch
alone gives (a test checks values and gradients). With ``restarts = R`` each patch starts from ``R`` random
contents and keeps the one with the highest targeted success on a fixed selection batch (ties: lower loss).

Call: ``optimise_patches(model, images, labels, size, [PatchRequest(target=3, seed=1)], recipe("lavan", ...))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from triqdef import quant
from triqdef.attacks.objectives import LOSSES, per_image_loss
from triqdef.attacks.patches import Patch, check_images, random_locations, region_locations
from triqdef.attacks.placement import PLACEMENTS, eot_canvas_range, place_eot, place_square
from triqdef.attacks.signed_gradient import cosine_decay
from triqdef.errors import TriqdefError
from triqdef.syncguard import host_to_device

ATTACKS = {"lavan": ("logprob", "square"), "gap": ("ce", "eot"), "dpr": ("logprob", "square")}  # -> (loss, placement)
SHAPED = ("dpr",)  # attacks whose patches learn a mask (a centre and sector radii) beside their content
METHODS = ("sign", "adam")
_SELECT_SALT, _LOCATION_SALT = 999_979, 999_983


def _stream(seed: int, salt: int) -> int:
    """A seed derived from ``seed`` for one purpose (a restart, the selection batch, the evaluation location)."""
    return (int(seed) * 1_000_003 + salt) % (2**63 - 1)


@dataclass(frozen=True)
class PatchRequest:
    """One patch to optimise.

    ``target``: the class it pushes images to; ``seed``: its own random stream (start, images, placements);
    ``border``: the frame its placements avoid (0: the whole image); ``location``: where the returned
    :class:`Patch` is evaluated (None: a random location inside the region, from ``seed``);
    ``fixed_location``: optimise at ``location`` only (a per-image LAVAN patch); ``pool``: indices of the
    images it may draw (None: all of them).
    """

    target: int
    seed: int
    border: int = 4
    location: tuple[int, int] | None = None
    fixed_location: bool = False
    pool: tuple[int, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class PatchOptimiser:
    """Settings of one run of :func:`optimise_patches` (docs/design.md#one-patch-optimiser)."""

    attack: str                     # the name the patches carry (lavan | gap | dpr)
    loss: str                       # logprob | ce | margin (objectives.LOSSES)
    placement: str                  # square | eot (placement.PLACEMENTS)
    method: str = "sign"            # sign: signed-gradient steps | adam
    steps: int
    step_size: float
    images_per_patch: int
    restarts: int = 1
    max_rotation: float = 22.5      # eot only
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_batch: int = 1024           # images per forward (whole patches per chunk)
    select_images: int = 256        # restarts: images of the selection batch
    sectors: int = 8                # dpr only: radii of the star-shaped mask
    sharpness: float = 4.0          # dpr only: tanh sharpening of the mask edge (1/pixels)
    area_budget: float = 0.6        # dpr only: the mask's largest mean over the patch box, in (0, 1)
    shape_step_size: float = 0.1    # dpr only: Adam's learning rate on the centre and radii (pixels)

    def __post_init__(self) -> None:
        for name, value, allowed in (("attack", self.attack, tuple(ATTACKS)), ("loss", self.loss, LOSSES),
                                     ("placement", self.placement, PLACEMENTS), ("method", self.method, METHODS)):
            if value not in allowed:
                raise TriqdefError(f"patch optimiser {name} {value!r}: expected one of {', '.join(allowed)}")
        for name in ("steps", "images_per_patch", "restarts", "max_batch", "select_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TriqdefError(f"patch optimiser {name}={value!r}: expected a positive integer")
        if not self.step_size > 0:
            raise TriqdefError(f"patch optimiser step_size={self.step_size!r}: expected a positive number")
        if self.attack in SHAPED:
            from triqdef.attacks.deformable import check_area_budget

            check_area_budget(self.area_budget)
            if isinstance(self.sectors, bool) or not isinstance(self.sectors, int) or self.sectors < 3:
                raise TriqdefError(f"DPR sectors={self.sectors!r}: expected an integer >= 3")
            for name in ("sharpness", "shape_step_size"):
                if not getattr(self, name) > 0:
                    raise TriqdefError(f"DPR {name}={getattr(self, name)!r}: expected a positive number")
            if self.placement != "square":
                raise TriqdefError(f"DPR with the {self.placement!r} placement: expected 'square'")

    def settings(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def recipe(attack: str, *, loss: str | None = None, **settings) -> PatchOptimiser:
    """The optimiser of ``attack`` (lavan | gap | dpr) with its default loss unless ``loss`` is given."""
    if attack not in ATTACKS:
        raise TriqdefError(f"unknown attack {attack!r}: expected one of {', '.join(ATTACKS)}")
    default_loss, placement = ATTACKS[attack]
    return PatchOptimiser(attack=attack, loss=loss or default_loss, placement=placement, **settings)


@dataclass
class _Job:
    """One start of one patch: its request, generator, pool and target."""

    request: PatchRequest
    generator: torch.Generator
    pool: torch.Tensor
    target: int


def _check_requests(requests: Sequence[PatchRequest], size: int, image_size: int, n_images: int,
                    opt: PatchOptimiser) -> None:
    if not requests:
        raise TriqdefError("no patch to optimise (K = 0): expected at least one request")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise TriqdefError(f"patch size {size!r}: expected a positive integer")
    for req in requests:
        region_locations(size, image_size, req.border)
        if opt.placement == "eot":
            eot_canvas_range(size, image_size, req.border)
            if req.fixed_location:
                raise TriqdefError("a fixed-location patch with the eot placement: expected the square placement")
        if req.fixed_location and req.location is None:
            raise TriqdefError(f"fixed-location patch (seed {req.seed}) without a location: expected (row, col)")
        if req.location is not None:
            r, c = req.location
            if not (0 <= r <= image_size - size and 0 <= c <= image_size - size):
                raise TriqdefError(f"patch location {req.location} does not fit a {size}px patch in a {image_size}px image")
        if req.pool is not None and (not req.pool or min(req.pool) < 0 or max(req.pool) >= n_images):
            raise TriqdefError(f"patch pool of {len(req.pool)} indices: expected indices in [0, {n_images})")


def _masks(shapes: torch.Tensor, size: int, opt: PatchOptimiser) -> list[torch.Tensor]:
    """Each job's soft mask (1, s, s) from its shape row ``(centre_row, centre_col, r_0 … r_{K−1})``."""
    from triqdef.attacks.deformable import deformable_mask

    return [deformable_mask(row[:2], row[2:], size, opt.sharpness) for row in shapes]


def _chunk_forward(model: nn.Module, jobs: Sequence[_Job], contents: torch.Tensor, images: torch.Tensor,
                   labels: torch.Tensor, m: int, opt: PatchOptimiser, device: torch.device,
                   shapes: torch.Tensor | None = None):
    """One forward of ``m`` patched images per job: per-image losses, logits, labels and targets, each (J, m, ...).

    Each job draws from its own generator: ``m`` image indices, then its placements. ``shapes`` (J, 2 + K):
    the DPR shape of each job (None: square patches)."""
    xs, ys = [], []
    masks = _masks(shapes, contents.shape[-1], opt) if shapes is not None else [None] * len(jobs)
    for job, content, mask in zip(jobs, contents, masks):
        g, req = job.generator, job.request
        idx = job.pool[torch.randint(0, len(job.pool), (m,), generator=g)]
        x = host_to_device(images[idx], device)
        if opt.placement == "eot":
            xs.append(place_eot(x, content, g, req.border, opt.max_rotation, opt.scale_range))
        else:
            xs.append(place_square(x, content, g, req.border, req.location if req.fixed_location else None, mask))
        ys.append(labels[idx])
    y = host_to_device(torch.cat(ys), device)
    t = host_to_device(torch.tensor([job.target for job in jobs]), device).repeat_interleave(m)
    logits = model(torch.cat(xs))
    loss = per_image_loss(opt.loss, logits, y, t)
    return loss.view(len(jobs), m), logits.view(len(jobs), m, -1), y.view(len(jobs), m), t.view(len(jobs), m)


def _chunks(n_jobs: int, m: int, max_batch: int) -> list[slice]:
    """Consecutive whole jobs, at most ``max_batch`` images per forward (at least one job)."""
    per_chunk = max(1, max_batch // m)
    return [slice(s, min(s + per_chunk, n_jobs)) for s in range(0, n_jobs, per_chunk)]


def _gradient(model, jobs, contents, images, labels, opt, device, shapes=None):
    """∇ of ``Σ_k mean_i ℓ`` with respect to the stacked contents (one forward and backward per chunk), and with
    respect to the DPR ``shapes`` (None for square patches)."""
    leaf = contents.detach().requires_grad_(True)
    shape_leaf = None if shapes is None else shapes.detach().requires_grad_(True)
    grad = torch.zeros_like(leaf)
    shape_grad = None if shapes is None else torch.zeros_like(shape_leaf)
    for part in _chunks(len(jobs), opt.images_per_patch, opt.max_batch):
        loss, *_ = _chunk_forward(model, jobs[part], leaf[part], images, labels, opt.images_per_patch, opt, device,
                                  None if shape_leaf is None else shape_leaf[part])
        wrt = [leaf] if shape_leaf is None else [leaf, shape_leaf]
        grads = torch.autograd.grad(loss.mean(1).sum(), wrt)
        grad += grads[0]
        if shape_grad is not None:
            shape_grad += grads[1]
    return grad, shape_grad


@torch.no_grad()
def _selection_scores(model, jobs, contents, images, labels, opt, device, shapes=None) -> list[tuple[float, float]]:
    """(targeted success, mean loss) of each job on its patch's selection batch, the same batch and placements
    for every restart of a patch; success counts the images whose label is not the target."""
    fresh = [_Job(j.request, torch.Generator().manual_seed(_stream(j.request.seed, _SELECT_SALT)), j.pool, j.target)
             for j in jobs]
    scores = []
    for part in _chunks(len(fresh), opt.select_images, opt.max_batch):
        loss, logits, y, t = _chunk_forward(model, fresh[part], contents[part], images, labels, opt.select_images,
                                            opt, device, None if shapes is None else shapes[part])
        eligible = y != t
        rate = ((logits.argmax(-1) == t) & eligible).sum(1) / eligible.sum(1).clamp(min=1)
        scores += [(float(r), float(l)) for r, l in zip(rate, loss.mean(1))]
    return scores


def optimise_patches(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, size: int,
                     requests: Sequence[PatchRequest], opt: PatchOptimiser, *, bits: int | None = None,
                     source_model: str = "unknown", progress: str | None = None) -> list[Patch]:
    """Optimise one patch per request on ``images`` (N, 3, H, W) in [0, 1] with true ``labels``, at ``bits``
    of a switchable-precision ``model`` (None: as it is), all K·R starts in one forward per step.

    Returns one :class:`Patch` per request, in order, made by ``opt.attack`` on ``source_model`` at ``bits``.
    ``progress``: a progress-bar label, or None for no bar.
    """
    check_images(images)
    if images.shape[0] != labels.shape[0]:
        raise TriqdefError(f"{images.shape[0]} images and {labels.shape[0]} labels: expected one label per image")
    _check_requests(requests, size, images.shape[-1], images.shape[0], opt)
    if bits is not None:
        quant.check_bits(bits)
        if bits not in quant.model_bits(model):
            raise TriqdefError(f"bit-width {bits} not in the attacked model's bit-widths {quant.model_bits(model)}")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    everything = torch.arange(images.shape[0])
    jobs, starts = [], []
    for req in requests:
        pool = everything if req.pool is None else torch.tensor(req.pool, dtype=torch.long)
        for r in range(opt.restarts):
            g = torch.Generator().manual_seed(req.seed if r == 0 else _stream(req.seed, r))
            starts.append(torch.rand(3, size, size, generator=g, dtype=dtype))
            jobs.append(_Job(req, g, pool, int(req.target)))
    contents = torch.stack(starts).to(device)
    eta = cosine_decay(opt.step_size, opt.steps)
    adam = None
    if opt.method == "adam":
        contents.requires_grad_(True)
        adam = torch.optim.Adam([contents], lr=opt.step_size)
    shapes = shape_adam = None
    if opt.attack in SHAPED:  # every start: a centred disc of the budget's area, Adam on (centre, radii)
        shapes = _initial_shapes(len(jobs), size, opt).to(device).requires_grad_(True)
        shape_adam = torch.optim.Adam([shapes], lr=opt.shape_step_size)
    with quant.eval_mode(model), quant.use_bitwidth(model, bits):
        for step in tqdm(range(opt.steps), desc=progress, disable=progress is None, leave=False, unit="step"):
            grad, shape_grad = _gradient(model, jobs, contents, images, labels, opt, device, shapes)
            if adam is None:
                contents = (contents - eta(step) * grad.sign()).clamp(0, 1)
            else:
                adam.param_groups[0]["lr"] = eta(step)
                contents.grad = grad
                adam.step()
                with torch.no_grad():
                    contents.clamp_(0, 1)
            if shape_adam is not None:
                shape_adam.param_groups[0]["lr"] = opt.shape_step_size * eta(step) / opt.step_size
                shapes.grad = shape_grad
                shape_adam.step()
                with torch.no_grad():
                    shapes.copy_(_projected(shapes, size, opt))
        contents = contents.detach()
        shapes = None if shapes is None else shapes.detach()
        scores = (_selection_scores(model, jobs, contents, images, labels, opt, device, shapes) if opt.restarts > 1
                  else None)
    patches = []
    for k, req in enumerate(requests):
        chosen = k * opt.restarts
        info = dict(opt.settings(), seed=req.seed, border=req.border, fixed_location=req.fixed_location)
        if scores is not None:
            mine = scores[chosen:chosen + opt.restarts]
            best = max(range(opt.restarts), key=lambda r: (mine[r][0], -mine[r][1]))
            chosen += best
            info.update(restart=best, selection_success=[s for s, _ in mine])
        location = req.location
        if location is None:
            g = torch.Generator().manual_seed(_stream(req.seed, _LOCATION_SALT))
            location = tuple(random_locations(1, size, g, images.shape[-1], req.border)[0].tolist())
        mask = None
        if shapes is not None:
            mask = _masks(shapes[chosen:chosen + 1], size, opt)[0].float().cpu()
            info.update(mask_area=float(mask.mean()), center=shapes[chosen, :2].tolist(), radii=shapes[chosen, 2:].tolist())
        patches.append(Patch(contents[chosen].float().cpu(), tuple(int(v) for v in location), int(req.target),
                             opt.attack, source_model, bits, info, mask))
    return patches


def _initial_shapes(n: int, size: int, opt: PatchOptimiser) -> torch.Tensor:
    """(n, 2 + K) DPR shapes: centred, equal radii of a disc covering the area budget, projected onto it."""
    import math

    radius = size * math.sqrt(opt.area_budget / math.pi)
    row = torch.cat([torch.full((2,), size / 2), torch.full((opt.sectors,), radius)])
    return _projected(row.expand(n, -1), size, opt)


def _projected(shapes: torch.Tensor, size: int, opt: PatchOptimiser) -> torch.Tensor:
    """Each shape moved back into its constraints (:func:`triqdef.attacks.deformable.project_to_budget`)."""
    from triqdef.attacks.deformable import project_to_budget

    rows = []
    for row in shapes.detach():
        c, r = project_to_budget(row[:2], row[2:], size, opt.area_budget, opt.sharpness)
        rows.append(torch.cat([c, r]))
    return torch.stack(rows)
