"""The model ports against a float64 NumPy reference (tests/npref.py) and Caffe's semantics.

* Caffe ops (pooling, LRN) and VGG's 2x2 pooling vs the reference, on odd sizes.
* Hand-computed Caffe values (ceil-mode clipping, the average-pool divisor, LRN windows).
* Layer geometry: ``output_size`` / ``min_size`` vs the traced modules; name and size errors.
* Whole networks with random weights, fed through real weight files (Keras .h5, V1 and V2
  .caffemodel), against the reference: every named activation.
* ``features`` does not recompile for a second call of the same shape.
* Real pretrained weights from ``../shared/weights`` (skipped when absent).
"""

from __future__ import annotations

import functools
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

import npref
from weightfiles import REAL_SKIP_REASON, REAL_WEIGHTS

import jaxdream
from jaxdream.nets import network
from jaxdream.errors import LayerError, SettingsError
from jaxdream.nets import MODELS, get_spec
from jaxdream.nets.common import (
    caffe_avg_pool,
    caffe_max_pool,
    caffe_pool_size,
    lrn_across_channels,
    pool2x2,
)
from jaxdream.weights.caffe import write_caffemodel
from jaxdream.weights.keras import write_keras_h5

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MEDIA = SHARED / "media"
MEDIA_SKIP_REASON = "../shared/media not present (sample images are only in the dev/CI checkout)"

#: Relative tolerance for float32 JAX vs float64 NumPy: max |got - want| / max |want|.
RTOL = 1e-4

GOOGLENET = get_spec("googlenet")
VGG19 = get_spec("vgg19")
# The whole-network tests ask features() for every layer at 224x224 (GoogLeNet) and 64x64
# (VGG-19, max pooling), with random and with real weights: one compilation each.


def rel_err(got, want) -> float:
    """max |got - want| / max |want| (want is the float64 reference)."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def assert_activations_close(got: dict, want: dict, names, tol: float = RTOL) -> None:
    """Every named activation has the reference's shape and is within ``tol`` relative error."""
    bad = []
    for name in names:
        g = np.asarray(got[name])
        w = np.asarray(want[name])
        if g.shape != w.shape:
            bad.append(f"{name}: shape {g.shape} != {w.shape}")
            continue
        err = rel_err(g, w)
        if not err <= tol:
            bad.append(f"{name}: relative error {err:.2e}")
    assert not bad, "; ".join(bad)


# --------------------------------------------------------------------------------------------
# Caffe ops vs the reference
# --------------------------------------------------------------------------------------------

#: (height, width, kernel, stride, pad): odd and even sizes, GoogLeNet's geometries (3/2/0,
#: 3/1/1, 7/1/0), and cases where Caffe drops the last ceil-mode window (5/2/2/1, 13/4/3/2).
POOL_CASES = [
    (7, 8, 3, 2, 0),
    (13, 14, 3, 2, 0),
    (14, 7, 3, 2, 1),
    (13, 15, 3, 1, 1),
    (8, 13, 7, 1, 0),
    (5, 8, 2, 2, 1),
    (13, 14, 4, 3, 2),
    (2, 3, 3, 2, 0),
    (15, 8, 5, 3, 2),
]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("h,w,kernel,stride,pad", POOL_CASES)
def test_caffe_pool_matches_reference(mode, h, w, kernel, stride, pad):
    """caffe_max_pool / caffe_avg_pool equal Caffe's Forward_cpu loop (shape and values)."""
    rng = np.random.default_rng(h * 100 + w)
    x = rng.standard_normal((2, h, w, 3)).astype(np.float32) - 2.0  # mostly negative: pad must not win
    op = caffe_max_pool if mode == "max" else caffe_avg_pool
    got = np.asarray(op(jnp.asarray(x), kernel, stride, pad))
    want = npref.caffe_pool(x, "max" if mode == "max" else "ave", kernel, stride, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("h,w,kernel,stride,pad", POOL_CASES)
def test_caffe_max_pool_gradient_matches_caffe_backward(h, w, kernel, stride, pad):
    """The custom backward of caffe_max_pool routes each cotangent to its window's maximum
    (no ties in random data), as Caffe's Backward_cpu does, padding and clipped windows included."""
    rng = np.random.default_rng(h * 100 + w + kernel)
    x = rng.standard_normal((2, h, w, 3)).astype(np.float32) - 2.0
    ct = rng.standard_normal(npref.caffe_max_pool(x, kernel, stride, pad).shape).astype(np.float32)
    got = jax.grad(lambda v: jnp.vdot(caffe_max_pool(v, kernel, stride, pad), jnp.asarray(ct)))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), npref.caffe_max_pool_grad(x, ct, kernel, stride, pad),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_max_pool_gradients_on_exact_ties():
    """Ties: caffe_max_pool gives the cotangent to the first maximum in row-major order, as
    Caffe's Backward_cpu does (flat windows, overlapping windows, ties in a later row);
    pool2x2 shares it equally (1/2 each for two equal maxima), as autodiff does."""
    cases = [np.ones((1, 3, 3, 1), np.float32), np.ones((1, 5, 6, 2), np.float32),
             np.array([[0, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32)[None, :, :, None]]
    for x in cases:
        for kernel, stride, pad in [(3, 2, 0), (3, 1, 1), (2, 2, 0)]:
            ct = np.arange(1, np.prod(npref.caffe_max_pool(x, kernel, stride, pad).shape) + 1,
                           dtype=np.float32).reshape(npref.caffe_max_pool(x, kernel, stride, pad).shape)
            got = jax.grad(lambda v: jnp.vdot(caffe_max_pool(v, kernel, stride, pad), jnp.asarray(ct)))(
                jnp.asarray(x))
            np.testing.assert_array_equal(np.asarray(got),
                                          npref.caffe_max_pool_grad(x, ct, kernel, stride, pad))
    g = jax.grad(lambda v: caffe_max_pool(v, 3, 2).sum())(jnp.ones((1, 3, 3, 1)))
    np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], [[1, 0, 0], [0, 0, 0], [0, 0, 0]])
    x = jnp.asarray(np.array([[1.0, 3.0], [3.0, 2.0]], np.float32))[None, :, :, None]
    g = jax.grad(lambda v: pool2x2(v, "max").sum())(x)
    np.testing.assert_array_equal(np.asarray(g)[0, :, :, 0], [[0.0, 0.5], [0.5, 0.0]])


@pytest.mark.parametrize("h,w", [(6, 8), (7, 9)])
def test_pool2x2_max_gradient_is_autodiffs_bit_for_bit(h, w):
    """pool2x2's custom backward gives the bits autodiff gives a reshape-and-max (ties
    included: the post-ReLU zeros of VGG tie often), odd sizes cropped as in the forward."""
    rng = np.random.default_rng(h * w)
    x = np.maximum(rng.standard_normal((2, h, w, 5)), 0).astype(np.float32)  # many zero ties
    ct = jnp.asarray(rng.standard_normal((2, h // 2, w // 2, 5)).astype(np.float32))

    def reshape_max(v):
        v = v[:, : h - h % 2, : w - w % 2, :].reshape(2, h // 2, 2, w // 2, 2, 5)
        return v.max(axis=(2, 4))
    want = jax.grad(lambda v: jnp.vdot(reshape_max(v), ct))(jnp.asarray(x))
    got = jax.grad(lambda v: jnp.vdot(pool2x2(v, "max"), ct))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert np.asarray(want)[:, h - h % 2:].sum() == 0 and np.count_nonzero(np.asarray(want)) > 0


def test_caffe_pool_size_matches_reference():
    """caffe_pool_size equals Caffe's Reshape formula (ceil, minus a window starting in the pad)."""
    for size in range(1, 40):
        for kernel in (1, 2, 3, 4, 5, 7):
            for stride in range(1, kernel + 1):
                for pad in range(0, kernel):
                    assert caffe_pool_size(size, kernel, stride, pad) == \
                        npref.caffe_pooled_size(size, kernel, stride, pad), (size, kernel, stride, pad)


@pytest.mark.parametrize("channels", [3, 7, 13])
def test_lrn_matches_reference(channels):
    """lrn_across_channels equals Caffe LRN ACROSS_CHANNELS, GoogLeNet's and other parameters."""
    rng = np.random.default_rng(channels)
    # large positive and negative values so that the normaliser is far from 1
    x = (rng.standard_normal((2, 5, 3, channels)) * 100).astype(np.float32)
    got = np.asarray(lrn_across_channels(jnp.asarray(x)))
    want = npref.lrn(x, 5, 1e-4, 0.75, 1.0)
    assert rel_err(got, want) < 1e-5
    assert np.abs(want / np.where(x == 0, 1, x)).min() < 0.7  # the test is not trivial
    got = np.asarray(lrn_across_channels(jnp.asarray(x), local_size=3, alpha=2e-3, beta=0.5, k=2.0))
    assert rel_err(got, npref.lrn(x, 3, 2e-3, 0.5, 2.0)) < 1e-5


@pytest.mark.parametrize("channels,local_size,alpha,beta,k", [
    (7, 5, 1e-4, 0.75, 1.0), (64, 5, 1e-4, 0.75, 1.0), (3, 5, 2e-3, 0.75, 1.0),
    (9, 3, 2e-3, 0.5, 2.0), (8, 4, 1e-2, 0.75, 1.0)])
def test_lrn_gradient_matches_caffe_backward(channels, local_size, alpha, beta, k):
    """The hand-written LRN backward equals Caffe's CrossChannelBackward, odd and even windows."""
    rng = np.random.default_rng(channels + local_size)
    x = (rng.standard_normal((2, 4, 3, channels)) * 100).astype(np.float32)
    ct = rng.standard_normal(x.shape).astype(np.float32)
    _, vjp = jax.vjp(lambda v: lrn_across_channels(v, local_size, alpha, beta, k), jnp.asarray(x))
    got = np.asarray(vjp(jnp.asarray(ct))[0])
    want = npref.lrn_backward(x, ct, local_size, alpha, beta, k)
    assert rel_err(got, want) < 1e-5
    # the normaliser's part of the gradient is not negligible
    assert rel_err(ct * npref.lrn(x, local_size, alpha, beta, k) / np.where(x == 0, 1, x), want) > 1e-2
    forward = np.asarray(lrn_across_channels(jnp.asarray(x), local_size, alpha, beta, k))
    assert rel_err(forward, npref.lrn(x, local_size, alpha, beta, k)) < 1e-5


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("h,w", [(7, 9), (14, 13), (1, 5)])
def test_pool2x2_matches_reference(mode, h, w):
    """VGG's 2x2 stride-2 pooling floors odd sizes (drops the last row/column)."""
    x = np.random.default_rng(h * w).standard_normal((2, h, w, 4)).astype(np.float32)
    got = np.asarray(pool2x2(jnp.asarray(x), mode))
    want = npref.pool2x2(x, mode)
    assert got.shape == want.shape == (2, h // 2, w // 2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_reference_conv_matches_direct_sum():
    """Sanity of the reference itself: npref.conv2d equals a literal 6-loop convolution."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 5, 2))
    k = rng.standard_normal((3, 3, 2, 4))
    b = rng.standard_normal(4)
    stride, pad = 2, 1
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (6 + 2 - 3) // 2 + 1, (5 + 2 - 3) // 2 + 1
    want = np.zeros((1, ho, wo, 4))
    for i in range(ho):
        for j in range(wo):
            for o in range(4):
                want[0, i, j, o] = b[o] + sum(
                    xp[0, i * stride + di, j * stride + dj, c] * k[di, dj, c, o]
                    for di in range(3) for dj in range(3) for c in range(2))
    np.testing.assert_allclose(npref.conv2d(x, k, b, stride, pad), want, rtol=1e-12)


@pytest.mark.parametrize("size", [13, 14, 15])
def test_flax_conv_padding_matches_caffe(size):
    """nn.Conv with explicit (3, 3) padding and stride 2 is Caffe's 7x7 s2 p3 (GoogLeNet conv1)."""
    import flax.linen as nn

    rng = np.random.default_rng(size)
    x = rng.standard_normal((1, size, size + 2, 3)).astype(np.float32)
    k = rng.standard_normal((7, 7, 3, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    conv = nn.Conv(5, (7, 7), strides=(2, 2), padding=((3, 3), (3, 3)))
    got = conv.apply({"params": {"kernel": k, "bias": b}}, jnp.asarray(x))
    assert rel_err(got, npref.conv2d(x, k, b, 2, 3)) < 1e-5


# --------------------------------------------------------------------------------------------
# Caffe semantics, hand-computed
# --------------------------------------------------------------------------------------------


def _grid(values) -> jnp.ndarray:
    """A 2-D list -> a (1, H, W, 1) array."""
    return jnp.asarray(np.asarray(values, np.float32)[None, :, :, None])


def test_max_pool_ceil_mode_clips_last_window():
    """4x4 max-pooled 3x3 s2: ceil mode gives 2x2; the last window covers only rows/cols 2..3."""
    x = _grid(np.arange(16).reshape(4, 4))
    out = np.asarray(caffe_max_pool(x, 3, 2))[0, :, :, 0]
    np.testing.assert_array_equal(out, [[10, 11], [14, 15]])


def test_avg_pool_clipped_window_divides_by_its_real_size():
    """4x4 avg-pooled 3x3 s2 (no pad): a window clipped to 2x3 divides by 6, 2x2 by 4, not 9."""
    x = _grid(np.arange(16).reshape(4, 4))
    out = np.asarray(caffe_avg_pool(x, 3, 2))[0, :, :, 0]
    np.testing.assert_allclose(out, [[45 / 9, 39 / 6], [66 / 6, 50 / 4]], rtol=1e-6)


def test_avg_pool_divisor_counts_padding_but_not_overhang():
    """Ones 4x4, avg 3x3 s2 p1 -> 3x3. Window starts -1, 1, 3 see 2, 3, 1 real rows; divisors
    3 (padding counted), 3, and 2 (window [3, 6) is cut at H + pad = 5)."""
    out = np.asarray(caffe_avg_pool(_grid(np.ones((4, 4))), 3, 2, 1))[0, :, :, 0]
    r = np.array([2 / 3, 3 / 3, 1 / 2])
    np.testing.assert_allclose(out, np.outer(r, r), rtol=1e-6)


def test_max_pool_padding_never_wins():
    """Max pooling with pad 1 on an all-negative input stays negative at the borders."""
    x = _grid(-np.arange(1, 26, dtype=np.float32).reshape(5, 5))
    out = np.asarray(caffe_max_pool(x, 3, 1, 1))[0, :, :, 0]
    assert out.shape == (5, 5)
    assert out[0, 0] == -1 and out[4, 4] == -19 and out.max() < 0


def test_pool_size_drops_window_starting_in_padding():
    """Caffe drops a last ceil-mode window that would start in the padding."""
    assert caffe_pool_size(5, 2, 2, 1) == 3  # ceil((5+2-2)/2)+1 = 4, window 3 starts at 6-1 = 5
    assert caffe_pool_size(13, 4, 3, 2) == 5  # 6 windows, the last starts at 15-2 = 13
    assert caffe_pool_size(112, 3, 2, 0) == 56  # GoogLeNet pool1 at 224 px
    assert caffe_pool_size(14, 3, 2, 0) == 7  # pool4 at 224 px: ceil, not floor (6)
    assert caffe_pool_size(7, 7, 1, 0) == 1


def test_lrn_window_hand_computed():
    """LRN window c-2..c+2 is cut at the channel edges: ones over 7 channels count 3,4,5,5,5,4,3."""
    x = jnp.ones((1, 1, 1, 7), jnp.float32)
    out = np.asarray(lrn_across_channels(x, local_size=5, alpha=5.0, beta=1.0, k=1.0)).ravel()
    np.testing.assert_allclose(out, 1 / (1 + np.array([3, 4, 5, 5, 5, 4, 3])), rtol=1e-6)
    # GoogLeNet's parameters: alpha 1e-4 is divided by n = 5
    x = jnp.full((1, 1, 1, 7), 10.0, jnp.float32)
    out = np.asarray(lrn_across_channels(x)).ravel()
    want = 10 * (1 + 1e-4 / 5 * 100 * np.array([3, 4, 5, 5, 5, 4, 3])) ** -0.75
    np.testing.assert_allclose(out, want, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Layer geometry and name/size errors
# --------------------------------------------------------------------------------------------


def _vgg_output_size(size: int, layer: str) -> int:
    """VGG: each 2x2 pool floors; a layer sits after the pools of the blocks before it."""
    block = int(layer[4])
    pools = block if layer.startswith("pool") else block - 1
    for _ in range(pools):
        size //= 2
    return size


REFERENCE_SIZE = {"googlenet": npref.googlenet_output_size, "vgg19": _vgg_output_size}


@pytest.mark.parametrize("model", ["googlenet", "vgg19"])
def test_output_size_matches_prototxt_geometry(model):
    """output_size agrees with sizes derived independently from the layer definitions."""
    spec = get_spec(model)
    ref = REFERENCE_SIZE[model]
    for size in range(1, 300):
        for layer in spec.layers:
            assert spec.output_size(size, layer) == ref(size, layer), (size, layer)


@functools.lru_cache(maxsize=None)
def _abstract_params(model: str):
    spec = get_spec(model)
    module = spec.make(spec.layers[-1:], spec.poolings[0])
    return jax.eval_shape(module.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))


def _traced_shapes(model: str, height: int, width: int, layers) -> dict:
    spec = get_spec(model)
    module = spec.make(tuple(layers), spec.poolings[0])
    x = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    return jax.eval_shape(module.apply, _abstract_params(model), x)


#: Heights of the traced inputs (h x (h + 1), two lengths per trace): all of 15..40 and 223..230.
SWEEP_HEIGHTS = (*range(15, 41, 2), *range(223, 231, 2))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["googlenet", "vgg19"])
def test_output_size_matches_traced_module(model):
    """For every input length in 15..40 and 223..230 px, every non-empty layer's traced shape
    is (1, output_size(h), output_size(w), C)."""
    spec = get_spec(model)
    for height in SWEEP_HEIGHTS:
        width = height + 1
        layers = [l for l in spec.layers
                  if min(spec.output_size(height, l), spec.output_size(width, l)) >= 1]
        shapes = _traced_shapes(model, height, width, layers)
        assert set(shapes) == set(layers)
        for layer in layers:
            want = (1, spec.output_size(height, layer), spec.output_size(width, layer))
            assert tuple(shapes[layer].shape[:3]) == want, (height, layer)


@pytest.mark.parametrize("model", ["googlenet", "vgg19"])
def test_min_size_is_smallest_non_empty(model):
    """min_size(layer) is the smallest input with a non-empty output; one less is empty; the
    traced module at a square min_size input gives a non-empty activation (GoogLeNet's 15, 31
    and 223 are already traced as heights in test_output_size_matches_traced_module)."""
    spec = get_spec(model)
    by_size: dict[int, list[str]] = {}
    for layer in spec.layers:
        m = spec.min_size([layer])
        assert spec.output_size(m, layer) >= 1
        assert m == 1 or spec.output_size(m - 1, layer) == 0, layer
        assert m == next(s for s in range(1, 1000) if REFERENCE_SIZE[model](s, layer) >= 1)
        by_size.setdefault(m, []).append(layer)
    assert len(by_size) >= 5  # one per pooling stage
    for m, layers in by_size.items():
        if m in SWEEP_HEIGHTS:
            continue
        shapes = _traced_shapes(model, m, m, layers)
        for layer in layers:
            assert min(shapes[layer].shape[1:3]) >= 1, (m, layer)
    # several layers: the deepest decides
    assert spec.min_size([spec.layers[0], spec.layers[-1]]) == spec.min_size(spec.layers[-1:])


def test_min_sizes_known_values():
    """Spot values: GoogLeNet needs 223 px for pool5/prob, 31 for pool4; VGG 32 for pool5."""
    assert GOOGLENET.min_size(["prob"]) == 223
    assert GOOGLENET.min_size(["pool4/3x3_s2"]) == 31
    assert GOOGLENET.min_size(["inception_4c/output"]) == 15
    assert VGG19.min_size(["pool5"]) == 32
    assert VGG19.min_size(["relu5_1"]) == 16
    assert VGG19.min_size(["conv1_1"]) == 1


@pytest.mark.parametrize("model,layer", [("googlenet", "inception_4c/output"),
                                         ("googlenet", "prob"), ("vgg19", "relu4_2"),
                                         ("vgg19", "pool5")])
def test_check_size_names_the_minimum(model, layer):
    """check_size raises SettingsError naming the minimum; features() raises before loading weights."""
    spec = get_spec(model)
    m = spec.min_size([layer])
    spec.check_size(m, m, [layer])
    spec.check_size(m, m + 50, [layer])
    for h, w in [(m - 1, m), (m, m - 1), (m - 1, m + 100)]:
        with pytest.raises(SettingsError, match=f"minimum is {m} px"):
            spec.check_size(h, w, [layer])
    with pytest.raises(SettingsError, match=f"minimum is {m} px"):
        jaxdream.features(np.zeros((m - 1, m, 3), np.float32), layer, model=model,
                          weights="/nonexistent/weights")


def test_check_layers_suggests_close_match():
    """A typo in a layer name raises LayerError suggesting the right name."""
    with pytest.raises(LayerError) as info:
        GOOGLENET.check_layers(["inception_4c/outptu"])
    assert "inception_4c/outptu" in str(info.value)
    assert "inception_4c/output" in str(info.value)
    with pytest.raises(LayerError, match="relu4_2"):
        VGG19.check_layers(["relu4_1", "reluu4_2"])
    with pytest.raises(LayerError):
        GOOGLENET.check_layers([])
    assert GOOGLENET.check_layers(["prob", "conv1/7x7_s2"]) == ("prob", "conv1/7x7_s2")
    with pytest.raises(LayerError, match="inception_4c/output"):
        jaxdream.features(np.zeros((64, 64, 3)), "inception_4c/outptu", weights="/nonexistent")


def test_unknown_model_lists_known_ones():
    """An unknown model name raises LayerError listing the known models."""
    with pytest.raises(LayerError) as info:
        get_spec("resnet50")
    for name in MODELS:
        assert name in str(info.value)
    with pytest.raises(LayerError, match="vgg19"):
        get_spec("vgg")
    assert get_spec("GoogLeNet") is GOOGLENET
    with pytest.raises(LayerError, match="googlenet"):
        jaxdream.load_network("alexnet")


def test_pooling_choice_is_checked():
    """GoogLeNet supports only max pooling; asking for avg raises SettingsError."""
    with pytest.raises(SettingsError, match="avg"):
        jaxdream.load_network("googlenet", weights="/nonexistent", pooling="avg")


# --------------------------------------------------------------------------------------------
# Whole networks, random weights through real weight files
# --------------------------------------------------------------------------------------------


def random_flat(model: str, seed: int, bias_scale: float = 1.0) -> dict[str, np.ndarray]:
    """He-uniform float32 parameters with the model's flat names and shapes (activations stay
    about the input's size), biases uniform in +-bias_scale (large enough to matter)."""
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in network.param_shapes(model).items():
        scale = np.sqrt(6.0 / np.prod(shape[:-1])) if name.endswith("/kernel") else bias_scale
        flat[name] = (rng.random(shape, dtype=np.float32) * 2 - 1) * np.float32(scale)
    return flat


def to_caffe_blobs(flat: dict[str, np.ndarray], legacy: bool) -> dict[str, list[np.ndarray]]:
    """Flat HWIO params -> Caffe layer blobs: conv (out, in, kh, kw), InnerProduct (out, in),
    biases (out,); ``legacy`` stores InnerProduct as (1, 1, out, in) and biases as
    (1, 1, 1, out), like the BVLC file. Auxiliary heads are added as decoys to be skipped."""
    rng = np.random.default_rng(7)
    layers: dict[str, list[np.ndarray]] = {
        "loss1/conv": [rng.standard_normal((8, 4, 1, 1)).astype(np.float32), np.zeros(8, np.float32)]}
    for name in dict.fromkeys(n.rsplit("/", 1)[0] for n in flat):
        kernel, bias = flat[f"{name}/kernel"], flat[f"{name}/bias"]
        if kernel.ndim == 4:
            weight = kernel.transpose(3, 2, 0, 1)
        else:
            weight = kernel.T
            if legacy:
                weight = weight.reshape(1, 1, *weight.shape)
        layers[name] = [np.ascontiguousarray(weight), bias.reshape(1, 1, 1, -1) if legacy else bias]
    layers["loss2/classifier"] = [rng.standard_normal((10, 16)).astype(np.float32),
                                  np.zeros(10, np.float32)]
    return layers


@pytest.fixture(scope="module")
def vgg_random(tmp_path_factory):
    """Random VGG-19 parameters and a Keras .h5 of them (blockB_convI layers, pools weightless)."""
    flat = random_flat("vgg19", seed=2)
    layers: dict[str, list[np.ndarray]] = {"input_1": []}
    for b, n in enumerate(npref.VGG_BLOCKS, start=1):
        for i in range(1, n + 1):
            layers[f"block{b}_conv{i}"] = [flat[f"conv{b}_{i}/kernel"], flat[f"conv{b}_{i}/bias"]]
        layers[f"block{b}_pool"] = []
    path = tmp_path_factory.mktemp("vgg") / "vgg19_random.h5"
    write_keras_h5(path, layers)
    return flat, path


def random_image(height: int, width: int, seed: int) -> np.ndarray:
    """RGB 0..255 float32 noise with some structure (a gradient), as features() expects."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    return np.clip(0.5 * rng.uniform(0, 255, (height, width, 3)) + 0.5 * ramp, 0, 255).astype(np.float32)


# max at 64x64 shares its compilation with the real-weights test; avg runs on a non-square
# image whose sizes go odd (46 -> 23 -> 11 -> 5) so the floor of the 2x2 pools matters
@pytest.mark.parametrize("pooling,height,width", [("max", 64, 64), ("avg", 40, 46)])
def test_vgg19_random_weights_match_reference(vgg_random, pooling, height, width):
    """VGG-19 from a Keras .h5: every conv/relu/pool activation within 1e-4 of the reference."""
    flat, path = vgg_random
    image = random_image(height, width, seed=3)
    got = jaxdream.features(image, VGG19.layers, model="vgg19", weights=path, pooling=pooling)
    want = npref.vgg19(npref.caffe_preprocess(image, npref.VGG_MEAN_BGR), flat, pooling)
    want = {name: value[0] for name, value in want.items()}
    assert got["pool5"].shape == (height // 32, width // 32, 512)
    assert_activations_close(got, want, VGG19.layers)


def test_vgg19_h5_conversion_is_exact(vgg_random):
    """The loaded VGG-19 parameters are the .h5 arrays, unchanged (HWIO kernels, 1-D biases)."""
    flat, path = vgg_random
    loaded = flatten_dict(jaxdream.load_network("vgg19", weights=path).params["params"], sep="/")
    assert set(loaded) == set(flat)
    for name, value in flat.items():
        np.testing.assert_array_equal(np.asarray(loaded[name]), value, err_msg=name)


@pytest.fixture(scope="module")
def googlenet_random():
    """Random GoogLeNet parameters (flat, HWIO), a 224x224 image, and the reference's blobs.

    The classifier is scaled so that the logits spread over a few units (softmax not one-hot).
    """
    flat = random_flat("googlenet", seed=1)
    flat["loss3/classifier/kernel"] *= np.float32(0.04)
    flat["loss3/classifier/bias"] *= np.float32(0.5)
    image = random_image(224, 224, seed=4)
    want = npref.googlenet(npref.caffe_preprocess(image, npref.GOOGLENET_MEAN_BGR), flat)
    return flat, image, {name: value[0] for name, value in want.items()}


CAFFE_VARIANTS = {"v1": dict(version=1, legacy=False),  # the V1 writer pads blobs to 4-D itself
                  "v2": dict(version=2, legacy=False),
                  "v2-legacy-shapes": dict(version=2, legacy=True)}


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(CAFFE_VARIANTS))
def test_googlenet_random_weights_match_reference(googlenet_random, tmp_path, variant):
    """GoogLeNet from a .caffemodel (V1 / V2 / V2 with legacy blob shapes, decoy auxiliary
    heads): the converted parameters equal the originals, and every blob of a 224x224 image,
    pre_relu values, LRN, pools, classifier and softmax included, is within 1e-4 of the
    reference (Caffe InnerProduct on the (1000, 1024) blob at the 1x1 pool5)."""
    flat, image, want = googlenet_random
    opts = CAFFE_VARIANTS[variant]
    path = tmp_path / f"googlenet_{variant}.caffemodel"
    write_caffemodel(path, to_caffe_blobs(flat, opts["legacy"]), version=opts["version"])

    loaded = flatten_dict(jaxdream.load_network("googlenet", weights=path).params["params"], sep="/")
    assert set(loaded) == set(flat)
    for name, value in flat.items():
        np.testing.assert_array_equal(np.asarray(loaded[name]), value, err_msg=name)

    got = jaxdream.features(image, GOOGLENET.layers, model="googlenet", weights=path)
    assert got["conv1/7x7_s2"].shape == (112, 112, 64)
    assert got["pool1/3x3_s2"].shape == (56, 56, 64)
    assert got["pool2/3x3_s2"].shape == (28, 28, 192)
    assert got["pool3/3x3_s2"].shape == (14, 14, 480)
    assert got["pool4/3x3_s2"].shape == (7, 7, 832)
    assert got["pool5/7x7_s1"].shape == (1, 1, 1024)
    assert got["prob"].shape == (1, 1, 1000)
    assert 0.01 < want["prob"].max() < 0.9  # an informative softmax, not one-hot
    assert_activations_close(got, want, GOOGLENET.layers)


# --------------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------------


def test_features_does_not_retrace(vgg_random):
    """A second features() call with the same shape and layers reuses the compiled function,
    for a different image and for uint8 input; a new shape compiles once more."""
    _, path = vgg_random
    layers = ("relu1_2", "pool2")
    cache = network._features_jit._cache_size
    a = random_image(21, 23, seed=6)
    b = random_image(21, 23, seed=7)
    first = jaxdream.features(a, layers, model="vgg19", weights=path)
    n = cache()
    again = jaxdream.features(a, layers, model="vgg19", weights=path)
    other = jaxdream.features(b, layers, model="vgg19", weights=path)
    as_uint8 = jaxdream.features(np.round(a).astype(np.uint8), layers, model="vgg19", weights=path)
    assert cache() == n
    np.testing.assert_array_equal(first["pool2"], again["pool2"])
    assert not np.allclose(first["pool2"], other["pool2"])
    assert rel_err(as_uint8["pool2"], first["pool2"]) < 0.05
    jaxdream.features(random_image(22, 23, seed=6), layers, model="vgg19", weights=path)
    assert cache() == n + 1


# --------------------------------------------------------------------------------------------
# Real pretrained weights
# --------------------------------------------------------------------------------------------

REAL_GOOGLENET = REAL_WEIGHTS / "bvlc_googlenet.caffemodel"
REAL_VGG19 = REAL_WEIGHTS / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
needs_real_googlenet = pytest.mark.skipif(not REAL_GOOGLENET.is_file(), reason=REAL_SKIP_REASON)
needs_real_vgg19 = pytest.mark.skipif(not REAL_VGG19.is_file(), reason=REAL_SKIP_REASON)
needs_media = pytest.mark.skipif(not MEDIA.is_dir(), reason=MEDIA_SKIP_REASON)


@pytest.fixture
def real_env(tmp_path, monkeypatch):
    """Weights lookup pointed at ../shared/weights, the cache at a fresh temporary folder
    (the tests pass the real files as explicit weights=, so nothing depends on the lookup)."""
    monkeypatch.setenv("JAXDREAM_WEIGHTS_DIR", str(REAL_WEIGHTS))
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")
    return REAL_WEIGHTS


@pytest.mark.realweights
@needs_real_googlenet
@needs_media
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("image,top1,low,high", [("chelsea.png", 285, 0.55, 0.7),
                                                 ("coffee.png", 967, 0.9, 1.0)])
def test_googlenet_real_weights_classify(real_env, image, top1, low, high):
    """BVLC GoogLeNet on a 224x224 bilinear resize: chelsea is an Egyptian cat (285, p about
    0.62), coffee an espresso (967, p > 0.9)."""
    from jaxdream import media

    img = media.resize(media.load_image(MEDIA / image), (224, 224), "bilinear")
    feats = jaxdream.features(img, GOOGLENET.layers, model="googlenet",
                              weights=REAL_GOOGLENET)
    prob = feats["prob"].reshape(-1)
    assert abs(prob.sum() - 1) < 1e-4
    assert int(prob.argmax()) == top1
    assert low <= prob[top1] <= high
    if image == "chelsea.png":
        assert set(np.argsort(prob)[-3:].tolist()) == {285, 282, 281}  # Egyptian, tiger, tabby cat


def _read_real_vgg(path: Path) -> dict[str, np.ndarray]:
    """The real Keras file read with h5py directly (not jaxdream's reader)."""
    flat = {}
    with h5py.File(path, "r") as f:
        for b, n in enumerate(npref.VGG_BLOCKS, start=1):
            for i in range(1, n + 1):
                layer = f"block{b}_conv{i}"
                flat[f"conv{b}_{i}/kernel"] = f[layer][layer]["kernel:0"][()]
                flat[f"conv{b}_{i}/bias"] = f[layer][layer]["bias:0"][()]
    return flat


@pytest.mark.realweights
@needs_real_vgg19
@needs_media
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_vgg19_real_weights_match_reference(real_env):
    """Real VGG-19 on astronaut.png at 64 px: every layer (all relus up to relu5_1 and beyond)
    within 1e-4 relative of the reference fed with the .h5 arrays read by h5py."""
    from jaxdream import media

    path = REAL_VGG19
    img = media.load_image(MEDIA / "astronaut.png", size=64)
    assert img.shape == (64, 64, 3)
    got = jaxdream.features(img, VGG19.layers, model="vgg19", weights=path)
    want = npref.vgg19(npref.caffe_preprocess(img, npref.VGG_MEAN_BGR), _read_real_vgg(path))
    want = {name: value[0] for name, value in want.items()}
    assert got["relu5_1"].shape == (4, 4, 512)
    relus = [l for l in VGG19.layers[: VGG19.layers.index("relu5_1") + 1] if l.startswith("relu")]
    assert len(relus) == 13
    assert_activations_close(got, want, relus)
    assert_activations_close(got, want, VGG19.layers)
