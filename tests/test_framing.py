"""The wire protocol's framing: round trip, and recovery from garbage, flips, truncation."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amaranth.lib import crc

from darbgen.hdl.protocol import (CRC, MAX_PAYLOAD, SOF, WEIGHTS_CRC, Command, byte_table_crc,
                                  crc16, weights_crc)
from darbgen.host.framing import Frame, FrameError, FrameParser, encode_frame

# After the last frame, idle bytes long enough to complete any bogus header a garbage
# SOF may have started (the receiver then resynchronizes).
FLUSH = bytes(MAX_PAYLOAD + 8)

frames = st.builds(Frame, st.integers(0, 255), st.integers(0, 255),
                   st.binary(max_size=64))


def test_crc_check_value():
    assert crc16(b"123456789") == 0x29B1          # CRC-16/IBM-3740 (CCITT-FALSE)
    assert weights_crc(b"123456789") == 0xCBF43926     # CRC-32/ISO-HDLC (zlib's)


_ALGORITHMS = [CRC, WEIGHTS_CRC, crc.catalog.CRC16_ARC, crc.catalog.CRC8_SMBUS,
               crc.catalog.CRC32_BZIP2]
_TABLES = [byte_table_crc(a) for a in _ALGORITHMS]


@given(st.binary(max_size=300))
def test_byte_table_crcs_are_the_gateware_definition(data):
    """The host's table-driven CRCs give the values of amaranth.lib.crc, which the
    gateware is built from (reflected and plain algorithms alike)."""
    for algorithm, table in zip(_ALGORITHMS, _TABLES):
        assert table(data) == algorithm().compute(data), algorithm


def test_byte_table_crc_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match=r"^no byte table for "):
        byte_table_crc(crc.catalog.CRC5_USB)


def test_layout():
    raw = encode_frame(Command.RUN, 7, b"\x01\x02")
    assert raw[:5] == bytes([SOF, 0x04, 7, 2, 0]) and len(raw) == 5 + 2 + 2
    assert FrameParser().feed(raw) == [Frame(4, 7, b"\x01\x02")]


@given(st.lists(frames, max_size=8), st.integers(1, 40))
def test_round_trip_in_any_chunking(fs, chunk):
    data = b"".join(encode_frame(f.command, f.seq, f.payload) for f in fs)
    parser, got = FrameParser(), []
    for i in range(0, len(data), chunk):
        got += parser.feed(data[i:i + chunk])
    assert got == fs and parser.pending == 0


@given(st.lists(st.tuples(st.binary(max_size=40), frames), max_size=6), st.binary(max_size=40))
def test_garbage_between_frames_loses_nothing(pairs, tail):
    data = b"".join(g + encode_frame(f.command, f.seq, f.payload) for g, f in pairs) + tail
    got = FrameParser().feed(data + FLUSH)
    real = [f for _, f in pairs]
    it = iter(got)                                 # every real frame, in order
    assert all(any(g == f for g in it) for f in real)


@given(st.lists(frames, min_size=2, max_size=5), st.data())
def test_corrupted_and_truncated_frames_are_refused_and_the_rest_recovered(fs, data):
    raws = [encode_frame(f.command, f.seq, f.payload) for f in fs]
    bad = data.draw(st.integers(0, len(fs) - 1))
    raw = bytearray(raws[bad])
    if data.draw(st.booleans()):
        pos = data.draw(st.integers(1, len(raw) - 1))
        raw[pos] ^= 1 << data.draw(st.integers(0, 7))     # one flipped bit after SOF
    else:
        raw = raw[:data.draw(st.integers(1, len(raw) - 1))]   # truncated
    raws[bad] = bytes(raw)
    parser = FrameParser()
    got = parser.feed(b"".join(raws) + FLUSH)
    # exactly the intact frames: the damaged one is refused, nothing is lost or invented
    assert got == [f for i, f in enumerate(fs) if i != bad]
    assert parser.refused_crc + parser.refused_length >= 1     # and it was counted


def test_oversized_length_is_refused_at_the_header():
    parser = FrameParser()
    bogus = bytes([SOF, 1, 0]) + (MAX_PAYLOAD + 1).to_bytes(2, "little")
    assert parser.feed(bogus + encode_frame(1, 2, b"x")) == [Frame(1, 2, b"x")]
    assert parser.refused_length == 1


@pytest.mark.parametrize("args, message", [
    ((256, 0), r"^command must fit in a byte, not 256$"),
    ((1, -1), r"^seq must fit in a byte, not -1$"),
    ((1, 0, bytes(MAX_PAYLOAD + 1)), rf"^payload of {MAX_PAYLOAD + 1} bytes exceeds the maximum "
                                     rf"{MAX_PAYLOAD}$"),
])
def test_encode_errors(args, message):
    with pytest.raises(FrameError, match=message):
        encode_frame(*args)
