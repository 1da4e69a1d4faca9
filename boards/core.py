"""The core a board runs: its config and its :class:`Device`.

By default a board runs the layer-sequenced processor (:func:`processor_config`): one
bitstream per board and lane count, sized by the board's memories
(:data:`PROCESSORS`, the one place its capacities are set), that runs every network
that fits. The older cores are sized to one artifact: ``darbgen build``, ``serve-sim``
and ``deploy`` derive them from the layer (or network), the board and the lane count,
through :func:`engine_config`; the host recomputes it to check a board's build ID
(:func:`darbgen.host.driver.expected_config`).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.back import verilog

from ..config import EngineConfig
from ..format import SparseLayer
from ..network import NetworkPlan
from ..processor import ProcessorConfig
from ..hdl.device import Device
from ..host.driver import expected_config
from .targets import Board

__all__ = ["DEVICE_TOP", "input_width", "engine_config", "device", "device_verilog",
           "ProcessorSizes", "PROCESSORS", "processor_config", "processor_device"]

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


@dataclass(frozen=True)
class ProcessorSizes:
    """A board's default processor: its lanes and their memories, and the capacities of
    :class:`~darbgen.processor.ProcessorConfig` itself (docs/processor.md, "Weight banks").

    ``lane_depth`` and ``lane_rows`` are per lane (its beat bank and header memory), so
    other lane counts keep them; the rest is shared by the lanes. ``capacities`` holds
    ``ProcessorConfig``'s own fields by their names (``lane_slots``, ``table_depth``,
    ``max_steps`` and the optional ones: ``max_classes``, the gather's, the LSTM cell's),
    so a capacity the contract gains needs no field here.
    """

    lanes: int
    lane_depth: int                 # weight beats per lane (one bank each)
    lane_rows: int                  # row headers per lane, all layers + one marker a step
    activations: int                # the widest layer input or output
    capacities: dict                # ProcessorConfig's keyword arguments but `engine`
    shifts: tuple = (1, 2, 3, 4, 5, 6)      # block sizes 2 to 64 (DARB's default set)
    max_keep: int = 2
    weight_bits: int = 8
    input_bits: int = 8


#: Each board's default processor: what ``darbgen build --board NAME`` and ``serve-sim
#: --board NAME`` make without an artifact.
PROCESSORS = {
    # 4 lanes, each lane's bank one SB_SPRAM256KA (16,384 words of 16 bits): its beats,
    # then (darbgen.processor.bank_regions) the program, a third of every requantizer
    # entry (its other 19 bits in EBR) and the gather's tables in banks 0-2, and the
    # scratchpad and the logits' low halves in bank 3, which they fill: 10,224 + 16 +
    # 5,888 + 256 = 16,384 words, so 40,896 kept weights. The gather holds LeNet-5 on
    # 28x28 (5,264 scratchpad entries) and digits-cnn (docs/processor.md, "Memory of
    # the gather"); 24 EBR for the rest, as before the gather.
    "icebreaker": ProcessorSizes(lanes=4, lane_depth=16384 - 5888 - 256 - 16, lane_rows=256,
                                 activations=784, capacities=dict(
                                     lane_slots=256, table_depth=512, max_steps=16,
                                     max_classes=256, map_depth=5888, gather_positions=1536,
                                     gather_columns=768, gather_pools=16)),
    # 32 lanes of 5 DP16KD (1024 x 18) of beats and one for x each: 163,840 kept weights,
    # 197 of 208 DP16KD; headers, sums and the program in LUT RAM. The gather holds
    # LeNet-5 on 28x28 and digits-cnn (docs/processor.md, "Memory of the gather": about
    # 8 DP16KD more, an estimate: no ECP5 build of it has finished yet).
    "ulx3s": ProcessorSizes(lanes=32, lane_depth=5 * 1024, lane_rows=64, activations=784,
                            capacities=dict(
                                lane_slots=32, table_depth=1024, max_steps=16,
                                max_classes=256, map_depth=6144, gather_positions=1536,
                                gather_columns=768, gather_pools=16,
                                # The char LSTM's step (hidden 128; 544 entries at 32
                                # lanes): docs/processor.md, "The LSTM cell on the boards".
                                lstm_hidden=128, lstm_table=544)),
    "arty-a7": ProcessorSizes(lanes=8, lane_depth=8192, lane_rows=1024, activations=1024,
                              capacities=dict(lane_slots=256, table_depth=4096, max_steps=16)),
}


def processor_config(board: Board, lanes: int | None = None) -> ProcessorConfig:
    """The processor ``board`` runs by default (:data:`PROCESSORS`), at ``lanes`` lanes
    (default: the board's processor's).

    Raises
    ------
    ValueError
        The board has no default processor.
    """
    if board.name not in PROCESSORS:
        raise ValueError(f"board {board.name!r} has no default processor; boards with one: "
                         f"{', '.join(PROCESSORS)}")
    s = PROCESSORS[board.name]
    lanes = lanes or s.lanes
    # Fewer lanes than the board's: each keeps its beat bank, and the rows the board's
    # lanes would share (headers, sums) go to the lanes there are.
    share = -(-s.lanes // lanes)
    engine = EngineConfig(lanes=lanes, shifts=s.shifts, max_keep=s.max_keep,
                          max_row_nnz=s.activations, max_cols=s.activations,
                          lane_depth=s.lane_depth, lane_rows=s.lane_rows * share,
                          weight_bits=s.weight_bits, input_bits=s.input_bits,
                          input_width=input_width(board, s.input_bits))
    # Only the sum memory's rows follow the lane count.
    capacities = dict(s.capacities,
                      lane_slots=min(s.capacities["lane_slots"] * share, s.activations))
    return ProcessorConfig(engine, **capacities)


def processor_device(board: Board, lanes: int | None = None) -> Device:
    """UART + protocol controller + the board's default processor."""
    return Device(processor_config(board, lanes), clock_hz=board.clock_hz, baud=board.baud)


def device_verilog(dev: Device, board: Board | None = None) -> str:
    """The device's Verilog: the same RTL the bitstream holds, without pins or PLL. On
    ``board``'s part, if given: where it has SPRAM (the iCE40UP5K), the processor's banks
    are SB_SPRAM256KA instances holding its other memories behind the beats, as in the
    bitstream, and the text ends with Yosys's simulation model of the primitive."""
    from .. import toolenv
    from ..hdl.spram import uses_spram
    toolenv.setup()
    # The gateware asks its platform only for the part (`device`): the board has it.
    text = verilog.convert(dev, name=DEVICE_TOP, emit_src=False, platform=board)
    if uses_spram(board):
        from ..sim.runner import vendor_cell
        text += "\n" + vendor_cell("ice40", "SB_SPRAM256KA")
    return text
