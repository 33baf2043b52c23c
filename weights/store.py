"""The weights store: cache directory, download, convert once to ``.npz``, load.

Lookup order for ``load_flat(key, weights=None)``:

1. an explicit ``weights`` path: a converted ``.npz`` or an upstream file (converted in memory);
2. the cached conversion ``<cache>/weights/<key>.npz``;
3. the upstream file in ``$JAXDREAM_WEIGHTS_DIR`` or ``<cache>/weights/``, converted and cached;
4. a download from the canonical URL (or ``$JAXDREAM_WEIGHTS_URL``/filename), hash-checked,
   written to a temporary file and renamed, then converted and cached.

The cache is ``$JAXDREAM_HOME``, else ``$XDG_CACHE_HOME/jaxdream``, else ``~/.cache/jaxdream``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from jaxdream._version import __version__
from jaxdream.errors import JaxdreamError, WeightsError

from .convert import convert, validate
from .registry import WeightsInfo, get_info

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ProgressFactory = Callable[..., object]


class WeightsWarning(UserWarning):
    """Something about the weights a user should know, that does not stop the run."""


def cache_dir() -> Path:
    """The jaxdream cache folder (not created here)."""
    if os.environ.get("JAXDREAM_HOME"):
        return Path(os.environ["JAXDREAM_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "jaxdream"
    return Path.home() / ".cache" / "jaxdream"


def weights_cache() -> Path:
    """Where upstream files are downloaded and conversions are kept."""
    return cache_dir() / "weights"


def search_dirs() -> list[Path]:
    """Folders searched for upstream files: ``$JAXDREAM_WEIGHTS_DIR`` (os.pathsep list), the cache."""
    dirs = [Path(p).expanduser() for p in os.environ.get("JAXDREAM_WEIGHTS_DIR", "").split(os.pathsep) if p]
    return dirs + [weights_cache()]


def file_hash(path: str | os.PathLike, name: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(name)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_original(info: WeightsInfo) -> Path | None:
    """The first upstream file named ``info.filename`` in :func:`search_dirs`, if any."""
    for folder in search_dirs():
        candidate = folder / info.filename
        if candidate.is_file():
            return candidate
    return None


def converted_path(info: WeightsInfo) -> Path:
    return weights_cache() / f"{info.key}.npz"


def _where_to_put(info: WeightsInfo) -> str:
    return (f"download {info.url} and put it in {weights_cache()} "
            f"or in a folder named by JAXDREAM_WEIGHTS_DIR")


def _writable_dir(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise WeightsError(f"cannot write to the weights cache {folder} ({e.strerror or e}); "
                           f"set JAXDREAM_HOME to a writable folder") from None
    return folder


def download(info: WeightsInfo, url: str | None = None, progress: ProgressFactory | None = None) -> Path:
    """Download the upstream file into the cache, check its published hash, rename into place.

    Args:
        info: the registry entry.
        url: where to fetch from (``http(s)://`` or ``file://``); default ``$JAXDREAM_WEIGHTS_URL``
            joined with the file name, else the canonical URL.
        progress: a tqdm-like factory ``(total=, desc=, unit=...) -> bar`` with ``update(n)``.

    Returns:
        The path of the downloaded file.

    Raises:
        WeightsError: unreachable URL, interrupted transfer, hash mismatch, unwritable cache.
    """
    if url is None:
        mirror = os.environ.get("JAXDREAM_WEIGHTS_URL")
        url = f"{mirror.rstrip('/')}/{info.filename}" if mirror else info.url
    folder = _writable_dir(weights_cache())
    target = folder / info.filename
    digest = hashlib.new(info.hash_name)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{info.filename}.", suffix=".part")
    bar = None
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            if progress is not None:
                bar = progress(total=total, desc=info.filename, unit="B", unit_scale=True,
                               unit_divisor=1024)
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise WeightsError(f"download of {url} stopped after {out.tell()} of {total} bytes")
        if digest.hexdigest() != info.hash:
            raise WeightsError(f"{url}: {info.hash_name} {digest.hexdigest()} does not match the "
                               f"published {info.hash}; the download is corrupt or not {info.filename}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
        reason = " ".join(str(reason).split()) or type(e).__name__  # one line
        raise WeightsError(f"could not download {info.key} weights from {url} ({reason}); "
                           f"{_where_to_put(info)}") from None
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _save_npz(flat: dict[str, np.ndarray], provenance: dict, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".npz")
    meta = target.with_suffix(".json")
    meta_tmp = meta.with_name(f".{meta.name}.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
        meta_tmp.write_text(json.dumps(provenance, indent=2))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        os.replace(meta_tmp, meta)
    finally:
        for leftover in (tmp, meta_tmp):
            if os.path.exists(leftover):
                os.unlink(leftover)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load a converted flat ``.npz`` (no pickles).

    Raises:
        WeightsError: missing, truncated or not an npz file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise WeightsError(f"{path}: not a readable jaxdream .npz weights file ({e})") from None


def sniff_format(path: str | os.PathLike) -> str:
    """``keras`` for HDF5 files, ``npz`` for zip archives, else ``caffe``."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except OSError as e:
        raise WeightsError(f"{path}: cannot read ({e.strerror or e})") from None
    if head.startswith(HDF5_MAGIC):
        return "keras"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    return "caffe"


def _convert_original(info: WeightsInfo, path: Path, expected: dict, check_hash: bool) -> tuple[dict, dict]:
    provenance = {"key": info.key, "model": info.model, "format": info.format,
                  "source": str(path), "source_sha256": file_hash(path),
                  "jaxdream_version": __version__,
                  "converted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if check_hash:
        published = file_hash(path, info.hash_name)
        provenance["published_hash_ok"] = published == info.hash
        if published != info.hash:
            warnings.warn(f"{path}: {info.hash_name} differs from the published {info.filename}; "
                          f"using it as a local copy", WeightsWarning, stacklevel=3)
    flat = convert(path, info.format, expected)
    validate(flat, expected, str(path))
    return flat, provenance


def convert_and_cache(info: WeightsInfo, path: Path, expected: dict, must_cache: bool = False) -> tuple[dict, dict]:
    """Convert an upstream file and keep the result in the cache (warn if it cannot, or with
    ``must_cache`` raise WeightsError: ``jaxdream weights convert`` exists to write it)."""
    flat, provenance = _convert_original(info, path, expected, check_hash=True)
    target = converted_path(info)
    try:
        _save_npz(flat, provenance, target)
    except OSError as e:
        if must_cache:
            raise WeightsError(f"could not write the converted weights to {target} ({e.strerror or e})") from None
        warnings.warn(f"could not cache the converted weights in {target.parent} "
                      f"({e.strerror or e}); converting again next time", WeightsWarning, stacklevel=2)
    return flat, provenance


def load_flat(key: str, expected: dict[str, tuple[int, ...]], weights: str | os.PathLike | None = None,
              progress: ProgressFactory | None = None, allow_download: bool = True) -> tuple[dict, dict]:
    """Find, convert if needed, validate and return flat parameters plus their provenance.

    Args:
        key: registry key (``googlenet``, ``vgg19``).
        expected: ``{flat name: shape}`` from the model's init tree.
        weights: an explicit file: a converted ``.npz`` or the upstream file.
        progress: a tqdm-like factory for the download progress bar.
        allow_download: fetch the file when it is nowhere local (also off when
            ``$JAXDREAM_OFFLINE`` is set).

    Raises:
        WeightsError: with one line saying what is wrong and what to do.
    """
    info = get_info(key)
    if weights is not None:
        path = Path(weights).expanduser()
        fmt = sniff_format(path)
        if fmt == "npz":
            flat = load_npz(path)
            validate(flat, expected, str(path))
            return flat, {"key": info.key, "model": info.model, "source": str(path),
                          "source_sha256": file_hash(path)}
        if fmt != info.format:
            kinds = {"keras": "a Keras HDF5 file", "caffe": "not an HDF5 file"}
            raise WeightsError(f"{path} is {kinds[fmt]}, but {info.model} weights come as "
                               f"{'a Caffe .caffemodel' if info.format == 'caffe' else 'a Keras .h5 file'}")
        return _convert_original(info, path, expected, check_hash=False)

    cached = converted_path(info)
    if cached.is_file():
        reading = cached
        try:
            flat = load_npz(cached)
            validate(flat, expected, str(cached))
            reading = meta = cached.with_suffix(".json")
            provenance = json.loads(meta.read_text()) if meta.is_file() else {"source": str(cached)}
            return flat, provenance
        except (JaxdreamError, ValueError, OSError) as e:
            detail = str(e) if str(reading) in str(e) else f"{reading}: {e}"
            warnings.warn(f"ignoring the cached conversion ({detail}); converting again", WeightsWarning,
                          stacklevel=2)

    original = find_original(info)
    if original is None:
        if not allow_download or os.environ.get("JAXDREAM_OFFLINE"):
            raise WeightsError(f"no {info.key} weights found; {_where_to_put(info)}")
        original = download(info, progress=progress)
    return convert_and_cache(info, original, expected)
