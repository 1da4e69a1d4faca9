"""Board targets and the open-toolchain build.

:data:`BOARDS` / :func:`get_board` describe each board (platform, sync clock, link,
part budget); :class:`BoardTop` puts a UART core on a board; :func:`build` runs
Yosys and nextpnr (YoWASP) and writes the bitstream plus ``report.json``.
"""

from .build import BuildError, ClockTiming, NextpnrLog, TimingError, build, parse_nextpnr_log
from .pll import ECP5PLL, ICE40PLL
from .targets import BOARDS, Board, get_board
from .wrapper import CORE_SIGNATURE, BoardTop, ResetSequencer

__all__ = [
    "BOARDS", "Board", "get_board",
    "CORE_SIGNATURE", "BoardTop", "ResetSequencer",
    "build", "BuildError", "TimingError", "parse_nextpnr_log", "NextpnrLog", "ClockTiming",
    "ICE40PLL", "ECP5PLL",
]
