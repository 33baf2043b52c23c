"""VGG-19 convolutional stack (Simonyan & Zisserman), the network of Gatys et al.

Activation names follow neural-style/Caffe: ``conv{b}_{i}`` (before ReLU), ``relu{b}_{i}``,
``pool{b}``. Parameters are named ``conv{b}_{i}/{kernel,bias}`` with HWIO kernels.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

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


class VGG19(nn.Module):
    """VGG-19 up to the deepest of ``outputs``.

    Attributes:
        outputs: activation names to return (any of :data:`LAYERS`).
        pooling: ``"max"`` or ``"avg"`` (Gatys et al. recommend avg for smoother results).
    """

    outputs: Sequence[str] = ("relu5_1",)
    pooling: str = "max"

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Args: x: (N, H, W, 3) BGR, mean-subtracted. Returns: {name: (N, h, w, C)}."""
        wanted = set(self.outputs)
        feats: dict[str, jax.Array] = {}

        def emit(name, value):
            if name in wanted:
                feats[name] = value
            return len(feats) == len(wanted)

        for b, (n, width) in enumerate(zip(BLOCKS, WIDTHS), start=1):
            for i in range(1, n + 1):
                name = f"conv{b}_{i}"
                x = nn.Conv(width, (3, 3), padding=((1, 1), (1, 1)), name=name)(x)
                if emit(name, x):
                    return feats
                x = nn.relu(x)
                if emit(f"relu{b}_{i}", x):
                    return feats
            x = pool2x2(x, self.pooling)
            if emit(f"pool{b}", x):
                return feats
        return feats
