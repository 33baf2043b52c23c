"""``jaxdream warmup`` compiles exactly the programs a later dream loads from the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SCRIPT, cli_env

from jaxdream.errors import SettingsError

# Runs the CLI in a fresh process and prints how many XLA programs came from the disk cache.
COUNT_HITS = """
import json, sys
from jax import monitoring
hits = []
monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name.endswith("compilation_cache/cache_hits") else None)
from jaxdream.cli.main import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "hits": len(hits)}))
"""


def _cli(args, home, *, count=False):
    """Run ``jaxdream ARGS`` (with ``count``: in-process behind a cache-hit counter) outside the
    checkout, so that the installed package is the one imported."""
    env = cli_env(Path(home))
    cmd = [sys.executable, "-c", COUNT_HITS, *args] if count else [SCRIPT, *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=Path(home).parent)
    return out, (json.loads(out.stdout.strip().splitlines()[-1]) if count and out.returncode == 0 else None)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from jaxdream import media
    path = tmp_path_factory.mktemp("warmup") / "photo.png"
    media.save_image(path, np.random.default_rng(0).uniform(0, 255, (90, 120, 3)).astype(np.float32))
    return path


@pytest.mark.slow
def test_a_dream_after_warmup_loads_every_octave_program(tmp_path, image, googlenet_caffemodel):
    home = tmp_path / "home"
    dream = ["dream", str(image), "--octaves", "2", "--steps", "1", "--weights", str(googlenet_caffemodel.path),
             "--quiet"]
    cold, counted = _cli([*dream, "-o", str(tmp_path / "cold.png")], tmp_path / "other_home", count=True)
    assert cold.returncode == 0, cold.stderr
    assert counted["hits"] == 0
    out, _ = _cli(["warmup", str(image), "--octaves", "2"], home)
    assert out.returncode == 0, out.stderr
    assert "compiling 120x90: octave 86x64" in out.stderr and "ready: 2 programs for 1 sizes" in out.stderr
    warm, counted = _cli([*dream, "-o", str(tmp_path / "warm.png")], home, count=True)
    assert warm.returncode == 0, warm.stderr
    assert counted["hits"] == 2  # both octave programs came from warmup's compile
    from jaxdream import media
    np.testing.assert_array_equal(media.load_image(tmp_path / "warm.png"), media.load_image(tmp_path / "cold.png"))


def test_warmup_needs_no_weights_and_refuses_a_guide(tmp_path, image):
    out, _ = _cli(["warmup", str(image), "--octaves", "1", "--guide", str(image)], tmp_path / "home")
    assert out.returncode == 1
    assert out.stderr.strip() == "jaxdream: error: warmup prepares unguided dreams; leave out --guide"
    assert not (tmp_path / "home" / "weights").exists()


@pytest.mark.slow
def test_bad_aspect_and_images_with_aspects(tmp_path, image):
    out, _ = _cli(["warmup", "--aspects", "4:0"], tmp_path / "home")
    assert out.returncode == 1 and "an aspect ratio is written like 4:3, got '4:0'" in out.stderr
    assert "Traceback" not in out.stderr
    out, _ = _cli(["warmup", str(image), "--aspects", "1:1"], tmp_path / "home")
    assert out.returncode == 1 and "--aspects is for a warmup without images" in out.stderr


def test_dry_run_compiles_nothing(tmp_path):
    out, _ = _cli(["warmup", "--aspects", "4:3,1:1", "--size", "256", "--dry-run"], tmp_path / "home")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "would compile the dream programs for 256x192, 256x256"
    assert not (tmp_path / "home").exists()  # nothing compiled, no cache written


def test_aspect_sizes():
    from jaxdream.warmup import aspect_sizes
    assert aspect_sizes(512, ["1:1", "4:3", "9:16"]) == [(512, 512), (384, 512), (512, 288)]
    with pytest.raises(SettingsError):
        aspect_sizes(512, ["wide"])


def test_abstract_network_has_the_real_parameter_shapes():
    import jax

    from jaxdream.nets.network import param_shapes
    from jaxdream.warmup import abstract_network
    net = abstract_network("googlenet")
    leaves = jax.tree_util.tree_leaves_with_path(net.params)
    shapes = {"/".join(k.key for k in path[1:]): leaf.shape for path, leaf in leaves}
    assert shapes == param_shapes("googlenet")
