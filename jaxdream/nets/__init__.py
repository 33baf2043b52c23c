"""The networks jaxdream knows, with their layer names and input conventions."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Sequence

import flax.linen as nn

from ..errors import LayerError, SettingsError
from . import googlenet, vgg19


@dataclass(frozen=True)
class ModelSpec:
    """What jaxdream needs to know about one network.

    Attributes:
        name: the model name users type (``googlenet``, ``vgg19``).
        layers: every activation name, in forward order.
        mean_bgr: per-channel means subtracted from BGR 0..255 input.
        weights: registry key of the default weights.
        output_size: ``(input length, layer) -> output length`` along one spatial axis.
        make: ``(outputs, pooling) -> flax module`` returning ``{name: activation}``.
        poolings: the pooling modes the network supports.
    """

    name: str
    layers: tuple[str, ...]
    mean_bgr: tuple[float, float, float]
    weights: str
    output_size: Callable[[int, str], int]
    make: Callable[[tuple[str, ...], str], nn.Module]
    poolings: tuple[str, ...] = ("max",)

    def check_layers(self, names: Sequence[str]) -> tuple[str, ...]:
        """Validate layer names; return them as a tuple.

        Raises:
            LayerError: naming the unknown layer and the closest known names.
        """
        names = tuple(names)
        if not names:
            raise LayerError(f"no layers requested for {self.name}")
        for name in names:
            if name not in self.layers:
                close = difflib.get_close_matches(name, self.layers, n=4, cutoff=0.5)
                hint = f"; did you mean {', '.join(close)}?" if close else (
                    f"; run `jaxdream layers {self.name}` for the list")
                raise LayerError(f"unknown layer '{name}' for {self.name}{hint}")
        return names

    def deepest(self, names: Sequence[str]) -> str:
        """The requested layer computed last."""
        return max(names, key=self.layers.index)

    def min_size(self, names: Sequence[str]) -> int:
        """Smallest square input (pixels) for which every layer in ``names`` is non-empty."""
        deepest = self.deepest(names)
        return next(s for s in range(1, 4096) if self.output_size(s, deepest) >= 1)

    def check_size(self, height: int, width: int, names: Sequence[str]) -> None:
        """Raise SettingsError if an image of this size is too small for ``names``."""
        deepest = self.deepest(names)
        if min(self.output_size(height, deepest), self.output_size(width, deepest)) < 1:
            raise SettingsError(
                f"a {width}x{height} image is too small for {self.name} layer '{deepest}': "
                f"the minimum is {self.min_size(names)} px on each side")


def _vgg_output_size(size: int, layer: str) -> int:
    block = int(layer[4]) if layer.startswith("pool") else int(layer.split("_")[0][-1])
    pools = block if layer.startswith("pool") else block - 1
    return size // (2 ** pools)


MODELS: dict[str, ModelSpec] = {
    "googlenet": ModelSpec(
        name="googlenet", layers=googlenet.LAYERS, mean_bgr=googlenet.MEAN_BGR,
        weights="googlenet", output_size=googlenet.output_size,
        make=lambda outputs, pooling="max": googlenet.GoogLeNet(outputs=tuple(outputs))),
    "vgg19": ModelSpec(
        name="vgg19", layers=vgg19.LAYERS, mean_bgr=vgg19.MEAN_BGR, weights="vgg19",
        output_size=_vgg_output_size,
        make=lambda outputs, pooling="max": vgg19.VGG19(outputs=tuple(outputs), pooling=pooling),
        poolings=("max", "avg")),
}


def get_spec(name: str) -> ModelSpec:
    """Look up a model by name.

    Raises:
        LayerError: for an unknown name, listing the known ones.
    """
    try:
        return MODELS[name.lower()]
    except KeyError:
        close = difflib.get_close_matches(name.lower(), MODELS, n=2, cutoff=0.4)
        hint = f"did you mean {close[0]}? " if close else ""
        raise LayerError(f"unknown model '{name}': {hint}known models are "
                         f"{', '.join(MODELS)}") from None
