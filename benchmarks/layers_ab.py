"""The DeepDream step with GoogLeNet's layers from another git revision, alternating in one process.

Timing fresh processes on a shared 2-core machine moves by 10-20% from one minute to the next,
more than a change to a layer usually gains. This benchmark loads ``jaxdream/models/common.py``
(max pooling, LRN) as it is at ``--baseline`` next to the working tree's, compiles the DeepDream
step (``dream._ascent_body``, GoogLeNet to inception_4c, random weights of the real shapes) with
each, and then calls the two programs alternately, so both see the same machine. It prints the
median seconds per step at each size and the ratio working tree / baseline (below 1: faster).

    python benchmarks/layers_ab.py --baseline HEAD~1 [--sizes 307,512] [--reps 30]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peer_compare import _googlenet_params  # noqa: E402

import jaxdream.nets.googlenet as googlenet  # noqa: E402
from jaxdream.dream import Objective, Schedule, _ascent_body  # noqa: E402


def baseline_module(revision: str, folder: str):
    """``jaxdream/models/common.py`` at ``revision``, loaded as a module of its own."""
    text = subprocess.run(["git", "show", f"{revision}:jaxdream/models/common.py"], cwd=HERE.parent,
                          check=True, capture_output=True, text=True).stdout
    path = Path(folder) / "baseline_common.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("baseline_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_program(layers, params, obj, image):
    """The ascent step with ``layers``' pooling and LRN, compiled and run once on ``image``.
    GoogLeNet looks the layers up when it is traced, so the program is traced here, before
    another program swaps them."""
    key, weights, lr = jax.random.key(0), jnp.ones((1,), jnp.float32), jnp.float32(1.5)
    googlenet.caffe_max_pool, googlenet.lrn_across_channels = layers.caffe_max_pool, layers.lrn_across_channels
    program = jax.jit(lambda im, i: _ascent_body(params, im, key, i, weights, lr, None, obj, Schedule(steps=1), None))
    jax.block_until_ready(program(image, 0))
    return program


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="a git revision, e.g. HEAD~1")
    ap.add_argument("--sizes", default="307,512")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    current = importlib.import_module("jaxdream.nets.common")
    params, obj = _googlenet_params(), Objective()
    total = {"baseline": 0.0, "working tree": 0.0}
    with tempfile.TemporaryDirectory() as folder:
        base = baseline_module(args.baseline, folder)
        for size in (int(s) for s in args.sizes.split(",")):
            image = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (size, size, 3)), jnp.float32)
            programs = {"baseline": step_program(base, params, obj, image),
                        "working tree": step_program(current, params, obj, image)}
            times = {name: [] for name in programs}
            for i in range(args.reps):
                for name, program in programs.items():
                    start = time.perf_counter()
                    jax.block_until_ready(program(image, i))
                    times[name].append(time.perf_counter() - start)
            medians = {name: float(np.median(t)) for name, t in times.items()}
            for name in total:
                total[name] += medians[name]
            print(f"{size} px: baseline {medians['baseline']:.4f} s, working tree {medians['working tree']:.4f} s, "
                  f"ratio {medians['working tree'] / medians['baseline']:.3f}", flush=True)
    print(f"sum over the sizes: ratio working tree / {args.baseline} "
          f"{total['working tree'] / total['baseline']:.3f}")


if __name__ == "__main__":
    main()
