"""`lama-deploy serve`'s library: the FastAPI app (`app`), connection guards (`http`), request limits
(`limits`) and the bounded inference pool (`pool`). FastAPI and uvicorn are imported only when an app is built."""

from __future__ import annotations

from .limits import ServerLimits

__all__ = ["ServerLimits", "create_app"]


def create_app(*args, **kwargs):
    """`lama_deploy.runtime.server.app.create_app` (imported on use, so this package stays light)."""
    from .app import create_app as _create_app

    return _create_app(*args, **kwargs)
