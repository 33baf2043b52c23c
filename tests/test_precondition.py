"""L-BFGS's Laplacian-pyramid preconditioner (``--lbfgs-precondition``): the map, its use as an
initial inverse Hessian, and how style and video runs take it."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import quadratic

from jaxdream import optim
from jaxdream import style
from jaxdream.cli.main import main as cli_main
from jaxdream.errors import SettingsError
from jaxdream.video import StyleFrames


def _numpy_pyramid(v: np.ndarray, weight: float, levels: int) -> np.ndarray:
    """``v + weight * sum_k U_k D_k v`` pixel by pixel: each pixel gets its 2^k block's sum
    over the image, divided by 4^k (blocks past the edge hold fewer pixels)."""
    out = v.astype(np.float64).copy()
    _, h, w, _ = v.shape
    for k in range(1, levels + 1):
        f = 2 ** k
        for i in range(h):
            for j in range(w):
                bi, bj = i // f * f, j // f * f
                out[:, i, j] += weight * v[:, bi:bi + f, bj:bj + f].sum(axis=(1, 2)) / f ** 2
    return out


def test_pyramid_matches_numpy_and_is_symmetric_positive_definite():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, 13, 10, 3)).astype(np.float32)
    m = optim.pyramid_preconditioner(0.7, levels=3)
    np.testing.assert_allclose(np.asarray(m(jnp.asarray(v))), _numpy_pyramid(v, 0.7, 3), rtol=1e-5, atol=1e-5)
    # as a dense matrix on a 5x6x1 image: symmetric, eigenvalues in [1, 1 + levels * weight]
    basis = np.eye(30, dtype=np.float32).reshape(30, 5, 6, 1)
    dense = np.asarray(optim.pyramid_preconditioner(2.0)(jnp.asarray(basis))).reshape(30, 30)
    np.testing.assert_allclose(dense, dense.T, atol=1e-6)
    eig = np.linalg.eigvalsh(dense.astype(np.float64))
    assert eig.min() >= 1 - 1e-5 and eig.max() <= 1 + optim.PYRAMID_LEVELS * 2.0 + 1e-4
    assert eig.max() > 3  # the block means do move further
    assert optim.pyramid_preconditioner(0.0) is None  # weight 0: plain L-BFGS


@pytest.mark.slow
def test_pyramid_as_the_exact_inverse_hessian_lands_on_the_minimum():
    """On the quadratic whose Hessian is M^-1 the preconditioned L-BFGS's second step lands on
    the minimum; plain L-BFGS does not (the compiled step takes the same map)."""
    rng = np.random.default_rng(1)
    shape = (1, 6, 5, 3)
    n = int(np.prod(shape))
    m = optim.pyramid_preconditioner(1.0)
    dense = np.asarray(m(jnp.asarray(np.eye(n, dtype=np.float32).reshape(n, *shape[1:])))).reshape(n, n)
    hessian = jnp.asarray(np.linalg.inv(dense.astype(np.float64)), jnp.float32)
    center = jnp.asarray(rng.standard_normal(shape) * 3, jnp.float32)

    def value_and_grad(x):
        g = (hessian @ (x - center).reshape(-1)).reshape(shape)
        return (0.5 * jnp.sum((x - center) * g, axis=(1, 2, 3)), jnp.zeros((1, 3))), g
    runs = {}
    for name, pre in {"plain": None, "pyramid": m}.items():
        state = optim.lbfgs_init(jnp.zeros(shape, jnp.float32), 10, n_losses=4)
        for _ in range(2):
            state = optim.lbfgs_update(state, value_and_grad, jnp.float32(1), precondition=pre)
        runs[name] = np.asarray(state.x)
    np.testing.assert_allclose(runs["pyramid"], np.asarray(center), atol=2e-3)
    assert np.abs(runs["plain"] - np.asarray(center)).max() > 0.5
    # the identity-free fallback: with weight 0 the hook is neural-style's L-BFGS, bit for bit
    vg = quadratic(jnp.ones(shape), center)
    a = optim.lbfgs_init(jnp.zeros(shape, jnp.float32), 10, n_losses=4)
    b = optim.lbfgs_init(jnp.zeros(shape, jnp.float32), 10, n_losses=4)
    for _ in range(3):
        a = optim.lbfgs_update(a, vg, jnp.float32(1))
        b = optim.lbfgs_update(b, vg, jnp.float32(1), precondition=optim.pyramid_preconditioner(0))
    np.testing.assert_array_equal(np.asarray(a.x), np.asarray(b.x))


@pytest.mark.slow
@pytest.mark.parametrize("in_jit_loop", [False, True])
def test_stylize_takes_the_weight(tiny_net, images, in_jit_loop):
    kw = dict(network=tiny_net, size=40, num_iterations=6, chunk=3, init="image", in_jit_loop=in_jit_loop)
    plain = style.stylize(images[0], images[1], **kw)
    zero = style.stylize(images[0], images[1], lbfgs_precondition=0.0, **kw)
    pre = style.stylize(images[0], images[1], lbfgs_precondition=1.0, **kw)
    np.testing.assert_array_equal(plain.iterates, zero.iterates)
    assert np.abs(pre.iterates - plain.iterates).max() > 1e-3
    assert np.isfinite(pre.losses["total"]).all()
    assert pre.settings["lbfgs_precondition"] == 1.0 and plain.settings["lbfgs_precondition"] == 0.0
    # the same steps band by band (exact evaluation, same preconditioned iteration)
    banded = style.stylize(images[0], images[1], lbfgs_precondition=1.0, band_rows=16, **kw)
    np.testing.assert_allclose(banded.iterates, pre.iterates, rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize("bad, message", [
    ({"lbfgs_precondition": -1.0}, "lbfgs precondition must be a number >= 0 and <= 100, got -1"),
    ({"lbfgs_precondition": float("nan")}, "lbfgs precondition must be a number >= 0 and <= 100, got nan"),
    ({"lbfgs_precondition": 1.0, "optimizer": "adam"},
     "--lbfgs-precondition shapes L-BFGS's steps; it needs --optimizer lbfgs"),
])
def test_bad_settings_are_one_clear_line(images, bad, message):
    with pytest.raises(SettingsError) as e:
        style.plan_style(images[0], [images[1]], size=40, **bad)
    assert str(e.value) == message


@pytest.mark.slow
def test_video_later_frames_are_preconditioned(tiny_net, images, monkeypatch):
    """Frame 0 and the independent baseline run neural-style's L-BFGS; later frames the
    maker's weight (default 1); Adam never gets one."""
    seen = []
    real = style.stylize

    def spy(*a, **kw):
        seen.append(kw["lbfgs_precondition"])
        return real(*a, **kw)
    monkeypatch.setattr(style, "stylize", spy)
    frame = images[0]
    mask = np.ones(frame.shape[:2], np.float32)
    maker = StyleFrames([images[1]], network=tiny_net, iterations_first=3, iterations=3, chunk=3)
    out0 = maker.first(frame)
    maker.next(frame, out0, out0, mask, "prev-warped")
    maker.independent(frame)
    assert seen == [0.0, 1.0, 0.0]
    assert maker.settings()["lbfgs_precondition"] == 1.0
    seen.clear()
    StyleFrames([images[1]], network=tiny_net, iterations_first=3, iterations=3, chunk=3,
                lbfgs_precondition=2.5).next(frame, out0, out0, mask, "prev-warped")
    StyleFrames([images[1]], network=tiny_net, iterations_first=3, iterations=3, chunk=3,
                optimizer="adam").next(frame, out0, out0, mask, "prev-warped")
    assert seen == [2.5, 0.0]
    with pytest.raises(SettingsError, match="lbfgs precondition must be"):
        StyleFrames([images[1]], network=tiny_net, lbfgs_precondition=-1)


def test_cli_style_flag(tmp_path, pngs, capsys, monkeypatch):
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "home"))
    content, style_img = pngs
    argv = ["style", str(content), "--style", str(style_img), "-o", str(tmp_path / "out.png"), "--size", "32"]
    assert cli_main([*argv, "--lbfgs-precondition", "2", "--dry-run"]) == 0
    assert "lbfgs with a pyramid preconditioner of weight 2" in capsys.readouterr().out
    assert cli_main([*argv, "--dry-run"]) == 0
    assert "preconditioner" not in capsys.readouterr().out  # the style command's default: off
    rc = cli_main([*argv, "--lbfgs-precondition", "1e9"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "argument --lbfgs-precondition: must be a number >= 0 and <= 100" in err[0]
    rc = cli_main([*argv, "--optimizer", "adam", "--lbfgs-precondition", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and err == ["jaxdream: error: --lbfgs-precondition shapes L-BFGS's steps; it needs --optimizer lbfgs"]
    assert not (tmp_path / "out.png").exists()
