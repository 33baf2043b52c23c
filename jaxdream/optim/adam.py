"""Adam (optax's) for one image, with an exponential moving average of its iterates: a pure
``(init, update)`` pair over an :class:`AdamState` pytree (the learning rate is passed per
update, so it is traced)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = ["AdamState", "adam_init", "adam_update", "adam_average"]

class AdamState(NamedTuple):
    """Adam state of one image, with an exponential moving average of its iterates
    (crowsonkb/style-transfer-pytorch's EMA: ``average`` starts at 0 and ``accum`` is
    ``decay**t``, so ``average / (1 - accum)`` is the bias-corrected average; see
    :func:`adam_average`)."""

    x: jax.Array
    opt: Any
    iteration: jax.Array
    losses: jax.Array
    average: jax.Array
    accum: jax.Array
    decay: jax.Array


def adam_init(x: jax.Array, n_losses: int = 4, ema: float = 0.0) -> AdamState:
    """Fresh Adam state at ``x`` (optax's Adam; the learning rate is passed per chunk), its
    iterate average decaying by ``ema`` per step (0: the average is the last iterate)."""
    return AdamState(x=x, opt=optax.adam(1.0).init(x), iteration=jnp.int32(0),
                     losses=jnp.zeros((n_losses,), jnp.float32), average=jnp.zeros_like(x),
                     accum=jnp.float32(1.0), decay=jnp.float32(ema))


@jax.jit
def adam_average(state: AdamState) -> jax.Array:
    """The bias-corrected iterate average ``average / (1 - decay**t)`` of a (batch of) Adam
    state(s) (the current iterate before the first step). Jitted: read between chunks, it moves
    nothing to the device."""
    accum = jnp.reshape(state.accum, state.accum.shape + (1,) * (state.x.ndim - state.accum.ndim))
    return jnp.where(accum < 1, state.average / jnp.where(accum < 1, 1 - accum, 1), state.x)


def adam_update(s: AdamState, value_and_grad, opt) -> AdamState:
    (f, parts), g = value_and_grad(s.x)
    updates, o = opt.update(g, s.opt, s.x)
    x = optax.apply_updates(s.x, updates)
    return AdamState(x, o, s.iteration + 1, jnp.concatenate([f[None], parts]),
                     s.decay * s.average + (1 - s.decay) * x, s.accum * s.decay, s.decay)

