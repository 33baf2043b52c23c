"""Preconditioned L-BFGS for style transfer: evaluations to reach plain L-BFGS's loss.

neural-style's L-BFGS starts every two-loop recursion from a scaled identity. A decorrelated
(Laplacian-pyramid) image parameterisation ``x = z0 + sum_k sqrt(w) U_k z_k`` is the same as
L-BFGS on the pixels with the initial inverse Hessian

    M = I + w * sum_{k=1..levels} U_k D_k

(``D_k``: the mean over 2^k x 2^k blocks, the image zero-padded to a multiple; ``U_k``: each
block mean repeated over its block; ``U_k D_k = 4^k D_k^T D_k`` is symmetric, so M is
symmetric positive definite). It lets a step move the low spatial frequencies up to
``1 + w * levels`` times as far as the highest ones.

Runs, in one process on the real VGG-19 and ``../shared/media``, plain L-BFGS for
``--evaluations`` evaluations, then each preconditioned variant until it reaches plain's final
loss (or the same number of evaluations), and prints the losses along the way and the
evaluations each needed, as a ratio to plain's.

    python benchmarks/precondition_bench.py [--size 128] [--init random] [--evaluations 1000]
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import jax.numpy as jnp

import jaxdream
from jaxdream import media, style
from jaxdream.network import load_network

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def pyramid_preconditioner(levels: int, weight: float):
    """``M v = v + weight * sum_k U_k D_k v`` on a batch of images (B, H, W, C)."""
    def apply(v):
        b, h, w, c = v.shape
        out = v
        for k in range(1, levels + 1):
            f = 2 ** k
            hp, wp = -(-h // f) * f, -(-w // f) * f
            padded = jnp.pad(v, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
            means = padded.reshape(b, hp // f, f, wp // f, f, c).mean(axis=(2, 4))
            out = out + weight * jnp.repeat(jnp.repeat(means, f, axis=1), f, axis=2)[:, :h, :w]
        return out
    return apply


def _clear() -> None:
    style.lbfgs_step.clear_cache()
    style.lbfgs_chunk.clear_cache()


def run(content, style_image, net, args, precondition, target: float | None) -> dict:
    """One L-BFGS run; ``precondition`` None is neural-style's. Stops at ``target`` if given."""
    original = style._lbfgs_iteration
    style._lbfgs_iteration = functools.partial(original, precondition=precondition)
    _clear()  # the step and chunk programs trace the iteration they find
    curve: dict[int, float] = {}

    def callback(p):
        curve[p.iteration] = float(p.losses["total"][0])
        return target is not None and curve[p.iteration] <= target
    try:
        jaxdream.stylize(content, [style_image], network=net, size=args.size, init=args.init, scales=[args.size],
                         num_iterations=[args.evaluations], chunk=args.chunk, callback=callback, seed=0)
    finally:
        style._lbfgs_iteration = original
        _clear()
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--content", default="chelsea.png")
    ap.add_argument("--style", default="hubble_deep_field.png")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--init", default="random", choices=("random", "image"))
    ap.add_argument("--evaluations", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--weights", default="1,2", help="the pyramid weights w to try, comma-separated")
    args = ap.parse_args()
    content = media.load_image(MEDIA / args.content)
    style_image = media.load_image(MEDIA / args.style)
    net = load_network("vgg19")
    print(f"{args.content} styled by {args.style} at {args.size} px from {args.init}, "
          f"L-BFGS with 100 corrections (neural-style's settings)", flush=True)
    plain = run(content, style_image, net, args, None, None)
    target = plain[max(plain)]
    marks = [k for k in sorted(plain) if k % max(args.evaluations // 10, 1) == 0 or k == max(plain)]
    print(f"  plain:  {' '.join(f'{k}:{plain[k]:.4g}' for k in marks)}", flush=True)
    for w in (float(v) for v in args.weights.split(",")):
        curve = run(content, style_image, net, args, pyramid_preconditioner(args.levels, w), target)
        last = max(curve)
        reached = curve[last] <= target
        print(f"  w={w:g}: {' '.join(f'{k}:{curve[k]:.4g}' for k in marks if k in curve)}", flush=True)
        print(f"    {'reached' if reached else 'did not reach'} plain's loss {target:.6g} after {last} evaluations: "
              f"{last / max(plain):.2f} of plain's", flush=True)


if __name__ == "__main__":
    main()
