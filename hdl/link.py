"""Frames of :mod:`darbgen.hdl.protocol` in gateware: a receiver and a transmitter.

:class:`FrameReceiver` hunts for SOF in a byte stream, writes the payload into a
buffer and reports each frame once it has ended, with its CRC and length verdicts:
the controller acts on the buffer only after the CRC matched, so a corrupted frame
never touches state. It cannot rescan bytes it already consumed (that would need a
second buffer), so after a refused frame it hunts from the next byte on, and a frame
whose length field was corrupted is dropped after ``idle_cycles`` of silence.

:class:`FrameTransmitter` wraps a payload stream of known length in a frame.
"""

from contextlib import contextmanager

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .protocol import CRC, MAX_PAYLOAD, SOF

__all__ = ["FrameReceiver", "FrameTransmitter"]


class FrameReceiver(wiring.Component):
    """Receive frames into a payload buffer.

    Parameters
    ----------
    idle_cycles : int
        Silence after which a half-received frame is dropped.

    Members
    -------
    data : In(stream.Signature(8))
        Received bytes (always accepted).
    enable : In(1)
        Hunt for new frames; bytes arriving while it is low are dropped.
    wr_addr, wr_data, wr_en : Out
        Payload buffer write port.
    command, seq, length : Out
        Fields of the current frame (``command`` is valid from its second byte on;
        ``length`` only as wide as ``MAX_PAYLOAD`` needs: a longer frame is refused).
    check : Out(16)
        The CRC-16 field of the frame that ended last, as received (0 for a frame refused
        at its header): what the reply to it echoes. Valid from ``done`` until the next
        frame's CRC field arrives.
    done : Out(1)
        One-cycle strobe: a frame ended. ``length_ok`` and ``crc_ok`` give the verdict
        (a frame with a bad length ends at its header).
    dropped : Out(1)
        One-cycle strobe: a half-received frame timed out.
    """

    def __init__(self, idle_cycles: int):
        if idle_cycles < 1:
            raise ValueError(f"idle_cycles must be positive, not {idle_cycles}")
        self._idle_cycles = idle_cycles
        super().__init__({
            "data": In(stream.Signature(8)), "enable": In(1),
            "wr_addr": Out(range(MAX_PAYLOAD)), "wr_data": Out(8), "wr_en": Out(1),
            "command": Out(8), "seq": Out(8), "length": Out(range(MAX_PAYLOAD + 1)),
            "check": Out(16),
            "done": Out(1), "length_ok": Out(1), "crc_ok": Out(1), "dropped": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC(data_width=8).create()
        byte = self.data.payload
        got = Signal()
        count = Signal(range(MAX_PAYLOAD + 1))
        idle = Signal(range(self._idle_cycles + 1))
        m.d.comb += [self.data.ready.eq(1), got.eq(self.data.valid),
                     crc.data.eq(byte), self.wr_data.eq(byte), self.wr_addr.eq(count)]
        m.d.sync += [self.done.eq(0), self.dropped.eq(0)]

        timed_out = Signal()
        m.d.comb += timed_out.eq(idle == self._idle_cycles)

        @contextmanager
        def frame_state(name):
            """A state inside a frame: silence there ends the frame."""
            with m.State(name):
                yield
                with m.If(timed_out):
                    m.next = "HUNT"

        with m.FSM() as fsm:
            with m.State("HUNT"):
                with m.If(got & self.enable & (byte == SOF)):
                    m.d.comb += crc.start.eq(1)
                    m.next = "COMMAND"
            with frame_state("COMMAND"):
                m.d.comb += crc.valid.eq(got)
                with m.If(got):
                    m.d.sync += self.command.eq(byte)
                    m.next = "SEQ"
            with frame_state("SEQ"):
                m.d.comb += crc.valid.eq(got)
                with m.If(got):
                    m.d.sync += self.seq.eq(byte)
                    m.next = "LENGTH_LO"
            with frame_state("LENGTH_LO"):
                m.d.comb += crc.valid.eq(got)
                with m.If(got):
                    m.d.sync += self.length[:8].eq(byte)
                    m.next = "LENGTH_HI"
            with frame_state("LENGTH_HI"):
                m.d.comb += crc.valid.eq(got)
                length = Cat(self.length[:8], byte)
                with m.If(got):
                    m.d.sync += [self.length[8:].eq(byte), count.eq(0)]
                    with m.If(length > MAX_PAYLOAD):
                        # Refuse at the header: never wait for a payload this long.
                        m.d.sync += [self.done.eq(1), self.length_ok.eq(0), self.crc_ok.eq(0),
                                     self.check.eq(0)]
                        m.next = "HUNT"
                    with m.Elif(length == 0):
                        m.next = "CHECK_LO"
                    with m.Else():
                        m.next = "PAYLOAD"
            with frame_state("PAYLOAD"):
                m.d.comb += [crc.valid.eq(got), self.wr_en.eq(got)]
                with m.If(got):
                    # The count's incrementer and a compare: a down-counter of the bytes
                    # left cost 10 flip-flops and 7 carry cells more.
                    m.d.sync += count.eq(count + 1)
                    with m.If(count + 1 == self.length):
                        m.next = "CHECK_LO"
            with frame_state("CHECK_LO"):
                # `check` is the field of the frame that ended last only until this one
                # ends: the controller reads it at `done` (it keeps its own copy).
                with m.If(got):
                    m.d.sync += self.check[:8].eq(byte)
                    m.next = "CHECK_HI"
            with frame_state("CHECK_HI"):
                received = Cat(self.check[:8], byte)
                with m.If(got):
                    m.d.sync += [self.done.eq(1), self.length_ok.eq(1), self.check.eq(received),
                                 self.crc_ok.eq(received == crc.crc)]
                    m.next = "HUNT"

        # Silence inside a frame: drop it and hunt again.
        with m.If(fsm.ongoing("HUNT") | got | timed_out):
            m.d.sync += idle.eq(0)
        with m.Else():
            m.d.sync += idle.eq(idle + 1)
        with m.If(timed_out):
            m.d.sync += self.dropped.eq(1)
        return m


class FrameTransmitter(wiring.Component):
    """Send one frame: header, ``length`` payload bytes from ``payload``, CRC.

    Members
    -------
    start : In(1)
        Begin a frame with ``command``, ``seq`` and ``length`` (at most ``MAX_PAYLOAD``):
        they must hold still until ``busy`` falls (the controller holds them anyway, and
        a copy here would cost a logic cell a bit).
    payload : In(stream.Signature(8))
        Exactly ``length`` bytes.
    data : Out(stream.Signature(8))
        Bytes to the line.
    busy : Out(1)
        A frame is being sent (from the cycle after ``start``).
    """

    def __init__(self):
        super().__init__({
            "start": In(1), "command": In(8), "seq": In(8), "length": In(16),
            "payload": In(stream.Signature(8)), "data": Out(stream.Signature(8)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = CRC(data_width=8).create()
        command, seq, length = self.command, self.seq, self.length
        left = Signal(range(MAX_PAYLOAD + 1))
        sent = Signal()
        m.d.comb += [sent.eq(self.data.valid & self.data.ready), crc.data.eq(self.data.payload)]

        def emit(value, next_state, checked=True):
            m.d.comb += [self.data.valid.eq(1), self.data.payload.eq(value)]
            if checked:
                m.d.comb += crc.valid.eq(sent)
            with m.If(sent):
                m.next = next_state

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += left.eq(self.length)
                    m.d.comb += crc.start.eq(1)
                    m.next = "SOF"
            with m.State("SOF"):
                m.d.comb += self.busy.eq(1)
                emit(SOF, "COMMAND", checked=False)
            with m.State("COMMAND"):
                m.d.comb += self.busy.eq(1)
                emit(command, "SEQ")
            with m.State("SEQ"):
                m.d.comb += self.busy.eq(1)
                emit(seq, "LENGTH_LO")
            with m.State("LENGTH_LO"):
                m.d.comb += self.busy.eq(1)
                emit(length[:8], "LENGTH_HI")
            with m.State("LENGTH_HI"):
                m.d.comb += self.busy.eq(1)
                emit(length[8:], "PAYLOAD")
                with m.If(sent & (length == 0)):
                    m.next = "CHECK_LO"
            with m.State("PAYLOAD"):
                m.d.comb += [self.busy.eq(1),
                             self.data.valid.eq(self.payload.valid),
                             self.data.payload.eq(self.payload.payload),
                             self.payload.ready.eq(self.data.ready),
                             crc.valid.eq(sent)]
                with m.If(sent):
                    m.d.sync += left.eq(left - 1)
                    with m.If(left == 1):
                        m.next = "CHECK_LO"
            with m.State("CHECK_LO"):
                m.d.comb += self.busy.eq(1)
                emit(crc.crc[:8], "CHECK_HI", checked=False)
            with m.State("CHECK_HI"):
                m.d.comb += self.busy.eq(1)
                emit(crc.crc[8:], "IDLE", checked=False)
        return m
