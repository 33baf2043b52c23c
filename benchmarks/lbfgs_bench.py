"""The L-BFGS update against one evaluation of the style objective, at a full history.

neural-style keeps 100 corrections; once the history is full, every iteration's direction
reads all of it (2 x 100 x B x H x W x 3 floats, 630 MB at 512 px). This times, in
one process:

* ``evaluation``: the objective's loss and image gradient (VGG-19 to relu5_1, random weights
  of the real shapes: the speed does not depend on the values);
* ``update``: :func:`jaxdream.style.programs.lbfgs_apply` (history update, the direction in
  compact form from the stored inner products, :func:`jaxdream.optim.compact_direction`,
  step) with a full history;
* ``pair by pair``: the same update written as the textbook recursion, one dependent vector
  step per stored pair in a ``lax.fori_loop`` (jaxdream's form until 2026-12-02),

and prints the update's share of an L-BFGS iteration each way.

    python benchmarks/lbfgs_bench.py [--size 512] [--corrections 100]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dream_bench import random_params  # noqa: E402


from jaxdream.objectives import gatys  # noqa: E402

from jaxdream import optim  # noqa: E402

from jaxdream.style import programs  # noqa: E402


@functools.partial(jax.jit, donate_argnums=(0, 1))
def pair_by_pair(s_hist, y_hist, rho, g, step, g_prev, head, count, h_diag):
    """The textbook update with an (m, B, n) history: write the new pair, then two
    ``fori_loop``s over the pairs (Nocedal and Wright, algorithm 7.4)."""
    m = s_hist.shape[0]
    s, y = step, g - g_prev
    s_hist = lax.dynamic_update_index_in_dim(s_hist, s, head, 0)
    y_hist = lax.dynamic_update_index_in_dim(y_hist, y, head, 0)
    head = (head + 1) % m

    def newest_first(i, carry):
        q, alpha = carry
        j = (head - 1 - i) % m
        a = rho[j] * jnp.sum(s_hist[j] * q, -1)
        return q - a[:, None] * y_hist[j], alpha.at[i].set(a)

    q, alpha = lax.fori_loop(0, count, newest_first, (-g, jnp.zeros((m, g.shape[0]), g.dtype)))

    def oldest_first(k, r):
        i = count - 1 - k
        j = (head - 1 - i) % m
        b = rho[j] * jnp.sum(y_hist[j] * r, -1)
        return r + s_hist[j] * (alpha[i] - b)[:, None]

    d = lax.fori_loop(0, count, oldest_first, q * h_diag[:, None])
    return s_hist, y_hist, d


def median_seconds(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--corrections", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    size, m = args.size, args.corrections
    n = size * size * 3
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-100, 100, (1, size, size, 3)), jnp.float32)

    params = random_params("vgg19")
    obj = gatys.Objective()
    targets = gatys.prepare_targets(params, x[0], [x[0, ::-1]], [1.0], obj)
    weights = {k: jnp.float32(v)[None] for k, v in {"content": 5, "style": 100, "tv": 1e-3}.items()}
    vg = jax.jit(gatys.batched_value_and_grad(params, targets, weights, obj))
    evaluation = median_seconds(lambda: jax.block_until_ready(vg(x)), max(2, args.reps // 2))

    s_hist = rng.standard_normal((1, m, n)).astype(np.float32)
    y_hist = (0.5 * s_hist + 0.1 * rng.standard_normal((1, m, n))).astype(np.float32)
    rho = 1.0 / np.einsum("bmn,bmn->mb", s_hist, y_hist)
    g = jnp.asarray(rng.standard_normal((1, size, size, 3)), jnp.float32)
    state = optim.lbfgs_init(x, m)._replace(
        s_hist=jnp.asarray(s_hist), y_hist=jnp.asarray(y_hist), rho=jnp.asarray(rho),
        sy=jnp.asarray(np.einsum("bin,bjn->bij", s_hist, y_hist)), yy=jnp.asarray(np.einsum("bin,bjn->bij", y_hist, y_hist)),
        count=jnp.int32(m), iteration=jnp.int32(5))
    holder = {"state": state}

    def update():
        holder["state"] = jax.block_until_ready(
            programs.lbfgs_apply(holder["state"], jnp.ones((1,)), jnp.ones((1, 3)), g, jnp.float32(1)))
    new = median_seconds(update, args.reps)
    del holder

    old_state = {"s": jnp.asarray(np.swapaxes(s_hist, 0, 1)), "y": jnp.asarray(np.swapaxes(y_hist, 0, 1))}
    del s_hist, y_hist
    flat_g, step = g.reshape(1, -1), jnp.asarray(rng.standard_normal((1, n)), jnp.float32)

    def textbook():
        s, y, d = pair_by_pair(old_state["s"], old_state["y"], jnp.asarray(rho), flat_g, step,
                               jnp.zeros_like(flat_g), jnp.int32(7), jnp.int32(m), jnp.ones((1,)))
        old_state["s"], old_state["y"] = s, y
        jax.block_until_ready(d)
    old = median_seconds(textbook, args.reps)

    print(f"{size}x{size} px, {m} corrections (history {2 * m * n * 4 / 2**20:.0f} MB), jax {jax.__version__}, "
          f"{jax.devices()[0].platform}")
    print(f"  evaluation (loss and gradient)     {evaluation:8.3f} s")
    print(f"  update, compact form               {new:8.3f} s  ({new / (evaluation + new):.0%} of an iteration)")
    print(f"  update, pair by pair               {old:8.3f} s  ({old / (evaluation + old):.0%} of an iteration)")
    print(f"  pair by pair / compact form: {old / new:.2f}x; L-BFGS iteration "
          f"{(evaluation + new) / (evaluation + old):.2f} of the pair-by-pair one")


if __name__ == "__main__":
    main()
