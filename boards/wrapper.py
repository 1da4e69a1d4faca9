"""The board top: clock, reset and UART pins around a core.

A *core* is any :class:`amaranth.lib.wiring.Component` with the signature
``{"rx": In(1), "tx": Out(1)}`` (a UART link, lines idle high) in the ``sync``
domain. :class:`BoardTop` gives it a ``sync`` domain at the board's
:attr:`~darbgen.boards.Board.clock_hz` and wires it to the board's USB serial bridge.
"""

from __future__ import annotations

from amaranth.hdl import (ClockDomain, ClockSignal, DomainRenamer, Elaboratable, Module, Shape,
                          Signal)
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

from .pll import ICE40PLL
from .targets import Board

__all__ = ["CORE_SIGNATURE", "SYNC_CLOCK_NET", "BoardTop", "ResetSequencer"]

#: Name of the PLL output wire in the netlist, the target of the clock constraint.
SYNC_CLOCK_NET = "sync_clk"

#: The interface every core presents to the board.
CORE_SIGNATURE = wiring.Signature({"rx": In(1), "tx": Out(1)})

# Reset is held this long after the PLL locks. iCE40 block RAMs read as zeroes for ~3 us
# after configuration (Amaranth's own iCE40 reset logic waits 15 us for the same reason);
# a PLL usually takes longer than that to lock, but the wait costs one small counter.
POR_SECONDS = 15e-6


def _is_core_signature(signature: wiring.Signature) -> bool:
    """``{"rx": In(1), "tx": Out(1)}``, whatever the initial values (``tx`` idles high)."""
    members = signature.members
    if set(members) != set(CORE_SIGNATURE.members):
        return False
    for name, expected in CORE_SIGNATURE.members.items():
        member = members[name]
        if not (member.is_port and member.flow == expected.flow
                and Shape.cast(member.shape) == Shape.cast(expected.shape)):
            return False
    return True


class ResetSequencer(wiring.Component):
    """Raise ``ready`` once the clock has been locked for ``delay`` cycles.

    ``locked`` is asynchronous (a PLL's LOCK) and is synchronized first; the
    sequencer needs no reset (flip-flops start at 0 after configuration), and
    only counts cycles while locked, since a PLL output can toggle before LOCK
    rises. Losing lock drops ``ready`` again.

    Parameters
    ----------
    delay : int
        Locked cycles before ``ready`` rises.

    Members
    -------
    locked : In(1)
        Clock is stable (asynchronous).
    ready : Out(1)
        Release reset.
    """

    def __init__(self, delay: int):
        if not isinstance(delay, int) or delay < 1:
            raise ValueError(f"Delay must be a positive integer, not {delay!r}")
        self._delay = delay
        super().__init__({"locked": In(1), "ready": Out(1)})

    def elaborate(self, platform):
        m = Module()
        locked = Signal()
        m.submodules.lock_sync = FFSynchronizer(self.locked, locked)
        timer = Signal(range(self._delay + 1))
        with m.If(~locked):
            m.d.sync += [timer.eq(0), self.ready.eq(0)]
        with m.Elif(timer == self._delay):
            m.d.sync += self.ready.eq(1)
        with m.Else():
            m.d.sync += timer.eq(timer + 1)
        return m


class BoardTop(Elaboratable):
    """Top-level module for ``board`` around ``core``.

    The ``sync`` domain runs from the board PLL (or straight from the oscillator on
    boards without one). Its reset is held while the PLL is unlocked and for
    :data:`POR_SECONDS` after, then released through a reset synchronizer, so
    every flip-flop of the core leaves reset on the same clock edge. The board's
    ``uart`` resource 0 is connected to ``core.rx`` / ``core.tx``, and the PLL output
    gets a clock constraint at :attr:`Board.clock_hz` so place and route checks it.

    Parameters
    ----------
    board : Board
        The target; the core must have been built for ``board.clock_hz``.
    core : wiring.Component
        The core, with signature :data:`CORE_SIGNATURE`.

    Raises
    ------
    TypeError
        ``board`` is not a :class:`Board`, or ``core`` does not have the core signature.
    """

    def __init__(self, board: Board, core: wiring.Component):
        if not isinstance(board, Board):
            raise TypeError(f"Board must be a darbgen.boards.Board, not {board!r}")
        if not (isinstance(core, wiring.Component) and _is_core_signature(core.signature)):
            raise TypeError(f"Core must be a wiring.Component with signature "
                            f"{{'rx': In(1), 'tx': Out(1)}}, not {core!r}")
        self._board = board
        self._core = core

    @property
    def board(self) -> Board:
        return self._board

    @property
    def core(self) -> wiring.Component:
        return self._core

    def elaborate(self, platform):
        if platform is None:
            raise TypeError("BoardTop needs a platform to elaborate (it requests pins)")
        m = Module()
        board = self._board

        # The constraint names this wire. Without "keep", Yosys drops the name in favour of
        # another one of the same net ("core.clk" on ECP5) and nextpnr ignores the
        # constraint. nextpnr may still report timing under another name, so build() finds
        # the clock by its constraint.
        clk = Signal(name=SYNC_CLOCK_NET, attrs={"keep": 1})
        locked = Signal()
        self._clock(m, platform, clk, locked)

        # The por domain has no reset of its own: it is what makes the sync reset.
        m.domains.por = ClockDomain(reset_less=True, local=True)
        m.domains.sync = ClockDomain()
        m.d.comb += [ClockSignal("por").eq(clk), ClockSignal("sync").eq(clk)]
        m.submodules.sequencer = sequencer = DomainRenamer("por")(
            ResetSequencer(max(1, round(POR_SECONDS * board.clock_hz))))
        m.d.comb += sequencer.locked.eq(locked)
        ready = sequencer.ready

        not_ready = ~ready
        if platform.default_rst is not None:
            m.submodules.rst_buf = rst_buf = io.Buffer("i", platform.request(
                platform.default_rst, dir="-"))
            not_ready = not_ready | rst_buf.i
        # Asserts at once, releases on a sync clock edge.
        m.submodules.reset_sync = ResetSynchronizer(not_ready, domain="sync")

        # "-" for every line: only rx and tx get buffers; the bridge's other lines
        # (rts, dtr on the ULX3S) stay unused inputs.
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.submodules.core = core = self._core
        m.d.comb += [core.rx.eq(rx_buf.i), tx_buf.o.eq(core.tx)]
        return m

    def _clock(self, m, platform, clk, locked):
        """Drive ``clk`` at ``board.clock_hz`` and ``locked`` once it is stable."""
        board = self._board
        pll = board.pll_config
        osc = platform.request(platform.default_clk, dir="-")
        if isinstance(pll, ICE40PLL):
            # The iCEBreaker's oscillator is on pin 35, the PLL's dedicated input pad. Fed
            # through an SB_IO to SB_PLL40_CORE, nextpnr cannot place the PLL ("PLL bel
            # 'X12/Y31/pll_3' cannot be used as it conflicts with input 'osc_buf.buf0' on pin
            # '35'"), so SB_PLL40_PAD takes the pad directly, with no input buffer.
            m.submodules.pll = pll.instance(ref=osc.io, clk_out=clk, locked=locked, pad=True)
        else:
            m.submodules.osc_buf = osc_buf = io.Buffer("i", osc)
            if pll is None:
                m.d.comb += [clk.eq(osc_buf.i), locked.eq(1)]
                return   # the platform already constrains the oscillator pin
            m.submodules.pll = pll.instance(ref=osc_buf.i, clk_out=clk, locked=locked)
        platform.add_clock_constraint(clk, board.clock_hz)
