"""Take the README's screenshots of the web studio during a real dream and a real style transfer.

    python examples/web/screenshots.py --weights-dir ../shared/weights --media ../shared/media

Starts ``jaxdream serve`` on 127.0.0.1 with a fresh studio folder, drives Debian's chromium
(through Playwright) like a person would: drops chelsea.png, dreams it at 320 px and takes
``studio_dream.jpg`` in the last octave; then drops astronaut.png with the Hubble deep field as
the style, starts a 256 px style transfer from the content image and takes ``studio_style.jpg``
after about 120 L-BFGS iterations, then stops the run (the current image is kept).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start_server(home: Path, weights: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "JAXDREAM_HOME": str(home), "JAXDREAM_WEIGHTS_DIR": str(weights), "JAXDREAM_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxdream.cli.main", "serve", "--port", "0"], cwd=home.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    while not any("http://" in line for line in lines):
        if proc.poll() is not None:
            raise SystemExit("".join(lines))
        time.sleep(0.1)
    return proc, "http://" + next(line for line in lines if "http://" in line).split("http://")[1].split("/")[0] + "/"


def progress(page) -> str:
    return page.text_content("#phase") or ""


def counts(page, word: str) -> tuple[int, int]:
    """(k, n) of "WORD k/n" in the page's progress line ((0, 1) when absent)."""
    import re
    found = re.search(rf"{word} (\d+)/(\d+)", progress(page))
    return (int(found[1]), int(found[2])) if found else (0, 1)


def wait_for(page, predicate, timeout_s: float) -> None:
    end = time.time() + timeout_s
    while not predicate():
        if time.time() > end:
            raise SystemExit(f"timed out; the page says: {progress(page)}")
        page.wait_for_timeout(500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, required=True)
    parser.add_argument("--media", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    a = parser.parse_args()
    from playwright.sync_api import sync_playwright
    home = Path(tempfile.mkdtemp()) / "home"
    proc, url = start_server(home, a.weights_dir.resolve())
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=a.chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860}, bypass_csp=True)
            page.goto(url)
            # a dream
            page.set_input_files("#file-input", str(a.media / "chelsea.png"))
            page.wait_for_selector(".drop[data-count='1']")
            page.fill("#opt-size", "320")
            page.click("#start")
            wait_for(page, lambda: counts(page, "octave")[0] == 4 and counts(page, "step")[0] >= 5, 900)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(a.out / "studio_dream.jpg"), type="jpeg", quality=82)
            page.wait_for_selector("#current[data-state='done']", timeout=600_000)
            # a style transfer
            page.click("[data-command='style']")
            page.set_input_files("#file-input", str(a.media / "astronaut.png"))
            page.set_input_files("#file-style", str(a.media / "hubble_deep_field.png"))
            page.wait_for_selector(".drop[data-role='style'][data-count='1']")
            page.fill("#opt-size", "256")
            page.fill("#opt-iterations", "300")
            page.select_option("#opt-init", "image")
            page.click("#start")
            wait_for(page, lambda: counts(page, "iteration")[0] >= 120, 1800)
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(a.out / "studio_style.jpg"), type="jpeg", quality=82)
            page.click("#stop")
            page.wait_for_selector("#current[data-state='cancelled']", timeout=120_000)
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    print(f"wrote {a.out / 'studio_dream.jpg'} and {a.out / 'studio_style.jpg'}")


if __name__ == "__main__":
    main()
