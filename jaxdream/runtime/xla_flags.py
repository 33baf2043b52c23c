"""XLA settings jaxdream asks for before JAX starts its CPU backend.

``--xla_cpu_use_fusion_emitters=false`` makes XLA:CPU emit its elementwise fusions with the
older LLVM emitters. Measured with jaxlib 0.10.2 on 2 cores (process CPU seconds, one process
per setting, see ``benchmarks/compile_bench.py``): compiling a DeepDream step to inception_4c
fell by about 40% and the first L-BFGS step of the style objective by about 25%, with the
same step times and the same losses to 7 digits. XLA stops the process on a flag it does not
know, so the flag is added only for the jaxlib releases it was measured on, only when the
user's ``XLA_FLAGS`` does not mention it, and never when ``JAXDREAM_KEEP_XLA_FLAGS`` is set.
"""

from __future__ import annotations

import os
from importlib import metadata

#: (flag, jaxlib major.minor releases it was measured on)
CPU_FLAGS = (("--xla_cpu_use_fusion_emitters=false", ("0.10",)),)


def _jaxlib_release() -> str | None:
    try:
        return ".".join(metadata.version("jaxlib").split(".")[:2])
    except metadata.PackageNotFoundError:
        return None


def apply(environ=os.environ) -> list[str]:
    """Add jaxdream's XLA flags to ``environ["XLA_FLAGS"]``; returns the flags added.

    Has an effect only before JAX creates its CPU backend (XLA reads the variable then).
    """
    if environ.get("JAXDREAM_KEEP_XLA_FLAGS"):
        return []
    release = _jaxlib_release()
    current = environ.get("XLA_FLAGS", "")
    added = [flag for flag, releases in CPU_FLAGS
             if release in releases and flag.split("=")[0] not in current]
    if added:
        environ["XLA_FLAGS"] = " ".join([current, *added]).strip()
    return added
