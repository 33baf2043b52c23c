"""L-BFGS as neural-style runs it (Torch ``optim.lbfgs`` without line search), for a batch of
images: a pure ``(init, update)`` pair over an :class:`LbfgsState` pytree. ``update`` takes the
objective as a ``value_and_grad`` function, so one optimiser serves whole-image, band-by-band
and batched objectives alike (:mod:`jaxdream.style.programs` jits the combinations).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..runtime.memory import LBFGS_HISTORY_BUDGET

__all__ = ["LbfgsState", "lbfgs_init", "lbfgs_update", "pyramid_preconditioner", "PYRAMID_LEVELS",
           "LBFGS_HISTORY_BUDGET", "history_cap", "compact_direction"]

class LbfgsState(NamedTuple):
    """L-BFGS state of a batch of B images.

    The history is a ring buffer of ``m`` slots shared by the batch (one scalar ``head``, so
    every update is an in-place slice write); a pair one member rejects (``y.s <= 1e-10``) is
    stored with ``rho = 0``, which makes the direction (:func:`compact_direction`) skip it for
    that member.
    """

    x: jax.Array          # (B, H, W, 3) the next points to evaluate
    step: jax.Array       # (B, H, W, 3) the steps that led to x
    g_prev: jax.Array     # (B, n) gradients at x - step
    s_hist: jax.Array     # (B, m, n)
    y_hist: jax.Array     # (B, m, n)
    rho: jax.Array        # (m, B) 1 / (y.s), 0 for a rejected pair
    sy: jax.Array         # (B, m, m) s_i . y_j of every two slots (the compact form's inner products)
    yy: jax.Array         # (B, m, m) y_i . M y_j (M: the preconditioner, or the identity)
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
    Gatys objective is smooth enough that unit steps along the L-BFGS direction work well.
    """
    b, n = x.shape[0], x[0].size
    return LbfgsState(
        x=x, step=jnp.zeros_like(x), g_prev=jnp.zeros((b, n), x.dtype),
        s_hist=jnp.zeros((b, corrections, n), x.dtype),
        y_hist=jnp.zeros((b, corrections, n), x.dtype),
        rho=jnp.zeros((corrections, b), x.dtype), sy=jnp.zeros((b, corrections, corrections), x.dtype),
        yy=jnp.zeros((b, corrections, corrections), x.dtype),
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


def _chronological(m: int, head, count, rho):
    """Slots oldest first (the next one to write, ``head``, is the oldest of a full ring) and
    which of them hold a pair each batch member uses: (order (m,), live (B, m) float)."""
    order = (head + jnp.arange(m)) % m
    written = jnp.arange(m) >= m - count                      # a partial ring fills its newest slots
    return order, (written[None, :] & (rho[order].T != 0)).astype(rho.dtype)


def compact_direction(q, s_ring: _Ring, y_ring: _Ring, rho, sy, yy, head, count, gamma, apply):
    """``d = H q`` for the L-BFGS inverse Hessian of the stored pairs with ``H0 = gamma M``, in
    Byrd, Nocedal and Schnabel's compact form (1994, eq. 3.1):

        H = H0 + [S, H0 Y] [[R^-T (D + Y^T H0 Y) R^-1, -R^-T], [-R^-1, 0]] [S^T; Y^T H0]

    with ``R`` the upper triangle of ``S^T Y`` (pairs oldest first) and ``D`` its diagonal. So
    ``u = R^-1 S^T q``, ``p = R^-T (D u + gamma Y^T M Y u - gamma Y^T M q)`` and
    ``d = gamma M (q - Y u) + S p``: four reads of the history (matrix-vector products), two
    triangular solves of size m and the stored inner products ``sy`` (``s_i . y_j``) and ``yy``
    (``y_i . M y_j``), where the two-loop recursion takes 2m dependent vector steps. The same
    direction up to rounding. A pair a member does not use (not written yet, or rejected with
    ``rho = 0``) gets a unit diagonal and zero rows and columns, so it drops out exactly.

    Args:
        q: (B, n) the vector (``-g``).
        s_ring, y_ring: the histories, read as if slot ``head - 1`` held the newest pair.
        rho, sy, yy: (m, B), (B, m, m), (B, m, m) as in :class:`LbfgsState`.
        head, count: the next slot to write and the slots written.
        gamma: (B,) the initial inverse Hessian's scale.
        apply: ``M``, a symmetric positive definite map of (B, n) vectors (the identity, or a
            preconditioner).
    """
    m = rho.shape[0]
    order, live = _chronological(m, head, count, rho)
    both = live[:, :, None] * live[:, None, :]
    r = jnp.triu(jnp.take(jnp.take(sy, order, axis=1), order, axis=2) * both)
    diag = jnp.diagonal(r, axis1=1, axis2=2)
    r = r + jnp.eye(m, dtype=r.dtype) * (1.0 - live)[:, :, None]   # unused slots: identity rows
    ymy = jnp.take(jnp.take(yy, order, axis=1), order, axis=2) * both
    mq = apply(q)
    a = s_ring.dot(q)[:, order] * live
    b = gamma[:, None] * y_ring.dot(mq)[:, order] * live
    solve = lambda mat, v, transpose: lax.linalg.triangular_solve(  # noqa: E731
        mat, v[:, :, None], left_side=True, lower=False, transpose_a=transpose)[:, :, 0]
    u = solve(r, a, False)
    p = solve(r, diag * u + gamma[:, None] * jnp.einsum("bij,bj->bi", ymy, u, precision=lax.Precision.HIGHEST) - b,
              True)
    in_slots = lambda v: jnp.zeros_like(v).at[:, order].set(v)  # noqa: E731
    return gamma[:, None] * apply(q - y_ring.combine(in_slots(u))) + s_ring.combine(in_slots(p))


def lbfgs_update(state: LbfgsState, value_and_grad, lr, precondition=None) -> LbfgsState:
    """One evaluation, one history update, one step (Torch optim.lbfgs, no line search).

    ``precondition`` (default: none, the identity) is a symmetric positive definite linear map
    of a batch of images (B, H, W, 3) used as the initial inverse Hessian, scaled by
    ``y.s / y.My`` (preconditioned L-BFGS; ``benchmarks/precondition_bench.py`` measures a
    multi-scale one). Without it the algorithm is neural-style's; its two-loop recursion is
    evaluated in compact form from the stored inner products (:func:`compact_direction`), the
    same direction up to rounding.
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
    my = apply(y)
    ymy = y_ring.dot(my)  # y_j . M y for every slot (M symmetric: the row and the column of head)
    yy = lax.dynamic_update_index_in_dim(state.yy, ymy, state.head, 1)
    yy = lax.dynamic_update_index_in_dim(yy, ymy, state.head, 2)
    h_diag = jnp.where(accept, ys / jnp.where(accept, _dot(y, my), 1.0), state.h_diag)
    head = jnp.where(write, (state.head + 1) % m, state.head)
    count = jnp.where(write, jnp.minimum(state.count + 1, m), state.count)
    d = compact_direction(-g, s_ring, y_ring, rho, sy, yy, head, count, h_diag, apply)
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
        x=state.x + step, step=step, g_prev=g, s_hist=s_hist, y_hist=y_hist, rho=rho, sy=sy, yy=yy, head=head,
        count=count, h_diag=h_diag, iteration=state.iteration + 1,
        losses=jnp.concatenate([f[:, None], parts], axis=1))


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



def history_cap(batch: int, pixels: int) -> int:
    """The most corrections whose history (2 * corrections * batch * pixels floats) stays
    within :data:`LBFGS_HISTORY_BUDGET` bytes."""
    return max(1, int(LBFGS_HISTORY_BUDGET // (2 * batch * pixels * 4)))
