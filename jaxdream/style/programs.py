"""The compiled programs of style transfer: the Gatys objective (:mod:`jaxdream.objectives.gatys`)
combined with an optimiser (:mod:`jaxdream.optim`), for a batch of images, as a chunk of
iterations (``lax.fori_loop`` with a traced count: any chunk length reuses one program), one
iteration, or one update from a loss and gradient computed band by band."""

from __future__ import annotations

import functools

import jax
import optax
from jax import lax

from ..objectives.gatys import Objective, batched_value_and_grad, member_targets, value_and_grad
from ..optim.adam import AdamState, adam_update
from ..optim.lbfgs import LbfgsState, lbfgs_update, pyramid_preconditioner

__all__ = ["lbfgs_chunk", "lbfgs_step", "lbfgs_apply", "adam_chunk", "adam_step", "adam_apply"]

@functools.partial(jax.jit, static_argnames=("spec", "precondition"), donate_argnames=("state",))
def lbfgs_chunk(state: LbfgsState, params, targets, weights, n_steps, lr, spec: Objective,
                precondition: float = 0.0):
    """Run ``n_steps`` L-BFGS iterations (one evaluation each) for a batch of images.

    Args:
        state: :class:`LbfgsState` from :func:`lbfgs_init`, donated.
        params, targets: shared by the batch.
        weights: ``{"content", "style", "tv"}`` arrays of shape (B,).
        n_steps: traced int: any chunk length reuses the compiled program.
        lr: traced learning rate (1 as in neural-style).
        spec: the static :class:`Objective`.
        precondition: static weight of :func:`pyramid_preconditioner` (0: neural-style's
            L-BFGS).
    """
    vg = batched_value_and_grad(params, targets, weights, spec)
    m = pyramid_preconditioner(precondition)
    return lax.fori_loop(0, n_steps, lambda i, s: lbfgs_update(s, vg, lr, m), state)


@functools.partial(jax.jit, static_argnames=("spec", "precondition"), donate_argnames=("state",))
def lbfgs_step(state: LbfgsState, params, targets, weights, lr, spec: Objective, precondition: float = 0.0):
    """One L-BFGS iteration for a batch of images (see :func:`lbfgs_chunk`)."""
    return lbfgs_update(state, batched_value_and_grad(params, targets, weights, spec), lr,
                            pyramid_preconditioner(precondition))


@functools.partial(jax.jit, static_argnames=("precondition",), donate_argnames=("state",))
def lbfgs_apply(state: LbfgsState, total: jax.Array, parts: jax.Array, grad: jax.Array, lr,
                precondition: float = 0.0) -> LbfgsState:
    """One L-BFGS iteration from a loss and gradient computed elsewhere (band by band):
    ``total`` (B,), ``parts`` (B, n), ``grad`` like ``state.x``."""
    return lbfgs_update(state, lambda x: ((total, parts), grad), lr, pyramid_preconditioner(precondition))


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnames=("state",))
def adam_chunk(state: AdamState, params, targets, weights, n_steps, lr, spec: Objective):
    """Run ``n_steps`` Adam steps for a batch of images (see :func:`lbfgs_chunk`)."""
    opt = optax.adam(lr)
    content, member = member_targets(targets, spec)

    def one(state, weights, c):
        vg = value_and_grad(params, member(c), weights, spec)
        return lax.fori_loop(0, n_steps, lambda i, s: adam_update(s, vg, opt), state)
    return jax.vmap(one, in_axes=(0, 0, None if content is None else 0))(state, weights, content)


@functools.partial(jax.jit, donate_argnames=("state",))
def adam_apply(state: AdamState, total: jax.Array, parts: jax.Array, grad: jax.Array, lr) -> AdamState:
    """One Adam step from a loss and gradient computed elsewhere (see :func:`lbfgs_apply`)."""
    return jax.vmap(lambda s, f, p, g: adam_update(s, lambda x: ((f, p), g), optax.adam(lr)))(
        state, total, parts, grad)


@functools.partial(jax.jit, static_argnames=("spec",), donate_argnames=("state",))
def adam_step(state: AdamState, params, targets, weights, lr, spec: Objective):
    """One Adam step for a batch of images (see :func:`adam_chunk`)."""
    content, member = member_targets(targets, spec)
    return jax.vmap(lambda s, w, c: adam_update(s, value_and_grad(params, member(c), w, spec), optax.adam(lr)),
                    in_axes=(0, 0, None if content is None else 0))(state, weights, content)

