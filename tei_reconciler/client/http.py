"""A small httpx wrapper that speaks the reconciler's REST API for the client commands.

Every failure a user can meet leaves here as one of two exceptions, so each command handles
errors in one place: `ServerError` for an answer in the API's error envelope (printed as
`error: CODE: message` with exit status 1) and `Unreachable` for no answer at all (connection
refused, TLS failure, timeout; exit status 2). Server-Sent Events streams (`follow=true`,
`/events`) are parsed here into `(event, data)` pairs.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx

DEFAULT_SERVER = "http://127.0.0.1:9000"


@dataclass(frozen=True)
class Detail:
    field: str
    message: str
    line: int | None = None
    column: int | None = None


class ServerError(Exception):
    """The API answered with an error envelope (or with something that is not one)."""

    def __init__(self, status: int, code: str, message: str, details: list[Detail]) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @classmethod
    def from_response(cls, response: httpx.Response, body: bytes) -> ServerError:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict) or "code" not in data:
            text = body.decode("utf-8", "replace").strip() or response.reason_phrase
            return cls(response.status_code, f"HTTP_{response.status_code}", text, [])
        details = [
            Detail(
                field=str(d.get("field", "")),
                message=str(d.get("message", "")),
                line=d.get("line"),
                column=d.get("column"),
            )
            for d in data.get("details") or []
            if isinstance(d, dict)
        ]
        return cls(response.status_code, str(data["code"]), str(data.get("error", "")), details)


class Unreachable(Exception):
    """No HTTP answer came back from the server."""


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to authenticate to it (the commands' shared options)."""

    server: str = DEFAULT_SERVER
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    token: str | None = None
    timeout: float = 30.0
    headers: Mapping[str, str] = field(default_factory=dict)

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https://"):
            return True
        context = ssl.create_default_context(cafile=self.cacert)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context


@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Client:
    """One REST API session: `async with Client(conn) as api: await api.request(...)`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        headers = dict(conn.headers)
        if conn.token:
            headers["Authorization"] = f"Bearer {conn.token}"
        try:
            verify = conn.ssl_context()
        except (OSError, ssl.SSLError) as exc:
            raise Unreachable(f"cannot load TLS files: {exc}") from exc
        self._http = httpx.AsyncClient(
            base_url=conn.server.rstrip("/"),
            headers=headers,
            verify=verify,
            timeout=httpx.Timeout(conn.timeout),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        url = self.conn.server
        if isinstance(exc, httpx.ConnectError) and "ssl" not in str(exc).lower():
            return Unreachable(
                f"cannot reach tei-reconciler at {url}: is `tei-reconciler run` running? ({exc})"
            )
        if isinstance(exc, httpx.TimeoutException):
            return Unreachable(f"tei-reconciler at {url} did not answer in time")
        return Unreachable(f"cannot talk to tei-reconciler at {url}: {exc}")

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        json_body: object = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request; a 2xx comes back as a Reply, anything else raises."""
        try:
            response = await self._http.request(
                method,
                path,
                params=params,
                json=json_body,
                content=content,
                headers=headers,
            )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise ServerError.from_response(response, response.content)
        return Reply(response.status_code, response.headers, response.content)

    async def events(
        self,
        path: str,
        *,
        params: Mapping[str, str | int | float] | None = None,
        read_timeout: float | None = None,
    ) -> AsyncIterator[tuple[str, Any]]:
        """Yield `(event, data)` from an SSE stream until the server ends it.

        `read_timeout` None waits for the next event forever (the server sends keep-alive
        comments); callers bound the whole wait with a cancel scope instead.
        """
        timeout = httpx.Timeout(self.conn.timeout, read=read_timeout)
        headers = {"Accept": "text/event-stream"}
        try:
            async with self._http.stream(
                "GET", path, params=params, headers=headers, timeout=timeout
            ) as response:
                if response.status_code >= 400:
                    body = await response.aread()
                    raise ServerError.from_response(response, body)
                async for item in parse_sse(response.aiter_lines()):
                    yield item
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc


async def parse_sse(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, Any]]:
    """Server-Sent Events framing: `event:`/`data:` fields until a blank line; comments skipped."""
    event = "message"
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
