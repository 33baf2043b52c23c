"""Creative control: masks of style transfer (Gatys et al.'s spatial control), the Wasserstein
style loss, Adam's iterate average, DeepDream masks, and the command lines' bad-mask errors.

The objective tests use test_style's narrow VGG-19 and compare with NumPy; the dream tests
the synthetic GoogLeNet of ``conftest.py``; the two-region test needs ``../shared/weights``
and ``../shared/media`` and skips without them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from helpers import as_params, rand_image, vgg_layers
from weightfiles import REAL_SKIP_REASON, REAL_WEIGHTS

from jaxdream.objectives import gatys
from jaxdream import optim
import optax
from jaxdream import media, style
from jaxdream.dream import Dreamer, make_config, normalize_gradient
from jaxdream.errors import MediaError, SettingsError
from jaxdream.objectives.losses import gram, masked_gram
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network, unflatten

MEDIA = REAL_WEIGHTS.parent / "media"
VGG_H5 = REAL_WEIGHTS / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
H, W = 32, 40
WEIGHTS = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}


@pytest.fixture(scope="module")
def tiny_net() -> Network:
    return Network(get_spec("vgg19"), as_params(vgg_layers(widths=(4, 6, 8, 8, 8))), "max")


@pytest.fixture(scope="module")
def images():
    return rand_image(H, W, 1), rand_image(36, 36, 2), rand_image(30, 30, 3)


def to_x(net, rgb) -> jax.Array:
    return jnp.asarray(rgb[..., ::-1] - np.array(net.spec.mean_bgr, np.float32))


def halves(h=H, w=W, soft: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Left and right half masks; ``soft`` px of linear ramp across the middle."""
    x = np.arange(w, dtype=np.float32)
    left = np.clip((w / 2 + soft / 2 - x) / max(soft, 1), 0, 1) if soft else (x < w // 2).astype(np.float32)
    left = np.broadcast_to(left, (h, w)).astype(np.float32)
    return left, 1 - left


def value_and_grad(net, x, targets, obj):
    f = jax.jit(jax.value_and_grad(lambda x: gatys.objective(x, net.params, targets, WEIGHTS, obj), has_aux=True))
    (total, parts), g = f(x)
    return float(total), np.asarray(parts), np.asarray(g)


# --------------------------------------------------------------------------------------------
# the masked objective
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["gram", "wasserstein"])
def test_all_ones_masks_give_the_unmasked_objective(tiny_net, images, loss):
    c, s, _ = (to_x(tiny_net, i) for i in images)
    x = to_x(tiny_net, rand_image(H, W, 7))
    obj = gatys.Objective(style_loss=loss)
    plain = gatys.prepare_targets(tiny_net.params, c, [s], [1.0], obj)
    ones = gatys.prepare_targets(tiny_net.params, c, [s], [1.0], obj, masks=[np.ones((H, W))],
                                 content_mask=np.ones((H, W)), style_masks=[np.ones((36, 36))])
    assert set(ones) == {"content", "gram" if loss == "gram" else "w2", "masks", "region", "content_mask"}
    t0, p0, g0 = value_and_grad(tiny_net, x, plain, obj)
    t1, p1, g1 = value_and_grad(tiny_net, x, ones, obj)
    # float32 rounding; W2's tr(S) + tr(S_t) - 2 tr(sqrt(..)) cancels and amplifies it
    rtol = 1e-5 if loss == "gram" else 1e-4
    assert t1 == pytest.approx(t0, rel=rtol)
    np.testing.assert_allclose(p1, p0, rtol=rtol)
    np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=10 * rtol * np.abs(g0).max())


def test_masked_style_and_content_terms_match_numpy(tiny_net, images):
    c, s1, s2 = (to_x(tiny_net, i) for i in images)
    x = to_x(tiny_net, rand_image(H, W, 8))
    obj = gatys.Objective()
    left, right = halves(soft=8)
    cmask = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    smask = np.zeros((30, 30), np.float32)
    smask[5:25, 10:30] = 1.0
    targets = gatys.prepare_targets(tiny_net.params, c, [s1, s2], [3.0, 1.0], obj, masks=[left, right],
                                    style_masks=[None, smask], content_mask=cmask)
    _, parts, _ = value_and_grad(tiny_net, x, targets, obj)

    spec = get_spec("vgg19")
    fx = {k: np.asarray(v[0], np.float64) for k, v in gatys.features(tiny_net.params, x[None], obj).items()}
    f1 = gatys.features(tiny_net.params, s1[None], obj)
    f2 = gatys.features(tiny_net.params, s2[None], obj)
    fc = gatys.features(tiny_net.params, c[None], obj)
    region = np.array([1.5, 0.5])  # blend 3:1 normalised to an average of 1

    def np_gram(f, m):
        flat = (f * m[..., None]).reshape(-1, f.shape[-1])
        return flat.T @ flat / (f.shape[-1] * np.sum(m ** 2))

    def at(mask, hw, k):
        size = (spec.output_size(hw[0], k), spec.output_size(hw[1], k))
        return np.asarray(media.resize(mask[..., None], size, "bilinear")[..., 0], np.float64).clip(0, 1)

    want_style = 0.0
    for k in obj.style_layers:
        t1 = np.asarray(gram(f1[k][0]), np.float64)
        t2 = np_gram(np.asarray(f2[k][0], np.float64), at(smask, (30, 30), k))
        for r, m, t in zip(region, (left, right), (t1, t2)):
            mk = at(m, (H, W), k)
            want_style += 100 * r * np.mean(mk ** 2) * np.mean((np_gram(fx[k], mk) - t) ** 2)
    k = obj.content_layers[0]
    want_content = 5 * np.mean(at(cmask, (H, W), k)[..., None] * (fx[k] - np.asarray(fc[k][0])) ** 2)
    assert parts[0] == pytest.approx(want_content, rel=1e-4)
    assert parts[1] == pytest.approx(want_style, rel=1e-4)


def test_style_mask_restricts_the_target_gram(tiny_net, images):
    c, s, _ = (to_x(tiny_net, i) for i in images)
    obj = gatys.Objective()
    top = np.zeros((36, 36), np.float32)
    top[:16] = 1.0
    targets = gatys.prepare_targets(tiny_net.params, c, [s], [1.0], obj, style_masks=[top])
    crop = gatys.prepare_targets(tiny_net.params, c, [s[:16]], [1.0], obj)
    # relu1_1 has the image's resolution: the masked Gram is the Gram of the top rows' features
    # (the crop's own border rows differ through the convolution's padding, so compare loosely)
    k = "relu1_1"
    feats = gatys.features(tiny_net.params, s[None], obj)[k][0]
    np.testing.assert_allclose(targets["gram"][k], gram(feats[:16]), rtol=1e-5)
    np.testing.assert_allclose(targets["gram"][k], crop["gram"][k], rtol=0.2)


# --------------------------------------------------------------------------------------------
# plan and run
# --------------------------------------------------------------------------------------------


def write_mask(path: Path, mask: np.ndarray) -> Path:
    Image.fromarray((np.asarray(mask) * 255).round().astype(np.uint8), "L").save(path)
    return path


def test_plan_reads_mask_files_as_grey_levels(tmp_path, images):
    left, right = halves(soft=8)
    plan = style.plan_style(images[0], [images[1], images[2]], size=40,
                            masks=[write_mask(tmp_path / "l.png", left), write_mask(tmp_path / "r.png", right)])
    np.testing.assert_allclose(plan.masks[0], left, atol=1 / 255)
    assert plan.masked and plan.mask_names["masks"] == [str(tmp_path / "l.png"), str(tmp_path / "r.png")]
    assert not style.plan_style(images[0], images[1], size=40).masked


@pytest.mark.parametrize("case, error, needles", [
    ("more masks", SettingsError, ("3 masks for 2 style images", "one --mask per --style")),
    ("fewer masks", SettingsError, ("1 masks for 2 style images",)),
    ("empty", SettingsError, ("mask 2", "empty", "style image 2 would apply nowhere")),
    ("aspect", SettingsError, ("mask 1 is 40x40", "expected the aspect ratio of the content image, 40x32",
                               "e.g. 40x32")),
    ("style aspect", SettingsError, ("style mask 1", "style image 1, 36x36")),
    ("style count", SettingsError, ("1 style masks for 2 style images",)),
    ("unreadable", MediaError, ("mask 1", "broken.png")),
    ("values", SettingsError, ("weights must be numbers in 0..1",)),
    ("ema lbfgs", SettingsError, ("--ema averages Adam's iterates", "--optimizer adam")),
    ("loss", SettingsError, ("unknown style loss 'l1'", "gram, wasserstein")),
    ("bands", SettingsError, ("cannot run band by band",)),
])
def test_plan_refuses_bad_masks_in_one_line(tmp_path, images, case, error, needles):
    left, right = halves()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    kwargs = {"more masks": dict(masks=[left, right, left]), "fewer masks": dict(masks=[left]),
              "empty": dict(masks=[left, np.zeros((H, W))]), "aspect": dict(masks=[np.ones((40, 40)), right]),
              "style aspect": dict(style_masks=[np.ones((10, 30)), None]),
              "style count": dict(style_masks=[None]), "unreadable": dict(masks=[broken, right]),
              "values": dict(masks=[left * 2, right]), "ema lbfgs": dict(ema=0.9),
              "loss": dict(style_loss="l1"), "bands": dict(masks=[left, right], band_rows=16)}[case]
    with pytest.raises(error) as e:
        style.plan_style(images[0], [images[1], images[2]], size=40, **kwargs)
    message = str(e.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.slow
def test_two_regions_run_with_a_sweep_and_coarse_to_fine(tiny_net, images):
    left, right = halves(soft=8)
    seen = []
    r = style.stylize(images[0], [images[1], images[2]], network=tiny_net, size=40, scales=[20, 40],
                      num_iterations=[4, 2], chunk=2, style_weight=[1e2, 1e3], masks=[left, right],
                      content_mask=np.full((H, W), 0.5), callback=lambda p: seen.append(p.losses["total"]))
    assert r.images.shape == (2, H, W, 3) and np.all(np.isfinite(r.images))
    assert np.all(np.isfinite(np.stack(seen)))
    assert r.settings["style_loss"] == "gram" and r.settings["masks"] == ["array", "array"]


@pytest.mark.slow
def test_video_style_frames_use_one_mask_for_every_frame(tiny_net, images):
    from jaxdream.video import StyleFrames
    left, right = halves(soft=8)
    maker = StyleFrames([images[1], images[2]], network=tiny_net, iterations_first=2, iterations=2, chunk=2,
                        masks=[left, right])
    first = maker.first(images[0])
    later = maker.next(images[0] * 0.9, first, first, np.ones((H, W), np.float32), "prev-warped")
    assert later.shape == (H, W, 3) and np.all(np.isfinite(later)) and np.isfinite(maker.loss)
    with pytest.raises(SettingsError, match="2 masks for 1 style image"):
        StyleFrames([images[1]], network=tiny_net, masks=[left, right]).first(images[0])


@pytest.mark.slow
def test_wasserstein_run_lowers_the_loss(tiny_net, images):
    seen = []
    style.stylize(images[0], images[1], network=tiny_net, size=40, num_iterations=20, chunk=5,
                  style_loss="wasserstein", callback=lambda p: seen.append(float(p.losses["total"][0])))
    assert np.all(np.isfinite(seen)) and seen[-1] < 0.5 * seen[0]


def test_adam_ema_is_the_bias_corrected_average_of_the_iterates():
    decay = 0.75
    state = optim.adam_init(jnp.zeros((2, 2, 3)), 4, decay)
    grad = lambda x: ((jnp.sum(x), jnp.zeros(3)), jnp.ones_like(x) + 0.1 * x)
    iterates = []
    for _ in range(5):
        state = optim.adam_update(state, grad, optax.adam(0.5))
        iterates.append(np.asarray(state.x, np.float64))
    weights = decay ** np.arange(4, -1, -1) * (1 - decay)
    want = np.tensordot(weights, np.stack(iterates), 1) / (1 - decay ** 5)
    np.testing.assert_allclose(optim.adam_average(state), want, rtol=1e-5)
    fresh = optim.adam_init(jnp.ones((2, 2, 3)), 4, decay)
    np.testing.assert_array_equal(optim.adam_average(fresh), np.ones((2, 2, 3)))


def test_stylize_with_ema_returns_the_average(tiny_net, images):
    kwargs = dict(network=tiny_net, size=40, num_iterations=6, chunk=3, optimizer="adam", init="image")
    plain = style.stylize(images[0], images[1], **kwargs)
    off = style.stylize(images[0], images[1], ema=0.0, **kwargs)
    avg = style.stylize(images[0], images[1], ema=0.9, **kwargs)
    np.testing.assert_array_equal(off.image, plain.image)
    assert avg.settings["ema"] == 0.9
    # the average lags behind the iterate: closer to the start (the content image)
    assert np.abs(avg.image - images[0]).mean() < np.abs(plain.image - images[0]).mean()


# --------------------------------------------------------------------------------------------
# DeepDream masks
# --------------------------------------------------------------------------------------------


DREAM = dict(layers="inception_3a/output", steps=2, octaves=2, jitter=4, seed=0)


@pytest.fixture(scope="module")
def gnet(googlenet_caffemodel) -> Network:
    return Network(get_spec("googlenet"), unflatten("googlenet", googlenet_caffemodel.flat))


def dream_image(h=64, w=72, seed=0) -> np.ndarray:
    return np.clip(media.resize(np.random.default_rng(seed).uniform(0, 255, (h // 8, w // 8, 3))
                                .astype(np.float32), (h, w)), 0, 255)


def test_all_zero_dream_mask_leaves_the_image_unchanged(gnet):
    image = dream_image()
    out = Dreamer(make_config(**DREAM), network=gnet, mask=np.zeros((64, 72))).run(image)
    np.testing.assert_array_equal(out, image)
    # the zoom and video drivers' per-frame step too
    step = Dreamer(make_config(**DREAM), network=gnet, mask=np.zeros((8, 9))).step(image, jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(step), image)


def test_dream_mask_keeps_the_black_part_and_ones_equal_no_mask(gnet):
    image = dream_image(seed=1)
    left = np.zeros((64, 72), np.float32)
    left[:, :36] = 1.0
    masked = Dreamer(make_config(**DREAM), network=gnet, mask=left).run(image)
    np.testing.assert_array_equal(masked[:, 40:], image[:, 40:])  # the smaller octave's mask blurs 3 px
    assert np.abs(masked[:, :32] - image[:, :32]).mean() > 0.5
    plain = Dreamer(make_config(**DREAM), network=gnet).run(image)
    ones = Dreamer(make_config(**DREAM), network=gnet, mask=np.ones((64, 72))).run(image)
    np.testing.assert_allclose(ones, plain, atol=0.05)


@pytest.mark.parametrize("mode", ["mean", "std", "lapnorm"])
def test_masked_normalisation(mode):
    g = jnp.asarray(np.random.default_rng(0).standard_normal((16, 16, 3)), jnp.float32)
    ones = normalize_gradient(g, mode, 3, jnp.ones((16, 16)))
    np.testing.assert_allclose(ones, normalize_gradient(g, mode, 3), rtol=1e-4, atol=1e-5)
    zero = normalize_gradient(g, mode, 3, jnp.zeros((16, 16)))
    np.testing.assert_array_equal(zero, np.zeros((16, 16, 3)))
    half = np.zeros((16, 16), np.float32)
    half[:8] = 1.0
    out = np.asarray(normalize_gradient(g, mode, 3, jnp.asarray(half)))
    assert np.all(out[8:] == 0)
    if mode == "mean":  # the region's steps are as large as an unmasked dream's
        assert np.abs(out[:8]).mean() == pytest.approx(1.0, rel=1e-4)


# --------------------------------------------------------------------------------------------
# command lines: bad masks are one line
# --------------------------------------------------------------------------------------------


@pytest.fixture
def files(tmp_path, images):
    content, s1, s2 = (tmp_path / n for n in ("content.png", "s1.png", "s2.png"))
    for path, img in zip((content, s1, s2), images):
        media.save_image(path, img)
    left, right = halves()
    write_mask(tmp_path / "left.png", left)
    write_mask(tmp_path / "right.png", right)
    write_mask(tmp_path / "square.png", np.ones((20, 20)))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    return tmp_path


@pytest.mark.parametrize("case, needles", [
    ("aspect", ("mask 1 (square.png) is 20x20", "expected the aspect ratio of the content image, 40x32")),
    ("more", ("3 masks for 2 style images",)),
    ("unreadable", ("mask 2", "broken.png")),
    ("ema", ("--ema averages Adam's iterates",)),
    ("dream aspect", ("mask (square.png) is 20x20", "expected the aspect ratio of the input")),
    ("dream unreadable", ("mask", "broken.png")),
    ("dream two", ("2 masks given: a dream takes one --mask",)),
])
def test_cli_bad_masks_are_one_error_line(files, case, needles, capsys, monkeypatch):
    from jaxdream.cli import main as cli_main
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")
    monkeypatch.setenv("JAXDREAM_HOME", str(files / "home"))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    out = files / "out.png"
    base = ["style", files / "content.png", "-s", files / "s1.png", "-s", files / "s2.png", "-o", out,
            "--size", "40", "--iterations", "1", "--weights", files / "never-loaded.h5"]
    dream = ["dream", files / "content.png", "-o", out, "--weights", files / "never-loaded.h5", "--layers",
             "inception_3a/output"]
    argv = {"aspect": [*base, "--mask", files / "square.png", "--mask", files / "right.png"],
            "more": [*base, *["--mask", files / "left.png"] * 3],
            "unreadable": [*base, "--mask", files / "left.png", "--mask", files / "broken.png"],
            "ema": [*base, "--ema", "0.9"],
            "dream aspect": [*dream, "--mask", files / "square.png"],
            "dream unreadable": [*dream, "--mask", files / "broken.png"],
            "dream two": [*dream, "--mask", files / "left.png", "--mask", files / "left.png"]}[case]
    rc = cli_main.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len([ln for ln in lines if ln.startswith("jaxdream: error:")]) == 1, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()


def test_cli_style_dry_run_with_masks(files, capsys, monkeypatch):
    from jaxdream.cli import main as cli_main
    monkeypatch.setenv("JAXDREAM_HOME", str(files / "home"))
    rc = cli_main.main([str(a) for a in [
        "style", files / "content.png", "-s", files / "s1.png", "-s", files / "s2.png", "-o", files / "o.png",
        "--size", "40", "--mask", files / "left.png", "--mask", files / "right.png", "--content-mask",
        files / "left.png", "--style-mask", "none", "--style-mask", files / "square.png",
        "--style-loss", "wasserstein", "--optimizer", "adam", "--ema", "0.99", "--dry-run"]])
    assert rc == 0, capsys.readouterr().err
    assert "dry run" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# real weights: two regions, two styles
# --------------------------------------------------------------------------------------------


def gram_distances(net, image, masks, styles, obj) -> np.ndarray:
    """d[i, j]: sum over style layers of mean((masked Gram of region i - Gram of style j)**2)."""
    feats = gatys.features(net.params, to_x(net, image)[None], obj)
    grams = [gatys.features(net.params, to_x(net, s)[None], obj) for s in styles]
    d = np.zeros((len(masks), len(styles)))
    for k in obj.style_layers:
        lm = [gatys.layer_masks(m, obj, [k])[k] for m in masks]
        for i, m in enumerate(lm):
            g = masked_gram(feats[k][0], m)
            for j, s in enumerate(grams):
                d[i, j] += float(jnp.mean((g - gram(s[k][0])) ** 2))
    return d


@pytest.mark.realweights
@pytest.mark.skipif(not (VGG_H5.is_file() and MEDIA.is_dir()), reason=REAL_SKIP_REASON)
def test_real_two_regions_take_their_own_style():
    import jaxdream
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = jaxdream.load_network("vgg19", VGG_H5)
    content = media.load_image(MEDIA / "chelsea.png", 128)
    styles = [media.load_image(MEDIA / n, 128) for n in ("hubble_deep_field.png", "immunohistochemistry.png")]
    left, right = halves(*content.shape[:2])
    r = style.stylize(content, styles, network=net, size=128, num_iterations=100, chunk=50, init="image",
                      masks=[left, right])
    d = gram_distances(net, r.image, [left, right], styles, gatys.Objective())
    assert d[0, 1] > 3 * d[0, 0] and d[1, 0] > 3 * d[1, 1], d
