"""examples/tpu.ipynb: a valid nbformat-4 notebook without outputs whose code runs end to end.

The code cells are executed in order in one namespace, without the shell and pip magics and
either without IPython or with a stand-in for ``IPython.display`` that records the previews, on
the CPU with tiny settings injected through the ``OVERRIDES`` that the settings cell applies: synthetic full-shape weights, a small synthetic photo and style image, outputs in
a temporary folder, nothing downloaded (``JAXDREAM_OFFLINE=1``).
"""

from __future__ import annotations

import json
import re
import sys
import types
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxdream import media

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "tpu.ipynb"
ID_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def load_notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def is_magic(line: str) -> bool:
    """A shell (``!``) or IPython magic (``%``, ``%%``) line, which plain Python cannot run."""
    return line.lstrip().startswith(("%", "!"))


def runnable_cells(nb: dict) -> list[tuple[int, str]]:
    """(index, Python source) of the code cells in order, magic lines removed; cells that
    start with a magic (``%pip``, ``%%bash``, ``!git``) are skipped whole."""
    out = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        text = source(cell)
        first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
        if is_magic(first):
            continue
        out.append((i, "\n".join(line for line in text.splitlines() if not is_magic(line))))
    return out


# --------------------------------------------------------------------------------------------
# the file itself
# --------------------------------------------------------------------------------------------


def test_notebook_is_nbformat4_without_outputs():
    nb = load_notebook()
    assert nb["nbformat"] == 4 and isinstance(nb["nbformat_minor"], int)
    assert isinstance(nb["metadata"], dict)
    assert nb["metadata"]["kernelspec"]["language"] == "python"
    ids = []
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert isinstance(cell["metadata"], dict)
        assert isinstance(cell["source"], (str, list))
        if isinstance(cell["source"], list):
            assert all(isinstance(line, str) for line in cell["source"])
        if nb["nbformat_minor"] >= 5:
            assert ID_PATTERN.match(cell["id"]), cell.get("id")
            ids.append(cell["id"])
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {cell.get('id')} has stored outputs"
            assert cell["execution_count"] is None, f"cell {cell.get('id')} has an execution count"
        else:
            assert "outputs" not in cell and "execution_count" not in cell
    assert len(ids) == len(set(ids)), "cell ids repeat"
    assert NOTEBOOK.stat().st_size < 50_000
    try:
        import nbformat
    except ImportError:
        pass
    else:
        nbformat.validate(nbformat.reads(NOTEBOOK.read_text(encoding="utf-8"), as_version=4))


def test_notebook_cells_and_install_placeholder():
    nb = load_notebook()
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert kinds[0] == "markdown" and kinds[-1] == "markdown"
    assert kinds.count("code") == 6
    # every code cell is Python once the magics are removed
    for i, text in runnable_cells(nb):
        compile(text, f"<tpu.ipynb cell {i}>", "exec")
    # the repository is named in one place, marked for editing, and used by the install line
    text = "".join(source(c) for c in nb["cells"])
    assert text.count("OWNER/jaxdream") == 1
    install = next(source(c) for c in nb["cells"] if "%pip install" in source(c))
    assert re.search(r'^REPO_URL = "https://github\.com/OWNER/jaxdream"\s+# <-- EDIT', install, re.M)
    assert "{REPO_URL}" in install and "jax[tpu]" in install
    assert all(is_magic(line) for line in install.splitlines() if "pip install" in line and
               not line.lstrip().startswith("#"))


# --------------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vgg19_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras VGG-19 .h5 with VGG-19's real shapes (the notebook loads the real network, and
    loads are validated against it) and random weights, about 80 MB."""
    from jaxdream.nets.vgg19 import BLOCKS, WIDTHS
    from jaxdream.weights.keras import write_keras_h5

    rng = np.random.default_rng(0)
    layers, cin = {}, 3
    for b, (n, width) in enumerate(zip(BLOCKS, WIDTHS), start=1):
        for i in range(1, n + 1):
            kernel = rng.standard_normal((3, 3, cin, width), dtype=np.float32) * np.float32(np.sqrt(2 / (9 * cin)))
            layers[f"block{b}_conv{i}"] = [kernel, (0.1 * rng.standard_normal(width)).astype(np.float32)]
            cin = width
    path = tmp_path_factory.mktemp("notebook_weights") / "vgg19_random.h5"
    write_keras_h5(path, layers)
    return path


def synthetic_image(path: Path, width: int, height: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    Image.fromarray(media.to_uint8(media.resize(coarse, (height, width)))).save(path)
    return path


class FakeIPython:
    """Stands in for ``IPython.display``: records what the notebook displays."""

    def __init__(self):
        self.shown: list[tuple[str, object]] = []
        self.module = types.ModuleType("IPython")
        self.module.display = types.ModuleType("IPython.display")
        self.module.display.display = self.display
        self.module.display.Image = lambda filename: ("Image", Path(filename))

    def display(self, obj, display_id=False):
        self.shown.append(("display", obj))
        return types.SimpleNamespace(update=lambda new: self.shown.append(("update", new))) if display_id else None


@pytest.mark.slow
@pytest.mark.parametrize("ipython", ["absent", "fake"])
def test_notebook_runs_with_tiny_settings(ipython, tmp_path, monkeypatch, jaxdream_home, googlenet_caffemodel,
                                          vgg19_h5):
    monkeypatch.setenv("JAXDREAM_OFFLINE", "1")

    def no_downloads(url, *args, **kwargs):
        raise AssertionError(f"the notebook tried to download {url}")

    monkeypatch.setattr(urllib.request, "urlretrieve", no_downloads)
    fake = FakeIPython()
    if ipython == "absent":
        monkeypatch.setitem(sys.modules, "IPython", None)  # plain Python: no previews
        monkeypatch.setitem(sys.modules, "IPython.display", None)
    else:
        monkeypatch.setitem(sys.modules, "IPython", fake.module)
        monkeypatch.setitem(sys.modules, "IPython.display", fake.module.display)
    out = tmp_path / "outputs"
    photo = synthetic_image(tmp_path / "photo.png", 80, 60, 1)
    style_image = synthetic_image(tmp_path / "style.png", 50, 50, 2)
    overrides = {
        "SIZE": 64, "STEPS": 1, "OCTAVES": 1, "ITERATIONS": 2, "CHUNK": 1, "FRAMES": 2,
        "ZOOM_SIZE": 64, "ZOOM_STEPS": 1,
        "GOOGLENET_WEIGHTS": str(googlenet_caffemodel.path), "VGG_WEIGHTS": str(vgg19_h5),
        "PHOTO": photo, "STYLE": style_image, "OUT": out,
    }
    ns: dict = {"__name__": "__main__", "OVERRIDES": dict(overrides)}
    for i, text in runnable_cells(load_notebook()):
        exec(compile(text, f"<tpu.ipynb cell {i}>", "exec"), ns)
        if "SIZE" in ns:  # from the settings cell on: every override is a setting, and applied
            for name, value in overrides.items():
                assert name in ns and ns[name] == value, f"{name} = {ns.get(name)!r} after cell {i}"
    assert (ns["display"] is None) == (ipython == "absent")
    height, width = media.fit_size(60, 80, 64)  # 48 x 64

    dream_png = out / "dream.png"
    assert ns["DREAM_PNG"] == dream_png and dream_png.is_file()
    with Image.open(dream_png) as im:
        assert im.size == (width, height)
    assert media.read_settings(dream_png)["steps"] == 1
    assert ns["dream_preview"].count == 1  # one preview per octave

    style_png = out / "style.png"
    assert ns["STYLE_PNG"] == style_png and style_png.is_file()
    with Image.open(style_png) as im:
        assert im.size == (width, height)
    assert ns["style_preview"].count == 2  # ITERATIONS / CHUNK chunks
    assert np.isfinite(ns["result"].losses["total"]).all()

    zoom_gif = out / "zoom.gif"
    assert ns["ZOOM_GIF"] == zoom_gif and zoom_gif.is_file()
    with Image.open(zoom_gif) as im:
        assert im.format == "GIF" and im.n_frames == 2 and im.size == (width, height)
    # nothing else written: no frames folder or temp files left, no downloads
    assert sorted(p.name for p in out.iterdir()) == ["dream.png", "style.png", "zoom.gif"]

    if ipython == "fake":
        # dream: its one octave; style: the first chunk, then the second in the same place;
        # then the GIF
        assert [kind for kind, _ in fake.shown] == ["display", "display", "update", "display"]
        previews = [obj for _, obj in fake.shown[:3]]
        assert all(isinstance(p, Image.Image) and p.size == (width, height) for p in previews)
        assert fake.shown[3][1] == ("Image", zoom_gif)
    else:
        assert fake.shown == []
