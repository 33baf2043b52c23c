"""The web studio (``jaxdream serve``): forms from the CLI's parser, uploads, the job queue, the
runner's previews, and the page itself driven in Debian's chromium through Playwright.

The browser tests start the real server (``python -m jaxdream.cli.main serve``) on 127.0.0.1
with a synthetic GoogLeNet; they skip, saying why, when Playwright, the web extra or a chromium
is missing (``.ci/run`` installs Debian's chromium; no browser is ever downloaded).
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from helpers import rand_image
from studio_support import HAVE_WEB, NO_BROWSER, chromium, png_bytes, serving

from jaxdream import media, options
from jaxdream.dream import DreamConfig
from jaxdream.studio import forms, jobs, runner, uploads

needs_web = pytest.mark.skipif(not HAVE_WEB, reason="the web extra is not installed (pip install 'jaxdream[web]')")
needs_browser = pytest.mark.skipif(bool(NO_BROWSER), reason=f"no browser to drive: {NO_BROWSER}")



@pytest.fixture(scope="module")
def env(tmp_path_factory, googlenet_caffemodel):
    """An isolated jaxdream home and a weights folder holding the synthetic GoogLeNet under its
    upstream name, for this process and the studio's runs."""
    root = tmp_path_factory.mktemp("studio")
    weights = root / "weights"
    weights.mkdir()
    (weights / "bvlc_googlenet.caffemodel").symlink_to(googlenet_caffemodel.path)
    values = {"JAXDREAM_HOME": str(root / "home"), "JAXDREAM_WEIGHTS_DIR": str(weights), "JAXDREAM_OFFLINE": "1"}
    from jaxdream.nets import network
    with pytest.MonkeyPatch.context() as mp:
        for name in ("JAXDREAM_WEIGHTS_URL", "XDG_CACHE_HOME"):
            mp.delenv(name, raising=False)
        for name, value in values.items():
            mp.setenv(name, value)
        network._load_params.cache_clear()
        yield {"root": root, "home": root / "home", "vars": values}
    network._load_params.cache_clear()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    path.write_bytes(png_bytes(48, 64, 1))
    return path


# --------------------------------------------------------------------------------------------
# forms: read from the CLI's parser, turned back into its argv
# --------------------------------------------------------------------------------------------


def test_fields_come_from_the_cli_parser():
    steps = {f.name: f for f in forms.fields("dream")}["steps"]
    number = options.get("steps")
    assert (steps.flag, steps.kind, steps.default) == ("--steps", "number", str(DreamConfig().steps))
    assert (steps.low, steps.high, steps.integer) == (number.low, number.high, True)
    assert "ascent steps" in steps.help
    style = {f.name: f for f in forms.fields("style")}
    assert style["style-weight"].kind == "list" and style["init"].choices == forms.SAFE_CHOICES["--init"]
    assert {f.name: f for f in forms.fields("dream")}["normalize"].choices == ("auto", "mean", "std", "lapnorm")
    assert {f.name: f for f in forms.fields("video")}["dream"].kind == "flag"
    described = forms.describe()
    assert list(described) == list(forms.COMMANDS)
    assert [f["flag"] for f in described["zoom"]["fields"]] == list(forms.MAIN["zoom"])


@pytest.mark.parametrize("command", forms.COMMANDS)
def test_an_unchanged_form_is_the_cli_with_its_defaults(command):
    files = {"input": [Path("in.mp4" if command == "video" else "in.png")], "style": [Path("s.png")]}
    files = {k: v for k, v in files.items() if k in {i.role for i in forms.INPUTS[command]}}
    defaults = {f.name: f.default if f.kind != "flag" else "" for f in forms.fields(command)}
    argv = forms.to_argv(command, files, defaults, Path("out.png"))
    plain = [command, str(files["input"][0]), *sum((["--style", "s.png"] for _ in files.get("style", [])), []),
             "-o", "out.png"]
    assert argv == plain
    assert vars(forms.parse(argv)) == vars(forms.parse(plain))


def test_changed_values_reach_the_cli_as_it_parses_them():
    values = {"steps": "3", "octaves": "1", "normalize": "std", "class": "Egyptian cat", "step-size": "2.5",
              "layers": "--weights=/etc/passwd"}
    argv = forms.to_argv("dream", {"input": [Path("in.png")]}, values, Path("out.png"))
    args = forms.parse(argv)
    assert (args.steps, args.octaves, args.normalize, args.step_size) == (3, 1, "std", 2.5)
    assert args.class_index == "Egyptian cat"
    assert args.layers == "--weights=/etc/passwd" and args.weights is None  # a value never becomes an option
    sweep = forms.parse(forms.to_argv("style", {"input": [Path("c.png")], "style": [Path("a.png"), Path("b.png")]},
                                      {"style-weight": "10,100", "original-colors": "on"}, Path("o.png")))
    assert sweep.style_weight == [10.0, 100.0] and sweep.original_colors and sweep.style == ["a.png", "b.png"]


@pytest.mark.parametrize("command, values, files, needle", [
    ("dream", {"steps": "nan"}, None, "argument --steps: must be a whole number"),
    ("dream", {"octaves": "1000"}, None, "--octaves"),
    ("dream", {"weights": "/etc/passwd"}, None, "no option the page can set called 'weights'"),
    ("style", {"init": "/etc/passwd"}, {"input": ["c.png"], "style": ["s.png"]}, "--init must be one of random, image"),
    ("style", {}, {"input": ["c.png"]}, "style needs 1 or more style images, got 0"),
    ("video", {}, {"input": ["c.mp4"]}, "one of the arguments -s/--style --dream is required"),
    ("paint", {}, None, "unknown command 'paint'"),
])
def test_a_bad_form_is_refused_with_the_cli_message(command, values, files, needle):
    files = {k: [Path(v) for v in vs] for k, vs in (files or {"input": ["in.png"]}).items()}
    with pytest.raises(forms.FormError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        forms.to_argv(command, files, values, Path("out.png"))


# --------------------------------------------------------------------------------------------
# uploads
# --------------------------------------------------------------------------------------------


def _receive(folder, name, data, limit=10**6):
    return uploads.receive([data[i:i + 4096] for i in range(0, len(data), 4096)], folder, name, limit)


def test_upload_is_checked_and_stored_under_a_random_name(tmp_path):
    got = _receive(tmp_path, "My photo.PNG", png_bytes(30, 40))
    assert uploads.UPLOAD_ID.match(got.id) and got.id.endswith(".png") and "photo" not in got.id
    assert (got.name, got.kind, got.width, got.height) == ("My photo.PNG", "image", 40, 30)
    assert uploads.find(tmp_path, got.id).read_bytes() == png_bytes(30, 40)
    assert json.loads((tmp_path / f"{got.id}.json").read_text())["name"] == "My photo.PNG"


@pytest.mark.parametrize("name, data, status, needle", [
    ("big.png", png_bytes(8, 8) + b"\0" * 2_000_000, 413, "too large"),
    ("notes.png", b"this is not an image\n" * 10, 415, "not an image file"),
    ("notes.txt", b"hello", 415, "not an image or clip"),
    ("../../evil.png", b"x", 400, "path traversal"),
    ("a/b.png", b"x", 400, "path traversal"),
    ("truncated.png", png_bytes(64, 64)[:300], 415, "truncated.png"),
    ("empty.png", b"", 415, "empty"),
])
def test_bad_uploads_are_refused_and_leave_nothing(tmp_path, name, data, status, needle):
    with pytest.raises(uploads.UploadError, match=needle) as e:
        _receive(tmp_path, name, data)
    assert e.value.status == status
    assert list(tmp_path.iterdir()) == []


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    import io
    buf = io.BytesIO()
    Image.new("1", (9000, 9000)).save(buf, format="PNG")  # 81 megapixels in a few kB
    with pytest.raises(uploads.UploadError, match="megapixels"):
        _receive(tmp_path, "bomb.png", buf.getvalue())


def test_unknown_upload_ids_are_refused(tmp_path):
    for bad in ("../x.png", "0123456789abcdef.png/../../x", "0123456789abcdef.png"):
        with pytest.raises(uploads.UploadError):
            uploads.find(tmp_path, bad)


# --------------------------------------------------------------------------------------------
# jobs: the queue and the worker, with a stand-in runner
# --------------------------------------------------------------------------------------------

#: A stand-in for the runner: notes its job in order.txt, writes a result, then waits as many
#: seconds as the form's --step-size says.
FAKE_RUNNER = r"""
import json, signal, sys, time
from pathlib import Path
# SIGINT stops it, as the real runner sets up for itself (a shell's background job, such as a
# CI script started with '&', hands its children SIGINT ignored)
signal.signal(signal.SIGINT, signal.default_int_handler)
job = Path(sys.argv[1])
settings = json.loads((job / "settings.json").read_text())
with open(job.parent / "order.txt", "a") as f:
    f.write(job.name + "\n")
(job / "result.png").write_bytes(b"png")
time.sleep(float(settings["values"].get("step-size", "0")))
"""


def _wait(predicate, timeout=30.0):
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, "timed out"
        time.sleep(0.05)


@pytest.fixture
def fake_studio(tmp_path, photo):
    studio = jobs.Studio(tmp_path / "studio", runner=(sys.executable, "-c", FAKE_RUNNER), checker=None)
    upload = studio.receive([photo.read_bytes()], "photo.png")
    yield studio, upload
    studio.shutdown(wait_s=5)


def test_jobs_run_one_at_a_time_in_order(fake_studio):
    studio, upload = fake_studio
    submitted = [studio.submit("dream", {"input": [upload.id]}, {"step-size": "0.3"}) for _ in range(3)]
    assert [j["id"] for j in studio.live()["queue"]] == [j.id for j in submitted]
    studio.start()
    _wait(lambda: all(j.state == jobs.DONE for j in submitted))
    order = (studio.home / "order.txt").read_text().split()
    assert order == [j.id for j in submitted]
    first = submitted[0]
    assert (first.folder / "input.png").read_bytes() == studio.uploads.joinpath(upload.id).read_bytes()
    assert json.loads((first.folder / "settings.json").read_text())["argv"] == [
        "dream", "input.png", "-o", "result.png", "--step-size=0.3"]
    assert first.results() == ["result.png"]
    assert [g["id"] for g in studio.gallery()] == [j.id for j in reversed(submitted)]


def test_cancel_a_queued_job_and_stop_a_running_one(fake_studio):
    studio, upload = fake_studio
    long = studio.submit("dream", {"input": [upload.id]}, {"step-size": "60"})
    queued = studio.submit("dream", {"input": [upload.id]}, {})
    studio.start()
    _wait(lambda: long.state == jobs.RUNNING and (long.folder / "result.png").exists())
    assert studio.cancel(queued.id).state == jobs.CANCELLED
    studio.cancel(long.id)
    _wait(lambda: long.state == jobs.CANCELLED, timeout=15)
    assert (studio.home / "order.txt").read_text().split() == [long.id]  # the queued one never ran
    assert studio.live() == {"version": studio.version, "active": None, "queue": []}


def test_a_restarted_studio_lists_its_jobs_and_requeues_the_queued(tmp_path, photo):
    first = jobs.Studio(tmp_path / "studio", runner=(sys.executable, "-c", FAKE_RUNNER), checker=None)
    upload = first.receive([photo.read_bytes()], "photo.png")
    running = first.submit("dream", {"input": [upload.id]}, {})
    waiting = first.submit("dream", {"input": [upload.id]}, {})
    running.state = jobs.RUNNING  # as if the studio stopped in the middle of it
    first._save(running)
    again = jobs.Studio(tmp_path / "studio", runner=(sys.executable, "-c", FAKE_RUNNER), checker=None)
    assert again.jobs[running.id].state == jobs.STOPPED
    assert [j["id"] for j in again.live()["queue"]] == [waiting.id]
    again.start()
    _wait(lambda: again.jobs[waiting.id].state == jobs.DONE)
    assert {g["id"] for g in again.gallery()} == {running.id, waiting.id}
    again.shutdown()


def test_a_failed_run_says_why(tmp_path, photo):
    failing = "import sys; print('jaxdream: error: unknown layer inception_9z'); sys.exit(1)"
    studio = jobs.Studio(tmp_path / "studio", runner=(sys.executable, "-c", failing), checker=None).start()
    upload = studio.receive([photo.read_bytes()], "photo.png")
    job = studio.submit("dream", {"input": [upload.id]}, {"layers": "inception_9z"})
    _wait(lambda: job.state == jobs.FAILED)
    assert job.summary()["error"] == "unknown layer inception_9z" and job.exit_status == 1
    studio.shutdown()


@pytest.mark.parametrize("values, field, needle", [
    ({"layers": "no_such_layer"}, "layers", "unknown layer 'no_such_layer'"),
    ({"class": "no such class"}, "class", "unknown class"),
    ({"channels": "99999"}, "channels", "channel 99999 is out of range"),
    ({"size": "20000"}, "size", "megapixels"),
])
def test_a_job_the_cli_would_refuse_is_refused_at_submit_naming_its_field(tmp_path, photo, values, field, needle):
    studio = jobs.Studio(tmp_path / "studio")  # the real check: the command line's --dry-run
    upload = studio.receive([photo.read_bytes()], "photo.png")
    with pytest.raises(forms.FormError, match=needle) as refused:
        studio.submit("dream", {"input": [upload.id]}, values)
    assert refused.value.field == field
    assert studio.live()["queue"] == [] and studio.jobs == {}
    assert [p.name for p in studio.home.iterdir()] == ["uploads"]  # no job folder left behind


def test_octaves_that_cannot_fit_are_said_at_submit(tmp_path, photo):
    studio = jobs.Studio(tmp_path / "studio")
    upload = studio.receive([photo.read_bytes()], "photo.png")
    job = studio.submit("dream", {"input": [upload.id]}, {"octaves": "64", "size": "128"})
    assert len(job.notes) == 1 and job.notes[0].startswith("--octaves 64: only ") and "the run uses" in job.notes[0]
    assert job.summary()["notes"] == job.notes and job.summary()["files"] == {"input": [upload.id]}
    again = jobs.Studio(tmp_path / "studio")  # kept with the job
    assert again.jobs[job.id].notes == job.notes and again.jobs[job.id].files == {"input": [upload.id]}


def test_argparse_refusals_name_their_field():
    with pytest.raises(forms.FormError) as refused:
        forms.to_argv("dream", {"input": [Path("a.png")]}, {"steps": "-3"}, Path("out.png"))
    assert refused.value.field == "steps"


def test_delete_removes_a_finished_job_and_refuses_a_queued_one(fake_studio):
    studio, upload = fake_studio
    done = studio.submit("dream", {"input": [upload.id]}, {})
    studio.start()
    _wait(lambda: done.state == jobs.DONE)
    studio.shutdown()  # the worker stops: the next job stays queued
    waiting = studio.submit("dream", {"input": [upload.id]}, {})
    with pytest.raises(uploads.UploadError, match="queued") as refused:
        studio.delete(waiting.id)
    assert refused.value.status == 409 and waiting.folder.is_dir()
    version = studio.version
    assert studio.delete(done.id) == done.id
    assert not done.folder.exists() and done.id not in [g["id"] for g in studio.gallery()]
    assert studio.version > version
    assert studio.uploads.joinpath(upload.id).is_file()  # the upload stays for other jobs
    with pytest.raises(uploads.UploadError, match="no job") as gone:
        studio.delete(done.id)
    assert gone.value.status == 404


#: A stand-in runner that starts a child (as a run starts ffmpeg), notes both process ids, and
#: ignores SIGINT: only killing its process group ends it.
STUBBORN_RUNNER = r"""
import os, signal, subprocess, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
Path(sys.argv[1], "pids").write_text(f"{os.getpid()} {child.pid}")
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _pids(job) -> list[int]:
    _wait(lambda: (job.folder / "pids").exists())
    return [int(p) for p in (job.folder / "pids").read_text().split()]


def test_a_run_and_its_children_end_with_the_studio(tmp_path, photo):
    studio = jobs.Studio(tmp_path / "studio", runner=(sys.executable, "-c", STUBBORN_RUNNER), checker=None).start()
    upload = studio.receive([photo.read_bytes()], "photo.png")
    job = studio.submit("dream", {"input": [upload.id]}, {})
    pids = _pids(job)
    assert all(map(_alive, pids))
    studio.shutdown(wait_s=1)
    _wait(lambda: not any(map(_alive, pids)), timeout=10)


#: A studio in its own process that starts the stubborn runner, says so, and waits to be killed.
KILLED_STUDIO = r"""
import sys, time
from pathlib import Path
from jaxdream.studio import jobs
studio = jobs.Studio(Path(sys.argv[1]), runner=(sys.executable, "-c", sys.argv[2]), checker=None).start()
upload = studio.receive([Path(sys.argv[3]).read_bytes()], "photo.png")
job = studio.submit("dream", {"input": [upload.id]}, {})
print(job.id, flush=True)
time.sleep(120)
"""


def test_a_run_orphaned_by_a_killed_studio_is_ended_when_the_studio_starts_again(tmp_path, photo, monkeypatch):
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 2.0)  # this orphan ignores SIGINT: killed after the grace
    home = tmp_path / "studio"
    # run outside the checkout, so that the installed package is imported (as CI installs it)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_STUDIO, str(home), STUBBORN_RUNNER, str(photo)],
                            stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    job_id = proc.stdout.readline().strip()
    folder = home / job_id
    _wait(lambda: (folder / "pids").exists())
    pids = [int(p) for p in (folder / "pids").read_text().split()]
    proc.kill()  # SIGKILL: the studio cannot stop its run
    proc.wait()
    assert all(map(_alive, pids))  # the orphan goes on (it ignores SIGINT)
    t0 = time.monotonic()
    again = jobs.Studio(home, checker=None)
    assert again.jobs[job_id].state == jobs.STOPPED
    _wait(lambda: not any(map(_alive, pids)), timeout=5)  # the child: killed with its group
    assert time.monotonic() - t0 < jobs.STOP_GRACE_S + 10
    assert not (folder / jobs.RUNNER_PID).exists()


def test_a_job_runner_stops_when_its_studio_dies():
    received: list[int] = []
    # the watchdog compares the parent it started with: here one that dies after two looks
    with mock_ppid([4242, 4242, 4242, 1]):
        runner._end_with_parent(received, every_s=0.01)
        time.sleep(0.005)
        assert received == []
        _wait(lambda: received == [signal.SIGTERM], timeout=5)


class mock_ppid:
    """``os.getppid`` answering the given values in turn (the last one from then on)."""

    def __init__(self, values):
        self.values, self.saved = list(values), None

    def _next(self):
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]

    def __enter__(self):
        self.saved, os.getppid = os.getppid, self._next
        return self

    def __exit__(self, *exc):
        os.getppid = self.saved


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", ".hidden", "uploads/../../x", "uploads/",
                                  "..\\..\\x", "nothing-here.png"])
def test_files_outside_the_studio_folder_are_refused(tmp_path, name):
    studio = jobs.Studio(tmp_path / "studio")
    (tmp_path / "x").write_text("secret")
    with pytest.raises(uploads.UploadError, match="no such file"):
        studio.file(name)


# --------------------------------------------------------------------------------------------
# the runner: previews and progress, and the CLI's results
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_studio_dream_equals_the_cli_and_previews_every_step(env, photo, tmp_path):
    from jaxdream.cli.main import main as cli_main
    from jaxdream.jobs.command import run
    # the weights are found as the studio's runs find them (converted and compiled once for both)
    common = [str(photo), "--octaves", "2", "--steps", "3", "--octave-scale", "1.3", "--size", "64", "--quiet"]
    assert cli_main(["dream", *common, "-o", str(tmp_path / "cli.png")]) == 0
    args = forms.parse(["dream", *common, "-o", str(tmp_path / "studio.png")])
    report = runner.Reporter(tmp_path)
    assert run(args, runner.Observer(report)) == 0
    assert np.array_equal(media.load_image(tmp_path / "cli.png"), media.load_image(tmp_path / "studio.png"))
    assert media.read_settings(tmp_path / "cli.png") == media.read_settings(tmp_path / "studio.png")
    progress = json.loads((tmp_path / jobs.PROGRESS).read_text())
    assert progress["previews"] == 6 and progress["fraction"] == 1.0
    assert progress["phase"] == "octave 2/2 (64x48), step 3/3"
    assert progress["curve"]["names"] == ["objective"] and len(progress["curve"]["points"]) >= 2
    assert Image.open(tmp_path / jobs.PREVIEW).size == (64, 48)


def test_studio_dream_checks_its_mask_as_the_cli_does(env, photo, tmp_path, capsys):
    """A mask of another aspect ratio than the photo is refused before any work, by the same
    command the CLI runs (the studio once ran a copy of it that skipped this check)."""
    from jaxdream import media
    from jaxdream.jobs.command import run
    mask = tmp_path / "mask.png"
    media.save_image(mask, np.full((40, 40, 3), 255.0, np.float32))  # square; the photo is 64x48
    args = forms.parse(["dream", str(photo), "--mask", str(mask), "--size", "64", "--quiet",
                        "-o", str(tmp_path / "studio.png")])
    assert run(args, runner.Observer(runner.Reporter(tmp_path))) == 1
    assert "aspect" in capsys.readouterr().err
    assert not (tmp_path / "studio.png").exists()


def test_style_sweep_previews_its_contact_sheet(env, tmp_path, vgg_h5):
    from jaxdream.jobs.command import run
    for name, seed in (("content.png", 2), ("style.png", 3)):
        (tmp_path / name).write_bytes(png_bytes(32, 32, seed))
    args = forms.parse(["style", str(tmp_path / "content.png"), "--style", str(tmp_path / "style.png"),
                        "-o", str(tmp_path / "out.png"), "--size", "32", "--iterations", "4",
                        "--style-weight", "100,1000", "--print-iter", "2", "--weights", str(vgg_h5), "--quiet"])
    report = runner.Reporter(tmp_path)
    assert run(args, runner.Observer(report)) == 0
    progress = json.loads((tmp_path / jobs.PROGRESS).read_text())
    assert progress["previews"] == 2  # a chunk of 2 iterations each
    assert progress["curve"]["names"] == ["total", "content", "style", "tv"]
    assert [p[0] for p in progress["curve"]["points"]] == [2, 4]
    assert progress["fraction"] == 1.0
    sheet = Image.open(tmp_path / jobs.PREVIEW)
    assert sheet.size[0] > 2 * 32  # two thumbnails side by side: the contact sheet
    assert {p.name for p in tmp_path.glob("out_*.png")} == {"out_sw100.png", "out_sw1000.png", "out_sheet.png"}


# --------------------------------------------------------------------------------------------
# the server, driven from Debian's chromium
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(env):
    """``jaxdream serve --port 0`` (uploads over 1 MB refused), run outside the checkout so that
    the installed package is imported; yields its URL."""
    with serving(env["root"], {**os.environ, **env["vars"]}, "--max-upload-mb", "1") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, server):
    # the page's own policy forbids eval; Playwright's wait_for_function needs it
    context = browser.new_context(bypass_csp=True, accept_downloads=True, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.goto(server)
    tab.wait_for_selector("#connection[data-state='live']")
    yield tab
    context.close()
    assert errors == []


def _upload_photo(page, photo):
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".drop[data-role='input'][data-count='1']")


def _start_dream(page, octaves: int, steps: int) -> str:
    page.click("[data-command='dream']")
    page.fill("#opt-octaves", str(octaves))
    page.fill("#opt-steps", str(steps))
    page.click("#start")
    page.wait_for_function("/^dream run \\w+ queued$/.test(document.querySelector('#message').textContent)")
    return page.inner_text("#message").split()[2]  # "dream run ID queued"


@pytest.mark.browser
@needs_browser
def test_dream_in_the_browser_previews_and_downloads(page, photo, tmp_path):
    # 150 steps: long enough for the page to see previews change even when every program is
    # already in the compile cache (a run then takes about a second per 100 steps here)
    _upload_photo(page, photo)
    job = _start_dream(page, octaves=1, steps=150)
    page.wait_for_selector(f"#current[data-job='{job}'][data-state='running']")
    page.wait_for_function("Number(document.querySelector('#preview').dataset.updates) >= 2", timeout=90_000)
    page.wait_for_selector(f"#current[data-job='{job}'][data-state='done']", timeout=90_000)
    assert page.inner_text("#curve-legend").startswith("objective")
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / "result.png"
    download.value.save_as(saved)
    settings = media.read_settings(saved)
    assert (settings["jaxdream"], settings["octaves"], settings["steps"]) == ("dream", 1, 150)
    assert settings["layers"] == ["inception_4c/output:1"] and settings["input"] == "input.png"
    page.wait_for_selector(f"#gallery .card[data-job='{job}'][data-state='done'] img")
    assert "--steps=150" in page.text_content("#argv")  # the same run on the command line


@pytest.mark.browser
@needs_browser
def test_reopened_page_shows_the_run_a_second_waits_and_stop_keeps_the_image(page, browser, server, photo, env):
    _upload_photo(page, photo)
    first = _start_dream(page, octaves=1, steps=5000)
    page.wait_for_function("Number(document.querySelector('#preview').dataset.updates) >= 1", timeout=90_000)
    page.context.close()  # the browser goes away in the middle of the run
    context = browser.new_context(bypass_csp=True)
    again = context.new_page()
    again.goto(server)
    again.wait_for_selector(f"#current[data-job='{first}'][data-state='running']")
    again.wait_for_function("Number(document.querySelector('#preview').dataset.updates) >= 1")
    _upload_photo(again, photo)
    second = _start_dream(again, octaves=1, steps=2)
    again.wait_for_selector(f"#queue li[data-job='{second}'][data-state='queued']")
    assert [li.get_attribute("data-job") for li in again.query_selector_all("#queue li")] == [first, second]
    again.click("#stop")
    again.wait_for_selector(f"#gallery .card[data-job='{first}'][data-state='cancelled']", timeout=60_000)
    again.wait_for_selector(f"#gallery .card[data-job='{second}'][data-state='done']", timeout=90_000)
    kept = media.read_settings(env["home"] / "studio" / first / "result.png")
    assert kept["interrupted_at_step"] >= 1
    context.close()


@pytest.mark.browser
@needs_browser
@pytest.mark.parametrize("name, data, needle", [
    ("huge.png", b"\x89PNG" + b"\0" * 1_200_000, "too large"),
    ("notes.png", b"just some text\n" * 20, "not an image file"),
])
def test_bad_uploads_are_refused_on_the_page(page, name, data, needle):
    page.set_input_files("#file-input", files=[{"name": name, "mimeType": "image/png", "buffer": data}])
    page.wait_for_selector("#message[data-kind='error']")
    assert needle in page.inner_text("#message")
    assert page.get_attribute(".drop[data-role='input']", "data-count") == "0"


def _request(server: str, method: str, path: str, body: bytes | None = None, headers=None):
    host, port = server.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.read()


@pytest.fixture
def app_server(tmp_path):
    """The studio's app over an idle studio, served by uvicorn in a thread; yields (host,
    port, studio, the server's log records)."""
    import logging

    import uvicorn

    from jaxdream.studio import app
    studio = jobs.Studio(tmp_path / "studio", checker=None)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("uvicorn.error").addHandler(handler)
    sock = app._bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app.create_app(studio), log_level="warning", lifespan="off",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    _wait(lambda: server.started)
    yield "127.0.0.1", sock.getsockname()[1], studio, records
    server.should_exit = True
    thread.join(5)
    logging.getLogger("uvicorn.error").removeHandler(handler)


@needs_web
def test_a_preview_replaced_while_it_is_served_arrives_whole(app_server, photo):
    host, port, studio, records = app_server
    folder = studio.home / "0123456789abcdef"
    folder.mkdir()
    versions = []
    for size in (48, 640):  # two previews of very different lengths, replaced as a run does
        buf = io.BytesIO()
        Image.fromarray(rand_image(size, size, seed=size).astype(np.uint8)).save(buf, format="JPEG", quality=95)
        versions.append(buf.getvalue())
    stop = threading.Event()

    def replace_forever():
        i = 0
        while not stop.is_set():
            tmp = folder / ".preview.jpg.tmp"
            tmp.write_bytes(versions[i % 2])
            os.replace(tmp, folder / "preview.jpg")
            i += 1

    (folder / "preview.jpg").write_bytes(versions[0])
    writer = threading.Thread(target=replace_forever, daemon=True)
    writer.start()
    try:
        seen = set()
        for _ in range(300):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.request("GET", f"/files/{folder.name}/preview.jpg")
            response = conn.getresponse()
            body = response.read()
            conn.close()
            assert response.status == 200 and int(response.getheader("Content-Length")) == len(body)
            assert body in versions
            seen.add(versions.index(body))
    finally:
        stop.set()
        writer.join()
    assert seen == {0, 1}  # the file really changed under the requests
    assert not [r for r in records if "Content-Length" in r.getMessage() or r.exc_info]


def test_json_depth_counts_brackets_outside_strings():
    from jaxdream.studio.app import json_depth
    assert json_depth(b'{"command": "dream", "values": {"x": [1, 2]}}') == 3
    assert json_depth(b'{"a": "[[[[{{{{", "b": "\\"[["}') == 1
    assert json_depth(b"[" * 100 + b"]" * 100) == 100


@needs_web
def test_deeply_nested_json_is_refused_with_400(server):
    body = b'{"command": "dream", "values": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    status, text = _request(server, "POST", "/api/jobs", body, {"X-Jaxdream": "1", "Content-Type": "application/json"})
    assert status == 400 and b"nests deeper" in text


@needs_web
def test_path_traversal_is_refused_by_the_server(server, photo):
    for path in ("/files/..%2F..%2F..%2Fetc%2Fpasswd", "/files/%2e%2e/%2e%2e/etc/passwd",
                 "/files/uploads/..%2F..%2Fsettings.json", "/static/..%2F__init__.py", "/api/jobs/..%2F..%2Fx"):
        status, body = _request(server, "GET", path)
        assert status == 404, path
        assert b"root:" not in body
    status, body = _request(server, "POST", "/api/uploads?name=..%2F..%2Fevil.png", photo.read_bytes(),
                            {"X-Jaxdream": "1"})
    assert status == 400 and b"path traversal" in body
    status, body = _request(server, "POST", "/api/uploads?name=photo.png", photo.read_bytes())
    assert status == 403  # not from the studio's page
    status, _ = _request(server, "GET", "/api/jobs", headers={"Host": "evil.example:80"})
    assert status == 400  # another host name (DNS rebinding)
