"""The Prometheus endpoint (`GET /metrics`) on the event loop: no thread per connection, bounded, optional token.

prometheus_client's own server spends a thread on every connection for as long as the client keeps it open,
and has no authentication; this one reads each request under a timeout, serves at most `max_connections`
at once (more are closed at once), and can require `Authorization: Bearer <token>` like the gRPC services.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .auth import bearer_matches

log = logging.getLogger("serve.metrics")
READ_TIMEOUT_S = 5.0
MAX_HEADER_BYTES = 16 << 10


class MetricsEndpoint:
    def __init__(self, registry: CollectorRegistry, tokens: tuple[str, ...] = (), max_connections: int = 16) -> None:
        self._registry, self._tokens = registry, tokens
        self._slots = max_connections
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: a free port); returns the port. OSError when it is taken."""
        self._server = await asyncio.start_server(self._handle, host, port, reuse_address=True,
                                                  limit=MAX_HEADER_BYTES)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots <= 0:
            writer.close()
            return
        self._slots -= 1
        try:
            status, body, kind = await asyncio.wait_for(self._respond(reader), READ_TIMEOUT_S)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n")
            if status.startswith("401"):
                head += 'WWW-Authenticate: Bearer realm="metrics"\r\n'
            writer.write(head.encode() + b"\r\n" + body)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_S)
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError, asyncio.IncompleteReadError):
            pass  # a slow, closed or oversized request: nothing to answer
        finally:
            self._slots += 1
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[str, bytes, str]:
        request_line = (await reader.readuntil(b"\r\n")).decode("latin-1").split()
        headers = {}
        while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
            key, _, value = line.decode("latin-1").partition(":")
            headers.setdefault(key.strip().lower(), []).append(value.strip())
        if len(request_line) != 3 or request_line[0] != "GET":
            return "405 Method Not Allowed", b"GET /metrics only\n", "text/plain"
        if request_line[1].split("?")[0] not in ("/metrics", "/"):
            return "404 Not Found", b"GET /metrics\n", "text/plain"
        given = headers.get("authorization", [])
        if self._tokens and (len(given) != 1 or not bearer_matches(given[0], self._tokens)):
            return "401 Unauthorized", b"this endpoint needs 'Authorization: Bearer <metrics token>'\n", "text/plain"
        return "200 OK", generate_latest(self._registry), CONTENT_TYPE_LATEST
