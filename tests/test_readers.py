"""Weights file readers: Caffe .caffemodel (hand-decoded protobuf) and Keras 2 .h5."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from weightfiles import (
    REAL_SKIP_REASON,
    REAL_WEIGHTS,
    fixed32,
    fixed64,
    key,
    msg,
    random_layers,
    uint,
    varint,
)

from jaxdream.errors import WeightsError
from jaxdream.weights import caffe, keras

# --------------------------------------------------------------------------------------------
# Caffe
# --------------------------------------------------------------------------------------------


def v2_layer(name: str, *blobs: bytes, extra: bytes = b"") -> bytes:
    """A NetParameter ``layer`` field (V2) holding the given encoded BlobProtos."""
    body = msg(1, name.encode()) + msg(2, b"Convolution") + extra
    return msg(100, body + b"".join(msg(7, b) for b in blobs))


def packed_floats(values: list[float]) -> bytes:
    return msg(5, np.asarray(values, "<f4").tobytes())


Layers = dict[str, list[np.ndarray]]


def assert_layers_equal(got: Layers, want: Layers) -> None:
    assert list(got) == list(want)
    for name in want:
        assert len(got[name]) == len(want[name])
        for g, w in zip(got[name], want[name]):
            assert g.dtype == np.float32
            assert g.shape == w.shape
            np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("version", [1, 2])
def test_caffe_round_trip(tmp_path: Path, version: int, packed: bool) -> None:
    layers = random_layers(seed=version)
    path = tmp_path / "net.caffemodel"
    caffe.write_caffemodel(path, layers, version=version, packed=packed)

    got = caffe.read_caffemodel(path)

    if version == 1:  # legacy num/channels/height/width: shapes come back padded to 4-D
        layers = {
            n: [b.reshape((1,) * (4 - b.ndim) + b.shape) for b in bs] for n, bs in layers.items()
        }
    assert_layers_equal(got, layers)


def test_caffe_names_filter_skips_other_layers_undecoded(tmp_path: Path) -> None:
    layers = random_layers()
    bad_blob = msg(7, msg(1, varint(3))) + packed_floats([1.0, 2.0])  # 2 values, shape (3,)
    path = tmp_path / "net.caffemodel"
    caffe.write_caffemodel(path, layers)
    with open(path, "ab") as f:
        f.write(v2_layer("loss1/fc", bad_blob))

    got = caffe.read_caffemodel(path, names={"conv1/7x7_s2", "loss3/classifier", "absent"})

    assert_layers_equal(got, {n: layers[n] for n in ("conv1/7x7_s2", "loss3/classifier")})
    with pytest.raises(WeightsError, match=r"'loss1/fc' blob 0 has 2 values but shape \(3,\)"):
        caffe.read_caffemodel(path)


def test_caffe_file_with_v1_and_v2_sections(tmp_path: Path) -> None:
    v1 = {"conv1": [np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)]}
    v2 = {"fc": [np.ones((3, 4), np.float32), np.zeros(3, np.float32)]}
    caffe.write_caffemodel(tmp_path / "a", v1, version=1)
    caffe.write_caffemodel(tmp_path / "b", v2, version=2)
    path = tmp_path / "both.caffemodel"  # concatenated messages merge: both sections present
    path.write_bytes((tmp_path / "a").read_bytes() + (tmp_path / "b").read_bytes())

    assert_layers_equal(caffe.read_caffemodel(path), v1 | v2)


def test_caffe_blob_shape_variants(tmp_path: Path) -> None:
    path = tmp_path / "net.caffemodel"
    path.write_bytes(
        msg(1, b"net")  # shape only (packed dims), packed data
        + v2_layer("packed_dims", msg(7, msg(1, varint(2) + varint(3))) + packed_floats([*range(6)]))
        # unpacked dims, unpacked data, data in two runs split by another field
        + v2_layer(
            "unpacked",
            msg(7, uint(1, 1) + uint(1, 3))
            + fixed32(5, 1.5)
            + fixed32(5, 2.5)
            + uint(9, 7)
            + fixed32(5, 3.5),
        )
        # doubles only, in one packed and one unpacked chunk
        + v2_layer(
            "doubles",
            msg(7, msg(1, varint(3))) + msg(8, np.array([1.0, 2.0]).tobytes()) + fixed64(8, 3.0),
        )
        # no shape at all: 1-D; legacy dims partly given: missing ones are 1
        + v2_layer("flat", packed_floats([4.0, 5.0]))
        + v2_layer("legacy", uint(2, 2) + uint(4, 2) + packed_floats([1, 2, 3, 4]))
        # an empty shape is a scalar
        + v2_layer("scalar", msg(7, b"") + packed_floats([9.0]))
    )

    got = caffe.read_caffemodel(path)

    np.testing.assert_array_equal(got["packed_dims"][0], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(got["unpacked"][0], [[1.5, 2.5, 3.5]])
    np.testing.assert_array_equal(got["doubles"][0], [1.0, 2.0, 3.0])
    assert got["doubles"][0].dtype == np.float32
    np.testing.assert_array_equal(got["flat"][0], [4.0, 5.0])
    assert got["legacy"][0].shape == (1, 2, 1, 2)
    assert got["scalar"][0].shape == ()


def test_caffe_unknown_fields_of_every_wire_type_are_skipped(tmp_path: Path) -> None:
    unknown = uint(40, 300) + fixed64(41, 1.0) + msg(42, b"\xff\x00junk") + fixed32(43, 2.0)
    shape = msg(7, unknown + msg(1, varint(2)))
    blob = unknown + shape + msg(6, b"\x00" * 8) + packed_floats([1, 2])  # 6: diff, ignored
    v1_layer = msg(2, unknown + msg(2, b"data") + msg(4, b"v1") + uint(5, 4) + msg(6, blob))
    path = tmp_path / "net.caffemodel"
    v2 = v2_layer("v2", blob, extra=unknown)
    path.write_bytes(unknown + msg(1, b"net") + v1_layer + v2 + unknown)

    got = caffe.read_caffemodel(path)

    assert list(got) == ["v1", "v2"]
    for blobs in got.values():
        np.testing.assert_array_equal(blobs[0], [1.0, 2.0])


def test_caffe_v1_layer_wrapping_v0_layer(tmp_path: Path) -> None:
    v0 = msg(1, b"conv0") + msg(50, msg(7, msg(1, varint(2))) + packed_floats([7, 8]))
    path = tmp_path / "net.caffemodel"
    path.write_bytes(msg(2, msg(1, v0)))

    got = caffe.read_caffemodel(path)

    np.testing.assert_array_equal(got["conv0"][0], [7.0, 8.0])


@pytest.mark.parametrize("packed", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("version", [1, 2])
def test_caffe_truncated_file_never_raises_anything_but_weights_error(
    tmp_path: Path, version: int, packed: bool
) -> None:
    source = tmp_path / "net.caffemodel"
    caffe.write_caffemodel(source, random_layers(), version=version, packed=packed)
    data = source.read_bytes()
    path = tmp_path / "cut.caffemodel"
    errors = 0
    for size in range(0, len(data), 7):
        path.write_bytes(data[:size])
        try:
            got = caffe.read_caffemodel(path)
        except WeightsError as e:
            assert str(path) in str(e) and "\n" not in str(e)
            errors += 1
        else:  # cut on a layer boundary: a valid file with fewer layers
            assert set(got) < set(random_layers())
    assert errors > len(data) // 7 // 2


def test_caffe_truncation_error_names_file_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "net.caffemodel"
    caffe.write_caffemodel(path, random_layers())
    data = path.read_bytes()
    path.write_bytes(data[:100])

    pattern = r"net\.caffemodel: not a valid Caffe model file \(truncated or corrupt at byte \d+\)"
    with pytest.raises(WeightsError, match=pattern):
        caffe.read_caffemodel(path)


@pytest.mark.parametrize("size", [1, 2, 10, 100, 1_000, 100_000])
@pytest.mark.parametrize("seed", range(4))
def test_caffe_random_bytes_raise_weights_error(tmp_path: Path, seed: int, size: int) -> None:
    path = tmp_path / "random.caffemodel"
    path.write_bytes(np.random.default_rng(seed).bytes(size))

    with pytest.raises(WeightsError, match="random.caffemodel"):
        caffe.read_caffemodel(path)


@pytest.mark.parametrize(
    "content",
    [
        key(1, 3) + key(1, 4),  # group wire types
        key(1, 6),  # reserved wire type
        key(0, 0) + b"\x00",  # field number 0
        b"\xff" * 11,  # unterminated varint
        msg(100, msg(1, b"\xff\xfe") + msg(7, packed_floats([1]))),  # name not UTF-8
        msg(100, msg(1, b"a") + msg(7, msg(5, b"\x00" * 6))),  # packed floats not 4-byte aligned
        key(100, 2) + varint(2**62),  # absurd length
    ],
    ids=["group", "wire6", "field0", "varint", "utf8", "unaligned", "length"],
)
def test_caffe_corrupt_encodings_raise_weights_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(content)

    with pytest.raises(WeightsError, match="not a valid Caffe model file"):
        caffe.read_caffemodel(path)


def test_caffe_empty_file_and_file_without_weights(tmp_path: Path) -> None:
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    no_blobs = tmp_path / "deploy.caffemodel"
    caffe.write_caffemodel(no_blobs, {"relu": [], "pool": []})

    for path in (empty, no_blobs):
        with pytest.raises(WeightsError, match=rf"{path.name}: no layers with weights found"):
            caffe.read_caffemodel(path)


def test_caffe_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.caffemodel"

    with pytest.raises(WeightsError) as info:
        caffe.read_caffemodel(path)

    assert str(info.value) == f"{path}: file not found"


def test_caffe_duplicate_layer_name(tmp_path: Path) -> None:
    path = tmp_path / "dup.caffemodel"
    blob = packed_floats([1.0])
    path.write_bytes(v2_layer("conv", blob) + v2_layer("conv", blob))

    with pytest.raises(WeightsError, match="'conv' appears twice"):
        caffe.read_caffemodel(path)


# --------------------------------------------------------------------------------------------
# Keras
# --------------------------------------------------------------------------------------------


def keras_layers() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(7)

    def conv(cin: int, cout: int) -> list[np.ndarray]:
        kernel = rng.standard_normal((3, 3, cin, cout), np.float32)
        return [kernel, rng.standard_normal(cout, np.float32)]

    return {
        "input_1": [],
        "block1_conv1": conv(3, 4),
        "block1_pool": [],
        "block2_conv1": conv(4, 2),
    }


@pytest.mark.parametrize("model_weights", [False, True], ids=["weights_only", "full_model"])
def test_keras_round_trip(tmp_path: Path, model_weights: bool) -> None:
    layers = keras_layers()
    path = tmp_path / "vgg.h5"
    keras.write_keras_h5(path, layers, model_weights=model_weights)

    got = keras.read_keras_h5(path)

    want = {n: ws for n, ws in layers.items() if ws}  # weightless layers are left out
    assert list(got) == list(want)
    for name, weights in want.items():
        assert len(got[name]) == 2
        for g, w in zip(got[name], weights):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


def test_keras_weight_order_follows_weight_names(tmp_path: Path) -> None:
    path = tmp_path / "bn.h5"
    values = [np.full(3, i, np.float32) for i in range(4)]
    suffixes = ("gamma:0", "beta:0", "moving_mean:0", "moving_variance:0")
    keras.write_keras_h5(path, {"bn": values}, suffixes)

    got = keras.read_keras_h5(path)["bn"]

    assert [float(w[0]) for w in got] == [0.0, 1.0, 2.0, 3.0]


def test_keras_chunked_layer_names_attribute(tmp_path: Path) -> None:
    path = tmp_path / "chunked.h5"
    layers = keras_layers()
    keras.write_keras_h5(path, layers)
    with h5py.File(path, "a") as f:  # what Keras writes when the list outgrows an object header
        names = f.attrs.pop("layer_names")
        f.attrs["layer_names0"], f.attrs["layer_names1"] = names[:2], names[2:]

    assert list(keras.read_keras_h5(path)) == ["block1_conv1", "block2_conv1"]


def test_keras_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(b"this is not HDF5" * 100)

    with pytest.raises(WeightsError, match=r"model\.h5: not an HDF5 file"):
        keras.read_keras_h5(path)


def test_keras_hdf5_without_layer_names(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))

    with pytest.raises(WeightsError, match=r"other\.h5: not a Keras weights file"):
        keras.read_keras_h5(path)


def test_keras_missing_weight_and_missing_layer(tmp_path: Path) -> None:
    path = tmp_path / "vgg.h5"
    keras.write_keras_h5(path, keras_layers())
    with h5py.File(path, "a") as f:
        del f["block2_conv1/block2_conv1/bias:0"]

    with pytest.raises(WeightsError, match=r"weight 'block2_conv1/bias:0' of layer 'block2_conv1'"):
        keras.read_keras_h5(path)

    with h5py.File(path, "a") as f:
        del f["block2_conv1"]

    with pytest.raises(WeightsError, match=r"layer 'block2_conv1' is listed but missing"):
        keras.read_keras_h5(path)


def test_keras_truncated_file(tmp_path: Path) -> None:
    source = tmp_path / "vgg.h5"
    big = {"conv": [np.ones((64, 64, 8), np.float32), np.ones(8, np.float32)]}
    keras.write_keras_h5(source, big)
    data = source.read_bytes()
    path = tmp_path / "cut.h5"

    for size in (len(data) // 4, len(data) // 2, len(data) - 100):
        path.write_bytes(data[:size])
        with pytest.raises(WeightsError, match=r"cut\.h5: ") as info:
            keras.read_keras_h5(path)
        assert "\n" not in str(info.value)


def test_keras_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.h5"

    with pytest.raises(WeightsError) as info:
        keras.read_keras_h5(path)

    assert str(info.value) == f"{path}: file not found"


# --------------------------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------------------------


def real_file(name: str) -> Path:
    if not REAL_WEIGHTS.is_dir():
        pytest.skip(REAL_SKIP_REASON)
    return REAL_WEIGHTS / name


@pytest.mark.realweights
def test_real_googlenet_caffemodel() -> None:
    path = real_file("bvlc_googlenet.caffemodel")

    layers = caffe.read_caffemodel(path)

    assert len(layers) == 58
    assert [b.shape for b in layers["conv1/7x7_s2"]] == [(64, 3, 7, 7), (1, 1, 1, 64)]
    assert [b.shape for b in layers["inception_5b/pool_proj"]] == [(128, 832, 1, 1), (1, 1, 1, 128)]
    assert [b.shape for b in layers["loss3/classifier"]] == [(1, 1, 1000, 1024), (1, 1, 1, 1000)]
    assert all(np.isfinite(b).all() for blobs in layers.values() for b in blobs)
    assert list(caffe.read_caffemodel(path, names={"loss3/classifier"})) == ["loss3/classifier"]


@pytest.mark.realweights
def test_real_vgg19_keras_h5() -> None:
    path = real_file("vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5")

    layers = keras.read_keras_h5(path)

    convs = [f"block{b}_conv{i}" for b, n in enumerate((2, 2, 4, 4, 4), 1) for i in range(1, n + 1)]
    assert list(layers) == convs
    assert [w.shape for w in layers["block1_conv1"]] == [(3, 3, 3, 64), (64,)]
    assert [w.shape for w in layers["block5_conv4"]] == [(3, 3, 512, 512), (512,)]
