"""jaxdream: DeepDream and Gatys neural style transfer in JAX, with animation and video.

Quick start::

    import jaxdream
    img = jaxdream.media.load_image("cat.png", size=512)
    feats = jaxdream.features(img, ["inception_4c/output"])
"""

from ._version import __version__
from .errors import JaxdreamError, LayerError, MediaError, SettingsError, WeightsError
from .network import Network, features, load_network
# the functions shadow their modules as attributes of the package (``jaxdream.dream`` is the
# function); ``importlib.import_module("jaxdream.dream")`` still gives the module
from .dream import dream  # noqa: E402  (after network: dream imports it)
from .style import stylize  # noqa: E402

__all__ = ["__version__", "dream", "stylize", "features", "load_network", "Network", "JaxdreamError", "LayerError",
           "MediaError", "SettingsError", "WeightsError"]
