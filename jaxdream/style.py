"""Gatys et al. neural style transfer, with jcjohnson/neural-style's defaults and loss scale.

The objective is a pure function of (image, params, targets, weights): VGG-19 activations of
the image against precomputed content activations and (blended) style Gram matrices, plus total
variation (see :mod:`jaxdream.losses` for the exact scale). The loss weights are traced arrays,
so a sweep over them, or over seeds, runs as one ``vmap``-ed optimisation with one compile.

Optimisers run inside ``jit`` in chunks (``lax.fori_loop`` over iterations, with the number of
iterations a traced argument, so chunks of any length reuse one compiled program); Python sees
each chunk through a callback, which is where the CLI updates its progress bar, prints, saves
and handles Ctrl-C.

L-BFGS is our own (see :func:`lbfgs_init` for why), Adam is optax's.

Example:
    >>> import jaxdream
    >>> result = jaxdream.stylize("cat.jpg", ["starry.jpg"], size=256,
    ...                           num_iterations=200)  # doctest: +SKIP
    >>> jaxdream.media.save_image("out.png", result.image)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from . import color, media, options
from . import precision as precision_mod
from .errors import SettingsError
from .losses import (content_loss, gaussian_moments, gram, masked_gram, sqrtm_newton_schulz, style_loss,
                     total_variation, wasserstein_loss)
from .models import get_spec
from .models.common import pool2x2
from .models.vgg19 import BLOCKS

__all__ = ["stylize", "StyleResult", "StyleProgress", "Objective", "prepare_targets",
           "objective", "lbfgs_init", "lbfgs_chunk", "lbfgs_step", "pyramid_preconditioner",
           "adam_init", "adam_chunk", "adam_step", "in_jit_loop_default", "plan_style", "run_plan",
           "StylePlan", "default_scales", "OPTIMIZERS", "INITS", "CONTENT_LAYERS", "STYLE_LAYERS"]

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
OPTIMIZERS = ("lbfgs", "adam")
STYLE_LOSSES = ("gram", "wasserstein")
#: The Wasserstein style term is ``W2_SCALE * style_weight * W2**2 / C`` per layer. Chosen by
#: eye on astronaut.png in the style of hubble_deep_field.png (128 px, content weight 1, 100
#: L-BFGS iterations from the content): at 1 the content was gone from style weight 30 up,
#: 0.01 with style weight 300 stylised about as strongly as the Gram loss does.
W2_SCALE = 0.01
INITS = ("random", "image", "content")
#: Learning rates neural-style uses: 1 for L-BFGS (no line search), 10 for Adam.
DEFAULT_LEARNING_RATE = {"lbfgs": 1.0, "adam": 1e1}
#: The L-BFGS history (2 * corrections * pixels * 3 floats) is capped to this many bytes.
LBFGS_HISTORY_BUDGET = 4 * 2**30
#: Above this many pixels, gradients are rematerialised block by block (jax.checkpoint).
REMAT_PIXELS = 1024 * 1024

Params = Any


# ------------------------------------------------------------------------------------------
# The objective
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Objective:
    """The static part of the objective (hashable: a ``jit`` static argument).

    Attributes:
        model: network name (``vgg19``).
        pooling: ``max`` or ``avg``.
        content_layers: layers of the content term.
        style_layers: layers of the style term.
        remat: recompute each VGG block's activations in the backward pass
            (``jax.checkpoint``) instead of storing them: about a third more compute, a
            fraction of the memory. Used automatically above :data:`REMAT_PIXELS`.
        precision: ``float32`` or ``bfloat16`` convolutions (:mod:`jaxdream.precision`;
            Gram matrices and losses stay float32).
        temporal: add the video temporal term (Ruder et al.):
            ``weight * mean(mask * (x - warped_prev)**2)`` over all H*W*3 elements, in network
            space, with ``targets["temporal"] = {"image": (H, W, 3), "mask": (H, W, 1)}``.
        batched_content: the content targets carry a batch axis (one content image per batch
            member: a batch of content images run at once); otherwise the batch shares them.
        style_loss: ``gram`` (neural-style's Gram matrices) or ``wasserstein`` (the W2 distance
            between Gaussian fits of the features, :func:`jaxdream.losses.wasserstein_loss`).

    Masks are not static: when the targets carry ``"masks"`` (region masks per style and
    layer) or ``"content_mask"``, the objective masks its terms (see :func:`prepare_targets`).
    """

    model: str = "vgg19"
    pooling: str = "max"
    content_layers: tuple[str, ...] = CONTENT_LAYERS
    style_layers: tuple[str, ...] = STYLE_LAYERS
    remat: bool = False
    temporal: bool = False
    precision: str = "float32"
    batched_content: bool = False
    style_loss: str = "gram"

    @property
    def n_losses(self) -> int:
        """Width of the losses row: [total, content, style, tv(, temporal)]."""
        return 5 if self.temporal else 4

    @property
    def layers(self) -> tuple[str, ...]:
        spec = get_spec(self.model)
        wanted = set(self.content_layers) | set(self.style_layers)
        return tuple(name for name in spec.layers if name in wanted)


def _conv(x, p):
    y = lax.conv_general_dilated(x, p["kernel"], (1, 1), ((1, 1), (1, 1)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def _block_of(name: str) -> int:
    return int(name[4])


def _vgg_blocks(layers: Sequence[str], pooling: str):
    """VGG-19 as a list of block functions ``(x, params) -> (x, {name: activation})``.

    The same computation as :class:`jaxdream.models.vgg19.VGG19` (tested equal), split at the
    pools so that each block can be rematerialised on its own; stops after the deepest layer.
    """
    wanted = set(layers)
    deepest = max(_block_of(name) for name in wanted)
    blocks = []
    for b, n in enumerate(BLOCKS[:deepest], start=1):
        here = frozenset(k for k in wanted if _block_of(k) == b)

        def block(x, params, b=b, n=n, here=here, last=b == deepest):
            out = {}
            for i in range(1, n + 1):
                x = _conv(x, params[f"conv{b}_{i}"])
                if f"conv{b}_{i}" in here:
                    out[f"conv{b}_{i}"] = x
                x = jax.nn.relu(x)
                if f"relu{b}_{i}" in here:
                    out[f"relu{b}_{i}"] = x
                if last and len(out) == len(here):
                    return x, out
            x = pool2x2(x, pooling)
            if f"pool{b}" in here:
                out[f"pool{b}"] = x
            return x, out

        blocks.append(block)
    return blocks


def features(params: Params, x: jax.Array, objective: Objective) -> dict[str, jax.Array]:
    """Activations of ``objective.layers`` for a batch ``x`` (N, H, W, 3) in network space."""
    if objective.model != "vgg19":
        spec = get_spec(objective.model)
        return spec.make(objective.layers, objective.pooling).apply(params, x)
    feats = {}
    params_, x = precision_mod.network_inputs(params["params"], x, objective.precision)
    for block in _vgg_blocks(objective.layers, objective.pooling):
        x, out = block(x, params_)
        feats.update(precision_mod.to_float32(out, objective.precision))
    return feats


@functools.partial(jax.jit, static_argnames=("objective",))
def _target_features(params, x, objective: Objective):
    feats = features(params, x[None], objective)
    return ({k: feats[k][0] for k in objective.content_layers},
            {k: gram(feats[k][0]) for k in objective.style_layers})


@functools.partial(jax.jit, static_argnames=("objective",))
def _style_statistics(params, x, masks, objective: Objective) -> dict:
    """Per style layer of one style image: its Gram matrix, or its Gaussian moments
    ``(mean, cov)`` for the Wasserstein loss; over the positions ``masks[layer]`` weights
    (every position when ``masks`` is None)."""
    feats = features(params, x[None], objective)
    out = {}
    for k in objective.style_layers:
        f, m = feats[k][0], None if masks is None else masks[k]
        if objective.style_loss == "wasserstein":
            out[k] = gaussian_moments(f, m)
        else:
            out[k] = gram(f) if m is None else masked_gram(f, m)
    return out


def layer_masks(mask: np.ndarray, objective: Objective, layers: Sequence[str], hw=None) -> dict:
    """A mask of an image of size ``hw`` (default: the mask's own size) resized (bilinear,
    area-weighted when shrinking) to the resolution of each of ``layers`` for that image:
    ``{layer: (h_l, w_l)}``."""
    from .masks import resize_mask
    spec = get_spec(objective.model)
    h, w = mask.shape if hw is None else hw
    return {k: jnp.asarray(resize_mask(mask, (spec.output_size(h, k), spec.output_size(w, k))))
            for k in layers}


def _blend_moments(moments: list, blend) -> tuple[np.ndarray, np.ndarray]:
    """Moments of the blend of several styles' features (a mixture: means and second raw
    moments are blended, as crowsonkb's style-transfer-pytorch does), in float64."""
    mean = sum(w * np.asarray(m, np.float64) for w, (m, _) in zip(blend, moments))
    srm = sum(w * (np.asarray(c, np.float64) + np.outer(m, m)) for w, (m, c) in zip(blend, moments))
    return mean, srm - np.outer(mean, mean)


_sqrtm = jax.jit(sqrtm_newton_schulz)


def _w2_target(mean, cov) -> dict:
    cov = jnp.asarray(cov, jnp.float32)
    return {"mean": jnp.asarray(mean, jnp.float32), "cov": cov, "cov_sqrt": _sqrtm(cov)}


def _style_targets(per_style: list[dict], blend: np.ndarray, objective: Objective, regions: bool) -> dict:
    """The style part of the targets: blended over the styles, or one per style (stacked on
    axis 0) when each style has its own region."""
    layers = objective.style_layers
    if objective.style_loss == "wasserstein":
        if regions:
            stats = {k: [_w2_target(*st[k]) for st in per_style] for k in layers}
            return {"w2": {k: jax.tree.map(lambda *a: jnp.stack(a), *stats[k]) for k in layers}}
        return {"w2": {k: _w2_target(*_blend_moments([st[k] for st in per_style], blend)) for k in layers}}
    if regions:
        return {"gram": {k: jnp.stack([st[k] for st in per_style]) for k in layers}}
    grams = None
    for w, g in zip(blend, per_style):
        grams = ({k: w * v for k, v in g.items()} if grams is None
                 else {k: grams[k] + w * v for k, v in g.items()})
    return {"gram": grams}


def prepare_targets(params: Params, content_x, style_xs, blend, objective: Objective, *,
                    masks: Sequence[np.ndarray] | None = None, style_masks: Sequence | None = None,
                    content_mask: np.ndarray | None = None) -> dict:
    """Content activations and blended style Gram matrices, the objective's fixed targets.

    Args:
        params: the network's parameters.
        content_x: the content image in network space (H, W, 3).
        style_xs: style images in network space, each (h, w, 3), any sizes.
        blend: one weight per style image; the target Gram of each layer is
            ``sum_s blend_s G_s / sum_s blend_s`` (neural-style's ``-style_blend_weights``).
            Matching the blended target has the same gradient as the blend-weighted sum of
            per-style terms (they differ by a constant), at the cost of one comparison.
            With ``masks`` each style keeps its own target and ``blend`` scales its region's
            term (normalised to an average of 1).
        masks: one mask of the content image per style (Gatys et al.'s spatial control):
            style s is matched by the masked Gram of its region (see :func:`_style_term`).
        style_masks: per style image, None or a mask of it: its target comes from the
            positions the mask weights.
        content_mask: a mask weighting the content term's positions.

        Masks are (h, w) arrays in 0..1 of their image's aspect ratio, any size: each is
        resized to every layer's resolution.

    Returns:
        ``{"content": {layer: (h, w, C)}, "gram": {layer: (C, C)}}``; with ``masks`` the Gram
        targets are stacked per style, (S, C, C), and ``"masks"`` ({layer: (S, h, w)}) and
        ``"region"`` ((S,) weights) are added; with ``content_mask``, ``"content_mask"``
        ({layer: (h, w)}). With ``objective.style_loss == "wasserstein"``, ``"w2"`` ({layer:
        {"mean", "cov", "cov_sqrt"}}) replaces ``"gram"``.
    """
    content, _ = _target_features(params, jnp.asarray(content_x), objective)
    blend = np.asarray(blend, np.float64)
    blend = blend / blend.sum()
    style_masks = list(style_masks) if style_masks is not None else [None] * len(style_xs)
    per_style = []
    for sx, sm in zip(style_xs, style_masks):
        if sm is None and objective.style_loss == "gram":
            per_style.append(_target_features(params, jnp.asarray(sx), objective)[1])
        else:
            sm = None if sm is None else layer_masks(np.asarray(sm), objective, objective.style_layers,
                                                     np.shape(sx)[:2])
            per_style.append(_style_statistics(params, jnp.asarray(sx), sm, objective))
    targets = {"content": content, **_style_targets(per_style, blend, objective, masks is not None)}
    if masks is not None:
        hw = np.shape(content_x)[:2]
        by_style = [layer_masks(np.asarray(m), objective, objective.style_layers, hw) for m in masks]
        targets["masks"] = {k: jnp.stack([m[k] for m in by_style]) for k in objective.style_layers}
        targets["region"] = jnp.asarray(blend * len(blend), jnp.float32)
    if content_mask is not None:
        targets["content_mask"] = layer_masks(np.asarray(content_mask), objective, objective.content_layers,
                                              np.shape(content_x)[:2])
    return targets


def _style_term(f: jax.Array, k: str, targets: dict, w_style, spec: Objective) -> jax.Array:
    """The style term of layer ``k``'s activations ``f`` (h, w, C).

    With region masks each style s contributes ``region_s * mean(m_s**2) * d_s``, where d_s
    compares the masked Gram (or masked Gaussian moments) of its region with its target: the
    region's statistics are those of its own positions (a small region's loss does not blow
    up), and weighting by the region's share of the layer keeps each position's pull as strong
    as in an unmasked run. An all-ones mask for one style is exactly the unmasked term.
    """
    masks = targets.get("masks")
    w2 = targets.get("w2")
    if masks is None:
        if w2 is None:
            return style_loss(gram(f), targets["gram"][k], w_style)
        t = w2[k]
        return W2_SCALE * wasserstein_loss(*gaussian_moments(f), t["mean"], t["cov"], t["cov_sqrt"], w_style)
    m = masks[k]
    if w2 is None:
        per = jax.vmap(lambda mj, tj: style_loss(masked_gram(f, mj), tj))(m, targets["gram"][k])
    else:
        t = w2[k]
        per = W2_SCALE * jax.vmap(lambda mj, mu, cov, sq: wasserstein_loss(*gaussian_moments(f, mj), mu, cov, sq))(
            m, t["mean"], t["cov"], t["cov_sqrt"])
    area = jnp.mean(jnp.square(m), axis=(-2, -1))
    return w_style * jnp.sum(targets["region"] * area * per)


def objective(x: jax.Array, params: Params, targets: dict, weights: dict,
              spec: Objective) -> tuple[jax.Array, jax.Array]:
    """The Gatys loss of one image.

    Args:
        x: (H, W, 3) image in the network's input space.
        params: network parameters.
        targets: from :func:`prepare_targets`.
        weights: ``{"content", "style", "tv"}`` scalars (traced: no recompiles), plus
            ``"temporal"`` when ``spec.temporal``.
        spec: the static :class:`Objective`.

    Returns:
        (total, parts) with parts = [content, style, tv] (and temporal when ``spec.temporal``).
    """
    w_content, w_style = weights["content"], weights["style"]
    content_masks = targets.get("content_mask")

    def layer_terms(out):
        c = sum((content_loss(out[k][0], targets["content"][k], w_content,
                              None if content_masks is None else content_masks[k])
                 for k in spec.content_layers if k in out), jnp.float32(0))
        s = sum((_style_term(out[k][0], k, targets, w_style, spec)
                 for k in spec.style_layers if k in out), jnp.float32(0))
        return c, s

    content = style = jnp.float32(0)
    if spec.model == "vgg19":
        params_, h = precision_mod.network_inputs(params["params"], x[None], spec.precision)
        for block in _vgg_blocks(spec.layers, spec.pooling):
            def run(h, params_, block=block):
                h, out = block(h, params_)
                return (h, *layer_terms(precision_mod.to_float32(out, spec.precision)))
            if spec.remat:
                run = jax.checkpoint(run)
            h, c, s = run(h, params_)
            content, style = content + c, style + s
    else:
        content, style = layer_terms(features(params, x[None], spec))
    tv = total_variation(x, weights["tv"])
    total = content + style + tv
    if spec.temporal:
        t = targets["temporal"]
        temporal = weights["temporal"] * jnp.mean(t["mask"] * (x - t["image"]) ** 2)
        return total + temporal, jnp.stack([content, style, tv, temporal])
    return total, jnp.stack([content, style, tv])


# ------------------------------------------------------------------------------------------
# L-BFGS (neural-style's: Torch optim.lbfgs without line search) and Adam, in chunks
# ------------------------------------------------------------------------------------------


class LbfgsState(NamedTuple):
    """L-BFGS state of a batch of B images.

    The history is a ring buffer of ``m`` slots shared by the batch (one scalar ``head``, so
    every update is an in-place slice write); a pair one member rejects (``y.s <= 1e-10``) is
    stored with ``rho = 0``, which makes the two-loop recursion skip it for that member.
    """

    x: jax.Array          # (B, H, W, 3) the next points to evaluate
    step: jax.Array       # (B, H, W, 3) the steps that led to x
    g_prev: jax.Array     # (B, n) gradients at x - step
    s_hist: jax.Array     # (B, m, n)
    y_hist: jax.Array     # (B, m, n)
    rho: jax.Array        # (m, B) 1 / (y.s), 0 for a rejected pair
    sy: jax.Array         # (B, m, m) s_i . y_j of every two slots (the two-loop's inner products)
    head: jax.Array       # next slot to write
    count: jax.Array      # slots written (at most m)
    h_diag: jax.Array     # (B,) initial Hessian scale y.s / y.y
    iteration: jax.Array  # evaluations done
    losses: jax.Array     # (B, 4|5) [total, content, style, tv(, temporal)] at the last points


def lbfgs_init(x: jax.Array, corrections: int, n_losses: int = 4) -> LbfgsState:
    """Fresh L-BFGS state for a batch ``x`` (B, H, W, 3) with ``corrections`` history slots
    (``n_losses``: :attr:`Objective.n_losses`).

    Why our own L-BFGS rather than ``optax.lbfgs``: neural-style's results and speed come from
    Torch's ``optim.lbfgs`` as neural-style calls it: no line search, learning rate 1, first
    step scaled by ``min(1, 1/|g|_1)``, 100 corrections. That costs exactly one loss-and-gradient
    evaluation per iteration, where optax's zoom line search spends about four (and took 31 s to
    compile here), so 1000 iterations mean the same work and the same numbers as there. The
    Gatys objective is smooth enough that unit steps along the two-loop direction work well.
    """
    b, n = x.shape[0], x[0].size
    return LbfgsState(
        x=x, step=jnp.zeros_like(x), g_prev=jnp.zeros((b, n), x.dtype),
        s_hist=jnp.zeros((b, corrections, n), x.dtype),
        y_hist=jnp.zeros((b, corrections, n), x.dtype),
        rho=jnp.zeros((corrections, b), x.dtype), sy=jnp.zeros((b, corrections, corrections), x.dtype),
        head=jnp.int32(0), count=jnp.int32(0), h_diag=jnp.ones((b,), jnp.float32), iteration=jnp.int32(0),
        losses=jnp.zeros((b, n_losses), jnp.float32))


def _dot(a, b):
    return jnp.sum(a * b, axis=-1)


class _Ring(NamedTuple):
    """A history ``(B, m, n)`` whose slot ``head`` is being replaced by ``new`` (B, n), read as if
    replaced: products and combinations use the old buffer with the slot's term swapped, so
    the only user of the written buffer is the state returned (written in place; reading the
    written buffer made XLA copy the whole history several times per iteration)."""

    old: jax.Array
    new: jax.Array
    head: jax.Array

    def dot(self, v):
        """``x_j . v`` for every slot j: (B, m)."""
        out = jnp.einsum("bmn,bn->bm", self.old, v, precision=lax.Precision.HIGHEST)
        return out.at[:, self.head].set(_dot(self.new, v))

    def combine(self, c):
        """``sum_j c_j x_j`` for (B, m) coefficients: (B, n)."""
        out = jnp.einsum("bm,bmn->bn", c.at[:, self.head].set(0.0), self.old, precision=lax.Precision.HIGHEST)
        return out + c[:, self.head, None] * self.new


def _two_loop(q0, s_ring: _Ring, y_ring: _Ring, rho, sy, head, count, initial):
    """The L-BFGS two-loop recursion ``d = H q0`` (Nocedal and Wright, algorithm 7.4) over the
    ``count`` newest slots of the ring (next slot ``head``), with ``initial`` as H0.

    Written with the history's inner products ``sy`` (``s_i . y_j``): the first loop's
    ``alpha_i = rho_i s_i . (q0 - sum_{j newer} alpha_j y_j)`` is a triangular recurrence in
    ``s_i . q0`` and ``sy``, and the second loop's ``beta_i`` likewise in ``y_i . r0``; so the
    history is read in four matrix-vector products instead of 2m dependent vector steps. Same
    arithmetic up to rounding (relative 4e-7 on the direction).
    """
    m, batch = rho.shape
    order = (head - 1 - jnp.arange(m)) % m                       # slots, newest first
    live = jnp.arange(m) < count
    r_ = jnp.where(live[:, None], rho[order], 0.0).T               # (B, m)
    b_ = jnp.take(jnp.take(sy, order, axis=1), order, axis=2)      # (B, m, m) s_i . y_j
    sq = s_ring.dot(q0)[:, order]

    def newest_first(i, alpha):                                    # alpha_i over newer j < i
        newer = jnp.arange(m) < i
        a = r_[:, i] * (sq[:, i] - jnp.sum(jnp.where(newer, b_[:, i, :] * alpha, 0.0), -1))
        return alpha.at[:, i].set(a)

    alpha = lax.fori_loop(0, m, newest_first, jnp.zeros((batch, m), q0.dtype))
    in_slots = lambda v: jnp.zeros_like(v).at[:, order].set(v)    # noqa: E731
    r0 = initial(q0 - y_ring.combine(in_slots(alpha)))
    yr = y_ring.dot(r0)[:, order]

    def oldest_first(k, beta):                                     # beta_i over older j > i
        i = m - 1 - k
        older = jnp.arange(m) > i
        b = r_[:, i] * (yr[:, i] + jnp.sum(jnp.where(older, b_[:, :, i] * (alpha - beta), 0.0), -1))
        return beta.at[:, i].set(b)

    beta = lax.fori_loop(0, m, oldest_first, jnp.zeros((batch, m), q0.dtype))
    return r0 + s_ring.combine(in_slots(alpha - beta))


def _lbfgs_iteration(state: LbfgsState, value_and_grad, lr, precondition=None) -> LbfgsState:
    """One evaluation, one history update, one step (Torch optim.lbfgs, no line search).

    ``precondition`` (default: none, the identity) is a symmetric positive definite linear map
    of a batch of images (B, H, W, 3) used as the initial inverse Hessian, scaled by
    ``y.s / y.My`` (preconditioned L-BFGS; ``benchmarks/precondition_bench.py`` measures a
    multi-scale one). Without it the algorithm is neural-style's; the two-loop recursion is
    evaluated from the stored inner products (:func:`_two_loop`), the same up to rounding.
    """
    if precondition is None:
        apply = lambda v: v  # noqa: E731
    else:
        apply = lambda v: precondition(v.reshape(state.x.shape)).reshape(v.shape)  # noqa: E731
    m = state.s_hist.shape[1]
    batch = state.x.shape[0]
    (f, parts), g = value_and_grad(state.x)
    g = g.reshape(batch, -1)
    # Store the pair of the previous step (written at iteration 0 too, as an empty slot that
    # the head does not pass, to keep the update unconditional and in place).
    s, y = state.step.reshape(batch, -1), g - state.g_prev
    ys = _dot(y, s)
    accept = (state.iteration > 0) & (ys > 1e-10)
    write = state.iteration > 0
    s_ring, y_ring = _Ring(state.s_hist, s, state.head), _Ring(state.y_hist, y, state.head)
    rho = lax.dynamic_update_index_in_dim(
        state.rho, jnp.where(accept, 1.0 / jnp.where(accept, ys, 1.0), 0.0), state.head, 0)
    # the inner products of the new pair with every slot (row and column ``head`` of sy)
    sy = lax.dynamic_update_index_in_dim(state.sy, y_ring.dot(s), state.head, 1)
    sy = lax.dynamic_update_index_in_dim(sy, s_ring.dot(y), state.head, 2)
    h_diag = jnp.where(accept, ys / jnp.where(accept, _dot(y, apply(y)), 1.0), state.h_diag)
    head = jnp.where(write, (state.head + 1) % m, state.head)
    count = jnp.where(write, jnp.minimum(state.count + 1, m), state.count)
    d = _two_loop(-g, s_ring, y_ring, rho, sy, head, count, lambda q: apply(q) * h_diag[:, None])
    # Torch: the first step is scaled by min(1, 1/|g|_1) (|Mg|_1 when preconditioned); a
    # non-descent direction (possible with float32 curvature pairs) falls back to that scaled
    # (preconditioned) steepest descent.
    fresh = (state.iteration == 0) | (_dot(g, d) >= 0)
    d = jnp.where(fresh[:, None], -apply(g), d)
    t = jnp.where(fresh, jnp.minimum(1.0, 1.0 / jnp.sum(jnp.abs(d), axis=-1)), 1.0) * lr
    step = (t[:, None] * d).reshape(state.x.shape)
    # the slots are written after every read of the old history (they depend on the step);
    # without that order XLA copied the whole history twice per iteration
    tie = 0.0 * t[:, None]  # 0 (t is finite), but computed from the step: XLA orders the writes last
    s, y = s + tie, y + tie
    s_hist = lax.dynamic_update_index_in_dim(state.s_hist, s, state.head, 1)
    y_hist = lax.dynamic_update_index_in_dim(state.y_hist, y, state.head, 1)
    return LbfgsState(
        x=state.x + step, step=step, g_prev=g, s_hist=s_hist, y_hist=y_hist, rho=rho, sy=sy, head=head,
        count=count, h_diag=h_diag, iteration=state.iteration + 1,
        losses=jnp.concatenate([f[:, None], parts], axis=1))


def _vg(params, targets, weights, spec):
    return jax.value_and_grad(
        lambda x: objective(x, params, targets, weights, spec), has_aux=True)


def _member_targets(targets, spec: Objective):
    """(the batch member's content targets or None, and how to rebuild its targets): with
    ``spec.batched_content`` each member has its own content activations (axis 0)."""
    content = targets["content"] if spec.batched_content else None
    return content, (lambda c: targets if c is None else {**targets, "content": c})


def _batched_vg(params, targets, weights, spec):
    """Loss and gradient of each image of a batch, each with its own loss weights (and its own
    content targets when ``spec.batched_content``)."""
    content, member = _member_targets(targets, spec)

    def one(x, w, c):
        return _vg(params, member(c), w, spec)(x)
    return lambda xs: jax.vmap(one, in_axes=(0, 0, None if content is None else 0))(xs, weights, content)


#: Levels of :func:`pyramid_preconditioner`: blocks of 2, 4, ..., 32 px.
PYRAMID_LEVELS = 5


def pyramid_preconditioner(weight: float, levels: int = PYRAMID_LEVELS):
    """``M v = v + weight * sum_{k=1..levels} U_k D_k v`` on a batch of images (B, H, W, C), or
    None for ``weight`` 0 (plain L-BFGS).

    ``D_k`` takes the mean of each 2^k x 2^k block (the last blocks of a side that 2^k does not
    divide are zero-padded, still divided by 4^k) and ``U_k`` repeats it back over the block, so
    ``U_k D_k = P_k P_kᵀ / 4^k`` is symmetric positive semi-definite and M positive definite.
    As L-BFGS's initial inverse Hessian it moves the lowest spatial frequencies up to
    ``1 + levels * weight`` times as far as the highest: optimising a Laplacian pyramid of
    the picture instead of its pixels.
    """
    if not weight:
        return None

    def apply(v):
        b, h, w, c = v.shape
        out = v
        for k in range(1, levels + 1):
            f = 2 ** k
            hp, wp = -(-h // f) * f, -(-w // f) * f
            padded = jnp.pad(v, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
            means = padded.reshape(b, hp // f, f, wp // f, f, c).mean(axis=(2, 4))
            out = out + weight * jnp.repeat(jnp.repeat(means, f, axis=1), f, axis=2)[:, :h, :w]
        return out
    return apply


@functools.partial(jax.jit, static_argnames=("spec", "precondition"), donate_argnames=("state",))
def lbfgs_chunk(state: LbfgsState, params, targets, weights, n_steps, lr, spec: Objective,
                precondition: float = 0.0):
    """Run ``n_steps`` L-BFGS iterations (one evaluation each) for a batch of images.

    Args:
        state: :class:`LbfgsState` from :func:`lbfgs_init`, donated.
        params, targets: shared by the batch.
        weights: ``{"content", "style", "tv"}`` arrays of shape (B,).
        n_steps: traced int: any chunk length reuses the compiled program.
        lr: traced learning rate (1 as in neural-style).
        spec: the static :class:`Objective`.
        precondition: static weight of :func:`pyramid_preconditioner` (0: neural-style's
            L-BFGS).
    """
    vg = _batched_vg(params, targets, weights, spec)
    m = pyramid_preconditioner(precondition)
    return lax.fori_loop(0, n_steps, lambda i, s: _lbfgs_iteration(s, vg, lr, m), state)


@functools.partial(jax.jit, static_argnames=("spec", "precondition"), donate_argnames=("state",))
def lbfgs_step(state: LbfgsState, params, targets, weights, lr, spec: Objective, precondition: float = 0.0):
    """One L-BFGS iteration for a batch of images (see :func:`lbfgs_chunk`)."""
    return _lbfgs_iteration(state, _batched_vg(params, targets, weights, spec), lr,
                            pyramid_preconditioner(precondition))


@functools.partial(jax.jit, static_argnames=("precondition",), donate_argnames=("state",))
def lbfgs_apply(state: LbfgsState, total: jax.Array, parts: jax.Array, grad: jax.Array, lr,
                precondition: float = 0.0) -> LbfgsState:
    """One L-BFGS iteration from a loss and gradient computed elsewhere (band by band):
    ``total`` (B,), ``parts`` (B, n), ``grad`` like ``state.x``."""
    return _lbfgs_iteration(state, lambda x: ((total, parts), grad), lr, pyramid_preconditioner(precondition))


class AdamState(NamedTuple):
    """Adam state of one image, with an exponential moving average of its iterates
    (crowsonkb/style-transfer-pytorch's EMA: ``average`` starts at 0 and ``accum`` is
    ``decay**t``, so ``average / (1 - accum)`` is the bias-corrected average; see
    :func:`adam_average`)."""

    x: jax.Array
    opt: Any
    iteration: jax.Array
    losses: jax.Array
    average: jax.Array
    accum: jax.Array
    decay: jax.Array


def adam_init(x: jax.Array, n_losses: int = 4, ema: float = 0.0) -> AdamState:
    """Fresh Adam state at ``x`` (optax's Adam; the learning rate is passed per chunk), its
    iterate average decaying by ``ema`` per step (0: the average is the last iterate)."""
    return AdamState(x=x, opt=optax.adam(1.0).init(x), iteration=jnp.int32(0),
                     losses=jnp.zeros((n_losses,), jnp.float32), average=jnp.zeros_like(x),
                     accum=jnp.float32(1.0), decay=jnp.float32(ema))


def adam_average(state: AdamState) -> jax.Array:
    """The bias-corrected iterate average ``average / (1 - decay**t)`` of a (batch of) Adam
    state(s) (the current iterate before the first step)."""
    accum = jnp.reshape(state.accum, state.accum.shape + (1,) * (state.x.ndim - state.accum.ndim))
    return jnp.where(accum < 1, state.average / jnp.where(accum < 1, 1 - accum, 1), state.x)


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnames=("state",))
def adam_chunk(state: AdamState, params, targets, weights, n_steps, lr, spec: Objective):
    """Run ``n_steps`` Adam steps for a batch of images (see :func:`lbfgs_chunk`)."""
    opt = optax.adam(lr)
    content, member = _member_targets(targets, spec)

    def one(state, weights, c):
        vg = _vg(params, member(c), weights, spec)
        return lax.fori_loop(0, n_steps, lambda i, s: _adam_iteration(s, vg, opt), state)
    return jax.vmap(one, in_axes=(0, 0, None if content is None else 0))(state, weights, content)


def _adam_iteration(s: AdamState, value_and_grad, opt) -> AdamState:
    (f, parts), g = value_and_grad(s.x)
    updates, o = opt.update(g, s.opt, s.x)
    x = optax.apply_updates(s.x, updates)
    return AdamState(x, o, s.iteration + 1, jnp.concatenate([f[None], parts]),
                     s.decay * s.average + (1 - s.decay) * x, s.accum * s.decay, s.decay)


@functools.partial(jax.jit, donate_argnames=("state",))
def adam_apply(state: AdamState, total: jax.Array, parts: jax.Array, grad: jax.Array, lr) -> AdamState:
    """One Adam step from a loss and gradient computed elsewhere (see :func:`lbfgs_apply`)."""
    return jax.vmap(lambda s, f, p, g: _adam_iteration(s, lambda x: ((f, p), g), optax.adam(lr)))(
        state, total, parts, grad)


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnames=("state",))
def adam_step(state: AdamState, params, targets, weights, lr, spec: Objective):
    """One Adam step for a batch of images (see :func:`adam_chunk`)."""
    content, member = _member_targets(targets, spec)
    return jax.vmap(lambda s, w, c: _adam_iteration(s, _vg(params, member(c), w, spec), optax.adam(lr)),
                    in_axes=(0, 0, None if content is None else 0))(state, weights, content)


def in_jit_loop_default() -> bool:
    """Whether iterations run as one ``lax.fori_loop`` inside ``jit`` (default: not on CPU).

    Used by style transfer's chunks and DeepDream's ascent steps. On XLA:CPU (jax 0.10.2) a
    VGG loss-and-gradient inside a while loop ran about 3.5 times slower than the same
    computation as a top-level jitted call (0.70 s -> 2.46 s per evaluation at 128 px), and a
    GoogLeNet dream gradient 1.6 times slower (0.58 s -> 0.35 s per 512 px step), each measured
    in one run; so on CPU the loop is a Python loop over the jitted one-iteration step (same
    compiled program every call, dispatch costs microseconds). On GPU and TPU the whole loop
    runs inside ``jit``.
    """
    return jax.default_backend() != "cpu"


# ------------------------------------------------------------------------------------------
# The driver
# ------------------------------------------------------------------------------------------


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

    @property
    def image(self) -> np.ndarray:
        """The first (or only) result."""
        return self.images[0]


def default_scales(size: int, coarsest: int = 512) -> tuple[int, ...]:
    """Automatic coarse-to-fine scales: ``size`` halved until at most ``coarsest``.

    >>> default_scales(2048)
    (512, 1024, 2048)
    """
    scales = [int(size)]
    while scales[0] > coarsest:
        scales.insert(0, scales[0] // 2)
    return tuple(scales)


def _as_list(value, name: str, cast=float) -> list:
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(value)
    else:
        values = [value]
    if not values:
        raise SettingsError(f"{name}: give at least one value")
    return values


def _fmt(value: float) -> str:
    return f"{value:g}"


def _load(image, size_longest: int | None, what: str) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return media.load_image(image, size=size_longest)
    arr = np.asarray(image, np.float32)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise SettingsError(f"{what}: expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if size_longest is not None:
        arr = media.resize(arr, media.fit_size(*arr.shape[:2], size_longest))
    return arr


def _iterations_per_scale(num_iterations, n_scales: int) -> list[int]:
    number = options.get("num_iterations")
    if isinstance(num_iterations, (list, tuple)):
        its = number.check_all(num_iterations)
        if len(its) != n_scales:
            raise SettingsError(f"num_iterations: {len(its)} values for {n_scales} scales")
    else:
        n = number.check(num_iterations)
        its = [n] + [max(min(n, 50), n // 2 ** k) for k in range(1, n_scales)]
    return its


@dataclass
class StylePlan:
    """Everything :func:`stylize` will do, checked and read, before any network is loaded.

    Built by :func:`plan_style`; :func:`run_plan` carries it out. ``describe`` is what
    ``jaxdream style --dry-run`` prints.
    """

    spec: Any
    content_full: np.ndarray
    style_full: list
    init: Any
    init_full: np.ndarray | None
    blend: list
    sweeps: dict
    content_layers: tuple
    style_layers: tuple
    scales: tuple
    sizes: list
    style_sizes: list
    iterations: list
    optimizer: str
    lr: float
    corrections: int
    pooling: str
    original_colors: bool
    color_transfer: str | None
    temporal: tuple | None
    remat: bool | None
    style_scale: float = 1.0
    memory: int = 0
    band_rows: list = field(default_factory=list)  # per scale: None (whole image) or rows per band
    precision: str = "float32"
    contents_full: list = field(default_factory=list)  # a batch of content images (the first is content_full)
    tol_loss_relative: float = field(kw_only=True)  # 0: every scale runs its full budget
    tol_loss_relative_interval: int = field(kw_only=True)
    style_loss: str = field(default="gram", kw_only=True)
    ema: float = field(default=0.0, kw_only=True)  # Adam's iterate average (0: off)
    lbfgs_precondition: float = field(default=0.0, kw_only=True)  # pyramid_preconditioner's weight
    masks: list = field(default_factory=list, kw_only=True)  # (H, W) per style, at content_full's size
    style_masks: list = field(default_factory=list, kw_only=True)  # None or (h, w) per style image
    content_mask: np.ndarray | None = field(default=None, kw_only=True)
    mask_names: dict = field(default_factory=dict, kw_only=True)  # for the settings record

    @property
    def masked(self) -> bool:
        """Whether any mask or the Wasserstein loss is used (whole-image programs only)."""
        return bool(self.masks) or self.content_mask is not None or any(
            m is not None for m in self.style_masks) or self.style_loss != "gram"

    @property
    def contents(self) -> list:
        """Every content image of the run: a batch of them, or the one."""
        return self.contents_full or [self.content_full]

    @property
    def combos(self) -> int:
        """Swept setting combinations per content image."""
        return math.prod(len(v) for v in self.sweeps.values())

    @property
    def batch(self) -> int:
        """Images optimised at once: every swept combination of every content image."""
        return len(self.contents) * self.combos

    def describe(self) -> str:
        steps = ", ".join(f"{w}x{h} for {n} iterations" + (f" (bands of {b} rows)" if b else "")
                          for (h, w), n, b in zip(self.sizes, self.iterations,
                                                  self.band_rows or [None] * len(self.sizes)))
        if self.tol_loss_relative > 0:
            steps += (f" (each stopping once the loss changes by less than {self.tol_loss_relative:g} "
                      f"in {self.tol_loss_relative_interval} iterations)")
        optimizer = self.optimizer + (f" with a pyramid preconditioner of weight {self.lbfgs_precondition:g}"
                                      if self.lbfgs_precondition else "")
        return (f"style transfer: {steps}; {self.batch} image(s) at once; {optimizer}; "
                f"about {self.memory / 2**30:.1f} GiB of memory")


def _check_numbers(sweeps: dict, style_scale, lbfgs_num_correction, chunk, learning_rate, blend,
                   tolerance: tuple) -> None:
    for name, values in sweeps.items():
        options.get(name).check_all(values)
    options.get("lbfgs_num_correction").check(lbfgs_num_correction)
    options.get("chunk").check(chunk)
    options.get("tol_loss_relative").check(tolerance[0])
    options.get("tol_loss_relative_interval").check(tolerance[1])
    options.get("style_scale").check(style_scale)
    if learning_rate is not None:
        options.get("learning_rate").check(learning_rate)
    options.get("style_blend_weights").check_all(blend)
    if sum(blend) <= 0:
        raise SettingsError(f"style blend weights must be non-negative with a positive sum, "
                            f"got {', '.join(map(_fmt, blend))}")


def check_scales(scales, size: int) -> tuple[int, ...]:
    """The coarse-to-fine scales of a run: ``scales`` checked, or :func:`default_scales`."""
    options.get("size").check(size)
    if scales is None or len(scales) == 0:
        scales = default_scales(size) if scales is None else (size,)
    scales = tuple(options.get("scales").check_all(scales))
    if list(scales) != sorted(scales):
        raise SettingsError(f"scales must be increasing positive sizes, got {scales}")
    return scales


def _check_temporal(temporal, content_full: np.ndarray):
    if temporal is None:
        return None
    t_image, t_mask, t_weight = temporal
    t_image = np.asarray(t_image, np.float32)
    t_mask = np.asarray(t_mask, np.float32)
    if t_image.shape != content_full.shape or t_mask.shape != content_full.shape[:2]:
        raise SettingsError(f"temporal target {t_image.shape} and mask {t_mask.shape} must match "
                            f"the content image {content_full.shape}")
    return t_image, t_mask, options.get("temporal_weight").check(t_weight)


def _check_plan_sizes(plan: StylePlan, style_scale: float, requested: int | None = None) -> None:
    """Every picture the run computes on: big enough for the layers, within the pixel ceiling
    and (estimated) within the device's memory."""
    from . import memory
    spec = plan.spec
    layers = tuple(dict.fromkeys(plan.content_layers + plan.style_layers))
    spec.check_size(*plan.sizes[0], layers)
    for hw in plan.style_sizes[0]:
        try:
            spec.check_size(*hw, plan.style_layers)
        except SettingsError as e:
            raise SettingsError(f"style image (at style scale {style_scale:g}): {e}") from None
    (h, w), scale = plan.sizes[-1], plan.scales[-1]
    memory.check_pixels(h, w, f"size {scale}")
    for sh, sw in plan.style_sizes[-1]:
        memory.check_pixels(sh, sw, f"style image at style scale {style_scale:g} x size {scale}")
    available = memory.available_bytes()
    plan.band_rows = [_choose_band_rows(plan, hw, shws, available, requested)
                      for hw, shws in zip(plan.sizes, plan.style_sizes)]
    plan.memory = _plan_bytes(plan, plan.sizes[-1], plan.style_sizes[-1], plan.band_rows[-1])
    memory.check_fits(plan.memory, f"style transfer at {w}x{h}"
                      + (f" ({plan.batch} images at once)" if plan.batch > 1 else "")
                      + (f" in bands of {plan.band_rows[-1]} rows" if plan.band_rows[-1] else ""), available)


def _band_geometry(plan: StylePlan) -> tuple[int, int]:
    """(alignment, halo) of the bands of a plan's objective (:func:`jaxdream.bands.band_geometry`)."""
    from .bands import band_geometry
    return band_geometry(Objective(plan.spec.name, plan.pooling, plan.content_layers, plan.style_layers))


def _plan_bytes(plan: StylePlan, hw, style_hws, band_rows: int | None) -> int:
    """Memory of one scale of a plan, whole image or band by band."""
    from . import memory
    corrections = plan.corrections if plan.optimizer == "lbfgs" else 2
    h, w = hw
    if band_rows:
        halo = _band_geometry(plan)[1]
        return max([memory.band_bytes(h, w, band_rows, halo, corrections)]
                   + [memory.band_bytes(sh, sw, band_rows, halo) for sh, sw in style_hws])
    return max([memory.style_bytes(h, w, plan.batch, corrections)]
               + [memory.forward_bytes(sh, sw) for sh, sw in style_hws])


def _choose_band_rows(plan: StylePlan, hw, style_hws, available, requested: int | None) -> int | None:
    """Rows per band for one scale: ``requested`` if given, None when the whole image fits,
    else the largest aligned band that fits (at least one alignment step)."""
    if plan.spec.name != "vgg19":
        return None
    align = _band_geometry(plan)[0]
    if requested:
        if requested % align:
            raise SettingsError(f"band rows {requested}: must be a multiple of {align} for these layers")
        if plan.batch > 1:
            raise SettingsError(f"band rows {requested}: bands evaluate one image at a time; a sweep or "
                                f"a batch of content images ({plan.batch} images) runs whole images")
        return requested
    have = 0.9 * available[0]  # the estimates are XLA's analysis; leave room for the rest
    if _plan_bytes(plan, hw, style_hws, None) <= have or plan.batch > 1:
        return None  # fits (or a sweep: refused by the memory check with its own message)
    rows = max(align, (max(hw[0], *[s[0] for s in style_hws]) // align) * align)
    while rows > align and _plan_bytes(plan, hw, style_hws, rows) > have:
        rows = max(align, (rows // 2 // align) * align)
    return rows


def scale_sizes(shape: tuple[int, int], scales: Sequence[int]) -> list[tuple[int, int]]:
    """(h, w) of a content image of ``shape`` at each coarse-to-fine scale (longest sides)."""
    return [media.fit_size(*shape[:2], s) for s in scales]


def _load_contents(content, scales, color_transfer, temporal) -> list[np.ndarray]:
    """The content image, or a batch of them (a list), read; a batch must share its size at
    every scale and cannot use per-content style recolouring or a temporal term."""
    if not isinstance(content, (list, tuple)):
        return [_load(content, None, "content")]
    if not content:
        raise SettingsError("give at least one content image")
    images = [_load(c, None, f"content image {i + 1}") for i, c in enumerate(content)]
    if len(images) > 1 and (color_transfer or temporal is not None):
        raise SettingsError("a batch of content images cannot use " + (
            "--color-transfer (it recolours the styles for each content image); run them one at a time"
            if color_transfer else "a temporal term"))
    first = scale_sizes(images[0].shape, scales)
    for i, image in enumerate(images[1:], 2):
        if scale_sizes(image.shape, scales) != first:
            h, w = first[-1]
            raise SettingsError(f"content image {i} is {image.shape[1]}x{image.shape[0]}: a batch of "
                                f"content images must share its size ({w}x{h} at size {scales[-1]})")
    return images


def plan_style(content, styles, *,
               style_blend_weights: Sequence[float] | None = None,
               content_weight: float | Sequence[float] = 5.0,
               style_weight: float | Sequence[float] = 100.0,
               tv_weight: float | Sequence[float] = 1e-3,
               content_layers: Sequence[str] = CONTENT_LAYERS,
               style_layers: Sequence[str] = STYLE_LAYERS,
               num_iterations: int | Sequence[int] = 1000,
               optimizer: str = "lbfgs",
               learning_rate: float | None = None,
               lbfgs_num_correction: int = 100,
               size: int = 512,
               scales: Sequence[int] | None = None,
               init: str | Any = "random",
               pooling: str = "max",
               style_scale: float = 1.0,
               original_colors: bool = False,
               color_transfer: str | None = None,
               seed: int | Sequence[int] = 0,
               temporal: tuple | None = None,
               model: str = "vgg19",
               chunk: int = 20,
               remat: bool | None = None,
               band_rows: int | None = None,
               precision: str = "float32",
               tol_loss_relative: float = 0.0,
               tol_loss_relative_interval: int = 100,
               masks: Sequence | None = None,
               content_mask=None,
               style_masks: Sequence | None = None,
               style_loss: str = "gram",
               ema: float = 0.0,
               lbfgs_precondition: float = 0.0) -> StylePlan:
    """Check every setting and read every image of a :func:`stylize` run (same arguments,
    without the network and callback ones); nothing is computed or allocated on a device.

    ``masks`` (one per style), ``content_mask`` and ``style_masks`` (one per style image,
    None for the whole image) are paths or (H, W) arrays in 0..1 of the content's (style
    image's) aspect ratio; they are resized to every scale and layer. Masks and
    ``style_loss="wasserstein"`` need whole-image programs (no bands).

    ``band_rows`` evaluates the objective band by band (:mod:`jaxdream.bands`, exact) with this
    many rows per band; by default a scale runs band by band only when its whole-image program
    would not fit in the device's memory.

    ``tol_loss_relative`` (artistic-videos' ``-tol_loss_relative``; 0, the default, is off)
    ends a scale early: at every multiple of ``tol_loss_relative_interval`` iterations the total
    loss is compared with the one an interval before, and the scale stops when
    ``|before - now| < tol_loss_relative * |before|`` for every batch member (the first check
    is at twice the interval). Chunks are cut at the multiples of the interval.

    ``lbfgs_precondition`` (L-BFGS only; 0, the default, is neural-style's L-BFGS) is the weight
    ``w`` of :func:`pyramid_preconditioner`, L-BFGS's initial inverse Hessian: the picture's
    block means over 2..32 px move up to ``1 + 5w`` times as far as single pixels. A video's
    later frames use 1 (:class:`jaxdream.video.StyleFrames`).

    Raises:
        SettingsError, LayerError, MediaError: one line naming the bad value or file.
    """
    _check_choices(band_rows, precision, optimizer, style_loss, ema, lbfgs_precondition)
    styles, blend = _style_list(styles, style_blend_weights)
    sweeps = {"content_weight": _as_list(content_weight, "content weight"),
              "style_weight": _as_list(style_weight, "style weight"),
              "tv_weight": _as_list(tv_weight, "tv weight"),
              "seed": _as_list(seed, "seed")}
    _check_numbers(sweeps, style_scale, lbfgs_num_correction, chunk, learning_rate, blend,
                   (tol_loss_relative, tol_loss_relative_interval))
    sweeps = {k: [options.get(k).kind(v) for v in vs] for k, vs in sweeps.items()}
    _check_sources(color_transfer, init)
    spec = get_spec(model)
    if pooling not in spec.poolings:
        raise SettingsError(f"{spec.name} supports pooling {', '.join(spec.poolings)}, not '{pooling}'")
    content_layers = spec.check_layers(content_layers)
    style_layers = spec.check_layers(style_layers)
    scales = check_scales(scales, size)
    iterations = _iterations_per_scale(num_iterations, len(scales))
    lr = DEFAULT_LEARNING_RATE[optimizer] if learning_rate is None else float(learning_rate)
    im = _read_images(content, styles, init, scales, style_scale, color_transfer, temporal)
    plan = StylePlan(spec, im.content_full, im.style_full, init, im.init_full, blend, sweeps, content_layers,
                     style_layers, scales, im.sizes, im.style_sizes, iterations, optimizer, lr,
                     int(lbfgs_num_correction), pooling, original_colors, color_transfer,
                     _check_temporal(temporal, im.content_full), remat, float(style_scale),
                     precision=precision, contents_full=im.contents_full if len(im.contents_full) > 1 else [],
                     tol_loss_relative=float(tol_loss_relative),
                     tol_loss_relative_interval=int(tol_loss_relative_interval),
                     style_loss=style_loss, ema=float(ema), lbfgs_precondition=float(lbfgs_precondition),
                     **_load_masks(masks, content_mask, style_masks, im.content_full, im.style_full))
    _check_bands(plan, style_scale, band_rows)
    return plan


def _check_choices(band_rows, precision: str, optimizer: str, style_loss: str, ema, lbfgs_precondition) -> None:
    """The settings chosen from a list (and the ones only one optimiser takes)."""
    if band_rows is not None:
        options.get("band_rows").check(band_rows)
    precision_mod.check(precision)
    if optimizer not in OPTIMIZERS:
        raise SettingsError(f"unknown optimizer '{optimizer}'; use one of {', '.join(OPTIMIZERS)}")
    _check_style_loss_and_ema(style_loss, ema, optimizer)
    options.get("lbfgs_precondition").check(lbfgs_precondition)
    if lbfgs_precondition and optimizer != "lbfgs":
        raise SettingsError("--lbfgs-precondition shapes L-BFGS's steps; it needs --optimizer lbfgs")


def _style_list(styles, style_blend_weights) -> tuple[list, list]:
    """The style images as a list (one path or array becomes a list of one) and their blend
    weights (default equal), one per style."""
    if isinstance(styles, (str, os.PathLike)) or (isinstance(styles, np.ndarray) and styles.ndim == 3):
        styles = [styles]
    styles = list(styles)
    if not styles:
        raise SettingsError("give at least one style image")
    blend = [1.0] * len(styles) if style_blend_weights is None else _as_list(
        style_blend_weights, "style blend weights")
    if len(blend) != len(styles):
        raise SettingsError(f"{len(blend)} style blend weights for {len(styles)} style images")
    return styles, blend


def _check_sources(color_transfer, init) -> None:
    """The colour transfer is a known one and the init a known name or an existing file."""
    if color_transfer is not None and color_transfer not in color.COLOR_TRANSFERS:
        raise SettingsError(f"unknown colour transfer '{color_transfer}'; use one of "
                            f"{', '.join(color.COLOR_TRANSFERS)}")
    if isinstance(init, str) and init not in INITS and not os.path.exists(init):
        raise SettingsError(f"init must be one of {', '.join(INITS)} or an image file; "
                            f"'{init}' is neither")


class _Images(NamedTuple):
    content_full: np.ndarray
    contents_full: list       # every content image of a batch (the first is content_full)
    style_full: list          # recoloured when a colour transfer is asked for
    init_full: np.ndarray | None
    sizes: list               # (h, w) of the content per scale
    style_sizes: list         # per scale, (h, w) per style image


def _read_images(content, styles: list, init, scales, style_scale, color_transfer, temporal) -> _Images:
    """Every image of a run, read before the network loads (so a bad file fails fast), with the
    sizes they take at each scale."""
    contents_full = _load_contents(content, scales, color_transfer, temporal)
    content_full = contents_full[0]
    style_full = [_load(s, None, f"style image {i + 1}") for i, s in enumerate(styles)]
    if color_transfer:
        style_full = [color.match_color(s, content_full, color_transfer) for s in style_full]
    sizes = scale_sizes(content_full.shape[:2], scales)
    style_sizes = [[media.fit_size(*s.shape[:2], max(1, round(sc * style_scale))) for s in style_full]
                   for sc in scales]
    init_full = None
    if not isinstance(init, str) or init not in INITS:
        init_full = _load(init, None, "init image")
    return _Images(content_full, contents_full, style_full, init_full, sizes, style_sizes)


def _check_bands(plan: StylePlan, style_scale: float, band_rows) -> None:
    """Set the plan's memory and bands per scale (:func:`_check_plan_sizes`); masks and the
    Wasserstein loss need whole-image programs: no bands, asked for or needed."""
    if plan.masked and band_rows is not None:
        raise SettingsError("masks and --style-loss wasserstein need whole-image programs; "
                            "they cannot run band by band (--band-rows)")
    _check_plan_sizes(plan, style_scale, band_rows)
    if plan.masked and any(plan.band_rows):
        (h, w), scale = plan.sizes[-1], plan.scales[-1]
        raise SettingsError(f"style transfer at {w}x{h} (size {scale}) only fits in memory band by band, "
                            f"and masks and --style-loss wasserstein need whole-image programs; use a smaller --size")


def _check_style_loss_and_ema(style_loss: str, ema, optimizer: str) -> None:
    if style_loss not in STYLE_LOSSES:
        raise SettingsError(f"unknown style loss '{style_loss}'; use one of {', '.join(STYLE_LOSSES)}")
    if options.get("ema").check(ema) > 0 and optimizer != "adam":
        raise SettingsError(f"--ema averages Adam's iterates; use it with --optimizer adam, not {optimizer}")


def _load_masks(masks, content_mask, style_masks, content_full: np.ndarray, style_full: list) -> dict:
    """Read and check the masks of a run (:class:`StylePlan` fields): one region mask per style
    and one mask (or None) per style image, none empty; every mask of its image's aspect ratio."""
    from .masks import check_aspect, check_not_empty, check_region_count, load_mask, mask_list, mask_name
    n = len(style_full)
    names: dict = {}
    regions = mask_list(masks)
    check_region_count(regions, n)
    loaded = []
    for i, m in enumerate(regions, 1):
        what = mask_name(m, i)
        mask = load_mask(m, what)
        check_aspect(mask, content_full.shape[:2], what, "the content image")
        check_not_empty(mask, what, f"style image {i} would apply nowhere")
        loaded.append(mask)
    if regions:
        names["masks"] = [str(m) if isinstance(m, (str, os.PathLike)) else "array" for m in regions]
    cmask = None
    if content_mask is not None:
        what = mask_name(content_mask, None, "content mask")
        cmask = load_mask(content_mask, what)
        check_aspect(cmask, content_full.shape[:2], what, "the content image")
        names["content_mask"] = str(content_mask) if isinstance(content_mask, (str, os.PathLike)) else "array"
    given = mask_list(style_masks)
    if given and len(given) != n:
        raise SettingsError(f"{len(given)} style masks for {n} style image{'s' if n > 1 else ''}: give one "
                            f"--style-mask per --style, in the same order ('none' for a whole style image)")
    smasks = []
    for i, (m, style_img) in enumerate(zip(given, style_full), 1):
        if m is None or (isinstance(m, str) and m.lower() == "none"):
            smasks.append(None)
            continue
        what = mask_name(m, i, "style mask")
        mask = load_mask(m, what)
        check_aspect(mask, style_img.shape[:2], what, f"style image {i}")
        check_not_empty(mask, what, f"style image {i} would give no style")
        smasks.append(mask)
    if any(m is not None for m in smasks):
        names["style_masks"] = [None if m is None or (isinstance(m, str) and m.lower() == "none") else
                                str(m) if isinstance(m, (str, os.PathLike)) else "array" for m in given]
    return {"masks": loaded, "content_mask": cmask, "style_masks": smasks, "mask_names": names}


def stylize(content, styles, *,
            weights: str | os.PathLike | None = None,
            network=None,
            in_jit_loop: bool | None = None,
            callback: Callable[[StyleProgress], Any] | None = None,
            mesh=None,
            **settings) -> StyleResult:
    """Gatys style transfer with neural-style's defaults, coarse-to-fine and sweeps.

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
        mesh: a :func:`jaxdream.parallel.mesh`; a sweep's images (or a batch of content images)
            are split across its devices, one image's rows when there is one (default: one
            device).
        band_rows: evaluate band by band with this many rows per band (default: only where the
            whole image would not fit in memory; see :func:`plan_style`).
        precision: ``float32`` (default) or ``bfloat16`` convolutions; Gram matrices, losses
            and the optimiser stay float32 (:mod:`jaxdream.precision`).
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
    from .network import load_network
    if network is not None:
        settings["model"] = network.spec.name
    plan = plan_style(content, styles, **settings)
    net = network if network is not None else load_network(plan.spec.name, weights, plan.pooling)
    result = run_plan(plan, net, chunk=settings.get("chunk", 20), in_jit_loop=in_jit_loop, callback=callback,
                      mesh=mesh)
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
    from .bands import band_value_and_grad
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


def _scale_targets(plan: StylePlan, net, k: int, hw, content_rgb, obj: Objective,
                   band_rows: int | None = None) -> dict:
    mean = net.spec.mean_bgr
    styles_x = [_to_model(media.resize(s, shw), mean) for s, shw in zip(plan.style_full, plan.style_sizes[k])]
    if band_rows:
        from .bands import band_targets
        targets = band_targets(net.params, _to_model(content_rgb, mean), styles_x, plan.blend, obj, band_rows)
    else:
        targets = prepare_targets(net.params, _to_model(content_rgb, mean), styles_x, plan.blend, obj,
                                  **_scale_masks(plan))
    if plan.temporal is not None:
        t_image, t_mask, _ = plan.temporal
        mask_k = media.resize(t_mask[..., None], hw, "bilinear")
        targets["temporal"] = {"image": jnp.asarray(_to_model(media.resize(t_image, hw), mean)),
                               "mask": jnp.asarray(np.clip(mask_k, 0, 1))}
    return targets


def _optimiser_state(plan: StylePlan, x0: jax.Array, hw, n_losses: int):
    """(state, chunk function, step function) of the chosen optimiser for a batch ``x0``."""
    if plan.optimizer == "adam":
        return jax.vmap(lambda x: adam_init(x, n_losses, plan.ema))(x0), adam_chunk, adam_step
    m = plan.corrections
    cap = max(1, int(LBFGS_HISTORY_BUDGET // (2 * x0.shape[0] * x0[0].size * 4)))
    if m > cap:
        warnings.warn(f"L-BFGS history limited to {cap} corrections at "
                      f"{hw[1]}x{hw[0]} px (of {m}) to bound memory", stacklevel=3)
        m = cap
    w = plan.lbfgs_precondition
    return (lbfgs_init(x0, m, n_losses), functools.partial(lbfgs_chunk, precondition=w),
            functools.partial(lbfgs_step, precondition=w))


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
    return LbfgsState(x=0, step=0, g_prev=0, s_hist=0, y_hist=0, rho=1, sy=0, head=None, count=None,
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
        from . import parallel
        m = self.mesh or self.rows
        return tree if m is None else parallel.replicate(tree, m)

    def batched(self, tree):
        from . import parallel
        if self.mesh is not None:
            return parallel.shard_batch(tree, self.mesh)
        return self.shared(tree)

    def state(self, state, hw):
        from . import parallel
        if self.mesh is not None:
            axes = _lbfgs_axes(state) if isinstance(state, LbfgsState) else _adam_axes(state)
            return parallel.place(state, axes, self.mesh)
        if self.rows is not None:
            split = hw[0] % self.rows.size == 0
            axes = _row_axes(state, split)
            return parallel.place(state, axes, self.rows)
        return state

    def host(self, x) -> np.ndarray:
        from . import parallel
        return parallel.to_host(x)[: self.batch]


def _row_axes(state, split: bool):
    """Height axes of a one-image optimiser state (None everywhere when not ``split``): the
    image-shaped fields split along H, the flattened ones along their pixel axis."""
    if not split:
        return jax.tree.map(lambda _: None, state)
    if isinstance(state, LbfgsState):
        return LbfgsState(x=1, step=1, g_prev=1, s_hist=2, y_hist=2, rho=None, sy=None, head=None,
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

    @property
    def mean(self):
        return self.net.spec.mean_bgr

    def postprocess(self, xs, content_rgbs: list) -> np.ndarray:
        """RGB 0..255 pictures of network-space images ``xs`` (colours post-processed)."""
        rgb = _from_model(xs, self.mean)
        if not self.plan.original_colors:
            return np.clip(rgb, 0, 255)
        return np.stack([color.original_colors(r, content_rgbs[ci]) for r, ci in zip(rgb, self.owners)])


def _prepare_run(plan: StylePlan, net, mesh, in_jit_loop: bool | None) -> _Run:
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
                in_jit_loop=in_jit_loop_default() if in_jit_loop is None else in_jit_loop, lr=jnp.float32(plan.lr))


def _scale_objective(plan: StylePlan, hw) -> Objective:
    use_remat = (hw[0] * hw[1] > REMAT_PIXELS) if plan.remat is None else bool(plan.remat)
    return Objective(plan.spec.name, plan.pooling, plan.content_layers, plan.style_layers, use_remat,
                     plan.temporal is not None, plan.precision, batched_content=len(plan.contents) > 1,
                     style_loss=plan.style_loss)


def _placed_targets(run: _Run, k: int, hw, content_rgbs: list, obj: Objective, band_rows) -> dict:
    """The targets of scale ``k``, each member's own content activations in a batch of contents,
    placed where the run lives."""
    targets = _scale_targets(run.plan, run.net, k, hw, content_rgbs[0], obj, band_rows)
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


def _optimise_scale(run: _Run, k: int, hw, x0: np.ndarray, content_rgbs: list,
                    callback: Callable[[StyleProgress], Any] | None, chunk: int):
    """Scale ``k``'s iterations from ``x0``, in chunks, until its budget, convergence or a
    callback's stop: (iterate (host), losses or None, iterations done)."""
    plan, where = run.plan, run.where
    total = plan.iterations[k]
    tol, every = plan.tol_loss_relative, plan.tol_loss_relative_interval
    obj = _scale_objective(plan, hw)
    band_rows = plan.band_rows[k] if plan.band_rows else None
    targets = _placed_targets(run, k, hw, content_rgbs, obj, band_rows)
    state, run_chunk, run_step = _optimiser_state(plan, jnp.asarray(x0, jnp.float32), hw, obj.n_losses)
    state = where.state(state, hw)
    x = losses = before = None
    done = 0
    while done < total:
        n = min(chunk, total - done)
        if tol > 0:  # a chunk ends at every multiple of the interval, where the loss is compared
            n = min(n, every - done % every)
        if band_rows:
            state = _band_iterations(state, n, run.params, targets, run.loss_weights, run.lr, obj, band_rows,
                                     plan.lbfgs_precondition)
        elif run.in_jit_loop:
            state = run_chunk(state, run.params, targets, run.loss_weights, jnp.int32(n), run.lr, spec=obj)
        else:
            for _ in range(n):
                state = run_step(state, run.params, targets, run.loss_weights, run.lr, spec=obj)
        done += n
        losses = _losses_of(where.host(state.losses), obj.temporal)
        x = where.host(_iterate(state, plan.ema))
        converged = False
        if tol > 0 and done % every == 0:
            now = losses["total"].astype(np.float64)
            converged, before = _converged(before, now, tol), now
        if callback is not None and callback(StyleProgress(k, len(plan.scales), hw, done, total, losses,
                                                           run.postprocess(x, content_rgbs), run.labels,
                                                           converged)):
            break
        if converged:
            break
    if x is None or x.shape[1:3] != tuple(hw):
        x = where.host(_iterate(state, plan.ema))
    return x, losses, done


def run_plan(plan: StylePlan, net, *, chunk: int = 20, in_jit_loop: bool | None = None,
             callback: Callable[[StyleProgress], Any] | None = None, mesh=None) -> StyleResult:
    """Carry out a checked :class:`StylePlan` with a loaded network (see :func:`stylize`)."""
    run = _prepare_run(plan, net, mesh, in_jit_loop)
    x = losses = None
    ran = []
    for k, hw in enumerate(plan.sizes):
        content_rgbs = [media.resize(c, hw) for c in plan.contents]
        x0 = _initial_batch(plan, hw, [content_rgbs[ci] for ci in run.owners], run.mean, run.seeds) if k == 0 else \
            np.stack(run.where.pad([media.resize(xi, hw) for xi in np.asarray(x)]))
        x, scale_losses, done = _optimise_scale(run, k, hw, x0, content_rgbs, callback, chunk)
        losses = scale_losses if scale_losses is not None else losses
        ran.append(done)
    images = run.postprocess(x, content_rgbs)
    if losses is None:
        batch = len(run.labels)
        losses = {k: np.full((batch,), np.nan, np.float32) for k in ("total", "content", "style", "tv")}
    return StyleResult(images.astype(np.float32), run.labels, losses, _settings_record(plan, net), ran,
                       _from_model(x, run.mean).astype(np.float32))
