"""The host ↔ board wire protocol, defined once for the gateware and the host.

Every frame, in both directions::

    SOF (0xA5) | command (1) | seq (1) | length (2, little-endian) | payload | CRC-16 (2, LE)

The CRC (CRC-16/IBM-3740, also called CCITT-FALSE) covers command through payload; it
comes from ``amaranth.lib.crc``, so the gateware's CRC unit and the host's check are the
same algorithm. A receiver hunts for SOF and refuses a frame whose length exceeds
``MAX_PAYLOAD`` or whose CRC is wrong; it then resumes hunting at the byte after that
SOF, so random bytes on the line never wedge it. A refused frame never touches state;
the device answers ``Status.NAK_*`` and the host retries with the same ``seq``.

Bump ``PROTOCOL_VERSION`` on any change here.
"""

from amaranth.lib import crc, enum

__all__ = ["PROTOCOL_VERSION", "SOF", "MAX_PAYLOAD", "HEADER_BYTES", "CRC", "Command",
           "Status", "crc16"]

PROTOCOL_VERSION = 1
SOF = 0xA5
#: Largest payload of one frame: weights travel in chunks of at most this many bytes.
MAX_PAYLOAD = 1024
#: Bytes before the payload: SOF, command, seq, length.
HEADER_BYTES = 5
#: The frame check: CRC-16/IBM-3740 (poly 0x1021, init 0xFFFF, no reflection).
CRC = crc.catalog.CRC16_IBM_3740


class Command(enum.Enum, shape=8):
    """Requests from the host. A reply carries the request's command and seq; its
    payload starts with a :class:`Status` byte."""

    IDENTIFY = 0x01       #: → build ID (8 bytes), protocol version, config digest
    LOAD_WEIGHTS = 0x02   #: a chunk of load-stream words
    LOAD_X = 0x03         #: a chunk of input beats
    RUN = 0x04            #: start the loaded vectors
    READ_Y = 0x05         #: the next chunk of output beats
    STATUS = 0x06         #: counters: frames accepted, refused, weight checksum


class Status(enum.Enum, shape=8):
    """First payload byte of every reply."""

    OK = 0x00
    NAK_CRC = 0x01        #: the frame's CRC was wrong: nothing was done
    NAK_LENGTH = 0x02     #: the length exceeded MAX_PAYLOAD or the command's size
    NAK_COMMAND = 0x03    #: unknown command
    BUSY = 0x04           #: valid, but the engine cannot take it now: retry later


def crc16(data: bytes) -> int:
    """The frame check of ``data`` (command through payload)."""
    return CRC().compute(data)
