"""The frames folder of an animation or a video: frames written as they are made (one PNG per
frame, plus the last state as float32 ``.npy`` so a resumed run continues bit for bit), the
settings it was made with, resume and overwrite rules, and the final MP4, GIF or folder
assembled from it one frame at a time."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from ..errors import MediaError, SettingsError
from . import images, video

STATE_FILE = "jaxdream-state.json"
METRICS_FILE = "jaxdream-metrics.json"
#: What a run keeps beside its frames to resume (removed when the frames are final).
PASSES_FILE = "jaxdream-passes.json"
BOOKKEEPING = (STATE_FILE, METRICS_FILE, PASSES_FILE, "state_*.npy", "flows_*.npz")
#: Settings that hold paths as typed; a resumed run compares the content hashes beside them.
PATH_KEYS = frozenset({"input", "styles", "guide", "first_init", "mask", "masks", "content_mask", "style_masks"})


# ----------------------------------------------------------------------------------------------
# work folder


def _shown(settings: dict, key: str) -> str:
    if key not in settings:
        return "not set"
    text = json.dumps(settings[key])
    return text if len(text) <= 40 else text[:37] + "..."


def settings_differences(saved: dict, settings: dict, older: dict) -> list[str]:
    """``key: was X, now Y`` for each setting of a work folder's ``saved`` run that differs
    from ``settings`` (keys in :data:`PATH_KEYS` are not compared). A key the folder lacks
    compares as its value in ``older`` (what earlier versions ran with; None there: not
    compared)."""
    then = {k: v for k, v in older.items() if k in settings and v is not None} | saved
    moot = {k for k, v in older.items() if v is None and k not in saved}
    return [f"{k}: was {_shown(then, k)}, now {_shown(settings, k)}" for k in sorted(set(then) | set(settings))
            if k not in PATH_KEYS and k not in moot and then.get(k) != settings.get(k)]


class FrameStore:
    """A folder of finished frames plus the settings that made them.

    Nothing is created until :meth:`start` (called by the drivers once every setting is
    checked and the network is loaded), so a run refused on a bad setting leaves nothing
    behind; :meth:`abandon` removes what a run created when it fails before finishing a frame.

    Args:
        folder: where frames go.
        settings: JSON-able settings; a resumed run must match them (keys in
            :data:`PATH_KEYS` are the paths as typed and are not compared: the content hashes
            recorded beside them are).
        resume: continue from the frames of an interrupted run with the same settings.
        overwrite: start over, removing the frames of any earlier run in the folder.
        older: settings that earlier jaxdream versions did not record, with the value their
            runs used (a folder without the key compares as that value; None: not compared).

    Raises:
        SettingsError: the folder holds another run's frames and neither ``resume`` nor
        ``overwrite`` is given, or ``resume`` is given but the settings differ.
    """

    def __init__(self, folder: Path, settings: dict, resume: bool, overwrite: bool = False,
                 older: dict | None = None):
        self.folder = Path(folder)
        self.settings = settings
        self.overwrite = overwrite
        self._created_folder = False
        self._started = False
        self.resuming = check_work_folder(self.folder, resume, overwrite)
        if self.resuming:
            state = self.folder / STATE_FILE
            try:
                saved = json.loads(state.read_text())
            except (OSError, ValueError):
                raise SettingsError(f"cannot resume: {state} is unreadable; start over with --overwrite") from None
            diff = settings_differences(saved, settings, older or {})
            if diff:
                more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
                raise SettingsError(f"cannot resume: settings differ from the interrupted run "
                                    f"({'; '.join(diff[:3])}{more}); give the same options, or start "
                                    f"over with --overwrite")

    def start(self) -> None:
        """Create the folder (clearing an earlier run's frames with ``overwrite``), record the
        settings and remove temp files a killed run left. Called once before the first frame."""
        if self._started:
            return
        self._lock = FolderLock(self.folder)  # a second run writing here stops now, in one line
        try:
            if self.overwrite:
                self.clear()
            if not self.folder.exists():
                self.folder.mkdir(parents=True)
                self._created_folder = True
            if not self.resuming:
                state = self.folder / STATE_FILE
                images.atomic_write(state, lambda tmp: Path(tmp).write_text(
                    json.dumps(self.settings, indent=1, sort_keys=True)))
            images.remove_stale_temps(self.folder, any_name=True)
        except OSError as e:
            self.release()
            raise MediaError(f"{self.folder}: cannot write ({e.strerror or e})") from None
        self._started = True

    _lock = None

    def release(self) -> None:
        """Let another run write the folder (the run is over; also when its process ends)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def clear(self) -> None:
        """Remove every file an earlier run wrote here (frames, bookkeeping, temps)."""
        self._remove("frame_*.png", f".*{images.TEMP_TAG}*", *BOOKKEEPING)

    def remove_bookkeeping(self) -> None:
        """Remove the run's state, float states and metrics, keeping the frames."""
        self._remove(*BOOKKEEPING)

    def _remove(self, *patterns: str) -> None:
        if not self.folder.is_dir():
            return
        for pattern in patterns:
            for p in self.folder.glob(pattern):
                p.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Undo :meth:`start` after a run that finished no frame: remove the state file (and
        the folder, if this run created it and it is now empty)."""
        if not self._started or self.count() > 0:
            return
        self.clear()
        if self._created_folder:
            try:
                self.folder.rmdir()
            except OSError:
                pass

    def frame_path(self, i: int) -> Path:
        return self.folder / f"frame_{i:05d}.png"

    def count(self) -> int:
        """Number of consecutive finished frames from 0 (0 when starting over)."""
        if self.overwrite and not self._started:
            return 0
        n = 0
        while self.frame_path(n).is_file():
            n += 1
        return n

    def state_path(self, i: int) -> Path:
        return self.folder / f"state_{i:05d}.npy"

    #: How many of the latest frames keep their float state (a video's long-term temporal
    #: terms read the states of frames t-1, t-2, t-4 when it resumes).
    keep_states = 1

    def save(self, i: int, frame: np.ndarray, state: np.ndarray | None = None, meta: dict | None = None) -> None:
        """Write frame ``i`` (and the float state to resume from) atomically.

        The state file is named after its frame, and older ones (``keep_states`` frames or more
        before it; later frames' states stay, for a backward pass) are removed only once the
        frame's PNG is written, so an interruption at any point leaves the state of the last
        finished frames (or, failing that, their PNGs) to resume from.
        ``meta`` is recorded in the PNG beside the frame number and the settings.
        """
        self.start()
        if state is not None:
            def write(tmp):
                with open(tmp, "wb") as f:
                    np.save(f, np.asarray(state, np.float32))
            images.atomic_write(self.state_path(i), write)
        images.save_image(self.frame_path(i), frame, {"frame": i} | self.settings | (meta or {}))
        for old in self.folder.glob("state_*.npy"):
            if old.stem[6:].isdigit() and int(old.stem[6:]) <= i - self.keep_states:
                old.unlink(missing_ok=True)

    def write_json(self, name: str, data) -> None:
        """Write a JSON side file in the folder atomically."""
        self.start()
        images.atomic_write(self.folder / name, lambda tmp: Path(tmp).write_text(json.dumps(data)))

    def last_state(self, i: int) -> np.ndarray:
        """The float state after frame ``i`` (its PNG if the float copy is missing)."""
        npy = self.state_path(i)
        if npy.is_file():
            return np.load(npy)
        return images.load_image(self.frame_path(i))

    def frames(self, n: int) -> Iterator[np.ndarray]:
        for i in range(n):
            yield images.load_image(self.frame_path(i))

    def remove(self) -> None:
        """Remove the work folder: first renamed away in one step (so a run is finished the
        moment its output is in place and this folder is gone), then deleted. An interrupt
        while deleting leaves only the renamed folder, named as a temp of this process, which
        the next run into the same place removes (:func:`jaxdream.media.images.remove_stale_temps`)."""
        trash = self.folder.with_name(f"{images.temp_prefix(self.folder)}{os.getpid()}-removing")
        try:
            os.rename(self.folder, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)


def check_work_folder(folder: Path, resume: bool, overwrite: bool) -> bool:
    """Whether a run into ``folder`` continues an interrupted one (True) or starts afresh.

    Raises:
        SettingsError: both flags; the folder holds another run's frames (finished or not)
        and neither ``resume`` nor ``overwrite`` is given; ``resume`` of a finished run.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise SettingsError("give --resume (continue) or --overwrite (start over), not both")
    images.remove_stale_temps(folder)  # a finished run's folder whose removal was cut short
    if overwrite:
        return False
    unfinished = (folder / STATE_FILE).is_file()
    if unfinished and not any(folder.glob("frame_*.png")):
        return False  # interrupted before its first frame: nothing to keep, start afresh
    if unfinished and not resume:
        raise SettingsError(f"{folder} holds an unfinished run; continue it with --resume or start "
                            f"over with --overwrite")
    if not unfinished and folder.is_dir() and any(folder.glob("frame_*.png")):
        if resume:
            raise SettingsError(f"cannot resume: {folder} holds the frames of a finished run (no "
                                f"{STATE_FILE}); start over with --overwrite")
        raise SettingsError(f"{folder} already holds the frames of another, finished run (so --resume "
                            f"cannot continue it); start over with --overwrite or choose another folder")
    return unfinished


@contextmanager
def frame_run(store: FrameStore):
    """Around a driver's frame loop: a run that fails or is interrupted before finishing its
    first frame leaves nothing behind (:meth:`FrameStore.abandon`); finished frames are kept."""
    try:
        yield store
    except BaseException:
        store.abandon()
        store.release()
        raise


def work_folder(out: Path, kind: str) -> Path:
    """Frames go straight into an output folder; a file output gets a hidden sibling folder."""
    return out if kind == "frames" else out.with_name(f".{out.name}.frames")


def loop_blend(frames: list[Callable[[], np.ndarray]], overlap: int) -> Iterator[np.ndarray]:
    """Make a sequence loop: the first ``overlap`` frames are cross-faded with the last ones,
    which are then dropped, so the frame before the end flows into frame 0."""
    n = len(frames) - overlap
    for k in range(n):
        frame = frames[k]()
        if k < overlap:
            a = (k + 1) / (overlap + 1)
            frame = a * frame + (1 - a) * frames[n + k]()
        yield frame


def finish(store: FrameStore, out: Path, kind: str, total: int, fps: float, loop_overlap: int = 0,
           audio_from: str | None = None, audio_start: float = 0.0, timestamps=None) -> Path:
    """Assemble the output from the work folder and remove the folder (for file outputs).

    ``fps``, ``audio_from``, ``audio_start`` and ``timestamps`` (a variable frame rate) are
    :func:`jaxdream.video.write_video`'s."""
    loaders = [lambda i=i: images.load_image(store.frame_path(i)) for i in range(total)]
    if kind == "frames":
        if loop_overlap:
            blended = list(enumerate(loop_blend(loaders, loop_overlap)))
            for i, frame in blended[:loop_overlap]:
                images.save_image(store.frame_path(i), frame, store.settings | {"frame": i})
            for i in range(total - loop_overlap, total):
                store.frame_path(i).unlink()
        store.remove_bookkeeping()
        store.release()
        return out
    frames = loop_blend(loaders, loop_overlap) if loop_overlap else (f() for f in loaders)
    try:
        video.write_video(out, frames, fps, audio_from=audio_from, audio_start=audio_start, timestamps=timestamps)
        try:
            store.remove()
        except KeyboardInterrupt:  # the output is complete: an interrupt now does not undo the run
            pass
    finally:
        store.release()
    return out


class FolderLock:
    """An exclusive lock on a frames folder for the length of a run: ``.NAME.lock`` beside it,
    held with ``flock`` (the kernel drops it when the process ends, even killed), holding the
    holder's PID. A second run refused here says whose it is.

    Raises:
        MediaError: another process holds the folder.
    """

    def __init__(self, folder: Path):
        self.path = folder.parent / f".{folder.name}.lock"
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise MediaError(f"{folder}: cannot write ({e.strerror or e})") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(self.fd)
            raise MediaError(f"{folder}: another jaxdream run (PID {holder}) is writing there; wait for it "
                             f"to finish or give another output") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, str(os.getpid()).encode())

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)


