"""jaxdream's L-BFGS iteration against a NumPy port of Torch's ``optim.lbfgs`` as neural-style
calls it (no line search, first step scaled by ``min(1, 1/|g|_1)``, pairs with ``y.s <= 1e-10``
skipped, a ring of ``m`` corrections): the two-loop recursion written pair by pair."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdream import optim


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


@pytest.mark.parametrize("m", [3, 20])
def test_iterates_match_numpy_two_loop(m):
    """A badly conditioned quadratic with a non-quadratic term (so curvature pairs differ),
    a batch of two, and 12 iterations: with m=3 the ring wraps several times."""
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
    want = [_numpy_lbfgs(np.zeros(shape[1:]), grad_np(b), m, 12) for b in range(2)]
    for it in range(12):
        state = optim.lbfgs_update(state, value_and_grad, jnp.float32(1))
        for b in range(2):
            np.testing.assert_allclose(np.asarray(state.x[b]).ravel(), want[b][it], rtol=2e-4, atol=2e-4,
                                       err_msg=f"iteration {it}, image {b}")
    assert int(state.count) == min(11, m)
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
