"""Uploads: checked like command-line inputs, stored under random names in the studio folder.

An upload arrives as a stream of bytes with the name the browser gave the file. The name is
used only for its suffix and shown back to the user; the file is written to
``uploads/<random>.<suffix>`` through a temporary file, and kept only if it passes the checks a
command makes of its inputs: a size ceiling (counted while the bytes arrive, so an oversized
upload is never written in full), a suffix jaxdream reads, a complete image Pillow can read
whose pixel count is within jaxdream's ceiling (decompression bombs refused before any pixel is
decoded), or a clip ffmpeg can decode.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import JaxdreamError, MediaError, SettingsError

#: Suffixes accepted as images (what :func:`jaxdream.media.load_image` reads) and as clips.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".gif")

#: Upload ids: what :func:`store_upload` names files (a random hex name and a known suffix).
UPLOAD_ID = re.compile(r"^[0-9a-f]{16}\.[a-z0-9]{2,5}$")


class UploadError(JaxdreamError):
    """An upload refused; the message says why (one line) and is shown on the page."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Upload:
    """A stored upload: its id (the file name under ``uploads/``), kind and what it showed."""

    id: str
    name: str
    kind: str
    width: int
    height: int
    bytes: int


def safe_name(name: str) -> str:
    """The browser's file name, refused if it names a folder (``../x.png``, ``a/b.png``)."""
    if not name or len(name) > 255:
        raise UploadError("give the file a name of 1 to 255 characters")
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("..") or "\x00" in name:
        raise UploadError(f"refused the file name '{name[:80]}': it names a folder (path traversal)")
    return name


def kind_of(name: str) -> str:
    """``image`` or ``video`` from a file name's suffix; refuses any other."""
    suffix = Path(name).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    raise UploadError(f"{name}: not an image or clip jaxdream reads (use "
                      f"{', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})", 415)


def check_image(path: Path, name: str) -> tuple[int, int]:
    """(width, height) of an uploaded image after checking it as jaxdream checks inputs: Pillow
    reads its header and verifies the file, and its pixel count is within jaxdream's ceiling
    before anything is decoded (a decompression bomb is refused)."""
    from PIL import Image

    from .. import media
    from ..runtime import memory
    try:
        h, w = media.image_shape(path)
        memory.check_pixels(h, w, name)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.verify()  # a corrupt PNG fails here (verify checks what the format allows)
            with Image.open(path) as img:
                img.load()  # a truncated file fails here; the size is within the ceiling
    except (MediaError, SettingsError) as e:
        raise UploadError(str(e).replace(str(path), name), 415) from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds on corrupt data
        raise UploadError(f"{name}: not an image file Pillow can read ({type(e).__name__})", 415) from None
    return w, h


def check_video(path: Path, name: str) -> tuple[int, int]:
    """(width, height) of an uploaded clip that ffmpeg can decode."""
    from .. import media
    from ..runtime import memory
    try:
        info = media.probe_video(path)
        memory.check_pixels(info.height, info.width, name)
    except (MediaError, SettingsError) as e:
        raise UploadError(str(e).replace(str(path), name), 415) from None
    return info.width, info.height


class Incoming:
    """An upload being received: its name checked first, its bytes counted against the ceiling
    as they arrive and written to a temporary file; :meth:`finish` checks and keeps it.

    Raises:
        UploadError: a bad name (400), too many bytes (413), not an image or clip (415).
    """

    def __init__(self, folder: Path, name: str, max_bytes: int):
        self.name = safe_name(name)
        self.kind = kind_of(self.name)
        self.folder, self.max_bytes, self.size = Path(folder), max_bytes, 0
        self.folder.mkdir(parents=True, exist_ok=True)
        self.id = f"{secrets.token_hex(8)}{Path(self.name).suffix.lower()}"
        self.tmp = self.folder / f".{self.id}.part"
        self._file = open(self.tmp, "wb")

    def check_length(self, declared: int | None) -> None:
        """Refuse at once an upload whose declared length is over the ceiling."""
        if declared is not None and declared > self.max_bytes:
            self._too_large()

    def _too_large(self):
        raise UploadError(f"{self.name}: too large (over the studio's limit of {self.max_bytes / 1e6:g} MB; "
                          f"see jaxdream serve --max-upload-mb)", 413)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self._too_large()
        self._file.write(chunk)

    def finish(self) -> Upload:
        """Check the file as a command checks its inputs and keep it under its random name."""
        self._file.close()
        if self.size == 0:
            raise UploadError(f"{self.name}: the file is empty", 415)
        w, h = (check_image if self.kind == "image" else check_video)(self.tmp, self.name)
        os.replace(self.tmp, self.folder / self.id)
        upload = Upload(self.id, self.name, self.kind, w, h, self.size)
        (self.folder / f"{self.id}.json").write_text(json.dumps(asdict(upload)))
        return upload

    def abort(self) -> None:
        """Remove what was received (after a refusal or a broken connection)."""
        self._file.close()
        self.tmp.unlink(missing_ok=True)


def receive(chunks, folder: Path, name: str, max_bytes: int) -> Upload:
    """Store an upload arriving as byte ``chunks`` (an iterable) in ``folder`` and check it
    (see :class:`Incoming`)."""
    incoming = Incoming(folder, name, max_bytes)
    try:
        for chunk in chunks:
            incoming.write(chunk)
        return incoming.finish()
    finally:
        incoming.abort()


def find(folder: Path, upload_id: str) -> Path:
    """The file of an upload id given by the page (only a name :func:`receive` could have made)."""
    if not isinstance(upload_id, str) or not UPLOAD_ID.match(upload_id):
        raise UploadError(f"unknown upload '{str(upload_id)[:80]}'")
    path = folder / upload_id
    if not path.is_file():
        raise UploadError(f"unknown upload '{upload_id}' (upload the file again)", 404)
    return path
