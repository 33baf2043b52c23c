"""Upstream layouts -> jaxdream's flat ``{"layer/kernel": HWIO array}`` parameters.

Conversion only renames and re-lays-out; :func:`validate` checks the result against the
model's init tree and lists every mismatch in one error.
"""

from __future__ import annotations

import os
import re

import numpy as np

from jaxdream.errors import WeightsError

from . import caffe, keras


def from_caffe(path: str | os.PathLike, expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Read a .caffemodel and lay it out for the model whose flat parameter shapes are ``expected``.

    Convolution blobs (out, in, kh, kw) become HWIO kernels; InnerProduct blobs (out, in),
    stored with or without legacy leading 1s, become (in, out) dense kernels; biases become 1-D.
    Layers the model lacks (such as the auxiliary ``loss1/*`` and ``loss2/*`` heads) are skipped.
    """
    wanted = {name.rsplit("/", 1)[0] for name in expected}
    flat: dict[str, np.ndarray] = {}
    for name, blobs in caffe.read_caffemodel(path, names=wanted).items():
        if name not in wanted or not blobs:
            continue
        weight = np.asarray(blobs[0], np.float32)
        if len(expected.get(f"{name}/kernel", ())) == 2 and weight.ndim >= 2:
            weight = weight.reshape(weight.shape[-2:]).T
        elif weight.ndim == 4:
            weight = weight.transpose(2, 3, 1, 0)
        flat[f"{name}/kernel"] = weight
        if len(blobs) > 1:
            flat[f"{name}/bias"] = np.asarray(blobs[1], np.float32).reshape(-1)
    return flat


_KERAS_VGG = re.compile(r"block(\d)_conv(\d)")


def from_keras_vgg(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read Keras VGG-19 weights (``blockB_convI``) as ``convB_I/{kernel,bias}``."""
    flat: dict[str, np.ndarray] = {}
    for name, arrays in keras.read_keras_h5(path).items():
        match = _KERAS_VGG.fullmatch(name)
        if not match or len(arrays) != 2:
            continue
        layer = f"conv{match[1]}_{match[2]}"
        flat[f"{layer}/kernel"] = np.asarray(arrays[0], np.float32)
        flat[f"{layer}/bias"] = np.asarray(arrays[1], np.float32).reshape(-1)
    return flat


def convert(path: str | os.PathLike, fmt: str,
            expected: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Convert an upstream file of format ``fmt`` (``caffe`` or ``keras``)."""
    if fmt == "caffe":
        return from_caffe(path, expected)
    if fmt == "keras":
        return from_keras_vgg(path)
    raise WeightsError(f"unknown weights format '{fmt}'")


def validate(flat: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], source: str) -> None:
    """Check names and shapes against the model's init tree.

    Raises:
        WeightsError: one line listing every missing, unexpected and mis-shaped parameter.
    """
    problems = []
    missing = sorted(set(expected) - set(flat))
    if missing:
        problems.append(f"missing {len(missing)} ({', '.join(missing[:4])}"
                        f"{', ...' if len(missing) > 4 else ''})")
    extra = sorted(set(flat) - set(expected))
    if extra:
        problems.append(f"unexpected {len(extra)} ({', '.join(extra[:4])}"
                        f"{', ...' if len(extra) > 4 else ''})")
    shapes = [f"{n} {tuple(flat[n].shape)} != {tuple(expected[n])}"
              for n in sorted(set(flat) & set(expected)) if tuple(flat[n].shape) != tuple(expected[n])]
    if shapes:
        problems.append(f"wrong shape {len(shapes)} ({'; '.join(shapes[:3])}"
                        f"{'; ...' if len(shapes) > 3 else ''})")
    if problems:
        raise WeightsError(f"{source}: weights do not fit the model: {'; '.join(problems)}")
    bad = [n for n, a in flat.items() if not np.all(np.isfinite(a))]
    if bad:
        raise WeightsError(f"{source}: weights contain NaN or infinity in {', '.join(bad[:4])}")
