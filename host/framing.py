"""Frames on the serial line: encoding and a resynchronizing parser (no torch).

:class:`FrameParser` is also the reference model of the gateware's receiver: fed any
byte sequence, it yields every well-formed frame and counts what it refused, and it
never waits forever on a broken frame (a length above ``MAX_PAYLOAD`` is refused at the
header).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..hdl.protocol import HEADER_BYTES, MAX_PAYLOAD, REPLY, REPLY_HEAD_BYTES, SOF, crc16

__all__ = ["Frame", "Reply", "FrameError", "encode_frame", "FrameParser"]


class FrameError(ValueError):
    """A frame cannot be built (payload too long, field out of range)."""


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    command: int
    seq: int
    payload: bytes

    @cached_property
    def _body(self) -> bytes:
        return bytes([self.command, self.seq]) + len(self.payload).to_bytes(2, "little") + \
            self.payload

    @cached_property
    def check(self) -> int:
        """The frame's CRC-16 field (what a reply to it echoes)."""
        return crc16(self._body)

    def encode(self) -> bytes:
        """The frame's bytes on the line.

        Raises
        ------
        FrameError
            ``command`` or ``seq`` is not a byte, or the payload exceeds ``MAX_PAYLOAD``.
        """
        for name, v in (("command", self.command), ("seq", self.seq)):
            if not 0 <= v <= 0xFF:
                raise FrameError(f"{name} must fit in a byte, not {v}")
        if len(self.payload) > MAX_PAYLOAD:
            raise FrameError(f"payload of {len(self.payload)} bytes exceeds the maximum "
                             f"{MAX_PAYLOAD}")
        return bytes([SOF]) + self._body + self.check.to_bytes(2, "little")

    @property
    def reply(self) -> "Reply | None":
        """The frame read as a device's reply, or ``None`` if it is none (a request, or
        a payload shorter than the reply head)."""
        if not self.command & REPLY or len(self.payload) < REPLY_HEAD_BYTES:
            return None
        return Reply(self.command & ~REPLY, self.seq, self.payload[0],
                     int.from_bytes(self.payload[1:REPLY_HEAD_BYTES], "little"),
                     self.payload[REPLY_HEAD_BYTES:])


@dataclass(frozen=True)
class Reply:
    """A device's reply, split into its head and body.

    Members
    -------
    command : int
        The request's command (without the :data:`~darbgen.hdl.protocol.REPLY` bit).
    seq : int
    status : int
        A :class:`~darbgen.hdl.protocol.Status` value.
    check : int
        The CRC-16 field of the request it answers.
    body : bytes
    """

    command: int
    seq: int
    status: int
    check: int
    body: bytes

    def answers(self, request: Frame) -> bool:
        """It is the reply to ``request`` (command, seq and the request's CRC)."""
        return (self.command, self.seq, self.check) == \
            (request.command & ~REPLY, request.seq, request.check)


def encode_frame(command: int, seq: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame (:meth:`Frame.encode`); ``command`` may be a
    :class:`~darbgen.hdl.protocol.Command`."""
    return Frame(int(getattr(command, "value", command)), seq, bytes(payload)).encode()


class FrameParser:
    """Incremental receiver: ``feed(bytes)`` returns the frames completed so far.

    Members
    -------
    refused_crc, refused_length, skipped : int
        Frames refused for a bad CRC or an oversized length, and bytes skipped while
        hunting for SOF.
    """

    def __init__(self):
        self._buf = bytearray()
        self.refused_crc = self.refused_length = self.skipped = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while True:
            start = self._buf.find(SOF)
            if start < 0:
                self.skipped += len(self._buf)
                self._buf.clear()
                return frames
            self.skipped += start
            del self._buf[:start]
            if len(self._buf) < HEADER_BYTES:
                return frames
            length = int.from_bytes(self._buf[3:5], "little")
            if length > MAX_PAYLOAD:
                self.refused_length += 1
                del self._buf[:1]               # hunt again from the next byte
                continue
            total = HEADER_BYTES + length + 2
            if len(self._buf) < total:
                return frames
            body = bytes(self._buf[1:HEADER_BYTES + length])
            check = int.from_bytes(self._buf[HEADER_BYTES + length:total], "little")
            if crc16(body) != check:
                self.refused_crc += 1
                del self._buf[:1]
                continue
            frames.append(Frame(body[0], body[1], body[4:]))
            del self._buf[:total]

    @property
    def pending(self) -> int:
        """Bytes held while a frame is incomplete."""
        return len(self._buf)
