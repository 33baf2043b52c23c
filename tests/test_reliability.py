"""Library-level reliability: option ranges, output checks, temp files, frame folders, resume
identity, truncated clips, memory ceilings. (The command-line table is in test_hostile.py.)"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxdream import media, options
from jaxdream import zoom as zoom_loop
from jaxdream.media import frames
from jaxdream.runtime import memory
from jaxdream.errors import MediaError, SettingsError

BAD_NUMBERS = ["nan", "inf", "-inf", str(10**30)]


# --------------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(options.NUMBERS))
@pytest.mark.parametrize("text", BAD_NUMBERS)
def test_every_option_refuses_non_finite_and_huge(name, text):
    number = options.NUMBERS[name]
    with pytest.raises(argparse.ArgumentTypeError, match="must be|expected"):
        number.parse(text)
    with pytest.raises(SettingsError, match=name.replace("-", " ")):
        number.check(float(text))


@pytest.mark.parametrize("name", sorted(options.NUMBERS))
def test_every_option_accepts_its_bounds_and_refuses_just_outside(name):
    number = options.NUMBERS[name]
    assert number.check(number.high) == number.high
    if not number.low_open:
        assert number.check(number.low) == number.low
    with pytest.raises(SettingsError):
        number.check(number.high + (1 if number.kind is int else abs(number.high) * 1e-6 + 1e-9))
    step = 1 if number.kind is int else max(abs(number.low) * 1e-6, 1e-9)
    with pytest.raises(SettingsError):
        number.check(number.low if number.low_open else number.low - step)


def test_int_options_take_whole_numbers_only():
    steps = options.get("steps")
    assert steps.parse("1e3") == 1000 and isinstance(steps.parse("1e3"), int)
    for text in ("2.5", "ten", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            steps.parse(text)
    with pytest.raises(SettingsError, match="whole number"):
        steps.check(2.5)


def test_lists_and_pairs():
    assert options.get("style-weight").parse_list("1e2, 1e3,") == [100.0, 1000.0]
    with pytest.raises(argparse.ArgumentTypeError):
        options.get("style-weight").parse_list("1e2,nan")
    with pytest.raises(argparse.ArgumentTypeError):
        options.get("style-weight").parse_list(",")
    assert options.get("translate").parse_pair("2,-1") == (2.0, -1.0)
    for text in ("2", "1,2,3", "a,b", "1,inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            options.get("translate").parse_pair(text)


def test_seed_fits_32_bits():
    seed = options.get("seed")
    assert seed.check(2**32 - 1) == 2**32 - 1
    for bad in (2**32, -1):
        with pytest.raises(SettingsError, match="seed"):
            seed.check(bad)


def test_library_refuses_what_the_cli_refuses():
    from jaxdream.dream import make_config, parse_channels
    with pytest.raises(SettingsError, match="step size"):
        make_config(step_size=float("nan"))
    with pytest.raises(SettingsError, match="seed"):
        make_config(seed=10**30)
    with pytest.raises(SettingsError, match="layer weight"):
        make_config(layers="inception_4c/output:inf")
    with pytest.raises(SettingsError, match="empty"):
        parse_channels("20-10")
    assert parse_channels("10-12,5") == (10, 11, 12, 5)
    with pytest.raises(SettingsError, match="zoom"):
        zoom_loop.ZoomSettings(zoom=math.inf).validate()
    with pytest.raises(SettingsError, match="rotate"):
        zoom_loop.ZoomSettings(rotate=math.nan).validate()
    with pytest.raises(SettingsError, match="translate"):
        zoom_loop.ZoomSettings(translate=(0.0, math.inf)).validate()


# --------------------------------------------------------------------------------------------
# outputs and temp files
# --------------------------------------------------------------------------------------------


def test_check_output_says_what_is_wrong(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "dir.png").mkdir()
    src = tmp_path / "in.png"
    Image.new("RGB", (4, 4)).save(src)
    cases = {tmp_path / "file.txt" / "x.png": "file.txt is a file, not a folder",
             tmp_path / "file.txt" / "deeper" / "x.png": "file.txt is a file, not a folder",
             tmp_path / "missing" / "x.png": "does not exist",
             tmp_path / "dir.png": "is a folder",
             src: "is an input",
             tmp_path / "x.txt": "unknown output type"}
    for path, needle in cases.items():
        with pytest.raises(MediaError, match=needle):
            media.check_output(path, inputs=[src])
    assert media.check_output(tmp_path / "ok.png", inputs=[src]) == tmp_path / "ok.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "file.txt", "in.png"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_check_output_tries_to_create_a_file():
    with pytest.raises(MediaError, match="cannot create files in /proc"):
        media.check_output("/proc/jaxdream_probe.png")
    with pytest.raises(MediaError, match="cannot create files in /proc"):
        media.check_animation_output("/proc/jaxdream_probe.gif")


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    out = tmp_path / "out.png"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".out.png.{media.TEMP_TAG}-{dead}-abcd.png"
    live = tmp_path / f".out.png.{media.TEMP_TAG}-{os.getpid()}-efgh.png"
    other = tmp_path / f".other.png.{media.TEMP_TAG}-{dead}-abcd.png"
    for p in (stale, live, other):
        p.write_bytes(b"half")
    media.check_output(out)
    assert not stale.exists()
    assert live.exists() and other.exists()


def test_atomic_write_failure_leaves_nothing(tmp_path):
    out = tmp_path / "out.png"

    def fail(tmp):
        Path(tmp).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(MediaError, match="No space left"):
        media.atomic_write(out, fail)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_interrupted_leaves_nothing(tmp_path):
    out = tmp_path / "out.png"

    def interrupted(tmp):
        Path(tmp).write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        media.atomic_write(out, interrupted)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# frame folders
# --------------------------------------------------------------------------------------------


def _frame(value: float) -> np.ndarray:
    return np.full((4, 5, 3), value, np.float32)


def _finished_folder(folder: Path, n: int) -> None:
    store = frames.FrameStore(folder, {"run": "old"}, resume=False)
    for i in range(n):
        store.save(i, _frame(10 * i), _frame(10 * i))
    frames.finish(store, folder, "frames", n, 10.0)


def test_store_creates_nothing_until_the_first_frame(tmp_path):
    folder = tmp_path / "frames"
    store = frames.FrameStore(folder, {"a": 1}, resume=False)
    assert not folder.exists()
    with pytest.raises(RuntimeError):
        with frames.frame_run(store):
            store.start()
            assert (folder / frames.STATE_FILE).is_file()
            raise RuntimeError("a bad setting found late")
    assert not folder.exists()


def test_failed_run_in_an_existing_folder_keeps_the_folder_but_nothing_of_ours(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    store = frames.FrameStore(folder, {"a": 1}, resume=False)
    with pytest.raises(KeyboardInterrupt):
        with frames.frame_run(store):
            store.start()
            raise KeyboardInterrupt
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_interrupted_after_a_frame_keeps_it(tmp_path):
    folder = tmp_path / "frames"
    store = frames.FrameStore(folder, {"a": 1}, resume=False)
    with pytest.raises(KeyboardInterrupt):
        with frames.frame_run(store):
            store.save(0, _frame(1), _frame(1))
            raise KeyboardInterrupt
    assert (folder / "frame_00000.png").is_file() and (folder / frames.STATE_FILE).is_file()
    assert frames.FrameStore(folder, {"a": 1}, resume=True).count() == 1


def test_folder_with_another_runs_frames_is_refused(tmp_path):
    folder = tmp_path / "frames"
    _finished_folder(folder, 4)
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(SettingsError, match="--overwrite"):
        frames.FrameStore(folder, {"run": "new"}, resume=False)
    with pytest.raises(SettingsError, match="finished run.*--overwrite"):
        frames.FrameStore(folder, {"run": "new"}, resume=True)
    with pytest.raises(SettingsError, match="not both"):
        frames.FrameStore(folder, {"run": "new"}, resume=True, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_overwrite_with_fewer_frames_leaves_only_the_new_ones(tmp_path):
    folder = tmp_path / "frames"
    _finished_folder(folder, 4)
    store = frames.FrameStore(folder, {"run": "new"}, resume=False, overwrite=True)
    assert store.count() == 0
    for i in range(2):
        store.save(i, _frame(200), _frame(200))
    frames.finish(store, folder, "frames", 2, 10.0)
    assert sorted(p.name for p in folder.iterdir()) == ["frame_00000.png", "frame_00001.png"]
    assert media.read_settings(folder / "frame_00001.png")["run"] == "new"
    np.testing.assert_array_equal(media.load_image(folder / "frame_00000.png"), _frame(200))


def test_unfinished_work_folder_needs_resume_or_overwrite(tmp_path):
    folder = tmp_path / ".out.gif.frames"
    store = frames.FrameStore(folder, {"a": 1}, resume=False)
    store.save(0, _frame(1), _frame(1))
    with pytest.raises(SettingsError, match="--resume.*--overwrite"):
        frames.FrameStore(folder, {"a": 1}, resume=False)
    with pytest.raises(SettingsError, match="settings differ.*\\(a: was 1, now 2\\)"):
        frames.FrameStore(folder, {"a": 2}, resume=True)
    assert frames.FrameStore(folder, {"a": 1}, resume=True).count() == 1


def test_resume_refusal_names_the_differing_settings_with_both_values(tmp_path):
    folder = tmp_path / ".out.gif.frames"
    store = frames.FrameStore(folder, {"a": 1, "b": "x", "c": [1, 2]}, resume=False)
    store.save(0, _frame(1), _frame(1))
    with pytest.raises(SettingsError) as e:
        frames.FrameStore(folder, {"a": 2, "b": "x", "d": 0.5}, resume=True)
    assert str(e.value) == ("cannot resume: settings differ from the interrupted run (a: was 1, now 2; "
                            "c: was [1, 2], now not set; d: was not set, now 0.5); give the same options, "
                            "or start over with --overwrite")


def test_settings_an_older_version_did_not_record_compare_at_their_old_value():
    older = {"new": 0.0, "moot": None}
    saved = {"a": 1}  # a folder of a version before "new" and "moot"
    diff = frames.settings_differences
    assert diff(saved, {"a": 1, "new": 0.0, "moot": 10}, older) == []
    assert diff(saved, {"a": 1, "new": 1.0, "moot": 10}, older) == ["new: was 0.0, now 1.0"]
    assert diff(saved, {"a": 1}, older) == []  # neither records it (another kind of run)
    assert diff({"a": 1, "new": 2.0}, {"a": 1, "new": 0.0}, older) == ["new: was 2.0, now 0.0"]
    assert diff(saved, {"a": 1, "new": 1.0}, {}) == ["new: was not set, now 1.0"]
    assert diff({"a": "x" * 60}, {"a": "y"}, {}) == [f'a: was "{"x" * 36}..., now "y"']


def test_resume_compares_content_hashes_not_typed_paths(tmp_path, monkeypatch):
    clip = tmp_path / "clip.png"
    Image.new("RGB", (4, 4), "red").save(clip)
    link = tmp_path / "link.png"
    link.symlink_to(clip)
    folder = tmp_path / "work"
    record = {"input": str(clip), "input_sha256": media.file_sha256(clip)}
    frames.FrameStore(folder, record, resume=False).save(0, _frame(1), _frame(1))
    monkeypatch.chdir(tmp_path)
    for typed in ("clip.png", str(link), f"./{clip.name}"):
        same = {"input": typed, "input_sha256": media.file_sha256(typed)}
        assert frames.FrameStore(folder, same, resume=True).count() == 1
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "other.png")
    other = {"input": str(clip), "input_sha256": media.file_sha256(tmp_path / "other.png")}
    with pytest.raises(SettingsError, match="input_sha256"):
        frames.FrameStore(folder, other, resume=True)


def test_kill_leftovers_in_a_work_folder_are_removed_on_resume(tmp_path):
    folder = tmp_path / "work"
    store = frames.FrameStore(folder, {"a": 1}, resume=False)
    store.save(0, _frame(1), _frame(1))
    stale = folder / f".frame_00001.png.{media.TEMP_TAG}-999999999-x.png"
    stale.write_bytes(b"half a png")
    state_tmp = folder / f".state_00001.npy.{media.TEMP_TAG}-999999999-y.npy"
    state_tmp.write_bytes(b"half")
    store.release()  # the killed run's process is gone, and its lock on the folder with it
    resumed = frames.FrameStore(folder, {"a": 1}, resume=True)
    resumed.save(1, _frame(2), _frame(2))
    assert not stale.exists() and not state_tmp.exists()


# --------------------------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------------------------


def _noisy_clip(path: Path, frames: int = 24) -> Path:
    rng = np.random.default_rng(0)
    media.write_video(path, (rng.uniform(0, 255, (48, 64, 3)) for _ in range(frames)), 12)
    return path


def test_truncated_clip_warns_with_the_frames_it_can_read(tmp_path):
    data = _noisy_clip(tmp_path / "clip.mp4").read_bytes()
    assert data.find(b"moov") < data.find(b"mdat"), "write_video puts the index first (faststart)"
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.warns(UserWarning, match=r"only (\d+) of the 24 frames") as record:
        reader = media.VideoReader(cut)
    message = next(str(w.message) for w in record if "frames its container lists" in str(w.message))
    read = int(message.split("only ")[1].split(" ")[0])
    assert 0 < read < 24 and reader.frames == read
    assert sum(1 for _ in reader) == read
    with pytest.raises(SettingsError, match="past the end"):
        media.VideoReader(cut, start=read + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        media.VideoReader(cut, end=read)  # the range asked for is all there: no warning


def test_folder_as_clip_says_folder(tmp_path):
    with pytest.raises(MediaError, match="is a folder"):
        media.VideoReader(tmp_path)


# --------------------------------------------------------------------------------------------
# size ceilings
# --------------------------------------------------------------------------------------------


def test_pixel_ceiling_before_any_resize(tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (40, 30)).save(src)
    with pytest.raises(SettingsError, match="megapixels"):
        media.load_image(src, size=20000)
    assert media.image_shape(src) == (30, 40)


def test_image_shape_applies_exif_rotation(tmp_path):
    img = Image.new("RGB", (40, 30))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert media.image_shape(tmp_path / "rot.jpg") == (40, 30)
    assert media.load_image(tmp_path / "rot.jpg").shape[:2] == (40, 30)


def test_memory_estimates_grow_with_pixels_and_are_checked():
    assert memory.style_bytes(1024, 1024) > 3.5 * (memory.style_bytes(512, 512) - memory.FIXED_BYTES)
    assert memory.dream_bytes(4096, 4096, 512, 4) < memory.style_bytes(1024, 1024)
    with pytest.raises(SettingsError, match=r"needs about .* GiB of memory; 1.0 GiB is available on here"):
        memory.check_fits(memory.style_bytes(2048, 2048), "style transfer at 2048x2048",
                          available=(2**30, "here"))
    memory.check_fits(2**20, "tiny", available=(2**30, "here"))


def test_style_plan_refuses_a_size_the_machine_cannot_hold(tmp_path, monkeypatch):
    from jaxdream import style
    img = np.zeros((30, 40, 3), np.float32)
    monkeypatch.setattr(memory, "available_bytes", lambda: (8 * 2**30, "a small device"))
    plan = style.plan_style(img, img, size=256, num_iterations=1)
    assert plan.memory < 2**30 and plan.band_rows == [None]
    # one image too large for the device runs band by band, in the largest bands that fit
    big = style.plan_style(img, img, size=2048, scales=(), num_iterations=1)
    assert big.band_rows[0] and big.band_rows[0] % 16 == 0 and big.memory <= 8 * 2**30
    assert memory.style_bytes(1536, 2048, corrections=100) > 8 * 2**30
    assert "bands of" in big.describe()
    # a sweep of two at that size is refused
    with pytest.raises(SettingsError, match="style transfer at 2048x1536 \\(2 images at once\\) needs about "
                                            ".* small device"):
        style.plan_style(img, img, size=2048, scales=(), num_iterations=1, seed=[0, 1])
    monkeypatch.setattr(memory, "available_bytes", lambda: (2**29, "a tiny device"))
    with pytest.raises(SettingsError, match="in bands of 16 rows needs about"):
        style.plan_style(img, img, size=4096, scales=(), num_iterations=1)
    with pytest.raises(SettingsError, match="style image at style scale 40"):
        style.plan_style(img, img, size=256, style_scale=40, num_iterations=1)


def test_state_file_is_json(tmp_path):
    store = frames.FrameStore(tmp_path / "f", {"a": [1, 2]}, resume=False)
    store.start()
    assert json.loads((tmp_path / "f" / frames.STATE_FILE).read_text()) == {"a": [1, 2]}


def test_two_runs_cannot_write_one_frames_folder_at_once(tmp_path):
    """The second run to start writing a folder stops in one line naming the first's PID (two
    zooms into the same -o both exited 0, the GIF of one holding the other's frames); once the
    first is over, the folder is free again and no lock file is left beside it."""
    folder = tmp_path / "zf"
    first = frames.FrameStore(folder, {"run": "a"}, resume=False)
    first.start()
    second = frames.FrameStore(folder, {"run": "b"}, resume=False, overwrite=True)
    with pytest.raises(MediaError, match=rf"another jaxdream run \(PID {os.getpid()}\) is writing there"):
        second.start()
    first.save(0, _frame(1), _frame(1))
    frames.finish(first, folder, "frames", 1, 10.0)
    assert not (tmp_path / ".zf.lock").exists()
    third = frames.FrameStore(folder, {"run": "b"}, resume=False, overwrite=True)
    third.start()
    third.release()


def test_a_killed_runs_lock_does_not_hold_the_folder(tmp_path):
    """flock is dropped by the kernel when its process ends: a lock file a killed run left
    behind does not stop the next run."""
    folder = tmp_path / "zf"
    code = ("import os, sys; from pathlib import Path; from jaxdream.media.frames import FolderLock; "
            "FolderLock(Path(sys.argv[1])); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, cwd=tmp_path)
    assert (tmp_path / ".zf.lock").exists()
    store = frames.FrameStore(folder, {"run": "a"}, resume=False)
    store.start()
    store.release()
    assert not (tmp_path / ".zf.lock").exists()


def test_an_interrupt_during_the_final_clean_up_is_a_success(tmp_path, monkeypatch):
    """A zoom's or video's MP4 is complete once written: SIGTERM while its frames folder is being
    deleted must neither leave a half-deleted folder marked unfinished nor say "--resume"."""
    from jaxdream.jobs.command import Terminated
    out = tmp_path / "z.mp4"
    folder = frames.work_folder(out, "mp4")
    store = frames.FrameStore(folder, {"a": 1}, resume=False)
    for i in range(3):
        store.save(i, _frame(i * 40.0), _frame(i * 40.0))
    real_rmtree, calls = frames.shutil.rmtree, []

    def interrupted_rmtree(path, *args, **kwargs):
        calls.append(Path(path))
        (Path(path) / frames.STATE_FILE).unlink(missing_ok=True)  # half of it went
        raise Terminated

    monkeypatch.setattr(frames.shutil, "rmtree", interrupted_rmtree)
    assert frames.finish(store, out, "mp4", 3, fps=4.0) == out
    monkeypatch.setattr(frames.shutil, "rmtree", real_rmtree)
    assert out.is_file() and len(media.probe_video(out).pts) == 3
    assert not folder.exists() and calls and calls[0] != folder  # renamed away before deleting
    # the next run into the same place: nothing unfinished, and the leftovers of a dead process go
    dead = calls[0].with_name(calls[0].name.replace(f"-{os.getpid()}-", "-999999999-"))
    calls[0].rename(dead)
    assert frames.check_work_folder(folder, resume=False, overwrite=False) is False
    assert not dead.exists()


def test_a_command_that_finished_its_work_despite_an_interrupt_exits_0():
    import signal
    import threading
    import time

    from jaxdream.jobs.command import run_interruptibly

    def finishes_anyway(args):
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # an interrupt raised into a thread lands between
                time.sleep(0.01)                 # instructions, not inside a sleep
        except KeyboardInterrupt:
            pass  # as frames.finish does during its clean-up
        return 0

    received: list[int] = []
    threading.Timer(0.3, received.append, (signal.SIGTERM,)).start()
    args = argparse.Namespace(func=finishes_anyway)
    assert run_interruptibly(args, received) == 0
