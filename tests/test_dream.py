"""DeepDream: objectives and normalisations against NumPy, tiling, the jitted ascent, settings,
the octave driver, class dreams on the real GoogLeNet, and the ``jaxdream dream`` command.

Most tests use the synthetic full-shape GoogLeNet of ``conftest.py`` with shallow layers and
small images so that every compiled program is small; tests that share a layer, image shape
and schedule share one compiled ascent. The two class-dream tests need ``../shared/weights``
and skip without it.
"""

from __future__ import annotations

import hashlib
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cli_env, needs_script, run_cli

import jaxdream
from jaxdream import media
from jaxdream.dream import (DreamConfig, Dreamer, Objective, Schedule, _objective_value, ascend, ascent_step,
                            make_config, octave_shapes, parse_channels, parse_layers, tile_grid, tiled_gradient)
from jaxdream.objectives.dream import class_logit, lap_normalize, layer_objective, normalize_gradient
from jaxdream.dream import dream as dream_fn
from jaxdream.errors import LayerError, SettingsError
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network, unflatten

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_GOOGLENET = SHARED / "weights" / "bvlc_googlenet.caffemodel"
CHELSEA = SHARED / "media" / "chelsea.png"

#: The layer, size and schedule most tests share (so they share one compiled ascent).
LAYER = "inception_3a/output"
SIZE = 64
SETTINGS = dict(layers=LAYER, steps=2, octaves=2, jitter=4, seed=0)


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A random but smooth RGB 0..255 float32 image (blurred noise plus gradients)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    img = media.resize(small, (h, w), "bicubic")
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.7 * img + 0.3 * (255 * (xx / max(w - 1, 1)))[..., None]
    return np.clip(img, 0, 255).astype(np.float32)


@pytest.fixture(scope="module")
def net(googlenet_caffemodel) -> Network:
    """The synthetic GoogLeNet, built straight from its flat parameters."""
    return Network(get_spec("googlenet"), unflatten("googlenet", googlenet_caffemodel.flat))


@pytest.fixture(scope="module")
def dreamer(net) -> Dreamer:
    return Dreamer(make_config(**SETTINGS), network=net)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return smooth_image(SIZE, SIZE)


@pytest.fixture(scope="module")
def isolated_home(tmp_path_factory):
    """A fresh JAXDREAM_HOME (and no other jaxdream settings) for the whole module."""
    from conftest import JAXDREAM_ENV
    home = tmp_path_factory.mktemp("dream_home")
    with pytest.MonkeyPatch.context() as mp:
        for name in JAXDREAM_ENV:
            mp.delenv(name, raising=False)
        mp.setenv("JAXDREAM_HOME", str(home))
        yield home


# ----------------------------------------------------------------------------------------------
# objectives against NumPy


def value_and_grad(fn, a: np.ndarray) -> tuple[float, np.ndarray]:
    value, grad = jax.jit(jax.value_and_grad(fn))(jnp.asarray(a))
    return float(value), np.asarray(grad)


def test_l2_objective_value_and_gradient_is_the_activation():
    a = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    value, grad = value_and_grad(lambda x: layer_objective(x, "l2"), a)
    np.testing.assert_allclose(value, 0.5 * np.sum(a.astype(np.float64) ** 2), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad), a, rtol=0, atol=1e-6)


def test_l2_objective_channel_selection():
    a = np.random.default_rng(1).standard_normal((1, 3, 4, 6)).astype(np.float32)
    channels = (1, 4)
    value, grad = value_and_grad(lambda x: layer_objective(x, "l2", channels), a)
    np.testing.assert_allclose(value, 0.5 * np.sum(a[..., list(channels)].astype(np.float64) ** 2), rtol=1e-5)
    expected = np.zeros_like(a)
    expected[..., list(channels)] = a[..., list(channels)]
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-6)


def _guide_reference(a: np.ndarray, guide: np.ndarray):
    """google/deepdream objective_guide in NumPy: value and gradient (best guide row per position)."""
    n, h, w, c = a.shape
    flat = a.reshape(n, h * w, c).astype(np.float64)
    best = np.empty_like(flat)
    for b in range(n):
        for p in range(h * w):
            dots = [float(np.dot(flat[b, p], row)) for row in guide.astype(np.float64)]
            best[b, p] = guide[int(np.argmax(dots))]
    return float(np.sum(flat * best)), best.reshape(n, h, w, c)


def test_guide_objective_pushes_each_position_toward_its_best_matching_guide_feature():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    guide = rng.standard_normal((7, 5)).astype(np.float32)
    value_ref, grad_ref = _guide_reference(a, guide)
    # the positions really do pick different guide rows, so the test means something
    picked = {tuple(row) for row in grad_ref.reshape(-1, 5)}
    assert len(picked) >= 3
    value, grad = value_and_grad(lambda x: layer_objective(x, "guide", guide=jnp.asarray(guide)), a)
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    np.testing.assert_allclose(grad, grad_ref, rtol=0, atol=1e-6)


def test_guide_objective_with_channels_matches_on_the_selected_channels_only():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((1, 4, 3, 6)).astype(np.float32)
    guide = rng.standard_normal((9, 6)).astype(np.float32)
    channels = (0, 2, 5)
    value_ref, grad_sel = _guide_reference(a[..., list(channels)], guide[:, list(channels)])
    value, grad = value_and_grad(lambda x: layer_objective(x, "guide", channels, guide=jnp.asarray(guide)), a)
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    expected = np.zeros_like(a)
    expected[..., list(channels)] = grad_sel
    np.testing.assert_allclose(grad, expected, rtol=0, atol=1e-6)


def test_class_logit_is_the_classifier_on_the_global_average():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 3, 4, 10)).astype(np.float32)
    kernel, bias = rng.standard_normal((10, 6)).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    classifier = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}
    value, grad = value_and_grad(lambda x: class_logit(classifier, x, 3), a)
    pooled = a.reshape(2, 12, 10).mean(axis=1)
    np.testing.assert_allclose(value, (pooled @ kernel[:, 3] + bias[3]).sum(), rtol=1e-5)
    expected = np.broadcast_to(kernel[:, 3] / 12, a.shape)  # every position shares the pool
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_class_dream_reads_the_layer_under_the_classifier_so_small_octaves_count(net, image):
    """A class dream's smallest octave is set by inception_5b (31 px), not the 224 px the
    classifier's 7x7 pool needs: a 64 px image dreams, over 2 octaves."""
    cfg = make_config(class_index=7, steps=1, octaves=2, jitter=2)
    assert cfg.layers == (("loss3/classifier", 1.0),)  # what the record says is maximised
    d = Dreamer(cfg, network=net)
    assert d.layer_names == ("inception_5b/output",) and d.min_size == 31
    shapes = []
    out = d.run(image, progress=lambda p: shapes.append(p.shape))
    assert shapes == [(46, 46), (64, 64)] and out.shape == image.shape
    assert np.abs(out - image).max() > 0


def test_unknown_objective_kind_is_a_settings_error():
    with pytest.raises(SettingsError, match="unknown objective"):
        layer_objective(jnp.ones((1, 2, 2, 3)), "l3")


def test_objective_value_sums_weighted_layers(net):
    """Several layers: the weighted sum of each layer's 0.5 * sum(a^2)."""
    img = jnp.asarray(smooth_image(24, 20)[None])
    layers = ("conv2/3x3", "conv1/7x7_s2/pre_relu")
    obj = Objective("googlenet", layers)
    feats = jax.jit(lambda p, x: net.apply(p, net.to_model(x), layers))(net.params, img)
    expected = sum(w * 0.5 * np.sum(np.asarray(feats[n], np.float64) ** 2) for n, w in zip(layers, (1.0, 0.25)))
    value = jax.jit(lambda p, x, w: _objective_value(p, x, w, None, obj))(net.params, img, jnp.asarray([1.0, 0.25]))
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# gradient normalisation

_K = np.array([1, 4, 6, 4, 1], np.float64) / 16


def _same_padding(n: int) -> tuple[int, int]:
    """(output length, zeros before) of a SAME, stride-2, 5-tap convolution (TensorFlow's rule)."""
    out = -(-n // 2)
    return out, max((out - 1) * 2 + 5 - n, 0) // 2


def _down_axis(x: np.ndarray, axis: int) -> np.ndarray:
    x = np.moveaxis(x, axis, 0)
    n = x.shape[0]
    out, before = _same_padding(n)
    y = np.zeros((out,) + x.shape[1:])
    for i in range(out):
        for k in range(5):
            j = 2 * i + k - before
            if 0 <= j < n:
                y[i] += _K[k] * x[j]
    return np.moveaxis(y, 0, axis)


def _up_axis(y: np.ndarray, n: int, axis: int) -> np.ndarray:
    """TF conv2d_transpose along one axis: zero insertion at the SAME-padding offset, kernel * 2."""
    y = np.moveaxis(y, axis, 0)
    out, before = _same_padding(n)
    x = np.zeros((n,) + y.shape[1:])
    for i in range(out):
        for k in range(5):
            j = 2 * i + k - before
            if 0 <= j < n:
                x[j] += 2 * _K[k] * y[i]
    return np.moveaxis(x, 0, axis)


def _lapnorm_reference(g: np.ndarray, splits: int) -> np.ndarray:
    """The TF DeepDream tutorial's lap_normalize in NumPy (float64), ``splits`` pyramid splits."""
    def down(x):
        return _down_axis(_down_axis(x, 0), 1)

    def up(x, shape):
        return _up_axis(_up_axis(x, shape[0], 0), shape[1], 1)

    g = g.astype(np.float64)
    bands = []
    for _ in range(splits):
        low = down(g)
        bands.append(g - up(low, g.shape))
        g = low
    bands.append(g)
    bands = [b / max(np.sqrt(np.mean(b * b)), 1e-10) for b in bands]
    out = bands[-1]
    for band in reversed(bands[:-1]):
        out = up(out, band.shape) + band
    return out


def test_mean_normalisation_gives_unit_mean_abs():
    g = np.random.default_rng(5).standard_normal((13, 11, 3)).astype(np.float32) * 0.003 + 0.001
    out = np.asarray(normalize_gradient(jnp.asarray(g), "mean"))
    np.testing.assert_allclose(np.mean(np.abs(out)), 1.0, rtol=1e-4)
    np.testing.assert_allclose(out, g / np.mean(np.abs(g)), rtol=1e-4)


def test_std_normalisation_gives_unit_std():
    g = np.random.default_rng(6).standard_normal((13, 11, 3)).astype(np.float32) * 40 + 3
    out = np.asarray(normalize_gradient(jnp.asarray(g), "std"))
    np.testing.assert_allclose(np.std(out), 1.0, rtol=1e-4)


def test_unknown_normalisation_is_a_settings_error():
    with pytest.raises(SettingsError, match="normalisation"):
        normalize_gradient(jnp.ones((4, 4, 3)), "median")


_lap_jit = jax.jit(lap_normalize, static_argnums=1)


@pytest.mark.parametrize("shape, levels", [((21, 18, 3), 4), ((21, 18, 3), 2), ((20, 17, 3), 3), ((9, 9, 1), 4)])
def test_lap_normalize_matches_the_tf_tutorial_in_numpy(shape, levels):
    """Odd and even sizes on every level: the upsampling must be the downsampling's transpose."""
    g = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    expected = _lapnorm_reference(g, levels - 1)
    np.testing.assert_allclose(np.asarray(_lap_jit(jnp.asarray(g), levels)), expected, atol=2e-5)


def test_lap_normalize_via_normalize_gradient_unjitted():
    g = np.random.default_rng(8).standard_normal((21, 18, 3)).astype(np.float32)
    expected = _lapnorm_reference(g, 2)
    np.testing.assert_allclose(np.asarray(normalize_gradient(jnp.asarray(g), "lapnorm", 3)), expected, atol=2e-5)


def test_lap_normalize_with_one_level_is_division_by_rms():
    g = np.random.default_rng(9).standard_normal((21, 18, 3)).astype(np.float32) * 7
    out = np.asarray(_lap_jit(jnp.asarray(g), 1))
    np.testing.assert_allclose(out, g / np.sqrt(np.mean(g.astype(np.float64) ** 2)), rtol=1e-5, atol=1e-6)


def test_lap_normalize_is_scale_invariant_and_boosts_low_frequencies():
    rng = np.random.default_rng(10)
    g = rng.standard_normal((32, 32, 3)).astype(np.float32)
    a = np.asarray(_lap_jit(jnp.asarray(g), 4))
    b = np.asarray(_lap_jit(jnp.asarray(g * 1e3), 4))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # white noise is mostly high frequency; after normalisation the coarse band carries as much
    # energy as the finest one, so the 8x8 block means grow relative to the pixels
    def coarse_share(x):
        blocks = x.reshape(4, 8, 4, 8, 3).mean(axis=(1, 3))
        return np.sqrt(np.mean(blocks ** 2)) / np.sqrt(np.mean(x ** 2))
    assert coarse_share(a) > 2 * coarse_share(g)


# ----------------------------------------------------------------------------------------------
# tiles


@pytest.mark.parametrize("length, tile, expected", [
    (100, 512, (1, 100)), (512, 512, (1, 512)), (513, 512, (2, 257)), (1000, 512, (2, 500)),
    (1025, 512, (3, 342)), (4000, 512, (8, 500)), (1, 32, (1, 1)), (64, 16, (4, 16)),
])
def test_tile_grid(length, tile, expected):
    count, size = tile_grid(length, tile)
    assert (count, size) == expected
    assert size <= tile and count * size >= length and (count - 1) * size < length


@jax.jit
def _grad_of_layer(params, x):
    """The gradient of LAYER's L2 objective for a batch (jitted once for the module)."""
    obj = Objective("googlenet", (LAYER,))
    return jax.grad(lambda y: _objective_value(params, y, jnp.ones(1), None, obj))(x)


def _network_grad_fn(net):
    return lambda x: _grad_of_layer(net.params, x)


@pytest.mark.parametrize("tile_size", [40, 64, 512])
def test_one_tile_is_exactly_the_untiled_gradient(net, tile_size):
    img = jnp.asarray(smooth_image(40, 36, seed=1))
    grad_fn = _network_grad_fn(net)
    untiled = np.asarray(grad_fn(img[None])[0])
    tiled = np.asarray(tiled_gradient(grad_fn, img, tile_size))
    assert np.abs(untiled).max() > 0
    np.testing.assert_array_equal(tiled, untiled)


@pytest.mark.parametrize("tile_size, tile_batch", [(16, 4), (16, 5), (13, 1), (25, 64)])
def test_several_tiles_of_a_pointwise_gradient_equal_the_untiled_one(tile_size, tile_batch):
    img = jnp.asarray(smooth_image(50, 37, seed=2))
    seen = []

    def grad_fn(x):
        seen.append(x.shape)
        return 2.0 * x + 1.0

    tiled = np.asarray(tiled_gradient(grad_fn, img, tile_size, tile_batch))
    np.testing.assert_array_equal(tiled, 2.0 * np.asarray(img) + 1.0)
    (nh, th), (nw, tw) = tile_grid(50, tile_size), tile_grid(37, tile_size)
    assert nh * nw > 1
    assert set(seen) == {(1, th, tw, 3)}  # every tile the same shape, one at a time per vmap lane


def test_tiles_are_contiguous_blocks_of_the_edge_padded_image():
    """A gradient that is each tile's mean shows which pixels went into which tile."""
    img = np.asarray(smooth_image(30, 23, seed=3))
    tiled = np.asarray(tiled_gradient(lambda x: jnp.broadcast_to(x.mean(axis=(1, 2), keepdims=True), x.shape),
                                      jnp.asarray(img), 12, 2))
    (nh, th), (nw, tw) = tile_grid(30, 12), tile_grid(23, 12)
    padded = np.pad(img, ((0, nh * th - 30), (0, nw * tw - 23), (0, 0)), mode="edge")
    expected = np.zeros_like(padded)
    for i in range(nh):
        for j in range(nw):
            block = (slice(i * th, (i + 1) * th), slice(j * tw, (j + 1) * tw))
            expected[block] = padded[block].mean(axis=(0, 1))
    np.testing.assert_allclose(tiled, expected[:30, :23], rtol=1e-5)


def test_tiled_network_gradient_has_the_image_shape_and_is_finite(net):
    img = jnp.asarray(smooth_image(72, 60, seed=4))
    grad = np.asarray(jax.jit(lambda x: tiled_gradient(_network_grad_fn(net), x, 40, 4))(img))
    assert grad.shape == (72, 60, 3)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    # every tile contributes
    for block in (grad[:36, :30], grad[:36, 30:], grad[36:, :30], grad[36:, 30:]):
        assert np.abs(block).max() > 0


# ----------------------------------------------------------------------------------------------
# the jitted ascent


def test_ascend_is_deterministic_for_a_seed_and_differs_between_seeds(dreamer, image):
    a = np.asarray(dreamer.step(image, jax.random.key(1)))
    b = np.asarray(dreamer.step(image, jax.random.key(1)))
    c = np.asarray(dreamer.step(image, jax.random.key(2)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == image.shape and a.dtype == np.float32


def test_ascend_keeps_pixels_in_range(dreamer):
    img = np.zeros((SIZE, SIZE, 3), np.float32)
    img[:, SIZE // 2:] = 255.0
    img[::7] = 128.0
    out = np.asarray(ascend(dreamer.net.params, jnp.asarray(img), jax.random.key(0), dreamer.weights,
                            jnp.float32(80.0), None, obj=dreamer.obj, sched=dreamer.schedule()))
    assert np.all(np.isfinite(out))
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert out.min() == 0.0 and out.max() == 255.0  # the big step really hit both ends
    assert not np.array_equal(out, img)


def test_ascend_increases_the_objective(dreamer, image):
    value_fn = jax.jit(lambda p, x, w: _objective_value(p, x[None], w, None, dreamer.obj))

    def value(x):
        return float(value_fn(dreamer.net.params, jnp.asarray(x), dreamer.weights))
    before = value(image)
    out = np.asarray(dreamer.step(image, jax.random.key(3)))
    assert value(out) > 1.05 * before > 0


@pytest.mark.slow
def test_run_reports_every_step_and_gives_the_same_image(dreamer, image):
    seen = []
    out = dreamer.run(image, on_step=lambda p: seen.append((p.octave, p.octaves, p.step, p.steps, p.shape,
                                                           np.asarray(p.image))))
    shapes = dreamer.octave_shapes(image.shape[:2])
    assert [s[:5] for s in seen] == [(o + 1, 2, i + 1, 2, shapes[o]) for o in range(2) for i in range(2)]
    np.testing.assert_array_equal(seen[-1][5], out)  # the last step's image is the result
    np.testing.assert_array_equal(dreamer.run(image), out)  # watching changes nothing
    value = _objective_value(dreamer.net.params, jnp.asarray(out)[None], dreamer.weights, None, dreamer.obj)
    assert dreamer.objective(out) == pytest.approx(float(value), rel=1e-6)


def test_in_jit_loop_and_python_loop_give_the_same_image(dreamer, image):
    args = (dreamer.net.params, jnp.asarray(image), jax.random.key(4), dreamer.weights, jnp.float32(1.5), None)
    sched = dreamer.schedule(3)
    looped = np.asarray(ascend(*args, obj=dreamer.obj, sched=sched, in_jit_loop=True))
    stepped = np.asarray(ascend(*args, obj=dreamer.obj, sched=sched, in_jit_loop=False))
    np.testing.assert_allclose(stepped, looped, rtol=0, atol=1e-3)
    assert np.abs(stepped - image).mean() > 0.1  # three steps did move the pixels


def test_step_counts_share_one_compiled_step(dreamer, image):
    args = (dreamer.net.params, jnp.asarray(image), jax.random.key(5), dreamer.weights, jnp.float32(1.5), None)
    ascend(*args, obj=dreamer.obj, sched=dreamer.schedule(1), in_jit_loop=False)
    size = ascent_step._cache_size()
    for steps in (2, 5):
        ascend(*args, obj=dreamer.obj, sched=dreamer.schedule(steps), in_jit_loop=False)
    assert ascent_step._cache_size() == size


def test_second_call_does_not_retrace_even_with_new_step_size_or_layer_weights(net, image, monkeypatch):
    import importlib
    dream_module = importlib.import_module("jaxdream.dream")  # the module, even if jaxdream.dream is the function
    traces = []
    original = dream_module._objective_value

    def counting(*args, **kwargs):
        traces.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dream_module, "_objective_value", counting)
    # a static configuration no other test uses, so the first call must trace
    obj = Objective("googlenet", ("conv2/3x3", "conv1/7x7_s2"))
    sched = Schedule(steps=1, jitter=3)
    img = jnp.asarray(smooth_image(40, 40, seed=5))
    params = net.params

    def call(x, seed, weights, step):
        return ascend(params, x, jax.random.key(seed), jnp.asarray(weights, jnp.float32), jnp.float32(step), None,
                      obj=obj, sched=sched)

    first = call(img, 0, [1.0, 0.5], 1.5)
    n_traces = len(traces)
    assert n_traces >= 1
    size = ascent_step._cache_size()
    second = call(first, 1, [1.0, 0.5], 1.5)
    call(img, 2, [0.2, 3.0], 4.0)  # other layer weights and step size: traced values
    # (a NumPy image would add a dispatch-cache entry, though no retrace; Dreamer.step converts)
    call(jnp.asarray(np.asarray(second)), 3, np.array([1.0, 1.0]), 0.5)
    assert len(traces) == n_traces
    assert ascent_step._cache_size() == size


def test_dreamer_run_twice_and_with_new_layer_weights_does_not_recompile(dreamer, image):
    dreamer.run(image)
    size = ascent_step._cache_size()
    dreamer.run(image[::-1].copy())
    dreamer.run(image, layers=((LAYER, 0.25),))
    assert ascent_step._cache_size() == size


# ----------------------------------------------------------------------------------------------
# settings


def test_octave_shapes():
    assert octave_shapes(100, 80, 3, 2.0, 1) == [(25, 20), (50, 40), (100, 80)]
    assert octave_shapes(224, 224, 4, 1.4, 1) == [(82, 82), (114, 114), (160, 160), (224, 224)]
    assert octave_shapes(100, 80, 1, 1.4, 1) == [(100, 80)]
    # octaves smaller than the layer's minimum input are dropped, smallest first
    assert octave_shapes(100, 80, 4, 2.0, 30) == [(50, 40), (100, 80)]
    assert octave_shapes(100, 80, 4, 2.0, 41) == [(100, 80)]


def test_parse_layers():
    assert parse_layers("inception_4c/output:1,inception_4d/output:0.5") == (
        ("inception_4c/output", 1.0), ("inception_4d/output", 0.5))
    assert parse_layers("inception_4c/output") == (("inception_4c/output", 1.0),)
    assert parse_layers(" conv2/3x3 , inception_4c/5x5/pre_relu:2.5 ,") == (
        ("conv2/3x3", 1.0), ("inception_4c/5x5/pre_relu", 2.5))
    assert parse_layers([("conv2/3x3", 2), "conv1/7x7_s2:0.1"]) == (("conv2/3x3", 2.0), ("conv1/7x7_s2", 0.1))
    for bad in ("", " , "):
        with pytest.raises(SettingsError):
            parse_layers(bad)


def test_parse_channels():
    assert parse_channels("139") == (139,)
    assert parse_channels("1,2") == (1, 2)
    assert parse_channels("10-12") == (10, 11, 12)
    assert parse_channels(" 1, 5-6 ") == (1, 5, 6)
    assert parse_channels(7) == (7,)
    assert parse_channels([3, 4]) == (3, 4)
    assert parse_channels(None) is None and parse_channels("") is None
    for bad in ("abc", "1-", "1,,2", "-3", "1.5", "2-x"):
        with pytest.raises(SettingsError, match="channels"):
            parse_channels(bad)


def test_make_config_defaults_are_google_deepdream():
    cfg = make_config()
    assert cfg == DreamConfig()
    assert cfg.layers == (("inception_4c/output", 1.0),)
    assert (cfg.steps, cfg.octaves, cfg.octave_scale, cfg.step_size, cfg.jitter, cfg.normalize) == (
        10, 4, 1.4, 1.5, 32, "mean")
    assert cfg.to_dict()["layers"] == ["inception_4c/output:1"]


def test_normalize_auto_is_lapnorm_for_class_dreams_and_mean_otherwise():
    assert (make_config(normalize="auto").normalize, make_config(normalize="auto").lapnorm_levels) == ("mean", 4)
    cls = make_config(class_index=1)
    assert (cls.normalize, cls.lapnorm_levels) == ("lapnorm", 5) and cls.to_dict()["normalize"] == "lapnorm"
    assert make_config(class_index=1, lapnorm_levels=3).lapnorm_levels == 3
    assert make_config(class_index=1, normalize="mean").normalize == "mean"  # a choice is kept


def test_make_config_parses_strings():
    cfg = make_config(layers="inception_3a/output:1,inception_4c/5x5/pre_relu:0.5", channels="3-5,10")
    assert cfg.layers == (("inception_3a/output", 1.0), ("inception_4c/5x5/pre_relu", 0.5))
    assert cfg.channels == (3, 4, 5, 10)
    cfg = make_config(class_index="Egyptian cat")
    assert cfg.class_index == 285 and cfg.layers == (("loss3/classifier", 1.0),)
    assert make_config(class_index="967").class_index == 967


def test_make_config_unknown_layer_names_close_matches():
    with pytest.raises(LayerError, match="inception_4c/output") as info:
        make_config(layers="inception_4c/outptu")
    assert "outptu" in str(info.value)


def test_make_config_channel_out_of_range_names_layer_and_count():
    with pytest.raises(SettingsError) as info:
        make_config(layers="inception_3a/output", channels="300")
    message = str(info.value)
    assert "300" in message and "inception_3a/output" in message and "256" in message
    # pre-ReLU names are allowed; inception_4c/5x5 has 64 channels
    assert make_config(layers="inception_4c/5x5/pre_relu", channels="63").channels == (63,)
    with pytest.raises(SettingsError, match="inception_4c/5x5/pre_relu.*64"):
        make_config(layers="inception_4c/5x5/pre_relu", channels="64")
    # checked on every layer
    with pytest.raises(SettingsError, match="inception_4c/5x5"):
        make_config(layers="inception_3a/output,inception_4c/5x5", channels="100")


@pytest.mark.parametrize("settings, needle", [
    (dict(steps=0), "steps"), (dict(steps=-2), "steps"), (dict(octaves=0), "octaves"),
    (dict(octaves=-1), "octaves"), (dict(normalize="median"), "normalisation"),
    (dict(step_size=0), "step size"), (dict(octave_scale=0.5), "octave scale"),
    (dict(jitter=-1), "jitter"), (dict(tile_size=8), "tile size"),
    (dict(layers="inception_3a/output:-1"), "layer weight must be a number >= 0"),
    (dict(class_index=1000), "out of range"), (dict(class_index=-1), "out of range"),
    (dict(class_index="no such animal"), "unknown class"),
    (dict(class_index=285, model="vgg19"), "classifier"),
    (dict(class_index=285, guide="g.png"), "guide"),
    (dict(model="vgg19", layers="conv1_1", pooling="median"), "pooling"),
])
def test_make_config_rejects_bad_settings(settings, needle):
    with pytest.raises(SettingsError, match=needle):
        make_config(**settings)


def test_make_config_unknown_model():
    with pytest.raises(LayerError, match="unknown model"):
        make_config(model="alexnet")


# ----------------------------------------------------------------------------------------------
# the octave driver


def test_dreamer_run_end_to_end(dreamer, image):
    reports = []
    out = dreamer.run(image, progress=reports.append)
    assert out.shape == image.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= 255
    assert np.abs(out - image).mean() > 0.5
    assert [(r.octave, r.octaves, r.shape) for r in reports] == [(1, 2, (46, 46)), (2, 2, (64, 64))]
    np.testing.assert_array_equal(dreamer.run(image), out)  # same seed, same result


def test_lapnorm_dream_on_an_even_and_odd_sized_image(net):
    cfg = make_config(layers="conv2/3x3", steps=1, octaves=1, jitter=2, normalize="lapnorm", lapnorm_levels=3)
    img = smooth_image(40, 37, seed=10)
    out = Dreamer(cfg, network=net).run(img)
    assert out.shape == img.shape and np.all(np.isfinite(out)) and 0 <= out.min() and out.max() <= 255
    assert np.abs(out - img).mean() > 0.5


def test_dreamer_run_rejects_too_small_images(net):
    with pytest.raises(SettingsError, match="too small"):
        Dreamer(make_config(**SETTINGS), network=net).run(smooth_image(5, 40))


def test_guided_dream(net):
    cfg = make_config(layers="conv2/3x3", steps=1, octaves=1, jitter=2, guide="guide", guide_size=24)
    guide = smooth_image(30, 20, seed=7)[..., ::-1]
    guided = Dreamer(cfg, network=net, guide_image=guide)
    assert guided.obj.kind == "guide"
    (features,) = guided.guides
    assert features.shape == (6 * 4, 192)  # a 24x16 guide gives 6x4 positions of conv2/3x3
    img = smooth_image(40, 40, seed=8)
    out = guided.run(img)
    assert out.shape == img.shape and np.all(np.isfinite(out)) and not np.array_equal(out, img)


def test_dream_function_loads_weights_and_matches_the_dreamer(googlenet_caffemodel, dreamer, image, isolated_home):
    reports = []
    out = dream_fn(image, weights=googlenet_caffemodel.path, progress=reports.append, **SETTINGS)
    assert len(reports) == 2
    np.testing.assert_array_equal(out, dreamer.run(image))


def test_top_level_dream_function():
    """The issue's library API is ``jaxdream.dream(image, **settings)``."""
    assert callable(jaxdream.dream), "jaxdream/__init__.py does not export the dream function"


# ----------------------------------------------------------------------------------------------
# class dreams with the real GoogLeNet


real = pytest.mark.skipif(not (REAL_GOOGLENET.is_file() and CHELSEA.is_file()),
                          reason=f"real weights not present ({REAL_GOOGLENET} and {CHELSEA} are only in "
                                 f"the dev/CI checkout)")


@pytest.fixture(scope="module")
def chelsea224() -> np.ndarray:
    return media.resize(media.load_image(CHELSEA), (224, 224), "bilinear")


def _prob(img: np.ndarray, cls: int) -> float:
    prob = jaxdream.features(img, "prob", weights=REAL_GOOGLENET)["prob"]
    return float(prob.reshape(-1, 1000)[0, cls])


@pytest.mark.realweights
@real
def test_class_dream_285_from_chelsea_above_0_9(chelsea224, isolated_home):
    before = _prob(chelsea224, 285)
    out = dream_fn(chelsea224, weights=REAL_GOOGLENET, class_index=285, octaves=1, steps=5, jitter=4)
    after = _prob(out, 285)
    assert after > 0.9 and after > before, (before, after)


@pytest.mark.realweights
@real
def test_class_dream_967_espresso_from_chelsea(chelsea224, isolated_home):
    before = _prob(chelsea224, 967)
    assert before < 0.01
    out = dream_fn(chelsea224, weights=REAL_GOOGLENET, class_index="espresso", octaves=1, steps=12, jitter=4)
    after = _prob(out, 967)
    assert after > 0.5, (before, after)


@pytest.mark.realweights
@real
def test_class_objective_at_224_is_googlenets_logit(chelsea224, isolated_home):
    """At 224 px the global average is the classifier's own 7x7 pool: the objective is the logit
    GoogLeNet gives (class 285, Egyptian cat)."""
    from jaxdream.nets.network import load_network
    net = load_network("googlenet", REAL_GOOGLENET)
    obj = Objective("googlenet", ("inception_5b/output",), kind="class", class_index=285)
    value = _objective_value(net.params, jnp.asarray(chelsea224)[None], jnp.ones(1), None, obj)
    logits = jaxdream.features(chelsea224, "loss3/classifier", weights=REAL_GOOGLENET)["loss3/classifier"]
    np.testing.assert_allclose(float(value), float(logits.reshape(-1)[285]), rtol=1e-5)


#: Classes whose class dream of chelsea.png at 512 px and default settings a test checks (the
#: benchmark, benchmarks/class_bench.py, runs 20 classes on several photos).
CLASS_DREAMS = (("goldfish", 1), ("bee", 309), ("banana", 954))


@pytest.mark.realweights
@real
@pytest.mark.parametrize("name,index", CLASS_DREAMS)
def test_class_dream_at_defaults_makes_googlenet_see_the_class(isolated_home, name, index):
    """`--class N` with no other option at 512 px: GoogLeNet's top-1 (224 px resize, as
    `jaxdream classify`) becomes the class, from a cat it called anything but."""
    img = media.load_image(CHELSEA, size=512)
    out = dream_fn(img, weights=REAL_GOOGLENET, class_index=name)
    before = jaxdream.classify(img, weights=REAL_GOOGLENET)
    after = jaxdream.classify(out, weights=REAL_GOOGLENET)
    assert int(before.argmax()) != index
    assert int(after.argmax()) == index, (name, int(after.argmax()), float(after[index]))


# ----------------------------------------------------------------------------------------------
# the `jaxdream dream` command


ERROR_PREFIX = "jaxdream: error:"


def assert_one_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode != 0, f"exit 0; stderr={result.stderr!r}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, result.stderr
    assert all(line.startswith(("jaxdream: error:", "jaxdream: warning:")) for line in lines), result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, googlenet_caffemodel):
    """The command-line tests' folder: an 80x60 input, a corrupt guide, a file posing as a folder."""
    root = tmp_path_factory.mktemp("dream_cli")
    from PIL import Image
    Image.fromarray(media.to_uint8(smooth_image(60, 80, seed=9))).save(root / "in.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 8)
    (root / "not_a_folder").write_text("x")
    base = ["dream", root / "in.png", "--octaves", "1", "--steps", "2", "--size", "64",
            "--layers", LAYER, "--weights", googlenet_caffemodel.path, "--quiet"]
    return root, base


def _run_script(args, root: Path) -> subprocess.CompletedProcess:
    return run_cli(args, cli_env(root / "home"), cwd=root, timeout=600)


def _with(args: list, flag, value) -> list:
    """``args`` with the value after ``flag`` (or the positional at index ``flag``) replaced."""
    args = list(args)
    args[flag if isinstance(flag, int) else args.index(flag) + 1] = value
    return args


@pytest.fixture(scope="module")
def dream_cli(cli_files):
    """Runs the `jaxdream dream` subprocesses of the tests below once, two at a time."""
    root, base = cli_files

    def twice():  # the second run reuses the first's compiled program (persistent cache)
        return [_run_script([*base, "-o", root / "out1.png", "--seed", "3"], root),
                _run_script([*base, "-o", root / "out2.png", "--seed", "3"], root)]

    errors = {
        "layer": [*_with(base, "--layers", "inception_3a/outptu"), "-o", root / "e_layer.png"],
    }
    with ThreadPoolExecutor(2) as pool:
        ok = pool.submit(twice)
        failed = {name: pool.submit(_run_script, args, root) for name, args in errors.items()}
        results = {name: f.result() for name, f in failed.items()}
        results["ok"] = ok.result()
    outputs = {name: Path(args[args.index("-o") + 1]) for name, args in errors.items()}
    return results, outputs


@needs_script
def test_cli_dream_writes_png_with_settings(cli_files, dream_cli, googlenet_caffemodel):
    root, _ = cli_files
    results, _ = dream_cli
    first, _ = results["ok"]
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    img = media.load_image(root / "out1.png")
    assert img.shape == (48, 64, 3)
    assert not np.array_equal(img, media.load_image(root / "in.png", size=64).round())
    settings = media.read_settings(root / "out1.png")
    assert settings["layers"] == [f"{LAYER}:1"]
    assert settings["seed"] == 3
    assert settings["steps"] == 2 and settings["octaves"] == 1
    assert settings["model"] == "googlenet"
    digest = hashlib.sha256(Path(googlenet_caffemodel.path).read_bytes()).hexdigest()
    assert settings["weights_sha256"] == digest[:16]


@needs_script
def test_cli_dream_same_seed_same_pixels(cli_files, dream_cli):
    root, _ = cli_files
    results, _ = dream_cli
    assert all(r.returncode == 0 for r in results["ok"]), [r.stderr for r in results["ok"]]
    a = np.asarray(media.load_image(root / "out1.png"))
    b = np.asarray(media.load_image(root / "out2.png"))
    np.testing.assert_array_equal(a, b)
    # the compiled ascent went into the persistent cache, for the second run to reuse
    assert [p for p in (root / "home" / "xla").iterdir() if "ascent_step" in p.name]


@needs_script
def test_cli_dream_bad_input_is_one_error_line(cli_files, dream_cli):
    """Through the console script (the other bad inputs run in-process below)."""
    root, _ = cli_files
    results, outputs = dream_cli
    assert_one_error(results["layer"], "inception_3a/outptu", "inception_3a/output")
    assert not outputs["layer"].exists()
    assert not list(root.glob(f".{outputs['layer'].stem}*")), "a temporary output was left behind"


@pytest.mark.parametrize("case, needles", [
    ("channel", ("9999", "inception_3a/output", "256")),
    ("guide_missing", ("missing.png", "not found")),
    ("guide_corrupt", ("corrupt.png",)),
    ("input_missing", ("nothere.png", "not found")),
    ("output_folder", ("no_such_folder", "does not exist")),
    ("output_parent_file", ("not_a_folder",)),
    ("output_suffix", ("out.xyz",)),
    ("steps0", ("--steps", "must be a whole number >= 1")),
    ("layer", ("inception_3a/outptu", "inception_3a/output")),
])
def test_cli_dream_bad_input_in_process(cli_files, case, needles, capsys, monkeypatch):
    """The same command line run through ``jaxdream.cli.main.main`` (no process start-up)."""
    import warnings

    from jaxdream.cli import main as cli_main
    from jaxdream.jobs import command
    root, base = cli_files
    args = {
        "channel": [*base, "--channels", "9999", "-o", root / "e_channel.png"],
        "guide_missing": [*base, "--guide", root / "missing.png", "-o", root / "e_guide1.png"],
        "guide_corrupt": [*base, "--guide", root / "corrupt.png", "-o", root / "e_guide3.png"],
        "input_missing": [*_with(base, 1, root / "nothere.png"), "-o", root / "e_input.png"],
        "output_folder": [*base, "-o", root / "no_such_folder" / "out.png"],
        "output_parent_file": [*base, "-o", root / "not_a_folder" / "out.png"],
        "output_suffix": [*base, "-o", root / "out.xyz"],
        "steps0": [*_with(base, "--steps", "0"), "-o", root / "e_steps.png"],
        "layer": [*_with(base, "--layers", "inception_3a/outptu"), "-o", root / "e_layer3.png"],
    }[case]
    for name in ("JAXDREAM_HOME", "JAXDREAM_WEIGHTS_DIR", "JAXDREAM_WEIGHTS_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAXDREAM_HOME", str(root / "home_in_process"))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    monkeypatch.setattr(command, "enable_compilation_cache", lambda: None)  # keep this process's jax config
    rc = cli_main.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert_one_error(subprocess.CompletedProcess(args, rc, "", err), *needles)
    out = Path(args[args.index("-o") + 1])
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.stem}*")) if out.parent.is_dir() else True
