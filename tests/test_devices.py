"""Runs that use several devices and several processes: a style sweep split over 4 forced CPU
devices equals the one-device sweep; ``jaxdream devices`` shows the mesh and refuses bad
settings; two processes on 127.0.0.1 form one JAX cluster, run a sweep, and only process 0
writes files equal to a one-process run's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from helpers import SCRIPT, cli_env, needs_script

from jaxdream import media

HERE = Path(__file__).resolve().parent


def _env(tmp_path: Path, devices: int | None = None) -> dict[str, str]:
    """:func:`helpers.cli_env` with the home in ``tmp_path``, the user's own ``HOME``, this folder
    on ``PYTHONPATH`` (the scripts import ``helpers``) and, with ``devices``, that many forced
    CPU devices. Run the subprocess with ``cwd`` outside the checkout."""
    env = cli_env(tmp_path / "home", HOME=os.environ.get("HOME"), PYTHONPATH=str(HERE))
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


SWEEP = r"""
import numpy as np
from jaxdream import style
from jaxdream.runtime import parallel
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network
from helpers import vgg_layers, as_params
net = Network(get_spec("vgg19"), as_params(vgg_layers(widths=(4, 6, 8, 8, 8))), "max")
rng = np.random.default_rng(0)
c = rng.uniform(0, 255, (40, 48, 3)).astype(np.float32)
s = rng.uniform(0, 255, (40, 48, 3)).astype(np.float32)
kw = dict(network=net, size=40, num_iterations=6, chunk=3, style_weight=[1e2, 1e3, 1e4], seed=[0, 1])
one = style.stylize(c, s, **kw)
four = style.stylize(c, s, mesh=parallel.mesh(4), **kw)
assert parallel.mesh(4).size == 4
assert one.labels == four.labels and four.images.shape == one.images.shape == (6, 33, 40, 3)
err = np.max(np.abs(one.images - four.images)) / np.max(np.abs(one.images))
loss = max(float(np.max(np.abs(one.losses[k] - four.losses[k]) / np.abs(one.losses[k]))) for k in one.losses)
print("ERR", err, loss)
"""


@pytest.mark.slow
def test_sweep_split_over_four_devices_equals_one_device(tmp_path):
    """6 sweep members padded to 8 and split 2 per device: the same images and losses."""
    result = subprocess.run([sys.executable, "-c", SWEEP], env=_env(tmp_path, 4), capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    err, loss = map(float, result.stdout.split("ERR")[1].split())
    assert err <= 1e-5 and loss <= 1e-5


CONTENTS = r"""
import numpy as np
from jaxdream import style
from jaxdream.runtime import parallel
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network
from helpers import vgg_layers, as_params
net = Network(get_spec("vgg19"), as_params(vgg_layers(widths=(4, 6, 8, 8, 8))), "max")
rng = np.random.default_rng(0)
cs = [rng.uniform(0, 255, (40, 48, 3)).astype(np.float32) for _ in range(3)]
s = rng.uniform(0, 255, (40, 48, 3)).astype(np.float32)
for opt, oc, init in (("lbfgs", False, "random"), ("adam", True, "image")):
    kw = dict(network=net, size=40, num_iterations=6, chunk=3, style_weight=[1e2, 1e3], optimizer=opt,
              original_colors=oc, init=init)
    alone = [style.stylize(c, s, **kw) for c in cs]
    together = style.stylize(cs, s, mesh=parallel.mesh(4), **kw)
    assert len(together) == 3 and all(a.labels == b.labels for a, b in zip(alone, together))
    for a, b in zip(alone, together):
        err = np.max(np.abs(a.images - b.images)) / np.max(np.abs(a.images))
        loss = max(float(np.max(np.abs(a.losses[k] - b.losses[k]) / np.abs(a.losses[k]))) for k in a.losses)
        print("ERR", opt, err, loss, float(np.max(np.abs(a.images - alone[0].images))))
"""


@pytest.mark.slow
def test_batch_of_content_images_over_four_devices_equals_each_alone(tmp_path):
    """3 content images x 2 style weights (6 members padded to 8, 2 per device), each with its
    own content targets and init: the same images and losses as each content run alone on one
    device (L-BFGS from noise; Adam from the content with original colours)."""
    result = subprocess.run([sys.executable, "-c", CONTENTS], env=_env(tmp_path, 4), capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("ERR")]
    assert [r[0] for r in rows] == ["lbfgs"] * 3 + ["adam"] * 3
    for opt, err, loss, apart in rows:
        assert float(err) <= 1e-5 and float(loss) <= 1e-5, (opt, err, loss)
    assert all(float(r[3]) > 0.1 for r in rows[1:3] + rows[4:])  # the contents' results do differ


FLOWS = r"""
import tempfile
from pathlib import Path
import numpy as np
from jaxdream import flow, media, video as vd
from jaxdream.runtime import parallel
from helpers import maker, pan_frames, texture, write_clip, vgg_layers, as_params
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network
frames = pan_frames(6, 2)
m4 = parallel.mesh(4)
for start in (0, 2):
    one = list(vd._with_flows(iter(frames), start, True, None))
    four = list(vd._with_flows(iter(frames), start, True, m4))
    assert [r[0] for r in one] == [r[0] for r in four] == list(range(start, 6))
    assert (one[0][2] == {}) == (start == 0)
    pairs = [(a[2][1], b[2][1]) for a, b in zip(one, four) if a[2]]
    print("FLOW", start, max(float(np.abs(a[0] - b[0]).max()) for a, b in pairs),
          max(float(np.mean(a[1] != b[1])) for a, b in pairs), float(np.abs(pairs[-1][0][0]).mean()))
tmp = Path(tempfile.mkdtemp())
clip = write_clip(tmp / "pan.mp4", frames)
style_png = tmp / "style.png"
media.save_image(style_png, texture(36, 36, 9))
net = Network(get_spec("vgg19"), as_params(vgg_layers(widths=(4, 6, 8, 8, 8))), "max")
vd.process(clip, tmp / "one", maker(net, style_png), vd.VideoSettings())
vd.process(clip, tmp / "four", maker(net, style_png, mesh=m4), vd.VideoSettings())
a, b = ([media.load_image(p) for p in sorted((tmp / d).glob("frame_*.png"))] for d in ("one", "four"))
print("VIDEO", len(a), len(b), float(np.abs(a[0] - b[0]).max()), max(float(np.abs(x - y).mean()) for x, y in zip(a, b)))
"""


@pytest.mark.slow
def test_video_flows_computed_ahead_over_four_devices_equal_one_device(tmp_path):
    """The flows of a clip's frame pairs, four at a time (one per device, padded), equal the
    pair-by-pair flows, also from a resumed frame; a stylised clip on 4 devices (flows ahead,
    each frame's rows split) matches the one-device clip to rounding (float differences of the
    row split grow slowly along the chain of frames)."""
    result = subprocess.run([sys.executable, "-c", FLOWS], env=_env(tmp_path, 4), capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    flows = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("FLOW")]
    assert [f[0] for f in flows] == ["0", "2"]
    for _, err, masks, moved in flows:
        assert float(err) <= 1e-3 and float(masks) <= 0.002 and float(moved) > 0.9, flows  # a pan of 2 px: mean |(dx, dy)| = 1
    count, count4, first, mean = result.stdout.split("VIDEO")[1].split()
    assert count == count4 == "6" and float(first) <= 1 and float(mean) <= 1, result.stdout


@needs_script
def test_devices_command_shows_the_mesh_and_refuses_bad_counts(tmp_path):
    env = _env(tmp_path, 4)
    ok = subprocess.run([SCRIPT, "devices", "--devices", "3"], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    rows = [line for line in ok.stdout.splitlines() if line.startswith("  ") and ": cpu " in line]
    assert "mesh: 3 devices" in ok.stdout and len(rows) == 3, ok.stdout
    for args, status, needle in [(["--devices", "8"], 1, "only 4 devices"),
                                 (["--devices", "0"], 2, "--devices"),
                                 (["--coordinator", "127.0.0.1:1"], 1, "together")]:
        bad = subprocess.run([SCRIPT, "devices", *args], env=env, capture_output=True, text=True, timeout=120)
        lines = bad.stderr.strip().splitlines()
        assert bad.returncode == status and len(lines) == 1 and needle in lines[0], bad.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vgg_real_shapes(tmp_path_factory) -> Path:
    from helpers import vgg_layers

    from jaxdream.weights.keras import write_keras_h5
    path = tmp_path_factory.mktemp("weights") / "vgg19_random.h5"
    layers = {f"block{k[4]}_conv{k[6]}": [w * 0.1, b] for k, (w, b) in vgg_layers().items()}
    write_keras_h5(path, layers)
    return path


@pytest.mark.slow
@needs_script
def test_two_processes_run_one_sweep_and_only_process_0_writes(tmp_path, vgg_real_shapes):
    rng = np.random.default_rng(3)
    for name in ("content", "style"):
        Image.fromarray(rng.integers(0, 256, (26, 32, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    base = ["style", tmp_path / "content.png", "--style", tmp_path / "style.png", "--size", "32",
            "--iterations", "2", "--style-weight", "100,1000", "--weights", vgg_real_shapes, "--quiet"]
    single = tmp_path / "single"
    cluster = tmp_path / "cluster"
    for folder in (single, cluster):
        folder.mkdir()
    env = _env(tmp_path)
    alone = subprocess.run([SCRIPT, *map(str, base), "-o", single / "out.png"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert alone.returncode == 0, alone.stderr
    port = _free_port()
    procs = [subprocess.Popen([SCRIPT, *map(str, base), "-o", cluster / "out.png", "--coordinator",
                               f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "wrote" in outputs[0][0] and "wrote" not in outputs[1][0]
    names = sorted(p.name for p in single.iterdir())
    assert names == sorted(p.name for p in cluster.iterdir()) == [
        "out_sheet.png", "out_sw100.png", "out_sw1000.png"]
    for name in names:
        np.testing.assert_allclose(media.load_image(cluster / name), media.load_image(single / name), atol=1)


@pytest.mark.slow
def test_band_wise_stylize_equals_whole_image():
    """The same run evaluated in 16-row bands (4 bands and halos on a 64-row image) gives the
    same losses and image, for L-BFGS and Adam (Adam divides by the gradient's running RMS, so
    float32 rounding differences show more in its image)."""
    from helpers import as_params, vgg_layers

    from jaxdream import style
    from jaxdream.nets import get_spec
    from jaxdream.nets.network import Network
    net = Network(get_spec("vgg19"), as_params(vgg_layers(widths=(4, 6, 8, 8, 8))), "max")
    rng = np.random.default_rng(0)
    content = rng.uniform(0, 255, (64, 48, 3)).astype(np.float32)
    style_img = rng.uniform(0, 255, (50, 60, 3)).astype(np.float32)
    for optimizer, image_tol in (("lbfgs", 1e-4), ("adam", 2e-2)):
        kw = dict(network=net, size=64, num_iterations=5, chunk=5, optimizer=optimizer)
        whole = style.stylize(content, style_img, **kw)
        band = style.stylize(content, style_img, band_rows=16, **kw)
        for k in whole.losses:
            np.testing.assert_allclose(band.losses[k], whole.losses[k], rtol=1e-5)
        np.testing.assert_allclose(band.images, whole.images, atol=image_tol)


@pytest.mark.slow
@needs_script
def test_style_batch_of_content_images_resumes(tmp_path, vgg_real_shapes):
    """A folder of content images: one result each, named after the input; a rerun skips the
    finished ones and does only the new one."""
    rng = np.random.default_rng(5)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (26, 32, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    (photos / "notes.txt").write_text("not an image")
    Image.fromarray(rng.integers(0, 256, (26, 32, 3), dtype=np.uint8)).save(tmp_path / "style.png")
    cmd = [SCRIPT, "style", photos, "--style", tmp_path / "style.png", "-o", f"{tmp_path / 'out'}/", "--size", "32",
           "--iterations", "1", "--weights", vgg_real_shapes, "--quiet"]
    env = _env(tmp_path)
    first = subprocess.run(list(map(str, cmd)), env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert media.read_settings(out / "b.png")["content"].endswith("b.png")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    Image.fromarray(rng.integers(0, 256, (26, 32, 3), dtype=np.uint8)).save(photos / "c.png")
    second = subprocess.run(list(map(str, cmd)), env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "2 of 3 content images are done already" in second.stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in stamps.items())
    twin = tmp_path / "twin"
    twin.mkdir()
    Image.fromarray(rng.integers(0, 256, (26, 32, 3), dtype=np.uint8)).save(twin / "a.png")
    bad = subprocess.run(list(map(str, [*cmd[:3], twin, *cmd[3:]])), env=env, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode == 1 and bad.stderr.count("jaxdream: error:") == 1, bad.stderr
    assert "two content images are named a" in bad.stderr


TILES = r"""
import sys, importlib
import jax, jax.numpy as jnp, numpy as np
from jaxdream.runtime import parallel
from jaxdream.nets.network import load_network
dream = importlib.import_module("jaxdream.dream")
net = load_network("googlenet", sys.argv[1])
cfg = dream.make_config(layers="inception_3a/output", steps=2, tile_size=48, jitter=4)
img = np.random.default_rng(0).uniform(0, 255, (96, 144, 3)).astype(np.float32)  # 2 x 3 tiles
one = dream.Dreamer(cfg, network=net)
four = dream.Dreamer(cfg, network=net, mesh=parallel.mesh(4))
assert four.schedule().mesh is not None and one.schedule().mesh is None
key = jax.random.key(0)
a, b = np.asarray(one.step(img, key)), np.asarray(four.step(img, key))
print("ERR", float(np.max(np.abs(a - b))), float(np.max(np.abs(a - img))))
"""


@pytest.mark.slow
def test_dream_tiles_split_over_four_devices_equal_one_device(tmp_path, googlenet_caffemodel):
    """6 tiles in batches of 4 (padded to 8) over 4 devices: the same dream steps."""
    result = subprocess.run([sys.executable, "-c", TILES, str(googlenet_caffemodel.path)],
                            env=_env(tmp_path, 4), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    err, moved = map(float, result.stdout.split("ERR")[1].split())
    assert moved > 1 and err <= 1e-3  # pixels 0..255: float32 rounding of a few summed steps


ROWS = r"""
import numpy as np
from jaxdream import style
from jaxdream.runtime import parallel
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network
from helpers import vgg_layers, as_params
net = Network(get_spec("vgg19"), as_params(vgg_layers(widths=(4, 6, 8, 8, 8))), "max")
rng = np.random.default_rng(0)
c = rng.uniform(0, 255, (64, 48, 3)).astype(np.float32)
s = rng.uniform(0, 255, (40, 48, 3)).astype(np.float32)
for opt in ("lbfgs", "adam"):
    kw = dict(network=net, size=64, num_iterations=6, chunk=3, optimizer=opt)
    one = style.stylize(c, s, **kw)
    four = style.stylize(c, s, mesh=parallel.mesh(4), **kw)
    loss = max(abs(float(one.losses[k][0] - four.losses[k][0])) / abs(float(one.losses[k][0])) for k in one.losses)
    print("ERR", opt, float(np.max(np.abs(one.images - four.images))), loss)
"""


@pytest.mark.slow
def test_one_image_split_by_rows_over_four_devices_equals_one_device(tmp_path):
    """One image, its 64 rows split 16 per device (XLA exchanges the halos and sums the Gram
    matrices): the same losses, and the same image to float32 rounding (Adam amplifies it)."""
    result = subprocess.run([sys.executable, "-c", ROWS], env=_env(tmp_path, 4), capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split()[1:] for line in result.stdout.splitlines() if line.startswith("ERR")]
    assert [r[0] for r in rows] == ["lbfgs", "adam"]
    for (opt, image_err, loss_err), tol in zip(rows, (1e-3, 2e-2)):
        assert float(loss_err) <= 1e-5 and float(image_err) <= tol, (opt, image_err, loss_err)


def test_batch_of_content_images_refuses_what_it_cannot_share():
    """Different sizes, per-content style recolouring and bands cannot run as one batch: each
    is one clear error, before any network is loaded."""
    from jaxdream import style
    from jaxdream.errors import SettingsError
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(0, 255, shape).astype(np.float32) for shape in ((40, 48, 3), (48, 40, 3)))
    with pytest.raises(SettingsError, match="content image 2 is 40x48: a batch of content images must share"):
        style.plan_style([a, b], a, size=48)
    with pytest.raises(SettingsError, match="--color-transfer"):
        style.plan_style([a, a], a, size=48, color_transfer="histogram")
    with pytest.raises(SettingsError, match="bands evaluate one image at a time"):
        style.plan_style(a, a, size=48, band_rows=16, style_weight=[1, 2])
    with pytest.raises(SettingsError, match="at least one content image"):
        style.plan_style([], a, size=48)
    assert style.plan_style([a, a * 0.5], a, size=48, seed=[0, 1, 2]).batch == 6


@pytest.mark.slow
@needs_script
def test_style_folder_on_four_devices_runs_same_size_images_together(tmp_path, vgg_real_shapes):
    """Three 26x32 photos (one of them 52x64, the same size at --size 32) run as one batch on 4
    devices, the 32x26 one alone; every result equals the one-device run's; an image written
    on an interrupt does not count as finished."""
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, shape in (("a", (26, 32)), ("b", (26, 32)), ("c", (52, 64)), ("d", (32, 26))):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    Image.fromarray(rng.integers(0, 256, (26, 32, 3), dtype=np.uint8)).save(tmp_path / "style.png")
    outs = {}
    for devices in (1, 4):
        out = tmp_path / f"out{devices}"
        cmd = [SCRIPT, "style", photos, "--style", tmp_path / "style.png", "-o", f"{out}/", "--size", "32",
               "--iterations", "4", "--weights", vgg_real_shapes, "--print-iter", "0"]
        run = subprocess.run(list(map(str, cmd)), env=_env(tmp_path, devices), capture_output=True, text=True,
                             timeout=600, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        outs[devices] = out
    assert f"[1-3/4] {photos / 'a.png'}, {photos / 'b.png'}, {photos / 'c.png'}" in run.stdout, run.stdout
    assert f"[4/4] {photos / 'd.png'}" in run.stdout
    for name in "abcd":
        one, four = (np.asarray(Image.open(outs[d] / f"{name}.png"), np.float32) for d in (1, 4))
        assert one.shape == ((32, 26, 3) if name == "d" else (26, 32, 3))
        assert np.max(np.abs(one - four)) <= 1, name
    media.save_image(outs[4] / "b.png", four, {"interrupted_at_iteration": 2})
    again = subprocess.run(list(map(str, cmd)), env=_env(tmp_path, 4), capture_output=True, text=True,
                           timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "3 of 4 content images are done already" in again.stdout
    assert "interrupted_at_iteration" not in media.read_settings(outs[4] / "b.png")
