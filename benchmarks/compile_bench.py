"""Compile time against run time: XLA settings, and what a default dream spends compiling.

For each XLA setting (jaxdream's, see :mod:`jaxdream.runtime.xla_flags`, and XLA's own default) a fresh
process per repetition measures, in process CPU seconds (steadier than wall time on a shared
machine):

* compiling the DeepDream step program (GoogLeNet to inception_4c) at the four octave shapes
  of a default 512 px dream, and one step at each;
* the first L-BFGS step of the style objective at 256 px (compile included) and a later one.

Then it prints the ratios (jaxdream's setting / XLA's default) and the share of a cold default
dream's CPU time that goes to compiling (4 octaves x 10 steps). Random weights of the real
shapes: the speed does not depend on the values.

    python benchmarks/compile_bench.py [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child() -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from dream_bench import random_params


    from jaxdream.objectives import gatys

    from jaxdream import optim

    from jaxdream.style import programs
    from jaxdream.dream import Objective, Schedule, ascent_step, octave_shapes

    params = random_params("googlenet")
    obj = Objective("googlenet", ("inception_4c/output",), None, "l2", None, "max", "float32")
    sched = Schedule(1, 32, "mean", 4, 512, 4, None)
    dream = []
    for hw in octave_shapes(512, 512, 4, 1.4, 1):
        img = jnp.asarray(np.random.default_rng(0).uniform(0, 255, (*hw, 3)), jnp.float32)
        args = (params, img, jax.random.key(0), np.int32(0), jnp.ones(1), jnp.float32(1.5), None)
        t = time.process_time()
        compiled = ascent_step.lower(*args, obj=obj, sched=sched).compile()
        compile_s = time.process_time() - t
        jax.block_until_ready(compiled(*args))
        t = time.process_time()
        for _ in range(2):
            jax.block_until_ready(compiled(*args))
        dream.append({"shape": hw, "compile_s": compile_s, "step_s": (time.process_time() - t) / 2})
    vparams = random_params("vgg19")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-120, 135, (256, 256, 3)), jnp.float32)
    sobj = gatys.Objective()
    targets = gatys.prepare_targets(vparams, x, [x[::-1]], [1.0], sobj)
    w = {k: jnp.float32(v)[None] for k, v in {"content": 5, "style": 100, "tv": 1e-3}.items()}
    state = optim.lbfgs_init(x[None], 100)
    t = time.process_time()
    state = jax.block_until_ready(programs.lbfgs_step(state, vparams, targets, w, jnp.float32(1), spec=sobj))
    first = time.process_time() - t
    t = time.process_time()
    state = jax.block_until_ready(programs.lbfgs_step(state, vparams, targets, w, jnp.float32(1), spec=sobj))
    return {"flags": os.environ.get("XLA_FLAGS", ""), "dream": dream, "style_first_s": first,
            "style_step_s": time.process_time() - t, "style_loss": float(state.losses[0, 0])}


def _spawn(keep: bool) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if keep:
        env["JAXDREAM_KEEP_XLA_FLAGS"] = "1"
    else:
        env.pop("JAXDREAM_KEEP_XLA_FLAGS", None)
    out = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(child()))
        return
    runs = {"xla default": [], "jaxdream": []}
    for _ in range(a.reps):
        for label in runs:  # interleaved
            runs[label].append(_spawn(keep=label == "xla default"))
    summary = {}
    for label, rs in runs.items():
        compile_s = min(sum(d["compile_s"] for d in r["dream"]) for r in rs)
        steps_s = min(sum(d["step_s"] for d in r["dream"]) for r in rs) * 10
        summary[label] = (compile_s, steps_s, min(r["style_first_s"] for r in rs),
                          min(r["style_step_s"] for r in rs))
        print(f"{label:12} ({rs[0]['flags'] or 'no XLA_FLAGS'}): dream compile 4 octaves {compile_s:.1f} CPU-s, "
              f"40 steps {steps_s:.1f} CPU-s (compile share of a cold run {compile_s / (compile_s + steps_s):.0%}); "
              f"style 256 px first step {summary[label][2]:.2f}, later step {summary[label][3]:.2f} CPU-s; "
              f"style loss {rs[0]['style_loss']:.7g}")
    (c0, s0, f0, l0), (c1, s1, f1, l1) = summary["xla default"], summary["jaxdream"]
    print(f"jaxdream / xla default: dream compile {c1 / c0:.2f}, dream steps {s1 / s0:.2f}, "
          f"style first step {f1 / f0:.2f}, style later step {l1 / l0:.2f}")


if __name__ == "__main__":
    main()
