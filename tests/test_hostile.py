"""Hostile use of the ``jaxdream`` command: bad numbers, bad files, bad outputs, signals.

The contract checked here:

* exit status 0 on success, 1 for an error jaxdream detects, 2 for a usage error (argparse,
  numeric options out of range included), 130 after SIGINT and 143 after SIGTERM; an error
  prints exactly one ``jaxdream: error:`` line (``jaxdream: warning:`` lines may come too) and
  never a traceback;
* ``--dry-run`` (dream, zoom, style, video) validates everything without loading weights or
  computing, prints a plan and writes nothing;
* a frames folder holding another run is refused without ``--resume`` or ``--overwrite``, and
  ``--overwrite`` leaves exactly the new run's frames;
* a failed run leaves nothing behind (no output, no ``.NAME.frames`` work folder, no temp
  files) and does not block the next run; unwritable outputs fail before any computing;
* interrupted runs (SIGINT, SIGTERM, SIGKILL) keep their finished frames and ``--resume``
  completes them, also when the input is named by another path;
* a truncated clip is one error line or a warning naming how many frames were read.

Sections: the in-process ``--dry-run`` property tests (fast: one ``main()`` call each, no new
interpreter); ``layers`` at a tiny size; frames folders, failed runs and read-only folders;
signals; a truncated clip; and THE TABLE, more than 60 hostile command lines run as
subprocesses of the console script, two at a time, each in its own folder.

Every real run uses the synthetic GoogLeNet of ``conftest.py`` or a synthetic Keras VGG-19 at
tiny sizes, so nothing downloads (``JAXDREAM_WEIGHTS_URL`` points at a missing folder).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import helpers
from helpers import SCRIPT, cli_env, needs_script, run_cli

from jaxdream import media

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


ERROR_PREFIX = "jaxdream: error:"
WARNING_PREFIX = "jaxdream: warning:"
LAYER = "inception_3a/output"  # shallow: a 64 px frame is enough
SIZE = 64
H, W, CLIP_FRAMES, FPS = 48, 64, 24, 12
HUGE = str(10 ** 30)
ALWAYS_BAD = ("nan", "inf", "-inf", HUGE)
BAD_VALUES = (*ALWAYS_BAD, "0", "-1")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def one_error(rc, err: str, *needles, codes=(1, 2)) -> str:
    """``rc`` in ``codes``, no traceback, exactly one error line and otherwise only warning
    lines; each needle (a string, or a tuple of alternatives) is in the error line."""
    assert rc in codes, f"exit {rc}, expected one of {codes}; stderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, f"expected exactly one error line, got {len(errors)}:\n{err}"
    stray = [line for line in lines if not line.startswith((ERROR_PREFIX, WARNING_PREFIX))]
    assert not stray, f"lines other than the error and warnings:\n{err}"
    for needle in needles:
        choices = needle if isinstance(needle, tuple) else (needle,)
        assert any(c in errors[0] for c in choices), f"none of {choices} in {errors[0]!r}"
    return errors[0]


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr and ERROR_PREFIX not in result.stderr, result.stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Everything under ``folder`` (hidden names included): relative path -> content hash or 'dir'."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) \
        if folder.exists() else []


def is_temp(name: str) -> bool:
    return name.endswith(".tmp") or "jaxdream-tmp" in name or (name.startswith(".") and "jaxdream-" in name)


def temp_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if is_temp(p.name)] if folder.exists() else []


def frame_names(n: int) -> list[str]:
    return [f"frame_{i:05d}.png" for i in range(n)]


def gif_frames(path: Path) -> int:
    with Image.open(path) as gif:
        return gif.n_frames


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 8 + 2, w // 8 + 2, 3)).astype(np.float32)
    return np.clip(media.resize(small, (h, w)), 0, 255)


def write_clip(path: Path, faststart: bool = False, frames: int = CLIP_FRAMES) -> Path:
    """A ``frames``-frame 48x64 H.264 clip: a noisy pan (the noise keeps the bytes spread evenly over the
    frames, so a cut file still holds about as many whole frames as its share of bytes)."""
    import imageio_ffmpeg
    rng = np.random.default_rng(7)
    big = np.kron(rng.uniform(0, 255, (H // 2 + 1, (W + 2 * frames) // 2 + 1, 3)), np.ones((2, 2, 1)))
    extra = ["-movflags", "+faststart"] if faststart else []
    writer = imageio_ffmpeg.write_frames(str(path), (W, H), fps=FPS, codec="libx264", pix_fmt_out="yuv420p",
                                         macro_block_size=1, output_params=["-crf", "18", *extra],
                                         ffmpeg_log_level="error")
    writer.send(None)
    for i in range(frames):
        frame = big[:H, 2 * i: 2 * i + W] + rng.normal(0, 25, (H, W, 3))
        writer.send(np.ascontiguousarray(np.clip(frame, 0, 255).astype(np.uint8)))
    writer.close()
    return path


# --------------------------------------------------------------------------------------------
# inputs shared by every test of the module
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, googlenet_caffemodel) -> dict[str, Path]:
    """Good and bad inputs in one folder that no command may write to."""
    from helpers import vgg_layers

    from jaxdream.weights.keras import write_keras_h5
    m = tmp_path_factory.mktemp("hostile_media")
    rng = np.random.default_rng(5)
    media.save_image(m / "image.png", smooth_image(H, W, 1))
    media.save_image(m / "style.png", smooth_image(36, 36, 2))
    Image.fromarray(media.to_uint8(smooth_image(H, W, 3))).save(m / "image.gif")
    write_clip(m / "clip.mp4")
    (m / "noise.png").write_bytes(rng.bytes(5000))
    (m / "empty.png").write_bytes(b"")
    (m / "empty.h5").write_bytes(b"")
    (m / "empty.mp4").write_bytes(b"")
    (m / "notes.txt").write_text("these are notes, not an image\n")
    (m / "notes.mp4").write_text("this is not a video\n")
    (m / "a_folder").mkdir()
    (m / "a_folder" / "inside.png").write_bytes((m / "image.png").read_bytes())
    vgg = tmp_path_factory.mktemp("hostile_weights") / "vgg19_random.h5"
    write_keras_h5(vgg, {f"block{k[4]}_conv{k[6]}": list(v) for k, v in vgg_layers().items()})
    return {"m": m, "image": m / "image.png", "style": m / "style.png", "gif": m / "image.gif",
            "clip": m / "clip.mp4", "g": googlenet_caffemodel.path, "v": vgg}


@pytest.fixture(scope="module")
def real_env(tmp_path_factory) -> dict[str, str]:
    """One jaxdream home for the real runs, so that they share the compilation cache."""
    return cli_env(tmp_path_factory.mktemp("hostile_home") / "jaxdream")


def zoom_args(inputs, out, frames: int, *extra, image=None, weights=None, steps_per_frame: int = 1) -> list:
    return ["zoom", image or inputs["image"], "-o", out, "--frames", frames, "--steps", 1, "--octaves", 1,
            "--steps-per-frame", steps_per_frame, "--layers", LAYER, "--size", SIZE,
            "--weights", weights or inputs["g"], "--quiet", *extra]


def video_dream_args(clip, out, inputs, *extra) -> list:
    return ["video", clip, "--dream", "-o", out, "--weights", inputs["g"], "--layers", LAYER, "--octaves", 1,
            "--steps", 1, "--steps-per-frame", 1, "--quiet", *extra]


# --------------------------------------------------------------------------------------------
# --dry-run and numeric options, in process
# --------------------------------------------------------------------------------------------


@pytest.fixture
def in_process(tmp_path, monkeypatch, capsys):
    """Call ``jaxdream.cli.main.main`` in this process: ``call(argv) -> (rc, stdout, stderr)``.

    argparse's ``SystemExit`` becomes the status; any other exception escaping ``main`` fails
    the test (it would be a traceback on the command line)."""
    import warnings

    from jaxdream.cli import main as cli_main
    from jaxdream.jobs import command
    for name in ("JAXDREAM_HOME", "JAXDREAM_WEIGHTS_DIR", "JAXDREAM_WEIGHTS_URL", "JAXDREAM_OFFLINE",
                 "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("JAXDREAM_HOME", str(home))
    monkeypatch.setenv("JAXDREAM_WEIGHTS_URL", (tmp_path / "no-mirror").as_uri())
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    monkeypatch.setattr(command, "enable_compilation_cache", lambda: None)

    def call(argv: list) -> tuple[int, str, str]:
        try:
            rc = cli_main.main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception as e:  # noqa: BLE001 - reported as a failure
            captured = capsys.readouterr()
            pytest.fail(f"main({argv}) raised {e!r}\nstderr:\n{captured.err}")
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    call.home = home
    return call


def base_argv(command: str, inputs, out: Path) -> list:
    """A valid command line for each command (tiny settings; the weights are never loaded by a dry run)."""
    dream_tail = ["--weights", inputs["g"], "--layers", LAYER, "--octaves", 1, "--steps", 1, "--quiet"]
    return {
        "dream": ["dream", inputs["image"], "-o", out / "out.png", "--size", SIZE, *dream_tail],
        "zoom": ["zoom", inputs["image"], "-o", f"{out / 'frames'}/", "--frames", 4, "--steps-per-frame", 1,
                 "--size", SIZE, *dream_tail],
        "zoom-gif": ["zoom", inputs["image"], "-o", out / "out.gif", "--frames", 4, "--steps-per-frame", 1,
                     "--size", SIZE, *dream_tail],
        "style": ["style", inputs["image"], "--style", inputs["style"], "-o", out / "out.png", "--size", 32,
                  "--iterations", 2, "--weights", inputs["v"], "--quiet"],
        "video-style": ["video", inputs["clip"], "--style", inputs["style"], "-o", out / "out.mp4",
                        "--weights", inputs["v"], "--size", 32, "--iterations-first", 1, "--iterations", 1,
                        "--quiet"],
        "video-dream": ["video", inputs["clip"], "--dream", "-o", f"{out / 'frames'}/", "--size", SIZE,
                        "--steps-per-frame", 1, *dream_tail],
    }[command]


@pytest.mark.parametrize("command", ["dream", "zoom", "zoom-gif", "style", "video-style", "video-dream"])
def test_dry_run_of_a_valid_command(command, inputs, in_process, tmp_path):
    """Exit 0, a plan on stdout, no error, nothing written: no output, no frames folder, no
    work folder, no converted weights."""
    out = tmp_path / "out"
    out.mkdir()
    rc, stdout, err = in_process(base_argv(command, inputs, out) + ["--dry-run"])
    assert rc == 0, err
    assert stdout.strip(), "a dry run prints what it would do"
    assert ERROR_PREFIX not in err and "Traceback" not in err, err
    assert snapshot(out) == {}
    assert not list(in_process.home.rglob("*.npz")), "a dry run loads no weights"


# option -> kind. count: >= 1; positive: > 0; nonneg: >= 0; seed: 0..2**32-1; unit: [0, 1];
# finite: any finite number; pair: DX,DY finite; any: only nan/inf/huge are surely wrong.
#: the device flags every computing command takes (a lone --process-id is an error: "together")
DEVICE_NUMERIC = {"devices": "count", "num-processes": "any", "process-id": "any"}
DREAM_NUMERIC = {"guide-size": "count", "steps": "count", "octaves": "count", "octave-scale": "positive",
                 "step-size": "positive", "jitter": "nonneg", "lapnorm": "count", "tile-size": "tile",
                 "seed": "seed", "size": "count", **DEVICE_NUMERIC}
ZOOM_NUMERIC = {**DREAM_NUMERIC, "frames": "count", "zoom": "positive", "rotate": "finite",
                "translate": "pair", "steps-per-frame": "count", "fps": "positive"}
STYLE_NUMERIC = {"content-weight": "nonneg", "style-weight": "nonneg", "tv-weight": "nonneg",
                 "iterations": "count", "learning-rate": "positive", "lbfgs-num-correction": "count",
                 "size": "count", "style-scale": "positive", "seed": "seed", "print-iter": "nonneg",
                 "save-iter": "nonneg", "chunk": "count", "style-blend-weights": "any", "scales": "any",
                 "band-rows": "count", **DEVICE_NUMERIC}
VIDEO_COMMON = {"start": "nonneg", "end": "any", "frames": "count", "fps": "positive"}
VIDEO_STYLE_NUMERIC = {**VIDEO_COMMON, "iterations-first": "count", "iterations": "count",
                       "temporal-weight": "nonneg", "content-weight": "nonneg", "style-weight": "nonneg",
                       "tv-weight": "nonneg", "learning-rate": "positive", "lbfgs-num-correction": "count",
                       "style-scale": "positive", "size": "count", "seed": "seed", "style-blend-weights": "any",
                       "scales-first": "any", **DEVICE_NUMERIC}
VIDEO_DREAM_NUMERIC = {**VIDEO_COMMON, "blend": "unit", "steps-per-frame": "count", **DREAM_NUMERIC}
#: comma-separated options: a bad value may be found after parsing (exit 1) or by argparse (2)
LIST_OPTIONS = {"style": {"content-weight", "style-weight", "tv-weight", "iterations", "seed",
                          "style-blend-weights", "scales"},
                "video-style": {"style-blend-weights", "scales-first"}}

NUMERIC = {"dream": DREAM_NUMERIC, "zoom": ZOOM_NUMERIC, "style": STYLE_NUMERIC,
           "video-style": VIDEO_STYLE_NUMERIC, "video-dream": VIDEO_DREAM_NUMERIC}
NUMERIC_CASES = [(command, option) for command, table in NUMERIC.items() for option in table]


def _expectations(kind: str) -> tuple[list[str], list[str]]:
    """(values that must be rejected, values that must be accepted) besides nan/inf/-inf/huge."""
    return {
        "count": (["0", "-1"], []), "positive": (["0", "-1"], []), "tile": (["0", "-1", "16"], []),
        "nonneg": (["-1"], ["0"]), "seed": (["-1", str(2 ** 32)], ["0", str(2 ** 32 - 1)]),
        "unit": (["-1", "1.5"], ["0", "1"]), "finite": ([], ["0", "-1"]), "pair": ([], ["0", "-1"]),
        "any": ([], []),
    }[kind]


def _names_option(line: str, option: str) -> bool:
    return any(form in line for form in (f"--{option}", option.replace("-", " "), option.replace("-", "_")))


@pytest.mark.parametrize("command, option", NUMERIC_CASES, ids=[f"{c} --{o}" for c, o in NUMERIC_CASES])
def test_numeric_option_with_dry_run(command, option, inputs, in_process, tmp_path):
    """nan, inf, -inf and 10**30 are always refused (exit 2 with one line naming the option; a
    comma-list option may say so with exit 1); 0 and -1 follow the option's range; any exit is
    0, 1 or 2 with one error line; a dry run never writes anything."""
    kind = NUMERIC[command][option]
    must_reject, must_accept = _expectations(kind)
    is_list = option in LIST_OPTIONS.get(command, ())
    out = tmp_path / "out"
    out.mkdir()
    base = base_argv(command, inputs, out)
    problems = []
    for value in dict.fromkeys([*BAD_VALUES, *must_reject, *must_accept]):
        given = value
        if kind == "pair":
            given = f"0,{value}" if value.startswith("-") else f"{value},0"
            given = "-1,-1" if value == "-1" else given
        rc, _, err = in_process(base + [f"--{option}={given}", "--dry-run"])
        where = f"--{option}={given}: exit {rc}"
        if snapshot(out):
            problems.append(f"{where}: wrote {sorted(snapshot(out))}")
            shutil.rmtree(out)
            out.mkdir()
        if rc not in (0, 1, 2):
            problems.append(f"{where}: not 0, 1 or 2")
            continue
        if value in ALWAYS_BAD or value in must_reject:
            codes = (1, 2) if is_list else (2,)
            if rc not in codes:
                problems.append(f"{where}, expected {codes}: {err.strip()!r}")
                continue
        if value in must_accept and rc != 0:
            problems.append(f"{where}, expected 0 (a valid value): {err.strip()!r}")
            continue
        if rc != 0:
            try:
                line = one_error(rc, err)
            except AssertionError as e:
                problems.append(f"{where}: {e}")
                continue
            if value in ALWAYS_BAD or value in must_reject:
                if not _names_option(line, option):
                    problems.append(f"{where}: the error does not name --{option}: {line!r}")
        elif ERROR_PREFIX in err or "Traceback" in err:
            problems.append(f"{where} but stderr has an error: {err!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("value", BAD_VALUES)
def test_layers_size_out_of_range(value, in_process):
    rc, _, err = in_process(["layers", "googlenet", f"--size={value}"])
    one_error(rc, err, "--size", codes=(2,))


@pytest.mark.parametrize("value", BAD_VALUES)
def test_classify_top_out_of_range(value, inputs, in_process, tmp_path):
    """Refused by argparse: the (missing) weights file is never reached."""
    rc, _, err = in_process(["classify", inputs["image"], "--weights", tmp_path / "absent.caffemodel",
                             f"--top={value}"])
    one_error(rc, err, "--top", codes=(2,))


LIST_CASES = [("style", "style-weight", "1e2,nan"), ("style", "content-weight", "5,inf"),
              ("style", "tv-weight", "1e-3,-inf"), ("style", "style-weight", f"100,{HUGE}"),
              ("style", "seed", "0,-1"), ("style", "seed", f"1,{2 ** 32}"), ("style", "seed", "0,nan"),
              ("style", "style-blend-weights", "1,nan"), ("dream", "channels", "20-10"),
              ("zoom", "channels", "20-10"), ("zoom", "translate", "nan,nan")]


@pytest.mark.parametrize("command, option, value", LIST_CASES, ids=[f"{c} --{o}={v}" for c, o, v in LIST_CASES])
def test_bad_value_in_a_list(command, option, value, inputs, in_process, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    rc, _, err = in_process(base_argv(command, inputs, out) + [f"--{option}={value}", "--dry-run"])
    line = one_error(rc, err)
    assert _names_option(line, option), line
    assert snapshot(out) == {}


DRY_RUN_ERRORS = {
    # name: (command, extra args, output replaced by, needle)
    "missing input": ("dream", ["--layers", LAYER], None, "absent.png"),
    "unwritable output": ("dream", [], "/proc/jaxdream_x.png", "/proc"),
    "unknown layer": ("zoom", ["--layers", "inception_9z/output"], None, "inception_9z/output"),
    "missing style image": ("style", ["--style", "{tmp}/absent_style.png"], None, "absent_style.png"),
    "start past the end": ("video-dream", ["--start", "1000"], None, "1000"),
    "unknown video suffix": ("video-style", [], "{tmp}/out/out.avi", ".avi"),
}


@pytest.mark.parametrize("name", list(DRY_RUN_ERRORS))
def test_dry_run_finds_the_error(name, inputs, in_process, tmp_path):
    """A dry run checks inputs, settings and the output: exit 1, one line, nothing written."""
    command, extra, output, needle = DRY_RUN_ERRORS[name]
    out = tmp_path / "out"
    out.mkdir()
    argv = base_argv(command, inputs, out)
    if name == "missing input":
        argv[1] = tmp_path / "absent.png"
    if output is not None:
        argv[argv.index("-o") + 1] = output.format(tmp=tmp_path)
    if command == "style" and "--style" in extra:  # replace the one style image, do not add one
        argv[argv.index("--style") + 1] = extra[1].format(tmp=tmp_path)
        extra = []
    argv += [a.format(tmp=tmp_path) for a in extra] + ["--dry-run"]
    rc, _, err = in_process(argv)
    one_error(rc, err, needle, codes=(1, 2))
    assert snapshot(out) == {}
    assert not Path("/proc/jaxdream_x.png").exists()


def test_layers_tiny_size_gives_each_skipped_layer_its_minimum(in_process):
    """``layers googlenet --size 2`` works and the layers it cannot show do not all claim 223 px."""
    rc, stdout, err = in_process(["layers", "googlenet", "--size", "2"])
    assert rc == 0, err
    assert stdout.startswith("googlenet at 2x2:")
    # "name  N" rows (a layer and its minimum size) and "N px" phrases; not "1 x 1  64" rows
    sizes = {int(m) for m in re.findall(r"^\s*\S+\s+(\d+)\s*$", stdout, re.M)}
    sizes |= {int(m) for m in re.findall(r"(\d+)\s*px", stdout)}
    assert len(sizes) >= 2, f"one minimum size for every skipped layer:\n{stdout}"
    assert min(sizes) < 223, stdout


# --------------------------------------------------------------------------------------------
# frames folders, failed runs, read-only folders (subprocesses)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@needs_script
def test_frames_folder_of_another_run_is_refused_until_overwrite(inputs, real_env, tmp_path):
    """zoom with other settings, and a video, into a finished zoom's folder: refused with one line
    naming --resume and --overwrite, the frames untouched; then --overwrite leaves exactly the new
    run's frames. Every step runs even when an earlier one fails; the failures are listed."""
    out = tmp_path / "frames"
    assert_ok(run_cli(zoom_args(inputs, f"{out}/", 4), real_env))
    assert sorted(os.listdir(out)) == frame_names(4)
    before = snapshot(out)
    problems = []
    for what, args in [
            ("zoom", zoom_args(inputs, f"{out}/", 4, "--zoom", "1.2")),
            ("video", video_dream_args(inputs["clip"], f"{out}/", inputs, "--frames", 2, "--size", SIZE))]:
        result = run_cli(args, real_env)
        try:
            one_error(result.returncode, result.stderr, "--resume", "--overwrite", codes=(1,))
        except AssertionError as e:
            problems.append(f"{what}: {e}")
        if snapshot(out) != before:
            problems.append(f"{what}: the frames folder changed: {sorted(os.listdir(out))}")
            shutil.rmtree(out)
            assert_ok(run_cli(zoom_args(inputs, f"{out}/", 4), real_env))
    result = run_cli(zoom_args(inputs, f"{out}/", 2, "--overwrite"), real_env)
    left = sorted(os.listdir(out)) if out.is_dir() else None
    if result.returncode != 0 or left != frame_names(2):
        problems.append(f"--overwrite: exit {result.returncode}, folder {left}, "
                        f"stderr {result.stderr.strip()!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@needs_script
@pytest.mark.parametrize("command", ["zoom", "video"])
def test_leftover_work_folder_is_refused(command, inputs, real_env, tmp_path):
    """A ``.NAME.frames`` folder of an unfinished run beside a GIF/MP4 output is not silently
    reused or replaced; with zoom, ``--overwrite`` then starts over and cleans up."""
    folder = tmp_path / "run"
    folder.mkdir()
    out = folder / ("out.gif" if command == "zoom" else "out.mp4")
    work = folder / f".{out.name}.frames"
    work.mkdir()
    (work / "jaxdream-state.json").write_text("{}")
    media.save_image(work / "frame_00000.png", np.zeros((H, W, 3), np.float32))
    before = snapshot(folder)
    args = zoom_args(inputs, out, 4) if command == "zoom" else \
        video_dream_args(inputs["clip"], out, inputs, "--frames", 2, "--size", SIZE)
    result = run_cli(args, real_env)
    one_error(result.returncode, result.stderr, "--resume", "--overwrite", codes=(1,))
    assert snapshot(folder) == before
    if command == "zoom":
        assert_ok(run_cli(args + ["--overwrite"], real_env))
        assert sorted(os.listdir(folder)) == ["out.gif"]
        assert gif_frames(out) == 4


@pytest.mark.slow
@needs_script
@pytest.mark.parametrize("case", ["truncated weights", "schedule names an unknown layer at frame 2"])
def test_failed_run_leaves_nothing_and_the_rerun_works(case, inputs, real_env, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    if case == "truncated weights":
        half = tmp_path / "weights" / "half.caffemodel"
        half.parent.mkdir()
        data = inputs["g"].read_bytes()
        half.write_bytes(data[: len(data) // 2])
        out = folder / "out.gif"
        bad = zoom_args(inputs, out, 4, weights=half)
    else:
        out = folder / "frames"
        bad = zoom_args(inputs, f"{out}/", 4, "--layer-schedule", f"0:{LAYER},2:inception_9z/output")
    result = run_cli(bad, real_env)
    one_error(result.returncode, result.stderr, codes=(1,))
    assert snapshot(folder) == {}, "a failed run left files behind"
    good = zoom_args(inputs, out if out.suffix else f"{out}/", 4)
    assert_ok(run_cli(good, real_env))
    if out.suffix == ".gif":
        assert sorted(os.listdir(folder)) == ["out.gif"] and gif_frames(out) == 4
    else:
        assert sorted(os.listdir(out)) == frame_names(4)


@needs_script
@pytest.mark.skipif(IS_ROOT, reason="running as root: permission bits do not stop root from writing")
@pytest.mark.parametrize("command", ["dream", "zoom", "style", "video"])
def test_read_only_folder_is_refused_before_computing(command, inputs, real_env, tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    os.chmod(folder, 0o555)
    try:
        argv = {"dream": base_argv("dream", inputs, folder),
                "zoom": base_argv("zoom-gif", inputs, folder),
                "style": base_argv("style", inputs, folder),
                "video": base_argv("video-style", inputs, folder)}[command]
        start = time.perf_counter()
        result = run_cli(argv, real_env)
        one_error(result.returncode, result.stderr, "read_only", codes=(1,))
        assert time.perf_counter() - start < 60
        assert snapshot(folder) == {}
    finally:
        os.chmod(folder, 0o755)


# --------------------------------------------------------------------------------------------
# signals
# --------------------------------------------------------------------------------------------


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


#: Frames of a zoom interrupted after its first frame: enough that, with every program compiled
#: ahead and found in the cache, the run is still going when the signal arrives.
LONG_ZOOM = 48


class Started:
    """A ``jaxdream`` subprocess whose stdout and stderr go to files (no pipe can fill up)."""

    def __init__(self, args: list, env: dict[str, str], logs: Path, cwd: Path | None = None):
        logs.mkdir(parents=True, exist_ok=True)
        self.err_path = logs / f"stderr_{time.monotonic_ns()}.txt"
        with open(self.err_path, "w") as err, open(logs / "stdout.txt", "a") as out:
            # as from a terminal: a test run started as a background job (SIGINT ignored, which
            # jaxdream then respects, like nohup) must still be able to interrupt its command
            self.proc = subprocess.Popen([SCRIPT, *map(str, args)], env=env, stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, cwd=cwd, preexec_fn=_default_sigint)

    def wait_for(self, path: Path, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None:
                pytest.fail(f"exited {self.proc.returncode} before {path} existed:\n{self.stderr}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"{path} did not appear within {timeout} s")
            time.sleep(0.02)

    def stop(self, sig: int, timeout: float = 60) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"still running {timeout} s after signal {sig}")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


@pytest.mark.slow
@needs_script
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_zoom_interrupted_keeps_frames_and_resumes(sig, code, inputs, real_env, tmp_path):
    out = tmp_path / "frames"
    args = zoom_args(inputs, f"{out}/", LONG_ZOOM, steps_per_frame=6)
    proc = Started(args, real_env, tmp_path / "logs")
    proc.wait_for(out / "frame_00000.png")
    rc = proc.stop(sig)
    err = proc.stderr
    assert rc == code, f"exit {rc} after {sig!r}:\n{err}"
    assert "Traceback" not in err, err
    assert "interrupted" in err, err
    kept = sorted(p.name for p in out.glob("frame_*.png"))
    assert 1 <= len(kept) < LONG_ZOOM and kept == frame_names(len(kept)), kept
    assert temp_files(out) == []
    assert_ok(run_cli(args + ["--resume"], real_env))
    assert sorted(os.listdir(out)) == frame_names(LONG_ZOOM)


@pytest.mark.slow
@needs_script
@pytest.mark.parametrize("delay", [3.0, 4.5, 6.0])
def test_dream_interrupted_exits_130(delay, inputs, real_env, tmp_path):
    """Ctrl-C at any moment of a long dream (loading, compiling, ascending) exits 130."""
    args = ["dream", inputs["image"], "-o", tmp_path / "out.png", "--size", 256, "--octaves", 4, "--steps", 300,
            "--layers", LAYER, "--weights", inputs["g"], "--quiet"]
    proc = Started(args, real_env, tmp_path / "logs")
    time.sleep(delay)
    assert proc.proc.poll() is None, f"finished within {delay} s:\n{proc.stderr}"
    rc = proc.stop(signal.SIGINT, timeout=30)  # the whole run takes longer: not stopping is a failure
    assert rc == 130, f"exit {rc}:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert temp_files(tmp_path) == []


@pytest.mark.slow
@needs_script
def test_sigkill_leftovers_are_cleaned_up_by_resume(inputs, real_env, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    out = folder / "out.gif"
    args = zoom_args(inputs, out, LONG_ZOOM, steps_per_frame=6)
    proc = Started(args, real_env, tmp_path / "logs")
    proc.wait_for(folder / ".out.gif.frames" / "frame_00000.png")
    assert proc.stop(signal.SIGKILL) == -signal.SIGKILL
    result = run_cli(args + ["--resume"], real_env)
    assert_ok(result)
    assert out.is_file() and gif_frames(out) == LONG_ZOOM
    assert sorted(os.listdir(folder)) == ["out.gif"], "work folder or temp files left behind"


@pytest.mark.slow
@needs_script
@pytest.mark.parametrize("how", ["relative path from another folder", "symlink"])
def test_resume_knows_the_input_by_another_path(how, inputs, real_env, tmp_path):
    source = tmp_path / "pictures" / "in.png"
    source.parent.mkdir()
    shutil.copy(inputs["image"], source)
    out = tmp_path / "frames"
    first = zoom_args(inputs, f"{out}/", LONG_ZOOM, image=source.resolve(), steps_per_frame=6)
    proc = Started(first, real_env, tmp_path / "logs")
    proc.wait_for(out / "frame_00000.png")
    assert proc.stop(signal.SIGINT) == 130, proc.stderr
    cwd = None
    if how == "symlink":
        image = tmp_path / "link.png"
        image.symlink_to(source)
    else:
        cwd = tmp_path / "elsewhere"
        cwd.mkdir()
        image = Path(os.path.relpath(source, cwd))
        assert not image.is_absolute()
    result = run_cli(zoom_args(inputs, f"{out}/", LONG_ZOOM, "--resume", image=image, steps_per_frame=6), real_env, cwd=cwd)
    assert_ok(result)
    assert sorted(os.listdir(out)) == frame_names(LONG_ZOOM)


# --------------------------------------------------------------------------------------------
# a truncated clip
# --------------------------------------------------------------------------------------------


TRUNCATED_FROM = 12  # frames in the clip that is cut


@pytest.mark.slow
@needs_script
@pytest.mark.parametrize("faststart", [False, True], ids=["index at the end", "index first"])
def test_truncated_clip(faststart, inputs, real_env, tmp_path):
    """60% of a clip: one error line (nothing readable), or the readable frames with a warning
    that says how many were read."""
    whole = write_clip(tmp_path / "whole.mp4", faststart=faststart, frames=TRUNCATED_FROM)
    clip = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    clip.write_bytes(data[: int(len(data) * 0.6)])
    folder = tmp_path / "run"
    folder.mkdir()
    out = folder / "out.gif"
    result = run_cli(video_dream_args(clip, out, inputs, "--size", 32, "--frame-init", "content"), real_env)
    if result.returncode != 0:
        one_error(result.returncode, result.stderr, "cut.mp4", codes=(1,))
        assert snapshot(folder) == {}
        return
    assert "Traceback" not in result.stderr
    n = gif_frames(out)
    assert 1 <= n < TRUNCATED_FROM
    warnings_ = [line for line in result.stderr.splitlines() if line.startswith(WARNING_PREFIX)]
    assert any(re.search(rf"\b{n}\b", line) for line in warnings_), \
        f"{n} frames written; no warning says so:\n{result.stderr}"
    assert sorted(os.listdir(folder)) == ["out.gif"]


# --------------------------------------------------------------------------------------------
# THE TABLE: hostile command lines, each one error line and nothing left behind
# --------------------------------------------------------------------------------------------
# Placeholders: {d} the row's own (empty) folder, {m} the shared inputs, {image} {style} {gif}
# {clip} inputs, {g} the synthetic GoogLeNet, {v} the synthetic VGG-19, {huge} 10**30.
# setup: "dir:NAME" makes a folder in {d}, "file:NAME" a small file, "copy:KEY:NAME" copies an input.
# code: the expected exit status (None: 1 or 2).

ROWS: dict[str, dict] = {}


def row(name: str, args: str, needles=(), code: int | None = 1, setup=(), out: str | None = None) -> None:
    assert name not in ROWS, name
    ROWS[name] = {"args": args.split(), "needles": needles, "code": code, "setup": setup, "out": out}


DREAM = "dream {image} -o {d}/out.png --weights {g} --layers " + LAYER + " --octaves 1 --steps 1 --size 64 --quiet"
ZOOM = ("zoom {image} -o {d}/out.gif --frames 4 --steps 1 --octaves 1 --steps-per-frame 1 --layers " + LAYER
        + " --size 64 --weights {g} --quiet")
STYLE = "style {image} --style {style} -o {d}/out.png --size 32 --iterations 2 --weights {v} --quiet"
VSTYLE = ("video {clip} --style {style} -o {d}/out.mp4 --weights {v} --size 32 --iterations-first 1 "
          "--iterations 1 --frames 2 --quiet")
VDREAM = ("video {clip} --dream -o {d}/out.gif --weights {g} --layers " + LAYER
          + " --octaves 1 --steps 1 --steps-per-frame 1 --size 64 --frames 2 --quiet")


def swap(base: str, old: str, new: str) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


# the command line itself
row("devices unknown flag", "devices --bogus", ["--bogus"], 2)
row("unknown command", "frobnicate", ["frobnicate"], 2)
# weights
row("download unknown key", "weights download nope", ["nope"])
row("download from a missing file", "weights download googlenet --url file://{d}/absent.caffemodel", ["absent"])
row("convert unknown key", "weights convert nope {g}", ["nope"])
row("convert missing file", "weights convert googlenet {d}/absent.caffemodel", ["absent.caffemodel"])
row("convert a folder", "weights convert googlenet {m}/a_folder", ["a_folder"])
row("convert an empty h5", "weights convert vgg19 {m}/empty.h5", ["empty.h5"])
row("verify unknown key", "weights verify nope", ["nope"])
# layers
row("layers unknown model", "layers nope", ["nope"])
# classify
CLASSIFY = "classify {image} --weights {g}"
row("classify missing image", swap(CLASSIFY, "{image}", "{d}/absent.png"), ["absent.png"])
row("classify corrupt image", swap(CLASSIFY, "{image}", "{m}/noise.png"), ["noise.png"])
row("classify folder as image", swap(CLASSIFY, "{image}", "{m}/a_folder"), ["a_folder"])
row("classify clip as image", swap(CLASSIFY, "{image}", "{clip}"), ["clip.mp4"])
# dream
row("dream missing input", swap(DREAM, "{image}", "{d}/absent.png"), ["absent.png"])
row("dream corrupt input", swap(DREAM, "{image}", "{m}/noise.png"), ["noise.png"])
row("dream empty input", swap(DREAM, "{image}", "{m}/empty.png"), ["empty.png"])
row("dream folder as input", swap(DREAM, "{image}", "{m}/a_folder"), ["a_folder"])
row("dream clip as image", swap(DREAM, "{image}", "{clip}"), ["clip.mp4"])
row("dream unknown layer", DREAM + " --layers inception_9z/output", ["inception_9z/output"])
row("dream unknown model", DREAM + " --model resnet50", ["resnet50"], 2)
row("dream channels 20-10", DREAM + " --channels 20-10", ["20-10"], None)
row("dream unknown class", DREAM + " --class zzz-not-a-class", ["zzz-not-a-class"])
row("dream missing guide", DREAM + " --guide {d}/absent_guide.png", ["absent_guide.png"])
row("dream step size nan", DREAM + " --step-size nan", ["--step-size"], 2)
row("dream output in /proc", swap(DREAM, "{d}/out.png", "/proc/jaxdream_x.png"), ["/proc"], out="/proc/jaxdream_x.png")
row("dream output under a file", swap(DREAM, "{d}/out.png", "{d}/afile/x.png"), [("is a file", "not a folder")],
    setup=["file:afile"])
row("dream output is a folder", swap(DREAM, "{d}/out.png", "{d}/taken.png"), ["taken.png"], setup=["dir:taken.png"])
row("dream output is the input", swap(swap(DREAM, "{image}", "{d}/in.png"), "{d}/out.png", "{d}/in.png"),
    ["in.png"], setup=["copy:image:in.png"])
# zoom
row("zoom missing input", swap(ZOOM, "{image}", "{d}/absent.png"), ["absent.png"])
row("zoom schedule without frame", ZOOM + " --layer-schedule inception_4c/output", ["layer-schedule"], None)
row("zoom schedule unknown layer", ZOOM + " --layer-schedule 0:" + LAYER + ",2:inception_9z/output",
    ["inception_9z/output"])
row("zoom translate a,b", ZOOM + " --translate a,b", ["--translate"], 2)
row("zoom zoom 0 into a new folder", swap(ZOOM, "{d}/out.gif", "{d}/frames/") + " --zoom 0", ["--zoom"], 2,
    out="{d}/frames")
row("zoom output in /proc", swap(ZOOM, "{d}/out.gif", "/proc/jaxdream_x.gif"), ["/proc"], out="/proc/jaxdream_x.gif")
row("zoom output under a file", swap(ZOOM, "{d}/out.gif", "{d}/afile/x.gif"), [("is a file", "not a folder")],
    setup=["file:afile"])
row("zoom output is a folder named .gif",
    swap(swap(ZOOM, "{d}/out.gif", "{d}/taken.gif"), "--frames 4", "--frames 1"), ["taken.gif"], setup=["dir:taken.gif"])
row("zoom output is the input", swap(swap(ZOOM, "{image}", "{d}/in.gif"), "{d}/out.gif", "{d}/in.gif"),
    ["in.gif"], setup=["copy:gif:in.gif"])
# style
row("style missing style", swap(STYLE, "{style}", "{d}/absent_style.png"), ["absent_style.png"])
row("style missing content", swap(STYLE, "{image}", "{d}/absent.png"), ["absent.png"])
row("style text as style image", swap(STYLE, "{style}", "{m}/notes.txt"), ["notes.txt"])
row("style unknown optimizer", STYLE + " --optimizer sgd", ["sgd"], None)
row("style unknown pooling", STYLE + " --pooling median", ["median"], None)
row("style unknown color transfer", STYLE + " --color-transfer sepia", ["sepia"], None)
row("style unknown layer", STYLE + " --style-layers relu1_1,relu9_1", ["relu9_1"])
row("style output in /proc", swap(STYLE, "{d}/out.png", "/proc/jaxdream_x.png"), ["/proc"], out="/proc/jaxdream_x.png")
row("style output under a file", swap(STYLE, "{d}/out.png", "{d}/afile/x.png"), [("is a file", "not a folder")],
    setup=["file:afile"])
row("style output is a folder", swap(STYLE, "{d}/out.png", "{d}/taken.png"), ["taken.png"], setup=["dir:taken.png"])
row("style output is the content", swap(swap(STYLE, "{image}", "{d}/in.png"), "{d}/out.png", "{d}/in.png"),
    ["in.png"], setup=["copy:image:in.png"])
row("style output is the style", swap(swap(STYLE, "{style}", "{d}/st.png"), "{d}/out.png", "{d}/st.png"),
    ["st.png"], setup=["copy:style:st.png"])
row("style missing weights", swap(STYLE, "{v}", "{d}/absent.h5"), ["absent.h5"])
# video
row("video missing clip", swap(VSTYLE, "{clip}", "{d}/absent.mp4"), ["absent.mp4"])
row("video folder as clip", swap(VSTYLE, "{clip}", "{m}/a_folder"), ["a_folder", "is a folder"])
row("video text as clip", swap(VSTYLE, "{clip}", "{m}/notes.mp4"), ["notes.mp4"])
row("video image as clip", swap(VSTYLE, "{clip}", "{image}"), ["image.png"])
row("video empty clip", swap(VDREAM, "{clip}", "{m}/empty.mp4"), ["empty.mp4"])
row("video start past the end", swap(VDREAM, "--frames 2", "--start 1000"), ["1000"], None)
row("video end before start", swap(VDREAM, "--frames 2", "--start 5 --end 5"), ["--end"], None)
row("video frames 0", swap(VDREAM, "--frames 2", "--frames 0"), ["--frames"], 2)
row("video both modes", VSTYLE + " --dream", ["--dream"], 2)
row("video unknown suffix", swap(VSTYLE, "{d}/out.mp4", "{d}/out.avi"), ["out.avi"])
row("video output in /proc", swap(VSTYLE, "{d}/out.mp4", "/proc/jaxdream_x.mp4"), ["/proc"], out="/proc/jaxdream_x.mp4")
row("video output under a file", swap(VSTYLE, "{d}/out.mp4", "{d}/afile/x.mp4"), [("is a file", "not a folder")],
    setup=["file:afile"])
row("video output is a folder named .mp4",
    swap(swap(VDREAM, "{d}/out.gif", "{d}/taken.mp4"), "--frames 2", "--frames 1"), ["taken.mp4"], setup=["dir:taken.mp4"])
row("video output is the input", swap(swap(VDREAM, "{clip}", "{d}/in.mp4"), "{d}/out.gif", "{d}/in.mp4"),
    ["in.mp4"], setup=["copy:clip:in.mp4"])
row("video start past the end into a new folder", swap(swap(VDREAM, "--frames 2", "--start 1000"), "{d}/out.gif",
                                                       "{d}/frames/"), ["1000"], None, out="{d}/frames")
row("video dream unknown layer", VDREAM + " --layers inception_9z/output", ["inception_9z/output"])


class Batch(helpers.Batch):
    """Table rows started two at a time, each in its own output folder; ``batch[name]`` waits
    for one result (waiting and closing are helpers.Batch's)."""

    def __init__(self, root: Path, inputs: dict[str, Path]) -> None:
        super().__init__(root)
        self.inputs = inputs
        self.folders: dict[str, Path] = {}
        self.before: dict[str, dict] = {}

    def values(self, d: Path) -> dict[str, str]:
        i = self.inputs
        return {"d": str(d), "m": str(i["m"]), "image": str(i["image"]), "style": str(i["style"]),
                "gif": str(i["gif"]), "clip": str(i["clip"]), "g": str(i["g"]), "v": str(i["v"]), "huge": HUGE}

    def submit(self, name: str, spec: dict) -> None:
        index = len(self.futures)
        d = self.root / f"row{index:03d}" / "out"
        d.mkdir(parents=True)
        for item in spec["setup"]:
            kind, _, rest = item.partition(":")
            if kind == "dir":
                (d / rest).mkdir()
            elif kind == "file":
                (d / rest).write_text("a regular file\n")
            else:
                key, _, target = rest.partition(":")
                shutil.copy(self.inputs[key], d / target)
        home = d.parent / "home" / "jaxdream"
        home.parent.mkdir()
        values = self.values(d)
        args = [a.format(**values) for a in spec["args"]]
        self.folders[name], self.homes[name], self.before[name] = d, home, snapshot(d)
        self.futures[name] = self.pool.submit(run_cli, args, cli_env(home), d, 300)


@pytest.fixture(scope="module")
def table(tmp_path_factory, inputs):
    media_before = snapshot(inputs["m"])
    batch = Batch(tmp_path_factory.mktemp("hostile_table"), inputs)
    batch.media_before = media_before
    for name, spec in ROWS.items():
        batch.submit(name, spec)
    yield batch
    batch.close()


def test_the_table_is_big_enough():
    assert len(ROWS) >= 60
    commands = {spec["args"][0] for spec in ROWS.values()}
    assert {"devices", "weights", "layers", "classify", "dream", "zoom", "style", "video"} <= commands


@pytest.mark.slow
@needs_script
@pytest.mark.parametrize("name", list(ROWS))
def test_hostile_command_line(name, table):
    spec = ROWS[name]
    result = table[name]
    d = table.folders[name]
    values = table.values(d)
    needles = [tuple(n.format(**values) for n in (x if isinstance(x, tuple) else (x,))) for x in spec["needles"]]
    codes = (spec["code"],) if spec["code"] else (1, 2)
    one_error(result.returncode, result.stderr, *needles, codes=codes)
    # nothing created, changed or removed in the row's folder (inputs copied there included)
    assert snapshot(d) == table.before[name], f"files changed: {sorted(set(snapshot(d)) ^ set(table.before[name]))}"
    assert temp_files(d) == []
    if spec["out"]:
        out = Path(spec["out"].format(**values))
        if not table.before[name].get(out.name):
            assert not out.exists(), out
            assert not out.with_name(f".{out.name}.frames").exists()
    assert files_under(table.homes[name]) == [], "files written into the jaxdream home"


@pytest.mark.slow
@needs_script
def test_the_table_left_the_shared_inputs_alone(table):
    for name in ROWS:
        table[name]
    assert snapshot(table.inputs["m"]) == table.media_before
