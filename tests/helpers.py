"""Plain helpers shared by several test modules (the shared fixtures are in ``conftest.py``).

* The installed ``jaxdream`` command: :data:`SCRIPT`, :data:`needs_script`, :func:`cli_env` (a
  clean subprocess environment with its own ``JAXDREAM_HOME``), :func:`run_cli` and
  :class:`Batch` (commands started two at a time); :func:`run_main` runs the CLI in-process.
* Small random VGG-19 weights and images: :func:`vgg_layers`, :func:`as_params`,
  :func:`rand_image`, :func:`quadratic`.
* Synthetic clips: :func:`texture`, :func:`pan_frames`, :func:`write_clip`, :func:`read_folder`
  and :func:`maker` (the frame maker of a tiny network).
* Another release's ffmpeg: :func:`bundled_ffmpeg` (the binary of an imageio-ffmpeg wheel).

jaxdream is imported inside the functions, so that importing this module (and so running the
tests that only need the command) never depends on the package's layout.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

# --------------------------------------------------------------------------------------------
# the `jaxdream` command
# --------------------------------------------------------------------------------------------


def jaxdream_script() -> str | None:
    """The installed console script: beside this Python, else on ``PATH``; ``None`` if neither."""
    beside = Path(sys.executable).with_name("jaxdream")
    return str(beside) if beside.is_file() else shutil.which("jaxdream")


SCRIPT = jaxdream_script()
needs_script = pytest.mark.skipif(SCRIPT is None, reason="the jaxdream console script is not installed")


def cli_env(home: Path, **extra: str | None) -> dict[str, str]:
    """The parent environment without jaxdream settings or proxies, plus ``extra`` (a ``None``
    value removes the variable).

    ``JAXDREAM_HOME`` is ``home``, ``HOME`` a folder beside it, JAX runs on the CPU, and
    ``JAXDREAM_WEIGHTS_URL`` points at an empty local folder so that a command that tries to
    download by mistake fails at once instead of reaching the internet. Run the subprocess with
    ``cwd`` outside the checkout: there the source tree's ``jaxdream/`` (which has no ``cli``,
    installed from the top-level folder) would shadow the installed package.
    """
    home = Path(home)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("JAXDREAM_") and k != "XDG_CACHE_HOME" and "proxy" not in k.lower()}
    env.update(JAXDREAM_HOME=str(home), HOME=str(home.parent / "user_home"), JAX_PLATFORMS="cpu",
               JAXDREAM_WEIGHTS_URL=(home.parent / "no-mirror").as_uri())
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_cli(args: list, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    """``jaxdream *args`` (each argument through ``str``) in ``env``, output captured, no stdin."""
    return subprocess.run([SCRIPT, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=cwd)


class Batch:
    """Commands started together, two at a time; ``batch[name]`` waits for one result."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.pool = ThreadPoolExecutor(max_workers=2)
        self.futures: dict[str, Future] = {}
        self.homes: dict[str, Path] = {}

    def submit(self, name: str, args: list, setup=None, **env: str | None) -> None:
        """Start ``jaxdream *args`` with its own ``JAXDREAM_HOME``, after ``setup(home)``."""
        home = self.root / "homes" / name / "jaxdream"
        home.parent.mkdir(parents=True)
        if setup is not None:
            setup(home)
        self.homes[name] = home
        self.futures[name] = self.pool.submit(run_cli, args, cli_env(home, **env))

    def __getitem__(self, name: str) -> subprocess.CompletedProcess:
        return self.futures[name].result()

    def close(self) -> None:
        for future in self.futures.values():
            future.cancel()
        self.pool.shutdown(wait=True)


def run_main(argv, capsys) -> tuple[int, str, str]:
    """The CLI in this process: ``(exit code, stdout, stderr)``; arguments go through ``str``."""
    from jaxdream.cli.main import main as cli_main
    rc = cli_main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --------------------------------------------------------------------------------------------
# small random VGG-19 weights and images
# --------------------------------------------------------------------------------------------


def vgg_layers(widths=None, seed=0, dtype=np.float32) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random He-initialised VGG-19 conv weights ``convB_I -> (HWIO kernel, bias)``; ``widths``
    per block (default VGG-19's own)."""
    from jaxdream.nets.vgg19 import BLOCKS, WIDTHS
    widths = WIDTHS if widths is None else widths
    rng = np.random.default_rng(seed)
    layers, cin = {}, 3
    for b, (n, width) in enumerate(zip(BLOCKS, widths), start=1):
        for i in range(1, n + 1):
            kernel = rng.standard_normal((3, 3, cin, width), dtype=np.float32) * np.sqrt(2 / (9 * cin))
            layers[f"conv{b}_{i}"] = (kernel.astype(dtype),
                                      (0.1 * rng.standard_normal(width)).astype(dtype))
            cin = width
    return layers


def as_params(layers) -> dict:
    import jax.numpy as jnp
    return {"params": {k: {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}
                       for k, (w, b) in layers.items()}}


def rand_image(h, w, seed) -> np.ndarray:
    """A smooth random ``(h, w, 3)`` float32 image in 0..255."""
    from jaxdream import media
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
    return np.clip(media.resize(base, (h, w)), 0, 255)


def quadratic(scales, center):
    """``0.5 * sum(scales * (x - center)^2)`` and its gradient, as _lbfgs_iteration takes them."""
    import jax.numpy as jnp

    def value_and_grad(x):
        diff = x - center
        value = 0.5 * jnp.sum(scales * diff * diff, axis=(1, 2, 3))
        return (value, jnp.zeros((x.shape[0], 3))), scales * diff
    return value_and_grad


# --------------------------------------------------------------------------------------------
# synthetic clips
# --------------------------------------------------------------------------------------------

#: The synthetic clips' frame size, frame count and rate.
H, W, N, FPS = 40, 48, 6, 12


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    from jaxdream import media
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (h // 6 + 2, w // 6 + 2, 3)).astype(np.float32)
    return np.clip(media.resize(base, (h, w)), 0, 255)


def pan_frames(n: int = N, step: int = 2) -> list[np.ndarray]:
    """A camera pan: a fixed texture seen through a window moving ``step`` px per frame."""
    big = texture(H, W + step * n, 3)
    return [big[:, i * step: i * step + W] for i in range(n)]


def write_clip(path: Path, frames, fps: int = FPS, audio: bool = False) -> Path:
    """An H.264 clip of the frames, optionally with a 440 Hz AAC track."""
    import imageio_ffmpeg
    target = path if not audio else path.with_name("noaudio_" + path.name)
    writer = imageio_ffmpeg.write_frames(str(target), (W, H), fps=fps, codec="libx264",
                                         pix_fmt_out="yuv420p", macro_block_size=1,
                                         output_params=["-crf", "10"], ffmpeg_log_level="error")
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(np.clip(f, 0, 255).astype(np.uint8)))
    writer.close()
    if audio:
        subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(target), "-f",
                        "lavfi", "-i", f"sine=frequency=440:duration={len(frames) / fps}", "-c:v", "copy",
                        "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


def read_folder(folder: Path) -> list[np.ndarray]:
    from jaxdream import media
    return [media.load_image(p) for p in sorted(folder.glob("frame_*.png"))]


def maker(tiny_net, style_png, **kw):
    """The style frame maker of ``tiny_net``: 6 iterations on the first frame, 3 on the others."""
    from jaxdream import video as vd
    settings = dict(iterations_first=6, iterations=3, network=tiny_net, chunk=3)
    return vd.StyleFrames([style_png], **(settings | kw))


# --------------------------------------------------------------------------------------------
# another release's ffmpeg
# --------------------------------------------------------------------------------------------


def bundled_ffmpeg(version: str, folder: Path) -> Path:
    """The ffmpeg binary of the ``imageio-ffmpeg==version`` wheel for this platform, downloaded
    with pip into ``folder`` once (found there on later calls); the test skips, saying why, when
    the package index cannot be reached or the wheel bundles none."""
    found = sorted(folder.glob("imageio_ffmpeg/binaries/ffmpeg-*"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                              "--timeout", "20", "--retries", "1", "-d", str(folder), f"imageio-ffmpeg=={version}"],
                             capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.skip(f"imageio-ffmpeg {version} could not be downloaded in 300 s")
    wheels = list(folder.glob(f"imageio_ffmpeg-{version}-*.whl"))
    if got.returncode != 0 or not wheels:
        pytest.skip(f"imageio-ffmpeg {version} could not be downloaded (no package index here?): "
                    f"{(got.stderr or got.stdout).strip()[-200:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = [n for n in wheel.namelist() if "/binaries/ffmpeg" in n]
        if not names:
            pytest.skip(f"imageio-ffmpeg {version}'s wheel for this platform bundles no ffmpeg")
        wheel.extract(names[0], folder)
    exe = folder / names[0]
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe
