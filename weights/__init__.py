"""Weight readers (Caffe, Keras), the registry of known weights and the on-disk store."""

from .registry import REGISTRY, WeightsInfo, get_info
from .store import cache_dir, download, find_original, load_flat

__all__ = ["REGISTRY", "WeightsInfo", "get_info", "cache_dir", "download", "find_original",
           "load_flat"]
