"""Preconditioned L-BFGS for style transfer: evaluations to reach plain L-BFGS's loss.

neural-style's L-BFGS starts every two-loop recursion from a scaled identity. A decorrelated
(Laplacian-pyramid) image parameterisation ``x = z0 + sum_k sqrt(w) U_k z_k`` is the same as
L-BFGS on the pixels with the initial inverse Hessian

    M = I + w * sum_{k=1..levels} U_k D_k

(``D_k``: the mean over 2^k x 2^k blocks, the image zero-padded to a multiple; ``U_k``: each
block mean repeated over its block; ``U_k D_k = 4^k D_k^T D_k`` is symmetric, so M is
symmetric positive definite). It lets a step move the low spatial frequencies up to
``1 + w * levels`` times as far as the highest ones. It is
:func:`jaxdream.optim.pyramid_preconditioner` (``--lbfgs-precondition``, the default of a
video's later frames); here it is patched into every L-BFGS iteration of a single picture.

Runs, in one process on the real VGG-19 and ``../shared/media``, plain L-BFGS for
``--evaluations`` evaluations, then each preconditioned variant until it reaches plain's final
loss (or the same number of evaluations), and prints the losses along the way and the
evaluations each needed, as a ratio to plain's.

    python benchmarks/precondition_bench.py [--size 128] [--init random] [--evaluations 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


from jaxdream import optim

from jaxdream.style import programs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_picture import add_picture_arguments, load_pictures, run  # noqa: E402


def _clear() -> None:
    programs.lbfgs_step.clear_cache()
    programs.lbfgs_chunk.clear_cache()


@contextlib.contextmanager
def preconditioned(precondition):
    """jaxdream's L-BFGS with ``precondition`` (None: neural-style's) inside the block."""
    original = optim.lbfgs_update
    optim.lbfgs_update = lambda *a, **k: original(*a, precondition=precondition, **k)
    _clear()  # the step and chunk programs trace the iteration they find
    try:
        yield
    finally:
        optim.lbfgs_update = original
        _clear()


def curve(pictures, args, precondition, target: float | None) -> dict[int, float]:
    """The loss by evaluation of one single-scale run, stopped at ``target`` if given."""
    with preconditioned(precondition):
        return run(*pictures, args.size, args.init, [args.size], 0, target, args.chunk, args.evaluations)["curve"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_picture_arguments(ap, 128)
    ap.add_argument("--init", default="random", choices=("random", "image"))
    ap.add_argument("--evaluations", type=int, default=1000)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--weights", default="1,2", help="the pyramid weights w to try, comma-separated")
    args = ap.parse_args()
    pictures = load_pictures(args)
    print(f"{args.content} styled by {args.style} at {args.size} px from {args.init}, "
          f"L-BFGS with 100 corrections (neural-style's settings)", flush=True)
    plain = curve(pictures, args, None, None)
    target = plain[max(plain)]
    marks = [k for k in sorted(plain) if k % max(args.evaluations // 10, 1) == 0 or k == max(plain)]
    print(f"  plain:  {' '.join(f'{k}:{plain[k]:.4g}' for k in marks)}", flush=True)
    for w in (float(v) for v in args.weights.split(",")):
        losses = curve(pictures, args, optim.pyramid_preconditioner(w, args.levels), target)
        last = max(losses)
        reached = losses[last] <= target
        print(f"  w={w:g}: {' '.join(f'{k}:{losses[k]:.4g}' for k in marks if k in losses)}", flush=True)
        print(f"    {'reached' if reached else 'did not reach'} plain's loss {target:.6g} after {last} evaluations: "
              f"{last / max(plain):.2f} of plain's", flush=True)


if __name__ == "__main__":
    main()
