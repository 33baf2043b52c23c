"""The weights store: cache folder, download, convert once, lookup order, validation."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import socket
import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import caffe_layers

from jaxdream.errors import WeightsError
from jaxdream.weights import registry, store
from jaxdream.weights.caffe import write_caffemodel
from jaxdream.weights.convert import validate
from jaxdream.weights.keras import write_keras_h5
from jaxdream.weights.store import WeightsWarning

# A few GoogLeNet layers at toy sizes: load_flat converts whatever ``expected`` asks for.
TINY_SHAPES = {
    "conv1/7x7_s2/kernel": (3, 3, 3, 4),
    "conv1/7x7_s2/bias": (4,),
    "loss3/classifier/kernel": (8, 5),
    "loss3/classifier/bias": (5,),
}
VGG_TINY_SHAPES = {"conv1_1/kernel": (3, 3, 3, 4), "conv1_1/bias": (4,)}


@pytest.fixture(autouse=True)
def _isolated(jaxdream_home, tmp_path, monkeypatch):
    """Isolated cache; registry URLs that can never reach the internet; no proxies."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    for key, info in list(registry.REGISTRY.items()):
        nowhere = (tmp_path / "nowhere" / info.filename).as_uri()
        monkeypatch.setitem(registry.REGISTRY, key, dataclasses.replace(info, url=nowhere))
    return jaxdream_home


def tiny_flat(seed: int = 0, shapes=TINY_SHAPES) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}


def write_tiny_caffemodel(path: Path, flat: dict[str, np.ndarray]) -> Path:
    layers = caffe_layers(flat)
    layers["loss1/conv"] = [np.ones((2, 4, 1, 1), np.float32), np.ones(2, np.float32)]  # skipped
    path.parent.mkdir(parents=True, exist_ok=True)
    write_caffemodel(path, layers)
    return path


def assert_flat_equal(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == np.float32, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def patch_info(monkeypatch, key: str = "googlenet", **changes) -> registry.WeightsInfo:
    info = dataclasses.replace(registry.REGISTRY[key], **changes)
    monkeypatch.setitem(registry.REGISTRY, key, info)
    return info


def sha(data: bytes, name: str = "sha1") -> str:
    return hashlib.new(name, data).hexdigest()


def cache_listing() -> list[str]:
    folder = store.weights_cache()
    return sorted(os.listdir(folder)) if folder.is_dir() else []


@pytest.fixture
def original(tmp_path, monkeypatch):
    """A tiny GoogLeNet caffemodel under the upstream name in ``$JAXDREAM_WEIGHTS_DIR``."""
    flat = tiny_flat(1)
    folder = tmp_path / "originals"
    path = write_tiny_caffemodel(folder / registry.REGISTRY["googlenet"].filename, flat)
    monkeypatch.setenv("JAXDREAM_WEIGHTS_DIR", str(folder))
    return path, flat


# --------------------------------------------------------------------------------------------
# A local HTTP server
# --------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = 10  # socket timeout of a request: a stuck client never blocks the test run

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, declared = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


class LocalServer:
    def __init__(self) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    def serve(self, path: str, body: bytes, declared: int | None = None) -> str:
        self.httpd.routes[path] = (body, len(body) if declared is None else declared)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server():
    srv = LocalServer()
    yield srv
    srv.close()


class RecordingBar:
    """A tqdm stand-in that checks the target is not in place while bytes still arrive."""

    def __init__(self, target: Path, **kwargs) -> None:
        self.target, self.kwargs, self.updates, self.closed = target, kwargs, [], False

    def update(self, n: int) -> None:
        assert not self.target.exists(), "the download must not appear before it is complete"
        self.updates.append(n)

    def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------------------------
# Cache folder
# --------------------------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("JAXDREAM_HOME")
    assert store.cache_dir() == tmp_path / "user" / ".cache" / "jaxdream"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert store.cache_dir() == tmp_path / "xdg" / "jaxdream"
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "jd"))
    assert store.cache_dir() == tmp_path / "jd"
    assert store.weights_cache() == tmp_path / "jd" / "weights"
    monkeypatch.setenv("JAXDREAM_HOME", "~/jd")
    assert store.cache_dir() == tmp_path / "user" / "jd"
    monkeypatch.setenv("JAXDREAM_HOME", "")  # empty counts as unset
    assert store.cache_dir() == tmp_path / "xdg" / "jaxdream"
    assert not (tmp_path / "xdg").exists(), "cache_dir must not create anything"


def test_search_dirs(tmp_path, monkeypatch):
    assert store.search_dirs() == [store.weights_cache()]
    monkeypatch.setenv("JAXDREAM_WEIGHTS_DIR", os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert store.search_dirs() == [tmp_path / "a", tmp_path / "b", store.weights_cache()]


def test_find_original_first_folder_wins(tmp_path, monkeypatch):
    info = registry.REGISTRY["googlenet"]
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / info.filename).write_bytes(sub.encode())
    (tmp_path / "c" / info.filename).mkdir(parents=True)  # a folder is not the file
    monkeypatch.setenv("JAXDREAM_WEIGHTS_DIR", os.pathsep.join(str(tmp_path / s) for s in "cba"))
    assert store.find_original(info) == tmp_path / "b" / info.filename


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------

BODY = np.random.default_rng(7).bytes(2 * (1 << 20) + 12345)  # several 1 MiB reads


def test_download_http_lands_atomically_with_progress(server):
    info = dataclasses.replace(registry.REGISTRY["googlenet"], hash=sha(BODY))
    url = server.serve("/w/file.bin", BODY)
    target = store.weights_cache() / info.filename
    bars = []

    def factory(**kwargs):
        bars.append(RecordingBar(target, **kwargs))
        return bars[-1]

    path = store.download(info, url=url, progress=factory)
    assert path == target
    assert path.read_bytes() == BODY
    assert cache_listing() == [info.filename]
    assert path.stat().st_mode & 0o777 == 0o644
    (bar,) = bars
    assert bar.kwargs["total"] == len(BODY)
    assert sum(bar.updates) == len(BODY) and len(bar.updates) >= 3
    assert bar.closed


def test_download_canonical_url(server, monkeypatch):
    url = server.serve("/canonical/bvlc_googlenet.caffemodel", BODY)
    info = patch_info(monkeypatch, url=url, hash=sha(BODY))
    assert store.download(info).read_bytes() == BODY
    assert server.requests == ["/canonical/bvlc_googlenet.caffemodel"]


def test_download_mirror_env(server, monkeypatch):
    info = dataclasses.replace(registry.REGISTRY["googlenet"], hash=sha(BODY))
    server.serve(f"/mirror/{info.filename}", BODY)
    monkeypatch.setenv("JAXDREAM_WEIGHTS_URL", server.url("/mirror/"))
    assert store.download(info).read_bytes() == BODY
    assert server.requests == [f"/mirror/{info.filename}"]


def test_download_file_url(tmp_path):
    source = tmp_path / "upstream.bin"
    source.write_bytes(BODY[:5000])
    info = dataclasses.replace(registry.REGISTRY["vgg19"], hash=sha(BODY[:5000], "md5"))
    path = store.download(info, url=source.as_uri())
    assert path == store.weights_cache() / info.filename
    assert path.read_bytes() == BODY[:5000]
    assert cache_listing() == [info.filename]


def test_download_hash_mismatch_leaves_nothing(server):
    info = registry.REGISTRY["googlenet"]
    url = server.serve("/bad", BODY)
    with pytest.raises(WeightsError, match="does not match the published"):
        store.download(info, url=url)
    assert cache_listing() == []


def test_download_hash_mismatch_keeps_a_previous_file(server):
    info = registry.REGISTRY["googlenet"]
    store.weights_cache().mkdir(parents=True)
    (store.weights_cache() / info.filename).write_bytes(b"old")
    with pytest.raises(WeightsError):
        store.download(info, url=server.serve("/bad", BODY))
    assert (store.weights_cache() / info.filename).read_bytes() == b"old"
    assert cache_listing() == [info.filename]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["404", "refused", "missing file"])
def test_download_unreachable_says_where_to_put_the_file(server, tmp_path, where):
    info = registry.REGISTRY["googlenet"]
    url = {"404": server.url("/nothing-here"),
           "refused": f"http://127.0.0.1:{_free_port()}/x.caffemodel",
           "missing file": (tmp_path / "absent.caffemodel").as_uri()}[where]
    with pytest.raises(WeightsError) as exc:
        store.download(info, url=url)
    message = str(exc.value)
    assert "\n" not in message
    assert url in message
    assert str(store.weights_cache()) in message and "JAXDREAM_WEIGHTS_DIR" in message
    assert cache_listing() == []


def test_download_truncated_transfer(server):
    info = dataclasses.replace(registry.REGISTRY["googlenet"], hash=sha(BODY))
    url = server.serve("/short", BODY[:300_000], declared=len(BODY))
    with pytest.raises(WeightsError, match=f"stopped after 300000 of {len(BODY)} bytes"):
        store.download(info, url=url)
    assert cache_listing() == []


def test_download_garbled_http_response(tmp_path):
    """A server that does not speak HTTP is a WeightsError, not an http.client exception."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(10)

        def reply():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"garbage\r\n\r\n")

        thread = threading.Thread(target=reply, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        with pytest.raises(WeightsError) as exc:
            store.download(registry.REGISTRY["googlenet"], url=url)
        thread.join(timeout=5)
    assert "\n" not in str(exc.value) and "\r" not in str(exc.value)
    assert cache_listing() == []


@pytest.mark.parametrize("how", ["under a file", "read-only folder"])
def test_download_unwritable_cache(tmp_path, monkeypatch, how):
    if how == "under a file":
        (tmp_path / "file.txt").write_text("not a folder")
        home = tmp_path / "file.txt" / "sub"
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        if os.access(locked, os.W_OK):
            locked.chmod(0o700)
            pytest.skip("running as root: permission bits do not stop writes")
        home = locked / "home"
    monkeypatch.setenv("JAXDREAM_HOME", str(home))
    try:
        with pytest.raises(WeightsError, match="cannot write to the weights cache.*JAXDREAM_HOME"):
            store.download(registry.REGISTRY["googlenet"], url=(tmp_path / "x").as_uri())
    finally:
        if how == "read-only folder":
            os.chmod(tmp_path / "locked", 0o700)
    assert not home.exists()


# --------------------------------------------------------------------------------------------
# load_flat: lookup order and conversion
# --------------------------------------------------------------------------------------------


def test_offline_with_nothing_local(server, monkeypatch):
    patch_info(monkeypatch, url=server.url("/never"))
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")
    with pytest.raises(WeightsError) as exc:
        store.load_flat("googlenet", TINY_SHAPES)
    message = str(exc.value)
    assert str(store.weights_cache()) in message and "JAXDREAM_WEIGHTS_DIR" in message
    assert server.url("/never") in message
    monkeypatch.delenv("JAXDREAM_OFFLINE")
    with pytest.raises(WeightsError, match="no googlenet weights found"):
        store.load_flat("googlenet", TINY_SHAPES, allow_download=False)
    assert server.requests == []
    assert cache_listing() == []


def test_downloads_converts_and_caches_when_nothing_is_local(server, monkeypatch, tmp_path):
    flat = tiny_flat(2)
    data = write_tiny_caffemodel(tmp_path / "served.caffemodel", flat).read_bytes()
    patch_info(monkeypatch, url=server.serve("/bvlc_googlenet.caffemodel", data), hash=sha(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the hash matches: no warning
        got, provenance = store.load_flat("googlenet", TINY_SHAPES)
    assert_flat_equal(got, flat)
    assert provenance["published_hash_ok"] is True
    assert cache_listing() == ["bvlc_googlenet.caffemodel", "googlenet.json", "googlenet.npz"]
    assert server.requests == ["/bvlc_googlenet.caffemodel"]
    store.load_flat("googlenet", TINY_SHAPES)
    assert len(server.requests) == 1, "the second load must come from the cache"


def test_original_is_converted_once(original, monkeypatch):
    path, flat = original
    with pytest.warns(WeightsWarning, match="differs from the published"):
        got, provenance = store.load_flat("googlenet", TINY_SHAPES)
    assert_flat_equal(got, flat)
    cached = store.weights_cache() / "googlenet.npz"
    meta = json.loads((store.weights_cache() / "googlenet.json").read_text())
    assert meta == provenance
    assert meta["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["source"] == str(path) and meta["key"] == "googlenet" and meta["format"] == "caffe"
    assert meta["published_hash_ok"] is False
    assert cache_listing() == ["googlenet.json", "googlenet.npz"]  # no temporary files left

    with np.load(cached, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(TINY_SHAPES)
        assert all(npz[name].dtype == np.float32 for name in npz.files)

    path.rename(path.with_name("elsewhere.caffemodel"))

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(store, "convert", no_conversion)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, provenance2 = store.load_flat("googlenet", TINY_SHAPES)
    assert_flat_equal(again, flat)
    assert provenance2["source_sha256"] == meta["source_sha256"]


def test_original_in_the_cache_folder_is_found(monkeypatch):
    flat = tiny_flat(3)
    write_tiny_caffemodel(store.weights_cache() / "bvlc_googlenet.caffemodel", flat)
    with pytest.warns(WeightsWarning):
        got, _ = store.load_flat("googlenet", TINY_SHAPES)
    assert_flat_equal(got, flat)
    assert (store.weights_cache() / "googlenet.npz").is_file()


def test_matching_published_hash_gives_no_warning(original, monkeypatch):
    path, flat = original
    patch_info(monkeypatch, hash=store.file_hash(path, "sha1"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, provenance = store.load_flat("googlenet", TINY_SHAPES)
    assert provenance["published_hash_ok"] is True


def test_cached_conversion_wins_over_original(original):
    path, _ = original
    cached_values = tiny_flat(9)
    store.weights_cache().mkdir(parents=True)
    np.savez(store.weights_cache() / "googlenet.npz", **cached_values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, provenance = store.load_flat("googlenet", TINY_SHAPES)
    assert_flat_equal(got, cached_values)
    assert provenance == {"source": str(store.weights_cache() / "googlenet.npz")}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong shapes", "pickled"])
def test_bad_cached_conversion_is_replaced(original, damage):
    path, flat = original
    cached = store.weights_cache() / "googlenet.npz"
    with pytest.warns(WeightsWarning):
        store.load_flat("googlenet", TINY_SHAPES)
    good = cached.read_bytes()
    if damage == "garbage":
        cached.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    elif damage == "truncated":
        cached.write_bytes(good[: len(good) // 2])
    elif damage == "wrong shapes":
        np.savez(cached, **tiny_flat(0, {name: (2,) for name in TINY_SHAPES}))
    else:
        np.savez(cached, **{name: np.array([object()]) for name in TINY_SHAPES})
    with pytest.warns(WeightsWarning) as record:
        got, _ = store.load_flat("googlenet", TINY_SHAPES)
    assert any("ignoring the cached conversion" in str(w.message) for w in record)
    assert_flat_equal(got, flat)
    assert_flat_equal(store.load_npz(cached), flat)


def test_unwritable_cache_still_loads_with_a_warning(original, tmp_path, monkeypatch):
    _, flat = original
    (tmp_path / "file.txt").write_text("")
    monkeypatch.setenv("JAXDREAM_HOME", str(tmp_path / "file.txt" / "sub"))
    with pytest.warns(WeightsWarning) as record:  # also: the hash differs from the published
        got, _ = store.load_flat("googlenet", TINY_SHAPES)
    assert any("could not cache the converted weights" in str(w.message) for w in record)
    assert_flat_equal(got, flat)


def test_explicit_original_is_converted_in_memory(tmp_path, original):
    flat = tiny_flat(4)
    path = write_tiny_caffemodel(tmp_path / "mine.caffemodel", flat)
    store.weights_cache().mkdir(parents=True)
    np.savez(store.weights_cache() / "googlenet.npz", **tiny_flat(5))  # must be ignored
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit files are not compared with the published hash
        got, provenance = store.load_flat("googlenet", TINY_SHAPES, weights=path)
    assert_flat_equal(got, flat)
    assert provenance["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cache_listing() == ["googlenet.npz"]  # nothing new cached


def test_explicit_npz(tmp_path):
    flat = tiny_flat(6)
    path = tmp_path / "converted.npz"
    np.savez(path, **flat)
    got, provenance = store.load_flat("googlenet", TINY_SHAPES, weights=str(path))
    assert_flat_equal(got, flat)
    assert provenance["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance["source"] == str(path)


def test_explicit_npz_that_does_not_fit(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, **tiny_flat(0, VGG_TINY_SHAPES))
    with pytest.raises(WeightsError, match=f"{path}: weights do not fit the model: missing 4"):
        store.load_flat("googlenet", TINY_SHAPES, weights=path)


def test_explicit_keras_file_for_googlenet(tmp_path):
    path = tmp_path / "model.h5"
    write_keras_h5(path, {"dense_1": [np.zeros((4, 2), np.float32), np.zeros(2, np.float32)]})
    with pytest.raises(WeightsError, match="is a Keras HDF5 file, but googlenet weights come as a Caffe"):
        store.load_flat("googlenet", TINY_SHAPES, weights=path)


def test_explicit_caffemodel_for_vgg19(tmp_path):
    path = write_tiny_caffemodel(tmp_path / "g.caffemodel", tiny_flat())
    with pytest.raises(WeightsError, match="is not an HDF5 file, but vgg19 weights come as a Keras .h5"):
        store.load_flat("vgg19", VGG_TINY_SHAPES, weights=path)


@pytest.mark.parametrize("content", [None, b"", b"\0" * 64, b"\x89HDF\r\n\x1a\n" + b"\0" * 64])
def test_explicit_unreadable_file(tmp_path, content):
    path = tmp_path / "weights.caffemodel"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as exc:
        store.load_flat("googlenet", TINY_SHAPES, weights=path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_keras_original_for_vgg19(tmp_path, monkeypatch):
    flat = tiny_flat(8, VGG_TINY_SHAPES)
    folder = tmp_path / "originals"
    folder.mkdir()
    write_keras_h5(folder / registry.REGISTRY["vgg19"].filename,
                   {"input_1": [], "block1_conv1": [flat["conv1_1/kernel"], flat["conv1_1/bias"]],
                    "block1_pool": []})
    monkeypatch.setenv("JAXDREAM_WEIGHTS_DIR", str(folder))
    with pytest.warns(WeightsWarning):
        got, provenance = store.load_flat("vgg19", VGG_TINY_SHAPES)
    assert_flat_equal(got, flat)
    assert provenance["format"] == "keras"
    assert cache_listing() == ["vgg19.json", "vgg19.npz"]


def test_full_size_googlenet_layout(googlenet_caffemodel):
    from jaxdream.nets.network import param_shapes

    got, _ = store.load_flat("googlenet", param_shapes("googlenet"), weights=googlenet_caffemodel.path)
    assert_flat_equal(got, googlenet_caffemodel.flat)


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def test_validate_lists_every_problem_in_one_message():
    expected = {"a/kernel": (3, 3, 1, 2), "a/bias": (2,), "b/kernel": (4, 4), "c/bias": (1,)}
    flat = {"a/kernel": np.zeros((3, 3, 2, 1), np.float32), "a/bias": np.zeros(2, np.float32),
            "b/kernel": np.zeros((4, 4), np.float32), "z/extra": np.zeros(1, np.float32)}
    with pytest.raises(WeightsError) as exc:
        validate(flat, expected, "f.npz")
    message = str(exc.value)
    assert message.startswith("f.npz: weights do not fit the model")
    assert "missing 1 (c/bias)" in message
    assert "unexpected 1 (z/extra)" in message
    assert "wrong shape 1 (a/kernel (3, 3, 2, 1) != (3, 3, 1, 2))" in message
    assert "\n" not in message
    validate({k: np.zeros(s, np.float32) for k, s in expected.items()}, expected, "ok")


def test_validate_rejects_nan():
    with pytest.raises(WeightsError, match="NaN or infinity in b"):
        validate({"a": np.zeros(2, np.float32), "b": np.array([1, np.inf], np.float32)},
                 {"a": (2,), "b": (2,)}, "f")


def test_sniff_format(tmp_path):
    (tmp_path / "a").write_bytes(b"\x89HDF\r\n\x1a\nrest")
    (tmp_path / "b").write_bytes(b"PK\x03\x04rest")
    (tmp_path / "c").write_bytes(b"\n\x03net")
    (tmp_path / "d").write_bytes(b"")
    assert [store.sniff_format(tmp_path / n) for n in "abcd"] == ["keras", "npz", "caffe", "caffe"]
    with pytest.raises(WeightsError, match="file not found"):
        store.sniff_format(tmp_path / "missing")
    h5 = tmp_path / "real.h5"
    with h5py.File(h5, "w"):
        pass
    assert store.sniff_format(h5) == "keras"


def test_load_npz_errors(tmp_path):
    with pytest.raises(WeightsError, match="file not found"):
        store.load_npz(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="not a readable jaxdream .npz"):
        store.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "pickled.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(WeightsError, match="not a readable jaxdream .npz"):
        store.load_npz(tmp_path / "pickled.npz")


def test_get_info():
    assert registry.get_info("GoogLeNet").key == "googlenet"
    with pytest.raises(WeightsError, match="did you mean googlenet\\?.*googlenet, vgg19"):
        registry.get_info("googlnet")
