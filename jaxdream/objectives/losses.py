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

Spatial control (Gatys et al., "Controlling Perceptual Factors in Neural Style Transfer"): a
mask m (H, W) of weights in 0..1 gives the masked Gram ``(F*m)^T (F*m) / (C * sum(m**2))``
(:func:`masked_gram`; an all-ones mask gives :func:`gram` exactly) and the masked content term
``weight * mean(m * (F - T)**2)``. The alternative style term :func:`wasserstein_loss` compares
Gaussian fits of the features (crowsonkb/style-transfer-pytorch's W2 loss).

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

__all__ = ["gram", "gram_sum", "masked_gram", "content_loss", "style_loss", "total_variation",
           "sqrtm_newton_schulz", "trace_sqrtm", "gaussian_moments", "wasserstein_loss", "NS_ITERATIONS"]

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
    return _gram_sum(features)


def _flat(features: jax.Array) -> jax.Array:
    *lead, h, w, c = features.shape
    return features.reshape(*lead, h * w, c)


@jax.custom_vjp
def _gram_sum(features: jax.Array) -> jax.Array:
    flat = _flat(features)
    return jnp.einsum("...pc,...pd->...cd", flat, flat, precision=lax.Precision.HIGHEST)


def _gram_sum_fwd(features):
    return _gram_sum(features), features


def _gram_sum_bwd(features, ct):
    """``d<ct, FᵀF>/dF = F (ct + ctᵀ)``: one product where autodiff makes two (``F ct`` and
    ``F ctᵀ``, each as large as the forward one). The Gram losses' cotangents are symmetric,
    so this gives the same bits as autodiff; it saves about 8% of a 512 px style evaluation
    together with :func:`jaxdream.nets.common.pool2x2`'s backward (README: Speed and memory)."""
    sym = ct + jnp.swapaxes(ct, -1, -2)
    grad = jnp.einsum("...pc,...cd->...pd", _flat(features), sym, precision=lax.Precision.HIGHEST)
    return (grad.reshape(features.shape),)


_gram_sum.defvjp(_gram_sum_fwd, _gram_sum_bwd)


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


def _check_mask(name: str, features: jax.Array, mask: jax.Array) -> None:
    if tuple(mask.shape[-2:]) != tuple(features.shape[-3:-1]):
        raise ValueError(f"{name}: mask of shape {tuple(mask.shape)} does not match the positions "
                         f"{tuple(features.shape[-3:-1])} of activations {tuple(features.shape)}")


def masked_gram(features: jax.Array, mask: jax.Array) -> jax.Array:
    """Gram matrix of the positions a mask selects: ``(F*m)^T (F*m) / (C * sum(m**2))``.

    Gatys et al.'s spatial control. Dividing by the mask's sum of squares instead of ``H*W``
    keeps the Gram of a small region on the scale of a whole image's (it is the Gram of the
    region's features), and an all-ones mask gives :func:`gram` exactly.

    Args:
        features: (..., H, W, C) activations.
        mask: (..., H, W) weights in 0..1 (grey levels), broadcast against the leading axes.

    Returns:
        (..., C, C); zero where the mask is empty (no division by zero).
    """
    _check_features("masked_gram", features)
    _check_mask("masked_gram", features, mask)
    c = features.shape[-1]
    area = jnp.sum(jnp.square(mask), axis=(-2, -1))
    g = gram_sum(features * mask[..., None])
    return g / (c * jnp.maximum(area, jnp.finfo(g.dtype).tiny))[..., None, None]


def content_loss(features: jax.Array, target: jax.Array, weight: ArrayLike = 1.0,
                 mask: jax.Array | None = None) -> jax.Array:
    """``weight * mean((features - target)**2)`` over all elements.

    Args:
        features: activations of the image being optimised.
        target: activations of the content image, same shape.
        weight: the content weight (float or traced scalar).
        mask: optional (H, W) weights of the positions: ``weight * mean(mask * (F - T)**2)``
            (the mean still over every element, so an all-ones mask changes nothing).

    Raises:
        ValueError: shapes differ.
    """
    if features.shape != target.shape:
        raise ValueError(f"content_loss: features {tuple(features.shape)} and target "
                         f"{tuple(target.shape)} differ in shape")
    if mask is None:
        return weight * jnp.mean(jnp.square(features - target))
    _check_mask("content_loss", features, mask)
    return weight * jnp.mean(mask[..., None] * jnp.square(features - target))


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


#: Newton-Schulz iterations of :func:`sqrtm_newton_schulz` (fixed, so the program is static):
#: an eigenvalue ``l`` of the normalised matrix grows by about 1.5x per iteration until it
#: nears ``sqrt(l)``, so 20 iterations resolve eigenvalues down to about 1e-7 of the largest.
NS_ITERATIONS = 20


def sqrtm_newton_schulz(a: jax.Array, iterations: int = NS_ITERATIONS) -> jax.Array:
    """Square root of symmetric positive semi-definite matrices by the coupled Newton-Schulz
    iteration, differentiable and built from matmuls only.

    ``Y0 = A / |A|_F, Z0 = I; T = (3I - Z Y) / 2; Y <- Y T; Z <- T Z``: Y converges to
    ``sqrt(A / |A|_F)`` (Z to its inverse) because the Frobenius normalisation puts every
    eigenvalue in [0, 1]; the result is ``Y * sqrt(|A|_F)``.

    Args:
        a: (..., C, C) symmetric PSD.
        iterations: fixed iteration count (static).

    Returns:
        (..., C, C) approximately ``sqrt(a)``; zero for a zero matrix.

    Example:
        >>> float(sqrtm_newton_schulz(jnp.eye(2) * 4.0)[0, 0])  # doctest: +ELLIPSIS
        2.0...
    """
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"sqrtm_newton_schulz: expected square matrices (..., C, C), got {tuple(a.shape)}")
    y, _, norm = _newton_schulz(a, iterations)
    return y * jnp.sqrt(norm)


def _newton_schulz(a: jax.Array, iterations: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(Y, Z, |A|_F): ``Y ~ sqrt(A / |A|_F)`` and ``Z ~`` its inverse."""
    hi = lax.Precision.HIGHEST
    norm = jnp.sqrt(jnp.sum(jnp.square(a), axis=(-2, -1), keepdims=True))
    norm = jnp.maximum(norm, jnp.finfo(a.dtype).tiny)
    eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)

    def step(_, yz):
        y, z = yz
        t = 0.5 * (3.0 * eye - jnp.matmul(z, y, precision=hi))
        return jnp.matmul(y, t, precision=hi), jnp.matmul(t, z, precision=hi)

    y, z = lax.fori_loop(0, iterations, step, (a / norm, eye), unroll=True)
    return y, z, norm


@jax.custom_vjp
def trace_sqrtm(a: jax.Array) -> jax.Array:
    """``tr(sqrt(A))`` of symmetric PSD (..., C, C) matrices by :data:`NS_ITERATIONS`
    Newton-Schulz iterations, with the gradient ``A^(-1/2) / 2`` taken from the iteration's
    own inverse (Z), so that the backward pass costs no second pass through the iterations
    (where eigenvalues are too small to resolve, both are truncated alike)."""
    y, _, norm = _newton_schulz(a, NS_ITERATIONS)
    return jnp.trace(y, axis1=-2, axis2=-1) * jnp.sqrt(norm[..., 0, 0])


def _trace_sqrtm_fwd(a):
    y, z, norm = _newton_schulz(a, NS_ITERATIONS)
    root = jnp.sqrt(norm)
    return jnp.trace(y, axis1=-2, axis2=-1) * root[..., 0, 0], z / root


def _trace_sqrtm_bwd(inv_sqrt, g):
    return (0.5 * g[..., None, None] * inv_sqrt,)


trace_sqrtm.defvjp(_trace_sqrtm_fwd, _trace_sqrtm_bwd)


def gaussian_moments(features: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean (C,) and covariance (C, C) of (H, W, C) activations, positions weighted by
    ``mask**2 / sum(mask**2)`` (the weights of :func:`masked_gram`; uniform without a mask).

    The covariance is computed from centred features (no ``E[FF^T] - mu mu^T`` cancellation).
    """
    _check_features("gaussian_moments", features)
    flat = features.reshape(-1, features.shape[-1])
    if mask is None:
        w = jnp.full((flat.shape[0],), 1.0 / flat.shape[0], flat.dtype)
    else:
        _check_mask("gaussian_moments", features, mask)
        w = jnp.square(mask).reshape(-1)
        w = w / jnp.maximum(jnp.sum(w), jnp.finfo(flat.dtype).tiny)
    mean = w @ flat
    centred = flat - mean
    cov = jnp.einsum("p,pc,pd->cd", w, centred, centred, precision=lax.Precision.HIGHEST)
    return mean, cov


def wasserstein_loss(mean: jax.Array, cov: jax.Array, target_mean: jax.Array, target_cov: jax.Array,
                     target_cov_sqrt: jax.Array, weight: ArrayLike = 1.0) -> jax.Array:
    """Squared Wasserstein-2 distance between two Gaussians, divided by the channel count:
    ``weight * (|mu - mu_t|**2 + tr(S) + tr(S_t) - 2 tr(sqrt(sqrt(S_t) S sqrt(S_t)))) / C``.

    crowsonkb/style-transfer-pytorch's style loss: the target's square root is precomputed
    (pass ``sqrtm_newton_schulz(target_cov)``); the inner one's trace is :func:`trace_sqrtm`.
    Zero (to the iteration's accuracy) when both Gaussians are the same.

    Args:
        mean, cov: the optimised image's moments, (C,) and (C, C) (:func:`gaussian_moments`).
        target_mean, target_cov, target_cov_sqrt: the style's.
        weight: the style weight times the layer's share.

    Raises:
        ValueError: shapes do not agree.
    """
    c = mean.shape[-1]
    for name, m in (("cov", cov), ("target_cov", target_cov), ("target_cov_sqrt", target_cov_sqrt)):
        if m.shape[-2:] != (c, c):
            raise ValueError(f"wasserstein_loss: {name} must be ({c}, {c}) for {c} channels, got {tuple(m.shape)}")
    if target_mean.shape[-1] != c:
        raise ValueError(f"wasserstein_loss: target_mean has {target_mean.shape[-1]} channels, mean {c}")
    hi = lax.Precision.HIGHEST
    inner = jnp.matmul(jnp.matmul(target_cov_sqrt, cov, precision=hi), target_cov_sqrt, precision=hi)
    inner = 0.5 * (inner + jnp.swapaxes(inner, -1, -2))  # symmetric up to rounding
    trace = lambda m: jnp.trace(m, axis1=-2, axis2=-1)
    w2 = (jnp.sum(jnp.square(mean - target_mean), axis=-1) + trace(cov) + trace(target_cov)
          - 2.0 * trace_sqrtm(inner))
    return weight * w2 / c
