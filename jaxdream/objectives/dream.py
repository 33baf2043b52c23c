"""DeepDream's objectives (google/deepdream's L2 and guide, GoogLeNet's class logit at any size)
and the gradient normalisations of an ascent step (mean, std, Laplacian pyramid; masked)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..errors import SettingsError

__all__ = ["OBJECTIVES", "NORMALIZATIONS", "layer_objective", "class_logit", "lap_normalize", "normalize_gradient"]

NORMALIZATIONS = ("mean", "std", "lapnorm")
OBJECTIVES = ("l2", "guide", "class")


def layer_objective(act: jax.Array, kind: str, channels=None, guide=None, class_idx=None) -> jax.Array:
    """Objective value of one layer's activation ``act`` (N, h, w, C), summed over the batch.

    ``l2``: 0.5 * sum(a^2), whose gradient w.r.t. ``a`` is ``a`` (google/deepdream objective_L2).
    ``guide``: sum(a * g*) where g* is, at each position, the guide feature (rows of ``guide``,
    (M, C)) with the largest dot product with ``a``; g* is held constant (objective_guide).
    ``class`` is not a per-layer objective: see :func:`class_logit`.
    """
    if channels is not None:
        act = act[..., jnp.asarray(channels)]
    if kind == "l2":
        return 0.5 * jnp.sum(act * act)
    if kind == "guide":
        if channels is not None:
            guide = guide[:, jnp.asarray(channels)]
        flat = act.reshape(act.shape[0], -1, act.shape[-1])
        best = guide[jnp.argmax(flat @ guide.T, axis=-1)]
        return jnp.sum(flat * lax.stop_gradient(best))
    raise SettingsError(f"unknown objective '{kind}'; use one of {', '.join(OBJECTIVES)}")


def class_logit(classifier, act: jax.Array, class_idx: int) -> jax.Array:
    """GoogLeNet's logit of class ``class_idx`` for an image of any size, summed over the batch.

    ``act`` (N, h, w, 1024) is ``inception_5b/output``; ``classifier`` holds ``loss3/classifier``'s
    ``kernel`` (1024, 1000) and ``bias``. The classifier reads the 7x7 average pool of a 224 px
    image's 7x7 map, its global average: here the global average of a map of any size, so the
    logit is GoogLeNet's own at 224 px and counts at every octave down to 31 px (the mean of
    per-position logits that a fully convolutional head gives would need 224 px and sees only
    224 px windows of a large image).
    """
    pooled = act.mean(axis=(1, 2))
    return jnp.sum(pooled @ classifier["kernel"][:, class_idx] + classifier["bias"][class_idx])




_BINOMIAL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0


def _depthwise(x: jax.Array, kernel: np.ndarray, stride: int) -> jax.Array:
    c = x.shape[-1]
    k = jnp.asarray(np.repeat(kernel[:, :, None, None], c, axis=3), x.dtype)  # HWIO, I=1
    return lax.conv_general_dilated(x[None], k, (stride, stride), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=c)[0]


def _pyramid_down(x):
    return _depthwise(x, _BINOMIAL, 2)


def _pyramid_up(x, shape):
    """4 x the transpose of :func:`_pyramid_down` from ``shape`` (TF's ``conv2d_transpose``):
    zero insertion aligned with the downsampling's SAME padding, which for even sizes starts
    one pixel in, then the kernel times 4."""
    (up,) = jax.linear_transpose(_pyramid_down, jax.ShapeDtypeStruct(tuple(shape), x.dtype))(x)
    return 4.0 * up


def lap_normalize(g: jax.Array, levels: int = 4, eps: float = 1e-12) -> jax.Array:
    """Laplacian pyramid gradient normalisation (TF DeepDream tutorial's ``lapnorm``).

    The (H, W, C) gradient is split into ``levels`` bands with the binomial [1,4,6,4,1] kernel;
    each band is divided by its root mean square; the bands are merged again. Low frequencies,
    which plain gradients starve, get as much weight as high ones.
    """
    bands = []
    for _ in range(levels - 1):
        low = _pyramid_down(g)
        bands.append(g - _pyramid_up(low, g.shape))
        g = low
    bands.append(g)
    bands = [b / jnp.maximum(jnp.sqrt(jnp.mean(b * b)), eps) for b in bands]
    out = bands[-1]
    for band in reversed(bands[:-1]):
        out = _pyramid_up(out, band.shape) + band
    return out


def normalize_gradient(g: jax.Array, mode: str, levels: int = 4, mask: jax.Array | None = None) -> jax.Array:
    """Scale a gradient so that ``image += step_size * normalize_gradient(g)`` is a sensible step.

    With a ``mask`` (H, W) of weights in 0..1 the gradient is multiplied by it and its
    statistics (mean |g|, std) are taken over the positions it weights, so the masked region
    steps as far as an unmasked dream would; an all-zero mask gives a zero step.
    """
    if mask is not None:
        return _normalize_masked(g, mode, levels, mask[..., None])
    if mode == "mean":
        return g / (jnp.mean(jnp.abs(g)) + 1e-8)
    if mode == "std":
        return g / (jnp.std(g) + 1e-8)
    if mode == "lapnorm":
        return lap_normalize(g, levels)
    raise SettingsError(f"unknown gradient normalisation '{mode}'; use one of {', '.join(NORMALIZATIONS)}")


def _normalize_masked(g: jax.Array, mode: str, levels: int, mask: jax.Array) -> jax.Array:
    """``mask * g`` normalised by the statistics of ``g`` weighted by ``mask`` (H, W, 1)."""
    weight = jnp.maximum(jnp.sum(mask) * g.shape[-1], 1e-8)  # weighted count of the entries
    if mode == "mean":
        return mask * g / (jnp.sum(mask * jnp.abs(g)) / weight + 1e-8)
    if mode == "std":
        mean = jnp.sum(mask * g) / weight
        return mask * g / (jnp.sqrt(jnp.sum(mask * jnp.square(g - mean)) / weight) + 1e-8)
    if mode == "lapnorm":
        return lap_normalize(mask * g, levels) * mask
    raise SettingsError(f"unknown gradient normalisation '{mode}'; use one of {', '.join(NORMALIZATIONS)}")
