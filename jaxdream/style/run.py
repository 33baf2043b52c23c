"""Carrying out a style transfer plan: the batch and where it lives (one device, a sweep over a
mesh, one image's rows over a mesh), the targets of each coarse-to-fine scale, and the chunks
of iterations with progress reported through a callback."""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..media import color, images as media
from ..nets.network import load_network
from ..objectives.bands import band_targets, band_value_and_grad
from ..objectives.gatys import REMAT_PIXELS, Objective, _target_features, prepare_targets, style_targets
from ..optim.adam import AdamState, adam_average, adam_init
from ..optim.driver import chunk_sizes, drive, in_jit_loop_default
from ..optim.lbfgs import LbfgsState, history_cap, lbfgs_init
from ..runtime import parallel
from ..runtime.cache import compile_ahead
from .plan import StylePlan, plan_style
from .programs import adam_apply, adam_chunk, adam_step, lbfgs_apply, lbfgs_chunk, lbfgs_step

__all__ = ["stylize", "run_plan", "split_contents", "StyleProgress", "StyleResult"]


@dataclass
class StyleProgress:
    """What the driver reports after each chunk.

    Attributes:
        scale: index of the current scale (0 = coarsest).
        scales: number of scales.
        size: (height, width) at this scale.
        iteration: iterations done at this scale.
        iterations: iterations planned at this scale.
        losses: ``{"total", "content", "style", "tv"}`` -> (B,) arrays, at the last evaluated
            iterate.
        images: (B, H, W, 3) RGB 0..255 (clipped, colours post-processed) of the current state.
        labels: one dict of swept settings per batch member.
        converged: the total loss of every batch member changed by less than
            ``tol_loss_relative`` over the last ``tol_loss_relative_interval`` iterations: this
            scale ends at this iteration (see :func:`plan_style`).
    """

    scale: int
    scales: int
    size: tuple[int, int]
    iteration: int
    iterations: int
    losses: dict[str, np.ndarray]
    images: np.ndarray
    labels: list[dict]
    converged: bool = False


@dataclass
class StyleResult:
    """The outcome of :func:`stylize`.

    Attributes:
        images: (B, H, W, 3) float32 RGB 0..255, one per swept setting (B = 1 without sweeps).
        labels: the swept settings of each image (empty dicts without sweeps).
        losses: ``{"total", "content", "style", "tv"}`` -> (B,) at the last evaluated iterate.
        settings: the run's settings (for PNG metadata).
        iterations_run: iterations each scale actually ran, coarsest first (fewer than planned
            where ``tol_loss_relative`` stopped it or the callback ended it). With L-BFGS each
            iteration is one loss-and-gradient evaluation of every batch member.
        iterates: (B, H, W, 3) float32 RGB: the optimised pixels themselves, before ``images``
            clipped them to 0..255 (and before ``original_colors``). A run that continues from
            this one starts here: a video's next frame is initialised from its warped iterate,
            whose style statistics are the optimum's, where the clipped picture's are far off.
    """

    images: np.ndarray
    labels: list[dict]
    losses: dict[str, np.ndarray]
    settings: dict = field(default_factory=dict)
    iterations_run: list[int] = field(default_factory=list)
    iterates: np.ndarray | None = None
    compile_seconds: float = 0.0

    @property
    def image(self) -> np.ndarray:
        """The first (or only) result."""
        return self.images[0]


def stylize(content, styles, *,
            weights: str | os.PathLike | None = None,
            network=None,
            in_jit_loop: bool | None = None,
            callback: Callable[[StyleProgress], Any] | None = None,
            mesh=None,
            targets_cache: dict | None = None,
            compile_only: bool = False,
            **settings) -> StyleResult:
    """Gatys style transfer with neural-style's defaults, coarse-to-fine and sweeps. (Long by its
    docstring, which documents every setting; the body is seven lines.)

    The settings (everything after ``styles`` but the five keyword arguments of this signature)
    are :func:`plan_style`'s, whose signature holds their one definition and default.

    Args:
        content: content image: a path or an (H, W, 3) RGB array in 0..255; or a list of
            them, a batch of content images that share their size at every scale, optimised
            at once (split over the devices of ``mesh``): the result is then a list, one
            :class:`StyleResult` per content image.
        styles: one or more style images (paths or arrays).
        style_blend_weights: relative weight of each style (default equal); see
            :func:`prepare_targets`.
        content_weight, style_weight, tv_weight: loss weights (neural-style: 5, 100, 1e-3).
            Each may be a list: the run becomes a sweep over every combination.
        content_layers, style_layers: VGG-19 activation names.
        num_iterations: iterations at the coarsest scale (finer scales get half as many as the
            scale before, at least ``min(50, n)``), or one count per scale.
        optimizer: ``lbfgs`` (one evaluation per iteration) or ``adam``.
        learning_rate: default 1 for L-BFGS, 10 for Adam (neural-style's).
        lbfgs_num_correction: L-BFGS history length (capped so that the history stays under
            :data:`LBFGS_HISTORY_BUDGET` bytes, with a warning).
        size: longest side of the result in pixels.
        scales: longest sides of the coarse-to-fine schedule, ending at ``size``; default
            :func:`default_scales` for sizes above 512; ``()`` or ``[size]`` turns it off.
        init: ``random`` (``0.001 * randn`` around the mean, as neural-style), ``image`` or
            ``content`` (start from the content image), or an init image (path or array).
        pooling: ``max`` or ``avg``.
        style_scale: style images are resized to ``style_scale * size`` (longest side).
        original_colors: keep the content's colours (transfer luminance only).
        color_transfer: ``histogram`` or ``mean-cov``: recolour the style images to the
            content's colour statistics before optimising.
        seed: random seed of the ``random`` init; a list makes a sweep.
        temporal: ``(image, mask, weight)`` adds the video temporal loss
            ``weight * mean(mask * (x - image)**2)`` over all pixels and channels in network
            space (Ruder et al.; ``image`` RGB 0..255 (H, W, 3) -- the previous stylised frame
            warped into this one -- and ``mask`` (H, W) with 1 where the warp is reliable),
            both resized to each scale.
        model, weights: the network (``vgg19``) and an explicit weights file.
        network: an already loaded :class:`jaxdream.Network` (overrides model and weights).
        chunk: iterations per jitted call (progress, saving and Ctrl-C happen in between).
        tol_loss_relative, tol_loss_relative_interval: end a scale once the total loss changes
            by less than this fraction over an interval of this many iterations (for a sweep
            or a batch: of every member); 0 (default) runs every scale's full budget. See
            :func:`plan_style`; :attr:`StyleResult.iterations_run` tells what ran.
        remat: rematerialise activations in the backward pass (default: above 1024x1024 px).
        in_jit_loop: run each chunk as one ``lax.fori_loop`` inside ``jit`` rather than a
            Python loop over the jitted step (default :func:`in_jit_loop_default`).
        callback: called with a :class:`StyleProgress` after every chunk; a truthy return
            value ends the current scale early.
        mesh: a :func:`jaxdream.runtime.parallel.mesh`; a sweep's images (or a batch of content images)
            are split across its devices, one image's rows when there is one (default: one
            device).
        targets_cache: a dict kept across calls with the same style images (a video's frames):
            each scale's style targets (Gram matrices or Gaussian moments) are computed once and
            found there by what they depend on (style pixels, sizes, layers, blend, masks).
        compile_only: check, prepare the targets and compile every program of the run, run no
            iteration, and return the seconds compiling took (a video prepares its later frames'
            programs so, before its first frame).
        band_rows: evaluate band by band with this many rows per band (default: only where the
            whole image would not fit in memory; see :func:`plan_style`).
        precision: ``float32`` (default) or ``bfloat16`` convolutions; Gram matrices, losses
            and the optimiser stay float32 (:mod:`jaxdream.runtime.precision`).
        masks: one mask per style (paths or (H, W) arrays in 0..1, the content's aspect
            ratio; grey levels are weights): style s paints the region of mask s (Gatys et
            al.'s spatial control; overlapping grey borders blend the styles). The blend
            weights then scale each region's style term (normalised to an average of 1).
        content_mask: a mask weighting the content term's positions.
        style_masks: per style image, None (or ``"none"``) or a mask of that image: its
            target statistics come from the positions the mask weights.
        style_loss: ``gram`` (neural-style's) or ``wasserstein`` (the W2 distance between
            Gaussian fits of the features, crowsonkb/style-transfer-pytorch's loss).
        ema: Adam only: return (and report in the progress images) the bias-corrected
            exponential moving average of the iterates with this decay (0: off).
        lbfgs_precondition: L-BFGS only: weight of a Laplacian-pyramid initial inverse
            Hessian (:func:`pyramid_preconditioner`; 0, the default: neural-style's L-BFGS).

    Returns:
        A :class:`StyleResult` (a list of them, one per content image, for a list of content
        images).

    Raises:
        SettingsError, LayerError, MediaError, WeightsError: bad settings or files; all are
        checked (by :func:`plan_style`) before the network is loaded or any optimisation starts.
    """
    if network is not None:
        settings["model"] = network.spec.name
    plan = plan_style(content, styles, **settings)
    net = network if network is not None else load_network(plan.spec.name, weights, plan.pooling)
    result = run_plan(plan, net, chunk=settings.get("chunk", 20), in_jit_loop=in_jit_loop, callback=callback,
                      mesh=mesh, targets_cache=targets_cache, compile_only=compile_only)
    if compile_only:
        return result
    return split_contents(result) if isinstance(content, (list, tuple)) else result


def split_contents(result: StyleResult) -> list[StyleResult]:
    """One :class:`StyleResult` per content image of a batch run (its labels carry a
    ``"content"`` index; the split results' labels do not)."""
    index = [label.get("content", 0) for label in result.labels]
    out = []
    for ci in sorted(set(index)):
        rows = [i for i, c in enumerate(index) if c == ci]
        labels = [{k: v for k, v in result.labels[i].items() if k != "content"} for i in rows]
        out.append(StyleResult(result.images[rows], labels, {k: v[rows] for k, v in result.losses.items()},
                               dict(result.settings), list(result.iterations_run),
                               None if result.iterates is None else result.iterates[rows]))
    return out


def _settings_record(plan: StylePlan, net) -> dict:
    settings = {**plan.sweeps, "content_layers": list(plan.content_layers),
                "style_layers": list(plan.style_layers), "num_iterations": plan.iterations,
                "optimizer": plan.optimizer, "learning_rate": plan.lr,
                "lbfgs_num_correction": plan.corrections, "scales": list(plan.scales),
                "init": plan.init if isinstance(plan.init, str) else "array", "pooling": plan.pooling,
                "style_scale": plan.style_scale, "style_blend_weights": plan.blend,
                "original_colors": plan.original_colors, "color_transfer": plan.color_transfer,
                "model": plan.spec.name, "weights": net.weights_id, "precision": plan.precision,
                "tol_loss_relative": plan.tol_loss_relative,
                "tol_loss_relative_interval": plan.tol_loss_relative_interval,
                "style_loss": plan.style_loss, "ema": plan.ema,
                "lbfgs_precondition": plan.lbfgs_precondition, **plan.mask_names}
    if plan.temporal is not None:
        settings["temporal_weight"] = float(plan.temporal[2])
    return settings


def _to_model(rgb, mean):
    return np.asarray(rgb, np.float32)[..., ::-1] - np.asarray(mean, np.float32)


def _from_model(x, mean):
    return (np.asarray(x, np.float32) + np.asarray(mean, np.float32))[..., ::-1]


def _initial_batch(plan: StylePlan, hw, content_rgbs: list, mean, seeds) -> np.ndarray:
    """The starting images of the first scale, (B, H, W, 3) in network space (``content_rgbs``:
    each member's content image at this scale)."""
    batch = len(seeds)
    if plan.init_full is not None:
        return np.broadcast_to(_to_model(media.resize(plan.init_full, hw), mean), (batch, *hw, 3))
    if plan.init in ("image", "content"):
        return np.stack([_to_model(c, mean) for c in content_rgbs])
    return np.stack([0.001 * np.asarray(jax.random.normal(jax.random.key(s), (*hw, 3), jnp.float32))
                     for s in seeds])


def _band_iterations(state, n: int, params, targets, loss_weights, lr, obj: Objective, band_rows: int,
                     precondition: float = 0.0):
    """``n`` iterations of a batch of one image whose objective is evaluated band by band."""
    apply = functools.partial(lbfgs_apply, precondition=precondition) if isinstance(state, LbfgsState) \
        else adam_apply
    weights = {k: v[0] for k, v in loss_weights.items()}
    for _ in range(n):
        total, parts, grad = band_value_and_grad(state.x[0], params, targets, weights, obj, band_rows)
        state = apply(state, total[None], parts[None], grad[None], lr)
    return state


def _scale_masks(plan: StylePlan) -> dict:
    """The masks of a plan as :func:`prepare_targets` takes them (it resizes them to every
    layer of each scale)."""
    return {"masks": plan.masks or None, "content_mask": plan.content_mask,
            "style_masks": plan.style_masks or None}


def _style_key(plan: StylePlan, k: int, obj: Objective):
    """What the style targets of scale ``k`` depend on besides the style images themselves (the
    key of :func:`stylize`'s ``targets_cache``); None when they depend on the content too (a
    colour transfer recolours the styles to each content image)."""
    if plan.color_transfer:
        return None
    static = (obj.model, obj.pooling, obj.style_layers, obj.precision, obj.style_loss)
    images = tuple(_digest(s) for s in plan.style_full)
    masks = tuple(None if m is None else _digest(m) for m in plan.style_masks)
    return (k, tuple(map(tuple, plan.style_sizes[k])), static, tuple(plan.blend), bool(plan.masks), images, masks)


def _digest(array) -> str:
    a = np.ascontiguousarray(array)
    return f"{a.shape}{a.dtype}" + hashlib.sha256(a.tobytes()).hexdigest()


def _scale_targets(plan: StylePlan, net, k: int, hw, content_rgb, obj: Objective,
                   band_rows: int | None = None, cache: dict | None = None) -> dict:
    mean = net.spec.mean_bgr
    styles_x = [_to_model(media.resize(s, shw), mean) for s, shw in zip(plan.style_full, plan.style_sizes[k])]
    key = None if cache is None or band_rows else _style_key(plan, k, obj)
    if key is not None and key not in cache:
        cache[key] = style_targets(net.params, styles_x, plan.blend, obj, regions=bool(plan.masks),
                                   style_masks=plan.style_masks or None)
    if band_rows:
        targets = band_targets(net.params, _to_model(content_rgb, mean), styles_x, plan.blend, obj, band_rows)
    else:
        targets = prepare_targets(net.params, _to_model(content_rgb, mean), styles_x, plan.blend, obj,
                                  **_scale_masks(plan), style=None if key is None else cache[key])
    if plan.temporal is not None:
        t_image, t_mask, _ = plan.temporal
        mask_k = media.resize(t_mask[..., None], hw, "bilinear")
        targets["temporal"] = {"image": jnp.asarray(_to_model(media.resize(t_image, hw), mean)),
                               "mask": jnp.asarray(np.clip(mask_k, 0, 1))}
    return targets


def _corrections(plan: StylePlan, x0, hw) -> int:
    """L-BFGS's history length at a scale: the plan's, capped to the memory budget (with a
    warning)."""
    m, cap = plan.corrections, history_cap(x0.shape[0], math.prod(x0.shape[1:]))
    if m > cap:
        warnings.warn(f"L-BFGS history limited to {cap} corrections at "
                      f"{hw[1]}x{hw[0]} px (of {m}) to bound memory", stacklevel=5)
    return min(m, cap)


def _optimiser_init(plan: StylePlan, x0: jax.Array, corrections: int, n_losses: int):
    """The chosen optimiser's fresh state for a batch ``x0``."""
    if plan.optimizer == "adam":
        return jax.vmap(lambda x: adam_init(x, n_losses, plan.ema))(x0)
    return lbfgs_init(x0, corrections, n_losses)


def _program(plan: StylePlan, in_jit_loop: bool) -> tuple[Callable, dict]:
    """(jitted program, its static keyword arguments) that runs a chunk (``in_jit_loop``) or one
    iteration of the chosen optimiser."""
    if plan.optimizer == "adam":
        return (adam_chunk if in_jit_loop else adam_step), {}
    return (lbfgs_chunk if in_jit_loop else lbfgs_step), {"precondition": plan.lbfgs_precondition}


def _iterate(state, ema: float) -> jax.Array:
    """The images a state stands for: Adam's iterate average with ``ema``, else its iterate."""
    return adam_average(state) if ema > 0 and isinstance(state, AdamState) else state.x


def _losses_of(raw: np.ndarray, temporal: bool) -> dict:
    losses = {"total": raw[:, 0], "content": raw[:, 1], "style": raw[:, 2], "tv": raw[:, 3]}
    if temporal:
        losses["temporal"] = raw[:, 4]
    return losses


def _lbfgs_axes(state: LbfgsState) -> LbfgsState:
    """Which axis of each L-BFGS state field is the batch (None: shared by the batch)."""
    return LbfgsState(x=0, step=0, g_prev=0, s_hist=0, y_hist=0, rho=1, sy=0, yy=0, head=None, count=None,
                      h_diag=0, iteration=None, losses=0)


def _adam_axes(state: AdamState) -> AdamState:
    return jax.tree.map(lambda _: 0, state)


class _Placement:
    """Where a run's arrays live: one device; a sweep's batch split over a mesh; or one image's
    rows split over a mesh.

    A batch is padded (repeating its last member) to a multiple of the device count; the
    padding is computed like any member and dropped from every result. A single image is split
    along its height (XLA's SPMD partitioner exchanges the convolution halos and sums the Gram
    matrices over devices, so the objective is the same) at every scale whose height divides
    by the device count; other scales run on the mesh's first device's share, replicated.
    """

    def __init__(self, mesh, batch: int):
        usable = mesh is not None and mesh.size > 1
        self.mesh = mesh if usable and batch > 1 else None
        self.rows = mesh if usable and batch == 1 else None
        self.batch = batch
        self.padded = batch if self.mesh is None else -(-batch // self.mesh.size) * self.mesh.size

    def pad(self, rows: list) -> list:
        return rows + [rows[-1]] * (self.padded - len(rows))

    def shared(self, tree):
        m = self.mesh or self.rows
        return tree if m is None else parallel.replicate(tree, m)

    def batched(self, tree):
        if self.mesh is not None:
            return parallel.shard_batch(tree, self.mesh)
        return self.shared(tree)

    def state(self, state, hw):
        if self.mesh is not None:
            axes = _lbfgs_axes(state) if isinstance(state, LbfgsState) else _adam_axes(state)
            return parallel.place(state, axes, self.mesh)
        if self.rows is not None:
            split = hw[0] % self.rows.size == 0
            axes = _row_axes(state, split)
            return parallel.place(state, axes, self.rows)
        return state

    def host(self, x) -> np.ndarray:
        return parallel.to_host(x)[: self.batch]


def _row_axes(state, split: bool):
    """Height axes of a one-image optimiser state (None everywhere when not ``split``): the
    image-shaped fields split along H, the flattened ones along their pixel axis."""
    if not split:
        return jax.tree.map(lambda _: None, state)
    if isinstance(state, LbfgsState):
        return LbfgsState(x=1, step=1, g_prev=1, s_hist=2, y_hist=2, rho=None, sy=None, yy=None, head=None,
                          count=None, h_diag=None, iteration=None, losses=None)
    return jax.tree.map(lambda a: 1 if np.ndim(a) == 4 else None, state)


def _members(plan: StylePlan) -> tuple[list[tuple[int, tuple]], list[dict]]:
    """The batch: (content index, swept settings) of every member, content-major, and each
    member's label (its swept settings, and its content index in a batch of contents)."""
    combos = list(itertools.product(*plan.sweeps.values()))
    names = list(plan.sweeps)
    swept = [k for k, v in plan.sweeps.items() if len(v) > 1]
    members = [(ci, c) for ci in range(len(plan.contents)) for c in combos]
    labels = [({"content": ci} if len(plan.contents) > 1 else {}) | {k: c[names.index(k)] for k in swept}
              for ci, c in members]
    return members, labels


def _member_content_targets(targets: dict, per_content: list[dict], owners: list[int]) -> dict:
    """The targets of a batch of content images: each member's own content activations
    stacked on a batch axis; the Gram targets shared."""
    stacked = {k: jnp.stack([per_content[ci][k] for ci in owners]) for k in targets["content"]}
    return {**targets, "content": stacked}


@dataclass
class _Run:
    """What every scale of a run shares: the batch, where it lives and its loss weights."""

    plan: StylePlan
    net: Any
    labels: list[dict]
    where: _Placement
    owners: list[int]  # content index of each (padded) member
    seeds: list[int]  # random-init seed of each (padded) member
    loss_weights: dict
    params: Any
    in_jit_loop: bool
    lr: jax.Array
    targets_cache: dict | None = None
    compile_seconds: float = 0.0  # compiling the scales' programs ahead

    @property
    def mean(self):
        return self.net.spec.mean_bgr

    def postprocess(self, xs, content_rgbs: list) -> np.ndarray:
        """RGB 0..255 pictures of network-space images ``xs`` (colours post-processed)."""
        rgb = _from_model(xs, self.mean)
        if not self.plan.original_colors:
            return np.clip(rgb, 0, 255)
        return np.stack([color.original_colors(r, content_rgbs[ci]) for r, ci in zip(rgb, self.owners)])


def _prepare_run(plan: StylePlan, net, mesh, in_jit_loop: bool | None, targets_cache: dict | None = None) -> _Run:
    members, labels = _members(plan)
    where = _Placement(mesh, len(members))
    rows = where.pad([c for _, c in members])
    loss_weights = {"content": np.asarray([c[0] for c in rows], np.float32),
                    "style": np.asarray([c[1] for c in rows], np.float32),
                    "tv": np.asarray([c[2] for c in rows], np.float32)}
    if plan.temporal is not None:
        loss_weights["temporal"] = np.full((len(rows),), plan.temporal[2], np.float32)
    loss_weights = where.batched({k: jnp.asarray(v) if where.mesh is None else v
                                  for k, v in loss_weights.items()})
    return _Run(plan, net, labels, where, owners=[ci for ci, _ in where.pad(members)], seeds=[c[3] for c in rows],
                loss_weights=loss_weights, params=where.shared(net.params),
                in_jit_loop=in_jit_loop_default() if in_jit_loop is None else in_jit_loop, lr=jnp.float32(plan.lr),
                targets_cache=targets_cache)


def _scale_objective(plan: StylePlan, hw) -> Objective:
    use_remat = (hw[0] * hw[1] > REMAT_PIXELS) if plan.remat is None else bool(plan.remat)
    return Objective(plan.spec.name, plan.pooling, plan.content_layers, plan.style_layers, use_remat,
                     plan.temporal is not None, plan.precision, batched_content=len(plan.contents) > 1,
                     style_loss=plan.style_loss)


def _placed_targets(run: _Run, k: int, hw, content_rgbs: list, obj: Objective, band_rows) -> dict:
    """The targets of scale ``k``, each member's own content activations in a batch of contents,
    placed where the run lives."""
    targets = _scale_targets(run.plan, run.net, k, hw, content_rgbs[0], obj, band_rows, run.targets_cache)
    if not obj.batched_content:
        return run.where.shared(targets)
    per_content = [targets["content"]] + [
        _target_features(run.net.params, jnp.asarray(_to_model(c, run.mean)), obj)[0] for c in content_rgbs[1:]]
    targets = _member_content_targets(targets, per_content, run.owners)
    return {**run.where.shared({k_: v for k_, v in targets.items() if k_ != "content"}),
            "content": run.where.batched(targets["content"])}


def _converged(before, now: np.ndarray, tol: float) -> bool:
    """Every member's total loss changed by less than ``tol`` of it since ``before``."""
    return before is not None and bool(np.all(np.abs(before - now) < tol * np.abs(before)))


@dataclass
class _Scale:
    """One coarse-to-fine scale, prepared before the run's first iteration."""

    k: int
    hw: tuple
    obj: Objective
    band_rows: int | None
    content_rgbs: list
    targets: dict
    corrections: int  # L-BFGS's history length here (0 for Adam)


def _prepare_scales(run: _Run) -> list[_Scale]:
    """Every scale's objective and targets (their programs compile here, before any step)."""
    plan, scales = run.plan, []
    for k, hw in enumerate(plan.sizes):
        content_rgbs = [media.resize(c, hw) for c in plan.contents]
        obj = _scale_objective(plan, hw)
        band_rows = plan.band_rows[k] if plan.band_rows else None
        x = jax.ShapeDtypeStruct((run.where.padded, *hw, 3), jnp.float32)
        m = _corrections(plan, x, hw) if plan.optimizer == "lbfgs" else 0
        scales.append(_Scale(k, tuple(hw), obj, band_rows, content_rgbs,
                             _placed_targets(run, k, hw, content_rgbs, obj, band_rows), m))
    return scales


def _compile_scales(run: _Run, scales: list[_Scale]) -> float:
    """Compile the iteration program of every whole-image scale ahead, concurrently, from the
    shapes alone (:func:`jaxdream.runtime.cache.compile_ahead`: once in a process, so a video's
    frames trace it once); seconds spent. Runs over a mesh place
    their state with shardings and compile at their first chunk."""
    if run.where.mesh is not None or run.where.rows is not None:
        return 0.0
    fn, static = _program(run.plan, run.in_jit_loop)
    jobs = []
    for sc in scales:
        if sc.band_rows:
            continue
        x = jax.ShapeDtypeStruct((run.where.padded, *sc.hw, 3), jnp.float32)
        state = jax.eval_shape(lambda x, m=sc.corrections, n=sc.obj.n_losses: _optimiser_init(run.plan, x, m, n), x)
        count = (jax.ShapeDtypeStruct((), jnp.int32),) if run.in_jit_loop else ()
        jobs.append((fn, (state, run.params, sc.targets, run.loss_weights, *count, run.lr),
                     {"spec": sc.obj, **static}))
    return compile_ahead(jobs)


def _optimise_scale(run: _Run, sc: _Scale, x0: np.ndarray, callback: Callable[[StyleProgress], Any] | None,
                    chunk: int):
    """Scale ``sc``'s iterations from ``x0``, in chunks (:func:`jaxdream.optim.driver.drive`), until
    its budget, convergence or a callback's stop: (iterate (host), losses, iterations done)."""
    plan, where, obj = run.plan, run.where, sc.obj
    total, tol, every = plan.iterations[sc.k], plan.tol_loss_relative, plan.tol_loss_relative_interval
    x0 = jax.device_put(np.asarray(x0, np.float32))
    state = where.state(_optimiser_init(plan, x0, sc.corrections, obj.n_losses), sc.hw)
    fn, static = _program(plan, run.in_jit_loop)
    before = None

    def advance(state, n: int):
        if sc.band_rows:
            return _band_iterations(state, n, run.params, sc.targets, run.loss_weights, run.lr, obj, sc.band_rows,
                                    plan.lbfgs_precondition)
        if run.in_jit_loop:
            return fn(state, run.params, sc.targets, run.loss_weights, jax.device_put(np.int32(n)), run.lr,
                      spec=obj, **static)
        for _ in range(n):
            state = fn(state, run.params, sc.targets, run.loss_weights, run.lr, spec=obj, **static)
        return state

    def consume(done: int, snap) -> bool:
        nonlocal before
        losses, x = _losses_of(snap[0], obj.temporal), snap[1]
        converged = False
        if tol > 0 and done % every == 0:
            now = losses["total"].astype(np.float64)
            converged, before = _converged(before, now, tol), now
        progress = StyleProgress(sc.k, len(plan.scales), sc.hw, done, total, losses,
                                 run.postprocess(x, sc.content_rgbs), run.labels, converged)
        return bool(callback is not None and callback(progress)) or converged

    pipeline = _pipelined(run, sc)
    snapshot = _snapshot_copy if pipeline else (lambda st: (st.losses, _iterate(st, plan.ema)))
    done, (raw, x) = drive(state, advance, lambda st: snapshot(st, plan.ema) if pipeline else snapshot(st),
                           consume, chunk_sizes(total, chunk, every if tol > 0 else 0), pipeline,
                           read=lambda snap: jax.tree.map(where.host, snap), guard=not sc.band_rows)
    return x, _losses_of(raw, obj.temporal), done


def _pipelined(run: _Run, sc: _Scale) -> bool:
    """Whether chunk k+1 is dispatched before chunk k is read: in-jit loops (accelerators)
    without a stopping rule (whose stop would throw a chunk away) and without bands."""
    return run.in_jit_loop and run.plan.tol_loss_relative == 0 and not sc.band_rows


@functools.partial(jax.jit, static_argnames=("ema",))
def _snapshot_copy(state, ema: float):
    """Copies of a state's losses and iterate, read after the next chunk took the state."""
    return jnp.copy(state.losses), jnp.copy(_iterate(state, ema))


def run_plan(plan: StylePlan, net, *, chunk: int = 20, in_jit_loop: bool | None = None,
             callback: Callable[[StyleProgress], Any] | None = None, mesh=None,
             targets_cache: dict | None = None, compile_only: bool = False) -> StyleResult | float:
    """Carry out a checked :class:`StylePlan` with a loaded network (see :func:`stylize`);
    ``compile_only``: prepare and compile every scale's programs, run nothing, return the
    seconds compiling took."""
    run = _prepare_run(plan, net, mesh, in_jit_loop, targets_cache)
    scales = _prepare_scales(run)
    run.compile_seconds = _compile_scales(run, scales)
    if compile_only:
        return run.compile_seconds
    x = losses = None
    ran = []
    for sc in scales:
        x0 = _initial_batch(plan, sc.hw, [sc.content_rgbs[ci] for ci in run.owners], run.mean, run.seeds) \
            if sc.k == 0 else np.stack(run.where.pad([media.resize(xi, sc.hw) for xi in np.asarray(x)]))
        x, losses, done = _optimise_scale(run, sc, x0, callback, chunk)
        ran.append(done)
    content_rgbs = scales[-1].content_rgbs
    images = run.postprocess(x, content_rgbs)
    return StyleResult(images.astype(np.float32), run.labels, losses, _settings_record(plan, net), ran,
                       _from_model(x, run.mean).astype(np.float32), run.compile_seconds)
