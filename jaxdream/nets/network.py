"""A model with its weights, ready for jitted use, and the one-call ``features`` API."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from .. import media
from ..errors import SettingsError
from ..progress import download_bar
from ..weights import store
from . import preprocess
from . import ModelSpec, get_spec

Params = Any


@functools.lru_cache(maxsize=None)
def _param_paths(model: str) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """``{flat name: (tree path, shape)}`` of the model's full parameter tree."""
    spec = get_spec(model)
    size = spec.min_size(spec.layers[-1:])
    module = spec.make(spec.layers[-1:], spec.poolings[0])
    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    return {"/".join(path): (path, tuple(leaf.shape))
            for path, leaf in flatten_dict(shapes["params"]).items()}


def param_shapes(model: str) -> dict[str, tuple[int, ...]]:
    """``{flat name: shape}`` that weights for ``model`` must provide."""
    return {name: shape for name, (_, shape) in _param_paths(model).items()}


def param_tree(model: str, leaf: Callable[[str, tuple[int, ...]], Any]) -> Params:
    """The model's params tree (``{"params": ...}``) with ``leaf(flat name, shape)`` at each leaf."""
    tree: dict = {}
    for name, (path, shape) in _param_paths(model).items():
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = leaf(name, shape)
    return {"params": tree}


def unflatten(model: str, flat: dict[str, np.ndarray]) -> Params:
    """Flat ``{"layer/kernel": array}`` -> the model's params tree (as jax arrays)."""
    # device_put, not jnp.asarray: no per-shape dispatch compile (1.5 s for GoogLeNet)
    return param_tree(model, lambda name, _: jax.device_put(np.ascontiguousarray(flat[name], np.float32)))


@dataclass(frozen=True, eq=False)
class Network:
    """A network and its parameters.

    ``apply`` is a pure function of (params, x); pass ``params`` explicitly into jitted code.

    Attributes:
        spec: the model description (names, means, sizes).
        params: the variables pytree (``{"params": ...}``).
        pooling: ``max`` or ``avg`` (VGG-19 only).
        provenance: where the weights came from (source file, hashes).
    """

    spec: ModelSpec
    params: Params
    pooling: str = "max"
    provenance: dict = field(default_factory=dict)

    def apply(self, params: Params, x: jax.Array, layers: Sequence[str]) -> dict[str, jax.Array]:
        """Activations of ``layers`` for a batch ``x`` (N, H, W, 3) in the network's input space."""
        return self.spec.make(tuple(layers), self.pooling).apply(params, x)

    def to_model(self, rgb: jax.Array) -> jax.Array:
        """RGB 0..255 -> the network's input space."""
        return preprocess.to_model(rgb, self.spec.mean_bgr)

    def from_model(self, x: jax.Array) -> jax.Array:
        """The network's input space -> RGB 0..255."""
        return preprocess.from_model(x, self.spec.mean_bgr)

    @property
    def weights_id(self) -> str:
        """Short hash identifying the weights, for run metadata."""
        return str(self.provenance.get("source_sha256", "unknown"))[:16]


@functools.lru_cache(maxsize=4)
def _load_params(model: str, weights: str | None, mtime: float | None):

    spec = get_spec(model)
    flat, provenance = store.load_flat(spec.weights, param_shapes(model), weights=weights,
                                       progress=download_bar)
    return unflatten(model, flat), provenance


def load_network(model: str = "googlenet", weights: str | os.PathLike | None = None,
                 pooling: str = "max") -> Network:
    """Load a model with its weights (found, downloaded or converted as needed).

    Args:
        model: ``googlenet`` or ``vgg19``.
        weights: an explicit weights file (upstream format or converted ``.npz``); default: the
            store's lookup (see :mod:`jaxdream.weights.store`).
        pooling: ``max`` or ``avg`` (``avg`` only for VGG-19).

    Raises:
        LayerError: unknown model. SettingsError: unsupported pooling. WeightsError: weights.
    """
    spec = get_spec(model)
    if pooling not in spec.poolings:
        raise SettingsError(f"{spec.name} supports pooling {', '.join(spec.poolings)}, not '{pooling}'")
    path = None if weights is None else str(Path(weights).expanduser().resolve())
    mtime = os.path.getmtime(path) if path and os.path.exists(path) else None
    params, provenance = _load_params(spec.name, path, mtime)
    return Network(spec, params, pooling, provenance)


@functools.partial(jax.jit, static_argnames=("model", "pooling", "layers"))
def _features_jit(params: Params, x: jax.Array, *, model: str, pooling: str, layers: tuple[str, ...]):
    spec = get_spec(model)
    return spec.make(layers, pooling).apply(params, preprocess.to_model(x, spec.mean_bgr))


def features(image, layers: str | Sequence[str], *, model: str = "googlenet",
             weights: str | os.PathLike | None = None, pooling: str = "max") -> dict[str, np.ndarray]:
    """Activations of an RGB image.

    Args:
        image: (H, W, 3) RGB, uint8 or float in 0..255.
        layers: one layer name or several (see ``jaxdream layers MODEL``).
        model: ``googlenet`` (default) or ``vgg19``.
        weights: explicit weights file; default: the store's lookup.
        pooling: ``max`` or ``avg`` (VGG-19).

    Returns:
        ``{layer: (h, w, C) float32 numpy array}``.

    Example:
        >>> feats = jaxdream.features(img, ["inception_4c/output"])  # doctest: +SKIP
        >>> feats["inception_4c/output"].shape  # doctest: +SKIP
        (14, 14, 512)
    """
    spec = get_spec(model)
    names = spec.check_layers([layers] if isinstance(layers, str) else layers)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise SettingsError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    spec.check_size(arr.shape[0], arr.shape[1], names)
    net = load_network(model, weights, pooling)
    out = _features_jit(net.params, jnp.asarray(arr, jnp.float32)[None], model=spec.name,
                        pooling=pooling, layers=names)
    return {name: np.asarray(out[name][0]) for name in names}


#: The input size GoogLeNet's classifier was trained at.
CLASSIFY_SIZE = 224


def classify(image, *, model: str = "googlenet", weights: str | os.PathLike | None = None) -> np.ndarray:
    """ImageNet class probabilities (1000,) of an RGB image, resized (bilinear, whole image) to
    224x224 as ``jaxdream classify`` does.

    Example:
        >>> int(jaxdream.classify(img).argmax())  # doctest: +SKIP
        285
    """
    spec = get_spec(model)
    if "prob" not in spec.layers:
        raise SettingsError(f"{spec.name} has no classifier; use googlenet")
    small = media.resize(np.asarray(image, np.float32), (CLASSIFY_SIZE, CLASSIFY_SIZE), "bilinear")
    return features(small, "prob", model=spec.name, weights=weights)["prob"].reshape(-1)
