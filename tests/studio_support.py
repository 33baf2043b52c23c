"""What the studio's test modules share: which parts of the web stack are installed, a studio
server started as a user starts it, and Debian's chromium driven through Playwright."""

from __future__ import annotations

import importlib.util
import io
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from helpers import rand_image

HAVE_WEB = all(importlib.util.find_spec(m) is not None for m in ("starlette", "uvicorn"))
HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Why the browser tests cannot run here ('' when they can).
NO_BROWSER = ", ".join(why for ok, why in (
    (HAVE_WEB, "the web extra (starlette, uvicorn) is not installed"),
    (HAVE_PLAYWRIGHT, "playwright is not installed (pip install playwright)"),
    (CHROMIUM, "no chromium on PATH (apt-get install chromium)")) if not ok)

#: Debian's chromium, headless, talking to nothing but the test's server.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def png_bytes(h: int, w: int, seed: int = 0) -> bytes:
    """A smooth random RGB image as PNG bytes."""
    from jaxdream import media
    buf = io.BytesIO()
    Image.fromarray(media.to_uint8(rand_image(h, w, seed))).save(buf, format="PNG")
    return buf.getvalue()


@contextmanager
def serving(cwd: Path, environ: dict, *options: str):
    """``jaxdream serve --port 0 OPTIONS`` run in ``cwd`` (outside the checkout, so that the
    installed package is imported) with ``environ``; yields its URL, then stops it (SIGTERM)."""
    proc = subprocess.Popen([sys.executable, "-m", "jaxdream.cli.main", "serve", "--port", "0", *options],
                            cwd=cwd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    end = time.time() + 90
    while not any("http://" in line for line in lines):
        assert proc.poll() is None and time.time() < end, f"the server did not start: {''.join(lines)}"
        time.sleep(0.1)
    url = next(line for line in lines if "http://" in line).split("http://")[1].split("/")[0]
    try:
        yield f"http://{url}/"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def chromium():
    """Debian's chromium, launched by Playwright (which never downloads a browser here)."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
