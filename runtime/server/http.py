"""Connection guards uvicorn lacks: a deadline for request headers, and a cap on connections that idle.

uvicorn closes a keep-alive connection only after a response, and never times out a request whose headers
arrive one byte a second (slowloris). `guarded_h11_protocol` returns uvicorn's h11 protocol with:

- a header deadline: a connection that has not completed its request line and headers `header_timeout_s`
  after it opened (or after its previous response) is closed;
- idle caps: at most `max_idle` connections per client address may wait for headers; one more closes that
  address's oldest waiting connection, but only one that has idled `min_idle_s` or longer (a client that
  connected a moment ago and is sending its request is never the one evicted, so a burst of real requests
  is not reset); all addresses together are held to `4 x max_connections` waiting connections, beyond which
  the address with the most waiting connections loses its oldest;
- waiting connections do not count against uvicorn's `limit_concurrency` (`max_connections`): a flood of
  empty connections cannot turn real requests into 503s.

Imported only when the server runs (uvicorn is an optional dependency).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

LOG = logging.getLogger("lama_deploy.server")
#: Closed connections are logged at most once per reason in this many seconds (with a count): a flood of
#: evictions must not become a flood of log lines.
DROP_LOG_EVERY_S = 10.0


class _DropLog:
    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def note(self, address: str, why: str) -> None:
        self.count[why] = self.count.get(why, 0) + 1
        now = time.monotonic()
        if why in self.last and now - self.last[why] < DROP_LOG_EVERY_S:
            return
        count = self.count.pop(why)
        self.last[why] = now
        LOG.info("%s: connection closed: %s%s", address, why,
                 "" if count == 1 else " (%d connections for this reason since the last such line)" % count)


def guarded_h11_protocol(header_timeout_s: float, max_idle: int, min_idle_s: float = 1.0,
                         max_connections: int | None = None) -> type:
    """A subclass of uvicorn's H11Protocol with the header deadline and idle caps above (state per class)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    drops = _DropLog()
    closing: "set[Any]" = set()  # dropped, still in uvicorn's connection set until connection_lost
    waiting: "OrderedDict[Any, float]" = OrderedDict()  # connections waiting for a request -> since, oldest first
    by_address: "dict[str, OrderedDict[Any, float]]" = {}
    total_cap = 4 * max_connections if max_connections else 32 * max_idle

    def evict(queue: "OrderedDict[Any, float]", cap: int, now: float, why: str) -> None:
        """Close the oldest of `queue` while it is over `cap`, but only connections idle for min_idle_s or more."""
        while len(queue) > cap:
            oldest, since = next(iter(queue.items()))
            if now - since < min_idle_s:
                return  # all younger: a client that connected a moment ago may be about to send its request
            oldest._drop(why)

    def evict_flooder(now: float) -> None:
        """Over the total cap: the address holding the most waiting connections pays (its oldest first, young
        ones too once it is over its own cap), so an address within its cap never loses a connection to it."""
        while len(waiting) > total_cap:
            address, queue = max(by_address.items(), key=lambda item: len(item[1]))
            if len(queue) <= max_idle:
                evict(waiting, total_cap, now, "more than %d idle connections; closed the oldest" % total_cap)
                return
            next(iter(queue))._drop("more than %d connections waiting for headers, most from this address; closed "
                                    "its oldest" % total_cap)

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._await_request()
            if len(waiting) > total_cap and not self.transport.is_closing():
                self._drop("more than %d connections waiting for headers, none idle for %g s; refused the newest"
                           % (total_cap, min_idle_s))

        def _await_request(self) -> None:
            """Start the header deadline; from now until a request's headers arrive this connection idles."""
            self._cycle_when_armed = self.cycle
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_deadline)
            now = self.loop.time()
            address = (self.client or ("-", 0))[0]
            waiting[self] = now
            by_address.setdefault(address, OrderedDict())[self] = now
            evict(by_address[address], max_idle, now, "more than %d idle connections from this address; closed "
                  "the oldest" % max_idle)
            evict_flooder(now)

        def _request_started(self) -> bool:
            return self.cycle is not self._cycle_when_armed

        def _stop_waiting(self) -> None:
            waiting.pop(self, None)
            address = (self.client or ("-", 0))[0]
            mine = by_address.get(address)
            if mine is not None:
                mine.pop(self, None)
                if not mine:
                    del by_address[address]
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
                drops.note((self.client or ("-", 0))[0], why)
                closing.add(self)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if max_connections is not None:
                # connections still waiting for headers are bounded by the idle caps above; they must not
                # count against --max-connections, or a flood of empty ones would turn real requests into 503s
                self.limit_concurrency = max_connections + len(waiting) + len(closing) - (1 if self in waiting else 0)
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
            closing.discard(self)
            super().connection_lost(exc)

    return GuardedH11Protocol
