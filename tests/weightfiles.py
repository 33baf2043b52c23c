"""Test helpers: small random weight sets, hand-made protobuf bytes, the real weights folder."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

#: Real pretrained weights live beside the checkout, in dev and CI only.
REAL_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "weights"
REAL_SKIP_REASON = "../shared/weights not present (real weights are only in the dev/CI checkout)"


def random_layers(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """A few small conv and dense layers with random float32 weights (and 4-D-or-less blobs)."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    return {
        "conv1/7x7_s2": [normal(4, 3, 3, 3), normal(4)],
        "inception_3a/1x1": [normal(2, 4, 1, 1), normal(2)],
        "loss3/classifier": [normal(5, 8), normal(5)],
    }


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(field: int, wire: int) -> bytes:
    """Protobuf field key."""
    return varint(field << 3 | wire)


def msg(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return key(field, 2) + varint(len(payload)) + payload


def fixed32(field: int, value: float) -> bytes:
    """An unpacked float field (wire type 5)."""
    return key(field, 5) + struct.pack("<f", value)


def fixed64(field: int, value: float) -> bytes:
    """An unpacked double field (wire type 1)."""
    return key(field, 1) + struct.pack("<d", value)


def uint(field: int, value: int) -> bytes:
    """A varint field (wire type 0)."""
    return key(field, 0) + varint(value)
