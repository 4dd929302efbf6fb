"""The HTTP side: a small ASGI app served by uvicorn in the daemon's own asyncio loop.

``/metrics`` (Prometheus), ``/healthz``, ``/api/v1/summary``, ``/api/v1/peers`` and the status
page at ``/``. Handlers only read the daemon's state; they never block the loop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Protocol
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from tlslogd.peers import CATEGORIES
from tlslogd.since import BadRequest, parse_since

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SORTS = ("count", "last_seen", "peer")


class WebView(Protocol):
    """What the app reads (the daemon implements it)."""

    registry: CollectorRegistry

    def health(self) -> tuple[bool, dict[str, Any]]: ...

    def summary(self) -> dict[str, Any]: ...

    def peer_rows(
        self, category: str | None, since: float | None, limit: int, sort: str
    ) -> tuple[int, list[dict[str, Any]]]: ...

    def status_page(self) -> str: ...


_PEER_PARAMETERS: Final = frozenset({"category", "since", "limit", "sort"})


def peers_query(
    query: dict[str, list[str]], now: float
) -> tuple[str | None, float | None, int, str]:
    def one(name: str) -> str | None:
        values = query.get(name)
        if values and len(values) > 1:
            raise BadRequest(f"{name} given {len(values)} times: expected it once")
        return values[0] if values else None

    unknown = sorted(set(query) - _PEER_PARAMETERS)
    if unknown:
        raise BadRequest(
            f"unknown parameter {unknown[0]!r}: expected {', '.join(sorted(_PEER_PARAMETERS))}"
        )
    category = one("category")
    if category is not None and category not in CATEGORIES:
        raise BadRequest(f"category={category!r}: expected one of {', '.join(CATEGORIES)}")
    since_text = one("since")
    since = parse_since(since_text, now) if since_text is not None else None
    limit_text = one("limit")
    limit_text = "100" if limit_text is None else limit_text
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 10_000:
        raise BadRequest(f"limit={limit_text!r}: expected a number from 1 to 10000")
    sort = one("sort")
    sort = "count" if sort is None else sort
    if sort not in _SORTS:
        raise BadRequest(f"sort={sort!r}: expected one of {', '.join(_SORTS)}")
    return category, since, int(limit_text), sort


class App:
    """ASGI application (HTTP only; no lifespan)."""

    def __init__(self, view: WebView) -> None:
        self.view = view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method = scope["method"]
        path = scope["path"]
        if method not in ("GET", "HEAD"):
            await self._respond(
                send,
                405,
                b"method not allowed\n",
                "text/plain",
                head=False,
                extra=[(b"allow", b"GET, HEAD")],
            )
            return
        head = method == "HEAD"
        try:
            if path == "/metrics":
                accept = _header(scope, b"accept")
                encoder, content_type = choose_encoder(accept or "")
                await self._respond(send, 200, encoder(self.view.registry), content_type, head)
            elif path == "/healthz":
                ok, detail = self.view.health()
                await self._json(send, 200 if ok else 503, detail, head)
            elif path == "/api/v1/summary":
                if scope.get("query_string"):
                    raise BadRequest("/api/v1/summary takes no parameters")
                await self._json(send, 200, self.view.summary(), head)
            elif path == "/api/v1/peers":
                query = parse_qs(
                    scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
                )
                category, since, limit, sort = peers_query(query, time.time())
                matching, rows = self.view.peer_rows(category, since, limit, sort)
                body = {
                    "category": category,
                    "since": since,
                    "sort": sort,
                    "limit": limit,
                    "matching": matching,
                    "peers": rows,
                }
                await self._json(send, 200, body, head)
            elif path == "/":
                page = self.view.status_page().encode()
                await self._respond(send, 200, page, "text/html; charset=utf-8", head)
            else:
                await self._respond(send, 404, b"not found\n", "text/plain", head)
        except BadRequest as exc:
            await self._json(send, 400, {"error": str(exc)}, head)

    async def _json(self, send: Send, status: int, data: Any, head: bool) -> None:
        body = json.dumps(data, indent=1, sort_keys=False).encode() + b"\n"
        await self._respond(send, status, body, "application/json", head)

    @staticmethod
    async def _respond(
        send: Send,
        status: int,
        body: bytes,
        content_type: str,
        head: bool,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
