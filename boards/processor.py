"""The processor sized to each board's part, and a measurement top for its builds.

:func:`processor_config` is the one place that says how a board's large memories hold
the processor (docs/processor.md, "Memories on the parts"):

* **iCE40UP5K** (iCEBreaker): four lanes, each lane's beat bank one SB_SPRAM256KA
  (16,384 beats of up to 16 bits; :class:`~darbgen.hdl.spram.SinglePortRAM`). The four
  SPRAMs give four words per cycle in all, so four lanes are fed every cycle and more
  lanes would wait for their beats; everything else lives in the 30 EBR.
* **ECP5-85F** (ULX3S): 32 lanes, each lane's beat bank five DP16KD (5,120 beats of up
  to 18 bits), its x copy one more; row headers, sums and the program are small enough
  for LUT RAM.

:class:`ProcessorProbe` wraps a :class:`~darbgen.hdl.processor.Processor` in the
``rx``/``tx`` core signature of :func:`darbgen.boards.build` with shift registers in
place of the protocol (as :class:`~darbgen.boards.ceiling.MACArray` does): every input
bit comes from ``rx``, every output bit reaches ``tx``, so synthesis keeps the whole
processor and place and route measures its memories, logic and fmax.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from darbgen.config import EngineConfig, layout_width
from darbgen.processor import ProcessorConfig

from .ceiling import XOR_FAN_IN
from .targets import Board, get_board

__all__ = ["PartPlan", "PART_PLANS", "processor_config", "ProcessorProbe"]


@dataclass(frozen=True)
class PartPlan:
    """How a board's part holds the processor.

    Parameters
    ----------
    lanes : int
        Lanes (multipliers) of the board's processor.
    lane_depth : int
        Weight beats per lane: the lane's beat bank.
    lane_rows, lane_slots, table_depth, max_classes : int
        Row headers per lane, rows a lane runs in one step, requantizer entries and
        logits (see :class:`~darbgen.processor.ProcessorConfig`).
    input_width : int
        Activations per x word: one block RAM port's width.
    """

    lanes: int
    lane_depth: int
    lane_rows: int
    lane_slots: int
    table_depth: int
    max_classes: int
    input_width: int


#: Activations (the widest layer): LeNet-300-100's 784 inputs.
ACT_DEPTH = 784
#: Program steps.
MAX_STEPS = 16
#: Block sizes 2 to 64 (log2), one kept weight per block (DARB), rows up to 256 kept weights.
SHIFTS, MAX_KEEP, MAX_ROW_NNZ = (1, 2, 3, 4, 5, 6), 1, 256

#: The plan per board (measured: docs/processor.md).
PART_PLANS = {
    "icebreaker": PartPlan(lanes=4, lane_depth=16384 - 512, lane_rows=256, lane_slots=256,
                           table_depth=512, max_classes=256, input_width=2),
    "ulx3s": PartPlan(lanes=32, lane_depth=5 * 1024, lane_rows=64, lane_slots=32,
                      table_depth=1024, max_classes=256, input_width=4),
}


def processor_config(board: Board | str, lanes: int | None = None) -> ProcessorConfig:
    """The processor ``board`` is built with (``lanes`` replaces the plan's lane count;
    each lane keeps its banks, so the capacity scales with the lanes).

    Raises
    ------
    ValueError
        ``board`` has no processor plan, or ``lanes`` is not a positive integer.
    """
    name = board.name if isinstance(board, Board) else get_board(board).name
    if name not in PART_PLANS:
        raise ValueError(f"board {name!r} has no processor plan; boards with one: "
                         f"{', '.join(PART_PLANS)}")
    plan = PART_PLANS[name]
    if lanes is None:
        lanes = plan.lanes
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
    engine = EngineConfig(lanes=lanes, shifts=SHIFTS, max_keep=MAX_KEEP,
                          max_row_nnz=MAX_ROW_NNZ, max_cols=ACT_DEPTH,
                          lane_depth=plan.lane_depth, lane_rows=plan.lane_rows,
                          input_width=plan.input_width)
    return ProcessorConfig(engine, lane_slots=plan.lane_slots, table_depth=plan.table_depth,
                           max_steps=MAX_STEPS, max_classes=plan.max_classes)


class ProcessorProbe(wiring.Component):
    """A processor whose ports are shift registers on ``rx`` and an XOR tree on ``tx``.

    For measuring a build only (it runs nothing useful): the load word, the input beat
    and every valid/ready come from one shift register fed by ``rx``; every output bit
    goes into a pipelined XOR tree (one register per :data:`XOR_FAN_IN` inputs) on ``tx``.

    Parameters
    ----------
    config : ProcessorConfig
    """

    def __init__(self, config: ProcessorConfig):
        self.config = config
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        from darbgen.hdl.processor import Processor

        m = Module()
        m.submodules.processor = proc = Processor(self.config)
        c = self.config
        load_w, x_w = layout_width(c.load_fields), layout_width(c.input_fields)
        chain = Signal(load_w + x_w + 3)
        m.d.sync += chain.eq(Cat(self.rx, chain[:-1]))
        m.d.comb += [proc.load.payload.eq(chain[:load_w]),
                     proc.x.payload.eq(chain[load_w:load_w + x_w]),
                     proc.load.valid.eq(chain[-1]), proc.x.valid.eq(chain[-2]),
                     proc.y.ready.eq(chain[-3])]
        leaves = list(Cat(proc.y.payload.as_value(), proc.y.valid, proc.x.ready))
        level = 0
        while len(leaves) > 1:
            nxt = []
            for k in range(0, len(leaves), XOR_FAN_IN):
                r = Signal(name=f"x{level}_{k // XOR_FAN_IN}")
                m.d.sync += r.eq(Cat(*leaves[k:k + XOR_FAN_IN]).xor())
                nxt.append(r)
            leaves, level = nxt, level + 1
        m.d.comb += self.tx.eq(leaves[0])
        return m
