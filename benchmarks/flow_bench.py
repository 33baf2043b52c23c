"""Optical flow benchmark: endpoint error on synthetic motions, speed, and temporal error on video.

Run from the repository root::

    .venv/bin/python benchmarks/flow_bench.py [--repeats 5] [--iterations 30] [--warps 5]

Prints, for each frame size (160x120 and 320x240):

* mean endpoint error (interior, 8 px margin, and whole frame) of ``estimate_flow`` on shifts,
  a rotation, a zoom and a combined motion of a smooth synthetic texture (exact: the texture is
  a sum of sinusoids evaluated at the moved coordinates) and, when ``../shared/media/coffee.png``
  exists, of that photo (bilinearly resampled from a larger crop, so no border clamping);
* compile seconds (first call minus a warm call) and seconds per flow field after compiling.

With ``../shared/media/pan.mp4`` and ``moving_object.mp4``: the temporal error of consecutive
frames (``temporal_error``, mean squared over reliable pixels) with the flow versus without it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from jaxdream import flow

MEDIA = Path(__file__).resolve().parents[1] / ".." / "shared" / "media"
SIZES = ((120, 160), (240, 320))
MARGIN = 8


def texture(seed: int = 0, waves: int = 60):
    """Smooth random texture f(x, y) in about 0..255: a sum of sinusoids, exact anywhere."""
    rng = np.random.default_rng(seed)
    angle, freq = rng.uniform(0, np.pi, waves), rng.uniform(0.02, 0.09, waves)
    phase, amp = rng.uniform(0, 2 * np.pi, waves), rng.uniform(0.5, 1.0, waves)
    amp = amp / np.sqrt(freq / 0.02)
    kx, ky = freq * np.cos(angle), freq * np.sin(angle)

    def f(x, y):
        out = np.zeros(np.broadcast(x, y).shape)
        for i in range(waves):
            out += amp[i] * np.cos(2 * np.pi * (kx[i] * x + ky[i] * y) + phase[i])
        return 127.5 + 22.0 * out

    return f


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) ``image`` at float coordinates (clamped), NumPy."""
    h, w = image.shape[:2]
    x, y = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    return ((image[y0, x0] * (1 - fx) + image[y0, x1] * fx) * (1 - fy)
            + (image[y1, x0] * (1 - fx) + image[y1, x1] * fx) * fy)


def motion(degrees: float = 0.0, zoom: float = 1.0, shift=(0.0, 0.0)):
    r = np.deg2rad(degrees)
    return zoom * np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]]), np.array(shift)


MOTIONS = {
    "shift (1.5, -0.75)": motion(shift=(1.5, -0.75)),
    "shift (3, -2)": motion(shift=(3.0, -2.0)),
    "shift (6.3, 4.1)": motion(shift=(6.3, 4.1)),
    "rotate 2 deg": motion(2.0),
    "zoom 1.03": motion(zoom=1.03),
    "rot 3 + zoom 1.05 + (2, 1)": motion(3.0, 1.05, (2.0, 1.0)),
}


def make_pair(sample, h: int, w: int, matrix: np.ndarray, shift: np.ndarray):
    """a(x) = S(x), b(T x) = a(x) with T about the frame centre; returns a, b, true flow."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    inv = np.linalg.inv(matrix)
    px, py = x - cx - shift[0], y - cy - shift[1]
    b = sample(inv[0, 0] * px + inv[0, 1] * py + cx, inv[1, 0] * px + inv[1, 1] * py + cy)
    tx = matrix[0, 0] * (x - cx) + matrix[0, 1] * (y - cy) + cx + shift[0]
    ty = matrix[1, 0] * (x - cx) + matrix[1, 1] * (y - cy) + cy + shift[1]
    truth = np.stack([tx - x, ty - y], axis=-1)
    return (sample(x, y).astype(np.float32), b.astype(np.float32), truth.astype(np.float32))


def photo_sampler(h: int, w: int):
    """Sampler over coffee.png scaled so an (h, w) frame sits inside with a 24 px border."""
    path = MEDIA / "coffee.png"
    if not path.exists():
        return None
    from PIL import Image
    img = Image.open(path).convert("RGB")
    scale = max((w + 48) / img.width, (h + 48) / img.height)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    arr = np.asarray(img, np.float64)
    ox, oy = (arr.shape[1] - w) / 2, (arr.shape[0] - h) / 2
    return lambda x, y: bilinear(arr, x + ox, y + oy)


def bench_size(h: int, w: int, settings: dict, repeats: int) -> None:
    print(f"\n== {w}x{h}  levels {flow.pyramid_levels(h, w, settings.get('scale_factor', 0.5))}")
    sources = {"texture": texture()}
    photo = photo_sampler(h, w)
    if photo is not None:
        sources["coffee.png"] = photo
    first = None
    for source, sample in sources.items():
        for name, (matrix, shift) in MOTIONS.items():
            a, b, truth = make_pair(sample, h, w, matrix, shift)
            t0 = time.perf_counter()
            est = np.asarray(flow.estimate_flow(a, b, **settings))
            first = first if first is not None else time.perf_counter() - t0
            inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
            epe_inner = flow.endpoint_error(est[inner], truth[inner])
            print(f"  {source:10s} {name:28s} EPE interior {epe_inner:.3f}"
                  f"  all {flow.endpoint_error(est, truth):.3f} px")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        flow.estimate_flow(a, b, **settings).block_until_ready()
        times.append(time.perf_counter() - t0)
    per_flow = float(np.median(times))
    print(f"  compile {first - per_flow:.1f} s (first call {first:.1f} s); "
          f"{per_flow:.3f} s per flow field (median of {repeats}, min {min(times):.3f})")


def read_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    import imageio.v2 as iio
    frames = {}
    with iio.get_reader(path, "ffmpeg") as reader:
        for i, frame in enumerate(reader):
            if i in indices:
                frames[i] = np.asarray(frame, np.float32)
            if i >= max(indices):
                break
    return [frames[i] for i in indices]


def load_videos(pairs: int) -> dict[str, list[np.ndarray]]:
    """The first ``pairs + 1`` frames of each clip found (read before JAX starts its threads)."""
    videos = {}
    for name in ("pan.mp4", "moving_object.mp4"):
        path = MEDIA / name
        if path.exists():
            videos[name] = read_frames(path, list(range(pairs + 1)))
        else:
            print(f"{name}: not found under {MEDIA}, skipped")
    return videos


def bench_video(videos: dict[str, list[np.ndarray]], settings: dict) -> None:
    for name, frames in videos.items():
        pairs = len(frames) - 1
        print(f"\n== {name}  {frames[0].shape[1]}x{frames[0].shape[0]}: "
              "temporal error (mean squared, 0..255 RGB, reliable pixels of frame t)")
        ratios = []
        for t in range(1, pairs + 1):
            prev, cur = frames[t - 1], frames[t]
            fw, bw = flow.forward_backward(cur, prev, **settings)  # t -> t-1, t-1 -> t
            mask = flow.occlusion_mask(fw, bw)
            warped = flow.temporal_error(prev, cur, fw, mask)
            unwarped = flow.temporal_error(prev, cur, np.zeros_like(fw), mask)
            ratios.append(warped / unwarped)
            print(f"  frames {t - 1}->{t}: warped {warped:7.2f}  no warp {unwarped:7.2f}  "
                  f"ratio {warped / unwarped:.3f}  reliable {float(mask.mean()):.1%}")
        print(f"  mean ratio {np.mean(ratios):.3f} (lower is better; 1 = flow does not help)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warps", type=int, default=5)
    parser.add_argument("--median-radius", type=int, default=2)
    parser.add_argument("--scale-factor", type=float, default=0.5)
    args = parser.parse_args()
    settings = dict(iterations=args.iterations, warps=args.warps,
                    median_radius=args.median_radius, scale_factor=args.scale_factor)
    videos = load_videos(pairs=4)
    print(f"estimate_flow settings: {settings}")
    for h, w in SIZES:
        bench_size(h, w, settings, args.repeats)
    bench_video(videos, settings)


if __name__ == "__main__":
    main()
