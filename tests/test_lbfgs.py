"""jaxdream's L-BFGS iteration against a NumPy port of Torch's ``optim.lbfgs`` as neural-style
calls it (no line search, first step scaled by ``min(1, 1/|g|_1)``, pairs with ``y.s <= 1e-10``
skipped, a ring of ``m`` corrections): the two-loop recursion written pair by pair."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdream import optim
from jaxdream.optim.lbfgs import _Ring, compact_direction


def _numpy_lbfgs(x0, grad, m: int, iterations: int) -> list[np.ndarray]:
    """The iterates of one image (float64), Nocedal and Wright's algorithm 7.4 as Torch runs it."""
    x, s_list, y_list, rho_list = x0.astype(np.float64).ravel(), [], [], []
    g_prev = step = None
    h = 1.0
    out = []
    for it in range(iterations):
        g = grad(x)
        if it > 0:
            s, y = step, g - g_prev
            ys = y @ s
            # a rejected pair still takes its slot (rho 0) so the ring advances, as in jaxdream
            s_list.append(s), y_list.append(y), rho_list.append(1.0 / ys if ys > 1e-10 else 0.0)
            if ys > 1e-10:
                h = ys / (y @ y)
            s_list, y_list, rho_list = s_list[-m:], y_list[-m:], rho_list[-m:]
        q = -g
        alpha = []
        for s, y, rho in zip(reversed(s_list), reversed(y_list), reversed(rho_list)):
            a = rho * (s @ q)
            q = q - a * y
            alpha.append(a)
        r = q * h
        for (s, y, rho), a in zip(zip(s_list, y_list, rho_list), reversed(alpha)):
            r = r + s * (a - rho * (y @ r))
        d = r
        if it == 0 or g @ d >= 0:
            d = -g
            t = min(1.0, 1.0 / np.abs(d).sum())
        else:
            t = 1.0
        step = t * d
        g_prev = g
        x = x + step
        out.append(x.copy())
    return out


@pytest.mark.parametrize("m, iterations, tol", [(3, 12, 2e-4), (20, 12, 2e-4), (8, 50, 1e-4)])
def test_iterates_match_numpy_two_loop(m, iterations, tol):
    """A badly conditioned quadratic with a non-quadratic term (so curvature pairs differ),
    a batch of two: with m=3 the ring wraps several times; 50 iterations of the compact form
    stay within 1e-4 of the two-loop recursion's iterates."""
    rng = np.random.default_rng(4)
    shape = (2, 3, 4, 3)
    scales = 10.0 ** rng.uniform(-1, 1, shape)
    center = rng.standard_normal(shape) * 3

    def grad_np(b):
        return lambda x: (scales[b].ravel() * (x - center[b].ravel()) + 0.1 * np.sin(x))

    def value_and_grad(x):
        diff = x - jnp.asarray(center, jnp.float32)
        value = jnp.sum(0.5 * jnp.asarray(scales, jnp.float32) * diff ** 2 - 0.1 * jnp.cos(x), axis=(1, 2, 3))
        g = jnp.asarray(scales, jnp.float32) * diff + 0.1 * jnp.sin(x)
        return (value, jnp.zeros((2, 3))), g
    state = optim.lbfgs_init(jnp.zeros(shape, jnp.float32), m, n_losses=4)
    want = [_numpy_lbfgs(np.zeros(shape[1:]), grad_np(b), m, iterations) for b in range(2)]
    for it in range(iterations):
        state = optim.lbfgs_update(state, value_and_grad, jnp.float32(1))
        for b in range(2):
            np.testing.assert_allclose(np.asarray(state.x[b]).ravel(), want[b][it], rtol=tol, atol=tol,
                                       err_msg=f"iteration {it}, image {b}")
    assert int(state.count) == min(iterations - 1, m)
    # the stored inner products are those of the stored pairs
    sy = np.einsum("bin,bjn->bij", np.asarray(state.s_hist, np.float64), np.asarray(state.y_hist, np.float64))
    np.testing.assert_allclose(np.asarray(state.sy), sy, rtol=1e-4, atol=1e-3 * np.abs(sy).max())


def test_rejected_pair_is_skipped():
    """A step along which the gradient does not change (y = 0) is stored with rho 0 and the
    direction ignores it: on a linear function every direction is plain steepest descent."""
    shape = (1, 2, 2, 3)
    slope = jnp.asarray(np.linspace(-1, 1, 12).reshape(shape), jnp.float32)
    vg = lambda x: ((jnp.sum(slope * x, axis=(1, 2, 3)), jnp.zeros((1, 3))), slope)  # noqa: E731
    state = optim.lbfgs_init(jnp.zeros(shape, jnp.float32), 5, n_losses=4)
    xs = []
    for _ in range(4):
        state = optim.lbfgs_update(state, vg, jnp.float32(1))
        xs.append(np.asarray(state.x))
    assert np.all(np.asarray(state.rho) == 0)
    steps = np.diff(np.stack(xs), axis=0)
    # after the first (scaled) step, each step is -g (the initial Hessian scale stays 1)
    np.testing.assert_allclose(steps, np.broadcast_to(-np.asarray(slope), steps.shape), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# the compact form of the direction against the two-loop recursion
# --------------------------------------------------------------------------------------------


def _two_loop_np(q, pairs, gamma, m_apply):
    """Nocedal and Wright's algorithm 7.4 in float64 over ``pairs`` (s, y, rho) oldest first,
    H0 = gamma M; a pair with rho 0 is skipped."""
    q = q.astype(np.float64).copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * (s @ q)
        q -= a * y
        alphas.append(a)
    r = gamma * m_apply(q)
    for (s, y, rho), a in zip(pairs, reversed(alphas)):
        r += s * (a - rho * (y @ r))
    return r


def _history(rng, batch: int, m: int, n: int, written: int, head: int, rejected=()):
    """A ring of ``m`` slots of which ``written`` hold pairs, the newest at ``head - 1``; the
    slots in ``rejected`` (batch member, slot) carry rho 0."""
    s = rng.standard_normal((batch, m, n))
    y = 0.6 * s + 0.3 * rng.standard_normal((batch, m, n))   # y.s > 0: curvature pairs
    rho = 1.0 / np.einsum("bmn,bmn->mb", s, y)
    for b, slot in rejected:
        rho[slot, b] = 0.0
    slots = [(head - written + k) % m for k in range(written)]  # oldest first
    return s, y, rho, slots


@pytest.mark.parametrize("m, written, head, rejected", [
    (6, 6, 0, ()),          # full ring, the oldest at slot 0
    (6, 3, 3, ()),          # partial ring
    (6, 6, 4, ()),          # wrapped ring: the newest at slot 3, the oldest at slot 4
    (6, 6, 2, ((1, 4),)),   # a pair member 1 rejected
    (8, 5, 5, ((0, 1), (1, 3))),
])
@pytest.mark.parametrize("preconditioned", [False, True])
def test_compact_direction_equals_two_loop(m, written, head, rejected, preconditioned):
    rng = np.random.default_rng(m * 10 + written + head)
    batch, n = 2, 40
    s, y, rho, slots = _history(rng, batch, m, n, written, head, rejected)
    weights = 1.0 + 2.0 * rng.random(n) if preconditioned else np.ones(n)   # a diagonal SPD M
    gamma = np.array([0.7, 1.3])
    q = rng.standard_normal((batch, n))
    want = np.stack([_two_loop_np(q[b], [(s[b, k], y[b, k], rho[k, b]) for k in slots], gamma[b],
                                  lambda v: weights * v) for b in range(batch)])
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    # the ring is read "as if the newest slot were replaced": replace it by itself
    newest = (head - 1) % m
    s_ring = _Ring(f32(s), f32(s[:, newest]), jnp.int32(newest))
    y_ring = _Ring(f32(y), f32(y[:, newest]), jnp.int32(newest))
    sy = np.einsum("bin,bjn->bij", s, y)
    yy = np.einsum("bin,bjn->bij", y, weights * y)
    got = compact_direction(f32(q), s_ring, y_ring, f32(rho), f32(sy), f32(yy), jnp.int32(head % m),
                                  jnp.int32(written), f32(gamma), lambda v: v * f32(weights))
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_compact_direction_with_no_pairs_is_the_scaled_vector():
    q = jnp.asarray(np.arange(6.0).reshape(1, 6), jnp.float32)
    m = 3
    zeros = jnp.zeros((1, m, 6), jnp.float32)
    ring = _Ring(zeros, jnp.zeros((1, 6), jnp.float32), jnp.int32(0))
    got = compact_direction(q, ring, ring, jnp.zeros((m, 1)), jnp.zeros((1, m, m)), jnp.zeros((1, m, m)),
                                  jnp.int32(0), jnp.int32(0), jnp.asarray([2.0]), lambda v: v)
    np.testing.assert_array_equal(np.asarray(got), 2.0 * np.asarray(q))
