"""Video benchmark: temporal consistency and speed of ``jaxdream video`` on the shared clips.

For each clip, stylises the frames with the previous-frame-warped init and the temporal loss
(this run) and, in the same run, each frame independently like frame 0 (the baseline), and
prints the mean temporal warping error of both (lower is smoother), their ratio (target: at
most 0.5), and the seconds per frame after the first. Also times the optical flow alone.

    python benchmarks/video_bench.py                       # pan.mp4 and moving_object.mp4
    python benchmarks/video_bench.py --size 96 --frames 12 --iterations-first 60 --iterations 20

Needs the real VGG-19 weights (``$JAXDREAM_WEIGHTS_DIR`` or the cache) and ``../shared/media``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxdream import flow, media
from jaxdream import video as vd
from jaxdream.network import load_network

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def flow_seconds(clip: Path, size: int, pairs: int = 5) -> float:
    frames = []
    for i, f in enumerate(media.VideoReader(clip, size)):
        frames.append(f)
        if i > pairs:
            break
    flow.forward_backward(frames[1], frames[0])[0].block_until_ready()  # compile
    t = time.perf_counter()
    for a, b in zip(frames[1:], frames[:-1]):
        fw, bw = flow.forward_backward(a, b)
        np.asarray(flow.occlusion_mask(fw, bw))
    return (time.perf_counter() - t) / (len(frames) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="pan.mp4,moving_object.mp4")
    ap.add_argument("--style", default=str(MEDIA / "hubble_deep_field.png"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--iterations-first", type=int, default=100)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--first-init", default="random",
                    help="init of frame 0 and of every independent frame (default random)")
    ap.add_argument("--temporal-weight", type=float, default=1e3)
    args = ap.parse_args()
    net = load_network("vgg19")
    print(f"style {Path(args.style).name}, {args.size} px, {args.frames} frames, "
          f"iterations {args.iterations_first} first / {args.iterations} later, "
          f"first init {args.first_init}, temporal weight {args.temporal_weight:g}")
    for name in args.clips.split(","):
        clip = MEDIA / name
        print(f"\n{name}: flow (forward + backward + mask) {flow_seconds(clip, args.size):.3f} s per pair")
        maker = vd.StyleFrames([args.style], iterations_first=args.iterations_first,
                               iterations=args.iterations, temporal_weight=args.temporal_weight,
                               first_init=args.first_init, network=net)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            result = vd.process(clip, Path(tmp) / "out.mp4", maker,
                                vd.VideoSettings(size=args.size, end=args.frames),
                                compare_independent=True)
            total = time.perf_counter() - t
        later = result.seconds_per_frame[1:]
        print(f"  temporal error: warped+temporal {result.temporal_error:.2f}, independent "
              f"{result.independent_error:.2f}, ratio {result.temporal_error / result.independent_error:.3f}")
        print(f"  seconds per frame: first {result.seconds_per_frame[0]:.1f}, later "
              f"{np.mean(later):.2f} (flow included); whole run with the baseline {total:.0f} s")


if __name__ == "__main__":
    main()
