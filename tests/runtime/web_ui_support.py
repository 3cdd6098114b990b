"""Helpers of the web page tests: a headless Chromium driven by Playwright, the painted strokes' geometry, the
multipart body the page posted.

Chromium is Debian's package (`apt-get install -y chromium`), driven through its executable path; Playwright's
own browser download is never used. Without the browser (or Playwright) the browser tests are skipped with the
reason and the install line, except under CI=true, where they fail: CI installs both (.ci/test_deps.sh).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = ("install them with `apt-get install -y chromium && pip install playwright` "
           "(or `bash .ci/test_deps.sh`, which also fetches axe-core)")
#: Flags for a root user in a sandboxed machine: no GPU, no network beyond the page, no background services.
#: Playwright starts every browser with a fresh temporary --user-data-dir of its own.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
AXE_JS = Path(os.environ.get("LAMA_AXE_JS", REPO / ".cache/web-ui/node_modules/axe-core/axe.min.js"))


def chromium_path() -> str | None:
    explicit = os.environ.get("LAMA_CHROMIUM")
    return explicit if explicit and Path(explicit).exists() else shutil.which("chromium") or shutil.which(
        "chromium-browser")


def unavailable(reason: str) -> None:
    """Skip, or fail under CI (the browser is part of CI's install; a skip there would hide a broken page)."""
    message = f"{reason}; {INSTALL}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the browser test cannot run: {message}", pytrace=False)
    pytest.skip(message)


def launch_chromium(playwright: Any) -> Any:
    path = chromium_path()
    if path is None:
        unavailable("needs Chromium (no `chromium` on PATH, LAMA_CHROMIUM unset)")
    try:
        return playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
    except Exception as exc:  # playwright's Error: the message says why the browser did not start
        unavailable(f"Chromium at {path} did not start: {str(exc).splitlines()[0]}")


# --- strokes ------------------------------------------------------------------------------------------------

def distance_to_segment(height: int, width: int, start: tuple, end: tuple) -> np.ndarray:
    """Distance of every pixel centre to the segment start-end (image pixel coordinates, x then y)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    return np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))


def stroke_distance(height: int, width: int, strokes: list) -> np.ndarray:
    return np.min([distance_to_segment(height, width, start, end) for start, end in strokes], axis=0)


# --- the request the page sent --------------------------------------------------------------------------------

#: Test-only instrumentation, added before the page's own script: records every FormData the page passes to
#: fetch() (Playwright reports no body for multipart requests with files). Playwright injects it through the
#: DevTools protocol, which the page's CSP does not govern.
RECORD_FORMS = """
window.__forms = [];
const pageFetch = window.fetch;
const asBase64 = (blob) => new Promise((resolve) => {
  const reader = new FileReader();
  reader.onload = () => resolve(String(reader.result).split(",")[1] || "");
  reader.readAsDataURL(blob);
});
window.fetch = async function (url, options) {
  if (options && options.body instanceof FormData) {
    const fields = [];
    for (const [name, value] of options.body.entries()) {
      fields.push(value instanceof Blob ? [name, value.name, await asBase64(value)] : [name, null, btoa(value)]);
    }
    window.__forms.push(fields);
  }
  return pageFetch.apply(this, arguments);
};
"""


def posted_forms(page: Any) -> list:
    """Every form the page posted: a list of {name: (filename or None, bytes)}."""
    return [{name: (filename, base64.b64decode(data)) for name, filename, data in form}
            for form in page.evaluate("window.__forms")]
