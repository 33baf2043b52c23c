"""Loss terms of spatial control and the Wasserstein style loss against NumPy: masked Gram and
content terms, the Newton-Schulz square root, Gaussian moments and the W2 distance."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdream.objectives.losses import (content_loss, gaussian_moments, gram, gram_sum, masked_gram, sqrtm_newton_schulz,
                             trace_sqrtm, wasserstein_loss)


def features(h=5, w=6, c=4, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((h, w, c)) * 3 + rng.uniform(0, 2, c)).astype(np.float32)


def soft_mask(h=5, w=6, seed=1) -> np.ndarray:
    m = np.random.default_rng(seed).uniform(0, 1, (h, w)).astype(np.float32)
    m[0] = 0.0  # an unselected row
    return m


def np_sqrtm(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix by NumPy's eigendecomposition (float64)."""
    vals, vecs = np.linalg.eigh(np.asarray(a, np.float64))
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


# --------------------------------------------------------------------------------------------
# masked Gram and content terms
# --------------------------------------------------------------------------------------------


def test_masked_gram_matches_numpy():
    f, m = features(), soft_mask()
    flat = (f * m[..., None]).reshape(-1, 4).astype(np.float64)
    want = flat.T @ flat / (4 * np.sum(m.astype(np.float64) ** 2))
    got = jax.jit(masked_gram)(jnp.asarray(f), jnp.asarray(m))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # hand check: one selected position with channels (1, 2) at weight 0.5:
    # (0.5 * [1, 2])^T (0.5 * [1, 2]) / (2 * 0.25) = [[1, 2], [2, 4]] / 2
    f2 = np.zeros((1, 2, 2), np.float32)
    f2[0, 0] = [1.0, 2.0]
    np.testing.assert_allclose(masked_gram(jnp.asarray(f2), jnp.array([[0.5, 0.0]])), [[0.5, 1.0], [1.0, 2.0]])


def test_masked_gram_of_all_ones_is_the_gram_and_of_an_empty_mask_zero():
    f = jnp.asarray(features())
    np.testing.assert_allclose(masked_gram(f, jnp.ones((5, 6))), gram(f), rtol=1e-6)
    assert float(jnp.abs(masked_gram(f, jnp.zeros((5, 6)))).max()) == 0.0  # no NaN
    # a region's Gram keeps its scale however small the region: the features repeated
    big = jnp.tile(f, (2, 1, 1))
    half = jnp.concatenate([jnp.ones((5, 6)), jnp.zeros((5, 6))])
    np.testing.assert_allclose(masked_gram(big, half), gram(f), rtol=1e-6)


def test_masked_gram_batch_of_masks_and_shape_errors():
    f, m = jnp.asarray(features()), jnp.asarray(np.stack([soft_mask(seed=2), soft_mask(seed=3)]))
    got = masked_gram(f, m)
    assert got.shape == (2, 4, 4)
    np.testing.assert_allclose(got[1], masked_gram(f, m[1]), rtol=1e-6)
    with pytest.raises(ValueError, match="does not match the positions"):
        masked_gram(f, jnp.ones((6, 5)))


def test_masked_content_loss_matches_numpy_and_ones_is_unmasked():
    f, t, m = features(seed=4), features(seed=5), soft_mask()
    want = 5.0 * np.mean(m[..., None].astype(np.float64) * (f - t).astype(np.float64) ** 2)
    got = jax.jit(content_loss)(jnp.asarray(f), jnp.asarray(t), 5.0, jnp.asarray(m))
    assert float(got) == pytest.approx(want, rel=1e-5)
    ones = content_loss(jnp.asarray(f), jnp.asarray(t), 5.0, jnp.ones((5, 6)))
    assert float(ones) == pytest.approx(float(content_loss(jnp.asarray(f), jnp.asarray(t), 5.0)), rel=1e-6)
    with pytest.raises(ValueError, match="mask"):
        content_loss(jnp.asarray(f), jnp.asarray(t), 1.0, jnp.ones((2, 2)))


# --------------------------------------------------------------------------------------------
# Newton-Schulz square root, Gaussian moments, W2
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,cond", [(2, 3.0), (5, 50.0), (8, 1e3), (16, 1e4)])
def test_newton_schulz_sqrt_matches_numpy_eigh(n, cond):
    rng = np.random.default_rng(n)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * np.geomspace(1.0, 1.0 / cond, n)) @ q.T * 7.0  # SPD, eigenvalues 7 .. 7/cond
    got = np.asarray(jax.jit(sqrtm_newton_schulz)(jnp.asarray(a, jnp.float32)), np.float64)
    want = np_sqrtm(a)
    np.testing.assert_allclose(got, want, atol=2e-5 * np.abs(want).max())
    np.testing.assert_allclose(got @ got, a, atol=1e-4 * np.abs(a).max())


def test_newton_schulz_batched_zero_and_hand_values():
    a = jnp.stack([jnp.diag(jnp.array([4.0, 9.0])), jnp.zeros((2, 2))])
    got = sqrtm_newton_schulz(a)
    np.testing.assert_allclose(got[0], np.diag([2.0, 3.0]), atol=1e-5)
    np.testing.assert_array_equal(got[1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="square"):
        sqrtm_newton_schulz(jnp.ones((2, 3)))


def test_gaussian_moments_match_numpy_weighted():
    f, m = features(), soft_mask()
    w = (m.astype(np.float64) ** 2).ravel()
    w /= w.sum()
    flat = f.reshape(-1, 4).astype(np.float64)
    mean, cov = jax.jit(gaussian_moments)(jnp.asarray(f), jnp.asarray(m))
    np.testing.assert_allclose(mean, w @ flat, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cov, np.cov(flat.T, aweights=w, bias=True), rtol=1e-4, atol=1e-5)
    mean, cov = gaussian_moments(jnp.asarray(f))
    np.testing.assert_allclose(cov, np.cov(flat.T, bias=True), rtol=1e-4, atol=1e-5)


def np_w2(m1, c1, m2, c2) -> float:
    r2 = np_sqrtm(c2)
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(np_sqrtm(r2 @ c1 @ r2)))


def test_w2_loss_matches_numpy_and_is_zero_for_identical_features():
    f1, f2 = features(8, 8, 6, seed=6), features(8, 8, 6, seed=7) * 0.5 + 1.0
    m1, c1 = gaussian_moments(jnp.asarray(f1))
    m2, c2 = gaussian_moments(jnp.asarray(f2))
    loss = jax.jit(wasserstein_loss)
    got = float(loss(m1, c1, m2, c2, sqrtm_newton_schulz(c2), 3.0))
    want = 3.0 * np_w2(*(np.asarray(a, np.float64) for a in (m1, c1, m2, c2))) / 6
    assert got == pytest.approx(want, rel=1e-3)
    same = float(loss(m1, c1, m1, c1, sqrtm_newton_schulz(c1), 1.0))
    assert abs(same) < 1e-5 * float(jnp.trace(c1))
    with pytest.raises(ValueError, match="channels"):
        wasserstein_loss(m1, c1, m2[:3], c2, c2)


def test_w2_gradient_is_finite_and_points_to_the_target():
    f1, f2 = jnp.asarray(features(6, 6, 4, seed=8)), jnp.asarray(features(6, 6, 4, seed=9) * 2.0)
    m2, c2 = gaussian_moments(f2)
    target = (m2, c2, sqrtm_newton_schulz(c2))
    f = jax.jit(lambda x: wasserstein_loss(*gaussian_moments(x), *target))
    g = jax.grad(f)(f1)
    assert bool(jnp.all(jnp.isfinite(g)))
    assert float(f(f1 - 1e-3 * g)) < float(f(f1))


def test_trace_sqrtm_value_and_gradient_match_numpy():
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    a = (q * np.geomspace(5.0, 0.05, 6)) @ q.T
    value, grad = jax.jit(jax.value_and_grad(trace_sqrtm))(jnp.asarray(a, jnp.float32))
    assert float(value) == pytest.approx(np.trace(np_sqrtm(a)), rel=1e-5)
    np.testing.assert_allclose(grad, 0.5 * np.linalg.inv(np_sqrtm(a)), rtol=1e-3, atol=1e-4)


def test_w2_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        f1 = jnp.asarray(features(6, 6, 4, seed=10), jnp.float64)
        m2, c2 = gaussian_moments(jnp.asarray(features(6, 6, 4, seed=11), jnp.float64) * 1.5)
        target = (m2, c2, sqrtm_newton_schulz(c2))
        f = jax.jit(lambda x: wasserstein_loss(*gaussian_moments(x), *target))
        g = jax.grad(f)(f1)
        rng = np.random.default_rng(0)
        for _ in range(3):
            d = jnp.asarray(rng.standard_normal(f1.shape))
            fd = (f(f1 + 1e-5 * d) - f(f1 - 1e-5 * d)) / 2e-5
            assert float(jnp.vdot(g, d)) == pytest.approx(float(fd), rel=1e-5)


def test_gram_gradient_is_f_times_the_symmetrised_cotangent():
    """gram_sum's one-product backward: d<ct, FᵀF>/dF = F (ct + ctᵀ), for a symmetric and a
    non-symmetric cotangent, with leading batch axes, against NumPy."""
    rng = np.random.default_rng(7)
    f = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    flat = f.reshape(2, 12, 5).astype(np.float64)
    for ct in (rng.standard_normal((2, 5, 5)), None):
        if ct is None:  # symmetric, as the Gram losses give
            a = rng.standard_normal((2, 5, 5))
            ct = a + np.swapaxes(a, -1, -2)
        got = jax.grad(lambda v: jnp.vdot(gram_sum(v), jnp.asarray(ct, jnp.float32)))(jnp.asarray(f))
        want = np.einsum("bpc,bcd->bpd", flat, ct + np.swapaxes(ct, -1, -2)).reshape(f.shape)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
