"""Shared fixtures: an isolated jaxdream cache, a synthetic full-size GoogLeNet .caffemodel."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#: Environment variables that change where jaxdream looks for and keeps weights.
JAXDREAM_ENV = ("JAXDREAM_HOME", "JAXDREAM_WEIGHTS_DIR", "JAXDREAM_WEIGHTS_URL",
                "JAXDREAM_OFFLINE", "XDG_CACHE_HOME")


@pytest.fixture
def jaxdream_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``JAXDREAM_HOME`` at a fresh (not yet created) folder, unset the other settings.

    Also empties the in-process parameter cache of :mod:`jaxdream.network` before and after.
    """
    for name in JAXDREAM_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "jaxdream_home"
    monkeypatch.setenv("JAXDREAM_HOME", str(home))
    from jaxdream import network

    network._load_params.cache_clear()
    yield home
    network._load_params.cache_clear()


@dataclass(frozen=True)
class SyntheticWeights:
    """A random weights file in the upstream format and what it should convert to.

    Attributes:
        path: the upstream-format file.
        flat: ``{flat name: array}`` in jaxdream's layout (HWIO kernels, dense ``(in, out)``).
        top_class: the ImageNet class the classifier bias strongly favours (GoogLeNet only).
    """

    path: Path
    flat: dict[str, np.ndarray]
    top_class: int = -1


def caffe_layers(flat: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """jaxdream flat parameters -> Caffe blobs: HWIO -> (out, in, kh, kw), (in, out) -> (out, in)."""
    layers: dict[str, list[np.ndarray]] = {}
    for name in sorted({n.rsplit("/", 1)[0] for n in flat}):
        kernel = flat[f"{name}/kernel"]
        kernel = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
        layers[name] = [kernel, flat[f"{name}/bias"]]
    return layers


@pytest.fixture(scope="session")
def googlenet_caffemodel(tmp_path_factory: pytest.TempPathFactory) -> SyntheticWeights:
    """A full-size random GoogLeNet ``.caffemodel`` (about 28 MB), written once per session.

    Small random weights make the activations tiny, so the classifier's output is close to
    ``softmax(bias)``; the bias of ``top_class`` (285, Egyptian cat) is far above the others.
    """
    from jaxdream.network import param_shapes
    from jaxdream.weights.caffe import write_caffemodel

    rng = np.random.default_rng(1234)
    flat = {name: (rng.standard_normal(shape, dtype=np.float32) * 0.01)
            for name, shape in param_shapes("googlenet").items()}
    top_class = 285
    bias = rng.standard_normal(1000, dtype=np.float32) * 0.5
    bias[top_class] = 8.0
    flat["loss3/classifier/bias"] = bias
    path = tmp_path_factory.mktemp("synthetic") / "synthetic_googlenet.caffemodel"
    write_caffemodel(path, caffe_layers(flat))
    return SyntheticWeights(path, flat, top_class)
