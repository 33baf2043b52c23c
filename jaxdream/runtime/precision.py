"""Compute precision of the networks: ``float32`` (default) or ``bfloat16``.

With ``bfloat16`` the convolutions run on bfloat16 activations and weights (half the memory
traffic; GPUs and TPUs run them on their matrix units), while everything that sums many
terms stays float32: Gram matrices, losses, gradients' accumulation into the image, optimiser
state. Each network's activations are cast back to float32 where a loss reads them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..errors import SettingsError

PRECISIONS = ("float32", "bfloat16")


def check(precision: str) -> str:
    """Return ``precision`` or raise SettingsError naming the choices."""
    if precision not in PRECISIONS:
        raise SettingsError(f"unknown precision '{precision}'; use {' or '.join(PRECISIONS)}")
    return precision


def dtype(precision: str):
    return jnp.bfloat16 if precision == "bfloat16" else jnp.float32


def network_inputs(params, x, precision: str):
    """``(params, x)`` cast to the network's compute dtype (no-op for float32)."""
    if precision == "float32":
        return params, x
    d = dtype(precision)
    return jax.tree.map(lambda a: a.astype(d), params), x.astype(d)


def to_float32(tree, precision: str):
    """Activations read by a loss, as float32 (untouched at float32 precision, so float64
    tests keep their float64)."""
    if precision == "float32":
        return tree
    return jax.tree.map(lambda a: a.astype(jnp.float32), tree)
