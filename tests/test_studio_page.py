"""The studio's page as a person meets it (issue 30): a refused setting marked at submit, a queue
whose "remove" takes a real click while progress streams in, a gallery to prune and reuse, a form
that survives a reload, no sideways scrolling from phone to desktop widths, and an accessibility
check (axe-core, from the ``axe-playwright-python`` package of the test extra, injected into the
page; never downloaded).

Like the browser tests of ``test_studio.py`` they start ``jaxdream serve`` on 127.0.0.1 with a
synthetic GoogLeNet and drive Debian's chromium through Playwright; they skip, saying why, when
Playwright, the web extra or chromium is missing.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from studio_support import NO_BROWSER, chromium, png_bytes, serving


HAVE_AXE = importlib.util.find_spec("axe_playwright_python") is not None

pytestmark = [pytest.mark.browser, pytest.mark.skipif(bool(NO_BROWSER), reason=f"no browser to drive: {NO_BROWSER}")]

#: A dream that finishes in a few seconds on a CPU with the synthetic GoogLeNet.
QUICK = {"size": "48", "octaves": "1", "steps": "2"}


@pytest.fixture(scope="module")
def env(tmp_path_factory, googlenet_caffemodel):
    """An isolated jaxdream home and a weights folder with the synthetic GoogLeNet."""
    root = tmp_path_factory.mktemp("studio_page")
    weights = root / "weights"
    weights.mkdir()
    (weights / "bvlc_googlenet.caffemodel").symlink_to(googlenet_caffemodel.path)
    values = {"JAXDREAM_HOME": str(root / "home"), "JAXDREAM_WEIGHTS_DIR": str(weights), "JAXDREAM_OFFLINE": "1"}
    environ = {k: v for k, v in os.environ.items() if k not in ("JAXDREAM_WEIGHTS_URL", "XDG_CACHE_HOME")}
    yield {"root": root, "studio": root / "home" / "studio", "environ": {**environ, **values}}


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "photo.png"
    path.write_bytes(png_bytes(48, 64, 1))
    return path


@pytest.fixture(scope="module")
def server(env):
    """``jaxdream serve --port 0``, run outside the checkout; yields its URL."""
    with serving(env["root"], env["environ"]) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, server):
    """A fresh page (its own localStorage); fails the test on a script error. ``page.missing``
    lists the requests answered 404."""
    context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.missing = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("response", lambda r: r.status == 404 and tab.missing.append(r.url))
    tab.goto(server)
    tab.wait_for_selector("#connection[data-state='live']")
    yield tab
    context.close()
    assert errors == []


# --------------------------------------------------------------------------------------------
# the server, asked directly (to set a scene quickly)
# --------------------------------------------------------------------------------------------


def _call(server: str, method: str, path: str, body=None, headers=None):
    host, port = server.removeprefix("http://").rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    conn.request(method, path, body=data, headers={"X-Jaxdream": "1", **(headers or {})})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    return response.status, json.loads(raw) if raw else None


def _upload(server: str, data: bytes, name: str = "photo.png") -> str:
    status, body = _call(server, "POST", f"/api/uploads?name={name}", data)
    assert status == 201, body
    return body["id"]


def _submit(server: str, upload: str, values: dict) -> dict:
    status, body = _call(server, "POST", "/api/jobs", {"command": "dream", "files": {"input": [upload]},
                                                       "values": values}, {"Content-Type": "application/json"})
    assert status == 201, body
    return body


def _job(server: str, job: str) -> dict:
    return _call(server, "GET", f"/api/jobs/{job}")[1]


def _wait(predicate, timeout=60.0, what="the condition"):
    end = time.time() + timeout
    while not predicate():
        assert time.time() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


def _finish(server: str, job: str) -> None:
    """Stop a job if it is still queued or running, and wait until it has ended."""
    _call(server, "POST", f"/api/jobs/{job}/cancel")
    _wait(lambda: _job(server, job)["state"] in ("done", "failed", "cancelled", "stopped"), 60, f"{job} to end")


def _tab(page, name: str):
    return page.get_by_role("tab", name=re.compile(f"^{name}$", re.I))


def _upload_photo(page, photo):
    page.set_input_files("#file-input", str(photo))
    page.wait_for_selector(".drop[data-role='input'][data-count='1']")
    return page.get_attribute(".drop[data-role='input'] .thumb", "data-upload")


# --------------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------------


def test_a_bad_layer_is_refused_at_submit_and_its_field_marked(page, server, photo):
    _upload_photo(page, photo)
    before = _call(server, "GET", "/api/jobs")[1]
    page.fill("#opt-layers", "no_such_layer")
    page.click("#start")
    assert page.get_attribute("#start", "aria-busy") == "true"  # "Checking…" while the server checks
    page.wait_for_selector("#opt-layers[aria-invalid='true']", timeout=60_000)
    assert page.evaluate("document.activeElement.id") == "opt-layers"
    error = page.locator("[data-field='layers'] .field-error")
    assert error.is_visible() and "no_such_layer" in error.inner_text()
    assert error.get_attribute("id") in page.get_attribute("#opt-layers", "aria-describedby").split()
    assert page.get_attribute("#message", "data-kind") == "error"
    after = _call(server, "GET", "/api/jobs")[1]
    assert after["live"]["queue"] == [] and after["live"]["active"] is None  # nothing queued
    assert [j["id"] for j in after["gallery"]] == [j["id"] for j in before["gallery"]]
    assert page.get_attribute("#start", "aria-busy") is None
    page.fill("#opt-layers", "inception_4c/output")  # corrected: the mark goes
    assert page.get_attribute("#opt-layers", "aria-invalid") is None and not error.is_visible()


def test_remove_on_a_queued_job_takes_a_real_click_while_another_runs(page, server, photo):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    upload = _upload(server, photo.read_bytes())
    running = _submit(server, upload, {"size": "48", "octaves": "1", "steps": "1000000"})["id"]
    try:
        with ThreadPoolExecutor(4) as pool:  # each submission runs the command line's check
            queued = [j["id"] for j in pool.map(lambda _: _submit(server, upload, QUICK), range(10))]
        page.wait_for_selector(f"#queue li[data-job='{running}'][data-state='running']", timeout=60_000)
        page.wait_for_function("Number(document.querySelector('#preview').dataset.updates) >= 2", timeout=60_000)
        updates = int(page.get_attribute("#preview", "data-updates"))
        for job in queued:  # from the top: the rows below move up after each
            remove = page.locator(f"#queue li[data-job='{job}'] button", has_text="remove")
            remove.scroll_into_view_if_needed()
            box = remove.bounding_box()
            assert box, f"the 'remove' button of job {queued.index(job) + 1} of 10 is gone before the click"
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.wait_for_timeout(150)  # a person's click: the button is pressed for a moment
            page.mouse.up()
            try:
                page.wait_for_selector(f"#queue li[data-job='{job}']", state="detached", timeout=5_000)
            except PlaywrightTimeout:
                pytest.fail(f"click {queued.index(job) + 1} of 10 on 'remove' did not remove the job "
                            f"(the page says '{page.inner_text('#message')}')")
            assert _job(server, job)["state"] == "cancelled"
        # the progress really was streaming in while the clicks were made
        assert int(page.get_attribute("#preview", "data-updates")) >= updates + 5
        assert page.locator("#queue li").evaluate_all("items => items.map(li => li.dataset.job)") == [running]
        # removed runs have no image: their cards say so, and no image is asked for in vain
        for job in queued:
            page.wait_for_selector(f"#gallery .card[data-job='{job}'][data-state='cancelled'] .no-picture")
        assert page.missing == []
    finally:
        _finish(server, running)


def test_gallery_use_again_fills_the_form_and_delete_removes_the_run(page, server, photo, env):
    upload = _upload_photo(page, photo)
    values = {"size": "64", "octaves": "64", "steps": "2", "step-size": "1.7", "jitter": "5", "seed": "4321"}
    for name, value in values.items():
        page.fill(f"#opt-{name}", value)
    page.select_option("#opt-normalize", "std")
    page.click("#start")
    page.wait_for_function("/^dream run \\w+ queued$/.test(document.querySelector('#message').textContent)",
                           timeout=60_000)
    job = page.inner_text("#message").split()[2]
    assert "--octaves 64" in page.inner_text("#notes")  # the check's note: fewer octaves fit
    card = page.locator(f"#gallery .card[data-job='{job}'][data-state='done']")
    card.locator("img").wait_for(timeout=90_000)
    assert card.locator("img").get_attribute("alt")
    # the "queued" message does not outlive the run
    page.wait_for_function(f"document.querySelector('#message').textContent === 'dream run {job} done'")
    # another form, another photo, another tab: "use again" brings that run back
    page.fill("#opt-steps", "9")
    page.fill("#opt-step-size", "2.5")
    page.click(".drop[data-role='input'] .remove")
    page.click("#tab-zoom")
    card.get_by_role("button", name="use again").click()
    page.wait_for_selector("#tab-dream[aria-selected='true']")
    page.wait_for_selector(f".drop[data-role='input'] .thumb[data-upload='{upload}']")
    for name, value in values.items():
        assert page.input_value(f"#opt-{name}") == value, name
    assert page.input_value("#opt-normalize") == "std"
    assert "photo.png" in page.inner_text(".drop[data-role='input'] .thumb")
    # delete: the card goes, and so does the run's folder
    folder = env["studio"] / job
    assert folder.is_dir()
    card.get_by_role("button", name="delete").click()
    card.wait_for(state="detached")
    assert not folder.exists()
    assert job not in [j["id"] for j in _call(server, "GET", "/api/jobs")[1]["gallery"]]
    page.reload()
    page.wait_for_selector("#connection[data-state='live']")
    page.wait_for_timeout(500)
    assert page.locator(f"#gallery .card[data-job='{job}']").count() == 0


@pytest.mark.parametrize("width", [360, 390, 768, 1440, 1920])
def test_no_sideways_scroll_with_a_long_title(page, server, width):
    long_name = "a_very_long_photo_name_without_any_space_to_break_at_" * 4 + ".png"
    page.set_input_files("#file-input", files=[{"name": long_name, "mimeType": "image/png",
                                                "buffer": png_bytes(40, 40, 3)}])
    page.wait_for_selector(".drop[data-role='input'][data-count='1']")
    upload = page.get_attribute(".drop[data-role='input'] .thumb", "data-upload")
    job = _submit(server, upload, QUICK)["id"]
    _finish(server, job)
    page.locator(f"#gallery .card[data-job='{job}']").locator("img, .no-picture").first.click()  # its title, above
    page.wait_for_selector(f"#current[data-job='{job}']")
    page.set_viewport_size({"width": width, "height": 800})
    for tab in ("dream", "style", "zoom", "video"):
        _tab(page, tab).click()
        page.wait_for_timeout(100)
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, f"{tab} tab at {width} px: the page is {scroll} px wide"
        for name in ("dream", "style", "zoom", "video"):  # every tab can be seen and reached
            box = _tab(page, name).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= inner, name


def test_a_reload_keeps_the_tab_the_form_and_the_photo(page, photo):
    upload = _upload_photo(page, photo)
    page.fill("#opt-steps", "7")
    page.fill("#opt-layers", "inception_4d/output")
    page.select_option("#opt-normalize", "std")
    _tab(page, "zoom").click()
    page.fill("#opt-frames", "13")
    page.check("#opt-loop")
    page.get_by_role("button", name=re.compile("random", re.I)).click()
    seed = page.input_value("#opt-seed")
    assert seed.isdigit() and seed != "0"
    page.reload()
    page.wait_for_selector("#connection[data-state='live']")
    assert _tab(page, "zoom").get_attribute("aria-selected") == "true"
    assert (page.input_value("#opt-frames"), page.is_checked("#opt-loop"), page.input_value("#opt-seed")) == \
        ("13", True, seed)
    page.wait_for_selector(f".drop[data-role='input'] .thumb[data-upload='{upload}']")
    _tab(page, "dream").click()
    assert (page.input_value("#opt-steps"), page.input_value("#opt-layers"), page.input_value("#opt-normalize")) == \
        ("7", "inception_4d/output", "std")
    assert "photo.png" in page.inner_text(".drop[data-role='input'] .thumb")


def _contrast(a, b) -> float:
    def luminance(rgb):
        c = [v / 255 for v in rgb[:3]]
        c = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _rgb(css: str) -> list[float]:
    return [float(v) for v in css[css.index("(") + 1:css.index(")")].replace(",", " ").split()[:3]]


@pytest.mark.skipif(not HAVE_AXE, reason="axe-core is not installed (pip install axe-playwright-python: the test extra)")
def test_accessibility(page, server, photo):
    from importlib.resources import files
    # file choosers are intercepted from now on (a listener added just before the key press
    # turns interception on asynchronously, and the dialog can open first)
    page.on("filechooser", lambda chooser: None)
    upload = _upload_photo(page, photo)
    job = _submit(server, upload, QUICK)["id"]
    page.wait_for_selector(f"#gallery .card[data-job='{job}'][data-state='done'] img", timeout=90_000)
    page.locator(f"#gallery .card[data-job='{job}'] .open").click()
    page.wait_for_selector(f"#current[data-job='{job}'][data-state='done']")

    # axe-core over the whole page, on each tab
    page.add_script_tag(content=(files("axe_playwright_python") / "axe.min.js").read_text())
    for tab in ("dream", "style", "zoom", "video"):
        page.click(f"#tab-{tab}")
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [f"{v['id']} ({v['impact']}): {v['help']}: {[n['target'] for n in v['nodes']]}"
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert bad == [], f"{tab}: {bad}"

    # what axe does not look at: tabs by arrow keys, the live parts, placeholders, the drop zone
    page.focus("#tab-video")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-dream"
    assert page.get_attribute("#tab-dream", "aria-selected") == "true"
    page.keyboard.press("End")
    assert page.get_attribute("#tab-video", "aria-selected") == "true"
    assert page.get_attribute("#tab-dream", "aria-selected") == "false"
    panel = page.get_attribute("#tab-video", "aria-controls")
    assert page.get_attribute(f"#{panel}", "role") == "tabpanel"
    page.keyboard.press("Home")

    bar = page.locator("[role='progressbar']")
    assert bar.get_attribute("aria-label") and bar.get_attribute("aria-valuenow") == "100"
    assert (bar.get_attribute("aria-valuemin"), bar.get_attribute("aria-valuemax")) == ("0", "100")
    said = page.locator("[aria-live='polite']").all_inner_texts()
    assert any("done" in text for text in said), said
    assert page.get_attribute("#preview", "alt")

    for field in page.locator("#options [aria-describedby]").all():
        help_id = field.get_attribute("aria-describedby").split()[-1]
        assert page.locator(f"#{help_id}").inner_text().strip()
    help_text = page.locator("#help-layers")  # cut to one line, whole while its field has focus
    assert help_text.evaluate("e => e.scrollWidth > e.clientWidth")
    page.focus("#opt-layers")
    assert help_text.is_visible() and help_text.evaluate("e => e.scrollWidth <= e.clientWidth")
    options = _call(server, "GET", "/api/options")[1]["dream"]["fields"]
    assert all(page.evaluate(f"document.getElementById('opt-{f['name']}').tagName") == "SELECT"
               for f in options if f["choices"])

    for placeholder in page.locator("#options input[placeholder]").all():
        colour = placeholder.evaluate("e => getComputedStyle(e, '::placeholder').color")
        background = placeholder.evaluate("e => getComputedStyle(e).backgroundColor")
        assert _contrast(_rgb(colour), _rgb(background)) >= 4.5, (colour, background)

    page.focus("#tab-dream")
    page.keyboard.press("Tab")  # the drop zone is the next stop, with a visible ring
    assert page.evaluate("document.activeElement.closest('.drop') !== null")
    ring = page.evaluate("(() => { const s = getComputedStyle(document.activeElement.closest('.drop'));"
                         " return [s.outlineStyle, parseFloat(s.outlineWidth)]; })()")
    assert ring[0] != "none" and ring[1] >= 2
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value is not None


def test_the_video_form_shows_the_options_of_the_chosen_kind_of_run(page):
    _tab(page, "video").click()
    style_only, dream_only = page.locator("#opt-temporal-weight"), page.locator("#opt-steps-per-frame")
    assert style_only.is_visible() and not dream_only.is_visible()
    assert page.locator(".drop[data-role='style']").is_visible()
    page.check("#opt-dream")
    assert dream_only.is_visible() and not style_only.is_visible()
    assert not page.locator(".drop[data-role='style']").is_visible()  # no style images for a dream
    legend = page.locator("fieldset", has=dream_only).locator("legend").inner_text()
    assert "--dream" in legend
