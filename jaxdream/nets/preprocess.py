"""Per-model input convention: RGB pixels (0..255) <-> the network's input space.

Both networks were trained in Caffe: BGR channel order, per-channel mean subtracted, 0..255
units, no scaling.
"""

from __future__ import annotations

import jax.numpy as jnp


def to_model(rgb, mean_bgr):
    """RGB 0..255 (..., H, W, 3) -> BGR with ``mean_bgr`` subtracted."""
    return rgb[..., ::-1] - jnp.asarray(mean_bgr, jnp.float32)


def from_model(x, mean_bgr):
    """Inverse of :func:`to_model`: network input space -> RGB 0..255 (not clipped)."""
    return (x + jnp.asarray(mean_bgr, jnp.float32))[..., ::-1]
