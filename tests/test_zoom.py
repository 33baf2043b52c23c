"""Zoom animations: the affine transform about the centre, loop blending, ``jaxdream zoom`` to
GIF, MP4 and a folder of frames, its error lines, and resuming an interrupted run.

Everything runs on the synthetic full-shape GoogLeNet of ``conftest.py`` at 64 px with the
shallow ``inception_3a/output`` layer; one ascent step per frame keeps every run short.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import cli_env, needs_script, run_cli

from jaxdream import media
from jaxdream import zoom as zoom_loop
from jaxdream.media import frames
from jaxdream.media.frames import FrameStore, loop_blend
from jaxdream.zoom import ZoomSettings, affine_about_centre
from jaxdream.dream import Dreamer, make_config
from jaxdream.errors import LayerError, SettingsError
from jaxdream.nets import get_spec
from jaxdream.nets.network import Network, unflatten

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

LAYER = "inception_3a/output"
SIZE = 64


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A random but smooth RGB 0..255 float32 image."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
    return np.clip(media.resize(small, (h, w), "bicubic"), 0, 255).astype(np.float32)


def transform(img: np.ndarray, zoom: float = 1.0, rotate: float = 0.0, translate=(0.0, 0.0)) -> np.ndarray:
    return np.asarray(affine_about_centre(jnp.asarray(img, jnp.float32), jnp.float32(zoom), jnp.float32(rotate),
                                          jnp.asarray(translate, jnp.float32)))


# ----------------------------------------------------------------------------------------------
# geometry


def test_affine_identity():
    img = np.random.default_rng(0).uniform(0, 255, (17, 22, 3)).astype(np.float32)
    np.testing.assert_array_equal(transform(img), img)


def test_affine_translate_moves_content_right_and_down():
    img = np.random.default_rng(1).uniform(0, 255, (17, 22, 3)).astype(np.float32)
    right = transform(img, translate=(2, 0))
    np.testing.assert_allclose(right[:, 2:], img[:, :-2], atol=1e-4)
    # the uncovered edge repeats the border column
    np.testing.assert_allclose(right[:, :2], np.repeat(img[:, :1], 2, axis=1), atol=1e-4)
    down = transform(img, translate=(0, 3))
    np.testing.assert_allclose(down[3:], img[:-3], atol=1e-4)


@pytest.mark.parametrize("n", [16, 17])
def test_affine_rotate_90_is_counter_clockwise(n):
    img = np.random.default_rng(2).uniform(0, 255, (n, n, 3)).astype(np.float32)
    out = transform(img, rotate=90)
    # np.rot90 turns an image counter-clockwise as displayed (rows downward)
    np.testing.assert_allclose(out, np.rot90(img, 1, axes=(0, 1)), atol=0.05)
    np.testing.assert_allclose(transform(img, rotate=-90), np.rot90(img, -1, axes=(0, 1)), atol=0.05)
    # a marker right of the centre row ends up above the centre column
    marker = np.zeros((n, n, 3), np.float32)
    c = (n - 1) // 2
    marker[c, n - 2] = 255
    y, x = np.unravel_index(np.argmax(transform(marker, rotate=90)[..., 0]), (n, n))
    assert (y, x) == (1, c)


def test_affine_zoom_2_about_the_centre():
    h, w = 21, 25
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramps = np.stack([xx, yy, np.full_like(xx, 7.0)], axis=-1)  # each pixel holds its coordinates
    out = transform(ramps, zoom=2)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    # the centre maps to itself; a pixel d from the centre samples the source d / 2 from it
    np.testing.assert_allclose(out[int(cy), int(cx), :2], [cx, cy], atol=1e-4)
    np.testing.assert_allclose(out[..., 0], cx + (xx - cx) / 2, atol=1e-4)
    np.testing.assert_allclose(out[..., 1], cy + (yy - cy) / 2, atol=1e-4)
    np.testing.assert_allclose(out[..., 2], 7.0, atol=1e-5)
    # zooming out replicates edges: values stay within the source's range
    small = transform(ramps, zoom=0.5)
    assert small[..., 0].min() == 0 and small[..., 0].max() == w - 1


def test_affine_same_shape_no_recompile():
    img = smooth_image(20, 30)
    transform(img, 1.05, 3, (1, 2))
    size = affine_about_centre._cache_size()
    transform(img[::-1].copy(), 1.2, -7, (0, 0))
    assert affine_about_centre._cache_size() == size


# ----------------------------------------------------------------------------------------------
# loop blending


def test_loop_blend_count_and_weights():
    n, overlap = 10, 3
    frames = [lambda i=i: np.full((2, 3, 3), float(i), np.float32) for i in range(n)]
    out = list(loop_blend(frames, overlap))
    assert len(out) == n - overlap
    values = [float(f[0, 0, 0]) for f in out]
    for k in range(overlap):
        a = (k + 1) / (overlap + 1)
        assert values[k] == pytest.approx(a * k + (1 - a) * (n - overlap + k))
        assert np.all(out[k] == out[k][0, 0, 0])  # constant frames stay constant
    assert values[overlap:] == [float(k) for k in range(overlap, n - overlap)]
    # the sequence wraps: the last frame (6) flows into frame 0, which is mostly frame 7
    assert values[-1] == n - overlap - 1 and values[0] == pytest.approx(0.25 * 0 + 0.75 * 7)


def test_loop_blend_loads_each_frame_lazily():
    loaded = []

    def loader(i):
        def load():
            loaded.append(i)
            return np.full((1, 1, 3), float(i))
        return load

    blended = loop_blend([loader(i) for i in range(8)], 2)
    assert loaded == []
    next(blended)
    assert loaded == [0, 6]


@pytest.mark.parametrize("frames, loop, overlap", [(4, True, 1), (120, True, 24), (48, True, 12), (4, False, 0)])
def test_zoom_settings_loop_overlap(frames, loop, overlap):
    assert ZoomSettings(frames=frames, loop=loop).loop_overlap() == overlap


@pytest.mark.parametrize("settings, needle", [
    (dict(zoom=0), "zoom"), (dict(zoom=-1), "zoom"), (dict(zoom=float("nan")), "zoom"),
    (dict(frames=0), "frames"), (dict(steps_per_frame=0), "steps per frame"), (dict(fps=0), "fps"),
])
def test_zoom_settings_validate(settings, needle):
    with pytest.raises(SettingsError, match=needle):
        ZoomSettings(**settings).validate()


def test_parse_layer_schedule():
    assert zoom_loop.parse_layer_schedule("60:inception_4d/output, 0:inception_4c/output") == [
        (0, "inception_4c/output"), (60, "inception_4d/output")]
    assert zoom_loop.parse_layer_schedule(None) == []
    for bad in ("inception_4c/output", "x:conv2/3x3", "3:"):
        with pytest.raises(SettingsError, match="layer-schedule"):
            zoom_loop.parse_layer_schedule(bad)


# ----------------------------------------------------------------------------------------------
# the library loop and resume


@pytest.fixture(scope="module")
def dreamer(googlenet_caffemodel) -> Dreamer:
    net = Network(get_spec("googlenet"), unflatten("googlenet", googlenet_caffemodel.flat))
    return Dreamer(make_config(layers=LAYER, steps=1, octaves=1, jitter=4, seed=0), network=net)


ZS = ZoomSettings(frames=5, zoom=1.1, rotate=3.0, translate=(1.0, -1.0), steps_per_frame=1)


def frame_arrays(folder: Path) -> list[np.ndarray]:
    return [np.asarray(media.load_image(p)) for p in sorted(folder.glob("frame_*.png"))]


@pytest.fixture(scope="module")
def uninterrupted(dreamer, tmp_path_factory) -> list[np.ndarray]:
    out = tmp_path_factory.mktemp("zoom_full") / "frames"
    reports = []
    assert zoom_loop.zoom(dreamer, smooth_image(SIZE, SIZE), out, ZS, progress=reports.append) == out
    assert [(r.frame, r.frames) for r in reports] == [(i, 5) for i in range(1, 6)]
    return frame_arrays(out)


def test_zoom_into_folder(uninterrupted, dreamer, tmp_path):
    frames = uninterrupted
    assert len(frames) == ZS.frames
    assert all(f.shape == (SIZE, SIZE, 3) for f in frames)
    assert all(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))


def test_resume_continues_bit_for_bit(dreamer, uninterrupted, tmp_path):
    out = tmp_path / "frames"
    image = smooth_image(SIZE, SIZE)

    def stop_after_two(p):
        if p.frame == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zoom_loop.zoom(dreamer, image, out, ZS, progress=stop_after_two)
    assert sorted(p.name for p in out.glob("frame_*.png")) == ["frame_00000.png", "frame_00001.png"]
    assert (out / frames.STATE_FILE).is_file()

    # without resume, an unfinished folder is refused (and left alone)
    with pytest.raises(SettingsError, match="unfinished run"):
        zoom_loop.zoom(dreamer, image, out, ZS)
    # resuming with other settings is refused, naming the difference
    with pytest.raises(SettingsError, match="zoom"):
        zoom_loop.zoom(dreamer, image, out, replace(ZS, zoom=1.2), resume=True)
    other = Dreamer(make_config(layers=LAYER, steps=1, octaves=1, jitter=4, seed=1), network=dreamer.net)
    with pytest.raises(SettingsError, match="seed"):
        zoom_loop.zoom(other, image, out, ZS, resume=True)
    assert len(list(out.glob("frame_*.png"))) == 2

    reports = []
    zoom_loop.zoom(dreamer, image, out, ZS, resume=True, progress=reports.append)
    assert [r.frame for r in reports] == [3, 4, 5]  # only the missing frames were made
    resumed = frame_arrays(out)
    assert len(resumed) == len(uninterrupted)
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(a, b)
    # a finished folder holds only the frames
    assert sorted(p.name for p in out.iterdir()) == [f"frame_{i:05d}.png" for i in range(ZS.frames)]


def test_resume_state_is_the_float_image(tmp_path):
    """The state a run resumes from is the float frame, not its 8-bit PNG."""
    store = FrameStore(tmp_path / "w", {"a": 1}, resume=False)
    state = np.random.default_rng(3).uniform(0, 255, (40, 48, 3)).astype(np.float32)
    store.save(0, np.zeros_like(state), np.zeros_like(state))
    store.save(1, state, state)
    np.testing.assert_array_equal(store.last_state(1), state)
    # frame 0's float state is gone; its PNG stands in
    np.testing.assert_array_equal(store.last_state(0), np.zeros_like(state))
    resumed = FrameStore(tmp_path / "w", {"a": 1}, resume=True)
    assert resumed.count() == 2
    np.testing.assert_array_equal(resumed.last_state(1), state)
    with pytest.raises(SettingsError, match="settings differ"):
        FrameStore(tmp_path / "w", {"a": 2}, resume=True)
    with pytest.raises(SettingsError, match="unfinished"):
        FrameStore(tmp_path / "w", {"a": 1}, resume=False)


def test_resume_without_state_file_is_refused(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    media.save_image(folder / "frame_00000.png", np.zeros((8, 8, 3)))
    with pytest.raises(SettingsError, match="no jaxdream-state.json"):
        FrameStore(folder, {}, resume=True)


def test_zoom_layer_schedule_and_unknown_layer(dreamer, tmp_path):
    with pytest.raises(LayerError, match="inception_4x/output"):
        zoom_loop.zoom(dreamer, smooth_image(SIZE, SIZE), tmp_path / "bad", ZS, [(2, "inception_4x/output")])
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------------------------
# the `jaxdream zoom` command


ERROR_PREFIX = "jaxdream: error:"


def assert_one_error(rc: int, err: str, *needles: str) -> str:
    assert rc != 0, f"exit 0; stderr={err!r}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, err
    assert all(line.startswith((ERROR_PREFIX, "jaxdream: warning:")) for line in lines), err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def zoom_gif(tmp_path_factory, googlenet_caffemodel):
    """Runs `jaxdream zoom` to a GIF once (it fills the compilation cache for ``zoom_cli``);
    gives the folder, the command's runner and its result."""
    root = tmp_path_factory.mktemp("zoom_cli")
    from PIL import Image
    Image.fromarray(media.to_uint8(smooth_image(48, 64, seed=4))).save(root / "in.png")
    base = ["zoom", root / "in.png", "--frames", "4", "--steps", "1", "--octaves", "1", "--steps-per-frame", "1",
            "--layers", LAYER, "--size", str(SIZE), "--zoom", "1.1", "--weights", googlenet_caffemodel.path,
            "--quiet"]
    env = cli_env(root / "home")

    def run(*args):
        return run_cli([*base, *args], env, cwd=root, timeout=600)

    return root, run, run("-o", root / "out.gif", "--fps", "10")


@pytest.fixture(scope="module")
def zoom_cli(zoom_gif):
    """The other `jaxdream zoom` commands, after the GIF: MP4 and a looping folder two at a time."""
    root, run, gif = zoom_gif
    results = {"gif": gif}
    with ThreadPoolExecutor(2) as pool:
        mp4 = pool.submit(run, "-o", root / "out.mp4", "--fps", "12")
        folder = pool.submit(run, "-o", f"{root / 'frames'}/", "--loop")
        zoom0 = pool.submit(run, "-o", root / "bad.gif", "--zoom", "0")
        results.update(mp4=mp4.result(), frames=folder.result(), zoom0=zoom0.result())
    return root, results


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


@needs_script
def test_cli_zoom_gif(zoom_gif):
    root, _, gif = zoom_gif
    _ok(gif)
    import imageio.v3 as iio
    frames = iio.imread(root / "out.gif", index=None)
    assert frames.shape[0] == 4 and frames.shape[1:3] == (48, 64)
    assert not np.array_equal(frames[0], frames[-1])
    from PIL import Image
    with Image.open(root / "out.gif") as gif:
        assert gif.n_frames == 4
        assert gif.info["duration"] == 100
    assert not (root / ".out.gif.frames").exists()
    assert not [p.name for p in root.iterdir() if p.name.startswith(".out")]


@pytest.mark.slow
@needs_script
def test_cli_zoom_mp4_is_h264_yuv420p(zoom_cli):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    root, results = zoom_cli
    _ok(results["mp4"])
    path = root / "out.mp4"
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _ in reader)
    assert count == 4
    assert meta["codec"].startswith("h264"), meta
    assert meta["pix_fmt"].startswith("yuv420p"), meta
    assert meta["fps"] == pytest.approx(12)
    assert tuple(meta["size"]) == (64, 48)
    import imageio.v2 as iio
    with iio.get_reader(path, "ffmpeg") as video:
        frames = [f for f in video]
    assert len(frames) == 4 and frames[0].shape == (48, 64, 3)
    assert not (root / ".out.mp4.frames").exists()


@pytest.mark.slow
@needs_script
def test_cli_zoom_folder_with_loop_keeps_the_frame_count(zoom_cli):
    root, results = zoom_cli
    _ok(results["frames"])
    folder = root / "frames"
    assert sorted(p.name for p in folder.iterdir()) == [f"frame_{i:05d}.png" for i in range(4)]
    settings = media.read_settings(folder / "frame_00003.png")
    assert settings["loop"] is True and settings["frames"] == 4 and settings["zoom"] == 1.1
    assert settings["layers"] == [f"{LAYER}:1"] and "weights_sha256" in settings
    assert media.load_image(folder / "frame_00000.png").shape == (48, 64, 3)


@pytest.mark.slow
@needs_script
def test_cli_zoom_bad_zoom_is_one_error_line(zoom_cli):
    root, results = zoom_cli
    assert_one_error(results["zoom0"].returncode, results["zoom0"].stderr, "zoom")
    assert not (root / "bad.gif").exists() and not (root / ".bad.gif.frames").exists()


@pytest.mark.parametrize("args, needles", [
    (["--zoom", "0"], ("zoom",)), (["--zoom", "-1"], ("zoom", "-1")), (["--frames", "0"], ("frames",)),
    (["--steps-per-frame", "0"], ("--steps-per-frame",)), (["-o", "{root}/out.xyz"], ("out.xyz",)),
    (["--layer-schedule", "0:inception_4x/output"], ("inception_4x/output",)),
    (["--layers", "inception_3a/outptu"], ("inception_3a/output",)),
    (["--channels", "9999"], ("9999",)),
    (["-o", "{root}/no_such_folder/out.gif"], ("no_such_folder",)),
])
def test_cli_zoom_bad_input_in_process(args, needles, tmp_path, googlenet_caffemodel, capsys, monkeypatch):
    """Bad zoom command lines through ``jaxdream.cli.main.main``: one line, non-zero, nothing written."""
    import warnings

    from jaxdream.cli import main as cli_main
    from jaxdream.jobs import command
    media.save_image(tmp_path / "in.png", smooth_image(48, 64))
    argv = ["zoom", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.gif"), "--frames", "4", "--size", "64",
            "--layers", LAYER, "--weights", str(googlenet_caffemodel.path), "--quiet"]
    argv += [a.format(root=tmp_path) for a in args]
    for name in ("JAXDREAM_HOME", "JAXDREAM_WEIGHTS_DIR", "JAXDREAM_WEIGHTS_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    monkeypatch.setattr(command, "enable_compilation_cache", lambda: None)
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = cli_main.main(argv)
    assert_one_error(rc, capsys.readouterr().err, *needles)
    # nothing written: no output, no hidden work folder (the home may hold a weights cache)
    after = sorted(p.name for p in tmp_path.iterdir() if p.name != "home")
    assert after == [n for n in before if n != "home"]


def test_resume_compares_the_masks_content(dreamer, tmp_path):
    """A zoom through a mask records the mask file's hash: the same path with other pixels is
    another run, a copy elsewhere is the same run."""
    mask = tmp_path / "mask.png"
    left = np.zeros((SIZE, SIZE, 3), np.float32)
    left[:, : SIZE // 2] = 255.0
    media.save_image(mask, left)

    def masked(path):
        cfg = make_config(layers=LAYER, steps=1, octaves=1, jitter=4, seed=0, mask=str(path))
        return Dreamer(cfg, network=dreamer.net, mask=path)

    def stop_after_two(p):
        if p.frame == 2:
            raise KeyboardInterrupt

    out, image = tmp_path / "frames", smooth_image(SIZE, SIZE)
    with pytest.raises(KeyboardInterrupt):
        zoom_loop.zoom(masked(mask), image, out, ZS, progress=stop_after_two)
    media.save_image(mask, 255.0 - left)
    with pytest.raises(SettingsError, match="mask_sha256"):
        zoom_loop.zoom(masked(mask), image, out, ZS, resume=True)
    copy = tmp_path / "copy.png"
    media.save_image(copy, left)
    zoom_loop.zoom(masked(copy), image, out, ZS, resume=True)
    assert len(list(out.glob("frame_*.png"))) == ZS.frames
