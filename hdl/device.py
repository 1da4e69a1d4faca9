"""The device behind the serial link: protocol controller + engine (+ UART).

:class:`Controller` speaks :mod:`darbgen.hdl.protocol` over byte streams and owns an
:class:`~darbgen.hdl.engine.SpMVEngine`; :class:`Device` adds the UART, giving the
``rx``/``tx`` core that every board wraps with its clock and pins. The same
:class:`Device` Verilog runs in ``darbgen serve-sim`` and goes into the bitstream.

A frame is received whole into a buffer and executed only after its CRC matched:

* ``IDENTIFY`` replies with the identity ROM (:func:`~darbgen.hdl.protocol.identity_bytes`,
  in a block RAM);
* ``STATUS`` with the counters (those that may change while it goes out, as copied
  when it was decided);
* ``LOAD_WEIGHTS`` checks the chunk's first-word index against the words loaded so
  far, then streams the words into the engine's ``load`` port (from registers, one
  per 4 cycles a byte; it is always ready) while a CRC-32 of their bytes accumulates;
* ``RUN`` checks that its guard names the weights the device holds (word count and
  CRC-32), then feeds the payload's input beats into the engine (marking the last
  one) and streams the output beats straight into the reply: into as many frames as
  they take, each started once the one before has gone out (no output buffer).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import memory, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out, connect

from ..config import EngineConfig, layout_width
from ..network import NetworkConfig
from .cores import describe
from .link import FrameReceiver, FrameTransmitter
from .protocol import (GUARD_BYTES, IDLE_BYTES, MAX_PAYLOAD, MAX_RUN_BEATS, OFFSET_BYTES,
                       PART_BYTES, REPLY, REPLY_HEAD_BYTES, RUN_GUARD_FIELDS, RUN_PART_FIELDS,
                       STATUS_FIELDS, WEIGHTS_CRC, Command, Sizes, Status, identity_bytes,
                       run_fields)
from .uart import UARTRx, UARTTx


__all__ = ["Controller", "Device", "check_link", "APPLY_BYTE_CYCLES"]

#: Cycles APPLY takes a load byte: the weights' CRC-32 takes it in pieces, a piece a cycle.
APPLY_BYTE_CYCLES = 4
_CRC_PIECE = 8 // APPLY_BYTE_CYCLES


def check_link(config) -> None:
    """Raise ``ValueError`` unless a RUN request (one input vector) fits in one frame, a
    RUN reply can count the output beats, and the core is one IDENTIFY can describe.
    The output may take any number of reply frames."""
    core = describe(config)
    core.records()                      # raises unless IDENTIFY can describe the core
    sizes = Sizes.of(config)
    x_len = GUARD_BYTES + core.input_beats_range()[0] * sizes.x_bytes
    if x_len > MAX_PAYLOAD:
        raise ValueError(f"a RUN request carries one input vector in one frame: "
                         f"{config.max_cols} columns need {x_len} payload bytes, the link "
                         f"carries at most {MAX_PAYLOAD}")
    if config.output_beats > MAX_RUN_BEATS:
        raise ValueError(f"a RUN reply counts at most {MAX_RUN_BEATS} output beats, this core "
                         f"makes {config.output_beats}")


def _times(value: Value, constant: int) -> Value:
    """``value * constant`` as shifts and adds: a ``*`` by a constant becomes a DSP
    block on iCE40 (Yosys ``-dsp``), and the lanes need every one of them."""
    terms = [value << i for i in range(constant.bit_length()) if constant >> i & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


def _packed(fields, values) -> Value:
    """``values`` (one per field) as the fields' little-endian bytes, zero-extended."""
    return Cat(*(Cat(v, Const(0, 8 * n - len(v))) if len(v) < 8 * n else v[:8 * n]
                 for (_, n), v in zip(fields, values)))


class Controller(wiring.Component):
    """Protocol controller and engine on byte streams.

    Parameters
    ----------
    config : EngineConfig, NetworkConfig or another kind of :mod:`darbgen.hdl.cores`
        The core: one engine, a whole network's chain of engines, ...
    clock_hz, baud : int
        Reported by IDENTIFY (and part of the build ID).
    idle_cycles : int
        Silence after which a half-received frame is dropped.

    Members
    -------
    rx : In(stream.Signature(8))
        Bytes from the host (always accepted).
    tx : Out(stream.Signature(8))
        Bytes to the host.
    """

    def __init__(self, config: EngineConfig | NetworkConfig, *, clock_hz: int, baud: int,
                 idle_cycles: int):
        check_link(config)
        self._config = config
        self._identity = identity_bytes(config, clock_hz, baud)
        self._idle_cycles = idle_cycles
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        c = self._config
        sizes = Sizes.of(c)
        # The core: one engine, a whole network's chain of engines, ... (same streams).
        m.submodules.engine = engine = describe(c).hardware()
        m.submodules.receiver = rcv = FrameReceiver(self._idle_cycles)
        m.submodules.transmitter = xmt = FrameTransmitter()
        m.submodules.buffer = buf = memory.Memory(shape=8, depth=MAX_PAYLOAD, init=[])
        m.submodules.weights_crc = wcrc = WEIGHTS_CRC(data_width=_CRC_PIECE).create()
        buf_wr, rd = buf.write_port(), buf.read_port()
        connect(m, wiring.flipped(self.rx), rcv.data)
        connect(m, xmt.data, wiring.flipped(self.tx))
        m.d.comb += [buf_wr.addr.eq(rcv.wr_addr), buf_wr.data.eq(rcv.wr_data),
                     buf_wr.en.eq(rcv.wr_en)]

        # -- counters, each as wide as its STATUS field -----------------------------------
        bits = {name: 8 * n for name, n in STATUS_FIELDS}
        words = Signal(bits["words"])          # load words applied since the last restart
        frames = Signal(bits["frames"])        # frames executed
        refused = Signal(bits["refused"])      # frames refused or dropped
        cycles = Signal(bits["cycles"])
        m.d.sync += cycles.eq(cycles + 1)
        with m.If(rcv.dropped | (rcv.done & ~(rcv.length_ok & rcv.crc_ok))):
            m.d.sync += refused.eq(refused + 1)

        # A core that takes input vectors of any length up to its width (the processor:
        # a network's own input) gets as many beats as the RUN carries, whole ones
        # only; the others take exactly x_depth beats.
        fewest, most = describe(c).input_beats_range()
        most = min(most, (MAX_PAYLOAD - GUARD_BYTES) // sizes.x_bytes)
        fixed = fewest == most == c.x_depth
        x_unit = Signal(range(sizes.x_bytes))   # bytes of a RUN's last, partial beat
        if not fixed and sizes.x_bytes > 1:
            with m.If(rcv.wr_en):
                with m.If(rcv.wr_addr == 0):
                    m.d.sync += x_unit.eq(0)
                with m.Elif(rcv.wr_addr >= GUARD_BYTES):
                    m.d.sync += x_unit.eq(Mux(x_unit == sizes.x_bytes - 1, 0, x_unit + 1))

        # While a LOAD_WEIGHTS payload arrives, count its whole words (no divider).
        unit = Signal(range(sizes.load_bytes))
        chunk_words = Signal(range(MAX_PAYLOAD + 1))
        with m.If(rcv.wr_en):
            with m.If(rcv.wr_addr == 0):
                m.d.sync += [unit.eq(0), chunk_words.eq(0)]
            with m.Elif(rcv.wr_addr >= OFFSET_BYTES):
                with m.If(unit == sizes.load_bytes - 1):
                    m.d.sync += [unit.eq(0), chunk_words.eq(chunk_words + 1)]
                with m.Else():
                    m.d.sync += unit.eq(unit + 1)

        # -- reply: the head (status, the request's CRC, a RUN frame's part), then the
        # command's body. Command, seq and CRC are latched: while a RUN's later frames go
        # out, the receiver may already hold the next request. The transmitter sends
        # them from here (they hold still while a frame goes out), and the head's bytes
        # are picked from the registers that hold them: a copy in a shift register cost
        # a logic cell a bit, and the UP5K has none to spare.
        body = Signal(range(4))                # which body source follows the head
        BODY_NONE, BODY_IDENTITY, BODY_STATUS, BODY_Y = range(4)
        reply_command, reply_seq, reply_check = Signal(8), Signal(8), Signal(16)
        reply_code = Signal(8)
        m.d.comb += [xmt.command.eq(reply_command), xmt.seq.eq(reply_seq)]
        index = Signal(range(max(len(self._identity), 1) + 1))   # of the body's byte
        # The IDENTIFY body is a ROM in a block RAM (Yosys makes a small ROM of LUTs
        # unless told: 51 of them, and the UP5K has block RAM to spare, not cells). Its
        # registered read port reads the next byte as one is sent: it holds byte `index`
        # from the cycle after `index` changed, long before the head has gone out.
        m.submodules.identity = rom = memory.Memory(shape=8, depth=len(self._identity),
                                                    init=self._identity,
                                                    attrs={"rom_style": "block"})
        identity = rom.read_port()
        # The STATUS body's bytes are picked from the counters: words, their CRC and
        # frames hold still while a reply goes out (they change in DECIDE and APPLY
        # only); refused and cycles may change meanwhile, so they are copied when the
        # STATUS is decided (a snapshot shift register of every field cost 76 cells more).
        held = {name: Signal(bits[name], name=f"held_{name}") for name in ("refused", "cycles")}
        status = Cat(*({"words": words, "weights_crc": wcrc.crc, "frames": frames, **held}[name]
                       for name, _ in STATUS_FIELDS))
        y_byte = Signal(range(sizes.y_bytes))  # of the output beat going out
        # A RUN's output beats (the vector's count is the engine's `slots`, which holds
        # still while a RUN runs): the first of the frame going out, those not yet in a
        # frame, and those the frame going out still takes from the engine.
        frame_beats = sizes.y_frame_beats
        y_first = Signal(range(c.output_beats + 1))
        y_rest = Signal(range(c.output_beats + 1))
        frame_left = Signal(range(frame_beats + 1))
        head = Cat(reply_code, reply_check, _packed(RUN_PART_FIELDS, [y_first, engine.slots]))
        head_at = Signal(range(len(head) // 8 + 1))
        # A RUN's reply frames have a part; the head of every other reply ends before it.
        head_end = Mux(body == BODY_Y, REPLY_HEAD_BYTES + PART_BYTES, REPLY_HEAD_BYTES)
        sent = Signal()
        m.d.comb += [sent.eq(xmt.payload.valid & xmt.payload.ready), identity.addr.eq(index)]
        with m.If(head_at != head_end):
            m.d.comb += [xmt.payload.valid.eq(xmt.busy),
                         xmt.payload.payload.eq(head.word_select(head_at, 8))]
            with m.If(sent):
                m.d.sync += head_at.eq(head_at + 1)
        with m.Elif((body == BODY_IDENTITY) | (body == BODY_STATUS)):
            m.d.comb += xmt.payload.valid.eq(1)
            with m.If(body == BODY_IDENTITY):
                m.d.comb += xmt.payload.payload.eq(identity.data)
            with m.Else():
                m.d.comb += xmt.payload.payload.eq(status.word_select(index, 8))
            with m.If(sent):
                m.d.sync += index.eq(index + 1)
                m.d.comb += identity.addr.eq(index + 1)
        with m.Elif(body == BODY_Y):
            # Each output beat goes out as y_bytes little-endian bytes, picked from the
            # engine's payload, which holds still until the beat is taken after its last.
            y = engine.y.payload.as_value()
            last_y_byte = y_byte == sizes.y_bytes - 1
            m.d.comb += [xmt.payload.valid.eq(engine.y.valid & (frame_left != 0)),
                         xmt.payload.payload.eq(
                             Cat(y, Const(0, 8 * sizes.y_bytes - len(y))).word_select(y_byte, 8)),
                         engine.y.ready.eq(sent & last_y_byte)]
            with m.If(sent):
                m.d.sync += y_byte.eq(Mux(last_y_byte, 0, y_byte + 1))
                with m.If(last_y_byte):
                    m.d.sync += frame_left.eq(frame_left - 1)

        # The transmitter starts the cycle after a reply is decided: a registered start
        # keeps the decision logic off the transmitter's and the FIFO's paths.
        start_reply = Signal()
        reply_length = Signal(range(MAX_PAYLOAD + 1))
        m.d.sync += start_reply.eq(0)
        m.d.comb += [xmt.start.eq(start_reply), xmt.length.eq(reply_length)]

        # A reply is chosen in several places of the FSM, but its registers are loaded
        # in one (below it): each choice sets only these narrow signals, so the wide head
        # does not get a multiplexer per choice.
        reply_go, reply_status = Signal(), Signal(8)
        reply_len, reply_src = Signal.like(reply_length), Signal.like(body)

        def reply(code, length=REPLY_HEAD_BYTES, source=BODY_NONE):
            """Start a one-frame reply; its body streams while the FSM is in REPLY."""
            m.d.comb += [reply_go.eq(1), reply_status.eq(code.value), reply_len.eq(length),
                         reply_src.eq(source)]
            m.next = "REPLY"

        # The next RUN reply frame's beats and length, registered from y_rest: they follow
        # it a cycle later, and a frame starts two cycles after y_rest changed at the
        # earliest (the registered decision below).
        next_beats = Signal(range(frame_beats + 1))
        next_length = Signal(range(MAX_PAYLOAD + 1))
        m.d.sync += [next_beats.eq(Mux(y_rest > frame_beats, frame_beats, y_rest)),
                     next_length.eq(REPLY_HEAD_BYTES + PART_BYTES + _times(
                         Mux(y_rest > frame_beats, frame_beats, y_rest), sizes.y_bytes))]

        # -- buffer reads: one byte per cycle from ptr, stalled by `hold` ----------------
        ptr = Signal(range(MAX_PAYLOAD + 1))
        pending = Signal()                     # rd.data holds buffer[ptr - 1]
        end = Signal(range(MAX_PAYLOAD + 1))
        hold = Signal()
        m.d.comb += [rd.addr.eq(ptr), rd.en.eq(~hold)]

        def read_prefix(length):
            """Read and compare the payload's first ``length`` bytes (PREFIX)."""
            m.d.sync += [ptr.eq(0), pending.eq(0), end.eq(length), nbyte.eq(0),
                         restart.eq(1), same.eq(1), repeat.eq(1), carry.eq(0)]
            m.next = "PREFIX"

        def read_bytes():
            """Advance the reader unless held; True (a Value) when rd.data is fresh."""
            with m.If(~hold):
                m.d.sync += pending.eq(ptr < end)
                with m.If(ptr < end):
                    m.d.sync += ptr.eq(ptr + 1)
            return pending & ~hold

        # The payload's fixed head, a load chunk's first-word index or a RUN's guard, is
        # compared a byte at a time as PREFIX reads it (wide compares cost 63 cells
        # more): with 0 (a restart), with the words loaded and their CRC-32 (a
        # guard starts with a word count, as a chunk with its first word's index: one
        # compare serves both), and, plus the chunk's word count, with the words (a
        # repeat). APPLY then assembles load words, RUN input beats, in one register.
        assert [n for n, _ in RUN_GUARD_FIELDS] == ["words", "weights_crc"]
        assert OFFSET_BYTES == len(words) // 8
        restart, same, repeat, carry = (Signal(name=n) for n in
                                        ("restart", "same", "repeat", "carry"))
        assembled = Signal(8 * max(sizes.load_bytes, sizes.x_bytes))
        word = assembled[:8 * sizes.load_bytes]
        nbyte = Signal(range(max(sizes.load_bytes, sizes.x_bytes, GUARD_BYTES) + 1))
        beat = assembled[:8 * sizes.x_bytes]
        beat_full = Signal()
        beats_left = Signal(range(c.x_depth + 1))
        first_word = Signal()
        load_word = engine.load.payload
        load_valid, load_first = Signal(name="load_valid"), Signal(name="load_first")
        m.d.sync += load_valid.eq(0)
        m.d.comb += [engine.load.valid.eq(load_valid), load_word.as_value().eq(word),
                     load_word.first.eq(load_first)]

        # The receiver may take the next frame whenever the buffer is not being read,
        # including while a reply is still going out; `received` remembers it.
        received = Signal()
        with m.If(rcv.done):
            m.d.sync += received.eq(1)

        # The frame's fields are stable from `done` on and IDLE lasts at least one cycle
        # after it, so DECIDE can branch on verdicts registered here: decoding the
        # command and comparing lengths in DECIDE itself was the iCE40 critical path.
        verdict = {name: Signal(name=f"is_{name.lower()}") for name in
                   ("IDENTIFY", "STATUS", "LOAD_WEIGHTS", "RUN")}
        load_short, run_length_bad, no_weights = Signal(), Signal(), Signal()
        m.d.sync += [
            *(flag.eq(rcv.command == Command[name]) for name, flag in verdict.items()),
            load_short.eq((rcv.length < OFFSET_BYTES + sizes.load_bytes) | (unit != 0)),
            run_length_bad.eq(rcv.length != GUARD_BYTES + c.x_depth * sizes.x_bytes if fixed
                              else (rcv.length < GUARD_BYTES + fewest * sizes.x_bytes) |
                              (rcv.length > GUARD_BYTES + most * sizes.x_bytes) |
                              (x_unit != 0)),
            no_weights.eq(engine.slots == 0),
        ]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(received):
                    m.d.sync += received.eq(0)
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                # Keep the request's command, seq and CRC for its reply frames: the
                # receiver is disabled until the reply has started, but it may take the
                # next request while a RUN's later frames go out.
                m.d.sync += [reply_command.eq(rcv.command | REPLY), reply_seq.eq(rcv.seq),
                             reply_check.eq(rcv.check)]
                with m.If(~rcv.length_ok):
                    reply(Status.NAK_LENGTH)
                with m.Elif(~rcv.crc_ok):
                    reply(Status.NAK_CRC)
                with m.Else():
                    m.d.sync += frames.eq(frames + 1)
                    with m.If(verdict["IDENTIFY"]):
                        reply(Status.OK, REPLY_HEAD_BYTES + len(self._identity), BODY_IDENTITY)
                    with m.Elif(verdict["STATUS"]):
                        m.d.sync += [held["refused"].eq(refused), held["cycles"].eq(cycles)]
                        reply(Status.OK, REPLY_HEAD_BYTES + len(status) // 8, BODY_STATUS)
                    with m.Elif(verdict["LOAD_WEIGHTS"]):
                        with m.If(load_short):
                            reply(Status.NAK_LENGTH)
                        with m.Else():
                            read_prefix(OFFSET_BYTES)
                    with m.Elif(verdict["RUN"]):
                        with m.If(run_length_bad):
                            reply(Status.NAK_LENGTH)
                        with m.Elif(no_weights):
                            reply(Status.NO_WEIGHTS)
                        with m.Else():
                            read_prefix(GUARD_BYTES)
                    with m.Else():
                        reply(Status.NAK_COMMAND)

            with m.State("PREFIX"):
                # (restart and repeat are meaningless after a guard's CRC bytes.)
                with m.If(read_bytes()):
                    known = Cat(words, wcrc.crc).word_select(nbyte, 8)    # words' first
                    total = (rd.data + carry +
                             Cat(chunk_words, Const(0, len(words))).word_select(nbyte, 8))
                    m.d.sync += [nbyte.eq(nbyte + 1), carry.eq(total[8]),
                                 restart.eq(restart & (rd.data == 0)),
                                 same.eq(same & (rd.data == known)),
                                 repeat.eq(repeat & (total[:8] == known))]
                with m.If(~pending & (ptr == end)):
                    m.next = "CHECK"
            with m.State("CHECK"):
                m.d.sync += [end.eq(rcv.length), nbyte.eq(0), first_word.eq(restart)]
                with m.If(verdict["RUN"]):
                    with m.If(same):
                        # The reply's frames start from RUN on (below).
                        # y_first starts a frame before beat 0: each frame adds a
                        # full frame's beats (a constant) as it starts.
                        m.d.sync += [beat_full.eq(0), beats_left.eq(c.x_depth if fixed else 1),
                                     y_byte.eq(0), y_rest.eq(engine.slots),
                                     y_first.eq(-frame_beats % 2 ** len(y_first)),
                                     body.eq(BODY_Y)]
                        m.next = "RUN"
                    with m.Else():
                        reply(Status.NAK_WEIGHTS)
                with m.Elif(restart):
                    m.d.sync += words.eq(0)
                    m.d.comb += wcrc.start.eq(1)
                    m.next = "APPLY"
                with m.Elif(same):            # the chunk extends the load
                    m.next = "APPLY"
                with m.Elif(repeat):
                    reply(Status.OK)            # the chunk just applied, again: its ack was lost
                with m.Else():
                    reply(Status.NAK_OFFSET)
            with m.State("APPLY"):
                # The CRC-32 takes each byte in 2-bit pieces, low first (its input is
                # reflected: the same CRC), while the reader holds the byte: 4 cycles a
                # byte, 1 % of a frame's line time at 1 Mbaud and 30 MHz, and 56 cells
                # fewer than a byte a cycle.
                piece = Signal(range(APPLY_BYTE_CYCLES))   # wraps after the byte's last
                m.d.comb += [hold.eq(pending & (piece != APPLY_BYTE_CYCLES - 1)),
                             wcrc.data.eq(rd.data.word_select(piece, _CRC_PIECE)),
                             wcrc.valid.eq(pending)]
                with m.If(pending):
                    m.d.sync += piece.eq(piece + 1)
                fresh = read_bytes()
                last_byte = nbyte == sizes.load_bytes - 1
                with m.If(fresh):
                    m.d.sync += [word.word_select(nbyte, 8).eq(rd.data),
                                 nbyte.eq(Mux(last_byte, 0, nbyte + 1))]
                # A word goes to the engine the cycle after its last byte is read, from
                # registers (the core need not register it again; the next word's first
                # byte lands a cycle later). The first word of a restart always resets
                # the lanes' write pointers.
                with m.If(fresh & last_byte):
                    m.d.sync += [words.eq(words + 1), first_word.eq(0), load_valid.eq(1),
                                 load_first.eq(first_word)]
                with m.If(~pending & (ptr == end)):
                    reply(Status.OK)

            with m.State("RUN"):
                # Input beats from the buffer (the reply's head goes out meanwhile). A
                # fixed-width core's last beat is its x_depth-th; another's is the one
                # that ends the payload (beats_left stays 1 until it has gone).
                x_last = beats_left == 1 if fixed else Signal(name="x_last")
                m.d.comb += [hold.eq(beat_full & ~engine.x.ready),
                             engine.x.valid.eq(beat_full),
                             engine.x.payload.last.eq(x_last)]
                at = 0
                for name, shape in run_fields(c):       # x, and an LSTM step's reset
                    width = layout_width([(name, shape)])
                    m.d.comb += Value.cast(engine.x.payload[name]).eq(beat[at:at + width])
                    at += width
                fresh = read_bytes()
                with m.If(engine.x.valid & engine.x.ready):
                    m.d.sync += [beat_full.eq(0),
                                 beats_left.eq(beats_left - (1 if fixed else x_last))]
                with m.If(fresh):
                    last_byte = nbyte == sizes.x_bytes - 1
                    m.d.sync += [beat.word_select(nbyte, 8).eq(rd.data),
                                 nbyte.eq(Mux(last_byte, 0, nbyte + 1))]
                    with m.If(last_byte):
                        m.d.sync += beat_full.eq(1)
                        if not fixed:       # rd.data is the payload's byte ptr - 1
                            m.d.sync += x_last.eq(ptr == end)
                with m.If(beats_left == 0):
                    m.next = "REPLY"            # the output beats keep streaming out
            with m.State("REPLY"):
                with m.If(~xmt.busy & ~xmt.start & (y_rest == 0)):
                    m.next = "IDLE"
        with m.If(reply_go):
            m.d.sync += [start_reply.eq(1), reply_length.eq(reply_len), reply_code.eq(reply_status),
                         head_at.eq(0), body.eq(reply_src), index.eq(0)]
        # A RUN's next reply frame, once the one before has gone out: the head, its part
        # (first beat and the vector's count), then up to frame_beats beats. The decision
        # is registered (off the FSM's paths); ~start keeps it from starting a frame twice.
        frame_due = Signal()
        m.d.sync += frame_due.eq((fsm.ongoing("RUN") | fsm.ongoing("REPLY")) & (y_rest != 0) &
                                 ~xmt.busy & ~xmt.start)
        with m.If(frame_due & ~xmt.start):
            m.d.sync += [start_reply.eq(1), reply_length.eq(next_length),
                         reply_code.eq(Status.OK.value), head_at.eq(0),
                         frame_left.eq(next_beats), y_first.eq(y_first + frame_beats),
                         y_rest.eq(y_rest - next_beats)]
        m.d.comb += rcv.enable.eq((fsm.ongoing("IDLE") & ~received) | fsm.ongoing("REPLY"))
        return m


class Device(wiring.Component):
    """UART + :class:`Controller`: the ``rx``/``tx`` core that a board wraps.

    Parameters
    ----------
    config : EngineConfig or NetworkConfig
    clock_hz, baud : int
        The UART runs at ``round(clock_hz / baud)`` cycles per bit.
    """

    def __init__(self, config: EngineConfig | NetworkConfig, *, clock_hz: int, baud: int):
        self._config = config
        self.divisor = round(clock_hz / baud)
        self._controller = Controller(config, clock_hz=clock_hz, baud=baud,
                                      idle_cycles=IDLE_BYTES * 10 * self.divisor)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    @property
    def config(self) -> EngineConfig | NetworkConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.submodules.controller = ctl = self._controller
        # A two-byte FIFO (registered ready and valid) cuts the combinational
        # ready chain UART → transmitter → reply source, which limited fmax on iCE40.
        m.submodules.tx_fifo = fifo = SyncFIFOBuffered(width=8, depth=2)
        connect(m, urx.data, ctl.rx)
        m.d.comb += [fifo.w_data.eq(ctl.tx.payload), fifo.w_en.eq(ctl.tx.valid),
                     ctl.tx.ready.eq(fifo.w_rdy),
                     utx.data.payload.eq(fifo.r_data), utx.data.valid.eq(fifo.r_rdy),
                     fifo.r_en.eq(utx.data.ready)]
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        return m

