"""The Gatys style objective over horizontal bands of the image: exact, for images too big to
differentiate at once.

On one device (:func:`band_value_and_grad`) the image is cut into bands of rows and the
objective runs band after band, so that only one band's activations are alive at a time:

1. Forward, band by band: each band's window (its own rows plus a *halo* of neighbouring rows)
   goes through VGG-19; every layer's output is cropped back to the rows the band owns at that
   layer's resolution, and the unnormalised Gram matrices (:func:`jaxdream.objectives.losses.gram_sum`) of
   the owned rows are summed. A Gram matrix is a sum over positions, so the sum is the whole
   image's.
2. The style loss and its gradient with respect to each global Gram sum ``S`` follow from the
   sums (a few C x C matrices).
3. Backward, band by band: with ``dL/dS`` held fixed, the style loss is linear in each band's
   Gram sum, so the band's share of the image gradient is the gradient of
   ``<dL/dS, gram_sum(owned features)>``; content, temporal and total-variation terms are sums
   over rows and split the same way. The bands' window gradients, added into one image, are the
   whole image's gradient.

Why the halo makes it exact: a 3x3 convolution with zero padding at the *window's* edge is
wrong in the window's first and last rows (the true neighbours are missing); each further
convolution spreads the error by one row and each 2x2 pool halves it (rounded up). Walking the
layers back from the deepest one used, ``halo = 2 * halo`` at a pool and ``halo + 1`` at a
convolution gives the rows a window needs beyond its own; for relu5_1 that is 70 input rows,
rounded up to a multiple of ``2**pools`` = 16, i.e. 80. Windows and bands start on multiples of
``2**pools`` so that every 2x2 pool pairs the same rows as on the whole image; at the image's
true top and bottom the window stops there, so the network's own zero padding is the same.

On a mesh (:func:`sharded_value_and_grad`) the same whole-image objective runs under ``jit``
with the image's height split over the devices; XLA's SPMD partitioner does the halo
exchange and the all-reduce of the Gram sums.

Example:
    >>> total, parts, grad = band_value_and_grad(x, params, targets, weights, spec,
    ...                                          band_rows=256)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ..errors import SettingsError
from ..nets import vgg19
from ..runtime import parallel
from . import gatys as style
from .losses import gram_sum, style_loss

__all__ = ["Band", "band_geometry", "plan_bands", "band_value_and_grad", "band_targets", "sharded_program",
           "sharded_value_and_grad"]

Params = Any


# ------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """One band: the rows it owns and the window of input rows it reads.

    Attributes:
        start: first owned input row.
        stop: one past the last owned input row.
        lo: first row of the window: at most ``start - halo`` (or 0), a multiple of the
            alignment.
        hi: one past the window's last row: at least ``stop + halo`` (or the height).
    """

    start: int
    stop: int
    lo: int
    hi: int

    @property
    def rows(self) -> int:
        """Number of owned rows."""
        return self.stop - self.start

    @property
    def window(self) -> int:
        """Window length: the one static number a band program depends on (where the band
        and its window start, and how many rows it owns, are traced), so bands with windows
        of one length share one compiled program."""
        return self.hi - self.lo


def _level(name: str) -> int:
    """Number of 2x2 pools before a VGG-19 layer's output."""
    return int(math.log2(vgg19.STRIDES[name]))


def _check_spec(spec: style.Objective) -> None:
    if spec.model != "vgg19":
        raise SettingsError(f"band-wise evaluation supports vgg19 only, not {spec.model}")


def band_geometry(spec: style.Objective) -> tuple[int, int]:
    """The alignment and halo of bands for an objective.

    Args:
        spec: the objective (its content and style layers).

    Returns:
        (align, halo): band and window starts must be multiples of ``align = 2**pools``
        (pools before the deepest layer used); ``halo`` rows (a multiple of ``align``) on each
        side of a band make its owned outputs exact at every layer.
    """
    _check_spec(spec)
    deepest = max(spec.layers, key=vgg19.LAYERS.index)
    ops = [n for n in vgg19.LAYERS[:vgg19.LAYERS.index(deepest) + 1] if not n.startswith("relu")]
    halo = 0
    for name in reversed(ops):
        halo = 2 * halo if name.startswith("pool") else halo + 1
    align = 2 ** _level(deepest)
    return align, -(-halo // align) * align


def plan_bands(height: int, band_rows: int, spec: style.Objective,
               halo: int | None = None) -> tuple[Band, ...]:
    """Cut ``height`` rows into bands of ``band_rows`` with their windows.

    Args:
        height: the image height.
        band_rows: rows per band (the last band takes the rest), a positive multiple of the
            alignment of :func:`band_geometry`.
        spec: the objective.
        halo: override the halo (tests use a too-small one to see the result go wrong).

    Returns:
        The bands, top to bottom.

    Raises:
        SettingsError: ``band_rows`` is not a positive multiple of the alignment.
    """
    align, exact_halo = band_geometry(spec)
    halo = exact_halo if halo is None else int(halo)
    if band_rows < 1 or band_rows % align:
        raise SettingsError(f"band rows {band_rows}: must be a positive multiple of {align} "
                            f"(2x2 pools before {max(spec.layers, key=vgg19.LAYERS.index)})")
    # Every window has the interior bands' length where it can (first and last bands take
    # more context on their inner side), so that most bands share one compiled program.
    n = min(height, band_rows + 2 * halo)
    bands = []
    for start in range(0, height, band_rows):
        stop = min(start + band_rows, height)
        lo = min(max(0, start - halo), height - n)
        lo -= lo % align
        hi = lo + n if lo + n >= min(height, stop + halo) else height
        bands.append(Band(start, stop, lo, hi))
    return tuple(bands)


# ------------------------------------------------------------------------------------------
# one band
# ------------------------------------------------------------------------------------------


def _row_mask(length: int, name: str | None, off: jax.Array, rows: jax.Array) -> jax.Array:
    """Which of ``length`` rows of a window's activation a band owns, as 0/1 floats.

    The band owns ``rows`` input rows from window row ``off`` (both traced). Bands, windows
    and the image top start on multiples of 2**pools, so after ``lv`` pools the band owns rows
    ``[off >> lv, (off + rows) >> lv)`` of the activation -- for the image's last band too,
    whose floor-pooled rows are the whole image's.
    """
    lv = 0 if name is None else _level(name)
    r = jnp.arange(length)
    return ((r >= off >> lv) & (r < (off + rows) >> lv)).astype(jnp.float32)


def _owned(feat: jax.Array, name: str, off: jax.Array, rows: jax.Array) -> jax.Array:
    """A window's activation (h, w, C) with the rows the band does not own set to zero."""
    return feat * _row_mask(feat.shape[0], name, off, rows)[:, None, None]


def _window_of(target: jax.Array, name: str | None, lo: jax.Array, length: int) -> jax.Array:
    """The rows of a whole-image target (h, w, ...) that a window at image row ``lo`` covers."""
    lv = 0 if name is None else _level(name)
    return lax.dynamic_slice_in_dim(target, lo >> lv, length, 0)


@functools.partial(jax.jit, static_argnames=("spec", "n"))
def _band_gram_sums(x, lo, off, rows, params, spec: style.Objective, n: int):
    """Gram sums of the owned rows of every style layer, for the band whose ``n``-row window
    starts at image row ``lo`` and owns ``rows`` rows from window row ``off``."""
    window = lax.dynamic_slice_in_dim(x, lo, n, 0)
    feats = style.features(params, window[None], replace(spec, content_layers=()))
    return {k: gram_sum(_owned(feats[k][0], k, off, rows)) for k in spec.style_layers}


@jax.jit
def _style_terms(sums, gram_targets, w_style, counts):
    """Style loss from the global Gram sums, and its gradient w.r.t. each sum."""
    def loss(sums):
        return sum((style_loss(sums[k] / counts[k], gram_targets[k], w_style) for k in sums),
                   jnp.float32(0))
    return jax.value_and_grad(loss)(sums)


def _band_terms(window, lo, off, rows, params, targets, weights, coefs, spec, image_shape):
    """The band's share of the objective, linear in its Gram sums (see the module docstring).

    Returns (surrogate, (content, tv, temporal)); the surrogate's gradient is the band's share
    of the image gradient, the aux values are the band's exact shares of those terms.
    """
    height, width, channels = image_shape
    n = window.shape[0]
    feats = style.features(params, window[None], spec)
    content = jnp.float32(0)
    for k in spec.content_layers:
        f = feats[k][0]
        t = targets["content"][k]
        diff = _owned(f - _window_of(t, k, lo, f.shape[0]), k, off, rows)
        content = content + weights["content"] * jnp.sum(jnp.square(diff)) / t.size
    linear_style = jnp.float32(0)
    for k in spec.style_layers:
        linear_style = linear_style + jnp.vdot(coefs[k], gram_sum(_owned(feats[k][0], k, off, rows)))
    # TV: the terms of image row i (i < H - 1) read rows i and i + 1; a band's window holds
    # the row after its last owned row unless that row ends the image, which has no term.
    core = window[:-1, :-1]
    per_row = jnp.sum(jnp.square(core - window[:-1, 1:]) + jnp.square(core - window[1:, :-1]),
                      axis=(1, 2))
    tv_mask = _row_mask(n - 1, None, off, rows) * (lo + jnp.arange(n - 1) < height - 1)
    tv = weights["tv"] * 0.5 * jnp.sum(tv_mask * per_row)
    temporal = jnp.float32(0)
    if spec.temporal:
        t = targets["temporal"]
        err = _window_of(t["mask"], None, lo, n) * jnp.square(window - _window_of(t["image"], None, lo, n))
        temporal = (weights["temporal"] * jnp.sum(_owned(err, None, off, rows))
                    / (height * width * channels))
    return content + linear_style + tv + temporal, (content, tv, temporal)


@functools.partial(jax.jit, static_argnames=("spec", "n"), donate_argnames=("grad",))
def _band_grad(x, grad, lo, off, rows, params, targets, weights, coefs, spec: style.Objective,
               n: int):
    """Add the band's share of the gradient into ``grad``; return it with the band's terms."""
    window = lax.dynamic_slice_in_dim(x, lo, n, 0)
    f = functools.partial(_band_terms, lo=lo, off=off, rows=rows, params=params, targets=targets,
                          weights=weights, coefs=coefs, spec=spec, image_shape=x.shape)
    g, aux = jax.grad(f, has_aux=True)(window)
    current = lax.dynamic_slice_in_dim(grad, lo, n, 0)
    return lax.dynamic_update_slice_in_dim(grad, current + g, lo, 0), aux


# ------------------------------------------------------------------------------------------
# the whole image, band by band
# ------------------------------------------------------------------------------------------


def _where(b: Band) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A band's traced placement: window start, owned start in the window, owned rows."""
    return jnp.int32(b.lo), jnp.int32(b.start - b.lo), jnp.int32(b.rows)


def _layer_counts(spec: style.Objective, height: int, width: int, sums: dict) -> dict:
    """``C*h*w`` of each style layer on the whole image (the Gram normalisation)."""
    return {k: jnp.float32(sums[k].shape[-1] * (height >> _level(k)) * (width >> _level(k)))
            for k in spec.style_layers}


def band_value_and_grad(x: jax.Array, params: Params, targets: dict, weights: dict,
                        spec: style.Objective, band_rows: int,
                        halo: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The objective of :func:`jaxdream.style.objective` and its gradient, band by band.

    Equal (to float32 rounding) to
    ``jax.value_and_grad(style.objective, has_aux=True)(x, params, targets, weights, spec)``,
    with the activations of one band's window alive at a time: two forward passes and one
    backward pass per band; bands whose windows have one length (all of them, unless the
    height is not a multiple of ``2**pools``) share one compiled program per pass.

    Args:
        x: (H, W, 3) image in network space.
        params: VGG-19 parameters.
        targets: from :func:`jaxdream.style.prepare_targets` (plus ``temporal`` if used).
        weights: ``{"content", "style", "tv"(, "temporal")}`` scalars.
        spec: the static objective (vgg19).
        band_rows: rows per band, a multiple of ``2**pools`` (16 for relu5_1).
        halo: override the exact halo (for tests only).

    Returns:
        (total, parts, grad) with parts = [content, style, tv(, temporal)] as in
        :func:`jaxdream.style.objective` and grad of x's shape.

    Raises:
        SettingsError: not vgg19, or ``band_rows`` not a multiple of the alignment.
    """
    x = jnp.asarray(x, jnp.float32)
    height, width, _ = x.shape
    bands = plan_bands(height, band_rows, spec, halo)
    weights = {k: jnp.asarray(v, jnp.float32) for k, v in weights.items()}
    if spec.style_layers:
        sums = None
        for b in bands:
            part = _band_gram_sums(x, *_where(b), params, spec=spec, n=b.window)
            sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
        style_value, coefs = _style_terms(sums, targets["gram"], weights["style"],
                                          _layer_counts(spec, height, width, sums))
    else:
        style_value, coefs = jnp.float32(0), {}
    grad = jnp.zeros_like(x)
    content = tv = temporal = jnp.float32(0)
    for b in bands:
        grad, (c, t, tm) = _band_grad(x, grad, *_where(b), params, targets, weights, coefs,
                                      spec=spec, n=b.window)
        content, tv, temporal = content + c, tv + t, temporal + tm
    parts = [content, style_value, tv] + ([temporal] if spec.temporal else [])
    return sum(parts[1:], parts[0]), jnp.stack(parts), grad


# ------------------------------------------------------------------------------------------
# the whole image, height sharded over a mesh
# ------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def sharded_program(spec: style.Objective, m: Mesh):
    """``jit(value_and_grad(style.objective))`` with the image height split over ``m``.

    Args:
        spec: the static objective.
        m: a 1-D mesh.

    Returns:
        A jitted ``(x, params, targets, weights) -> ((total, parts), grad)`` whose ``x`` (H, W, 3)
        and ``grad`` are sharded along H and everything else replicated (``.lower(...)`` works
        on it, e.g. for ``memory_analysis()``).
    """
    rows = parallel.axis_sharding(m, 3, 0)
    rep = NamedSharding(m, P())
    vg = jax.value_and_grad(lambda x, p, t, w: style.objective(x, p, t, w, spec), has_aux=True)
    return jax.jit(vg, in_shardings=(rows, rep, rep, rep), out_shardings=((rep, rep), rows))


def sharded_value_and_grad(x: jax.Array, params: Params, targets: dict, weights: dict,
                           spec: style.Objective, m: Mesh) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The whole-image objective and gradient with x's height sharded over a mesh (XLA SPMD).

    Args:
        x: (H, W, 3) image in network space; H must divide by the mesh size.
        params, targets, weights, spec: as for :func:`jaxdream.style.objective`.
        m: a 1-D mesh (:func:`jaxdream.runtime.parallel.mesh`).

    Returns:
        (total, parts, grad); grad is sharded along its height like x.

    Raises:
        SettingsError: H does not divide by the number of devices.
    """
    xs = parallel.shard_height(jnp.asarray(x, jnp.float32), m, axis=0)
    rest = parallel.replicate((params, targets, weights), m)
    (total, parts), grad = sharded_program(spec, m)(xs, *rest)
    return total, parts, grad


# ------------------------------------------------------------------------------------------
# targets, band by band
# ------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("spec", "n"))
def _band_content(x, lo, off, rows, params, spec: style.Objective, n: int):
    """Content-layer activations of a band's window with the rows it does not own zeroed."""
    window = lax.dynamic_slice_in_dim(x, lo, n, 0)
    feats = style.features(params, window[None], replace(spec, style_layers=()))
    return {k: _owned(feats[k][0], k, off, rows) for k in spec.content_layers}


def band_content_features(params: Params, x, spec: style.Objective, band_rows: int) -> dict:
    """The whole image's content-layer activations (what ``prepare_targets`` computes in one
    pass), assembled from bands: each band's owned rows, added at their place."""
    x = jnp.asarray(x, jnp.float32)
    height = x.shape[0]
    out: dict = {}
    for b in plan_bands(height, band_rows, spec):
        feats = _band_content(x, *_where(b), params, spec=spec, n=b.window)
        for k, f in feats.items():
            lv = _level(k)
            if k not in out:
                out[k] = jnp.zeros((height >> lv, *f.shape[1:]), f.dtype)
            start = b.lo >> lv
            rows = min(f.shape[0], out[k].shape[0] - start)
            out[k] = out[k].at[start:start + rows].add(f[:rows])
    return out


def band_grams(params: Params, x, spec: style.Objective, band_rows: int) -> dict:
    """Gram matrices (``gram``'s scale) of every style layer of an image, band by band."""
    x = jnp.asarray(x, jnp.float32)
    height, width, _ = x.shape
    sums = None
    for b in plan_bands(height, band_rows, spec):
        part = _band_gram_sums(x, *_where(b), params, spec=spec, n=b.window)
        sums = part if sums is None else jax.tree.map(jnp.add, sums, part)
    counts = _layer_counts(spec, height, width, sums)
    return {k: sums[k] / counts[k] for k in spec.style_layers}


def band_targets(params: Params, content_x, style_xs, blend, spec: style.Objective,
                 band_rows: int) -> dict:
    """:func:`jaxdream.style.prepare_targets` computed band by band (same values), for images
    whose whole forward pass does not fit."""
    import numpy as np
    content = band_content_features(params, content_x, spec, band_rows) if spec.content_layers else {}
    blend = np.asarray(blend, np.float64)
    blend = blend / blend.sum()
    grams = None
    for w, sx in zip(blend, style_xs):
        g = band_grams(params, sx, spec, band_rows) if spec.style_layers else {}
        grams = ({k: w * v for k, v in g.items()} if grams is None
                 else {k: grams[k] + w * v for k, v in g.items()})
    return {"content": content, "gram": grams}
