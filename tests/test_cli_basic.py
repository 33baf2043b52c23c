"""The installed ``jaxdream`` command: devices, layers, weights, classify and its error lines.

Every command runs as a subprocess of the installed console script with an explicit
environment (its own ``JAXDREAM_HOME``, CPU only, no network). Independent commands are
started together, two at a time, by a module-scoped fixture; each test checks one result.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from helpers import SCRIPT, Batch, cli_env, run_cli
from weightfiles import REAL_WEIGHTS

from jaxdream._version import __version__
from jaxdream.weights import registry
from jaxdream.weights.keras import write_keras_h5


pytestmark = pytest.mark.skipif(SCRIPT is None, reason="the jaxdream console script is not installed")

REAL_MEDIA = REAL_WEIGHTS.parent / "media"
GOOGLENET_FILE = registry.REGISTRY["googlenet"].filename
ERROR_PREFIX = "jaxdream: error:"
RANKED = re.compile(r"^(\d+)\.\s+(\d+) (.+?)\s+(\d\.\d{4})$")


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) \
        if folder.exists() else []


def assert_one_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, one error line (warning lines allowed); returns the error."""
    err = result.stderr
    assert result.returncode != 0, f"exit 0; stdout={result.stdout!r}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, err
    others = [line for line in lines if not line.startswith(("jaxdream: error:", "jaxdream: warning:"))]
    assert not others, err
    assert sum("error" in line.lower() for line in lines) <= 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr and ERROR_PREFIX not in result.stderr, result.stderr


def parse_ranking(stdout: str) -> list[tuple[int, int, str, float]]:
    rows = []
    for line in stdout.splitlines():
        match = RANKED.match(line.strip())
        assert match, f"not a ranked line: {line!r}"
        rows.append((int(match[1]), int(match[2]), match[3], float(match[4])))
    return rows


# --------------------------------------------------------------------------------------------
# Inputs and the batch of independent commands
# --------------------------------------------------------------------------------------------


def _truncation_points(data: bytes, flat: dict[str, np.ndarray]) -> list[int]:
    """Seeded random cut points, and one inside the float data of the classifier kernel."""
    rng = np.random.default_rng(2024)
    points = sorted(int(p) for p in rng.integers(1, len(data) - 1, size=TRUNCATIONS - 1))
    kernel = np.ascontiguousarray(flat["loss3/classifier/kernel"].T, dtype="<f4").tobytes()
    start = data.find(kernel[:256])
    assert start > 0
    return points + [start + 4 * 12345 + 2]  # two bytes into a float, deep inside the array


ERROR_CASES = {
    # name: (args with {placeholders}, extra environment, phrases the error line must contain)
    "missing image": (["classify", "{tmp}/absent.png", "--weights", "{weights}"], {},
                      ["absent.png", "file not found"]),
    "corrupt image": (["classify", "{tmp}/noise.png", "--weights", "{weights}"], {}, ["noise.png"]),
    "missing weights": (["classify", "{image}", "--weights", "{tmp}/absent.caffemodel"], {},
                        ["absent.caffemodel", "not found"]),
    "random weights": (["classify", "{image}", "--weights", "{tmp}/noise.caffemodel"], {},
                       ["noise.caffemodel"]),
    "empty weights": (["classify", "{image}", "--weights", "{tmp}/empty.caffemodel"], {},
                      ["empty.caffemodel"]),
    "keras weights": (["classify", "{image}", "--weights", "{tmp}/other.h5"], {},
                      ["other.h5", "Keras"]),
    "offline": (["classify", "{image}"], {"JAXDREAM_OFFLINE": "1"},
                ["no googlenet weights", "{home}/weights", "JAXDREAM_WEIGHTS_DIR"]),
    "layers unknown": (["layers", "nope"], {}, ["nope", "googlenet", "vgg19"]),
    "classify vgg19": (["classify", "{image}", "--model", "vgg19"], {}, ["classifier"]),
    "unknown key": (["weights", "download", "nope"], {}, ["nope", "googlenet"]),
    "convert nothing": (["weights", "convert", "googlenet"], {}, [GOOGLENET_FILE, "{home}/weights"]),
    "convert keras": (["weights", "convert", "googlenet", "{tmp}/other.h5"], {}, ["other.h5"]),
    "convert truncated": (["weights", "convert", "googlenet", "{tmp}/truncated_2.caffemodel"], {},
                          ["truncated_2.caffemodel"]),
    "download wrong hash": (["weights", "download", "googlenet", "--url", "{weights_url}"], {},
                            ["does not match the published"]),
    "verify corrupt cache": (["weights", "verify", "googlenet"], {}, ["googlenet.npz"]),
}
TRUNCATIONS = 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, googlenet_caffemodel) -> dict:
    tmp = tmp_path_factory.mktemp("cli_inputs")
    rng = np.random.default_rng(99)
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(tmp / "image.png")
    (tmp / "noise.png").write_bytes(rng.bytes(5000))
    (tmp / "noise.caffemodel").write_bytes(rng.bytes(100_000))
    (tmp / "empty.caffemodel").write_bytes(b"")
    write_keras_h5(tmp / "other.h5", {"dense_1": [np.zeros((16, 4), np.float32), np.zeros(4, np.float32)]})
    data = googlenet_caffemodel.path.read_bytes()
    cuts = _truncation_points(data, googlenet_caffemodel.flat)
    for i, cut in enumerate(cuts):
        (tmp / f"truncated_{i}.caffemodel").write_bytes(data[:cut])
    return {"tmp": tmp, "image": tmp / "image.png", "weights": googlenet_caffemodel.path,
            "weights_url": googlenet_caffemodel.path.as_uri(), "cuts": cuts,
            "top_class": googlenet_caffemodel.top_class}


def _fill(text: str, values: dict) -> str:
    return text.format(**{k: v for k, v in values.items() if isinstance(v, (str, Path))})


def _corrupt_cache(home: Path) -> None:
    (home / "weights").mkdir(parents=True)
    (home / "weights" / "googlenet.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")


@pytest.fixture(scope="module")
def batch(tmp_path_factory, inputs) -> Batch:
    """The successful one-shot commands."""
    batch = Batch(tmp_path_factory.mktemp("cli_runs"))
    batch.submit("classify", ["classify", inputs["image"], "--weights", inputs["weights"], "--top", "3"])
    batch.submit("version", ["--version"])
    batch.submit("devices", ["devices"])
    batch.submit("layers googlenet", ["layers", "googlenet"])
    batch.submit("layers vgg19", ["layers", "vgg19", "--size", "64"])
    batch.submit("weights list", ["weights", "list"])
    yield batch
    batch.close()


@pytest.fixture(scope="module")
def error_batch(tmp_path_factory, inputs) -> Batch:
    """The user errors (a batch of their own: their tests are in the slow tier)."""
    batch = Batch(tmp_path_factory.mktemp("cli_errors"))
    for i in range(TRUNCATIONS):
        batch.submit(f"truncated {i}", ["classify", inputs["image"], "--weights",
                                        inputs["tmp"] / f"truncated_{i}.caffemodel"])
    for name, (args, env, _) in ERROR_CASES.items():
        setup = _corrupt_cache if name == "verify corrupt cache" else None
        batch.submit(name, [_fill(a, inputs) for a in args], setup, **env)
    yield batch
    batch.close()


# --------------------------------------------------------------------------------------------
# Commands that work
# --------------------------------------------------------------------------------------------


def test_version(batch):
    result = batch["version"]
    assert_ok(result)
    assert result.stdout.strip() == f"jaxdream {__version__}"


def test_devices_lists_a_cpu(batch):
    result = batch["devices"]
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("backend: cpu")
    assert any(line.startswith("mesh: ") for line in lines), result.stdout
    assert any(re.match(r"^\s+\d+: cpu\b", line) for line in lines[1:]), result.stdout


def _layer_rows(stdout: str) -> dict[str, tuple[str, int]]:
    rows = {}
    for line in stdout.splitlines()[2:]:
        match = re.match(r"^(\S+)\s+(\d+ x \d+)\s+(\d+)$", line)
        if match:
            rows[match[1]] = (match[2], int(match[3]))
    return rows


def test_layers_googlenet(batch):
    result = batch["layers googlenet"]
    assert_ok(result)
    assert result.stdout.startswith("googlenet at 224x224:")
    rows = _layer_rows(result.stdout)
    assert rows["inception_4c/output"] == ("14 x 14", 512)
    assert rows["conv1/7x7_s2"] == ("112 x 112", 64)
    assert rows["inception_5b/output"] == ("7 x 7", 1024)


def test_layers_vgg19_small_input(batch):
    result = batch["layers vgg19"]
    assert_ok(result)
    assert result.stdout.startswith("vgg19 at 64x64:")
    rows = _layer_rows(result.stdout)
    assert rows["relu4_2"] == ("8 x 8", 512)
    assert rows["conv1_1"] == ("64 x 64", 64)


def test_classify_synthetic_weights(batch, inputs):
    result = batch["classify"]
    assert_ok(result)
    assert result.stderr == ""  # an explicit file is not compared with the published hash
    rows = parse_ranking(result.stdout)
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1] == inputs["top_class"] and rows[0][2] == "Egyptian cat"
    assert rows[0][3] > 0.5
    probs = [r[3] for r in rows]
    assert probs == sorted(probs, reverse=True)
    assert len({r[1] for r in rows}) == 3


def test_weights_list_with_empty_cache(batch):
    result = batch["weights list"]
    assert_ok(result)
    home = batch.homes["weights list"]
    assert f"cache: {home / 'weights'}" in result.stdout
    for key in registry.REGISTRY:
        assert re.search(rf"^{key}\s+model={key}", result.stdout, re.M)
    assert result.stdout.count("converted: no") == 2
    assert result.stdout.count("original:  not found") == 2
    assert files_under(home) == []


@pytest.mark.slow
def test_convert_then_verify(tmp_path, inputs):
    home = tmp_path / "jaxdream"
    env = cli_env(home)
    result = run_cli(["weights", "convert", "googlenet", inputs["weights"]], env)
    assert_ok(result)
    cached = home / "weights" / "googlenet.npz"
    assert f"googlenet: converted {inputs['weights']} -> {cached}" in result.stdout
    # a local copy whose hash differs from the published file: one warning line, no error
    assert [line for line in result.stderr.splitlines() if line] == [
        line for line in result.stderr.splitlines() if line.startswith("jaxdream: warning:")]
    assert "differs from the published" in result.stderr
    assert files_under(home) == ["weights/googlenet.json", "weights/googlenet.npz"]

    result = run_cli(["weights", "verify", "googlenet"], env)
    assert_ok(result)
    assert f"googlenet: {cached}: loads and fits googlenet" in result.stdout


# --------------------------------------------------------------------------------------------
# User errors: one line, non-zero exit, no traceback, nothing half-written
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_user_error(error_batch, inputs, name):
    _, _, needles = ERROR_CASES[name]
    home = error_batch.homes[name]
    values = dict(inputs, home=home)
    line = assert_one_error(error_batch[name], *(_fill(n, values) for n in needles))
    assert error_batch[name].returncode == 1, line
    left = files_under(home)
    if name == "verify corrupt cache":
        assert left == ["weights/googlenet.npz"]
    else:
        assert left == [], f"files left in the cache: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(TRUNCATIONS))
def test_truncated_caffemodel(error_batch, inputs, index):
    result = error_batch[f"truncated {index}"]
    assert_one_error(result, f"truncated_{index}.caffemodel")
    assert result.returncode == 1, f"cut at byte {inputs['cuts'][index]}"
    assert files_under(error_batch.homes[f"truncated {index}"]) == []


# --------------------------------------------------------------------------------------------
# Real weights (dev/CI checkout only)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_env(tmp_path_factory) -> dict[str, str]:
    if not (REAL_WEIGHTS / GOOGLENET_FILE).is_file():
        pytest.skip(f"{REAL_WEIGHTS / GOOGLENET_FILE} not present: real weights are only in the "
                    "dev/CI checkout")
    home = tmp_path_factory.mktemp("real") / "jaxdream"  # one cache: the conversion runs once
    return cli_env(home, JAXDREAM_WEIGHTS_DIR=str(REAL_WEIGHTS))


@pytest.mark.realweights
@pytest.mark.parametrize("image, expected", [("chelsea.png", "Egyptian cat"), ("coffee.png", "espresso")])
def test_classify_real_weights(real_env, image, expected):
    path = REAL_MEDIA / image
    if not path.is_file():
        pytest.skip(f"{path} not present: real media are only in the dev/CI checkout")
    result = run_cli(["classify", path, "--top", "3"], real_env)
    assert_ok(result)
    rows = parse_ranking(result.stdout)
    assert len(rows) == 3 and rows[0][2] == expected, result.stdout


def test_an_interrupt_swallowed_by_a_callback_is_raised_again(capsys):
    """Ctrl-C raised into the command's thread can land in a garbage-collector callback (JAX's
    ``_xla_gc_callback``), where Python prints "Exception ignored ... Traceback" and drops it;
    the command line's unraisable hook raises it again at the thread's next instruction."""
    import threading
    import time

    from jaxdream.jobs import command
    caught = []

    class Swallows:
        def __del__(self):
            raise KeyboardInterrupt

    def work():
        try:
            obj = Swallows()
            del obj  # the KeyboardInterrupt is "unraisable" here
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                pass
            caught.append("not raised")
        except KeyboardInterrupt:
            caught.append("raised")

    previous = sys.unraisablehook
    sys.unraisablehook = command._raise_again_if_swallowed
    try:
        worker = threading.Thread(target=work)
        worker.start()
        worker.join(60)
    finally:
        sys.unraisablehook = previous
    assert caught == ["raised"]
    assert "Exception ignored" not in capsys.readouterr().err
