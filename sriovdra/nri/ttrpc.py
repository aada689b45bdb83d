"""NRI's wire framing below protobuf: the connection multiplexer and ttrpc messages. Bytes only, no sockets.

A plugin talks to the runtime over one unix-socket connection (the "trunk") carrying mux frames

    u32be conn_id | u32be length | payload

Each conn id is an independent ttrpc byte stream: a frame may hold several ttrpc messages or a piece
of one (NRI splits writes longer than MAX_FRAME_PAYLOAD). A ttrpc message is

    u32be length | u32be stream_id | u8 type | u8 flags | body      (length counts the body only)

with the body a protobuf ttrpc.Request (type 1) or ttrpc.Response (type 2).
Limits and constants are those of containerd/ttrpc channel.go and nri pkg/net/multiplex.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

PLUGIN_CONN = 1  # the runtime is the ttrpc client: it calls the plugin's service (Configure, ...)
RUNTIME_CONN = 2  # the plugin is the client: RegisterPlugin

REQUEST = 1
RESPONSE = 2
DATA = 3  # streaming only; NRI never sends it

FLAG_REMOTE_CLOSED = 0x1  # set on unary requests: no more data follows on the stream
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4

MAX_MESSAGE = 4 << 20  # ttrpc messageLengthMax (body bytes)
_MESSAGE_HEADER = struct.Struct(">IIBB")
_FRAME_HEADER = struct.Struct(">II")
MAX_FRAME_PAYLOAD = _MESSAGE_HEADER.size + MAX_MESSAGE  # nri mux maxPayloadSize


class FramingError(Exception):
    """The byte stream violates the framing: the connection cannot be trusted any more."""


@dataclass(frozen=True)
class Message:
    stream_id: int
    type: int
    flags: int
    body: bytes


def encode_message(msg: Message) -> bytes:
    if len(msg.body) > MAX_MESSAGE:
        raise FramingError(f"ttrpc message body of {len(msg.body)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    return _MESSAGE_HEADER.pack(len(msg.body), msg.stream_id, msg.type, msg.flags) + msg.body


def encode_frames(conn_id: int, data: bytes, max_payload: int = MAX_FRAME_PAYLOAD) -> bytes:
    """Frame `data` for one mux connection, splitting it as NRI does (an empty write is one empty frame)."""
    out = bytearray()
    for start in range(0, max(len(data), 1), max_payload):
        chunk = data[start:start + max_payload]
        out += _FRAME_HEADER.pack(conn_id, len(chunk)) + chunk
    return bytes(out)


@dataclass
class _Buffer:
    """Bytes received but not consumed yet; `what` and `unit` name the stream and its pieces in errors."""

    what: str
    unit: str
    data: bytearray = field(default_factory=bytearray)

    def finish(self) -> None:
        if self.data:
            raise FramingError(f"{self.what} ended inside a {self.unit}: {len(self.data)} bytes left over")


class MessageDecoder:
    """Incremental decoder of one ttrpc byte stream: feed bytes in any pieces, get whole messages."""

    def __init__(self, what: str = "ttrpc stream") -> None:
        self._buf = _Buffer(what, "message")

    def feed(self, data: bytes) -> list[Message]:
        buf = self._buf.data
        buf += data
        messages, pos = [], 0
        while len(buf) - pos >= _MESSAGE_HEADER.size:
            length, stream_id, mtype, flags = _MESSAGE_HEADER.unpack_from(buf, pos)
            if length > MAX_MESSAGE:  # checked before waiting for the body: never buffer a bogus length
                raise FramingError(f"{self._buf.what}: message length {length} exceeds the {MAX_MESSAGE}-byte limit")
            end = pos + _MESSAGE_HEADER.size + length
            if len(buf) < end:
                break
            messages.append(Message(stream_id, mtype, flags, bytes(buf[pos + _MESSAGE_HEADER.size:end])))
            pos = end
        del buf[:pos]
        return messages

    def finish(self) -> None:
        """The stream ended: raise FramingError if it stopped in the middle of a message."""
        self._buf.finish()


class FrameDecoder:
    """Incremental decoder of the trunk into (conn_id, payload) frames."""

    def __init__(self, max_payload: int = MAX_FRAME_PAYLOAD) -> None:
        self._buf = _Buffer("mux trunk", "frame")
        self._max_payload = max_payload

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf.data
        buf += data
        frames, pos = [], 0
        while len(buf) - pos >= _FRAME_HEADER.size:
            conn_id, length = _FRAME_HEADER.unpack_from(buf, pos)
            if length > self._max_payload:
                raise FramingError(f"mux frame for conn {conn_id}: payload length {length} exceeds "
                                   f"the {self._max_payload}-byte limit")
            end = pos + _FRAME_HEADER.size + length
            if len(buf) < end:
                break
            frames.append((conn_id, bytes(buf[pos + _FRAME_HEADER.size:end])))
            pos = end
        del buf[:pos]
        return frames

    def finish(self) -> None:
        self._buf.finish()


class Demultiplexer:
    """Trunk bytes in, (conn_id, ttrpc message) out: frames reassembled into messages per conn id."""

    def __init__(self) -> None:
        self._frames = FrameDecoder()
        self._streams: dict[int, MessageDecoder] = {}

    def feed(self, data: bytes) -> list[tuple[int, Message]]:
        out = []
        for conn_id, payload in self._frames.feed(data):
            stream = self._streams.get(conn_id)
            if stream is None:
                stream = self._streams[conn_id] = MessageDecoder(f"mux conn {conn_id}")
            out += [(conn_id, msg) for msg in stream.feed(payload)]
        return out

    def finish(self) -> None:
        """The trunk ended: raise FramingError if a frame or a message was cut short."""
        self._frames.finish()
        for stream in self._streams.values():
            stream.finish()


def encode(conn_id: int, msg: Message) -> bytes:
    """One ttrpc message, framed for the trunk."""
    return encode_frames(conn_id, encode_message(msg))
