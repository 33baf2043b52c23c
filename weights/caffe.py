"""Read and write Caffe ``.caffemodel`` weights without the protobuf package.

A ``.caffemodel`` is a serialized ``NetParameter`` message. Only the parts that carry weights
are decoded; every other field is skipped by wire type. Supported layouts:

* V2 ``layer`` (``NetParameter`` field 100): ``LayerParameter`` with name (1), string type (2)
  and blobs (7). Written by Caffe since 2015.
* V1 ``layers`` (``NetParameter`` field 2): ``V1LayerParameter`` with name (4), enum type (5)
  and blobs (6), optionally wrapping a V0 ``layer`` (1) with name (1) and blobs (50). The BVLC
  GoogLeNet file uses this layout.
* ``BlobProto``: shape (7, ``BlobShape.dim`` int64s) or the legacy num/channels/height/width
  (1-4); values as float ``data`` (5) or ``double_data`` (8), packed or unpacked.

Blobs come back as float32 arrays in their stored shape (conv weights ``(out, in, kh, kw)``;
legacy files store biases as ``(1, 1, 1, out)``): reshaping is the consumer's job.
"""

from __future__ import annotations

import math
import os
from collections.abc import Container, Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxdream.errors import WeightsError

__all__ = ["read_caffemodel", "write_caffemodel"]

_MAX_AXES = 32  # Caffe's kMaxBlobAxes
_TAG_FLOAT = 5 << 3 | 5  # BlobProto.data, unpacked: one fixed32 per tag
_TAG_DOUBLE = 8 << 3 | 1  # BlobProto.double_data, unpacked: one fixed64 per tag


class _Corrupt(Exception):
    """Raised inside the decoder with the byte offset where the input stopped making sense."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


# --------------------------------------------------------------------------------------------
# Wire format
# --------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return (unsigned value, position after it)."""
    result = shift = 0
    start = pos
    while pos < end:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            break
    raise _Corrupt(start)


def _signed(value: int) -> int:
    """Reinterpret a decoded varint as a two's-complement int64 (how int32/int64 are encoded)."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _field(buf: bytes, pos: int, end: int) -> tuple[int, int, int, int]:
    """Decode one field header and locate its value.

    Returns:
        ``(field number, wire type, value, next position)``; ``value`` is the integer for a
        varint (wire type 0) and the offset of the payload for the other wire types.
    """
    key, p = _varint(buf, pos, end)
    field, wire = key >> 3, key & 7
    if field == 0 or field >= 1 << 29:
        raise _Corrupt(pos)
    if wire == 0:
        value, q = _varint(buf, p, end)
        return field, wire, value, q
    if wire == 2:
        size, q = _varint(buf, p, end)
        if size > end - q:
            raise _Corrupt(pos)
        return field, wire, q, q + size
    if wire in (1, 5):
        size = 8 if wire == 1 else 4
        if size > end - p:
            raise _Corrupt(pos)
        return field, wire, p, p + size
    raise _Corrupt(pos)  # groups (3, 4) and the unused wire types 6, 7


def _packed(buf: bytes, start: int, stop: int, dtype: str) -> np.ndarray:
    """Little-endian fixed-width values filling ``buf[start:stop]``."""
    size = np.dtype(dtype).itemsize
    if (stop - start) % size:
        raise _Corrupt(start)
    return np.frombuffer(buf, dtype, (stop - start) // size, start)


def _unpacked_run(buf: bytes, pos: int, end: int, tag: int, dtype: str) -> tuple[np.ndarray, int]:
    """Decode the unpacked value at ``pos`` and every ``(tag, value)`` record right after it.

    Unpacked repeated floats are millions of 5-byte records; checking their tag bytes with
    numpy in blocks of doubling size keeps this linear and fast.

    Returns:
        The values and the position after the last record of the run.
    """
    size = np.dtype(dtype).itemsize
    stride = size + 1
    parts = [np.frombuffer(buf, dtype, 1, pos)]
    pos += size
    block = 1024
    while (count := min(block, (end - pos) // stride)) > 0:
        records = np.frombuffer(buf, np.uint8, count * stride, pos).reshape(count, stride)
        bad = np.flatnonzero(records[:, 0] != tag)
        run = int(bad[0]) if bad.size else count
        parts.append(np.ascontiguousarray(records[:run, 1:]).view(dtype).reshape(-1))
        pos += run * stride
        if run < count:
            break
        block *= 2
    return np.concatenate(parts), pos


def _string(buf: bytes, start: int, stop: int) -> str:
    try:
        return buf[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(start) from None


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _blob_shape(buf: bytes, pos: int, end: int, dims: list[int]) -> None:
    """Append the dims of a ``BlobShape`` message (field 1, packed or not) to ``dims``."""
    while pos < end:
        field, wire, value, nxt = _field(buf, pos, end)
        if field == 1 and wire == 0:
            dims.append(_signed(value))
        elif field == 1 and wire == 2:
            p = value
            while p < nxt and len(dims) <= _MAX_AXES:
                dim, p = _varint(buf, p, nxt)
                dims.append(_signed(dim))
        if len(dims) > _MAX_AXES:
            raise _Corrupt(pos)
        pos = nxt


def _blob(buf: bytes, pos: int, end: int) -> tuple[np.ndarray, tuple[int, ...]]:
    """Decode a ``BlobProto``: return its flat float32 values and its shape (not yet checked)."""
    floats: list[np.ndarray] = []
    doubles: list[np.ndarray] = []
    legacy: dict[int, int] = {}
    dims: list[int] | None = None
    while pos < end:
        field, wire, value, nxt = _field(buf, pos, end)
        if field == 5 and wire == 2:
            floats.append(_packed(buf, value, nxt, "<f4"))
        elif field == 5 and wire == 5:
            run, nxt = _unpacked_run(buf, value, end, _TAG_FLOAT, "<f4")
            floats.append(run)
        elif field == 8 and wire == 2:
            doubles.append(_packed(buf, value, nxt, "<f8"))
        elif field == 8 and wire == 1:
            run, nxt = _unpacked_run(buf, value, end, _TAG_DOUBLE, "<f8")
            doubles.append(run)
        elif field == 7 and wire == 2:
            dims = [] if dims is None else dims  # repeated sub-messages merge: dims concatenate
            _blob_shape(buf, value, nxt, dims)
        elif 1 <= field <= 4 and wire == 0:
            legacy[field] = _signed(value)
        pos = nxt
    if floats:
        data = np.concatenate(floats).astype(np.float32)
    elif doubles:
        data = np.concatenate(doubles).astype(np.float32)
    else:
        data = np.zeros(0, np.float32)
    if dims is not None:
        shape = tuple(dims)
    elif legacy:
        shape = tuple(legacy.get(f, 1) for f in (1, 2, 3, 4))
    else:
        shape = (data.size,)
    return data, shape


def _layer(
    buf: bytes, pos: int, end: int, name_field: int, blobs_field: int, v0_field: int = 0
) -> tuple[str | None, list[tuple[int, int]]]:
    """Find a layer message's name and the byte spans of its blobs, without decoding them.

    Args:
        name_field: Field number of the name (1 in V2 and V0, 4 in V1).
        blobs_field: Field number of the repeated ``BlobProto`` (7 in V2, 6 in V1, 50 in V0).
        v0_field: Field number of a wrapped V0 layer (1 in V1), or 0 for none. Its name and
            blobs are used where the outer layer has none of its own.
    """
    name: str | None = None
    blobs: list[tuple[int, int]] = []
    v0: tuple[int, int] | None = None
    while pos < end:
        field, wire, value, nxt = _field(buf, pos, end)
        if wire == 2:
            if field == name_field:
                name = _string(buf, value, nxt)
            elif field == blobs_field:
                blobs.append((value, nxt))
            elif field == v0_field:
                v0 = (value, nxt)
        pos = nxt
    if v0 is not None:
        v0_name, v0_blobs = _layer(buf, *v0, name_field=1, blobs_field=50)
        name = v0_name if name is None else name
        blobs = blobs or v0_blobs
    return name, blobs


def read_caffemodel(
    path: str | os.PathLike[str], names: Container[str] | None = None
) -> dict[str, list[np.ndarray]]:
    """Read the weights of every layer that has any from a ``.caffemodel`` file.

    Args:
        path: The ``.caffemodel`` file (V1 ``layers`` and/or V2 ``layer`` sections).
        names: If given, only layers with these names are decoded; the blobs of the others
            (e.g. GoogLeNet's auxiliary ``loss1/*``, ``loss2/*`` heads) are skipped unread.

    Returns:
        Layer name -> its blobs, in file order: float32 arrays in their stored shape, e.g.
        conv weights ``(out, in, kh, kw)``. Layers without blobs are left out.

    Raises:
        WeightsError: The file is missing or unreadable, is not a valid protobuf (truncated or
            corrupt), holds no layers with weights, names a layer twice, or has a blob whose
            shape does not match its number of values.
    """
    try:
        buf = Path(path).read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read file ({e.strerror or e})") from None

    layers: dict[str, list[np.ndarray]] = {}
    seen: set[str] = set()
    try:
        pos, end = 0, len(buf)
        while pos < end:
            field, wire, value, nxt = _field(buf, pos, end)
            if wire == 2 and field in (2, 100):
                if field == 2:
                    name, spans = _layer(buf, value, nxt, name_field=4, blobs_field=6, v0_field=1)
                else:
                    name, spans = _layer(buf, value, nxt, name_field=1, blobs_field=7)
                if spans and name is not None:
                    if name in seen:
                        raise WeightsError(f"{path}: layer {name!r} appears twice")
                    seen.add(name)
                    if names is None or name in names:
                        layers[name] = [
                            _checked(path, name, i, *_blob(buf, *span))
                            for i, span in enumerate(spans)
                        ]
            pos = nxt
    except _Corrupt as e:
        raise WeightsError(
            f"{path}: not a valid Caffe model file (truncated or corrupt at byte {e.offset})"
        ) from None
    if not seen:
        raise WeightsError(f"{path}: no layers with weights found; is this a .caffemodel?")
    return layers


def _checked(
    path: str | os.PathLike[str], layer: str, index: int, data: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Give a blob's values their shape, or raise if the two disagree."""
    if any(d < 0 for d in shape) or math.prod(shape) != data.size:
        raise WeightsError(
            f"{path}: layer {layer!r} blob {index} has {data.size} values but shape {shape}"
        )
    return data.reshape(shape)


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


def _enc_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32/int64 take ten bytes, as protobuf writes them
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _enc_key(field: int, wire: int) -> bytes:
    return _enc_varint(field << 3 | wire)


def _enc_bytes(field: int, payload: bytes) -> bytes:
    return _enc_key(field, 2) + _enc_varint(len(payload)) + payload


def _enc_blob(array: np.ndarray, version: int, packed: bool) -> bytes:
    values = np.asarray(array, dtype="<f4")
    out = bytearray()
    if version == 1:
        if values.ndim > 4:
            raise ValueError(f"a V1 blob has at most 4 axes, got shape {values.shape}")
        for field, dim in enumerate((1,) * (4 - values.ndim) + values.shape, start=1):
            out += _enc_key(field, 0) + _enc_varint(dim)
    elif packed:
        out += _enc_bytes(7, _enc_bytes(1, b"".join(_enc_varint(d) for d in values.shape)))
    else:
        out += _enc_bytes(7, b"".join(_enc_key(1, 0) + _enc_varint(d) for d in values.shape))
    if packed:
        out += _enc_bytes(5, values.tobytes())
    elif values.size:
        records = np.empty((values.size, 5), np.uint8)
        records[:, 0] = _TAG_FLOAT
        records[:, 1:] = values.reshape(-1, 1).view(np.uint8)
        out += records.tobytes()
    return bytes(out)


def write_caffemodel(
    path: str | os.PathLike[str],
    layers: Mapping[str, Sequence[np.ndarray]],
    *,
    version: int = 2,
    packed: bool = True,
    net_name: str = "net",
) -> None:
    """Write layers' blobs as a ``.caffemodel`` that Caffe and :func:`read_caffemodel` accept.

    Layers are typed Convolution when their first blob is 4-D, InnerProduct otherwise.

    Args:
        path: File to write.
        layers: Layer name -> blobs (converted to float32).
        version: 2 for V2 ``layer`` messages with ``BlobShape``; 1 for V1 ``layers`` messages
            with legacy num/channels/height/width (shapes left-padded with 1s to 4-D).
        packed: Write float data (and V2 dims) packed; if False, one tagged value each.
        net_name: The ``NetParameter`` name.

    Raises:
        ValueError: Unknown ``version``, or a V1 blob with more than 4 axes.
    """
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}")
    out = bytearray(_enc_bytes(1, net_name.encode()))
    for name, blobs in layers.items():
        conv = bool(blobs) and np.ndim(blobs[0]) == 4
        if version == 1:
            msg = _enc_bytes(4, name.encode()) + _enc_key(5, 0) + _enc_varint(4 if conv else 14)
            msg += b"".join(_enc_bytes(6, _enc_blob(b, 1, packed)) for b in blobs)
            out += _enc_bytes(2, msg)
        else:
            kind = b"Convolution" if conv else b"InnerProduct"
            msg = _enc_bytes(1, name.encode()) + _enc_bytes(2, kind)
            msg += b"".join(_enc_bytes(7, _enc_blob(b, 2, packed)) for b in blobs)
            out += _enc_bytes(100, msg)
    Path(path).write_bytes(bytes(out))
