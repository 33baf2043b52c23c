"""Animation drivers: the zoom-and-dream feedback loop (and, in video mode, frame by frame).

Frames are written to a work folder as they are made (one PNG per frame, plus the last frame
as float32 ``.npy`` so a resumed run continues bit for bit). The requested output (MP4, GIF
or a folder of PNGs) is assembled from that folder at the end, streaming one frame at a time,
so memory does not grow with the frame count. Ctrl-C or a crash leaves the work folder;
``resume=True`` continues from the last finished frame and refuses when the settings differ.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates

from . import media, options
from .errors import MediaError, SettingsError
from .masks import mask_hashes

STATE_FILE = "jaxdream-state.json"
METRICS_FILE = "jaxdream-metrics.json"
#: What a run keeps beside its frames to resume (removed when the frames are final).
PASSES_FILE = "jaxdream-passes.json"
BOOKKEEPING = (STATE_FILE, METRICS_FILE, PASSES_FILE, "state_*.npy", "flows_*.npz")
#: Settings that hold paths as typed; a resumed run compares the content hashes beside them.
PATH_KEYS = frozenset({"input", "styles", "guide", "first_init", "mask", "masks", "content_mask", "style_masks"})


# ----------------------------------------------------------------------------------------------
# geometry


@jax.jit
def affine_about_centre(image: jax.Array, zoom: jax.Array, angle_deg: jax.Array,
                        translate: jax.Array) -> jax.Array:
    """Zoom by ``zoom``, rotate by ``angle_deg`` (counter-clockwise) about the centre, then shift
    by ``translate`` (dx, dy) pixels; bilinear, edges replicated. Shape is kept."""
    h, w = image.shape[:2]
    yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    theta = jnp.deg2rad(angle_deg)
    # output pixel p came from source c + R(-theta) (p - c - t) / zoom
    dx, dy = xx - cx - translate[0], yy - cy - translate[1]
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    sx = cx + (cos * dx - sin * dy) / zoom
    sy = cy + (sin * dx + cos * dy) / zoom
    channels = [map_coordinates(image[..., c], [sy, sx], order=1, mode="nearest")
                for c in range(image.shape[-1])]
    return jnp.stack(channels, axis=-1)


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
        try:
            if self.overwrite:
                self.clear()
            if not self.folder.exists():
                self.folder.mkdir(parents=True)
                self._created_folder = True
            if not self.resuming:
                state = self.folder / STATE_FILE
                media.atomic_write(state, lambda tmp: Path(tmp).write_text(
                    json.dumps(self.settings, indent=1, sort_keys=True)))
            media.remove_stale_temps(self.folder, any_name=True)
        except OSError as e:
            raise MediaError(f"{self.folder}: cannot write ({e.strerror or e})") from None
        self._started = True

    def clear(self) -> None:
        """Remove every file an earlier run wrote here (frames, bookkeeping, temps)."""
        self._remove("frame_*.png", f".*{media.TEMP_TAG}*", *BOOKKEEPING)

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
            media.atomic_write(self.state_path(i), write)
        media.save_image(self.frame_path(i), frame, {"frame": i} | self.settings | (meta or {}))
        for old in self.folder.glob("state_*.npy"):
            if old.stem[6:].isdigit() and int(old.stem[6:]) <= i - self.keep_states:
                old.unlink(missing_ok=True)

    def write_json(self, name: str, data) -> None:
        """Write a JSON side file in the folder atomically."""
        self.start()
        media.atomic_write(self.folder / name, lambda tmp: Path(tmp).write_text(json.dumps(data)))

    def last_state(self, i: int) -> np.ndarray:
        """The float state after frame ``i`` (its PNG if the float copy is missing)."""
        npy = self.state_path(i)
        if npy.is_file():
            return np.load(npy)
        return media.load_image(self.frame_path(i))

    def frames(self, n: int) -> Iterator[np.ndarray]:
        for i in range(n):
            yield media.load_image(self.frame_path(i))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def check_work_folder(folder: Path, resume: bool, overwrite: bool) -> bool:
    """Whether a run into ``folder`` continues an interrupted one (True) or starts afresh.

    Raises:
        SettingsError: both flags; the folder holds another run's frames (finished or not)
        and neither ``resume`` nor ``overwrite`` is given; ``resume`` of a finished run.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise SettingsError("give --resume (continue) or --overwrite (start over), not both")
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
    :func:`jaxdream.media.write_video`'s."""
    loaders = [lambda i=i: media.load_image(store.frame_path(i)) for i in range(total)]
    if kind == "frames":
        if loop_overlap:
            blended = list(enumerate(loop_blend(loaders, loop_overlap)))
            for i, frame in blended[:loop_overlap]:
                media.save_image(store.frame_path(i), frame, store.settings | {"frame": i})
            for i in range(total - loop_overlap, total):
                store.frame_path(i).unlink()
        store.remove_bookkeeping()
        return out
    frames = loop_blend(loaders, loop_overlap) if loop_overlap else (f() for f in loaders)
    media.write_video(out, frames, fps, audio_from=audio_from, audio_start=audio_start, timestamps=timestamps)
    store.remove()
    return out


# ----------------------------------------------------------------------------------------------
# zoom


def parse_layer_schedule(text: str | None) -> list[tuple[int, str]]:
    """``"0:inception_4c/output,60:inception_4d/output"`` -> [(0, ...), (60, ...)], sorted.

    A layer may carry ``+``-joined names (``"0:inception_4c/output+inception_4d/output"``).
    """
    if not text:
        return []
    out = []
    for part in text.split(","):
        frame, sep, layer = part.strip().partition(":")
        if not sep or not frame.strip().isdigit() or not layer.strip():
            raise SettingsError(f"--layer-schedule expects FRAME:LAYER items like "
                                f"'0:inception_4c/output,60:inception_4d/output', got '{part.strip()}'")
        out.append((int(frame), layer.strip()))
    return sorted(out)


@dataclass
class FrameProgress:
    """Reported after each finished frame."""

    frame: int
    frames: int
    seconds: float


@dataclass(frozen=True)
class ZoomSettings:
    """The zoom loop's own settings (the dream settings come from a DreamConfig)."""

    frames: int = 120
    zoom: float = 1.05
    rotate: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)
    steps_per_frame: int = 5
    fps: float = 24.0
    loop: bool = False

    def validate(self) -> None:
        """Raise SettingsError for any value outside its range (:mod:`jaxdream.options`)."""
        for name in ("frames", "zoom", "rotate", "steps_per_frame", "fps"):
            options.get(name).check(getattr(self, name))
        if len(self.translate) != 2:
            raise SettingsError(f"translate takes two numbers (dx, dy), got {self.translate!r}")
        options.get("translate").check_all(self.translate, "translate")

    def loop_overlap(self) -> int:
        return min(24, self.frames // 4) if self.loop else 0


def zoom(dreamer, image: np.ndarray, out: str | os.PathLike, settings: ZoomSettings,
         layer_schedule: list[tuple[int, str]] | None = None, resume: bool = False,
         progress: Callable[[FrameProgress], None] | None = None, metadata: dict | None = None,
         overwrite: bool = False) -> Path:
    """Infinite-zoom DeepDream: each frame is the previous one zoomed/rotated/shifted about its
    centre, then dreamed ``steps_per_frame`` steps. Frame 0 is a full octave dream.

    Args:
        dreamer: a :class:`jaxdream.dream.Dreamer`.
        image: the start image, (H, W, 3) RGB 0..255.
        out: ``.mp4``, ``.gif`` or a folder.
        settings: frame count, motion, fps, loop.
        layer_schedule: [(from frame, layer spec)] switching the dream layers during the run.
        resume: continue an interrupted run from its last finished frame.
        progress: called after every frame.
        metadata: extra JSON-able settings recorded in every frame and checked on resume.
        overwrite: start over in a folder that holds another run's frames.

    Returns:
        The output path.
    """
    settings.validate()
    out, kind = media.check_animation_output(out)
    overlap = settings.loop_overlap()
    total = settings.frames + overlap
    from .dream import parse_layers
    schedule = [(f, parse_layers(spec)) for f, spec in (layer_schedule or [])]
    for _, layers in schedule:
        dreamer.net.spec.check_layers([n for n, _ in layers])
    record = {"zoom": settings.zoom, "rotate": settings.rotate, "translate": list(settings.translate),
              "frames": settings.frames, "steps_per_frame": settings.steps_per_frame, "fps": settings.fps,
              "loop": settings.loop, "layer_schedule": [[f, [f"{n}:{w:g}" for n, w in ls]] for f, ls in schedule],
              "size": list(image.shape[:2])} | dreamer.cfg.to_dict() | (metadata or {})
    record["guide_sha256"] = media.file_sha256(dreamer.cfg.guide)
    record |= mask_hashes(record)
    store = FrameStore(work_folder(out, kind), record, resume, overwrite)
    with frame_run(store):
        _zoom_frames(dreamer, image, store, settings, schedule, total, progress)
    return finish(store, out, kind, total, settings.fps, overlap)


def _zoom_frames(dreamer, image, store: FrameStore, settings: ZoomSettings, schedule, total: int,
                 progress) -> None:
    done = store.count()
    current = store.last_state(done - 1) if done else np.asarray(image, np.float32)
    store.start()
    key = jax.random.key(dreamer.cfg.seed)
    zoom_f, angle = jnp.float32(settings.zoom), jnp.float32(settings.rotate)
    shift = jnp.asarray(settings.translate, jnp.float32)
    for i in range(done, total):
        start = time.perf_counter()
        layers = None
        for f, ls in schedule:
            if i >= f:
                layers = ls
        if i == 0:
            current = dreamer.run(current, layers=layers)
        else:
            moved = affine_about_centre(jnp.asarray(current), zoom_f, angle, shift)
            current = np.asarray(dreamer.step(moved, jax.random.fold_in(key, i),
                                              steps=settings.steps_per_frame, layers=layers))
        store.save(i, current, current)
        if progress is not None:
            progress(FrameProgress(i + 1, total, time.perf_counter() - start))
