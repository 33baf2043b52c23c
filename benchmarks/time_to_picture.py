"""Time to a finished picture: evaluations and seconds each strategy needs to reach the loss
neural-style's settings reach after 1000 L-BFGS evaluations.

The reference is neural-style's run: L-BFGS (100 corrections, one evaluation per iteration) for
1000 evaluations at ``--size`` from ``--init`` (``image``: the content image; ``random``), with
its loss weights and layers. Its final loss is computed once per (content, style, size, init)
and kept in ``benchmarks/data/time_to_picture.json`` (losses agree across CPUs to about 1e-4
relative; ``--recompute`` runs it again). Then each strategy runs until its full-size loss is at
most the reference's (checked every ``--chunk`` evaluations, at most 1000 full-size ones):

* ``plain``: the reference run itself (1000 evaluations by definition);
* ``c2f-sqrt2``: coarse-to-fine from 128 px in steps of sqrt(2) (crowsonkb's schedule),
  ``--coarse-iterations`` at every coarser scale;
* ``c2f-half``: one coarser scale at half the size (jaxdream's schedule above 512 px);
* ``content-init`` (for ``--init random`` only): start from the content image instead.

Prints the full-size evaluations, the full-size-equivalent evaluations of every scale (each
weighted by its pixels), the seconds, and each as a ratio to the reference, all in one run.

    python benchmarks/time_to_picture.py --size 256 [--inits image,random] [--save DIR]

Needs the real VGG-19 (``$JAXDREAM_WEIGHTS_DIR`` or the cache) and ``../shared/media``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path


import jaxdream
from jaxdream import media
from jaxdream.nets.network import load_network

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
DATA = Path(__file__).resolve().parent / "data" / "time_to_picture.json"
REFERENCE_EVALUATIONS = 1000


def sqrt2_scales(size: int, smallest: int = 128) -> list[int]:
    """128, 181, 256, ... up to ``size`` (the last step shorter if need be)."""
    scales, s = [], float(smallest)
    while round(s) < size:
        scales.append(round(s))
        s *= math.sqrt(2)
    return scales + [size]


def run(content, style, net, size: int, init, scales: list[int], coarse: int, target: float | None,
        chunk: int, limit: int) -> dict:
    """One strategy: the coarser scales' iterations in full, then the full size until the loss is
    at most ``target`` (None: run ``limit`` evaluations). ``curve``: the full-size loss after
    each chunk, by evaluation."""
    seen = {"final": 0, "loss": float("nan"), "pixels": {}, "curve": {}}

    def callback(p):
        seen["pixels"][p.scale] = (p.iteration, p.size[0] * p.size[1])
        if p.scale == p.scales - 1:
            seen["final"], seen["loss"] = p.iteration, float(p.losses["total"][0])
            seen["curve"][p.iteration] = seen["loss"]
            return target is not None and seen["loss"] <= target
        return False

    start = time.perf_counter()
    result = jaxdream.stylize(content, [style], network=net, size=size, init=init, scales=scales,
                              num_iterations=[coarse] * (len(scales) - 1) + [limit], chunk=chunk,
                              callback=callback, seed=0)
    full = seen["pixels"][len(scales) - 1][1]
    equivalent = sum(n * px / full for n, px in seen["pixels"].values())
    return {"evaluations": seen["final"], "equivalent": equivalent, "loss": seen["loss"],
            "seconds": time.perf_counter() - start, "image": result.image, "curve": seen["curve"],
            "reached": target is None or seen["loss"] <= target}


def add_picture_arguments(ap: argparse.ArgumentParser, size: int) -> None:
    """The content, style, size and chunk options shared with ``precondition_bench.py``."""
    ap.add_argument("--content", default="chelsea.png")
    ap.add_argument("--style", default="hubble_deep_field.png")
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--chunk", type=int, default=10)


def load_pictures(args) -> tuple:
    """(content, style, VGG-19 network) for :func:`add_picture_arguments`' options."""
    return media.load_image(MEDIA / args.content), media.load_image(MEDIA / args.style), load_network("vgg19")


def reference(key: str, args, content, style, net, init) -> dict:
    path = Path(args.data)
    data = json.loads(path.read_text()) if path.is_file() else {}
    if key in data and not args.recompute:
        print(f"  reference (kept): loss {data[key]['loss']:.6g} after {args.evaluations} evaluations, "
              f"{data[key]['seconds']:.0f} s when computed", flush=True)
        return data[key] | {"image": None}
    r = run(content, style, net, args.size, init, [args.size], 0, None, args.chunk, args.evaluations)
    data[key] = {"loss": r["loss"], "seconds": r["seconds"], "evaluations": args.evaluations}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"  reference: loss {r['loss']:.6g} after {args.evaluations} evaluations, {r['seconds']:.0f} s",
          flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_picture_arguments(ap, 512)
    ap.add_argument("--inits", default="image,random")
    ap.add_argument("--coarse-iterations", type=int, default=100)
    ap.add_argument("--recompute", action="store_true", help="run the reference again")
    ap.add_argument("--evaluations", type=int, default=REFERENCE_EVALUATIONS,
                    help="the reference's evaluations (1000: neural-style's; fewer for a quick check)")
    ap.add_argument("--data", default=str(DATA), help="where the reference losses are kept")
    ap.add_argument("--save", help="write each strategy's picture here")
    args = ap.parse_args()
    content, style, net = load_pictures(args)
    print(f"{args.content} styled by {args.style} at {args.size} px, neural-style's settings; "
          f"target: the loss after {args.evaluations} L-BFGS evaluations", flush=True)
    for init in args.inits.split(","):
        key = f"{args.content}|{args.style}|{args.size}|{init}|{args.evaluations}"
        print(f"init {init}:", flush=True)
        # compile every scale's program first, so that no strategy's seconds include compiling
        run(content, style, net, args.size, init, sqrt2_scales(args.size), 1, None, 1, 1)
        ref = reference(key, args, content, style, net, init)
        strategies = {"c2f-sqrt2": (sqrt2_scales(args.size), init),
                      "c2f-half": ([args.size // 2, args.size], init)}
        if init == "random":
            strategies["content-init"] = ([args.size], "image")
        rows = {"plain": {"evaluations": args.evaluations, "equivalent": args.evaluations,
                          "loss": ref["loss"], "seconds": ref["seconds"], "reached": True, "image": ref["image"]}}
        for name, (scales, start) in strategies.items():
            rows[name] = run(content, style, net, args.size, start, scales, args.coarse_iterations, ref["loss"],
                             args.chunk, args.evaluations)
            r = rows[name]
            print(f"  {name:13s} scales {scales}: {r['evaluations']} full-size evaluations "
                  f"({r['equivalent']:.0f} full-size equivalent), {r['seconds']:.0f} s, loss {r['loss']:.6g}"
                  f"{'' if r['reached'] else ' (did not reach the target)'}", flush=True)
        print(f"  {'strategy':13s} {'evals':>6s} {'/ plain':>8s} {'equiv':>6s} {'/ plain':>8s} {'seconds / plain':>16s}")
        for name, r in rows.items():
            print(f"  {name:13s} {r['evaluations']:6d} {r['evaluations'] / args.evaluations:8.2f} "
                  f"{r['equivalent']:6.0f} {r['equivalent'] / args.evaluations:8.2f} "
                  f"{r['seconds'] / ref['seconds']:16.2f}{'' if r['reached'] else '  not reached'}", flush=True)
            if args.save and r["image"] is not None:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                media.save_image(Path(args.save) / f"{Path(args.content).stem}_{init}_{name}.png", r["image"])


if __name__ == "__main__":
    main()
