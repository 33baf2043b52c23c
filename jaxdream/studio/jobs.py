"""Jobs: one folder per run, and one worker that runs the jobs one at a time, in order.

A job folder (``studio/<16 hex digits>/``) holds everything about one run:

* its inputs, copied from the uploads (``input.png``, ``style_1.jpg``, ...);
* ``settings.json``: the command, the form's values, the inputs' names and the command line;
* ``status.json``: the worker's record (queued, running, done, failed, cancelled, stopped);
* ``progress.json`` and ``preview.jpg``: written by the run as it goes (:mod:`.runner`);
* ``log.txt``: what the run printed; and its results (``result.png``, ``result_sheet.png``, ...).

The worker is a thread of the server that starts one process per job (``python -m
jaxdream.studio.runner FOLDER``), so the device belongs to one run at a time and a run is
stopped like a command line is: SIGINT, upon which it keeps what it finished. The page only
reads files and sends requests: it never waits on the worker, and a closed browser neither
stops nor loses a run. A studio started again lists every job it finds; jobs still queued are
queued again, a run the studio stopped in the middle is marked ``stopped``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import forms, uploads

SETTINGS, STATUS, PROGRESS, LOG, PREVIEW = "settings.json", "status.json", "progress.json", "log.txt", "preview.jpg"
#: The running job's process id, while it runs (a studio that was killed finds its orphan by it).
RUNNER_PID = ".runner.pid"

#: A job's states; the last four are final.
QUEUED, RUNNING, STOPPING = "queued", "running", "stopping"
DONE, FAILED, CANCELLED, STOPPED = "done", "failed", "cancelled", "stopped"
FINAL = (DONE, FAILED, CANCELLED, STOPPED)

JOB_ID = re.compile(r"^[0-9a-f]{16}$")

#: How a job runs: this plus the job folder.
RUNNER = (sys.executable, "-m", "jaxdream.studio.runner")

#: How a job is checked when it is submitted: this plus its command line and ``--dry-run``, in
#: its folder (the command line's own checks: layers, class, channels, sizes, memory, output).
CHECKER = (sys.executable, "-m", "jaxdream.cli.main")

#: Seconds the submit-time check may take.
CHECK_TIMEOUT_S = 120.0

#: Seconds a stopped run gets to save what it finished before it is killed.
STOP_GRACE_S = 20.0


def write_json(path: Path, data) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: Path, default=None):
    """A JSON file's content, or ``default`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


@dataclass
class Job:
    """A run and where it stands (mirrors its ``status.json``)."""

    id: str
    folder: Path
    command: str
    created: float
    state: str = QUEUED
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    exit_status: int | None = None
    values: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)  # role -> the upload ids it was made from ("use again")
    notes: list = field(default_factory=list)  # what the check said about the settings (clamped octaves)

    def status(self) -> dict:
        """What ``status.json`` holds."""
        return {k: getattr(self, k) for k in ("state", "created", "started", "finished", "error", "exit_status")}

    def results(self) -> list[str]:
        """The result files the run wrote, the contact sheet of a sweep first."""
        names = sorted(p.name for p in self.folder.glob("result*") if p.is_file())
        return sorted(names, key=lambda n: (not n.startswith("result_sheet."), n != forms.OUTPUTS[self.command], n))

    def summary(self, progress: bool = False) -> dict:
        """What the page is told about the job (with ``progress.json`` if asked)."""
        out = {"id": self.id, "command": self.command, "values": self.values, "inputs": self.inputs,
               "files": self.files, "notes": self.notes, "results": self.results(), **self.status()}
        if progress:
            out["progress"] = read_json(self.folder / PROGRESS, {})
        return out


class Studio:
    """The studio's jobs and its worker.

    Args:
        home: the studio folder (created if needed).
        runner: the command a job runs, before the job folder (default :data:`RUNNER`).
        max_upload_bytes: ceiling of one upload.
        env: extra environment variables for the runs.
        checker: the command that checks a submitted job (default :data:`CHECKER`; None: the
            parser's checks only).
    """

    def __init__(self, home: Path, runner=RUNNER, max_upload_bytes: int = 200 * 10**6, env: dict | None = None,
                 checker=CHECKER):
        self.home = Path(home).absolute()
        self.uploads = self.home / "uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.runner = tuple(runner)
        self.checker = tuple(checker) if checker else None
        self.max_upload_bytes = max_upload_bytes
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.version = 0  # goes up whenever a job's state changes: the page refreshes its gallery
        self._cv = threading.Condition()
        self._queue: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._closing = False
        self.active: str | None = None
        self.jobs: dict[str, Job] = {}
        self._load()
        self._worker = threading.Thread(target=self._work, name="jaxdream-studio-worker", daemon=True)

    # -- starting and stopping --------------------------------------------------------------

    def start(self) -> "Studio":
        self._worker.start()
        return self

    def shutdown(self, wait_s: float = 4.0) -> None:
        """Stop taking jobs; ask a running one to stop (it saves what it finished) and wait up to
        ``wait_s`` for it; it is then recorded as ``stopped``. Queued jobs stay queued."""
        with self._cv:
            self._closing = True
            proc = self._proc
            self._cv.notify_all()
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGINT)
        if self._worker.is_alive():
            self._worker.join(wait_s)
        if proc is not None and proc.poll() is None:  # the run ends with the studio
            _signal_group(proc.pid, signal.SIGKILL)

    def _load(self) -> None:
        """Read the jobs of an earlier session: queued ones are queued again, in order."""
        for folder in sorted(self.home.iterdir()):
            settings = read_json(folder / SETTINGS)
            status = read_json(folder / STATUS)
            if not JOB_ID.match(folder.name) or not settings or not status:
                continue
            job = Job(folder.name, folder, settings["command"], status.get("created", 0.0),
                      values=settings.get("values", {}), inputs=settings.get("inputs", {}),
                      files=settings.get("files", {}), notes=settings.get("notes", []))
            for k in ("state", "started", "finished", "error", "exit_status"):
                setattr(job, k, status.get(k))
            if job.state in (RUNNING, STOPPING):
                end_orphan(folder)  # a studio that was killed left its run going
                job.state, job.error = STOPPED, "the studio stopped during the run"
                self._save(job)
            self.jobs[job.id] = job
        self._queue = [j.id for j in sorted(self.jobs.values(), key=lambda j: j.created) if j.state == QUEUED]

    # -- what the page asks for -------------------------------------------------------------

    def receive(self, chunks, name: str) -> uploads.Upload:
        """Store and check an upload (see :func:`jaxdream.studio.uploads.receive`)."""
        return uploads.receive(chunks, self.uploads, name, self.max_upload_bytes)

    def submit(self, command: str, files: dict, values: dict) -> Job:
        """Queue a run: ``files`` maps each input role to upload ids, ``values`` the form.

        Raises:
            FormError, UploadError: with the message the page shows.
        """
        ids = {role: [str(u) for u in (v if isinstance(v, list) else [v])] for role, v in (files or {}).items() if v}
        given = {role: [uploads.find(self.uploads, u) for u in us] for role, us in ids.items()}
        names = _input_names(command, given)
        argv = forms.to_argv(command, {r: [Path(n) for n in ns] for r, ns in names.items()}, values,
                             Path(forms.OUTPUTS[command]))
        job = Job(secrets.token_hex(8), Path(), command, time.time(), values=dict(values),
                  inputs={r: [_original(p) for p in ps] for r, ps in given.items()}, files=ids)
        job.folder = self.home / job.id
        job.folder.mkdir()
        try:
            for role, paths in given.items():
                for path, name in zip(paths, names[role]):
                    _link_or_copy(path, job.folder / name)
            job.notes = self.check(command, argv, job.folder)
            write_json(job.folder / SETTINGS, {"command": command, "values": job.values, "inputs": job.inputs,
                                               "files": ids, "notes": job.notes, "argv": argv,
                                               "created": job.created})
        except BaseException:
            shutil.rmtree(job.folder, ignore_errors=True)
            raise
        with self._cv:
            self.jobs[job.id] = job
            self._queue.append(job.id)
            self._save(job)
            self._cv.notify_all()
        return job

    def cancel(self, job_id: str) -> Job:
        """Stop a run (it keeps what it finished) or take a queued job out of the queue."""
        job = self.job(job_id)
        with self._cv:
            if job.state == QUEUED:
                self._queue.remove(job.id)
                job.state, job.finished = CANCELLED, time.time()
                self._save(job)
            elif job.state == RUNNING:
                job.state = STOPPING
                self._save(job)
                if self._proc is not None:  # else _run stops it as soon as it has started
                    _stop(self._proc)
        return job

    def check(self, command: str, argv: list[str], folder: Path) -> list[str]:
        """Run the command line's ``--dry-run`` of ``argv`` in ``folder`` (where the inputs are):
        its notes (settings it will change, such as octaves that do not fit), or
        :class:`~jaxdream.studio.forms.FormError` with its error line and the field it is about."""
        if self.checker is None:
            return []
        env = {**self.env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # a run may hold the device
        try:
            out = subprocess.run([*self.checker, *argv, "--dry-run"], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise forms.FormError(f"checking the settings took over {CHECK_TIMEOUT_S:.0f} s") from None
        if out.returncode != 0:
            message = _last_error(out.stderr, f"the settings were refused (exit status {out.returncode})")
            raise forms.FormError(message, field=forms.field_named_by(command, message))
        return _said(out.stderr, "note") + _said(out.stderr, "warning")

    def delete(self, job_id: str) -> str:
        """Remove a finished job and its files; refused (409) while it is queued or running."""
        job = self.job(job_id)
        with self._cv:
            if job.state not in FINAL:
                raise uploads.UploadError(f"job {job.id} is {job.state}: stop it before deleting it", 409)
            del self.jobs[job.id]
            self.version += 1
        shutil.rmtree(job.folder, ignore_errors=True)
        return job.id

    def job(self, job_id: str) -> Job:
        if not isinstance(job_id, str) or job_id not in self.jobs:
            raise uploads.UploadError(f"no job '{str(job_id)[:40]}'", 404)
        return self.jobs[job_id]

    def live(self) -> dict:
        """The queue and the running job with its progress: what the page watches."""
        with self._cv:
            active = self.jobs[self.active].summary(progress=True) if self.active else None
            queue = [self.jobs[j].summary() for j in self._queue]
            return {"version": self.version, "active": active, "queue": queue}

    def gallery(self) -> list[dict]:
        """Every job that has finished, the newest first."""
        done = [j for j in self.jobs.values() if j.state in FINAL]
        return [j.summary() for j in sorted(done, key=lambda j: j.created, reverse=True)]

    def file(self, relative: str) -> Path:
        """A file of the studio folder named by the page: refused (404, the same for a file
        that does not exist) unless it resolves to a file inside the studio folder."""
        root = self.home.resolve()
        parts = relative.replace("\\", "/").split("/")
        if "\x00" in relative or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise uploads.UploadError("no such file", 404)
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise uploads.UploadError("no such file", 404)
        return path

    # -- the worker -------------------------------------------------------------------------

    def _save(self, job: Job) -> None:
        write_json(job.folder / STATUS, job.status())
        self.version += 1

    def _next(self) -> Job | None:
        with self._cv:
            while not self._queue and not self._closing:
                self._cv.wait()
            if self._closing:
                return None
            job = self.jobs[self._queue.pop(0)]
            job.state, job.started, self.active = RUNNING, time.time(), job.id
            self._save(job)
            return job

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                self._run(job)
            except Exception as e:  # noqa: BLE001 - a job that cannot start must not stop the worker
                self._finish(job, None, f"the run could not start ({e})")

    def _run(self, job: Job) -> None:
        with open(job.folder / LOG, "ab") as log, self._cv:
            # its own process group: the run and whatever it starts (ffmpeg) are stopped together,
            # and a terminal's Ctrl-C reaches the server alone, which then stops the run
            self._proc = subprocess.Popen([*self.runner, str(job.folder)], cwd=job.folder, env=self.env,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
            (job.folder / RUNNER_PID).write_text(str(self._proc.pid))
            if job.state == STOPPING:
                _stop(self._proc)
        status = self._proc.wait()
        (job.folder / RUNNER_PID).unlink(missing_ok=True)
        self._finish(job, status, None)

    def _finish(self, job: Job, status: int | None, error: str | None) -> None:
        with self._cv:
            stopping = job.state == STOPPING
            if status == 0:
                job.state = DONE
            elif stopping or status in (130, 143, -signal.SIGINT, -signal.SIGKILL, -signal.SIGTERM):
                job.state = CANCELLED if stopping else STOPPED
            else:
                job.state, error = FAILED, error or _error_line(job.folder / LOG)
            job.finished, job.exit_status, job.error = time.time(), status, error
            if job.state == STOPPED:
                job.error = "the studio stopped during the run"
            self._proc, self.active = None, None
            self._save(job)


def _signal_group(pid: int, signum: int) -> None:
    """Send ``signum`` to the process group a run leads (nothing if it has ended)."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT, as Ctrl-C on the command line (the run saves what it finished); killed with its
    group if it has not ended after :data:`STOP_GRACE_S`."""
    _signal_group(proc.pid, signal.SIGINT)
    timer = threading.Timer(STOP_GRACE_S, lambda: proc.poll() is None and _signal_group(proc.pid, signal.SIGKILL))
    timer.daemon = True
    timer.start()


def end_orphan(folder: Path, grace_s: float | None = None) -> bool:
    """End the run of ``folder`` left by a studio that was killed (its runner recorded in
    :data:`RUNNER_PID` and still running this folder's job): SIGINT to its group, SIGKILL after
    ``grace_s`` (default :data:`STOP_GRACE_S`); returns once it has ended. Returns whether there
    was one."""
    grace_s = STOP_GRACE_S if grace_s is None else grace_s
    try:
        pid = int((folder / RUNNER_PID).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    try:
        if os.fsencode(str(folder)) not in cmdline or os.getpgid(pid) != pid:
            return False  # the number now belongs to another process
    except ProcessLookupError:
        return False
    _signal_group(pid, signal.SIGINT)
    _ended(pid, grace_s)
    _signal_group(pid, signal.SIGKILL)  # also whatever it started that is still in its group
    _ended(pid, 5.0)
    (folder / RUNNER_PID).unlink(missing_ok=True)
    return True


def _ended(pid: int, within_s: float) -> None:
    """Wait up to ``within_s`` for process ``pid`` to end (gone, or a zombie no one reaps)."""
    end = time.monotonic() + within_s
    while not _zombie(pid) and time.monotonic() < end:
        time.sleep(0.02)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has ended: gone, or a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _original(path: Path) -> str:
    """The name an upload had on the user's machine (kept beside it), else its id."""
    meta = read_json(path.with_name(f"{path.name}.json"), {})
    return str(meta.get("name") or path.name)


def _input_names(command: str, given: dict[str, list[Path]]) -> dict[str, list[str]]:
    """Names of a job's inputs in its folder (``input.png``, ``style_1.jpg``, ...), after checking
    that each role has uploads of its kind."""
    out = {}
    for spec in forms.INPUTS[forms._command(command)]:
        paths = given.get(spec.role, [])
        for p in paths:
            if uploads.kind_of(p.name) != spec.kind:
                raise forms.FormError(f"the {spec.label} must be {'a clip' if spec.kind == 'video' else 'images'}")
        single = spec.most == 1
        out[spec.role] = [f"{spec.role}{p.suffix}" if single else f"{spec.role}_{i}{p.suffix}"
                          for i, p in enumerate(paths, start=1)]
    unknown = set(given) - set(out)
    if unknown:
        raise forms.FormError(f"{command} takes no input called '{sorted(unknown)[0]}'")
    return out


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _said(text: str, kind: str) -> list[str]:
    """The ``jaxdream: KIND: ...`` lines of a command's output, without that prefix."""
    prefix = f"jaxdream: {kind}:"
    return [line.strip().removeprefix(prefix).strip() for line in text.splitlines() if line.strip().startswith(prefix)]


def _last_error(text: str, nothing: str) -> str:
    """Why a command failed: its last ``jaxdream: error:`` line, else its last line, else
    ``nothing``."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (_said(text, "error") or lines or [nothing])[-1]


def _error_line(log: Path) -> str:
    """Why a run failed, from its log (:func:`_last_error`)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "the run failed"
    return _last_error(text, "the run failed (no output)")[:500]
