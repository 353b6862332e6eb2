"""A gRPC call whose request bytes the test cuts into HTTP/2 DATA frames itself (grpcio's
client decides that on its own): several messages in one frame, one message across many."""

from __future__ import annotations

import anyio
import h2.config
import h2.connection
import h2.events


def frame(message: bytes) -> bytes:
    """A gRPC frame (uncompressed) around a serialized message."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def unframe(data: bytes) -> list[bytes]:
    """The messages of a stream of gRPC frames."""
    messages = []
    while data:
        size = int.from_bytes(data[1:5], "big")
        messages.append(data[5 : 5 + size])
        data = data[5 + size :]
    return messages


async def call(
    port: int, path: str, pieces: list[bytes], *, host: str = "127.0.0.1"
) -> tuple[list[bytes], dict[str, str]]:
    """Send `pieces` as the request body, each piece in DATA frames of its own, the last
    ending the stream (no pieces: the headers end it); return the answer's messages and its
    trailers (or headers, for a trailers-only answer)."""
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

        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(
            stream,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", f"{host}:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ],
            end_stream=not pieces,
        )
        await exchange()  # the server's settings and windows
        for index, piece in enumerate(pieces):
            size = connection.max_outbound_frame_size
            for start in range(0, max(len(piece), 1), size):
                part = piece[start : start + size]
                while connection.local_flow_control_window(stream) < len(part) and not ended:
                    await exchange()
                end = index == len(pieces) - 1 and start + size >= len(piece)
                connection.send_data(stream, part, end_stream=end)
            await sock.send(connection.data_to_send())
        while not ended:
            await exchange()
    return unframe(bytes(body)), trailers
