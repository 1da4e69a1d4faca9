"""An 8N1 UART: a receiver and a transmitter with byte streams, ``divisor`` cycles per bit.

Frames are a low start bit, eight data bits LSB first and a high stop bit; the line
idles high. The receiver times every sample from the falling edge of the start bit, so
it tolerates a few percent of rate mismatch (±2% is tested) and a stop bit shorter than
a whole bit.
"""

from numbers import Integral

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["MIN_DIVISOR", "UARTRx", "UARTTx"]

#: The fewest clock cycles per bit: the receiver needs a distinct start-bit middle.
MIN_DIVISOR = 4


def _check_divisor(divisor) -> int:
    if not isinstance(divisor, Integral) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor must be an integer of at least {MIN_DIVISOR} clock "
                         f"cycles per bit, not {divisor!r}")
    return int(divisor)


class UARTRx(wiring.Component):
    """UART receiver: bits on ``rx`` to a byte stream.

    The start bit is checked again in its middle, so a low glitch shorter than half a
    bit is not taken for a byte. Each data bit and the stop bit are sampled in their
    middle. After a bad stop bit the byte is dropped and the receiver waits for the line
    to return high before it hunts for the next start bit (a break is one error, not a
    string of null bytes).

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least :data:`MIN_DIVISOR`).

    Members
    -------
    rx : In(1, init=1)
        The serial line, asynchronous to the clock (it is synchronized here).
    data : Out(stream.Signature(8))
        Received bytes. ``valid`` stays high until ``ready``.
    frame_error : Out(1)
        One-cycle strobe: a byte with a bad stop bit was dropped.
    overrun : Out(1)
        One-cycle strobe: a byte was dropped because the previous one was not yet taken.

    Raises
    ------
    ValueError
        If ``divisor`` is not an integer of at least :data:`MIN_DIVISOR`.
    """

    def __init__(self, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overrun": Out(1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        # init=1: an idle line, so leaving reset does not look like a start bit.
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self._divisor))    # cycles to the middle of the next bit
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)

        with m.FSM():
            with m.State("Idle"):
                with m.If(~rx):
                    # Counted from the first low cycle: this lands in the start bit's middle.
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "Start"
            with m.State("Start"):
                with m.If(timer == 0):
                    with m.If(rx):
                        m.next = "Idle"                 # a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(self._divisor - 1), bit.eq(0)]
                        m.next = "Data"
            with m.State("Data"):
                with m.If(timer == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(self._divisor - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "Stop"
            with m.State("Stop"):
                with m.If(timer == 0):
                    with m.If(~rx):
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "Break"
                    with m.Elif(self.data.valid & ~self.data.ready):
                        m.d.comb += self.overrun.eq(1)
                        m.next = "Idle"
                    with m.Else():
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        # Back to hunting in the middle of the stop bit, so a sender
                        # slightly faster than us does not lose the next start edge.
                        m.next = "Idle"
            with m.State("Break"):
                with m.If(rx):
                    m.next = "Idle"
        return m


class UARTTx(wiring.Component):
    """UART transmitter: a byte stream to bits on ``tx``.

    A byte is taken in the last cycle of the previous stop bit, so a stream that is
    always valid goes out back to back, with no idle time between frames.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (at least :data:`MIN_DIVISOR`).

    Members
    -------
    data : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1, init=1)
        The serial line (registered, high when idle).

    Raises
    ------
    ValueError
        If ``divisor`` is not an integer of at least :data:`MIN_DIVISOR`.
    """

    def __init__(self, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))    # cycles left in the current bit, minus one
        bits = Signal(range(11))                # bits left in the frame, the current one too
        shreg = Signal(9)                       # data bits then the stop bit

        bit_done = timer == 0
        m.d.comb += self.data.ready.eq((bits == 0) | ((bits == 1) & bit_done))

        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(self.data.payload, 1)), bits.eq(10),
                         timer.eq(self._divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(bit_done):
                # Ones shift in behind the stop bit, so the line ends up idle high.
                m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(Cat(shreg[1:], 1)),
                             bits.eq(bits - 1), timer.eq(self._divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
