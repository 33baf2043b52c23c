"""Where one compiled evaluation's time goes, op by op, from XLA's own profile.

Runs the style evaluation (VGG-19, ``jit(value_and_grad(gatys.objective))``) or the DeepDream
ascent step (GoogLeNet to inception_4c) at one size with random weights of the real shapes,
traces two calls with ``jax.profiler``, and maps every executed XLA op back to the JAX
operation it came from (through the optimised HLO that ``--xla_dump_to`` writes). It prints the
milliseconds per call of each kind of work (forward or backward convolutions, pooling, Gram
matrices, ...) and the largest single ops.

The times are each op's own duration on its thread. XLA:CPU runs independent ops side by side,
so they add up to more than the wall time of a call; compare kinds within one run.

    python benchmarks/xla_profile.py                     # VGG-19 style evaluation at 512 px
    python benchmarks/xla_profile.py --model googlenet   # DeepDream step at 512 px
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = ("ThunkExecutor", "Slinky", "Threadpool", "$", "end:", "PjitFunction", "CommonPjRt")


def child(model: str, size: int, trace_dir: str) -> None:
    """Compile, warm up, then trace two calls (runs in a process whose XLA_FLAGS dump HLO)."""
    import jax

    sys.path.insert(0, str(HERE))
    from peer_compare import dream_problem, style_problem

    if model == "vgg19":
        vg, content, params, targets, weights, _ = style_problem(size)
        call = lambda: vg(content, params, targets, weights)  # noqa: E731
    else:
        image, step = dream_problem(size)
        call = lambda: step(image, 0)  # noqa: E731
    for _ in range(2):
        jax.block_until_ready(call())
    with jax.profiler.trace(trace_dir):
        for _ in range(2):
            jax.block_until_ready(call())


def op_names(hlo_text: str) -> dict[str, tuple[str, str]]:
    """{HLO instruction name: (JAX op_name, result shape)} from an optimised HLO module."""
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*?op_name=\"([^\"]*)\"", line)
        if m:
            out[m.group(1)] = (m.group(3), m.group(2).split("{")[0])
    return out


def kind_of(op_name: str) -> str:
    """A coarse kind of work: direction (forward / backward) and what the op computes."""
    if op_name == "layout copy":
        return op_name
    direction = "backward" if "transpose(" in op_name else "forward"
    if "conv_general_dilated" in op_name:
        what = "convolution"
    elif "...pc,...pd->...cd" in op_name or "...pc,...cd->...pd" in op_name:
        what = "Gram matrix"
    elif "reduce_max" in op_name or ("/max" in op_name and "relu" not in op_name):
        what = "max (pooling)"
    elif "relu" in op_name or "select_n" in op_name:
        what = "ReLU / select"
    elif "pad" in op_name or "slice" in op_name or "concatenate" in op_name or "stack" in op_name:
        what = "pad / slice / concatenate"
    else:
        what = "other: " + op_name.rsplit("/", 1)[-1]
    return f"{direction} {what}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("vgg19", "googlenet"), default="vgg19")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--top", type=int, default=15, help="how many of the largest single ops to list")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trace-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.model, args.size, args.trace_dir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                          f" --xla_dump_to={tmp}/hlo --xla_dump_hlo_as_text"
                                          " --xla_dump_hlo_pass_re=^$").strip())
        subprocess.run([sys.executable, __file__, "--child", "--model", args.model, "--size", str(args.size),
                        "--trace-dir", f"{tmp}/trace"], check=True, env=env)
        modules = glob.glob(f"{tmp}/hlo/*cpu_after_optimizations.txt")
        names = op_names(Path(max(modules, key=os.path.getsize)).read_text())
        trace = json.load(gzip.open(glob.glob(f"{tmp}/trace/plugins/profile/*/*.trace.json.gz")[0]))
    kinds, ops = collections.Counter(), collections.Counter()
    for e in trace["traceEvents"]:
        if e.get("ph") != "X" or e["name"].startswith(SKIP):
            continue
        op, shape = names.get(e["name"], ("layout copy" if e["name"].startswith("transpose_copy")
                                          else "(not in the HLO) " + e["name"], ""))
        ms = e["dur"] / 1e3 / 2  # two traced calls
        kinds[kind_of(op)] += ms
        ops[f"{re.sub(r'^jit[(][^)]*[)]/', '', op)} {shape}"] += ms
    total = sum(kinds.values())
    what = "style evaluation (VGG-19)" if args.model == "vgg19" else "DeepDream step (GoogLeNet to inception_4c)"
    print(f"{what} at {args.size}x{args.size}: {total:.0f} ms of op time per call")
    for k, ms in kinds.most_common():
        if ms >= 0.005 * total:
            print(f"  {ms:8.1f} ms {100 * ms / total:5.1f}%  {k}")
    print("largest ops (ms per call):")
    for k, ms in ops.most_common(args.top):
        print(f"  {ms:8.1f}  {k[:110]}")


if __name__ == "__main__":
    main()
