"""VGG-19 convolutional stack (Simonyan & Zisserman), the network of Gatys et al.

Activation names follow neural-style/Caffe: ``conv{b}_{i}`` (before ReLU), ``relu{b}_{i}``,
``pool{b}``. Parameters are named ``conv{b}_{i}/{kernel,bias}`` with HWIO kernels.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from .common import pool2x2

BLOCKS = (2, 2, 4, 4, 4)
WIDTHS = (64, 128, 256, 512, 512)
#: Caffe-style input convention: BGR, these means subtracted, 0..255 units.
MEAN_BGR = (103.939, 116.779, 123.68)


def _layer_names() -> tuple[str, ...]:
    names = []
    for b, n in enumerate(BLOCKS, start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return tuple(names)


LAYERS = _layer_names()
#: Downsampling of each activation relative to the input.
STRIDES = {name: 2 ** (int(name[4 if name.startswith("pool") else 4]) - (0 if name.startswith("pool") else 1))
           for name in LAYERS}


def conv(x: jax.Array, p: dict) -> jax.Array:
    """A 3x3 convolution, stride 1, padding 1, with bias (``p``: ``{"kernel": HWIO, "bias"}``)."""
    y = lax.conv_general_dilated(x, p["kernel"], (1, 1), ((1, 1), (1, 1)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"]


def block_of(name: str) -> int:
    """The block (1..5) of an activation name."""
    return int(name[4])


def blocks(layers: Sequence[str], pooling: str = "max"):
    """VGG-19 as a list of block functions ``(x, params) -> (x, {name: activation})``.

    ``params`` is the flat ``{"conv1_1": {"kernel", "bias"}, ...}`` tree. The blocks end at the
    pools, so that each can be rematerialised on its own (the style objective's form), and the
    last stops after the deepest of ``layers``. :class:`VGG19` is the same computation.
    """
    wanted = set(layers)
    deepest = max(block_of(name) for name in wanted)
    out_blocks = []
    for b, n in enumerate(BLOCKS[:deepest], start=1):
        here = frozenset(k for k in wanted if block_of(k) == b)

        def block(x, params, b=b, n=n, here=here, last=b == deepest):
            out = {}
            for i in range(1, n + 1):
                x = conv(x, params[f"conv{b}_{i}"])
                if f"conv{b}_{i}" in here:
                    out[f"conv{b}_{i}"] = x
                x = jax.nn.relu(x)
                if f"relu{b}_{i}" in here:
                    out[f"relu{b}_{i}"] = x
                if last and len(out) == len(here):
                    return x, out
            x = pool2x2(x, pooling)
            if f"pool{b}" in here:
                out[f"pool{b}"] = x
            return x, out

        out_blocks.append(block)
    return out_blocks


def convs_up_to(layers: Sequence[str]) -> list[tuple[str, int, int]]:
    """(name, input channels, output channels) of every convolution computed for ``layers``."""
    deepest = max(layers, key=LAYERS.index)
    names = [n for n in LAYERS[:LAYERS.index(deepest) + 1] if n.startswith("conv")]
    widths = {f"conv{b}_{i}": w for b, (n, w) in enumerate(zip(BLOCKS, WIDTHS), start=1) for i in range(1, n + 1)}
    ins = [3] + [widths[n] for n in names[:-1]]
    return [(n, c, widths[n]) for n, c in zip(names, ins)]


class _ConvParams(nn.Module):
    """The parameters of one convolution, as ``nn.Conv`` names and initialises them."""

    in_features: int
    features: int

    @nn.compact
    def __call__(self) -> dict:
        return {"kernel": self.param("kernel", nn.initializers.lecun_normal(),
                                     (3, 3, self.in_features, self.features), jnp.float32),
                "bias": self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)}


class VGG19(nn.Module):
    """VGG-19 up to the deepest of ``outputs``: the Flax module of :func:`blocks` (it declares
    the parameters, then runs the block functions).

    Attributes:
        outputs: activation names to return (any of :data:`LAYERS`).
        pooling: ``"max"`` or ``"avg"`` (Gatys et al. recommend avg for smoother results).
    """

    outputs: Sequence[str] = ("relu5_1",)
    pooling: str = "max"

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Args: x: (N, H, W, 3) BGR, mean-subtracted. Returns: {name: (N, h, w, C)}."""
        params = {name: _ConvParams(cin, cout, name=name)() for name, cin, cout in convs_up_to(self.outputs)}
        feats: dict[str, jax.Array] = {}
        for block in blocks(self.outputs, self.pooling):
            x, out = block(x, params)
            feats.update(out)
        return feats
