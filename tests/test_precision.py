"""bfloat16 networks: the same objective to bfloat16's accuracy, float32 where sums are taken,
and unknown precisions refused."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import as_params, vgg_layers

from jaxdream.objectives import gatys
from jaxdream import style
from jaxdream.runtime import precision
from jaxdream.errors import SettingsError


def _cosine(a, b) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_style_objective_in_bfloat16_matches_float32():
    params = as_params(vgg_layers(widths=(8, 8, 8, 8, 8), seed=1))
    rng = np.random.default_rng(0)
    content, style_img, x = (rng.uniform(-100, 100, (48, 40, 3)).astype(np.float32) for _ in range(3))
    weights = {"content": jnp.float32(5), "style": jnp.float32(100), "tv": jnp.float32(1e-3)}
    results = {}
    for p in precision.PRECISIONS:
        obj = gatys.Objective(precision=p)
        targets = gatys.prepare_targets(params, content, [style_img], [1.0], obj)
        assert all(g.dtype == jnp.float32 for g in targets["gram"].values())
        vg = jax.jit(jax.value_and_grad(gatys.objective, has_aux=True), static_argnames=("spec",))
        (total, parts), grad = vg(jnp.asarray(x), params, targets, weights, spec=obj)
        assert total.dtype == grad.dtype == jnp.float32
        results[p] = (float(total), np.asarray(parts), np.asarray(grad))
    (t32, p32, g32), (t16, p16, g16) = results["float32"], results["bfloat16"]
    print("bf16 vs f32", t16 / t32, p16 / p32, _cosine(g16, g32))
    # bfloat16 keeps 8 bits of mantissa (0.4% per rounding); a squared difference of Gram
    # matrices of random narrow features amplifies that to a few percent
    assert abs(t16 - t32) / t32 < 6e-2
    np.testing.assert_allclose(p16, p32, rtol=1e-1)
    assert _cosine(g16, g32) > 0.99


@pytest.mark.slow
def test_dream_gradient_in_bfloat16_matches_float32(googlenet_caffemodel):
    import importlib
    dream = importlib.import_module("jaxdream.dream")
    from jaxdream.nets.network import load_network
    net = load_network("googlenet", googlenet_caffemodel.path)
    rgb = jnp.asarray(np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)), jnp.float32)
    grads = {}
    for p in precision.PRECISIONS:
        obj = dream.Objective(layers=("inception_3a/output",), precision=p)
        grads[p] = np.asarray(jax.grad(lambda x: dream._objective_value(
            net.params, x, jnp.ones(1), None, obj))(rgb))
        assert grads[p].dtype == np.float32
    assert _cosine(grads["bfloat16"], grads["float32"]) > 0.98


def test_unknown_precision_is_refused():
    from jaxdream.dream import make_config
    with pytest.raises(SettingsError, match="unknown precision 'float16'"):
        make_config(precision="float16")
    img = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(SettingsError, match="unknown precision"):
        style.plan_style(img, img, size=32, precision="fp8")
    assert make_config(precision="bfloat16").precision == "bfloat16"
