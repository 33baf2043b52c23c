"""Layers with Caffe semantics, shared by the model ports.

Caffe differs from the usual JAX/Keras conventions in three places that matter for exact
activations: pooling rounds the output size up (and then drops a last window that would start
inside the padding), average pooling divides by a window size that counts padding but not the
overhang past it, and local response normalisation runs across channels with ``alpha / n``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a Caffe pooling layer along one axis (ceil mode with clipping)."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _pool_padding(size: int, kernel: int, stride: int, pad: int) -> tuple[int, int]:
    out = caffe_pool_size(size, kernel, stride, pad)
    high = (out - 1) * stride + kernel - size - pad
    return pad, max(high, 0)


def caffe_max_pool(x: jax.Array, kernel: int, stride: int, pad: int = 0) -> jax.Array:
    """Caffe MAX pooling of an NHWC array (padding never wins the max).

    Separable: a maximum over the ``kernel`` positions along W, then along H (the same values
    as a 2-D window). Each pass reads its window positions from the ``stride`` phases of the
    axis (``x[r::stride]``), so its backward pass (:func:`_max_along_bwd`) is elementwise
    selects, edge pads and one interleave: no select-and-scatter (on CPU as costly as
    GoogLeNet's convolutions) and no strided scatter. On exact ties the gradient goes to the
    first maximum in row-major order, as in Caffe's ``Backward_cpu`` (the W pass picks each
    row's first, the H pass the first row); in GoogLeNet the pooled values are post-ReLU,
    where ties are zeros whose gradient the ReLU stops anyway.
    """
    ph = _pool_padding(x.shape[1], kernel, stride, pad)
    pw = _pool_padding(x.shape[2], kernel, stride, pad)
    oh = caffe_pool_size(x.shape[1], kernel, stride, pad)
    ow = caffe_pool_size(x.shape[2], kernel, stride, pad)
    if oh < 1 or ow < 1:  # too small: an empty result, as reduce_window gives
        return jnp.zeros((x.shape[0], max(oh, 0), max(ow, 0), x.shape[3]), x.dtype)
    xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=-jnp.inf)
    cols = _max_along(xp, 2, kernel, stride, ow)
    return _max_along(cols, 1, kernel, stride, oh)


def _phases(x: jax.Array, axis: int, stride: int) -> list[jax.Array]:
    """The ``stride`` phases ``x[r::stride]`` along ``axis``, padded with -inf to one length."""
    length = -(-x.shape[axis] // stride)
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, length * stride - x.shape[axis])
    xe = jnp.pad(x, widths, constant_values=-jnp.inf)
    return [lax.slice_in_dim(xe, r, length * stride, stride, axis=axis) for r in range(stride)]


def _window(phases: list[jax.Array], axis: int, t: int, stride: int, out: int) -> jax.Array:
    """Position ``t`` of every window along ``axis``: ``x[j*stride + t]`` for j < out."""
    return lax.slice_in_dim(phases[t % stride], t // stride, t // stride + out, axis=axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_along(x: jax.Array, axis: int, kernel: int, stride: int, out: int) -> jax.Array:
    """Maximum over windows of ``kernel`` positions, ``stride`` apart, along one axis."""
    phases = _phases(x, axis, stride)
    result = _window(phases, axis, 0, stride, out)
    for t in range(1, kernel):
        result = jnp.maximum(result, _window(phases, axis, t, stride, out))
    return result


def _max_along_fwd(x, axis, kernel, stride, out):
    result = _max_along(x, axis, kernel, stride, out)
    return result, (x, result)


def _max_along_bwd(axis, kernel, stride, out, res, ct):
    # Caffe's rule: the cotangent goes to the first position holding the window's maximum
    # (the earlier positions are all below it). Each position's mask is its own elementwise
    # expression, so XLA fuses it into that position's edge pad: no shared tie counts, no
    # division.
    x, result = res
    phases = _phases(x, axis, stride)
    windows = [_window(phases, axis, t, stride, out) for t in range(kernel)]
    zero = jnp.zeros_like(ct)
    grads = [jnp.zeros_like(p) for p in phases]
    for t in range(kernel):
        first = windows[t] == result
        for s in range(t):
            first = first & (windows[s] < result)
        widths = [(0, 0)] * x.ndim
        widths[axis] = (t // stride, phases[0].shape[axis] - out - t // stride)
        grads[t % stride] = grads[t % stride] + jnp.pad(jnp.where(first, ct, zero), widths)
    shape = list(phases[0].shape)
    shape[axis] *= stride
    whole = jnp.stack(grads, axis=axis + 1).reshape(shape)
    return (lax.slice_in_dim(whole, 0, x.shape[axis], axis=axis),)


_max_along.defvjp(_max_along_fwd, _max_along_bwd)


def _avg_counts(size: int, kernel: int, stride: int, pad: int) -> np.ndarray:
    out = caffe_pool_size(size, kernel, stride, pad)
    start = np.arange(out) * stride - pad
    end = np.minimum(start + kernel, size + pad)
    return (end - start).astype(np.float32)


def caffe_avg_pool(x: jax.Array, kernel: int, stride: int, pad: int = 0) -> jax.Array:
    """Caffe AVE pooling of an NHWC array: zero padding, Caffe's divisor."""
    ph = _pool_padding(x.shape[1], kernel, stride, pad)
    pw = _pool_padding(x.shape[2], kernel, stride, pad)
    total = lax.reduce_window(
        x, 0.0, lax.add, (1, kernel, kernel, 1), (1, stride, stride, 1),
        ((0, 0), ph, pw, (0, 0)))
    counts = np.outer(_avg_counts(x.shape[1], kernel, stride, pad),
                      _avg_counts(x.shape[2], kernel, stride, pad))
    return total / jnp.asarray(counts, x.dtype)[None, :, :, None]


def lrn_across_channels(x: jax.Array, local_size: int = 5, alpha: float = 1e-4,
                        beta: float = 0.75, k: float = 1.0) -> jax.Array:
    """Caffe LRN (ACROSS_CHANNELS): ``x / (k + alpha/n * sum of x^2 over n channels)^beta``.

    The windowed channel sum is ``n`` shifted slices of the zero-padded squares, added in one
    fused loop; the backward pass is written by hand (:func:`_lrn_bwd`, Caffe's
    ``CrossChannelBackward``) so that it is one more such loop with no divisions. Together
    about half the time of the banded-matrix product and autodiff used before (2-5% of a
    DeepDream step at 512 px). With Caffe's beta 0.75 the power is ``rsqrt(t) * sqrt(rsqrt(t))``
    (equal to 1e-7 relative), cheaper than ``pow`` in both passes.
    """
    return _lrn(x, local_size, float(alpha), float(beta), float(k))


def _window_sum(q: jax.Array, n: int, before: int) -> jax.Array:
    """``sum(q[..., c - before : c - before + n])`` for every channel ``c`` (zeros past the
    ends). Caffe's window has ``before = (n - 1) // 2``."""
    channels = q.shape[-1]
    qp = jnp.pad(q, [(0, 0)] * (q.ndim - 1) + [(before, n - 1 - before)])
    total = qp[..., :channels]
    for d in range(1, n):
        total = total + qp[..., d:d + channels]
    return total


def _lrn_scale(x, n, alpha, beta, k):
    """``(t^-beta, 1/t)`` with ``t = k + alpha/n * window sum of x^2``."""
    t = k + (alpha / n) * _window_sum(x * x, n, (n - 1) // 2)
    if beta == 0.75:
        r = lax.rsqrt(t)
        return r * jnp.sqrt(r), r * r
    return t ** (-beta), 1.0 / t


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _lrn(x, n, alpha, beta, k):
    return x * _lrn_scale(x, n, alpha, beta, k)[0]


def _lrn_fwd(x, n, alpha, beta, k):
    power, inverse = _lrn_scale(x, n, alpha, beta, k)
    return x * power, (x, power, inverse)


def _lrn_bwd(n, alpha, beta, k, res, ct):
    # y_c = x_c t_c^-beta with t_c = k + alpha/n sum_{j in window(c)} x_j^2, so
    # dx_c = ct_c t_c^-beta - 2 alpha beta / n x_c sum_{j: c in window(j)} ct_j x_j t_j^-beta / t_j;
    # the j whose window holds c are the mirror image of c's window.
    x, power, inverse = res
    mirrored = _window_sum(ct * x * power * inverse, n, n - 1 - (n - 1) // 2)
    return (ct * power - (2.0 * alpha * beta / n) * x * mirrored,)


_lrn.defvjp(_lrn_fwd, _lrn_bwd)


def pool2x2(x: jax.Array, mode: str) -> jax.Array:
    """2x2 stride-2 pooling with floor rounding (Keras 'valid').

    Average pooling is a reshape-and-mean; max pooling is :func:`_max_pool2x2`, whose backward
    pass XLA:CPU runs about four times faster than autodiff's of a reshape-and-max.
    """
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2, :]
    if mode == "max":
        return _max_pool2x2(x)
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _corners(x: jax.Array) -> tuple[jax.Array, ...]:
    return x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]


@jax.custom_vjp
def _max_pool2x2(x: jax.Array) -> jax.Array:
    """2x2 stride-2 max of an NHWC array with even H and W.

    The gradient is the one autodiff gives a reshape-and-max, bit for bit (the cotangent
    divided by the number of tied maxima, given to each of them), written as four
    elementwise selects and one interleave instead of a reduction over a 6-d array: the
    backward of VGG-19's four pools went from about 330 to 80 ms of a 512 px style
    evaluation (XLA profile).
    """
    a, b, c, d = _corners(x)
    return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


def _max_pool2x2_fwd(x):
    out = _max_pool2x2(x)
    return out, (x, out)


def _max_pool2x2_bwd(res, ct):
    x, out = res
    hits = [corner == out for corner in _corners(x)]
    share = ct / sum(h.astype(ct.dtype) for h in hits)
    g = [jnp.where(h, share, jnp.zeros_like(share)) for h in hits]
    n, oh, ow, c = out.shape
    top = jnp.stack(g[:2], axis=3).reshape(n, oh, 2 * ow, c)
    bottom = jnp.stack(g[2:], axis=3).reshape(n, oh, 2 * ow, c)
    return (jnp.stack([top, bottom], axis=2).reshape(x.shape),)


_max_pool2x2.defvjp(_max_pool2x2_fwd, _max_pool2x2_bwd)
