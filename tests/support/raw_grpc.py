"""A gRPC call made over HTTP/2 by the test itself, with h2.

grpcio's client decides on its own how request bytes are cut into DATA frames, and its
asyncio client replaces the status of a call whose write raced the server's early end with a
local INTERNAL (grpc/grpc#36066). Here the test cuts the frames (several messages in one
frame, one message across many), and reads the messages and trailers exactly as the server
sent them, whenever the server ends the call: a request body the server no longer reads is
simply not sent on.
"""

from __future__ import annotations

import gzip
from urllib.parse import unquote

import anyio
import h2.config
import h2.connection
import h2.events
import h2.exceptions

GZIP = "gzip"


def frame(message: bytes, *, compression: str | None = None) -> bytes:
    """A gRPC frame around a serialized message, gzip-compressed where `compression` says."""
    if compression is None:
        return b"\0" + len(message).to_bytes(4, "big") + message
    assert compression == GZIP, compression
    packed = gzip.compress(message)
    return b"\1" + len(packed).to_bytes(4, "big") + packed


def unframe(data: bytes) -> list[bytes]:
    """The messages of a stream of gRPC frames."""
    messages = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        message = data[5 : 5 + size]
        messages.append(gzip.decompress(message) if data[0] else message)
        data = data[5 + size :]
    return messages


async def call(
    port: int,
    path: str,
    pieces: list[bytes],
    *,
    host: str = "127.0.0.1",
    compression: str | None = None,
) -> tuple[list[bytes], dict[str, str]]:
    """Send `pieces` as the request body, each piece in DATA frames of its own, the last
    ending the stream (no pieces: the headers end it); return the answer's messages and its
    trailers (or headers, for a trailers-only answer), `grpc-message` percent-decoded.
    `compression` names the encoding of compressed frames in `pieces` (see `frame`). Once
    the server has ended the call, the rest of the body is not sent."""
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    connection = h2.connection.H2Connection(config=config)
    body = bytearray()
    trailers: dict[str, str] = {}
    ended = False
    async with await anyio.connect_tcp(host, port) as sock:

        async def exchange() -> None:
            """Send what is pending, then take in what the server sent next."""
            nonlocal ended
            await sock.send(connection.data_to_send())
            for event in connection.receive_data(await sock.receive(65536)):
                if isinstance(event, h2.events.DataReceived):
                    body.extend(event.data)
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    trailers.update(dict(event.headers))  # type: ignore[arg-type]
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    ended = True

        def send(part: bytes, *, end: bool) -> None:
            """Queue one DATA frame, unless the server has ended the stream meanwhile."""
            nonlocal ended
            try:
                connection.send_data(stream, part, end_stream=end)
            except h2.exceptions.StreamClosedError:
                ended = True

        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        encoding = [] if compression is None else [("grpc-encoding", compression)]
        connection.send_headers(
            stream,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", f"{host}:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *encoding,
            ],
            end_stream=not pieces,
        )
        await exchange()  # the server's settings and windows
        for index, piece in enumerate(pieces):
            size = connection.max_outbound_frame_size
            for start in range(0, max(len(piece), 1), size):
                part = piece[start : start + size]
                while not ended and connection.local_flow_control_window(stream) < len(part):
                    await exchange()
                if ended:
                    break
                send(part, end=index == len(pieces) - 1 and start + size >= len(piece))
            if ended:
                break
            await sock.send(connection.data_to_send())
        while not ended:
            await exchange()
    if "grpc-message" in trailers:
        trailers["grpc-message"] = unquote(trailers["grpc-message"])
    return unframe(bytes(body)), trailers
