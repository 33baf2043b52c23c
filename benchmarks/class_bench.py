"""Class dreams at their defaults: how often GoogLeNet's top-1 becomes the class.

For every photo and every class, ``jaxdream.dream(photo at --size px, class_index=N)`` with no
other setting, then :func:`jaxdream.classify` (the whole picture resized to 224 px, as
``jaxdream classify``). Prints one line per dream as it finishes, the success rate per photo and
overall, and the seconds per dream. Needs the real BVLC GoogLeNet (``../shared/weights`` or
``--weights``) and the shared photos.

    python benchmarks/class_bench.py [--images chelsea.png,astronaut.png] [--classes 1,9,...]
        [--size 512] [--save DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import jaxdream
from jaxdream import media
from jaxdream.nets.classes import class_names

SHARED = Path(__file__).resolve().parents[2] / "shared"

#: 20 ImageNet classes across fish, birds, insects, mammals, objects, vehicles, food and scenes;
#: none of them a cat (chelsea.png already is one).
CLASSES = (1, 9, 130, 207, 309, 323, 340, 388, 417, 430,
           483, 508, 530, 574, 717, 812, 920, 947, 954, 967)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="chelsea.png,astronaut.png,rocket.png",
                        help="photos in ../shared/media (or paths)")
    parser.add_argument("--classes", default=",".join(map(str, CLASSES)))
    parser.add_argument("--size", type=int, default=512, help="longest side of the dreamed photo")
    parser.add_argument("--weights", default=str(SHARED / "weights" / "bvlc_googlenet.caffemodel"))
    parser.add_argument("--save", help="write every dream into this folder")
    args = parser.parse_args()
    classes = [int(c) for c in args.classes.split(",")]
    names = class_names()
    total, seconds = 0, []
    for image_name in args.images.split(","):
        path = Path(image_name) if Path(image_name).is_file() else SHARED / "media" / image_name
        photo = media.load_image(path, size=args.size)
        before = jaxdream.classify(photo, weights=args.weights)
        print(f"{path.name} {photo.shape[1]}x{photo.shape[0]}: GoogLeNet says {names[before.argmax()]} "
              f"({before.max():.2f})", flush=True)
        hits = 0
        for cls in classes:
            start = time.perf_counter()
            out = jaxdream.dream(photo, class_index=cls, weights=args.weights)
            seconds.append(time.perf_counter() - start)
            prob = jaxdream.classify(out, weights=args.weights)
            hit = int(prob.argmax()) == cls
            hits += hit
            print(f"  {cls:4d} {names[cls]:24s} p={prob[cls]:.3f} top-1 {names[prob.argmax()]:24s} "
                  f"{'yes' if hit else 'no ':3s} {seconds[-1]:5.1f} s", flush=True)
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                media.save_image(Path(args.save) / f"{path.stem}_{cls}.jpg", np.clip(out, 0, 255))
        total += hits
        print(f"{path.name}: {hits}/{len(classes)} class dreams make the class GoogLeNet's top-1", flush=True)
    count = len(classes) * len(args.images.split(","))
    print(f"overall: {total}/{count} ({total / count:.0%}); {np.median(seconds):.1f} s per dream (median)")


if __name__ == "__main__":
    main()
