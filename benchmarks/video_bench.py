"""Video benchmark: temporal consistency, work and speed of ``jaxdream video --style`` variants.

For each clip it stylises the same frames with the real VGG-19 in these ways, all in one run:

* ``independent``: every frame on its own like frame 0 (the baseline of the ratios);
* ``short-term``: the previous stylised frame warped in as init and temporal target (default);
* ``long-term``: ``--temporal-frames 1,2,4`` (Ruder et al. 2018), default (normalize) weights;
* ``long-closest``: the same with ``--long-term-weights closest-first`` (artistic-videos' default);
* ``multi-pass``: ``--passes N`` (forward, backward, ...);
* ``plain-lbfgs``: short-term with ``--lbfgs-precondition 0`` (the later frames' L-BFGS
  without its pyramid preconditioner);
* ``adaptive``: short-term with the relative-loss stopping rule of ``--tol-loss-relative``
  (when the installed jaxdream has it) against the fixed ``--iterations`` budget; the
  adaptive lines also compare with ``plain-lbfgs`` when it ran.

and prints for each: the short-term temporal error (mean squared difference of consecutive
output frames after warping, over reliable pixels), the long-term temporal error (frame t
against frame t-GAP warped through the chained flows, over pixels reliable along the whole
chain: :func:`jaxdream.flow.chain_flows`), seconds and evaluations per later frame, and the
final loss, each also as a ratio to the independent frames (errors) or to short-term (work,
loss). The flows used for the measures are computed once from the input frames.

    python benchmarks/video_bench.py                              # bigbuckbunny, pan, moving_object
    python benchmarks/video_bench.py --clips bigbuckbunny.mp4 --size 160 --frames 24

Needs the real VGG-19 weights (``$JAXDREAM_WEIGHTS_DIR`` or the cache) and ``../shared/media``.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxdream import flow, media
from jaxdream import video as vd
from jaxdream.nets.network import load_network

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def measures(outs: list[np.ndarray], links: list, gap: int) -> tuple[float, float]:
    """(short-term, long-term) temporal error of output frames; ``links[t] = (flow t->t-1,
    mask of t)`` for t >= 1."""
    short = [flow.temporal_error(outs[t - 1], outs[t], *links[t]) for t in range(1, len(outs))
             if float(np.sum(links[t][1])) > 0]
    long = []
    for t in range(gap, len(outs)):
        chained, mask = flow.chain_flows([links[t - k][0] for k in range(gap)],
                                         [links[t - k][1] for k in range(gap)])
        if float(np.sum(mask)) > 0.01 * mask.size:
            long.append(flow.temporal_error(outs[t - gap], outs[t], chained, mask))
    return float(np.mean(short)), float(np.mean(long)) if long else float("nan")


def run(clip: Path, net, style: Path, settings: vd.VideoSettings, maker_kw: dict, work: Path,
        name: str) -> dict:
    maker = vd.StyleFrames([style], network=net, **maker_kw)
    losses, evals = [], []

    def progress(p):
        losses.append(p.loss)
        evals.append(getattr(maker, "iterations_run", None))
    t0 = time.perf_counter()
    result = vd.process(clip, work / name, maker, settings, progress=progress)
    wall = time.perf_counter() - t0
    outs = [media.load_image(p) for p in sorted((work / name).glob("frame_*.png"))]
    n = len(outs)
    later = [e for e in evals[-(n - 1):] if e is not None] if n > 1 else []
    frame_losses = [v for v in losses[-(n - 1):] if v is not None] if n > 1 else []
    return {"outs": outs, "seconds": result.seconds_per_frame, "wall": wall,
            "evals": float(np.mean(later)) if later else float("nan"), "later_evals": later,
            "loss": float(np.mean(frame_losses)) if frame_losses else float("nan"), "frame_losses": frame_losses}


def independent(clip: Path, net, style: Path, size: int, frames: int, maker_kw: dict) -> dict:
    maker = vd.StyleFrames([style], network=net, **maker_kw)
    outs, seconds = [], []
    for i, frame in enumerate(media.VideoReader(clip, size, 0, frames)):
        t0 = time.perf_counter()
        maker.index = i
        maker.independent(frame)
        outs.append(maker.picture)  # the frame process() would write
        seconds.append(time.perf_counter() - t0)
    return {"outs": outs, "seconds": seconds, "evals": float(maker_kw["iterations_first"]), "loss": float("nan")}


def along_clip(a: dict, ref: dict, parts: int = 3) -> str:
    """Loss ratio and evaluations of run ``a`` against ``ref`` (same frames) in the first,
    middle and last third of the later frames: does a gap build up along the clip?"""
    ratio = np.asarray(a["frame_losses"]) / np.asarray(ref["frame_losses"])
    evals = np.asarray(a["later_evals"], float)
    return ", ".join(f"frames {int(i[0]) + 1}-{int(i[-1]) + 1}: loss {ratio[i].mean():.3f}x, "
                     f"{evals[i].mean():.1f} evaluations"
                     for i in np.array_split(np.arange(len(ratio)), parts) if len(i))


def adaptive_variant(tol: str | None, key: str) -> tuple[str, dict]:
    """Label and StyleFrames arguments of an adaptive run from a ``--tol`` entry: ``None`` or
    ``default`` (the library's defaults), ``TOL`` or ``TOL/INTERVAL``."""
    if tol is None or tol == "default":
        return "adaptive", {}
    value, _, every = tol.partition("/")
    kw = {key: float(value)} | ({f"{key}_interval": int(every)} if every else {})
    return f"adaptive {float(value):g}" + (f"/{int(every)}" if every else ""), kw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="bigbuckbunny.mp4,pan.mp4,moving_object.mp4")
    ap.add_argument("--style", default=str(MEDIA / "hubble_deep_field.png"))
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--iterations-first", type=int, default=200)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--gap", type=int, default=10, help="frames between the two of the long-term error")
    ap.add_argument("--tol", default=None, help="--tol-loss-relative of the adaptive run, or several "
                                                "comma-separated, each 'default' (the library's video "
                                                "defaults, also when not given) or TOL or TOL/INTERVAL "
                                                "(--tol-loss-relative-interval too)")
    ap.add_argument("--budgets", default="", help="comma-separated smaller fixed budgets of later frames to run "
                                                  "as well (e.g. 50: is a stopping rule better than a smaller budget?)")
    ap.add_argument("--skip", default="", help="comma-separated variants to leave out")
    args = ap.parse_args()
    net = load_network("vgg19")
    maker_kw = dict(iterations_first=args.iterations_first, iterations=args.iterations, first_init="content")
    params = inspect.signature(vd.StyleFrames).parameters
    adaptive_key = "tol_loss_relative" if "tol_loss_relative" in params else None
    skip = set(filter(None, args.skip.split(",")))
    print(f"VGG-19 real weights; {args.size} px; {args.frames} frames; first frame {args.iterations_first} "
          f"iterations, later frames {args.iterations}; long-term gap {args.gap}")
    for name in args.clips.split(","):
        clip = MEDIA / name
        if not clip.is_file():
            print(f"{name}: not found in {MEDIA}, skipped")
            continue
        frames = [f for f in media.VideoReader(clip, args.size, 0, args.frames)]
        fw, masks = flow.pair_flows(frames[1:], frames[:-1])
        links = [None] + list(zip(fw, masks))
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            base = vd.VideoSettings(size=args.size, end=args.frames)
            variants = {"short-term": (base, {}),
                        "long-term": (vd.VideoSettings(size=args.size, end=args.frames, temporal_frames=(1, 2, 4)), {}),
                        "long-closest": (vd.VideoSettings(size=args.size, end=args.frames, temporal_frames=(1, 2, 4),
                                                          long_term_weights="closest-first"), {}),
                        f"multi-pass {args.passes}": (vd.VideoSettings(size=args.size, end=args.frames,
                                                                       passes=args.passes), {})}
            if "lbfgs_precondition" in params:  # the later frames' L-BFGS without its preconditioner
                variants["plain-lbfgs"] = (base, {"lbfgs_precondition": 0.0})
            if adaptive_key:
                for tol in (args.tol.split(",") if args.tol else [None]):
                    label, kw = adaptive_variant(tol, adaptive_key)
                    variants[label] = (base, kw)
            for n in filter(None, args.budgets.split(",")):
                variants[f"fixed {int(n)}"] = (base, {"iterations": int(n)})
            fixed = {adaptive_key: 0.0} if adaptive_key else {}
            results = {}
            if "independent" not in skip:
                results["independent"] = independent(clip, net, Path(args.style), args.size, args.frames,
                                                     maker_kw | fixed)
            for label, (settings, extra) in variants.items():
                if label.split()[0] in skip or label in skip:
                    continue
                kw = maker_kw | (extra if label.startswith("adaptive") else fixed | extra)
                results[label] = run(clip, net, Path(args.style), settings, kw, work,
                                     label.replace(" ", "_").replace(".", "p").replace("/", "_"))
                r = results[label]
                print(f"  done {label}: {r['evals']:.1f} evaluations per later frame, loss {r['loss']:.6g}, "
                      f"short/long error {measures(r['outs'], links, args.gap)}", flush=True)
        print(f"\n{name}: {len(frames)} frames at {frames[0].shape[1]}x{frames[0].shape[0]}")
        print(f"  {'variant':<14} {'short err':>10} {'ratio':>6} {'long err':>10} {'ratio':>6} "
              f"{'s/frame':>8} {'evals/frame':>11} {'loss/short':>10}")
        errs = {k: measures(v["outs"], links, args.gap) for k, v in results.items()}
        ref = errs.get("independent", (np.nan, np.nan))
        short_ref = results.get("short-term", {})
        for k, v in results.items():
            s, lg = errs[k]
            later = v["seconds"][1:] if len(v["seconds"]) > 1 else v["seconds"]
            loss_ratio = v["loss"] / short_ref["loss"] if short_ref and np.isfinite(v["loss"]) else float("nan")
            print(f"  {k:<14} {s:>10.1f} {s / ref[0]:>6.2f} {lg:>10.1f} {lg / ref[1]:>6.2f} "
                  f"{np.mean(later):>8.2f} {v['evals']:>11.1f} {loss_ratio:>10.3f}")
        for k in ("long-term", "long-closest"):
            if k in errs and "short-term" in errs:
                print(f"  {k} / short-term: long error {errs[k][1] / errs['short-term'][1]:.2f}x "
                      f"(target <= 0.7), short error {errs[k][0] / errs['short-term'][0]:.2f}x (target <= 1)")
        if "plain-lbfgs" in results and "short-term" in results:
            p, st = results["plain-lbfgs"], results["short-term"]
            print(f"  short-term (preconditioned L-BFGS) / plain L-BFGS: loss {st['loss'] / p['loss']:.3f}x, "
                  f"short error {errs['short-term'][0] / errs['plain-lbfgs'][0]:.2f}x")
        for k in (k for k in results if k.startswith(("adaptive", "fixed "))):
            if "short-term" in results:
                a, st = results[k], results["short-term"]
                print(f"  {k} / fixed: evaluations {st['evals'] / a['evals']:.2f}x fewer (target >= 2), "
                      f"short error {errs[k][0] / errs['short-term'][0]:.2f}x (target <= 1.1), "
                      f"loss {a['loss'] / st['loss']:.3f}x (target within 5%)")
                print(f"    along the clip: {along_clip(a, st)}")
            if "plain-lbfgs" in results:
                a, p = results[k], results["plain-lbfgs"]
                print(f"  {k} / fixed plain L-BFGS: evaluations {p['evals'] / a['evals']:.2f}x fewer, "
                      f"short error {errs[k][0] / errs['plain-lbfgs'][0]:.2f}x, loss {a['loss'] / p['loss']:.3f}x")


if __name__ == "__main__":
    main()
