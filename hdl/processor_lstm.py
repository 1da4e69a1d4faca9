"""The processor's LSTM cell: the chain's :class:`~darbgen.hdl.lstm.LSTMCell` as a unit
of the layer-sequenced :class:`~darbgen.hdl.processor.Processor`
(:mod:`darbgen.processor_lstm` has the contract).

An LSTM step runs its gate layer on the lanes like a Linear step; then, in the
sequencer's **CELL** state, the lanes' sums go to the cell instead of the
requantizer, and the cell writes each ``h_t`` into every lane's x memory at column
``inputs + unit`` (the next time step's ``h_{t-1}``: its lanes have finished reading
x). The cell's ``(h_t, c_t)`` leave on ``y`` when the step is the program's last.
"""

from amaranth.hdl import Cat, Const, Mux, Signal
from amaranth.utils import ceil_log2

from ..processor import StepKind
from ..processor_lstm import cell_config
from .lstm import LSTMCell

__all__ = ["lstm_unit"]


class _Unit:
    """The cell and its registers inside the processor's module (see :func:`lstm_unit`)."""

    def __init__(self, m, config, load_valid, load_data, program_load, lut_ram):
        self._config = config
        e = config.engine
        # Compact: the folded lookup ROM and one gate memory (docs/processor.md).
        self.cell = cell = LSTMCell(cell_config(config), positions=config.lstm_table,
                                    dynamic=True, compact=True, lut_ram=lut_ram)
        m.submodules.cell = cell
        m.d.comb += [cell.load.valid.eq(load_valid),
                     cell.load.payload.eq(load_data[:len(cell.load.payload.as_value())])]
        # x_t's columns (0: no LSTM program), from the program's first step: the input
        # is written only there unless a step resets (then h's columns are cleared too).
        self.n_in = Signal(range(config.act_depth + 1))
        p = program_load.payload
        with m.If(program_load.valid & p.first):
            m.d.sync += self.n_in.eq(Mux(p.kind == StepKind.LSTM, p.inputs, 0))
        self.fresh = Signal()               # this time step starts from h = c = 0
        self._reset_seen = Signal()
        self._m = m
        self._iw = e.input_width

    def bind(self, step):
        """Drive the cell's static inputs from the step being run."""
        cell = self.cell
        self._m.d.comb += [cell.c_frac.eq(step.c_frac), cell.units.eq(step.units),
                           cell.fresh.eq(self.fresh)]

    def x_mask(self, beat, word):
        """The element write mask of input beat ``beat`` (word ``word`` of the vector),
        taken in the sequencer's IDLE state; records its ``reset``."""
        m, iw = self._m, self._iw
        with m.If(beat.last):
            m.d.sync += [self.fresh.eq(self._reset_seen | beat.reset), self._reset_seen.eq(0)]
        with m.Else():
            m.d.sync += self._reset_seen.eq(self._reset_seen | beat.reset)
        keep = Signal(iw)
        sel = ceil_log2(iw)
        for el in range(iw):
            m.d.comb += keep[el].eq(beat.reset | (self.n_in == 0)
                                    | (Cat(Const(el, sel), word) < self.n_in))
        return keep

    def state(self, m, sums, step, lanes, y):
        """The body of the CELL state; returns the condition that ends it (the step's
        last ``(h, c)`` beat taken)."""
        cell, iw = self.cell, self._iw
        sel = ceil_log2(iw)
        m.d.comb += [cell.y.valid.eq(sums.valid), cell.y.payload.eq(sums.payload),
                     sums.ready.eq(cell.y.ready)]
        col = Signal(range(self._config.act_depth + 1))
        m.d.comb += col.eq(step.inputs + cell.h_unit)
        for lane in lanes:
            m.d.comb += [lane.x_we.eq(Mux(cell.h_en, Const(1, iw) << (col[:sel] if sel else 0),
                                          0)),
                         lane.x_addr.eq(col >> sel),
                         lane.x_data.eq(Cat(*[cell.h_data] * iw))]
        with m.If(step.last):
            m.d.comb += [y.valid.eq(cell.out.valid), cell.out.ready.eq(y.ready),
                         y.payload.y.eq(Cat(cell.out.payload.h, cell.out.payload.c)),
                         y.payload.last.eq(cell.out.payload.last)]
        with m.Else():
            m.d.comb += cell.out.ready.eq(1)
        return cell.out.valid & cell.out.ready & cell.out.payload.last


def lut_ram(platform) -> bool:
    """The platform is an ECP5, whose cell RAMs go to LUT RAM (its DP16KD hold the
    lanes' beats: docs/processor.md, "The cell's memories")."""
    return getattr(platform, "family", None) == "ecp5"


def lstm_unit(m, config, load_valid, load_data, program_load, platform=None):
    """The processor's LSTM cell in module ``m``, or None if ``config`` has none.

    ``load_valid``/``load_data``: a load word of target CELL; ``program_load``: the
    program's load stream (its first step says where ``x_t`` ends); ``platform``: the
    build's (:func:`lut_ram`). The cell's ``c_frac``, ``units`` and ``fresh`` are driven
    by :meth:`_Unit.bind`.
    """
    if not config.lstm_hidden:
        return None
    return _Unit(m, config, load_valid, load_data, program_load, lut_ram(platform))
