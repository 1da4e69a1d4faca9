"""The host ↔ board wire protocol, defined once for the gateware and the host.

Every frame, in both directions::

    SOF (0xA5) | command (1) | seq (1) | length (2, LE) | payload | CRC-16 (2, LE)

The CRC (CRC-16/IBM-3740, also called CCITT-FALSE) covers command through payload; it
comes from ``amaranth.lib.crc``, so the gateware's CRC unit and the host's check are the
same algorithm. A receiver hunts for SOF and refuses a frame whose length exceeds
``MAX_PAYLOAD`` or whose CRC is wrong; a refused frame never touches state, the device
answers ``Status.NAK_*`` and the host retries with the same ``seq``. The device drops a
half-received frame after ``IDLE_BYTES`` byte times of silence, so random bytes on the
line (even a corrupted length) cannot wedge it.

A reply is tied to its request by more than the 8-bit ``seq``: its command byte is the
request's with :data:`REPLY` set (a request looped back is never taken for a reply), and
its payload starts with the :class:`Status` byte and the CRC-16 field of the request it
answers (:data:`REPLY_HEAD_BYTES`). A request frame replayed on the line with the seq
the host awaits is answered too, but that answer echoes another CRC and the host drops
it; only a replay identical to the awaited request matches, and it gets the same answer.

Every command is idempotent, so a retry after a lost reply is always safe:

* ``IDENTIFY`` and ``STATUS`` only read;
* ``LOAD_WEIGHTS`` chunks carry the index of their first load word: a chunk at index 0
  starts a new load, one at the device's word count extends it, a repeat of the chunk
  just applied is acknowledged without being applied again, anything else is refused
  with ``NAK_OFFSET``;
* ``RUN`` carries one input vector (``x_depth`` beats; for a core that takes shorter
  vectors, such as the processor running a network narrower than its activations,
  any whole number of beats up to that, the last one marked by the payload's end) and
  returns its output beats: it leaves no state
  behind, so a repeat recomputes the same result instead of needing a replay buffer.
  Its reply is as long as the output needs, in as many frames as it takes (below);
  it first names the weights it is meant for (:data:`RUN_GUARD_FIELDS`: their word
  count and CRC-32, as STATUS reports them) and is refused with ``NAK_WEIGHTS`` if
  the device holds others: a load chunk replayed on the line after the host verified
  the weights (index 0 restarts a load) cannot make later outputs silently wrong.

A RUN reply of any size streams out as consecutive frames, each a whole reply: the
reply head (status, the RUN's CRC), then :data:`RUN_PART_FIELDS` (the index of its
first output beat and the vector's beat count), then at most
:attr:`Sizes.y_frame_beats` whole beats; every frame but the last is full. The device
needs no output buffer: beats go to the line as the engine makes them. A frame lost
or damaged on the way back costs a resend of the RUN, whose identical request (same
seq, same CRC) gets the identical answer, so the host keeps the parts it already has
and completes the vector from any attempt's frames. A refused RUN (``NAK_*``,
``NO_WEIGHTS``) is one frame without parts.

Payload layouts are the :data:`IDENTIFY_FIELDS` and :data:`STATUS_FIELDS` byte lists
here, the IDENTIFY records of the device's kind of core (:mod:`darbgen.hdl.cores`), and
the stream layouts of its config, an :class:`~darbgen.config.EngineConfig`, a
:class:`~darbgen.network.NetworkConfig` or another registered kind (load words, input
beats, output beats), each sent little-endian in whole bytes (:func:`word_bytes`).

Bump ``PROTOCOL_VERSION`` on any change here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from amaranth.lib import crc, enum

from ..config import ConfigError, EngineConfig, layout_width
from ..network import NetworkConfig
from .cores import ENGINE_FIELDS, describe, kind_of, run_fields

__all__ = ["PROTOCOL_VERSION", "SOF", "MAX_PAYLOAD", "HEADER_BYTES", "TRAILER_BYTES",
           "IDLE_BYTES", "REPLY", "REPLY_HEAD_BYTES", "OFFSET_BYTES", "CRC", "WEIGHTS_CRC",
           "Command", "Status", "byte_table_crc", "crc16", "weights_crc", "word_bytes",
           "words_to_bytes", "bytes_to_words", "run_fields", "Sizes", "IDENTIFY_FIELDS",
           "ENGINE_FIELDS",
           "STATUS_FIELDS", "RUN_GUARD_FIELDS", "GUARD_BYTES", "run_guard",
           "RUN_PART_FIELDS", "PART_BYTES", "MAX_RUN_BEATS", "run_part", "parse_run_part",
           "Identity",
           "build_id", "identity_bytes", "parse_identity", "parse_status"]

PROTOCOL_VERSION = 6
SOF = 0xA5
#: Largest payload of one frame in either direction (the device's receive buffer).
MAX_PAYLOAD = 1024
#: Bytes before the payload: SOF, command, seq, length.
HEADER_BYTES = 5
#: Bytes after the payload: the CRC.
TRAILER_BYTES = 2
#: Set in a reply's command byte (requests are all below it).
REPLY = 0x80
#: Bytes before a reply's body: the :class:`Status`, then the CRC-16 field (little-endian)
#: of the request frame it answers, as received (0 for a frame refused at its header).
REPLY_HEAD_BYTES = 3
#: Silence, in byte times, after which the device drops a half-received frame.
IDLE_BYTES = 64
#: Bytes of a LOAD_WEIGHTS chunk's first-word index, before its words.
OFFSET_BYTES = 4
#: The frame check: CRC-16/IBM-3740 (poly 0x1021, init 0xFFFF, no reflection).
CRC = crc.catalog.CRC16_IBM_3740
#: The check of the weights the device has applied (reported by STATUS).
WEIGHTS_CRC = crc.catalog.CRC32_ISO_HDLC


class Command(enum.Enum, shape=8):
    """Requests from the host. A reply carries the request's command with :data:`REPLY`
    set and the request's seq; its payload starts with :data:`REPLY_HEAD_BYTES`."""

    IDENTIFY = 0x01       #: → IDENTIFY_FIELDS: build ID, protocol version, the config
    LOAD_WEIGHTS = 0x02   #: first-word index (4 bytes) + load words → nothing
    RUN = 0x04            #: RUN_GUARD_FIELDS + one vector's input beats → its output
                          #: beats, RUN_PART_FIELDS + up to y_frame_beats of them a frame
    STATUS = 0x06         #: → STATUS_FIELDS: words loaded, their CRC-32, counters


class Status(enum.Enum, shape=8):
    """First payload byte of every reply (then the request's CRC-16)."""

    OK = 0x00
    NAK_CRC = 0x01        #: the frame's CRC was wrong: nothing was done
    NAK_LENGTH = 0x02     #: the length exceeded MAX_PAYLOAD or does not suit the command
    NAK_COMMAND = 0x03    #: unknown command
    NAK_OFFSET = 0x05     #: a LOAD_WEIGHTS chunk that does not continue the load
    NO_WEIGHTS = 0x06     #: RUN before any weights were loaded
    NAK_WEIGHTS = 0x07    #: RUN names other weights than the device holds: nothing ran


def byte_table_crc(algorithm: crc.Algorithm):
    """``algorithm``'s CRC of a byte string, computed a byte at a time from a 256-entry
    table: the values of ``algorithm().compute`` (the gateware's definition; the tests
    compare them), about 12 times faster (0.09 ms instead of 1.05 ms for 1031 bytes). At 1 Mbaud the bitwise form took a millisecond
    per full frame, a tenth of the frame's line time, spent while the link idles."""
    width, poly = algorithm.crc_width, algorithm.polynomial
    if algorithm.reflect_input != algorithm.reflect_output or width < 8:
        raise ValueError(f"no byte table for {algorithm!r}")
    mask, reflected = (1 << width) - 1, algorithm.reflect_input

    def mirror(value, bits):
        return int(f"{value:0{bits}b}"[::-1], 2)

    rpoly = mirror(poly, width)             # a reflected register shifts right
    table = []
    for i in range(256):
        if reflected:                       # the register holds the CRC bit-reversed
            c = i
            for _ in range(8):
                c = (c >> 1) ^ rpoly if c & 1 else c >> 1
        else:
            c = i << (width - 8)
            for _ in range(8):
                c = ((c << 1) ^ poly) & mask if c >> (width - 1) & 1 else (c << 1) & mask
        table.append(c)
    init = mirror(algorithm.initial_crc, width) if reflected else algorithm.initial_crc

    def compute(data: bytes) -> int:
        c = init
        if reflected:
            for byte in data:
                c = (c >> 8) ^ table[(c ^ byte) & 0xFF]
        else:
            for byte in data:
                c = ((c << 8) & mask) ^ table[(c >> (width - 8)) ^ byte]
        return c ^ algorithm.xor_output

    return compute


#: The frame check of ``data`` (command through payload).
crc16 = byte_table_crc(CRC)
#: The weight check of the load-word bytes ``data``, as STATUS reports it.
weights_crc = byte_table_crc(WEIGHTS_CRC)


# -- words on the wire ----------------------------------------------------------------

def word_bytes(width: int) -> int:
    """Bytes that carry a ``width``-bit word."""
    return -(-width // 8)


def words_to_bytes(words, width: int) -> bytes:
    """Words as consecutive little-endian ``word_bytes(width)``-byte groups."""
    n = word_bytes(width)
    return b"".join(int(w).to_bytes(n, "little") for w in words)


def bytes_to_words(data: bytes, width: int) -> list:
    """Inverse of :func:`words_to_bytes`.

    Raises
    ------
    ValueError
        ``data`` is not a whole number of words.
    """
    n = word_bytes(width)
    if len(data) % n:
        raise ValueError(f"{len(data)} bytes are not a whole number of {n}-byte words")
    return [int.from_bytes(data[i:i + n], "little") for i in range(0, len(data), n)]


@dataclass(frozen=True)
class Sizes:
    """Wire sizes of one engine's streams, in bits and bytes."""

    load_bits: int
    x_bits: int
    y_bits: int

    @classmethod
    def of(cls, config: EngineConfig | NetworkConfig) -> "Sizes":
        return cls(layout_width(config.load_fields), layout_width(run_fields(config)),
                   layout_width(config.output_fields))

    @property
    def load_bytes(self) -> int:
        return word_bytes(self.load_bits)

    @property
    def x_bytes(self) -> int:
        return word_bytes(self.x_bits)

    @property
    def y_bytes(self) -> int:
        return word_bytes(self.y_bits)

    @property
    def chunk_words(self) -> int:
        """Load words in one full LOAD_WEIGHTS frame."""
        return (MAX_PAYLOAD - OFFSET_BYTES) // self.load_bytes

    @property
    def y_frame_beats(self) -> int:
        """Output beats in one full RUN reply frame (after the reply head and the part)."""
        return (MAX_PAYLOAD - REPLY_HEAD_BYTES - PART_BYTES) // self.y_bytes


# -- IDENTIFY and STATUS payloads (after the reply head) ------------------------------

#: IDENTIFY reply fields, in order, with their byte counts (little-endian). ``core`` is the
#: kind of the device's core (:attr:`~darbgen.hdl.cores.CoreDescription.code`: 0 one
#: engine, 1 a chain of engines, 2 the layer-sequenced processor); ``records`` of that
#: kind's ``record_fields`` follow (:data:`ENGINE_FIELDS` for the first two: one, or one
#: per engine of the chain; for the processor one record, its engine's fields and then
#: its capacities, :data:`~darbgen.hdl.cores.CAPACITY_FIELDS`).
IDENTIFY_FIELDS = [("version", 1), ("build_id", 8), ("clock_hz", 4), ("baud", 4), ("core", 1),
                   ("records", 1)]

#: STATUS reply fields: the device's counters are as wide as their fields, and all wrap.
#: ``frames`` (executed) and ``refused`` (or dropped) are diagnostics, 16 bits each: each
#: counter bit, its copy for the reply and its share of the reply's multiplexer cost
#: logic cells the UP5K lacks. ``cycles`` is the free-running clock counter the host
#: times a load with: 32 bits wrap after 2 minutes at 30 MHz.
STATUS_FIELDS = [("words", 4), ("weights_crc", 4), ("frames", 2), ("refused", 2),
                 ("cycles", 4)]

#: The head of a RUN request: the weights it is meant for, as STATUS reports them.
RUN_GUARD_FIELDS = STATUS_FIELDS[:2]
#: Bytes of :data:`RUN_GUARD_FIELDS`.
GUARD_BYTES = sum(n for _, n in RUN_GUARD_FIELDS)


def run_guard(words: int, crc: int) -> bytes:
    """The head of a RUN request meant for ``words`` load words whose CRC-32 is ``crc``."""
    return _pack(RUN_GUARD_FIELDS, {"words": words, "weights_crc": crc})


#: Each RUN reply frame's body starts with these: the index of its first output beat, and
#: the vector's output beats in all (one count for every frame, so a lost frame shows).
RUN_PART_FIELDS = [("first", 2), ("beats", 2)]
#: Bytes of :data:`RUN_PART_FIELDS`.
PART_BYTES = sum(n for _, n in RUN_PART_FIELDS)
#: Most output beats a RUN reply can count.
MAX_RUN_BEATS = (1 << 8 * dict(RUN_PART_FIELDS)["beats"]) - 1


def run_part(first: int, beats: int) -> bytes:
    """The part head of a RUN reply frame whose first beat is ``first`` of ``beats``."""
    return _pack(RUN_PART_FIELDS, {"first": first, "beats": beats})


def parse_run_part(body: bytes, y_bytes: int) -> tuple[int, int, bytes]:
    """Split one RUN reply frame's body into ``(first, beats, data)``.

    Raises
    ------
    ValueError
        The body is not a part head and whole ``y_bytes``-byte beats, or claims beats
        past the vector's count.
    """
    if len(body) < PART_BYTES or (len(body) - PART_BYTES) % y_bytes:
        raise ValueError(f"a RUN reply body of {len(body)} bytes is not a {PART_BYTES}-byte "
                         f"part head and whole {y_bytes}-byte beats")
    fields = {name: int.from_bytes(v, "little")
              for name, v in _split(body[:PART_BYTES], RUN_PART_FIELDS, "RUN").items()}
    data = body[PART_BYTES:]
    if fields["first"] + len(data) // y_bytes > fields["beats"]:
        raise ValueError(f"a RUN reply part claims beats {fields['first']} to "
                         f"{fields['first'] + len(data) // y_bytes - 1} of {fields['beats']}")
    return fields["first"], fields["beats"], data


@dataclass(frozen=True)
class Identity:
    """What a device says about itself in its IDENTIFY reply."""

    version: int
    build_id: bytes
    clock_hz: int
    baud: int
    config: EngineConfig | NetworkConfig

    @property
    def expected_build_id(self) -> bytes:
        return build_id(self.config, self.clock_hz, self.baud, self.version)


def build_id(config: EngineConfig | NetworkConfig, clock_hz: int, baud: int,
             version: int = PROTOCOL_VERSION) -> bytes:
    """8-byte hash of the core's config, the link settings and the protocol version."""
    text = f"darbgen/{version}/{config.digest()}/{int(clock_hz)}/{int(baud)}"
    return hashlib.blake2s(text.encode(), digest_size=8).digest()


def _pack(fields, values: dict) -> bytes:
    return b"".join(bytes(values[name]) if name == "build_id" else
                    int(values[name]).to_bytes(n, "little") for name, n in fields)


def identity_bytes(config, clock_hz: int, baud: int) -> bytes:
    """The IDENTIFY reply body after the reply head (a ROM in the gateware).

    Raises
    ------
    ValueError
        IDENTIFY cannot describe ``config``.
    """
    core = describe(config)
    records = core.records()
    out = _pack(IDENTIFY_FIELDS, {"version": PROTOCOL_VERSION, "clock_hz": clock_hz,
                                  "baud": baud, "core": core.code, "records": len(records),
                                  "build_id": build_id(config, clock_hz, baud)})
    return out + b"".join(_pack(core.record_fields, r) for r in records)


def _split(payload: bytes, fields, what: str) -> dict:
    need = sum(n for _, n in fields)
    if len(payload) != need:
        raise ValueError(f"{what} reply has {len(payload)} bytes, expected {need}")
    out, at = {}, 0
    for name, n in fields:
        out[name] = payload[at:at + n]
        at += n
    return out


def parse_identity(payload: bytes) -> Identity:
    """Decode an IDENTIFY reply payload (after the reply head).

    Raises
    ------
    ValueError
        The payload has the wrong size, names a kind of core this host does not know, or
        describes no valid core of its kind.
    """
    head = sum(n for _, n in IDENTIFY_FIELDS)
    raw = _split(payload[:head], IDENTIFY_FIELDS, "IDENTIFY")
    num = {k: int.from_bytes(v, "little") for k, v in raw.items()}
    kind = kind_of(num["core"])
    record = sum(n for _, n in kind.record_fields)
    if len(payload) != head + num["records"] * record:
        raise ValueError(f"IDENTIFY reply has {len(payload)} bytes, expected "
                         f"{head + num['records'] * record}")
    records = [{k: int.from_bytes(v, "little") for k, v in
                _split(payload[at:at + record], kind.record_fields, "IDENTIFY record").items()}
               for at in range(head, len(payload), record)]
    try:
        config = kind.from_records(records)
    except ConfigError as e:
        raise ValueError(f"IDENTIFY reply describes no valid core ({kind.runs}): {e}") from None
    return Identity(num["version"], raw["build_id"], num["clock_hz"], num["baud"], config)


def parse_status(payload: bytes) -> dict:
    """Decode a STATUS reply payload (after the reply head) into named integers."""
    return {k: int.from_bytes(v, "little")
            for k, v in _split(payload, STATUS_FIELDS, "STATUS").items()}
