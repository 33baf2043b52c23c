"""jaxdream: DeepDream and Gatys neural style transfer in JAX, with animation and video.

Quick start::

    import jaxdream
    img = jaxdream.media.load_image("cat.png", size=512)
    feats = jaxdream.features(img, ["inception_4c/output"])

The package imports JAX only when something that needs it is first used (``jaxdream.dream``,
``jaxdream.stylize``, a submodule), so ``import jaxdream`` and the command line's start are
quick, and the command line can treat Ctrl-C during JAX's start-up like any other interrupt.
"""

from __future__ import annotations

import importlib
import sys
import types

from .runtime import xla_flags
from ._version import __version__
from .errors import JaxdreamError, LayerError, MediaError, SettingsError, WeightsError

__all__ = ["__version__", "dream", "stylize", "features", "classify", "load_network", "Network", "JaxdreamError", "LayerError",
           "MediaError", "SettingsError", "WeightsError"]

xla_flags.apply()

#: Public functions and classes, and the module that defines each.
_LAZY = {"dream": "dream", "stylize": "style", "features": "nets.network", "classify": "nets.network",
         "load_network": "nets.network", "Network": "nets.network"}


class _Package(types.ModuleType):
    """The package module: resolves the names in :data:`_LAZY` and submodules on first use.

    ``jaxdream.dream`` and ``jaxdream.stylize`` are the functions even though modules of (nearly)
    the same name exist: the import system's attempt to bind the submodule ``jaxdream.dream``
    as an attribute is ignored (``importlib.import_module("jaxdream.dream")`` gives the module).
    """

    def __getattr__(self, name: str):
        if name in _LAZY:
            value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
            types.ModuleType.__setattr__(self, name, value)
            return value
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return  # keep the function as the package attribute
        super().__setattr__(name, value)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(_LAZY))


sys.modules[__name__].__class__ = _Package
