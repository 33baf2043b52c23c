"""Known weights: where they come from, how to check them, what they are for."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from jaxdream.errors import WeightsError


@dataclass(frozen=True)
class WeightsInfo:
    """One published weights file.

    Attributes:
        key: the name users type (``googlenet``, ``vgg19``).
        model: the jaxdream model these weights fit.
        filename: the upstream file name.
        url: the canonical download address.
        hash_name: hashlib name of the published hash (``sha1``, ``md5``).
        hash: the published hex digest of the upstream file.
        format: ``caffe`` or ``keras``.
        size: upstream file size in bytes (for the progress bar and a sanity check).
        preprocessing: the input convention, for humans.
        licence: licence and attribution.
    """

    key: str
    model: str
    filename: str
    url: str
    hash_name: str
    hash: str
    format: str
    size: int
    preprocessing: str
    licence: str


REGISTRY: dict[str, WeightsInfo] = {
    "googlenet": WeightsInfo(
        key="googlenet", model="googlenet", filename="bvlc_googlenet.caffemodel",
        url="http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel",
        hash_name="sha1", hash="405fc5acd08a3bb12de8ee5e23a96bec22f08204", format="caffe",
        size=53533754,
        preprocessing="Caffe: RGB 0..255 -> BGR, subtract means (104, 117, 123)",
        licence="BVLC model zoo, unrestricted use (trained by S. Guadarrama, BVLC)"),
    "vgg19": WeightsInfo(
        key="vgg19", model="vgg19", filename="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        url="https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
            "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        hash_name="md5", hash="253f8cb515780f3b799900260a226db6", format="keras",
        size=80134624,
        preprocessing="Caffe: RGB 0..255 -> BGR, subtract means (103.939, 116.779, 123.68)",
        licence="CC BY 4.0, K. Simonyan and A. Zisserman, Visual Geometry Group, Oxford"),
}


def get_info(key: str) -> WeightsInfo:
    """Look up known weights by key or model name.

    Raises:
        WeightsError: for an unknown key, naming the known ones.
    """
    try:
        return REGISTRY[key.lower()]
    except KeyError:
        close = difflib.get_close_matches(key.lower(), REGISTRY, n=1, cutoff=0.4)
        hint = f"did you mean {close[0]}? " if close else ""
        raise WeightsError(f"unknown weights '{key}': {hint}known weights are "
                           f"{', '.join(REGISTRY)}") from None
