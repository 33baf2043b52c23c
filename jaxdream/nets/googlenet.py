"""BVLC GoogLeNet (Inception V1, Szegedy et al. 2014), the DeepDream network, Caffe-exact.

Every Caffe blob of the deploy network is an output: ``conv1/7x7_s2``, ``pool1/norm1``,
``inception_4c/output``, ``inception_4d/5x5_reduce``, ``loss3/classifier``, ``prob``, ...
ReLUs are in place in Caffe, so a convolution's blob name means its value after ReLU; the
value before it is ``<name>/pre_relu``. Parameters are named after the Caffe layers
(``inception_4c/3x3/kernel``, HWIO). The classifier is applied at every position of
``pool5/7x7_s1``, which equals Caffe's InnerProduct for 224x224 inputs and makes the network
fully convolutional for other sizes.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .common import caffe_avg_pool, caffe_max_pool, lrn_across_channels

#: Caffe-style input convention: BGR, these means subtracted, 0..255 units.
MEAN_BGR = (104.0, 117.0, 123.0)

#: (1x1, 3x3_reduce, 3x3, 5x5_reduce, 5x5, pool_proj) output channels of each inception module.
INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
_BRANCH_CONVS = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")
# (kernel, pad) of each convolution in an inception module
_CONV_GEOMETRY = {"1x1": (1, 0), "3x3_reduce": (1, 0), "3x3": (3, 1), "5x5_reduce": (1, 0),
                  "5x5": (5, 2), "pool_proj": (1, 0)}
NUM_CLASSES = 1000


def _conv_names(conv: str) -> list[str]:
    return [f"{conv}/pre_relu", conv]


def _layer_names() -> tuple[str, ...]:
    names = [*_conv_names("conv1/7x7_s2"), "pool1/3x3_s2", "pool1/norm1",
             *_conv_names("conv2/3x3_reduce"), *_conv_names("conv2/3x3"), "conv2/norm2",
             "pool2/3x3_s2"]
    for block in INCEPTION:
        p = f"inception_{block}"
        for conv in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5"):
            names += _conv_names(f"{p}/{conv}")
        names += [f"{p}/pool", *_conv_names(f"{p}/pool_proj"), f"{p}/output"]
        if block == "3b":
            names.append("pool3/3x3_s2")
        elif block == "4e":
            names.append("pool4/3x3_s2")
    names += ["pool5/7x7_s1", "loss3/classifier", "prob"]
    return tuple(names)


#: Every output name, in forward order.
LAYERS = _layer_names()


def _conv(features: int, kernel: int, stride: int = 1, pad: int = 0, name: str = "") -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), name=name)


class Inception(nn.Module):
    """One inception module; records its blobs into ``emit(name, value)``."""

    widths: tuple[int, ...]
    prefix: str

    @nn.compact
    def __call__(self, x: jax.Array, emit) -> jax.Array:
        convs = {n: _conv(w, _CONV_GEOMETRY[n][0], pad=_CONV_GEOMETRY[n][1], name=n)
                 for n, w in zip(_BRANCH_CONVS, self.widths)}

        def conv_relu(name, inp):
            pre = convs[name](inp)
            emit(f"{self.prefix}/{name}/pre_relu", pre)
            out = nn.relu(pre)
            emit(f"{self.prefix}/{name}", out)
            return out

        b1 = conv_relu("1x1", x)
        b2 = conv_relu("3x3", conv_relu("3x3_reduce", x))
        b3 = conv_relu("5x5", conv_relu("5x5_reduce", x))
        pooled = caffe_max_pool(x, 3, 1, 1)
        emit(f"{self.prefix}/pool", pooled)
        b4 = conv_relu("pool_proj", pooled)
        out = jnp.concatenate([b1, b2, b3, b4], axis=-1)
        emit(f"{self.prefix}/output", out)
        return out


class GoogLeNet(nn.Module):
    """BVLC GoogLeNet up to the deepest of ``outputs``.

    Attributes:
        outputs: blob names to return (any of :data:`LAYERS`).
    """

    outputs: Sequence[str] = ("inception_4c/output",)

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        """Args: x: (N, H, W, 3) BGR, mean-subtracted. Returns: {blob name: (N, h, w, C)}."""
        wanted = set(self.outputs)
        feats: dict[str, jax.Array] = {}

        def emit(name, value):
            if name in wanted:
                feats[name] = value

        def done():
            return len(feats) == len(wanted)

        def conv_relu(conv, inp, *geometry):
            pre = _conv(*geometry, name=conv)(inp)
            emit(f"{conv}/pre_relu", pre)
            out = nn.relu(pre)
            emit(conv, out)
            return out

        x = conv_relu("conv1/7x7_s2", x, 64, 7, 2, 3)
        x = caffe_max_pool(x, 3, 2)
        emit("pool1/3x3_s2", x)
        x = lrn_across_channels(x)
        emit("pool1/norm1", x)
        if done():
            return feats
        x = conv_relu("conv2/3x3_reduce", x, 64, 1)
        x = conv_relu("conv2/3x3", x, 192, 3, 1, 1)
        x = lrn_across_channels(x)
        emit("conv2/norm2", x)
        x = caffe_max_pool(x, 3, 2)
        emit("pool2/3x3_s2", x)
        if done():
            return feats
        for block, widths in INCEPTION.items():
            x = Inception(widths, f"inception_{block}", name=f"inception_{block}")(x, emit)
            if block in ("3b", "4e"):
                x = caffe_max_pool(x, 3, 2)
                emit("pool3/3x3_s2" if block == "3b" else "pool4/3x3_s2", x)
            if done():
                return feats
        x = caffe_avg_pool(x, 7, 1)
        emit("pool5/7x7_s1", x)
        if done():
            return feats
        logits = nn.Dense(NUM_CLASSES, name="loss3/classifier")(x)
        emit("loss3/classifier", logits)
        emit("prob", jax.nn.softmax(logits, axis=-1))
        return feats


def output_size(size: int, layer: str) -> int:
    """Spatial length of ``layer``'s output along an input axis of length ``size`` (0: too small)."""
    from .common import caffe_pool_size

    def conv(n, k, s=1, p=0):
        return max((n + 2 * p - k) // s + 1, 0)

    def pool(n, k, s, p=0):
        return max(caffe_pool_size(n, k, s, p), 0) if n > 0 else 0

    stage = LAYERS.index(layer)
    n = conv(size, 7, 2, 3)
    checkpoints = [("pool1/3x3_s2", lambda n: pool(n, 3, 2)),
                   ("conv2/3x3_reduce/pre_relu", lambda n: n),
                   ("pool2/3x3_s2", lambda n: pool(n, 3, 2)),
                   ("pool3/3x3_s2", lambda n: pool(n, 3, 2)),
                   ("pool4/3x3_s2", lambda n: pool(n, 3, 2)),
                   ("pool5/7x7_s1", lambda n: pool(n, 7, 1))]
    for name, op in checkpoints:
        if LAYERS.index(name) > stage:
            break
        n = op(n)
    return n
