"""Gatys style transfer: loss terms, objective, optimisers, colour, sweeps, CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from helpers import as_params, cli_env, quadratic, rand_image, vgg_layers
from weightfiles import REAL_SKIP_REASON, REAL_WEIGHTS

from jaxdream.objectives import gatys
from jaxdream import optim
from jaxdream.style import programs
from jaxdream import media, style
from jaxdream.media import color
from jaxdream.cli.main import main as cli_main
from jaxdream.objectives.losses import content_loss, gram, style_loss, total_variation
from jaxdream.nets import get_spec

REPO = Path(__file__).resolve().parents[1]
MEDIA = REAL_WEIGHTS.parent / "media"
VGG_H5 = REAL_WEIGHTS / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"


# The fixtures tiny_net, vgg_h5, images and pngs are in conftest.py, the helpers in helpers.py.


# --------------------------------------------------------------------------------------------
# loss terms against NumPy
# --------------------------------------------------------------------------------------------


def test_gram_matches_numpy():
    f = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4) / 10
    flat = f.reshape(6, 4)
    want = flat.T @ flat / (4 * 2 * 3)
    got = jax.jit(gram)(jnp.asarray(f))
    assert got.shape == (1, 4, 4)
    np.testing.assert_allclose(got[0], want, rtol=1e-6)
    # hand check: a single position with channels (1, 2): [[1, 2], [2, 4]] / (2*1*1)
    np.testing.assert_allclose(gram(jnp.array([[[1.0, 2.0]]])), [[0.5, 1.0], [1.0, 2.0]])


def test_content_and_style_loss_scale():
    a = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 2, 2, 1)
    b = np.zeros_like(a)
    # mean of squares = (1 + 4 + 9 + 16) / 4 = 7.5, times the weight 5
    assert float(jax.jit(content_loss)(a, b, 5.0)) == pytest.approx(37.5)
    g1, g2 = np.eye(2, dtype=np.float32), np.zeros((2, 2), np.float32)
    # mean over the 4 Gram entries: (1 + 1) / 4 = 0.5, times 100
    assert float(jax.jit(style_loss)(g1, g2, 100.0)) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="differ in shape"):
        content_loss(a, np.zeros((1, 2, 3, 1)))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, C\)"):
        style_loss(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="channels"):
        style_loss(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="H, W, C"):
        gram(np.zeros((4, 4)))


def test_total_variation_matches_numpy():
    x = np.random.default_rng(0).standard_normal((5, 6, 3)).astype(np.float32)
    dx = x[:-1, :-1] - x[:-1, 1:]
    dy = x[:-1, :-1] - x[1:, :-1]
    want = 1e-3 * 0.5 * np.sum(dx ** 2 + dy ** 2)
    assert float(jax.jit(total_variation)(x, 1e-3)) == pytest.approx(want, rel=1e-5)
    # hand check: 2x2 single channel [[0, 1], [2, 3]]: only (0,0) counts: (0-1)^2 + (0-2)^2 = 5
    assert float(total_variation(jnp.array([[[0.0], [1.0]], [[2.0], [3.0]]]))) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="at least 2x2"):
        total_variation(np.zeros((1, 5, 3)))


# --------------------------------------------------------------------------------------------
# the objective
# --------------------------------------------------------------------------------------------


def test_blockwise_vgg_equals_flax_module():
    params = as_params(vgg_layers())
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 32, 32, 3)) * 50, jnp.float32)
    obj = gatys.Objective()
    mine = gatys.features(params, x, obj)
    flax = get_spec("vgg19").make(obj.layers, "max").apply(params, x)
    for k in obj.layers:
        np.testing.assert_allclose(mine[k], flax[k], rtol=1e-4, atol=1e-4 * float(jnp.abs(flax[k]).max()))


@pytest.mark.slow
def test_objective_gradient_finite_differences():
    with jax.enable_x64(True):
        params = as_params(vgg_layers(widths=(3, 4, 4, 4, 4), dtype=np.float64))
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((16, 16, 3)) * 30)
        c = jnp.asarray(rng.standard_normal((16, 16, 3)) * 30)
        s = jnp.asarray(rng.standard_normal((16, 16, 3)) * 30)
        for remat in (False, True):
            obj = gatys.Objective(remat=remat)
            targets = gatys.prepare_targets(params, c, [s], [1.0], obj)
            weights = {"content": jnp.float64(5), "style": jnp.float64(100), "tv": jnp.float64(1e-3)}
            f = jax.jit(lambda x: gatys.objective(x, params, targets, weights, obj)[0])
            g = jax.grad(f)(x)
            for k in range(2):
                d = jnp.asarray(rng.standard_normal(x.shape))
                eps = 1e-4
                fd = (f(x + eps * d) - f(x - eps * d)) / (2 * eps)
                assert float(jnp.vdot(g, d)) == pytest.approx(float(fd), rel=1e-6)


def test_objective_is_sum_of_terms(tiny_net, images):
    c, s = (jnp.asarray(i[..., ::-1] - np.array(tiny_net.spec.mean_bgr, np.float32)) for i in images)
    obj = gatys.Objective()
    targets = gatys.prepare_targets(tiny_net.params, c, [s], [1.0], obj)
    w = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}
    total, parts = gatys.objective(c, tiny_net.params, targets, w, obj)
    assert float(parts[0]) == 0.0  # content term vanishes at the content image
    assert float(total) == pytest.approx(float(parts.sum()), rel=1e-6)
    feats = gatys.features(tiny_net.params, c[None], obj)
    want_style = sum(100 * np.mean((np.asarray(gram(feats[k][0])) - np.asarray(targets["gram"][k])) ** 2)
                     for k in obj.style_layers)
    assert float(parts[1]) == pytest.approx(want_style, rel=1e-4)


def test_style_blend_targets(tiny_net, images):
    c, s = images
    to = lambda im: jnp.asarray(im[..., ::-1] - np.array(tiny_net.spec.mean_bgr, np.float32))
    obj = gatys.Objective()
    t1 = gatys.prepare_targets(tiny_net.params, to(c), [to(c)], [1.0], obj)["gram"]
    t2 = gatys.prepare_targets(tiny_net.params, to(c), [to(s)], [1.0], obj)["gram"]
    tb = gatys.prepare_targets(tiny_net.params, to(c), [to(c), to(s)], [3.0, 1.0], obj)["gram"]
    for k in obj.style_layers:
        np.testing.assert_allclose(tb[k], 0.75 * t1[k] + 0.25 * t2[k], rtol=1e-5)


# --------------------------------------------------------------------------------------------
# optimisation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_loss_falls(tiny_net, images, optimizer):
    seen = []
    style.stylize(images[0], images[1], network=tiny_net, size=40, num_iterations=30, chunk=10,
                  optimizer=optimizer, callback=lambda p: seen.append(float(p.losses["total"][0])))
    assert len(seen) == 3
    assert seen[-1] < 0.5 * seen[0]


def test_no_retrace_across_chunks(tiny_net, images):
    kwargs = dict(network=tiny_net, size=40, chunk=3)
    style.stylize(images[0], images[1], num_iterations=3, **kwargs)
    before = programs.lbfgs_step._cache_size()
    calls = []
    # 4 chunks of 3, 3, 3 and 1 iterations, other weights: all reuse the compiled program
    style.stylize(images[0], images[1], num_iterations=10, style_weight=1e3, tv_weight=0.5,
                  callback=lambda p: calls.append(p.iteration), **kwargs)
    assert calls == [3, 6, 9, 10]
    assert programs.lbfgs_step._cache_size() == before


def test_in_jit_loop_matches_python_loop(tiny_net, images):
    kwargs = dict(network=tiny_net, size=40, num_iterations=4, chunk=2, init="image")
    a = style.stylize(images[0], images[1], in_jit_loop=True, **kwargs)
    before = programs.lbfgs_chunk._cache_size()
    b = style.stylize(images[0], images[1], in_jit_loop=False, **kwargs)
    c = style.stylize(images[0], images[1], in_jit_loop=True, num_iterations=[5], style_weight=7.0,
                      **{k: v for k, v in kwargs.items() if k != "num_iterations"})
    assert programs.lbfgs_chunk._cache_size() == before  # chunks of 2 and 1, new weights: no retrace
    np.testing.assert_allclose(a.image, b.image, atol=0.05)
    assert c.losses["total"][0] > 0


def test_sweep_equals_separate_runs(tiny_net, images):
    kwargs = dict(network=tiny_net, size=40, num_iterations=8, chunk=4)
    swept = style.stylize(images[0], images[1], style_weight=[1e2, 1e4], **kwargs)
    assert swept.images.shape == (2, 32, 40, 3)
    assert swept.labels == [{"style_weight": 100.0}, {"style_weight": 10000.0}]
    for i, sw in enumerate([1e2, 1e4]):
        single = style.stylize(images[0], images[1], style_weight=sw, **kwargs)
        np.testing.assert_allclose(swept.images[i], single.image, atol=0.5)
        assert swept.losses["total"][i] == pytest.approx(single.losses["total"][0], rel=1e-3)
    assert not np.allclose(swept.images[0], swept.images[1], atol=1.0)


def test_seed_sweep_differs_per_seed(tiny_net, images):
    r = style.stylize(images[0], images[1], network=tiny_net, size=40, num_iterations=2,
                      seed=[0, 1], chunk=2)
    assert r.labels == [{"seed": 0}, {"seed": 1}]
    assert not np.allclose(r.images[0], r.images[1])


def test_coarse_to_fine_scales(tiny_net, images):
    sizes = []
    r = style.stylize(images[0], images[1], network=tiny_net, size=40, scales=[20, 40],
                      num_iterations=[4, 2], chunk=2,
                      callback=lambda p: sizes.append((p.scale, p.size, p.iteration)))
    assert sizes == [(0, (16, 20), 2), (0, (16, 20), 4), (1, (32, 40), 2)]
    assert r.image.shape == (32, 40, 3)
    assert style.default_scales(512) == (512,)
    assert style.default_scales(2048) == (512, 1024, 2048)


# --------------------------------------------------------------------------------------------
# colour
# --------------------------------------------------------------------------------------------


def test_original_colors_keep_content_chroma(tiny_net, images):
    content = images[0]
    r = style.stylize(content, images[1], network=tiny_net, size=40, num_iterations=4, chunk=4,
                      original_colors=True, init="image")
    got = color.rgb_to_ycbcr(r.image)
    want = color.rgb_to_ycbcr(content)
    # chroma equal up to rounding and the clip to 0..255 where luminance is extreme
    assert np.median(np.abs(got[..., 1:] - want[..., 1:])) < 0.5
    plain = style.stylize(content, images[1], network=tiny_net, size=40, num_iterations=4,
                          chunk=4, init="image")
    np.testing.assert_allclose(got[..., 0], color.rgb_to_ycbcr(plain.image)[..., 0], atol=40)


def test_ycbcr_round_trip():
    x = np.random.default_rng(0).uniform(0, 255, (4, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(color.ycbcr_to_rgb(color.rgb_to_ycbcr(x)), x, atol=1e-3)
    assert color.rgb_to_ycbcr(np.full((1, 1, 3), 255.0))[0, 0].tolist() == pytest.approx([255, 128, 128], abs=1e-3)


def test_color_transfer_mean_cov_matches_statistics():
    src = rand_image(40, 40, 3) * 0.5 + 60
    tgt = rand_image(30, 50, 4) * 0.3 + np.array([40, 90, 30], np.float32)
    out = color.match_color(src, tgt, "mean-cov").reshape(-1, 3)
    t = tgt.reshape(-1, 3)
    np.testing.assert_allclose(out.mean(0), t.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(out, rowvar=False), np.cov(t, rowvar=False), rtol=0.01, atol=0.1)


def test_color_transfer_histogram_matches_distribution():
    src = rand_image(40, 40, 5)
    tgt = np.clip(rand_image(30, 50, 6) ** 1.5 / 255 ** 0.5, 0, 255)
    out = color.match_color(src, tgt, "histogram")
    qs = np.linspace(0.02, 0.98, 25)
    for c in range(3):
        np.testing.assert_allclose(np.quantile(out[..., c], qs), np.quantile(tgt[..., c], qs), atol=1.0)
    # the mapping is monotone: the order of pixels within a channel is kept
    order = np.argsort(src[..., 0].ravel(), kind="stable")
    assert np.all(np.diff(out[..., 0].ravel()[order]) >= -1e-4)
    with pytest.raises(Exception, match="unknown colour transfer"):
        color.match_color(src, tgt, "lab")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def test_cli_smoke_two_chunks_sweep(tmp_path, pngs, vgg_h5):
    content, style_img = pngs
    out = tmp_path / "out.png"
    env = cli_env(tmp_path / "home", JAXDREAM_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxdream.cli.main", "style", str(content), "--style", str(style_img),
         "-o", str(out), "--size", "32", "--iterations", "4", "--chunk", "2", "--save-iter", "2",
         "--print-iter", "2", "--style-weight", "100,1000", "--weights", str(vgg_h5)],
        capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL,
        # not the checkout: `python -m` puts the working folder first on sys.path, and the
        # source tree's jaxdream/ (without cli/, which installs from the top level) would shadow
        # the installed package
        cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("iteration")]
    assert [ln.split(":")[0] for ln in lines] == ["iteration 2/4 [sw=100]", "iteration 2/4 [sw=1000]",
                                                  "iteration 4/4 [sw=100]", "iteration 4/4 [sw=1000]"]
    for name in ("out_sw100.png", "out_sw1000.png", "out_sw100_2.png", "out_sheet.png"):
        assert (tmp_path / name).is_file(), name
    assert Image.open(tmp_path / "out_sw100.png").size == (32, 26)
    settings = media.read_settings(tmp_path / "out_sw1000.png")
    assert settings["style_weight"] == 1000.0 and settings["optimizer"] == "lbfgs"


def _cli(argv, capsys):
    rc = cli_main(argv)
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("case", ["missing style", "negative weight", "unknown layer", "too small",
                                  "unwritable", "optimizer"])
def test_cli_bad_inputs(tmp_path, pngs, case, capsys, monkeypatch):
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "home"))
    content, style_img = pngs
    out = tmp_path / "out.png"
    argv = ["style", str(content), "--style", str(style_img), "-o", str(out), "--size", "32",
            "--iterations", "1", "--weights", str(tmp_path / "never-loaded.h5")]
    expect = {"missing style": "nope.png: file not found",
              "negative weight": "argument --style-weight: must be a number >= 0 and <= 1e+15, got '-1'",
              "unknown layer": "unknown layer 'relu9_1'",
              "too small": "the minimum is 16 px",
              "unwritable": "does not exist",
              "optimizer": "argument --optimizer: invalid choice: 'sgd'"}[case]
    if case == "missing style":
        argv[3] = str(tmp_path / "nope.png")
    elif case == "negative weight":
        argv += ["--style-weight", "-1"]
    elif case == "unknown layer":
        argv += ["--style-layers", "relu1_1,relu9_1"]
    elif case == "too small":
        argv[argv.index("--size") + 1] = "8"
    elif case == "unwritable":
        out = tmp_path / "no" / "such" / "dir" / "out.png"
        argv[5] = str(out)
    else:
        argv += ["--optimizer", "sgd"]
    rc, err = _cli(argv, capsys)
    assert rc == (2 if case in ("negative weight", "optimizer") else 1)  # 2: a usage error caught by argparse
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxdream: error:"), err
    assert expect in lines[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_cli_ctrl_c_writes_current_image(tmp_path, pngs, capsys, monkeypatch):
    content, style_img = pngs
    out = tmp_path / "out.png"

    def fake_stylize(content, styles, callback=None, **kwargs):
        callback(style.StyleProgress(0, 1, (26, 32), 5, 10,
                                     {k: np.ones(1) for k in ("total", "content", "style", "tv")},
                                     np.full((1, 26, 32, 3), 100.0, np.float32), []))
        raise KeyboardInterrupt

    monkeypatch.setattr(style, "stylize", fake_stylize)
    rc = cli_main(["style", str(content), "--style", str(style_img), "-o", str(out), "--quiet"])
    assert rc == 130
    assert out.is_file()
    assert media.read_settings(out)["interrupted_at_iteration"] == 5
    assert "interrupted" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# real weights
# --------------------------------------------------------------------------------------------


@pytest.mark.realweights
@pytest.mark.skipif(not VGG_H5.is_file(), reason=REAL_SKIP_REASON)
def test_real_weights_astronaut_hubble():
    import warnings

    import jaxdream
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = jaxdream.load_network("vgg19", VGG_H5)
    content = media.load_image(MEDIA / "astronaut.png", 128)
    style_img = media.load_image(MEDIA / "hubble_deep_field.png", 128)
    seen = []
    r = style.stylize(content, style_img, network=net, size=128, num_iterations=100, chunk=50,
                      init="image", callback=lambda p: seen.append(p.losses))
    obj = gatys.Objective()
    to = lambda im: jnp.asarray(im[..., ::-1] - np.array(net.spec.mean_bgr, np.float32))
    targets = gatys.prepare_targets(net.params, to(content), [to(style_img)], [1.0], obj)
    w = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}
    _, start = gatys.objective(to(content), net.params, targets, w, obj)
    _, end = gatys.objective(to(r.image), net.params, targets, w, obj)
    noise = to(np.random.default_rng(0).uniform(0, 255, content.shape).astype(np.float32))
    _, rand = gatys.objective(noise, net.params, targets, w, obj)
    assert float(end[1]) < float(start[1]) / 10, (float(start[1]), float(end[1]))
    assert float(end[0]) < float(rand[0])
    assert seen[-1]["total"][0] < seen[0]["total"][0]


def test_lbfgs_preconditioner():
    """The preconditioner hook of the L-BFGS iteration: none and the identity give the same
    bits; with the exact inverse Hessian of a badly conditioned quadratic the second step lands
    on the minimum, which plain L-BFGS does not."""
    rng = np.random.default_rng(0)
    scales = jnp.asarray(10.0 ** rng.uniform(-2, 2, (1, 4, 5, 3)), jnp.float32)
    center = jnp.asarray(rng.standard_normal((1, 4, 5, 3)) * 3, jnp.float32)
    vg = quadratic(scales, center)
    runs = {}
    for name, m in {"none": None, "identity": lambda v: v, "inverse": lambda v: v / scales}.items():
        state = optim.lbfgs_init(jnp.zeros((1, 4, 5, 3), jnp.float32), 10, n_losses=4)
        for _ in range(2):
            state = optim.lbfgs_update(state, vg, jnp.float32(1), precondition=m)
        runs[name] = np.asarray(state.x)
    np.testing.assert_array_equal(runs["none"], runs["identity"])
    np.testing.assert_allclose(runs["inverse"], np.asarray(center), rtol=1e-4, atol=1e-4)
    assert np.abs(runs["none"] - np.asarray(center)).max() > 0.5


def test_iterates_are_the_unclipped_pixels(tiny_net, images):
    """``images`` are the optimised pixels clipped to 0..255; ``iterates`` the pixels themselves
    (a video's next frame starts from them): from an init far above white they stay above it."""
    init = np.full_like(images[0], 300.0)
    init[:, : init.shape[1] // 2] = -40.0
    r = style.stylize(images[0], images[1], network=tiny_net, init=init, num_iterations=2, size=40,
                      learning_rate=1e-3)
    assert r.iterates.shape == r.images.shape and r.iterates.dtype == np.float32
    assert r.iterates.max() > 290 and r.iterates.min() < -30
    np.testing.assert_array_equal(r.images, np.clip(r.iterates, 0, 255))
    for part in style.split_contents(r):
        np.testing.assert_array_equal(part.iterates, r.iterates)
