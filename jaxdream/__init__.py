"""jaxdream: DeepDream and Gatys neural style transfer in JAX, with animation and video.

Quick start::

    import jaxdream
    img = jaxdream.media.load_image("cat.png", size=512)
    feats = jaxdream.features(img, ["inception_4c/output"])
"""

from ._version import __version__
from .errors import JaxdreamError, LayerError, MediaError, SettingsError, WeightsError
from .network import Network, features, load_network

__all__ = ["__version__", "features", "load_network", "Network", "JaxdreamError", "LayerError",
           "MediaError", "SettingsError", "WeightsError"]
