"""The README's dream, first run against second run, in one go.

Runs ``jaxdream dream examples/chelsea.jpg -o dream.png`` twice in fresh processes with a fresh
compilation cache (the converted weights are shared, so neither run converts them), and prints
each run's wall time, the compiling and dreaming it reports in its last line, and the ratio of
the first run to the second. The issue's target on a CPU: the first run at most 1.5x the second.

    python benchmarks/first_run.py [--runs 2] [--image examples/chelsea.jpg] [-- extra dream options]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"\(\d+x\d+, (?P<total>[\d.]+) s: (?P<compiling>[\d.]+) s compiling, (?P<dreaming>[\d.]+) s dreaming\)")


def run_once(home: Path, image: Path, extra: list[str]) -> dict:
    out = home / "dream.png"
    env = {**os.environ, "JAXDREAM_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jaxdream.cli.main", "dream", str(image), "-o", str(out), *extra],
                          capture_output=True, text=True, env=env, cwd=home, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"jaxdream dream failed:\n{proc.stderr[-2000:]}")
    m = LINE.search(proc.stderr)
    return {"wall": wall, **({k: float(v) for k, v in m.groupdict().items()} if m else {})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=Path, default=ROOT / "examples" / "chelsea.jpg")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("extra", nargs="*", help="more dream options (after --)")
    args = p.parse_args()
    source = Path(os.environ.get("JAXDREAM_HOME", Path.home() / ".jaxdream"))
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        if (source / "weights").is_dir():  # converted weights: shared, so no run converts them
            shutil.copytree(source / "weights", home / "weights")
        runs = [run_once(home, args.image, args.extra) for _ in range(args.runs)]
    for i, r in enumerate(runs, 1):
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in r.items())
        print(f"run {i}: {parts}")
    if len(runs) > 1:
        print(f"first / second (wall): {runs[0]['wall'] / runs[1]['wall']:.2f}x")


if __name__ == "__main__":
    main()
