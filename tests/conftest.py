"""Shared fixtures and the test tiers.

Fixtures: an isolated jaxdream cache, a synthetic full-size GoogLeNet .caffemodel, a tiny VGG-19
network, a full-shape random VGG-19 .h5, small content/style images (and their PNGs) and a
style PNG for the video tests. Plain helpers (the ``jaxdream`` command's environment, random
weights, synthetic clips) are in ``helpers.py``.

Tiers: tests marked ``slow``, ``realweights`` (need ``../shared`` weights or media) or
``browser`` (drive chromium) are deselected by a plain ``pytest`` (the fast tier), unless ``-m``
is given (``-m ''`` runs everything), ``CI`` is set (to anything but ``0``/``false``) or
``JAXDREAM_ALL_TESTS=1``. A test named by its node id on the command line always runs.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers import as_params, rand_image, texture, vgg_layers

#: Inside the iteration loops (style chunks, zoom frames) every transfer between host and device
#: must be an explicit one (jaxdream.optim.driver.loop_guard); the whole suite runs that way.
os.environ.setdefault("JAXDREAM_TRANSFER_GUARD", "disallow")

#: Environment variables that change where jaxdream looks for and keeps weights.
JAXDREAM_ENV = ("JAXDREAM_HOME", "JAXDREAM_WEIGHTS_DIR", "JAXDREAM_WEIGHTS_URL",
                "JAXDREAM_OFFLINE", "XDG_CACHE_HOME")


@pytest.fixture
def jaxdream_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``JAXDREAM_HOME`` at a fresh (not yet created) folder, unset the other settings.

    Also empties the in-process parameter cache of :mod:`jaxdream.nets.network` before and after.
    """
    for name in JAXDREAM_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "jaxdream_home"
    monkeypatch.setenv("JAXDREAM_HOME", str(home))
    from jaxdream.nets import network

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
    from jaxdream.nets.network import param_shapes
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


# --------------------------------------------------------------------------------------------
# tiny networks, random weights files and images, shared by the style and video modules
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_net():
    """VGG-19's structure with 4-8 channels per layer: the real width is not the point here."""
    from jaxdream.nets import get_spec
    from jaxdream.nets.network import Network

    return Network(get_spec("vgg19"), as_params(vgg_layers(widths=(4, 6, 8, 8, 8))), "max")


@pytest.fixture(scope="session")
def vgg_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-shape VGG-19 Keras .h5 with random weights (blockB_convI: kernel, bias)."""
    from jaxdream.weights.keras import write_keras_h5

    path = tmp_path_factory.mktemp("weights") / "vgg19_random.h5"
    write_keras_h5(path, {f"block{k[4]}_conv{k[6]}": list(v) for k, v in vgg_layers().items()})
    return path


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    """A 32x40 content and a 36x36 style image (smooth random, float32 0..255)."""
    return rand_image(32, 40, 1), rand_image(36, 36, 2)


@pytest.fixture
def pngs(tmp_path: Path, images) -> tuple[Path, Path]:
    """``images`` saved as ``content.png`` and ``style.png`` in the test's folder."""
    from jaxdream import media

    content, style_img = tmp_path / "content.png", tmp_path / "style.png"
    media.save_image(content, images[0])
    media.save_image(style_img, images[1])
    return content, style_img


@pytest.fixture(scope="module")
def style_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 36x36 texture as the video tests' style image."""
    from jaxdream import media

    path = tmp_path_factory.mktemp("style") / "style.png"
    media.save_image(path, texture(36, 36, 9))
    return path


# --------------------------------------------------------------------------------------------
# tiers: a plain `pytest` runs the fast tier
# --------------------------------------------------------------------------------------------

#: Markers of the tests that a plain ``pytest`` leaves out (registered in pyproject.toml).
TIER_MARKERS = ("slow", "realweights", "browser")
#: Environment variables that, set to anything but ``0`` or ``false``, select every tier.
ALL_TIERS_VARIABLES = ("CI", "JAXDREAM_ALL_TESTS")
FAST_TIER_HINT = "set JAXDREAM_ALL_TESTS=1 or pass -m '' for all"
_DESELECTED = pytest.StashKey[int]()


def _set(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false")


def _markexpr_given(config: pytest.Config) -> bool:
    """Whether ``-m`` was passed, even an empty one (``-m ''``), here, in PYTEST_ADDOPTS or addopts."""
    if config.getoption("markexpr", ""):
        return True
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
            *config.getini("addopts")]
    return any(arg in ("-m", "--markexpr") or arg.startswith("--markexpr=")
               or (arg.startswith("-m") and not arg.startswith("--")) for arg in map(str, args))


def all_tiers_reason(config: pytest.Config) -> str | None:
    """Why every test is selected (``-m`` given, ``CI`` or ``JAXDREAM_ALL_TESTS`` set), or ``None``
    for the fast tier."""
    if _markexpr_given(config):
        return "-m given"
    for name in ALL_TIERS_VARIABLES:
        if _set(os.environ.get(name)):
            return f"{name} is set"
    return None


def _named_ids(config: pytest.Config) -> list[str]:
    """The node ids named on the command line (``path::name``), relative to the rootdir."""
    ids = []
    for arg in map(str, config.invocation_params.args):
        if arg.startswith("-") or "::" not in arg:
            continue
        path, _, rest = arg.partition("::")
        try:
            rel = (Path(config.invocation_params.dir) / path).resolve().relative_to(config.rootpath.resolve())
        except ValueError:
            continue
        ids.append(f"{rel.as_posix()}::{rest}")
    return ids


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast tier: deselect the tests marked slow, realweights or browser (see the docstring)."""
    if all_tiers_reason(config) is not None:
        return
    named = _named_ids(config)
    keep, drop = [], []
    for item in items:
        tiered = any(item.get_closest_marker(name) is not None for name in TIER_MARKERS)
        asked = any(item.nodeid == n or item.nodeid.startswith((n + "::", n + "[")) for n in named)
        (drop if tiered and not asked else keep).append(item)
    config.stash[_DESELECTED] = len(drop)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config: pytest.Config) -> str:
    reason = all_tiers_reason(config)
    if reason is not None:
        return f"jaxdream: all tiers ({reason})"
    return f"jaxdream: fast tier (tests marked {'/'.join(TIER_MARKERS)} are deselected; {FAST_TIER_HINT})"


def pytest_report_collectionfinish(config: pytest.Config, items) -> str | list[str]:
    """The count, known only now (the header is written before collection; with ``-q`` it is not
    written at all, so then the tier is said here)."""
    deselected = config.stash.get(_DESELECTED, None)
    if deselected is not None:
        return f"jaxdream: fast tier ({deselected} {'/'.join(TIER_MARKERS)} tests deselected; {FAST_TIER_HINT})"
    return pytest_report_header(config) if config.getoption("verbose", 0) < 0 else []
