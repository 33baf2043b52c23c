"""Read and write Keras 2 HDF5 weights (``model.save_weights('x.h5')`` and full-model saves).

Layout: the root group (or its ``model_weights`` group, in a full-model save) lists its layers
in the attribute ``layer_names``; each layer's group lists its weights in ``weight_names``, as
paths relative to that group (``block1_conv1/kernel:0``). Keras splits an attribute too big for
an HDF5 object header into ``layer_names0``, ``layer_names1``, ...; those are read too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from jaxdream.errors import WeightsError

__all__ = ["read_keras_h5", "write_keras_h5"]


def _strings(group: h5py.Group, name: str) -> list[str] | None:
    """A string-list attribute, joining Keras's numbered chunks; None if absent."""
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks = []
        while f"{name}{len(chunks)}" in group.attrs:
            chunks.append(group.attrs[f"{name}{len(chunks)}"])
        if not chunks:
            return None
    return [
        v.decode("utf-8") if isinstance(v, bytes) else str(v)
        for chunk in chunks
        for v in np.atleast_1d(chunk).tolist()
    ]


def read_keras_h5(path: str | os.PathLike[str]) -> dict[str, list[np.ndarray]]:
    """Read every layer's weights from a Keras 2 ``.h5`` file.

    Args:
        path: A file written by Keras 2 ``save_weights`` or ``save`` (HDF5 format).

    Returns:
        Layer name -> weight arrays (as stored, e.g. conv kernel ``(kh, kw, in, out)`` then
        bias ``(out,)``), in the order of the layer's ``weight_names``. Layers in file order;
        layers without weights (input, pooling) are left out.

    Raises:
        WeightsError: The file is missing, is not HDF5, is not a Keras weights file, or a
            listed layer or weight is missing or cannot be read (truncated or corrupt file).
    """
    if not Path(path).is_file():
        raise WeightsError(f"{path}: file not found")
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path}: not an HDF5 file; expected Keras .h5 weights")
    layers: dict[str, list[np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f
            if "layer_names" not in f.attrs and isinstance(f.get("model_weights"), h5py.Group):
                root = f["model_weights"]
            layer_names = _strings(root, "layer_names")
            if layer_names is None:
                raise WeightsError(
                    f"{path}: not a Keras weights file (no 'layer_names' attribute); "
                    "expected the Keras 2 HDF5 format"
                )
            for name in layer_names:
                group = root.get(name)
                if not isinstance(group, h5py.Group):
                    raise WeightsError(f"{path}: layer {name!r} is listed but missing")
                arrays = []
                for weight in _strings(group, "weight_names") or []:
                    dataset = group.get(weight)
                    if not isinstance(dataset, h5py.Dataset):
                        raise WeightsError(
                            f"{path}: weight {weight!r} of layer {name!r} is listed but missing"
                        )
                    arrays.append(np.asarray(dataset[()]))
                if arrays:
                    layers[name] = arrays
    except WeightsError:
        raise
    except Exception as e:  # h5py reports damage as OSError, KeyError, RuntimeError, ...
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise WeightsError(
            f"{path}: cannot read HDF5 data ({reason}); the file may be truncated or corrupt"
        ) from None
    return layers


def write_keras_h5(
    path: str | os.PathLike[str],
    layers: Mapping[str, Sequence[np.ndarray]],
    weight_suffixes: Sequence[str] = ("kernel:0", "bias:0"),
    *,
    model_weights: bool = False,
) -> None:
    """Write layers' weights in the Keras 2 HDF5 layout that :func:`read_keras_h5` reads.

    Args:
        path: File to write.
        layers: Layer name -> weight arrays; an empty list makes a weightless layer (pooling).
        weight_suffixes: Names of a layer's weights in order: weight ``i`` of layer ``L`` is
            stored as ``L/L/<weight_suffixes[i]>``.
        model_weights: Nest everything under a ``model_weights`` group, as a full-model save.

    Raises:
        ValueError: A layer has more weights than ``weight_suffixes`` names.
    """
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if model_weights else f
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4"
        root.attrs["layer_names"] = np.array([n.encode() for n in layers], dtype=bytes)
        for name, arrays in layers.items():
            if len(arrays) > len(weight_suffixes):
                raise ValueError(
                    f"layer {name!r} has {len(arrays)} weights but only "
                    f"{len(weight_suffixes)} weight_suffixes"
                )
            group = root.create_group(name)
            weight_names = [f"{name}/{s}" for s in weight_suffixes[: len(arrays)]]
            group.attrs["weight_names"] = np.array([w.encode() for w in weight_names], dtype="S")
            for weight, array in zip(weight_names, arrays):
                group.create_dataset(weight, data=np.asarray(array))
