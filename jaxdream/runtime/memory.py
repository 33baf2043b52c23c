"""Size ceilings: what a run would need, checked before anything is allocated.

Two limits apply to every picture jaxdream computes on:

* a pixel ceiling, :data:`MAX_PIXELS` (8192 x 8192), whatever the machine;
* an estimate of the memory the run's largest program needs, against what the device has
  (free RAM for the CPU, the allocator's limit on a GPU or TPU).

The per-pixel costs are XLA's own memory analysis of the compiled programs (jax 0.10.2, CPU,
float32): the VGG-19 style loss and gradient to relu5_1 needs about 3.0-3.6 KB of temporaries
per input pixel (128-512 px), a GoogLeNet dream gradient to inception_4c about 1.1-1.2 KB per
pixel of a tile, a forward pass alone about a third of its gradient. The estimates round up.

Example:
    >>> style_bytes(512, 512) < 2 * 2**30
    True
"""

from __future__ import annotations

import os

from ..errors import SettingsError
from .parallel import devices

__all__ = ["MAX_PIXELS", "LBFGS_HISTORY_BUDGET", "style_bytes", "band_bytes", "dream_bytes", "forward_bytes", "available_bytes",
           "check_pixels", "check_fits"]

#: The L-BFGS history (2 * corrections * pixels * 3 floats) is capped to this many bytes.
LBFGS_HISTORY_BUDGET = 4 * 2**30
#: No image jaxdream computes on may have more pixels than this (8192 x 8192).
MAX_PIXELS = 8192 * 8192

STYLE_BYTES_PER_PIXEL = 3600     # VGG-19 loss + input gradient, temporaries
DREAM_BYTES_PER_PIXEL = 1200     # GoogLeNet gradient to inception_4c, per tile pixel
FORWARD_BYTES_PER_PIXEL = 1300   # VGG-19 forward to relu5_1 (targets, guide features)
IMAGE_BYTES_PER_PIXEL = 64       # float copies of the image, gradients, optimiser vectors
FIXED_BYTES = 600 * 2**20        # weights (VGG-19 conv: 80 MB, twice), runtime, compiler
BAND_PROGRAMS_BYTES = 2**30      # band by band: two more compiled passes and their buffers
                                 # (4096 px in 512-row bands: 16.5 GiB peak RSS measured)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_pixels(height: int, width: int, what: str) -> None:
    """Raise SettingsError when an image of ``height`` x ``width`` exceeds :data:`MAX_PIXELS`."""
    if height * width > MAX_PIXELS:
        raise SettingsError(f"{what}: {width}x{height} is {height * width / 1e6:.0f} megapixels, above "
                            f"jaxdream's limit of {MAX_PIXELS / 1e6:.0f} (8192x8192)")


def style_bytes(height: int, width: int, batch: int = 1, corrections: int = 0) -> int:
    """Memory of one style-transfer program: loss and gradient of ``batch`` images plus an
    L-BFGS history of ``corrections`` pairs (capped like :data:`jaxdream.style.LBFGS_HISTORY_BUDGET`)."""
    pixels = height * width
    history = min(2 * corrections * batch * pixels * 3 * 4, LBFGS_HISTORY_BUDGET)
    return FIXED_BYTES + batch * pixels * (STYLE_BYTES_PER_PIXEL + IMAGE_BYTES_PER_PIXEL) + history


def band_bytes(height: int, width: int, band_rows: int, halo: int, corrections: int = 0) -> int:
    """Memory of a style transfer of one image evaluated band by band (:mod:`jaxdream.objectives.bands`):
    one band's window through the gradient, plus the whole image's float vectors and history."""
    pixels = height * width
    window = min(height, band_rows + 2 * halo) * width
    history = min(2 * corrections * pixels * 3 * 4, LBFGS_HISTORY_BUDGET)
    return (FIXED_BYTES + BAND_PROGRAMS_BYTES + window * STYLE_BYTES_PER_PIXEL
            + pixels * (IMAGE_BYTES_PER_PIXEL + 32) + history)


def dream_bytes(height: int, width: int, tile_size: int, tile_batch: int) -> int:
    """Memory of one DeepDream step program: a batch of tiles through the gradient, plus the
    whole image's float copies."""
    tile = min(height, tile_size) * min(width, tile_size)
    tiles = min(tile_batch, -(-height // tile_size) * -(-width // tile_size))
    return FIXED_BYTES + tiles * tile * DREAM_BYTES_PER_PIXEL + height * width * IMAGE_BYTES_PER_PIXEL


def forward_bytes(height: int, width: int) -> int:
    """Memory of a forward pass (style targets, guide features)."""
    return FIXED_BYTES + height * width * FORWARD_BYTES_PER_PIXEL


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_bytes() -> tuple[int, str]:
    """(bytes a run may use, where): the device allocator's limit on an accelerator, free RAM
    (``MemAvailable``) on the CPU."""
    device = devices()[0]
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
        except Exception:  # noqa: BLE001 - not every backend reports memory
            stats = {}
        if stats.get("bytes_limit"):
            return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0)), \
                f"{device.platform} device {device.id}"
    free = _meminfo_available()
    if free is None:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return free, "this machine (free RAM)"


def check_fits(need: int, what: str, available: tuple[int, str] | None = None) -> None:
    """Raise SettingsError when ``need`` bytes exceed what the device has."""
    have, where = available or available_bytes()
    if need > have:
        raise SettingsError(f"{what} needs about {_gib(need)} of memory; {_gib(have)} is available on "
                            f"{where}")
