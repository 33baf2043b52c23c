"""Devices and meshes (jaxdream.runtime.parallel); the style objective band by band and height-sharded
(jaxdream.objectives.bands); several devices and several processes, each in a subprocess.

Tolerances. Band-wise and sharded evaluations add the same float32 terms in another order (Gram
sums band by band, convolutions on windows of another shape), so they differ from the
whole-image program by rounding only: a few float32 ulps (6e-8) times the square root of the
number of terms in a sum (about 1e3-1e4 here), i.e. up to about 1e-6 relative. Measured: at most
1e-6 for losses and gradients. The tests allow 1e-5 (the requirement), ten times the rounding
and four orders of magnitude below what a missing halo row does (1e-2, see
``test_too_small_halo_is_detected``). Gradients are compared relative to their largest entry:
an entry-by-entry relative error is meaningless where an entry is close to zero.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdream.objectives import gatys
from jaxdream.objectives import bands
from jaxdream.runtime import parallel
from jaxdream.errors import SettingsError
from jaxdream.nets.vgg19 import BLOCKS

TESTS = Path(__file__).resolve().parent
#: VGG-19's structure with a few channels per layer: the width is not the point here.
NARROW = (4, 6, 8, 8, 8)
TOL = 1e-5
#: Subprocess limits (seconds): generous for a loaded 2-core machine, short of hanging forever.
FOUR_DEVICE_TIMEOUT = 300
CLUSTER_TIMEOUT = 120


# --------------------------------------------------------------------------------------------
# helpers (also imported by the subprocess scripts below)
# --------------------------------------------------------------------------------------------


def vgg_params(widths=NARROW, seed: int = 0) -> dict:
    """Random He-initialised VGG-19 conv parameters of the given block widths."""
    rng = np.random.default_rng(seed)
    params, cin = {}, 3
    for b, (n, width) in enumerate(zip(BLOCKS, widths), start=1):
        for i in range(1, n + 1):
            kernel = rng.standard_normal((3, 3, cin, width)).astype(np.float32) * np.sqrt(2 / (9 * cin))
            params[f"conv{b}_{i}"] = {"kernel": jnp.asarray(kernel),
                                      "bias": jnp.asarray(0.1 * rng.standard_normal(width), jnp.float32)}
            cin = width
    return {"params": params}


def problem(h: int, w: int, spec: gatys.Objective, seed: int = 0, widths=NARROW):
    """(x, params, targets, weights) of a random style problem at h x w."""
    rng = np.random.default_rng(seed)
    params = vgg_params(widths, seed)
    content = rng.standard_normal((h, w, 3)).astype(np.float32) * 50
    # the same shape as the content: one compile of the target features, not two
    style_img = rng.standard_normal((h, w, 3)).astype(np.float32) * 80
    targets = gatys.prepare_targets(params, content, [style_img], [1.0], spec)
    weights = {"content": jnp.float32(5.0), "style": jnp.float32(100.0), "tv": jnp.float32(1e-3)}
    if spec.temporal:
        targets["temporal"] = {
            "image": jnp.asarray(rng.standard_normal((h, w, 3)) * 30, jnp.float32),
            "mask": jnp.asarray(rng.uniform(size=(h, w, 1)), jnp.float32)}
        weights["temporal"] = jnp.float32(2.0)
    x = jnp.asarray(rng.standard_normal((h, w, 3)) * 40, jnp.float32)
    return x, params, targets, weights


def whole_image(x, params, targets, weights, spec):
    """``jax.value_and_grad(gatys.objective, has_aux=True)`` on the whole image, jitted."""
    vg = jax.jit(jax.value_and_grad(gatys.objective, has_aux=True), static_argnames="spec")
    (total, parts), grad = vg(x, params, targets, weights, spec=spec)
    return total, parts, grad


def rel_err(got, want) -> float:
    """Largest absolute difference relative to the largest magnitude of ``want``."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(code: str, *args: str, env: dict | None = None, timeout: float = 120) -> dict:
    """Run ``code`` in a fresh interpreter; return the JSON object on its last stdout line."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    try:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                              env=full_env, timeout=timeout, cwd=TESTS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"subprocess did not finish within {timeout} s")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        pytest.fail(f"subprocess failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


FULL = gatys.Objective()  # relu1_1 .. relu5_1 style, relu4_2 content
SHALLOW = gatys.Objective(content_layers=("relu3_2",),
                          style_layers=("relu1_1", "relu2_1", "relu3_1"), temporal=True)


# --------------------------------------------------------------------------------------------
# jaxdream.runtime.parallel in this process (one CPU device)
# --------------------------------------------------------------------------------------------


def test_devices_and_mesh_one_process():
    n = len(jax.devices())
    assert parallel.devices() == jax.devices()
    assert parallel.devices(1) == jax.devices()[:1]
    with pytest.raises(SettingsError, match=rf"--devices {n + 1}: only {n} devices? \(cpu\)"):
        parallel.devices(n + 1)
    with pytest.raises(SettingsError, match="at least 1"):
        parallel.devices(0)
    m = parallel.mesh(1)
    assert m.size == 1 and m.axis_names == ("d",)
    text = parallel.describe(m)
    assert text.startswith("backend: cpu") and "processes: 1" in text and "\n" not in text[-1:]
    assert parallel.is_writer()


def test_pad_batch_and_height_padding():
    x = np.arange(3 * 2).reshape(3, 2)
    padded, n = parallel.pad_batch(x, 4)
    assert n == 3 and padded.shape == (4, 2)
    np.testing.assert_array_equal(padded[3], x[2])
    tree, n = parallel.pad_batch({"a": jnp.ones((5, 2)), "b": jnp.arange(5)}, 4)
    assert n == 5 and tree["a"].shape == (8, 2) and list(tree["b"]) == [0, 1, 2, 3, 4, 4, 4, 4]
    same, n = parallel.pad_batch(x, 3)
    assert same is x and n == 3
    with pytest.raises(SettingsError, match="disagree"):
        parallel.pad_batch({"a": np.ones(2), "b": np.ones(3)}, 2)
    assert parallel.height_padding(30, 4) == 2 and parallel.height_padding(32, 4) == 0
    img = np.arange(30, dtype=np.float32).reshape(1, 30, 1, 1)
    out = parallel.pad_height(img, 4, axis=1)
    assert out.shape == (1, 32, 1, 1) and list(out[0, 28:, 0, 0]) == [28, 29, 29, 29]


def test_sharding_on_one_device():
    m = parallel.mesh(1)
    xs = parallel.shard_batch(np.ones((3, 4), np.float32), m)
    assert xs.sharding.spec == jax.sharding.PartitionSpec("d", None)
    img = parallel.shard_height(np.ones((2, 8, 5, 3), np.float32), m)
    assert img.sharding.spec == jax.sharding.PartitionSpec(None, "d", None, None)
    rep = parallel.replicate({"w": np.ones(2)}, m)
    assert rep["w"].sharding.is_fully_replicated


def test_cluster_detection_is_conservative():
    assert not parallel.cluster_detected({})
    assert not parallel.cluster_detected({"SLURM_JOB_ID": "7"})  # inside an allocation only
    assert not parallel.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_PROCID": "0",
                                          "SLURM_NTASKS": "1"})
    assert parallel.cluster_detected({"SLURM_JOB_ID": "7", "SLURM_PROCID": "1",
                                      "SLURM_NTASKS": "4"})
    assert parallel.cluster_detected({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    assert not parallel.cluster_detected({"OMPI_COMM_WORLD_SIZE": "1"})
    assert parallel.cluster_detected({"OMPI_COMM_WORLD_SIZE": "2"})


def test_initialize_distributed_is_a_no_op_without_a_cluster(monkeypatch):
    for name in parallel.CLUSTER_ENV:
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize_distributed() is False
    with pytest.raises(SettingsError, match="process-id 2"):
        parallel.initialize_distributed("127.0.0.1:1", 2, 2)


# --------------------------------------------------------------------------------------------
# jaxdream.objectives.bands on one device
# --------------------------------------------------------------------------------------------


def test_band_geometry():
    # relu5_1: 4 pools; halo 70 rows (see bands' docstring) rounded up to a multiple of 16
    assert bands.band_geometry(FULL) == (16, 80)
    # relu3_2: 2 pools; 2 convs at 1/4, x2, +2 convs, x2, +2 convs = 14, rounded up to 16
    assert bands.band_geometry(SHALLOW) == (4, 16)
    with pytest.raises(SettingsError, match="multiple of 16"):
        bands.plan_bands(64, 24, FULL)
    with pytest.raises(SettingsError, match="vgg19 only"):
        bands.band_geometry(gatys.Objective(model="googlenet"))


@pytest.mark.parametrize("height,band_rows,spec", [(256, 32, FULL), (64, 16, SHALLOW),
                                                    (70, 16, FULL), (61, 12, SHALLOW)])
def test_plan_bands_own_every_row_once(height, band_rows, spec):
    align, halo = bands.band_geometry(spec)
    plan = bands.plan_bands(height, band_rows, spec)
    owned = np.concatenate([np.arange(b.start, b.stop) for b in plan])
    np.testing.assert_array_equal(owned, np.arange(height))
    for b in plan:
        assert b.lo % align == 0 and b.start % align == 0
        assert b.lo <= max(0, b.start - halo) and b.hi >= min(height, b.stop + halo)
        assert 0 <= b.lo and b.hi <= height
    assert len({b.window for b in plan}) <= (1 if height % align == 0 else 2)


@pytest.mark.parametrize("h,w,band_rows,spec", [
    (64, 48, 16, FULL),      # 4 bands, every window the whole image (halo 80)
    (64, 48, 32, FULL),      # 2 bands
    # 8 bands, 192-row windows: the halo at work
    pytest.param(256, 32, 32, FULL, marks=pytest.mark.slow),
    (64, 48, 16, SHALLOW),   # 4 bands, 40-row windows, temporal term
    # height not a multiple of 16: floor pooling, a 10-row last band
    pytest.param(74, 40, 32, FULL, marks=pytest.mark.slow),
    # a one-row last band, a longer window before it
    pytest.param(61, 40, 12, SHALLOW, marks=pytest.mark.slow),
], ids=["64x48-4bands", "64x48-2bands", "256x32-8bands", "shallow-temporal", "uneven",
        "one-row-band"])
def test_bands_equal_whole_image(h, w, band_rows, spec):
    x, params, targets, weights = problem(h, w, spec)
    total, parts, grad = whole_image(x, params, targets, weights, spec)
    b_total, b_parts, b_grad = bands.band_value_and_grad(x, params, targets, weights, spec, band_rows)
    assert b_parts.shape == parts.shape and b_grad.shape == grad.shape
    errors = {"total": rel_err(b_total, total), "grad": rel_err(b_grad, grad),
              **{name: rel_err(b_parts[i], parts[i])
                 for i, name in enumerate(["content", "style", "tv", "temporal"][:len(parts)])}}
    print(f"bands {h}x{w}/{band_rows}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert max(errors.values()) < TOL, errors


def test_too_small_halo_is_detected():
    """The comparison is sensitive: one aligned step less halo than needed is visibly wrong."""
    x, params, targets, weights = problem(64, 48, SHALLOW)
    _, parts, grad = whole_image(x, params, targets, weights, SHALLOW)
    _, b_parts, b_grad = bands.band_value_and_grad(x, params, targets, weights, SHALLOW, 16, halo=8)
    assert rel_err(b_grad, grad) > 1e-3 and rel_err(b_parts[1], parts[1]) > 1e-4


# --------------------------------------------------------------------------------------------
# four devices (forced host devices), in a subprocess
# --------------------------------------------------------------------------------------------

FOUR_DEVICES = textwrap.dedent("""
    import json, sys, traceback
    sys.path.insert(0, ".")
    import jax, jax.numpy as jnp, numpy as np
    import test_parallel as tp
    from jaxdream import style
    from jaxdream.objectives import gatys
    from jaxdream.objectives import bands
    from jaxdream.runtime import parallel
    from jaxdream.errors import SettingsError

    out = {}

    def check(name):
        def run(fn):
            try:
                out[name] = fn()
            except Exception as e:
                out[name] = {"error": "".join(traceback.format_exception_only(e)).strip()}
        return run

    @check("devices")
    def _():
        try:
            parallel.devices(8)
            error = None
        except SettingsError as e:
            error = str(e)
        return {"n": len(parallel.devices()), "error8": error,
                "describe": parallel.describe(parallel.mesh())}

    @check("sweep")
    def _():
        m = parallel.mesh()
        spec = tp.FULL
        x, params, targets, _ = tp.problem(32, 32, spec)
        xs = jnp.stack([x + i for i in range(4)])
        ws = {"content": jnp.asarray([1.0, 5.0, 5.0, 20.0]),
              "style": jnp.asarray([100.0, 100.0, 1e3, 10.0]),
              "tv": jnp.asarray([1e-3, 0.0, 1e-2, 1e-3])}
        def vg(x, w, params, targets):
            return jax.value_and_grad(gatys.objective, has_aux=True)(x, params, targets, w, spec)
        sweep = jax.jit(jax.vmap(vg, in_axes=(0, 0, None, None)))
        (f0, p0), g0 = sweep(xs, ws, params, targets)
        sx, sw = parallel.shard_batch((xs, ws), m)
        (f1, p1), g1 = sweep(sx, sw, *parallel.replicate((params, targets), m))
        return {"total": tp.rel_err(f1, f0), "parts": tp.rel_err(p1, p0),
                "grad": tp.rel_err(g1, g0), "shards": len(g1.addressable_shards),
                "spec": list(g1.sharding.spec)}

    @check("spatial")
    def _():
        m = parallel.mesh()
        spec = tp.FULL
        x, params, targets, weights = tp.problem(64, 48, spec)
        total, parts, grad = tp.whole_image(x, params, targets, weights, spec)
        s_total, s_parts, s_grad = bands.sharded_value_and_grad(x, params, targets, weights, spec, m)
        return {"total": tp.rel_err(s_total, total), "parts": tp.rel_err(s_parts, parts),
                "grad": tp.rel_err(s_grad, grad), "spec": list(s_grad.sharding.spec),
                "rows_per_shard": sorted({s.data.shape[0] for s in s_grad.addressable_shards})}

    @check("uneven")
    def _():
        m = parallel.mesh()
        try:
            parallel.shard_height(np.zeros((1, 30, 8, 3), np.float32), m)
            error = None
        except SettingsError as e:
            error = str(e)
        padded = parallel.shard_height(np.zeros((1, 30, 8, 3), np.float32), m, pad=True)
        return {"error": error, "padded_rows": padded.shape[1]}

    @check("memory")
    def _():
        m = parallel.mesh()
        spec = tp.FULL
        x, params, targets, weights = tp.problem(256, 256, spec)
        vg = jax.value_and_grad(lambda x, p, t, w: gatys.objective(x, p, t, w, spec), has_aux=True)
        one = jax.jit(vg).lower(x, params, targets, weights).compile().memory_analysis()
        four = bands.sharded_program(spec, m).lower(x, params, targets, weights).compile()
        four = four.memory_analysis()
        return {"one": one.temp_size_in_bytes, "four": four.temp_size_in_bytes,
                "ratio": four.temp_size_in_bytes / one.temp_size_in_bytes}

    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def four_devices() -> dict:
    """Results of the four-device checks, run once in a subprocess with 4 forced CPU devices."""
    return run_python(FOUR_DEVICES, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
                      timeout=FOUR_DEVICE_TIMEOUT)


def _result(results: dict, name: str) -> dict:
    value = results[name]
    if "error" in value and len(value) == 1:
        pytest.fail(f"{name} raised in the subprocess: {value['error']}")
    return value


@pytest.mark.slow
def test_four_devices_listed_and_too_many_refused(four_devices):
    r = _result(four_devices, "devices")
    assert r["n"] == 4
    assert r["error8"] == "--devices 8: only 4 devices (cpu) are available"
    assert "mesh: 4 devices" in r["describe"] and r["describe"].count("cpu process 0") == 4


@pytest.mark.slow
def test_sweep_sharded_over_batch_equals_unsharded(four_devices):
    r = _result(four_devices, "sweep")
    print(f"batch sweep on 4 devices: {r}")
    assert r["shards"] == 4 and r["spec"][0] == "d"
    assert max(r["total"], r["parts"], r["grad"]) < TOL, r


@pytest.mark.slow
def test_height_sharded_objective_equals_unsharded(four_devices):
    r = _result(four_devices, "spatial")
    print(f"height-sharded objective on 4 devices: {r}")
    assert r["spec"][0] == "d" and r["rows_per_shard"] == [16]
    assert max(r["total"], r["parts"], r["grad"]) < TOL, r


@pytest.mark.slow
def test_height_must_divide_unless_padded(four_devices):
    r = _result(four_devices, "uneven")
    assert "does not split over 4 devices; 2 more rows" in r["error"]
    assert r["padded_rows"] == 32


@pytest.mark.slow
def test_height_sharding_cuts_memory_per_device(four_devices):
    r = _result(four_devices, "memory")
    print(f"compiled temporary memory at 256x256, per device: one device {r['one']} B, "
          f"4 devices {r['four']} B, ratio {r['ratio']:.2f}")
    assert r["ratio"] < 0.5, r


# --------------------------------------------------------------------------------------------
# two processes, one cluster
# --------------------------------------------------------------------------------------------

CLUSTER_MEMBER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from jaxdream.runtime import parallel
    port, rank = sys.argv[1], int(sys.argv[2])
    parallel.initialize_distributed(f"127.0.0.1:{port}", 2, rank, timeout_s=60)
    import jax, jax.numpy as jnp
    m = parallel.mesh()
    x = parallel.shard_batch(np.arange(8, dtype=np.float32), m)
    total = jax.jit(lambda a: jnp.sum(a * a))(x)
    print(json.dumps({"sum": float(total), "writer": parallel.is_writer(),
                      "devices": len(jax.devices()), "processes": jax.process_count(),
                      "local_shards": len(x.addressable_shards)}))
""")


def test_two_processes_form_one_mesh():
    port = str(free_port())
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", CLUSTER_MEMBER, port, str(rank)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=TESTS)
             for rank in (0, 1)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=CLUSTER_TIMEOUT))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two-process cluster did not finish within {CLUSTER_TIMEOUT} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["processes"] for r in results] == [2, 2]
    assert [r["devices"] for r in results] == [2, 2]
    assert [r["local_shards"] for r in results] == [1, 1]
    assert results[0]["sum"] == results[1]["sum"] == float(np.sum(np.arange(8.0) ** 2))
    assert [r["writer"] for r in results] == [True, False]


def test_missing_coordinator_is_a_settings_error():
    code = textwrap.dedent("""
        import json, sys
        from jaxdream.runtime import parallel
        from jaxdream.errors import SettingsError
        try:
            parallel.initialize_distributed(f"127.0.0.1:{sys.argv[1]}", 2, 1, timeout_s=2)
            print(json.dumps({"error": None}))
        except SettingsError as e:
            print(json.dumps({"error": str(e)}))
    """)
    r = run_python(code, str(free_port()), timeout=60)
    assert r["error"] and r["error"].startswith("no JAX coordinator answered at 127.0.0.1:")
