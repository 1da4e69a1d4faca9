"""Board targets: the platform, clock, link and part budget of each supported board.

A :class:`Board` is what the rest of darbgen needs to know about a board before
elaborating a core for it: the sync clock frequency (the UART divisor depends on
it), the default engine size, and whether an open-source flow can build a
bitstream for it. :data:`BOARDS` is the registry and :func:`get_board` the lookup
with a helpful error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

from amaranth.build import Platform
from amaranth_boards.arty_a7 import ArtyA7_35Platform
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .pll import ECP5PLL, ICE40PLL

__all__ = ["Board", "BOARDS", "get_board"]

# A UART receiver samples mid-bit; 2% rate error leaves margin for the other end's error
# over a 10-bit frame (the usual budget is ~4.5% in total).
MAX_BAUD_ERROR = 0.02
# Below 4 clocks per bit the receiver cannot find the middle of a bit.
MIN_UART_DIVISOR = 4
# How far the PLL output may miss ``target_mhz`` before the board definition is refused.
MAX_CLOCK_ERROR = 0.005


@dataclass(frozen=True)
class Board:
    """One board target.

    Parameters
    ----------
    name : str
        Registry key (as on the command line).
    device : str
        FPGA part (and package) the build targets, for reports.
    platform : callable
        Factory returning a fresh amaranth-boards platform (platforms are stateful,
        so every build needs its own).
    target_mhz : float
        Requested sync clock frequency; the PLL (if any) is solved for it.
    default_lanes : int
        Engine lanes that fit the part with margin.
    baud : int
        Default UART baud rate of the board's USB serial bridge.
    open_flow : bool
        A bitstream can be built with the open (YoWASP) tools; otherwise only the
        Verilog and vendor constraints are generated.
    pll : type or None
        :class:`~darbgen.boards.pll.ICE40PLL`, :class:`~darbgen.boards.pll.ECP5PLL`,
        or ``None`` to run the sync domain straight from the oscillator.
    bitstream_suffix : str or None
        Suffix of the bitstream file (``".bin"``, ``".bit"``); ``None`` without an open flow.
    bram_blocks, bram_kbits : int
        Number of block RAMs in the part and the size of each, in kbit.
    dsp_blocks : int
        Number of hard multipliers in the part.
    synth_opts : str
        Extra options for Yosys' ``synth_<family>`` (``-dsp`` on iCE40: Amaranth's flow
        does not map multipliers to SB_MAC16 without it).

    Members
    -------
    osc_hz : int
        Board oscillator frequency, read from the platform.
    pll_config : ICE40PLL or ECP5PLL or None
        The solved PLL configuration.

    Raises
    ------
    ValueError
        An impossible clock request, or a bad count or rate.
    """

    name: str
    device: str
    platform: Callable[[], Platform] = field(repr=False)
    target_mhz: float
    default_lanes: int
    baud: int
    open_flow: bool
    pll: type | None = None
    bitstream_suffix: str | None = None
    bram_blocks: int = 0
    bram_kbits: int = 0
    dsp_blocks: int = 0
    synth_opts: str = ""
    osc_hz: int = field(init=False, repr=False, compare=False)
    pll_config: ICE40PLL | ECP5PLL | None = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in ("default_lanes", "baud"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not self.target_mhz > 0:
            raise ValueError(f"target_mhz must be positive, not {self.target_mhz!r}")
        if self.open_flow and self.bitstream_suffix is None:
            raise ValueError(f"Board {self.name!r} has an open flow but no bitstream suffix")
        osc_hz = int(self.platform().default_clk_frequency)
        target_hz = Fraction(self.target_mhz) * 1_000_000
        if self.pll is None:
            pll_config, out_hz = None, osc_hz
        else:
            pll_config = self.pll.solve(osc_hz, target_hz)
            out_hz = pll_config.out_hz
        if abs(out_hz - target_hz) > MAX_CLOCK_ERROR * target_hz:
            how = "its PLL gets" if self.pll is not None else "without a PLL it runs at"
            raise ValueError(f"Board {self.name!r} cannot run at {self.target_mhz:g} MHz: "
                             f"{how} {float(out_hz) / 1e6:g} MHz")
        # Frozen: set the derived fields the way dataclasses itself does.
        object.__setattr__(self, "osc_hz", osc_hz)
        object.__setattr__(self, "pll_config", pll_config)

    @property
    def clock_hz(self) -> int:
        """Sync clock frequency the core runs at, Hz (what the PLL actually makes)."""
        if self.pll_config is None:
            return self.osc_hz
        return round(self.pll_config.out_hz)

    def uart_divisor(self, baud: int | None = None) -> int:
        """Clock cycles per UART bit.

        Parameters
        ----------
        baud : int, optional
            Baud rate; the board's default when omitted.

        Returns
        -------
        int
            ``round(clock_hz / baud)``.

        Raises
        ------
        ValueError
            The baud rate is not positive, the rate error exceeds 2%, or fewer than
            4 cycles per bit are left.
        """
        baud = self.baud if baud is None else baud
        if not isinstance(baud, int) or baud <= 0:
            raise ValueError(f"Baud rate must be a positive integer, not {baud!r}")
        divisor = round(self.clock_hz / baud)
        where = f"board {self.name!r} ({self.clock_hz / 1e6:g} MHz clock)"
        if divisor < MIN_UART_DIVISOR:
            raise ValueError(f"Baud rate {baud} is too fast for {where}: the UART divisor "
                             f"would be {divisor}, it must be at least {MIN_UART_DIVISOR}")
        error = abs(self.clock_hz / divisor - baud) / baud
        if error > MAX_BAUD_ERROR:
            raise ValueError(f"Baud rate {baud} is {error:.1%} off on {where} with divisor "
                             f"{divisor}; at most {MAX_BAUD_ERROR:.0%} is allowed")
        return divisor

    def replace(self, **changes) -> "Board":
        """A copy with some fields changed (the PLL is solved again), e.g. another
        ``target_mhz`` when a large core misses timing."""
        return dataclasses.replace(self, **changes)


BOARDS: dict[str, Board] = {board.name: board for board in (
    Board(
        name="icebreaker",
        device="iCE40UP5K-SG48",
        platform=ICEBreakerPlatform,
        target_mhz=30,                    # 12 MHz x 80 / 32; VCO 960 MHz
        default_lanes=4,                  # 5 BRAMs per lane (y is 2: >16 bits) + 2 for the
                                          # link buffer; digits fc1: 26/30 RAM, 30.5 MHz
        baud=1_000_000,                   # FT2232H channel B
        open_flow=True,
        pll=ICE40PLL,
        bitstream_suffix=".bin",
        bram_blocks=30, bram_kbits=4,
        dsp_blocks=8,
        synth_opts="-dsp",
    ),
    Board(
        name="ulx3s",
        device="LFE5U-85F-6BG381C",
        platform=ULX3S_85F_Platform,
        target_mhz=60,                    # 25 MHz / 5 x 12; VCO 600 MHz
        default_lanes=16,
        baud=1_000_000,                   # FT231X
        open_flow=True,
        pll=ECP5PLL,
        bitstream_suffix=".bit",
        bram_blocks=208, bram_kbits=18,
        dsp_blocks=156,
    ),
    Board(
        name="arty-a7",
        device="XC7A35TICSG324-1L",
        platform=ArtyA7_35Platform,
        target_mhz=100,                   # the oscillator itself; Vivado can add an MMCM
        default_lanes=16,
        baud=1_000_000,                   # FT2232HQ
        open_flow=False,                  # no open 7-series place and route on PyPI
        bram_blocks=50, bram_kbits=36,
        dsp_blocks=90,
    ),
)}


def get_board(name: str) -> Board:
    """The registered board called ``name``.

    Raises
    ------
    ValueError
        No board has that name; the message lists the valid ones.
    """
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown board {name!r}; choose from {', '.join(BOARDS)}") from None
