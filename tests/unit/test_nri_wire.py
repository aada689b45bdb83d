"""NRI wire framing, byte by byte: mux frames (u32be conn | u32be len | payload) and ttrpc messages
(u32be len | u32be stream | u8 type | u8 flags | body). Expected bytes are written out by hand."""

import pytest

from sriovdra.nri import ttrpc as wire
from sriovdra.nri.proto import nri_pb2, ttrpc_pb2
from sriovdra.nri.ttrpc import Demultiplexer, FrameDecoder, FramingError, Message, MessageDecoder

# stream 1, request, flags remote-closed, body "abc"
REQ = b"\x00\x00\x00\x03" b"\x00\x00\x00\x01" b"\x01" b"\x01" b"abc"
# stream 3, response, no flags, empty body
RESP = b"\x00\x00\x00\x00" b"\x00\x00\x00\x03" b"\x02" b"\x00"


def frame(conn: int, payload: bytes) -> bytes:
    return conn.to_bytes(4, "big") + len(payload).to_bytes(4, "big") + payload


def test_encode_message():
    assert wire.encode_message(Message(1, wire.REQUEST, wire.FLAG_REMOTE_CLOSED, b"abc")) == REQ
    assert wire.encode_message(Message(3, wire.RESPONSE, 0, b"")) == RESP


def test_encode_frame():
    assert wire.encode_frames(2, b"hello") == b"\x00\x00\x00\x02\x00\x00\x00\x05hello"
    assert wire.encode_frames(1, b"") == b"\x00\x00\x00\x01\x00\x00\x00\x00"
    assert wire.encode(1, Message(3, wire.RESPONSE, 0, b"")) == b"\x00\x00\x00\x01\x00\x00\x00\x0a" + RESP


def test_encode_splits_long_payloads():
    assert wire.encode_frames(2, b"abcdefghij", max_payload=4) == (
        b"\x00\x00\x00\x02\x00\x00\x00\x04abcd"
        b"\x00\x00\x00\x02\x00\x00\x00\x04efgh"
        b"\x00\x00\x00\x02\x00\x00\x00\x02ij")


def test_encode_splits_at_nris_limit():
    data = bytes(wire.MAX_FRAME_PAYLOAD + 1)  # 4 MiB + 10 is NRI's frame limit: 0x0040000a
    out = wire.encode_frames(1, data)
    assert out[:8] == b"\x00\x00\x00\x01\x00\x40\x00\x0a"
    second = 8 + 0x0040000A
    assert out[second:second + 8] == b"\x00\x00\x00\x01\x00\x00\x00\x01"
    assert len(out) == second + 9


def test_encode_rejects_an_oversize_message():
    with pytest.raises(FramingError, match="4194305 bytes exceeds the 4194304-byte limit"):
        wire.encode_message(Message(1, wire.REQUEST, 0, bytes(wire.MAX_MESSAGE + 1)))


def test_message_decoder_several_messages_in_one_feed():
    assert MessageDecoder().feed(REQ + RESP) == [Message(1, 1, 1, b"abc"), Message(3, 2, 0, b"")]


def test_message_decoder_byte_by_byte():
    dec, out = MessageDecoder(), []
    for i in range(len(REQ)):
        out += dec.feed(REQ[i:i + 1])
        assert out == ([] if i < len(REQ) - 1 else [Message(1, 1, 1, b"abc")])
    dec.finish()  # nothing left over


def test_demux_reassembles_a_message_split_across_frames_per_conn():
    trunk = frame(1, REQ[:4]) + frame(2, RESP) + frame(1, REQ[4:11]) + frame(1, REQ[11:])
    demux = Demultiplexer()
    # conn 2's message is complete first; conn 1's only with its last frame
    assert demux.feed(trunk[:8 + 4 + 8 + 10]) == [(2, Message(3, 2, 0, b""))]
    assert demux.feed(trunk[8 + 4 + 8 + 10:]) == [(1, Message(1, 1, 1, b"abc"))]
    demux.finish()


def test_demux_several_messages_in_one_frame_and_split_frame_headers():
    trunk = frame(1, REQ + RESP + REQ)
    demux = Demultiplexer()
    assert demux.feed(trunk[:5]) == []  # half a frame header
    assert demux.feed(trunk[5:]) == [(1, Message(1, 1, 1, b"abc")), (1, Message(3, 2, 0, b"")),
                                     (1, Message(1, 1, 1, b"abc"))]


def test_truncated_frame_is_reported_at_end_of_stream():
    demux = Demultiplexer()
    assert demux.feed(frame(1, REQ)[:-2]) == []
    with pytest.raises(FramingError, match=r"mux trunk ended inside a frame: 19 bytes left over"):
        demux.finish()


def test_truncated_message_in_complete_frames_is_reported():
    demux = Demultiplexer()
    assert demux.feed(frame(1, REQ[:7])) == []
    with pytest.raises(FramingError, match=r"mux conn 1 ended inside a message: 7 bytes left over"):
        demux.finish()


def test_oversize_frame_length_is_rejected_from_the_header_alone():
    with pytest.raises(FramingError, match="mux frame for conn 1: payload length 4294967295 exceeds"):
        FrameDecoder().feed(b"\x00\x00\x00\x01\xff\xff\xff\xff")


def test_oversize_message_length_is_rejected_from_the_header_alone():
    at_limit = b"\x00\x40\x00\x00" b"\x00\x00\x00\x01\x01\x00"  # exactly 4 MiB: waits for the body
    assert MessageDecoder().feed(at_limit) == []
    over = b"\x00\x40\x00\x01" b"\x00\x00\x00\x01\x01\x00"
    with pytest.raises(FramingError, match="mux conn 1: message length 4194305 exceeds the 4194304-byte limit"):
        Demultiplexer().feed(frame(1, over))


def test_ttrpc_envelopes_match_the_wire_format():
    # google.rpc.Status: code = 1 (varint), message = 2; Response: status = 1, payload = 2
    status = b"\x08\x02\x12\x04boom"
    assert ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=2, message="boom")).SerializeToString() == \
        b"\x0a\x08" + status
    req = ttrpc_pb2.Request(service="s", method="m", payload=b"\x01", timeout_nano=2)
    assert req.SerializeToString() == b"\x0a\x01s\x12\x01m\x1a\x01\x01\x20\x02"


def test_nri_messages_match_the_wire_format():
    reg = nri_pb2.RegisterPluginRequest(plugin_name="sriovdra", plugin_idx="50")
    assert reg.SerializeToString() == b"\x0a\x08sriovdra\x12\x0250"
    assert nri_pb2.ConfigureResponse(events=15).SerializeToString() == b"\x10\x0f"  # field 2, not 1
    assert nri_pb2.SynchronizeResponse(more=True).SerializeToString() == b"\x10\x01"
