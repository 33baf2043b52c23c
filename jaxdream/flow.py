"""Dense optical flow in JAX: TV-L1 estimation, backward warping, forward-backward masks.

Conventions
-----------
Images are float arrays ``(H, W, 3)`` RGB in 0..255 or ``(H, W)`` gray. A flow is ``(H, W, 2)``
with ``flow[..., 0] = dx`` (column displacement) and ``flow[..., 1] = dy``: it lives on the grid
of frame A and sends the pixel ``(x, y)`` of A to ``(x + dx, y + dy)`` in frame B. Hence
``warp(B, flow) ≈ A`` (backward warping), and ``estimate_flow(A, B)`` returns that flow.

Video use (Ruder et al., "Artistic style transfer for videos", 2016): frame ``t`` is
initialised from the stylised frame ``t-1`` warped into frame ``t``::

    flow, flow_back = forward_backward(frame_t, frame_prev)   # t -> t-1, and t-1 -> t
    reliable = occlusion_mask(flow, flow_back)                # pixels of t visible in t-1
    init = warp(stylised_prev, flow)                          # stylised t-1 seen from t

In the paper's notation our ``flow`` (t -> t-1) is their backward flow ``ŵ`` and ``flow_back``
is their forward flow ``w``.

Method
------
TV-L1 (Zach, Pock and Bischof 2007, in the form of Sánchez Pérez, Meinhardt-Llopis and Facciolo,
"TV-L1 Optical Flow Estimation", IPOL 2013): minimise ``Σ |∇u| + λ |I1(x + u) - I0(x)|`` by
alternating a pointwise thresholding step on the linearised data term with Chambolle's dual
projection for the TV term, inside a coarse-to-fine pyramid with several re-linearisations
(warps) per level and an optional 5x5 median filter of the flow after each warp (Sun, Roth and
Black 2010). It was chosen over robust Horn-Schunck because the L1 data term tolerates
occlusions and brightness outliers, the TV prior keeps motion boundaries sharp (which the
occlusion mask relies on), and every step is a local elementwise or stencil update: it vectorises
on any device, needs no linear solver, and the fixed iteration counts give static loops
(``lax.fori_loop``) that compile once per frame size. Default parameters follow IPOL (λ 0.15,
τ 0.25, θ 0.3, zoom factor 0.5, 5 warps) on luminance in 0..255 with a light Gaussian
pre-smoothing (σ 0.8), but with a fixed 20 iterations per warp instead of IPOL's stopping test
(``benchmarks/flow_bench.py``: 15 to 30 give the same errors on the bundled clips, 10 with
3 warps loses reliable pixels). Pixels whose warped position leaves the frame get no data term,
so the flow there is filled in by the TV prior. Bilinear interpolation replaces IPOL's bicubic.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .errors import SettingsError
from .runtime import parallel

__all__ = ["warp", "estimate_flow", "forward_backward", "occlusion_mask", "pair_flows", "chain_flows", "endpoint_error",
           "temporal_error", "pyramid_levels"]

Array = Any  # jax or numpy array

#: ITU-R BT.601 luma weights used for the data term.
_LUMA = (0.299, 0.587, 0.114)
#: Smallest side of the coarsest pyramid level chosen by :func:`pyramid_levels`.
_MIN_LEVEL_SIDE = 12

# Incremented each time the flow estimator is traced; the tests use it to check for retraces.
_trace_counts = {"estimate": 0}


# --------------------------------------------------------------------------------------------
# Warping
# --------------------------------------------------------------------------------------------


def _sample(image: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Bilinear sample of ``image`` (H, W[, C]) at float coordinates, clamped to the border."""
    if image.ndim == 2:
        return _sample_planes(image[None], x, y)[0]
    return jnp.moveaxis(_sample_planes(jnp.moveaxis(image, -1, 0), x, y), 0, -1)


def _sample_planes(planes: jax.Array, x: jax.Array, y: jax.Array) -> jax.Array:
    """Bilinear sample of (C, H, W) ``planes`` at (H, W) coordinates clamped to the border.

    The TV-L1 state is kept channel-first so the minor axis is the image width, which XLA
    vectorises (a trailing axis of 2 would not).
    """
    h, w = planes.shape[1:]
    x = jnp.clip(x, 0.0, w - 1.0)
    y = jnp.clip(y, 0.0, h - 1.0)
    x0f, y0f = jnp.floor(x), jnp.floor(y)
    x0, y0 = x0f.astype(jnp.int32), y0f.astype(jnp.int32)
    x1, y1 = jnp.minimum(x0 + 1, w - 1), jnp.minimum(y0 + 1, h - 1)
    wx, wy = x - x0f, y - y0f
    flat = planes.reshape(planes.shape[0], h * w)

    def at(yi, xi):
        return flat[:, yi * w + xi]

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def _grid(shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    h, w = shape[:2]
    return (jnp.arange(w, dtype=jnp.float32)[None, :], jnp.arange(h, dtype=jnp.float32)[:, None])


def _warp(image: jax.Array, flow: jax.Array) -> jax.Array:
    gx, gy = _grid(flow.shape)
    return _sample(image, gx + flow[..., 0], gy + flow[..., 1])


_warp_jit = jax.jit(_warp)


def _check_flow(flow: Array, hw: tuple[int, int], name: str = "flow") -> None:
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise SettingsError(f"{name} must have shape (H, W, 2), got {tuple(flow.shape)}")
    if tuple(flow.shape[:2]) != tuple(hw):
        raise SettingsError(f"{name} shape {tuple(flow.shape)} does not match the image size "
                            f"{tuple(hw)}")


def _check_image(image: Array, name: str = "image") -> None:
    if image.ndim not in (2, 3):
        raise SettingsError(f"{name} must be (H, W) or (H, W, C), got shape {tuple(image.shape)}")


def warp(image: Array, flow: Array) -> jax.Array:
    """Backward-warp ``image`` by ``flow`` with bilinear sampling and edge replication.

    ``out[y, x] = image[y + flow[y, x, 1], x + flow[y, x, 0]]``; positions outside the image are
    clamped to the nearest border pixel.

    Args:
        image: ``(H, W)`` or ``(H, W, C)`` array.
        flow: ``(H, W, 2)`` displacement (dx, dy) on the output grid.

    Returns:
        The warped image, same shape as ``image``, float32.

    Example:
        >>> img = jnp.arange(12.0).reshape(3, 4)
        >>> warp(img, jnp.ones((3, 4, 2)) * jnp.array([1.0, 0.0]))[0].tolist()
        [1.0, 2.0, 3.0, 3.0]
    """
    _check_image(image)
    _check_flow(flow, image.shape[:2])
    return _warp_jit(jnp.asarray(image, jnp.float32), jnp.asarray(flow, jnp.float32))


# --------------------------------------------------------------------------------------------
# Image helpers (all traced)
# --------------------------------------------------------------------------------------------


def _gray(image: jax.Array) -> jax.Array:
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[..., 0]
    return image[..., 0] * _LUMA[0] + image[..., 1] * _LUMA[1] + image[..., 2] * _LUMA[2]


def _gaussian_kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(image: jax.Array, sigma: float) -> jax.Array:
    """Separable Gaussian blur of an (H, W) image with edge replication (static ``sigma``)."""
    if sigma <= 0:
        return image
    k = _gaussian_kernel(sigma)
    r = len(k) // 2
    h, w = image.shape
    padded = jnp.pad(image, ((0, 0), (r, r)), mode="edge")
    image = sum(float(k[i]) * padded[:, i:i + w] for i in range(len(k)))
    padded = jnp.pad(image, ((r, r), (0, 0)), mode="edge")
    return sum(float(k[i]) * padded[i:i + h, :] for i in range(len(k)))


def _centered_gradient(image: jax.Array) -> tuple[jax.Array, jax.Array]:
    p = jnp.pad(image, 1, mode="edge")
    return (0.5 * (p[1:-1, 2:] - p[1:-1, :-2]), 0.5 * (p[2:, 1:-1] - p[:-2, 1:-1]))


def _forward_gradient(u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Forward differences of (..., H, W) ``u``, zero on the last column/row (Neumann)."""
    ux = jnp.concatenate([u[..., 1:] - u[..., :-1], jnp.zeros_like(u[..., :1])], axis=-1)
    uy = jnp.concatenate([u[..., 1:, :] - u[..., :-1, :], jnp.zeros_like(u[..., :1, :])], axis=-2)
    return ux, uy


def _divergence(px: jax.Array, py: jax.Array) -> jax.Array:
    """Backward-difference divergence of (..., H, W) fields, the negative adjoint of
    :func:`_forward_gradient`."""
    px = px.at[..., -1].set(0.0)
    py = py.at[..., -1, :].set(0.0)
    dx = px - jnp.concatenate([jnp.zeros_like(px[..., :1]), px[..., :-1]], axis=-1)
    dy = py - jnp.concatenate([jnp.zeros_like(py[..., :1, :]), py[..., :-1, :]], axis=-2)
    return dx + dy


def _batcher_pairs(n: int) -> list[tuple[int, int]]:
    """Compare-exchange pairs of Batcher's odd-even merge sort for ``n`` (a power of two)."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=None)
def _median_network(count: int) -> tuple[tuple[int, int], ...]:
    """The comparators of a sorting network on ``count`` values that the median depends on.

    Inputs beyond ``count`` (up to the next power of two) are +inf and never move, so pairs
    touching them are dropped; a backward pass then keeps only pairs that feed the middle output.
    A median built from ``jnp.minimum``/``jnp.maximum`` fuses into one elementwise kernel,
    unlike ``jnp.sort``, which is slow on CPU.
    """
    n = 1 << (count - 1).bit_length()
    pairs = [(i, j) for i, j in _batcher_pairs(n) if j < count]
    needed, kept = {count // 2}, []
    for i, j in reversed(pairs):
        if i in needed or j in needed:
            needed |= {i, j}
            kept.append((i, j))
    return tuple(reversed(kept))


def _median_filter(u: jax.Array, radius: int) -> jax.Array:
    """Median over a (2r+1)^2 window of each plane of (C, H, W) ``u``, edge replicated."""
    h, w = u.shape[1:]
    size = 2 * radius + 1
    p = jnp.pad(u, ((0, 0), (radius, radius), (radius, radius)), mode="edge")
    values = [p[:, i:i + h, j:j + w] for i in range(size) for j in range(size)]
    for i, j in _median_network(size * size):
        values[i], values[j] = jnp.minimum(values[i], values[j]), jnp.maximum(values[i], values[j])
    return values[size * size // 2]


def _resize(image: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """Linear resize of the last two axes of (..., H, W) ``image`` to ``shape``."""
    return jax.image.resize(image, image.shape[:-2] + shape, method="linear", antialias=False)


# --------------------------------------------------------------------------------------------
# TV-L1
# --------------------------------------------------------------------------------------------


def pyramid_levels(height: int, width: int, scale_factor: float = 0.5) -> int:
    """Number of pyramid levels so that the coarsest side is at least 12 px (at most 8 levels).

    Args:
        height: Frame height in pixels.
        width: Frame width in pixels.
        scale_factor: Zoom factor between levels, in (0, 1).

    Returns:
        The level count, at least 1.
    """
    side = min(height, width)
    if side <= _MIN_LEVEL_SIDE:
        return 1
    return min(8, 1 + int(math.floor(math.log(side / _MIN_LEVEL_SIDE) / -math.log(scale_factor))))


def _level_shapes(h: int, w: int, levels: int, scale_factor: float) -> list[tuple[int, int]]:
    return [(max(1, round(h * scale_factor ** i)), max(1, round(w * scale_factor ** i)))
            for i in range(levels)]


def _tvl1_level(i0: jax.Array, i1: jax.Array, u: jax.Array, lam: jax.Array, tau: jax.Array,
                theta: jax.Array, warps: int, iterations: int, median_radius: int) -> jax.Array:
    """Refine the channel-first flow ``u`` (2, H, W) from ``i0`` to ``i1`` on one level."""
    h, w = i0.shape
    gx_grid, gy_grid = _grid(i0.shape)
    i1_and_grad = jnp.stack([i1, *_centered_gradient(i1)])
    lam_theta = lam * theta
    tau_theta = tau / theta

    def warp_step(_, carry):
        u, px, py = carry
        x = gx_grid + u[0]
        y = gy_grid + u[1]
        inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        sampled = _sample_planes(i1_and_grad, x, y)
        i1w = sampled[0]
        grad = jnp.where(inside, sampled[1:], 0.0)  # (2, H, W)
        grad2 = jnp.sum(grad * grad, axis=0)
        rho_c = jnp.where(inside, i1w - jnp.sum(grad * u, axis=0) - i0, 0.0)
        safe_grad2 = jnp.where(grad2 > 1e-10, grad2, 1.0)

        def inner_step(_, carry):
            u, px, py = carry
            rho = rho_c + jnp.sum(grad * u, axis=0)
            step = jnp.where(rho < -lam_theta * grad2, lam_theta,
                             jnp.where(rho > lam_theta * grad2, -lam_theta,
                                       jnp.where(grad2 > 1e-10, -rho / safe_grad2, 0.0)))
            v = u + step * grad
            u = v + theta * _divergence(px, py)
            ux, uy = _forward_gradient(u)
            norm = 1.0 + tau_theta * jnp.sqrt(ux * ux + uy * uy)
            return u, (px + tau_theta * ux) / norm, (py + tau_theta * uy) / norm

        u, px, py = lax.fori_loop(0, iterations, inner_step, (u, px, py))
        if median_radius > 0:
            u = _median_filter(u, median_radius)
        return u, px, py

    zeros = jnp.zeros_like(u)
    return lax.fori_loop(0, warps, warp_step, (u, zeros, zeros))[0]


def _estimate(a: jax.Array, b: jax.Array, lam: jax.Array, tau: jax.Array, theta: jax.Array, *,
              levels: int, warps: int, iterations: int, scale_factor: float, smoothing: float,
              median_radius: int) -> jax.Array:
    _trace_counts["estimate"] += 1
    h, w = a.shape
    shapes = _level_shapes(h, w, levels, scale_factor)
    # IPOL: σ = 0.6 sqrt(1/η² - 1) before each downsampling by η
    pyramid_sigma = 0.6 * math.sqrt(1.0 / scale_factor ** 2 - 1.0)
    pyr0 = [_blur(a, smoothing)]
    pyr1 = [_blur(b, smoothing)]
    for shape in shapes[1:]:
        pyr0.append(_resize(_blur(pyr0[-1], pyramid_sigma), shape))
        pyr1.append(_resize(_blur(pyr1[-1], pyramid_sigma), shape))
    u = jnp.zeros((2,) + shapes[-1], jnp.float32)
    for level in reversed(range(levels)):
        if u.shape[1:] != shapes[level]:
            (hc, wc), (hf, wf) = u.shape[1:], shapes[level]
            scale = jnp.array([wf / wc, hf / hc], jnp.float32)[:, None, None]
            u = _resize(u, shapes[level]) * scale
        u = _tvl1_level(pyr0[level], pyr1[level], u, lam, tau, theta, warps, iterations,
                        median_radius)
    return jnp.moveaxis(u, 0, -1)


_STATIC = ("levels", "warps", "iterations", "scale_factor", "smoothing", "median_radius")
_estimate_jit = jax.jit(_estimate, static_argnames=_STATIC)


def _prepare(a: Array, b: Array, levels: int | None, warps: int, iterations: int,
             scale_factor: float, smoothing: float, median_radius: int, lam: float, tau: float,
             theta: float) -> tuple[tuple[jax.Array, ...], dict]:
    """Validate the arguments; return (traced args, static kwargs)."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    _check_image(a, "frame a")
    if a.shape != b.shape:
        raise SettingsError(f"frames differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim == 3 and a.shape[2] not in (1, 3):
        raise SettingsError(f"frames must have 1 or 3 channels, got {a.shape[2]}")
    h, w = a.shape[:2]
    if min(h, w) < 4:
        raise SettingsError(f"frames of {h}x{w} px are too small for optical flow (min 4 px)")
    if not 0.25 <= scale_factor < 1:
        raise SettingsError(f"scale_factor must be in [0.25, 1), got {scale_factor}")
    if levels is None:
        levels = pyramid_levels(h, w, scale_factor)
    for name, value in (("levels", levels), ("warps", warps), ("iterations", iterations)):
        if int(value) != value or value < 1:
            raise SettingsError(f"{name} must be a positive integer, got {value}")
    coarsest = _level_shapes(h, w, int(levels), scale_factor)[-1]
    if min(coarsest) < 4:
        raise SettingsError(f"levels={levels} shrinks {h}x{w} px frames below 4 px; use fewer "
                            f"levels or None")
    if int(median_radius) != median_radius or median_radius < 0:
        raise SettingsError(f"median_radius must be a non-negative integer, got {median_radius}")
    for name, value in (("lam", lam), ("tau", tau), ("theta", theta)):
        if not value > 0:
            raise SettingsError(f"{name} must be positive, got {value}")
    if not 0 < tau <= 0.25:
        raise SettingsError(f"tau must be in (0, 0.25] for the dual step to converge, got {tau}")
    if smoothing < 0:
        raise SettingsError(f"smoothing must be non-negative, got {smoothing}")
    # luminance outside jit: gray and colour frames of one size share a compiled estimator
    traced = (_gray(a.astype(jnp.float32)), _gray(b.astype(jnp.float32)),
              *(jnp.asarray(v, jnp.float32) for v in (lam, tau, theta)))
    static = dict(levels=int(levels), warps=int(warps), iterations=int(iterations),
                  scale_factor=float(scale_factor), smoothing=float(smoothing),
                  median_radius=int(median_radius))
    return traced, static


def estimate_flow(a: Array, b: Array, *, levels: int | None = None, warps: int = 5,
                  iterations: int = 20, scale_factor: float = 0.5, smoothing: float = 0.8,
                  median_radius: int = 2, lam: float = 0.15, tau: float = 0.25,
                  theta: float = 0.3) -> jax.Array:
    """Dense TV-L1 optical flow from frame ``a`` to frame ``b``, so that ``warp(b, flow) ≈ a``.

    The whole estimator is one jitted function per frame size and static setting; ``lam``,
    ``tau`` and ``theta`` are traced, so changing them does not recompile.

    Args:
        a: First frame, ``(H, W, 3)`` RGB in 0..255 or ``(H, W)`` gray.
        b: Second frame, same shape as ``a``.
        levels: Pyramid levels; ``None`` chooses them so the coarsest side is about 12 px.
        warps: Re-linearisations of the data term per level.
        iterations: Primal-dual iterations per warp.
        scale_factor: Zoom factor between pyramid levels, e.g. 0.5 or 0.7.
        smoothing: Sigma in px of the Gaussian pre-smoothing of the finest level (0 for none).
        median_radius: Radius of the median filter applied to the flow after each warp
            (2 gives 5x5; 0 disables it).
        lam: Weight λ of the L1 data term (images in 0..255); larger follows the data more.
        tau: Dual time step τ, at most 0.25.
        theta: Coupling θ between the TV and data sub-problems.

    Returns:
        ``(H, W, 2)`` float32 flow ``(dx, dy)`` on the grid of ``a``.

    Raises:
        SettingsError: if the frames differ in shape or a setting is out of range.

    Example:
        >>> flow = estimate_flow(frame0, frame1)
        >>> aligned = warp(frame1, flow)  # frame1 seen from frame0
    """
    traced, static = _prepare(a, b, levels, warps, iterations, scale_factor, smoothing,
                              median_radius, lam, tau, theta)
    return _estimate_jit(*traced, **static)


def _settings(kwargs: dict) -> dict:
    """:func:`estimate_flow`'s keyword settings with ``kwargs`` applied (unknown names refused)."""
    defaults = {name: param.default
                for name, param in inspect.signature(estimate_flow).parameters.items()
                if param.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise SettingsError(f"unknown flow setting(s): {', '.join(sorted(unknown))}")
    return {**defaults, **kwargs}


def forward_backward(a: Array, b: Array, **kwargs: Any) -> tuple[jax.Array, jax.Array]:
    """Flows in both directions, from two calls of the one compiled estimator.

    Both directions reuse the executable that :func:`estimate_flow` compiles for the frame size
    (a vmapped pair would be a second compile of several seconds for no gain on CPU; on an
    accelerator the two calls are dispatched asynchronously, back to back).

    Args:
        a: First frame.
        b: Second frame, same shape.
        **kwargs: Settings of :func:`estimate_flow`.

    Returns:
        ``(flow_fw, flow_bw)``: ``flow_fw`` from ``a`` to ``b`` on the grid of ``a``
        (``warp(b, flow_fw) ≈ a``) and ``flow_bw`` from ``b`` to ``a`` on the grid of ``b``.
        Pass them in this order to :func:`occlusion_mask` for the pixels of ``a`` visible in ``b``.
    """
    (a, b, *params), static = _prepare(a, b, **_settings(kwargs))
    return _estimate_jit(a, b, *params, **static), _estimate_jit(b, a, *params, **static)


# --------------------------------------------------------------------------------------------
# Occlusions and error measures
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("motion_boundaries",))
def _occlusion_mask(flow_fw: jax.Array, flow_bw: jax.Array, motion_boundaries: bool) -> jax.Array:
    h, w = flow_fw.shape[:2]
    gx, gy = _grid(flow_fw.shape)
    x, y = gx + flow_fw[..., 0], gy + flow_fw[..., 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    back = _sample(flow_bw, x, y)  # flow of B, seen at where each pixel of A lands
    mismatch = jnp.sum((flow_fw + back) ** 2, axis=-1)
    tolerance = 0.01 * (jnp.sum(flow_fw ** 2, axis=-1) + jnp.sum(back ** 2, axis=-1)) + 0.5
    reliable = inside & (mismatch <= tolerance)
    if motion_boundaries:
        fx, fy = _centered_gradient(flow_fw[..., 0]), _centered_gradient(flow_fw[..., 1])
        grad2 = fx[0] ** 2 + fx[1] ** 2 + fy[0] ** 2 + fy[1] ** 2
        reliable &= grad2 <= 0.01 * jnp.sum(flow_fw ** 2, axis=-1) + 0.002
    return reliable.astype(jnp.float32)


def occlusion_mask(flow_fw: Array, flow_bw: Array, *, motion_boundaries: bool = True) -> jax.Array:
    """Pixels of frame A whose flow to frame B is reliable (forward-backward check).

    Ruder et al. (2016), written for our convention: with ``w = flow_fw(x)`` and
    ``w_back = flow_bw(x + w)`` (bilinear), a pixel is unreliable where
    ``|w + w_back|² > 0.01 (|w|² + |w_back|²) + 0.5`` (occluded in B or badly estimated),
    where ``x + w`` leaves the frame, and, with ``motion_boundaries``, where
    ``|∇u|² + |∇v|² > 0.01 |w|² + 0.002`` for ``(u, v) = flow_fw`` (central differences).
    In the paper's terms ``flow_fw`` is their backward flow ``ŵ`` and ``flow_bw`` their ``w``.

    For video, with A = frame t and B = frame t-1:
    ``flow, back = forward_backward(frame_t, frame_prev)``; ``occlusion_mask(flow, back)`` marks
    the pixels of frame t where ``warp(stylised_prev, flow)`` can be trusted.

    Args:
        flow_fw: ``(H, W, 2)`` flow from A to B on the grid of A (``warp(B, flow_fw) ≈ A``).
        flow_bw: ``(H, W, 2)`` flow from B to A on the grid of B.
        motion_boundaries: Also mark large flow gradients as unreliable.

    Returns:
        ``(H, W)`` float32 mask on the grid of A: 1 reliable, 0 occluded or unreliable.
    """
    flow_fw, flow_bw = jnp.asarray(flow_fw, jnp.float32), jnp.asarray(flow_bw, jnp.float32)
    _check_flow(flow_fw, flow_fw.shape[:2], "flow_fw")
    _check_flow(flow_bw, flow_fw.shape[:2], "flow_bw")
    return _occlusion_mask(flow_fw, flow_bw, bool(motion_boundaries))


@functools.partial(jax.jit, static_argnames=_STATIC + ("motion_boundaries",))
def _pairs_jit(a, b, lam, tau, theta, *, motion_boundaries: bool, **static):
    """Flows and masks of a batch of pairs in one program, both ways (vmapped; split over a mesh
    by the sharding of ``a`` and ``b``)."""
    def one(a, b):
        fw = _estimate(a, b, lam, tau, theta, **static)
        bw = _estimate(b, a, lam, tau, theta, **static)
        return fw, _occlusion_mask(fw, bw, motion_boundaries), bw, _occlusion_mask(bw, fw, motion_boundaries)
    return jax.vmap(one)(a, b)


def pair_flows(frames_a, frames_b, *, motion_boundaries: bool = True, mesh=None, both_ways: bool = False,
               **kwargs: Any) -> tuple[np.ndarray, ...]:
    """Flows and occlusion masks of independent frame pairs, one pair per device at a time.

    For each pair ``(a, b)``: ``flow`` from ``a`` to ``b`` (:func:`estimate_flow`) and the mask
    of the pixels of ``a`` it carries reliably (:func:`occlusion_mask` with the flow back).
    With a ``mesh`` of several devices (:func:`jaxdream.runtime.parallel.mesh`) the pairs are padded to
    a multiple of its size and computed as one vmapped program split over it; otherwise one
    pair after another with the compiled estimator of :func:`forward_backward`. Both give the
    same flows (to float rounding).

    Args:
        frames_a, frames_b: sequences of frames of one shape (``(H, W, 3)`` or ``(H, W)``).
        motion_boundaries: see :func:`occlusion_mask`.
        mesh: the devices to split the pairs over (None: one device).
        both_ways: also return the flows from ``b`` to ``a`` and the masks of ``b``.
        **kwargs: settings of :func:`estimate_flow`.

    Returns:
        ``(flows (N, H, W, 2), masks (N, H, W))`` as NumPy float32 arrays, followed with
        ``both_ways`` by the flows back and the masks of the second frames.
    """
    if len(frames_a) != len(frames_b) or not len(frames_a):
        raise SettingsError(f"pair_flows: {len(frames_a)} first and {len(frames_b)} second frames")
    want = 4 if both_ways else 2
    if mesh is None or mesh.size == 1:
        rows = []
        for a, b in zip(frames_a, frames_b):
            fw, bw = forward_backward(a, b, **kwargs)
            rows.append((fw, occlusion_mask(fw, bw, motion_boundaries=motion_boundaries), bw,
                         occlusion_mask(bw, fw, motion_boundaries=motion_boundaries) if both_ways else None))
        return tuple(np.stack([np.asarray(r[k]) for r in rows]) for k in range(want))
    settings = _settings(kwargs)
    prepared = [_prepare(a, b, **settings) for a, b in zip(frames_a, frames_b)]
    static = prepared[0][1]
    a = jnp.stack([t[0] for t, _ in prepared])
    b = jnp.stack([t[1] for t, _ in prepared])
    (a, b), n = parallel.pad_batch((a, b), mesh.size)
    a, b = parallel.shard_batch((a, b), mesh)
    out = _pairs_jit(a, b, *prepared[0][0][2:], motion_boundaries=bool(motion_boundaries), **static)
    return tuple(parallel.to_host(x)[:n] for x in out[:want])


def chain_flows(flows: Sequence[Array], masks: Sequence[Array]) -> tuple[jax.Array, jax.Array]:
    """Compose flows along a chain of frames: ``flows[k]`` goes from frame ``t-k`` to ``t-k-1``
    (on the grid of ``t-k``) with its reliability ``masks[k]``; the result goes from frame ``t``
    straight to frame ``t-n`` (``warp(frame_{t-n}, flow) ≈ frame_t``) with the pixels reliable at
    every link (each link's mask sampled where the chain has arrived must be above 0.5, and the
    chain must stay inside the frame). Used to measure long-term temporal error.

    Returns:
        ``(flow (H, W, 2), mask (H, W))`` on the grid of frame ``t``.
    """
    first = jnp.asarray(flows[0], jnp.float32)
    h, w = first.shape[:2]
    gx, gy = _grid(first.shape)
    x, y = jnp.broadcast_to(gx, (h, w)), jnp.broadcast_to(gy, (h, w))
    reliable = jnp.ones((h, w), bool)
    for f, m in zip(flows, masks):
        f = jnp.asarray(f, jnp.float32)
        inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
        reliable &= inside & (_sample(jnp.asarray(m, jnp.float32), x, y) > 0.5)
        step = _sample(f, x, y)
        x, y = x + step[..., 0], y + step[..., 1]
    reliable &= (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    return jnp.stack([x - gx, y - gy], axis=-1), reliable.astype(jnp.float32)


def endpoint_error(flow: Array, truth: Array, mask: Array | None = None) -> float:
    """Mean endpoint error ``|flow - truth|`` in pixels, over ``mask > 0`` when given.

    Args:
        flow: ``(H, W, 2)`` estimated flow.
        truth: ``(H, W, 2)`` reference flow.
        mask: Optional ``(H, W)`` weights; pixels with ``mask > 0`` are averaged.

    Returns:
        The mean endpoint error as a Python float.
    """
    flow, truth = np.asarray(flow, np.float64), np.asarray(truth, np.float64)
    _check_flow(flow, flow.shape[:2])
    _check_flow(truth, flow.shape[:2], "truth")
    epe = np.sqrt(np.sum((flow - truth) ** 2, axis=-1))
    if mask is None:
        return float(epe.mean())
    mask = np.asarray(mask) > 0
    if mask.shape != epe.shape:
        raise SettingsError(f"mask shape {mask.shape} does not match the flow size {epe.shape}")
    if not mask.any():
        raise SettingsError("mask selects no pixels")
    return float(epe[mask].mean())


def temporal_error(frame_prev: Array, frame_next: Array, flow: Array,
                   mask: Array | None = None) -> float:
    """Mean squared difference between ``frame_next`` and ``warp(frame_prev, flow)``.

    This is the temporal warping error of Ruder et al. (lower is smoother): the average over the
    reliable pixels and all channels of ``(frame_next - warp(frame_prev, flow))²``, in squared
    intensity units (0..255 images give values up to 65025).

    Args:
        frame_prev: Frame t-1, ``(H, W[, C])``.
        frame_next: Frame t, same shape.
        flow: ``(H, W, 2)`` flow from frame t to frame t-1 on the grid of t, e.g. the first
            output of ``forward_backward(frame_next, frame_prev)``.
        mask: ``(H, W)`` reliable pixels of frame t (``occlusion_mask``); ``None`` uses all.

    Returns:
        The mean squared error as a Python float.
    """
    frame_prev, frame_next = jnp.asarray(frame_prev), jnp.asarray(frame_next)
    _check_image(frame_prev, "frame_prev")
    if frame_prev.shape != frame_next.shape:
        raise SettingsError(f"frames differ in shape: {tuple(frame_prev.shape)} vs "
                            f"{tuple(frame_next.shape)}")
    diff = (frame_next.astype(jnp.float32) - warp(frame_prev, flow)) ** 2
    if diff.ndim == 3:
        diff = diff.mean(axis=-1)
    if mask is None:
        return float(diff.mean())
    mask = jnp.asarray(mask, jnp.float32)
    if mask.shape != diff.shape:
        raise SettingsError(f"mask shape {tuple(mask.shape)} does not match the frame size "
                            f"{tuple(diff.shape)}")
    total = float(mask.sum())
    if total <= 0:
        raise SettingsError("mask selects no pixels")
    return float((diff * mask).sum() / total)
