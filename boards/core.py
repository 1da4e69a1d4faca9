"""The core a board runs for one layer or a whole network: its config and its :class:`Device`.

``darbgen build``, ``serve-sim`` and ``deploy`` all derive the engine from the same
three things, the layer, the board and the lane count, through
:func:`engine_config`; the host recomputes it to check a board's build ID
(:func:`darbgen.host.driver.expected_config`).
"""

from __future__ import annotations

from amaranth.back import verilog

from ..format import SparseLayer
from ..network import NetworkPlan
from ..hdl.device import Device
from ..host.driver import expected_config
from .targets import Board

__all__ = ["DEVICE_TOP", "input_width", "engine_config", "device", "device_verilog"]

#: Verilog module name of the device core (the simulated board's top).
DEVICE_TOP = "darbgen_device"

# Widest port of one block RAM in simple dual-port mode, by block size in kbit:
# iCE40 SB_RAM40_4K 256x16, ECP5 DP16KD 512x36, 7-series RAMB36 512x72.
_RAM_PORT_BITS = {4: 16, 18: 36, 36: 72}


def input_width(board: Board, input_bits: int = 8) -> int:
    """Input elements per x-buffer word: as many as one block RAM port carries, so
    each lane's x copy is one block RAM (a power of two, at least 1)."""
    bits = _RAM_PORT_BITS.get(board.bram_kbits, 16)
    width = 1
    while 2 * width * input_bits <= bits:
        width *= 2
    return width


def engine_config(board: Board, target: SparseLayer | NetworkPlan, lanes: int | None = None):
    """The core ``board`` runs ``target`` on: one engine for a layer, a chain of engines
    for a whole network (``lanes`` per engine, default the board's)."""
    return expected_config(target, lanes or board.default_lanes, input_width(board))


def device(board: Board, target: SparseLayer | NetworkPlan, lanes: int | None = None) -> Device:
    """UART + protocol controller + core for ``target`` at the board's clock and baud."""
    return Device(engine_config(board, target, lanes), clock_hz=board.clock_hz, baud=board.baud)


def device_verilog(dev: Device) -> str:
    """The device's Verilog: the same RTL the bitstream holds, without pins or PLL."""
    from .. import toolenv
    toolenv.setup()
    return verilog.convert(dev, name=DEVICE_TOP, emit_src=False)
