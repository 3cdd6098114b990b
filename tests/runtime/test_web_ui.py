"""The web page of `lama-deploy serve` (`GET /`): its routes and headers (app factory, no browser), then the page
itself in a real headless Chromium against the real server (tiny ONNX model, random weights, loopback only):
paint two strokes, inpaint, download; errors; keyboard; touch on a phone-sized screen; axe-core and Tab order.

LAMA_UPDATE_SCREENSHOT=1 rewrites docs/images/web_ui.png from the inpainting test.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server needs fastapi (pip install 'lama-deploy[server]')")
pytest.importorskip("uvicorn", reason="the server needs uvicorn (pip install 'lama-deploy[server]')")
httpx = pytest.importorskip("httpx", reason="the tests talk to the server with httpx")

from lama_deploy.runtime.server import app as server, ui  # noqa: E402
from lama_deploy.scripts.commands import serve as serve_command  # noqa: E402
from lama_model.synthetic import demo_scene  # noqa: E402
from server_support import RunningServer, _start_server  # noqa: E402
from web_ui_support import (AXE_JS, RECORD_FORMS, REPO, launch_chromium, posted_forms, stroke_distance,  # noqa: E402
                            unavailable)

CSP_DIRECTIVES = {"default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' blob: data:",
                  "connect-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'"}
PHOTO_HW = (720, 1200)  # larger than the space on screen: shown scaled, painted at full size
BRUSH = 40  # the page's default brush diameter, in screen pixels
#: Two strokes in fractions of the shown canvas (x, y): a long one across the wall, a short one in the sky.
STROKES = [((0.20, 0.62), (0.60, 0.70)), ((0.62, 0.18), (0.80, 0.30))]
SCREENSHOT = REPO / "docs/images/web_ui.png"


# --- routes and headers (no browser) ---------------------------------------------------------------------------

class StubInpainter:
    def info(self) -> dict:
        return {"backend": "stub", "model": None, "weights": "stub weights"}

    def close(self) -> None:
        pass


def _get_all(app, paths: list[str], method: str = "GET") -> list:
    async def get() -> list:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.request(method, path) for path in paths]
    return asyncio.run(get())


def test_page_and_assets_are_served_with_a_strict_policy() -> None:
    app = server.create_app(StubInpainter())
    page, script, style = _get_all(app, ["/", "/ui.js", "/ui.css"])
    for response, media in ((page, "text/html"), (script, "text/javascript"), (style, "text/css")):
        assert response.status_code == 200 and response.headers["content-type"].startswith(media)
        assert set(response.headers["content-security-policy"].split("; ")) == CSP_DIRECTIVES
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert page.content == (ui.STATIC / "index.html").read_bytes() and len(script.content) > 5000
    assert [r.status_code for r in _get_all(app, ["/"], "HEAD")] == [200]
    assert [r.status_code for r in _get_all(app, ["/", "/ui.js"], "POST")] == [405, 405]  # nothing writes


def test_page_has_no_inline_code_and_loads_nothing_from_elsewhere() -> None:
    html = (ui.STATIC / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S)
    assert len(scripts) == 1 and scripts[0].strip() == ""  # the one script is ui.js, by src
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html)  # no inline style or handler attributes
    urls = re.findall(r"""(?:src|href)=["']([^"']*)["']""", html)
    assert sorted(urls) == ["#", "data:,", "ui.css", "ui.js"]
    script = (ui.STATIC / "ui.js").read_text()
    assert not re.search(r"\beval\(|new Function|innerHTML|https?://", script)


def test_no_ui_serves_the_api_alone() -> None:
    app = server.create_app(StubInpainter(), ui=False)
    assert [r.status_code for r in _get_all(app, ["/", "/ui.js", "/ui.css", "/health"])] == [404, 404, 404, 200]
    assert serve_command.build_parser().parse_args(["--model", "m.onnx", "--no-ui"]).ui is False
    assert serve_command.build_parser().parse_args(["--model", "m.onnx"]).ui is True


def test_the_wheel_ships_every_static_file() -> None:
    """pyproject's package-data globs cover static/ (the wheel build itself is tests/house/test_packaging.py)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = config["lama_deploy.runtime.server"]
    files = sorted(p.relative_to(ui.STATIC.parent).as_posix() for p in ui.STATIC.iterdir())
    assert files == ["static/index.html", "static/ui.css", "static/ui.js"]
    assert all(any(Path(f).match(g) for g in globs) for f in files)


# --- the page in Chromium --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("needs Playwright for Python (`import playwright` failed)")
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def live(browser, tiny_onnx: Path, tmp_path_factory) -> RunningServer:
    """The server for the browser tests (asks for the browser first: without one they skip before any export)."""
    running = _start_server(tiny_onnx, tmp_path_factory.mktemp("web") / "server.log", "--max-body-mb", "4")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("inputs")
    image, mask = demo_scene(*PHOTO_HW)
    paths = {"photo": folder / "scene.png", "mask": folder / "scene_mask.png", "text": folder / "notes.txt"}
    Image.fromarray(image).save(paths["photo"])
    Image.fromarray(mask).save(paths["mask"])
    paths["text"].write_text("not an image\n")
    return paths


class PageWatch:
    """A page whose console errors, page errors and CSP reports are collected (any of them fails the test)."""

    def __init__(self, context, url: str) -> None:
        self.page = context.new_page()
        self.page.add_init_script(RECORD_FORMS)
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.response = self.page.goto(url)
        self.page.wait_for_function("() => document.getElementById('model-info').textContent.startsWith('Model')")

    def open_photo(self, path: Path) -> dict:
        self.page.set_input_files("#image-file", str(path))
        self.page.wait_for_selector("#canvas-wrap:not([hidden])")
        return self.page.locator("#mask").bounding_box()

    def painted(self) -> np.ndarray:
        """The mask canvas at full resolution: True where paint covers at least half the pixel (the page's rule)."""
        alpha = self.page.evaluate("""() => {
            const c = document.getElementById('mask'), a = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = ''; for (let i = 3; i < a.length; i += 4) s += a[i] >= 128 ? '1' : '0'; return [c.height, c.width, s]; }""")
        height, width, bits = alpha
        return (np.frombuffer(bits.encode(), np.uint8) == ord("1")).reshape(height, width)

    def drag(self, box: dict, start: tuple, end: tuple) -> None:
        mouse = self.page.mouse
        mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
        mouse.down()
        mouse.move(box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=12)
        mouse.up()

    def error_text(self) -> str:
        self.page.wait_for_selector("#error:not([hidden])", timeout=60_000)
        return self.page.inner_text("#error")


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield context
    context.close()


def _strokes_in_pixels(box: dict, scale: float) -> list:
    to_px = lambda p: (p[0] * box["width"] * scale, p[1] * box["height"] * scale)  # noqa: E731
    return [(to_px(a), to_px(b)) for a, b in STROKES]


def test_paint_two_strokes_inpaint_and_download(live: RunningServer, context, files: dict) -> None:
    watch = PageWatch(context, live.url + "/")
    page = watch.page
    assert set(watch.response.headers["content-security-policy"].split("; ")) == CSP_DIRECTIVES
    assert page.is_visible("#weights-badge") and "random" in page.inner_text("#weights-badge").lower()
    box = watch.open_photo(files["photo"])
    height, width = PHOTO_HW
    scale = width / box["width"]  # image pixels per screen pixel: the canvas is shown scaled to fit
    assert scale > 1.05 and abs(height / box["height"] - scale) < 0.01
    for start, end in STROKES:
        watch.drag(box, start, end)

    painted = watch.painted()
    distance = stroke_distance(height, width, _strokes_in_pixels(box, scale))
    radius = BRUSH / 2 * scale
    assert painted.shape == PHOTO_HW
    assert painted[distance <= radius - 2].all() and not painted[distance > radius + 2].any(), \
        f"paint outside the brush: {int(painted[distance > radius + 2].sum())} px"

    page.click("#inpaint")
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "scene_inpainted.png"
    result_bytes = Path(download.value.path()).read_bytes()

    original = np.asarray(Image.open(files["photo"]))
    result = Image.open(io.BytesIO(result_bytes))
    assert (result.size, result.mode) == ((width, height), "RGB")
    out = np.asarray(result)
    outside = distance > radius + 2
    assert np.array_equal(out[outside], original[outside]), \
        f"{int((out[outside] != original[outside]).any(-1).sum())} px changed outside the strokes"
    changed = (out[painted] != original[painted]).any(-1).mean()
    assert changed > 0.5, f"only {changed:.0%} of the painted pixels changed (random weights)"

    # the page sent the file as chosen, a full-resolution binary mask, and no option the user did not set
    (parts,) = posted_forms(page)
    assert sorted(parts) == ["image", "mask"]
    assert parts["image"] == ("scene.png", files["photo"].read_bytes())
    sent_mask = np.asarray(Image.open(io.BytesIO(parts["mask"][1])).convert("L"))
    assert np.array_equal(sent_mask > 0, painted) and set(np.unique(sent_mask)) == {0, 255}
    # the same request with curl's client gives the same bytes the page offered for download
    again = httpx.post(live.url + "/inpaint", files={"image": parts["image"], "mask": parts["mask"]}, timeout=60)
    assert again.content == result_bytes

    info = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#result-info dt')]
                                 .map((dt) => [dt.textContent, dt.nextElementSibling.textContent]))""")
    assert info["Strategy"] == again.headers["x-inpaint-strategy"] and info["Backend"] == "onnxruntime"
    assert info["Size"].startswith(f"{width}×{height} PNG") and info["Weights"] == again.headers["x-inpaint-weights"]
    assert "random" in info["Weights"] and info["Notes"] == again.headers["x-inpaint-notes"]
    assert re.fullmatch(r"\d+\.\d{3} s on the server, \d+\.\d{2} s round trip", info["Time"]), info["Time"]
    if os.environ.get("LAMA_UPDATE_SCREENSHOT") == "1":
        page.locator("#compare").fill("50")
        page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert watch.problems == []


def test_options_are_sent_only_when_set_and_under_the_api_names(live: RunningServer, context, files: dict) -> None:
    watch = PageWatch(context, live.url + "/")
    page = watch.page
    watch.open_photo(files["photo"])
    page.set_input_files("#mask-file", str(files["mask"]))
    page.wait_for_function("() => document.getElementById('status').textContent.includes('loaded as the mask')")
    page.fill("#threshold", "iopaint")
    page.select_option("#strategy", "whole")
    page.click("#inpaint")
    page.wait_for_selector("#result:not([hidden])", timeout=120_000)
    (parts,) = posted_forms(page)
    assert sorted(parts) == ["image", "mask", "strategy", "threshold"]
    assert parts["threshold"] == (None, b"iopaint") and parts["strategy"] == (None, b"whole")
    assert parts["mask"] == ("scene_mask.png", files["mask"].read_bytes())  # a loaded mask goes as it is
    assert watch.problems == []


def test_a_text_file_shows_the_servers_one_line_error(live: RunningServer, context, files: dict) -> None:
    watch = PageWatch(context, live.url + "/")
    page = watch.page
    page.set_input_files("#image-file", str(files["text"]))
    page.wait_for_function("() => document.getElementById('status').textContent.includes('cannot show notes.txt')")
    page.set_input_files("#mask-file", str(files["mask"]))
    page.click("#inpaint")
    error = watch.error_text()
    # the server's own line: a text file is no accepted image format (checked from its header: 415)
    assert error.startswith("415: cannot read form file 'image': not a PNG, JPEG, WebP, BMP or TIFF file") \
        and "\n" not in error
    assert page.get_attribute("#error", "role") == "alert" and page.is_hidden("#result")
    # the browser logs the failed request itself; nothing else may be logged
    assert [p for p in watch.problems if "status of 415" not in p] == []


def test_a_busy_server_is_shown_as_busy(live: RunningServer, context, files: dict) -> None:
    """The 503 the pool answers when full (tested against the app in test_server.py), replayed to the page."""
    watch = PageWatch(context, live.url + "/")
    page = watch.page
    page.route("**/inpaint", lambda route: route.fulfill(
        status=503, headers={"Retry-After": "7", "Content-Type": "application/json"},
        body='{"error": "server busy: 65 requests already running or queued (--queue-size); retry in 7 s"}'))
    box = watch.open_photo(files["photo"])
    watch.drag(box, *STROKES[0])
    page.click("#inpaint")
    assert watch.error_text() == ("Server busy (503: server busy: 65 requests already running or queued "
                                  "(--queue-size); retry in 7 s); retry in 7 s")
    assert page.is_enabled("#inpaint")  # ready for the retry


def test_keyboard_brush_size_undo_redo_eraser_and_clear(live: RunningServer, context, files: dict) -> None:
    watch = PageWatch(context, live.url + "/")
    page = watch.page
    box = watch.open_photo(files["photo"])
    watch.drag(box, *STROKES[0])
    first = int(watch.painted().sum())
    page.keyboard.press("]")
    page.keyboard.press("]")
    assert page.input_value("#brush-size") == str(BRUSH + 10) and page.inner_text("#brush-size-value") == "50"
    watch.drag(box, *STROKES[1])
    both = int(watch.painted().sum())
    assert both > first > 1000
    page.keyboard.press("Control+z")
    assert int(watch.painted().sum()) == first
    page.keyboard.press("Control+Shift+z")
    assert int(watch.painted().sum()) == both
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+y")
    assert int(watch.painted().sum()) == both
    page.check("#tool-eraser")
    watch.drag(box, *STROKES[1])  # the eraser (50 px) takes back the whole 50 px stroke
    assert int(watch.painted().sum()) == first
    page.click("#clear")
    assert int(watch.painted().sum()) == 0
    page.keyboard.press("Control+z")
    assert int(watch.painted().sum()) == first
    page.keyboard.press("[")
    assert page.input_value("#brush-size") == str(BRUSH + 5)
    assert watch.problems == []


def test_phone_screen_touch_painting(live: RunningServer, browser, files: dict) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    try:
        watch = PageWatch(context, live.url + "/")
        page = watch.page
        box = watch.open_photo(files["photo"])
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing wider than the phone
        assert box["width"] <= 390 and abs(box["width"] / box["height"] - PHOTO_HW[1] / PHOTO_HW[0]) < 0.02
        page.locator("#mask").scroll_into_view_if_needed()
        box = page.locator("#mask").bounding_box()
        cdp = context.new_cdp_session(page)
        points = [(box["x"] + box["width"] * (0.2 + 0.05 * i), box["y"] + box["height"] * 0.5) for i in range(12)]
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": points[0][0], "y": points[0][1]}]})
        for x, y in points[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        painted = watch.painted()
        scale = PHOTO_HW[1] / box["width"]
        strokes = [((0.2 * box["width"] * scale, 0.5 * box["height"] * scale),
                    (0.75 * box["width"] * scale, 0.5 * box["height"] * scale))]
        distance = stroke_distance(*PHOTO_HW, strokes)
        radius = BRUSH / 2 * scale
        assert painted[distance <= radius - 2].all() and not painted[distance > radius + 2].any()
        assert page.is_enabled("#undo") and watch.problems == []
    finally:
        context.close()


# --- accessibility ---------------------------------------------------------------------------------------------

TAB_ORDER = ["image-file", "mask-file", "tool-brush", "brush-size", "undo", "clear", "threshold", "strategy",
             "summary", "inpaint", "compare", "download"]


def test_controls_pass_axe_and_tab_through_in_order(live: RunningServer, browser, files: dict) -> None:
    if not AXE_JS.exists():
        unavailable(f"needs axe-core at {AXE_JS} (npm install --prefix .cache/web-ui axe-core)")
    # axe is injected as a script: this context lets it past the page's CSP (the other tests keep the CSP)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    try:
        watch = PageWatch(context, live.url + "/")
        page = watch.page
        box = watch.open_photo(files["photo"])
        watch.drag(box, *STROKES[0])
        page.click("#inpaint")
        page.wait_for_selector("#result:not([hidden])", timeout=120_000)
        page.add_script_tag(path=str(AXE_JS))
        report = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        violations = [(v["id"], v["impact"], len(v["nodes"])) for v in report["violations"]]
        print("axe-core", page.evaluate("axe.version"), "violations:", violations or "none", file=sys.stderr)
        assert [v for v in violations if v[1] in ("serious", "critical")] == []

        page.click("h1")  # the start of sequential focus navigation: the top of the page
        order = []
        for _ in range(len(TAB_ORDER)):
            page.keyboard.press("Tab")
            order.append(page.evaluate("document.activeElement.id || document.activeElement.tagName.toLowerCase()"))
        assert order == TAB_ORDER
    finally:
        context.close()
