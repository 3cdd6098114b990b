"""Connection guards uvicorn lacks: a deadline for request headers, and a cap on connections that idle.

uvicorn closes a keep-alive connection only after a response, and never times out a request whose headers
arrive one byte a second (slowloris). `guarded_h11_protocol` returns uvicorn's h11 protocol with:

- a header deadline: a connection that has not completed its request line and headers `header_timeout_s`
  after it opened (or after its previous response) is closed;
- an idle cap: at most `max_idle` connections may wait for headers at once; one more closes the oldest
  waiting one, so idle sockets can never crowd out `/health` or real requests.

Imported only when the server runs (uvicorn is an optional dependency).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

LOG = logging.getLogger("lama_deploy.server")


def guarded_h11_protocol(header_timeout_s: float, max_idle: int) -> type:
    """A subclass of uvicorn's H11Protocol with the header deadline and idle cap above (state per class)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    waiting: "OrderedDict[Any, None]" = OrderedDict()  # connections waiting for a request, oldest first

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_request()

        def _await_request(self) -> None:
            """Start the header deadline; from now until a request's headers arrive this connection idles."""
            self._cycle_when_armed = self.cycle
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_deadline)
            waiting[self] = None
            while len(waiting) > max_idle:
                oldest, _ = waiting.popitem(last=False)
                oldest._drop("more than %d idle connections; closed the oldest" % max_idle)

        def _request_started(self) -> bool:
            return self.cycle is not self._cycle_when_armed

        def _stop_waiting(self) -> None:
            waiting.pop(self, None)
            timer = getattr(self, "_header_timer", None)
            if timer is not None:
                timer.cancel()
                self._header_timer = None

        def _header_deadline(self) -> None:
            self._header_timer = None
            if not self._request_started():
                self._drop("no complete request headers within %g s" % header_timeout_s)

        def _drop(self, why: str) -> None:
            self._stop_waiting()
            if not self.transport.is_closing():
                client = self.client or ("-", 0)
                LOG.info("%s: connection closed: %s", client[0], why)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._request_started():
                self._stop_waiting()

        def on_response_complete(self) -> None:
            self._stop_waiting()
            self._await_request()  # keep-alive: the next request gets the same deadline (armed before a
            super().on_response_complete()  # pipelined request is started here, so that one is not cut)
            if self.transport.is_closing() or self._request_started():
                self._stop_waiting()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

    return GuardedH11Protocol
