"""The gRPC build's only HTTP: `/health` and Prometheus text on `--prometheus-port`.

TEI's exporter answers `GET /health` with `OK` and every other path with the metrics; this is
the same, in a few lines of HTTP/1.1 on an anyio listener (one request per connection).
"""

from __future__ import annotations

import anyio
import anyio.abc

from tei_reconciler.engine.faults import Faults
from tei_reconciler.engine.metrics import CONTENT_TYPE, Metrics

_MAX_HEAD = 64 * 1024


def _response(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _handle(stream: anyio.abc.ByteStream, metrics: Metrics, faults: Faults) -> None:
    async with stream:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < _MAX_HEAD:
            try:
                head += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        path = request_line[1].split("?", 1)[0] if len(request_line) > 1 else "/"
        if path == "/health":
            if faults.health == "hang":
                await anyio.sleep_forever()
            if faults.health == "fail":
                reply = _response("503 Service Unavailable", b"", "text/plain")
            else:
                reply = _response("200 OK", b"OK", "text/plain")
        else:
            reply = _response("200 OK", metrics.render().encode(), CONTENT_TYPE)
        try:
            await stream.send(reply)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return


async def serve_prometheus(
    listener: anyio.abc.Listener[anyio.abc.SocketStream], metrics: Metrics, faults: Faults
) -> None:
    """Serve until cancelled."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        await _handle(stream, metrics, faults)

    async with listener:
        await listener.serve(handler)
