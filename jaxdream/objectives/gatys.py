"""The Gatys et al. objective with jcjohnson/neural-style's loss scale: VGG-19 activations of
the image against precomputed content activations and (blended) style Gram matrices, plus total
variation (see :mod:`jaxdream.objectives.losses` for the exact scale). The loss weights are
traced arrays, so a sweep over them, or over seeds, runs as one ``vmap``-ed optimisation with
one compile. The network is :mod:`jaxdream.nets.vgg19`'s block form.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..media.masks import resize_mask
from ..nets import get_spec
from ..nets.vgg19 import blocks as _vgg_blocks
from ..runtime import precision as precision_mod
from .losses import (content_loss, gaussian_moments, gram, masked_gram, sqrtm_newton_schulz, style_loss,
                     total_variation, wasserstein_loss)

__all__ = ["Objective", "features", "prepare_targets", "objective", "layer_masks", "value_and_grad",
           "batched_value_and_grad", "CONTENT_LAYERS", "STYLE_LAYERS", "STYLE_LOSSES", "W2_SCALE",
           "REMAT_PIXELS"]

CONTENT_LAYERS = ("relu4_2",)
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
STYLE_LOSSES = ("gram", "wasserstein")
#: The Wasserstein style term is ``W2_SCALE * style_weight * W2**2 / C`` per layer. Chosen by
#: eye on astronaut.png in the style of hubble_deep_field.png (128 px, content weight 1, 100
#: L-BFGS iterations from the content): at 1 the content was gone from style weight 30 up,
#: 0.01 with style weight 300 stylised about as strongly as the Gram loss does.
W2_SCALE = 0.01
#: Above this many pixels, gradients are rematerialised block by block (jax.checkpoint).
REMAT_PIXELS = 1024 * 1024

Params = Any


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
        precision: ``float32`` or ``bfloat16`` convolutions (:mod:`jaxdream.runtime.precision`;
            Gram matrices and losses stay float32).
        temporal: add the video temporal term (Ruder et al.):
            ``weight * mean(mask * (x - warped_prev)**2)`` over all H*W*3 elements, in network
            space, with ``targets["temporal"] = {"image": (H, W, 3), "mask": (H, W, 1)}``.
        batched_content: the content targets carry a batch axis (one content image per batch
            member: a batch of content images run at once); otherwise the batch shares them.
        style_loss: ``gram`` (neural-style's Gram matrices) or ``wasserstein`` (the W2 distance
            between Gaussian fits of the features, :func:`jaxdream.objectives.losses.wasserstein_loss`).

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


def style_targets(params: Params, style_xs, blend, objective: Objective, *, regions: bool = False,
                  style_masks: Sequence | None = None) -> dict:
    """The style part of :func:`prepare_targets` (``{"gram": ...}`` or ``{"w2": ...}``): what
    depends only on the style images, so that a run over many content images (a video's frames)
    computes it once."""
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
    return _style_targets(per_style, blend, objective, regions)


def prepare_targets(params: Params, content_x, style_xs, blend, objective: Objective, *,
                    masks: Sequence[np.ndarray] | None = None, style_masks: Sequence | None = None,
                    content_mask: np.ndarray | None = None, style: dict | None = None) -> dict:
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
        style: the style part computed already (:func:`style_targets` of the same styles,
            blend, objective, style masks and regions): ``style_xs`` are then not read.

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
    if style is None:
        style = style_targets(params, style_xs, blend, objective, regions=masks is not None, style_masks=style_masks)
    targets = {"content": content, **style}
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




def value_and_grad(params, targets, weights, spec):
    """``x -> ((total, parts), grad)`` of :func:`objective` for one image."""
    return jax.value_and_grad(
        lambda x: objective(x, params, targets, weights, spec), has_aux=True)


def member_targets(targets, spec: Objective):
    """(the batch member's content targets or None, and how to rebuild its targets): with
    ``spec.batched_content`` each member has its own content activations (axis 0)."""
    content = targets["content"] if spec.batched_content else None
    return content, (lambda c: targets if c is None else {**targets, "content": c})


def batched_value_and_grad(params, targets, weights, spec):
    """Loss and gradient of each image of a batch, each with its own loss weights (and its own
    content targets when ``spec.batched_content``)."""
    content, member = member_targets(targets, spec)

    def one(x, w, c):
        return value_and_grad(params, member(c), w, spec)(x)
    return lambda xs: jax.vmap(one, in_axes=(0, 0, None if content is None else 0))(xs, weights, content)


