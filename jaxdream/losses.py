"""Pure loss terms of Gatys style transfer, at jcjohnson/neural-style's scale.

Every term is a free function of arrays (activations or an image, targets, a weight) that
checks its shapes first and raises a clear ``ValueError``. Weights may be Python floats or
traced arrays: pass arrays under ``jit`` so that changing a weight does not recompile.

Scale (x is the image in the network's input space, F a layer's activation as (H*W, C)):

* ``content = weight * mean((F(x) - F(content))**2)`` over the layer's elements;
* ``style = weight * mean((G(F(x)) - G_target)**2)`` over the C*C entries, with
  ``G(F) = F^T F / (C*H*W)``;
* ``tv = weight * 0.5 * sum over channels and the (H-1)x(W-1) grid of
  (x[i,j] - x[i,j+1])**2 + (x[i,j] - x[i+1,j])**2``.

Example:
    >>> import jax.numpy as jnp
    >>> f = jnp.ones((1, 4, 4, 2))
    >>> gram(f).shape
    (1, 2, 2)
    >>> float(content_loss(f, f, 5.0))
    0.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["gram", "gram_sum", "content_loss", "style_loss", "total_variation"]

ArrayLike = jax.typing.ArrayLike


def _check_features(name: str, features: jax.Array) -> None:
    if features.ndim < 3:
        raise ValueError(f"{name}: expected activations of shape (..., H, W, C), got shape "
                         f"{tuple(features.shape)}")


def gram_sum(features: jax.Array) -> jax.Array:
    """Unnormalised Gram matrix ``F^T F`` of (..., H, W, C) activations -> (..., C, C).

    A Gram matrix is a sum over positions, so the Gram of an image computed in tiles is the
    sum of the tiles' ``gram_sum`` values; divide by ``C*H*W`` of the whole image afterwards.
    """
    _check_features("gram", features)
    *lead, h, w, c = features.shape
    flat = features.reshape(*lead, h * w, c)
    return jnp.einsum("...pc,...pd->...cd", flat, flat, precision=lax.Precision.HIGHEST)


def gram(features: jax.Array) -> jax.Array:
    """Gram matrix of (..., H, W, C) activations divided by ``C*H*W`` (neural-style's scale).

    Args:
        features: activations, channels last; leading axes are batch axes.

    Returns:
        (..., C, C) array ``F^T F / (C*H*W)`` with F the activations as (H*W, C).

    Raises:
        ValueError: fewer than 3 dimensions.
    """
    _check_features("gram", features)
    h, w, c = features.shape[-3:]
    return gram_sum(features) / (c * h * w)


def content_loss(features: jax.Array, target: jax.Array, weight: ArrayLike = 1.0) -> jax.Array:
    """``weight * mean((features - target)**2)`` over all elements.

    Args:
        features: activations of the image being optimised.
        target: activations of the content image, same shape.
        weight: the content weight (float or traced scalar).

    Raises:
        ValueError: shapes differ.
    """
    if features.shape != target.shape:
        raise ValueError(f"content_loss: features {tuple(features.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    return weight * jnp.mean(jnp.square(features - target))


def style_loss(gram_x: jax.Array, gram_target: jax.Array, weight: ArrayLike = 1.0) -> jax.Array:
    """``weight * mean((gram_x - gram_target)**2)`` over the C*C entries (and batch axes).

    Args:
        gram_x: :func:`gram` of the image being optimised, (..., C, C).
        gram_target: the target Gram matrix (a style image's, or a blend of several), (C, C)
            or the same shape as ``gram_x``.
        weight: the style weight times the layer's share (float or traced scalar).

    Raises:
        ValueError: not square Gram matrices, or channel counts differ.
    """
    for name, g in (("gram_x", gram_x), ("gram_target", gram_target)):
        if g.ndim < 2 or g.shape[-1] != g.shape[-2]:
            raise ValueError(f"style_loss: {name} must be (..., C, C), got {tuple(g.shape)}")
    if gram_x.shape[-1] != gram_target.shape[-1]:
        raise ValueError(f"style_loss: gram_x has {gram_x.shape[-1]} channels, gram_target "
                         f"{gram_target.shape[-1]}")
    return weight * jnp.mean(jnp.square(gram_x - gram_target))


def total_variation(image: jax.Array, weight: ArrayLike = 1.0) -> jax.Array:
    """neural-style's TV term: ``weight * 0.5 * sum((x[i,j]-x[i,j+1])**2 + (x[i,j]-x[i+1,j])**2)``.

    The sum runs over channels and the (H-1)x(W-1) grid (the last row and column only appear
    as neighbours), over any leading batch axes too.

    Args:
        image: (..., H, W, C), at least 2x2 pixels.
        weight: the TV weight (float or traced scalar).

    Raises:
        ValueError: fewer than 3 dimensions or smaller than 2x2.
    """
    if image.ndim < 3 or image.shape[-3] < 2 or image.shape[-2] < 2:
        raise ValueError(f"total_variation: expected an image (..., H, W, C) of at least 2x2, "
                         f"got shape {tuple(image.shape)}")
    core = image[..., :-1, :-1, :]
    dx = core - image[..., :-1, 1:, :]
    dy = core - image[..., 1:, :-1, :]
    return weight * 0.5 * jnp.sum(jnp.square(dx) + jnp.square(dy))
