"""The web page of `lama-deploy serve` (`GET /`): one more client of `POST /inpaint`, served from package data.

Three read-only routes, `/` (static/index.html), `/ui.js` and `/ui.css`; nothing else. The page talks only to
this server (`POST /inpaint`, `GET /health`) and loads nothing from elsewhere, so it works offline. The files are
read once when the app is built. Every response carries a strict Content-Security-Policy: no inline script or
style, no other origin, no framing (docs/security.md explains each directive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Tuple

STATIC = Path(__file__).resolve().parent / "static"

#: route -> (file under static/, media type)
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/ui.js": ("ui.js", "text/javascript; charset=utf-8"),
    "/ui.css": ("ui.css", "text/css; charset=utf-8"),
}

#: Scripts and styles only from the files above; requests only to this origin; images from this origin or the
#: page's own blob:/data: URLs (the chosen photo, the result); no plugins, forms, frames or base rewrites.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so a server upgrade never pairs an old script with a new page
}


def load_pages() -> Dict[str, Tuple[bytes, str]]:
    """route -> (bytes, media type), read now: a missing file is a broken install and fails at start."""
    return {route: ((STATIC / name).read_bytes(), media) for route, (name, media) in PAGES.items()}


def add_ui_routes(app: Any) -> None:
    """GET (and HEAD) routes for the page and its two assets, each with `SECURITY_HEADERS`."""
    from starlette.responses import Response

    for route, (body, media) in load_pages().items():
        async def page(request: Any, body: bytes = body, media: str = media) -> Any:
            return Response(body, media_type=media, headers=SECURITY_HEADERS)

        app.router.add_route(route, page, methods=["GET", "HEAD"])
