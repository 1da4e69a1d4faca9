"""The LSTM step on chip: the gate engine, the LSTM cell after it, ``h`` fed back.

:class:`LSTMCell` runs steps 2 to 6 of :mod:`darbgen.sim.lstm_golden` on one gate
SpMV's output beats, in two phases:

* **gates** (one output position per cycle, pipelined): the table entry of the
  position (loaded by the host, :func:`darbgen.lstm.cell_table`) names its row as
  ``(gate, unit)`` and holds its bias, multiplier and shift;
  ``z = clamp(round_shift((acc + bias) · mult, shift))`` indexes the lookup memory
  (sigmoid, or tanh for gate g) and the activation is written to that gate's
  activation memory at ``unit``. Rows without weights follow with a zero sum. The
  table, the pipeline and the FILL/APPLY/TAIL states are the network requantizer's
  (:mod:`darbgen.hdl.network`), so ``z`` is :func:`darbgen.quant.requant`'s;
* **units** (one hidden unit per cycle, pipelined, stalled only by the output
  stream): reads ``i, f, g, o`` and ``c_{t-1}`` (the cell-state memory, or 0 on a
  step that resets), computes ``c_t`` and ``h_t``, writes ``c_t`` back and emits
  ``(h_t, c_t)``; ``h_t`` also leaves on the ``h_*`` signals for the feedback.

The lookup tables are a ROM initialized from ``lstm_format``'s ``SIGMOID_LUT`` and
``TANH_LUT``: they are part of the integer contract, identical for every model, so
loading them would cost 4096 load words per deployment and add a way to run with the
wrong tables, while a ROM is block RAM initialized by the bitstream. (``luts``
overrides them only to inject a fault in tests.)

:class:`LSTMStep` is the closed loop: it takes each step's ``x_t`` from the host,
sends ``[x_t; h_{t-1}]`` to the :class:`~darbgen.hdl.engine.SpMVEngine` (``x_t`` from
its input buffer, ``h_{t-1}`` from the feedback memory the cell writes, zeros on a
step that resets), and streams the cell's ``(h_t, c_t)`` out. The next ``x`` is taken
while a step computes; the next step starts when the cell has written its last
``h``. The stream shapes are :class:`darbgen.lstm.LSTMConfig`'s.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect
from amaranth.utils import ceil_log2

from ..lstm import (C_BITS, C_FRAC_BITS, FOLDED_BITS, FOLDED_TANH_SAT, GATES, LOAD_C_FRAC,
                    LOAD_ENGINE, LOAD_TABLE, LUT_BITS, LSTMConfig, folded_lut_init, lut_init)
from ..lstm_format import A_FRAC, C_MAX, C_MIN, X_ONE, Z_FRAC, Z_MAX, Z_MIN
from .engine import SpMVEngine
from .layouts import input_layout, output_layout, to_layout
from .network import requant_pipeline, requant_states, requant_table

__all__ = ["FoldedLUT", "LSTMCell", "LSTMStep"]

# Flush cycles between the gates and the units phase: the last position, issued in cycle
# n, is written at the end of n + 7 (table read, bias add, multiply, shift, rounding add,
# clamp, lookup, write); the units phase reads it from cycle n + 2 + depth.
_GATE_DEPTH = 6
#: Index of the tanh gate (g) among i, f, g, o.
_TANH_GATE = 2
#: 1.0 in the lookup tables' Q1.14.
A_ONE = 1 << A_FRAC


def _clamp(v, lo, hi):
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def _half(shift):
    """``2^(shift-1)`` for ``shift >= 1``, 0 for ``shift = 0``: round_shift's rounding."""
    return (Const(1, 1) << shift)[1:]


class _Port:
    """One gate's view of a memory port: ``en``, ``addr``, ``data`` signals."""

    def __init__(self, en, addr, data):
        self.en, self.addr, self.data = en, addr, data


def _gate_memories(m, size: int, compact: bool, attrs=None):
    """The gate activations i, f, g, o of ``size`` units: a write and a read port per
    gate. Compact: one memory of ``GATES · LUT_BITS``-bit words (a unit's four gates),
    written one gate at a time (granularity ``LUT_BITS``), read whole: one block RAM
    instead of four where a word that wide fits one (ECP5's 512 × 36 takes two)."""
    if not compact:
        acts = []
        for g, name in enumerate("ifgo"):
            acts.append(memory.Memory(shape=signed(LUT_BITS), depth=size, init=[],
                                      attrs=attrs))
            m.submodules[f"act_{name}"] = acts[g]
        return [a.write_port() for a in acts], [a.read_port() for a in acts]
    m.submodules.acts = acts = memory.Memory(shape=GATES * LUT_BITS, depth=size, init=[],
                                             attrs=attrs)
    wr, rd = acts.write_port(granularity=LUT_BITS), acts.read_port()
    addr_w, data_w = Signal.like(wr.addr), Signal(signed(LUT_BITS))
    addr_r, en_r = Signal.like(rd.addr), Signal()
    m.d.comb += [wr.addr.eq(addr_w), wr.data.eq(Cat(*[data_w] * GATES)), rd.addr.eq(addr_r),
                 rd.en.eq(en_r)]
    # Every gate is written at the same unit with the same data (one gate per cycle).
    writes = [_Port(wr.en[g], addr_w, data_w) for g in range(GATES)]
    reads = [_Port(en_r, addr_r, rd.data[g * LUT_BITS:(g + 1) * LUT_BITS].as_signed())
             for g in range(GATES)]
    return writes, reads


class FoldedLUT(wiring.Component):
    """The sigmoid/tanh lookup as a ROM folded by the tables' symmetries
    (:func:`darbgen.lstm.folded_lut_init`: 1,736 entries of 15 bits instead of 4,096 of
    16), read like the full ROM: one cycle from ``z``/``tanh``/``en`` to ``data``.

    The ROM is read at ``|z|`` (tanh at ``min(|z|, FOLDED_TANH_SAT)``); the sign of ``z``,
    registered with the read, mirrors the entry after it: ``2^A_FRAC - v`` for a sigmoid
    of ``z < 0`` (but ``Z_MIN``, stored as is) and ``-v`` for a tanh.

    Members
    -------
    z : In(signed)
        The clamped pre-activation, ``Z_MIN..Z_MAX``.
    tanh : In(1)
        Look up tanh (else sigmoid).
    en : In(1)
        Read (else ``data`` holds).
    data : Out(signed(LUT_BITS))
        ``SIGMOID_LUT`` or ``TANH_LUT`` at the ``z`` of the last enabled cycle.
    """

    def __init__(self):
        super().__init__({"z": In(signed((Z_MAX - Z_MIN).bit_length())), "tanh": In(1),
                          "en": In(1), "data": Out(signed(LUT_BITS))})

    def elaborate(self, platform):
        m = Module()
        init = folded_lut_init()
        m.submodules.rom = rom = memory.Memory(shape=FOLDED_BITS, depth=len(init), init=init)
        rd = rom.read_port()
        z = self.z
        mag = Signal(range(-Z_MIN + 1))
        m.d.comb += mag.eq(Mux(z < 0, -z, z))
        tanh_base = Z_MAX + 2
        m.d.comb += [rd.en.eq(self.en),
                     rd.addr.eq(Mux(self.tanh, tanh_base + Mux(mag > FOLDED_TANH_SAT,
                                                               FOLDED_TANH_SAT, mag),
                                    Mux(mag > Z_MAX, Z_MAX + 1, mag)))]
        mirror, base = Signal(), Signal(range(A_ONE + 1))
        with m.If(self.en):
            m.d.sync += [mirror.eq((z < 0) & (self.tanh | (z != Z_MIN))),
                         base.eq(Mux(self.tanh, 0, A_ONE))]
        m.d.comb += self.data.eq(Mux(mirror, base - rd.data, rd.data))
        return m


class LSTMCell(wiring.Component):
    """The LSTM cell after the gate engine (see the module docstring).

    Parameters
    ----------
    config : LSTMConfig
    luts : sequence of int, optional
        The lookup memory (:func:`darbgen.lstm.lut_init`: sigmoid then tanh); only for
        fault-injection tests.
    positions : int, optional
        Table entries (default ``config.positions``): the processor's cell holds
        ``lstm_table``.
    dynamic : bool
        The layer's hidden units come from the ``units`` port (at most
        ``config.hidden``) instead of being ``config.hidden``: the processor's cell runs
        any layer up to its size.
    compact : bool
        Smaller memories, same results (the processor's cell): the lookup ROM folded
        (:class:`FoldedLUT`) and the four gate activations of a unit in one memory
        word, written a gate at a time.
    lut_ram : bool
        Ask synthesis for LUT RAM (``ram_style = "distributed"``) for the table, gate
        and cell-state memories: on the ECP5, whose LUTs are plentiful where its block
        RAM is not (the processor's cell on an ECP5 platform). No effect in simulation.

    Members
    -------
    load : In(stream.Signature(table_fields))
        Table entries (always ready); ``first`` restarts the table.
    y : In(stream.Signature(output_layout(engine)))
        The gate engine's output beats.
    c_frac : In(C_FRAC_BITS)
        Fractional bits of ``c`` (7..14); static while a step runs.
    fresh : In(1)
        The current step starts from ``c = 0``; static while a step runs.
    out : Out(stream.Signature(output_fields))
        ``(h_t, c_t)`` per unit in unit order, ``last`` on the final unit.
    h_en, h_unit, h_data : Out
        ``h_t`` of unit ``h_unit``, as it enters ``out``.
    done : Out(1)
        The step's last unit entered ``out`` (one cycle).
    units : In(range(hidden + 1))
        Only if ``dynamic``: hidden units of the step; static while a step runs.

    Raises
    ------
    ValueError
        ``luts`` does not have one entry per index of both tables.
    """

    def __init__(self, config: LSTMConfig, *, luts=None, positions: int | None = None,
                 dynamic: bool = False, compact: bool = False, lut_ram: bool = False):
        if not isinstance(config, LSTMConfig):
            raise TypeError(f"config must be an LSTMConfig, not {config!r}")
        self._config = config
        self._positions = config.positions if positions is None else positions
        self._dynamic = dynamic
        self._compact = compact
        self._ram_attrs = {"ram_style": "distributed"} if lut_ram else None
        if compact and luts is not None:
            raise ValueError("a compact cell's lookup ROM is the folded contract's; luts "
                             "replaces the full ROM only")
        self._luts = lut_init() if luts is None else [int(v) for v in luts]
        if len(self._luts) != 2 * (Z_MAX - Z_MIN + 1):
            raise ValueError(f"luts must have {2 * (Z_MAX - Z_MIN + 1)} entries, not "
                             f"{len(self._luts)}")
        e = config.engine
        super().__init__({
            "load": In(stream.Signature(to_layout(config.table_fields))),
            "y": In(stream.Signature(output_layout(e))),
            "c_frac": In(C_FRAC_BITS),
            "fresh": In(1),
            "out": Out(stream.Signature(to_layout(config.output_fields))),
            "h_en": Out(1), "h_unit": Out(config.unit_bits),
            "h_data": Out(signed(e.input_bits)),
            "done": Out(1),
            **({"units": In(range(config.hidden + 1))} if dynamic else {}),
        })

    @property
    def config(self) -> LSTMConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        e, size = c.engine, c.hidden
        hidden = self.units if self._dynamic else size
        index_bits = (Z_MAX - Z_MIN).bit_length()
        lut_z, lut_tanh, lut_en = Signal(signed(index_bits)), Signal(), Signal()
        if self._compact:
            m.submodules.lut = lut = FoldedLUT()
            m.d.comb += [lut.z.eq(lut_z), lut.tanh.eq(lut_tanh), lut.en.eq(lut_en)]
            lut_data = lut.data
        else:
            m.submodules.lut = lut = memory.Memory(shape=signed(LUT_BITS),
                                                   depth=len(self._luts), init=self._luts)
            lut_rd = lut.read_port()
            m.d.comb += [lut_rd.addr.eq(Cat((lut_z - Z_MIN)[:index_bits], lut_tanh)),
                         lut_rd.en.eq(lut_en)]
            lut_data = lut_rd.data
        attrs = self._ram_attrs
        m.submodules.cstate = cstate = memory.Memory(shape=signed(C_BITS), depth=size, init=[],
                                                     attrs=attrs)
        table_rd, loaded = requant_table(m, self.load, self._positions,
                                         to_layout(c.table_fields), attrs=attrs)
        c_wr, c_rd = cstate.write_port(), cstate.read_port()
        act_wr, act_rd = _gate_memories(m, size, self._compact, attrs)

        in_units = Signal()                 # the units phase owns the lookup memory
        lut_gates_z, lut_gates_tanh = Signal.like(lut_z), Signal()
        lut_units_z = Signal.like(lut_z)
        advance = Signal()                  # the units pipeline moves
        m.d.comb += [advance.eq(~self.out.valid | self.out.ready),
                     lut_z.eq(Mux(in_units, lut_units_z, lut_gates_z)),
                     lut_tanh.eq(in_units | lut_gates_tanh),
                     lut_en.eq(Mux(in_units, advance, 1))]

        # -- gates: one table position per cycle -----------------------------------------
        beat = Signal.like(self.y.payload)
        lane = Signal(range(e.lanes))
        k = Signal(range(self._positions + 1))
        issue = Signal()
        acc = Signal(signed(e.acc_width))
        m.d.comb += table_rd.addr.eq(k)
        entry = table_rd.data
        # The requantizer of every network (darbgen.quant.requant), with z's clamp. Its
        # clamped z is registered (`clamp_stage`): the shift and the clamp in front of the
        # lookup's address logic limited the ULX3S processor to 42.6 MHz.
        a4_ok, a4_tag, z = requant_pipeline(m, entry, issue, acc, e.acc_width, False, Z_MIN,
                                            Z_MAX, tag=Cat(entry.unit, entry.gate),
                                            clamp_stage=True)
        a4_unit, a4_gate = a4_tag[:len(entry.unit)], a4_tag[len(entry.unit):]
        m.d.comb += [lut_gates_z.eq(z), lut_gates_tanh.eq(a4_gate == _TANH_GATE)]
        a5_ok, a5_gate, a5_unit = Signal(), Signal.like(a4_gate), Signal.like(a4_unit)
        m.d.sync += [a5_ok.eq(a4_ok), a5_gate.eq(a4_gate), a5_unit.eq(a4_unit)]
        for g in range(GATES):
            m.d.comb += [act_wr[g].en.eq(a5_ok & (a5_gate == g)), act_wr[g].addr.eq(a5_unit),
                         act_wr[g].data.eq(lut_data)]

        # -- units: one hidden unit per cycle ------------------------------------------
        # Fixed per model: registered once from c_frac, out of the datapath.
        sb = Signal(range(2 * A_FRAC + 1))          # i·g is Q2.28 → Q.c_frac
        sc = Signal(range(A_FRAC - Z_FRAC + 1))     # c is Q.c_frac → Q3.7
        m.d.sync += [sb.eq(2 * A_FRAC - self.c_frac), sc.eq(self.c_frac - Z_FRAC)]
        j = Signal(range(size + 1))
        issue_unit = Signal()
        for g in range(GATES):
            m.d.comb += [act_rd[g].addr.eq(j), act_rd[g].en.eq(advance)]
        m.d.comb += [c_rd.addr.eq(j), c_rd.en.eq(advance)]
        t1_ok, t1_last, t1_j = Signal(), Signal(), Signal.like(self.h_unit)
        with m.If(advance):
            m.d.sync += [t1_ok.eq(issue_unit), t1_last.eq(j == hidden - 1), t1_j.eq(j)]
            with m.If(issue_unit):
                m.d.sync += j.eq(j + 1)
        i_, f_, g_, o_ = (a.data for a in act_rd)
        c_prev = Mux(self.fresh, 0, c_rd.data)

        def stage(*pairs):
            """Registers that load only when the units pipeline advances."""
            with m.If(advance):
                m.d.sync += [dst.eq(src) for dst, src in pairs]

        t2_ok, t2_last, t2_j = Signal(), Signal(), Signal.like(t1_j)
        t2_fc, t2_ig = Signal(signed(2 * LUT_BITS)), Signal(signed(2 * LUT_BITS))
        t2_o = Signal(signed(LUT_BITS))
        stage((t2_ok, t1_ok), (t2_last, t1_last), (t2_j, t1_j), (t2_fc, f_ * c_prev),
              (t2_ig, i_ * g_), (t2_o, o_))
        t3_ok, t3_last, t3_j, t3_o = Signal(), Signal(), Signal.like(t2_j), Signal.like(t2_o)
        t3_a, t3_b = Signal(signed(C_BITS + 2)), Signal(signed(C_BITS + 2))
        stage((t3_ok, t2_ok), (t3_last, t2_last), (t3_j, t2_j), (t3_o, t2_o),
              (t3_a, (t2_fc + (1 << (A_FRAC - 1))) >> A_FRAC),
              (t3_b, (t2_ig + _half(sb)) >> sb))
        t4_ok, t4_last, t4_j, t4_o = Signal(), Signal(), Signal.like(t3_j), Signal.like(t3_o)
        t4_c = Signal(signed(C_BITS))
        stage((t4_ok, t3_ok), (t4_last, t3_last), (t4_j, t3_j), (t4_o, t3_o),
              (t4_c, _clamp(t3_a + t3_b, C_MIN, C_MAX)))
        m.d.comb += [c_wr.en.eq(t4_ok & advance), c_wr.addr.eq(t4_j), c_wr.data.eq(t4_c)]
        # tanh(c)'s index is registered before the lookup reads it, and the entry read
        # before it is multiplied: in one cycle, the clamp, the lookup's address logic,
        # the read and its mirroring into the multiplier limited the ULX3S processor.
        t5_ok, t5_last, t5_j, t5_o = Signal(), Signal(), Signal.like(t4_j), Signal.like(t4_o)
        t5_c, t5_z = Signal.like(t4_c), Signal.like(lut_units_z)
        stage((t5_ok, t4_ok), (t5_last, t4_last), (t5_j, t4_j), (t5_o, t4_o), (t5_c, t4_c),
              (t5_z, _clamp((t4_c + _half(sc)) >> sc, Z_MIN, Z_MAX)))
        m.d.comb += lut_units_z.eq(t5_z)
        t6_ok, t6_last, t6_j, t6_o = Signal(), Signal(), Signal.like(t5_j), Signal.like(t5_o)
        t6_c = Signal.like(t5_c)
        stage((t6_ok, t5_ok), (t6_last, t5_last), (t6_j, t5_j), (t6_o, t5_o), (t6_c, t5_c))
        t7_ok, t7_last, t7_j, t7_o = Signal(), Signal(), Signal.like(t6_j), Signal.like(t6_o)
        t7_c, t7_a = Signal.like(t6_c), Signal.like(lut_data)
        stage((t7_ok, t6_ok), (t7_last, t6_last), (t7_j, t6_j), (t7_o, t6_o), (t7_c, t6_c),
              (t7_a, lut_data))
        t8_ok, t8_last, t8_j, t8_c = Signal(), Signal(), Signal.like(t7_j), Signal.like(t7_c)
        t8_p = Signal(signed(2 * LUT_BITS))
        stage((t8_ok, t7_ok), (t8_last, t7_last), (t8_j, t7_j), (t8_c, t7_c),
              (t8_p, t7_o * t7_a))
        h = _clamp((t8_p * X_ONE + (1 << (2 * A_FRAC - 1))) >> (2 * A_FRAC), -X_ONE, X_ONE)
        stage((self.out.valid, t8_ok), (self.out.payload.h, h), (self.out.payload.c, t8_c),
              (self.out.payload.last, t8_last))
        m.d.comb += [self.h_en.eq(t8_ok & advance), self.h_unit.eq(t8_j), self.h_data.eq(h),
                     self.done.eq(t8_ok & t8_last & advance)]

        flush = Signal(range(_GATE_DEPTH + 1))

        def tail_done():
            with m.Else():
                m.d.sync += flush.eq(_GATE_DEPTH)
                m.next = "FLUSH"

        with m.FSM():
            requant_states(m, self.y, beat, lane, k, issue, acc, e.lanes, loaded, tail_done,
                           gapless=True)
            with m.State("FLUSH"):
                m.d.sync += flush.eq(flush - 1)
                with m.If(flush == 1):
                    m.d.sync += j.eq(0)
                    m.next = "UNITS"
            with m.State("UNITS"):
                m.d.comb += [in_units.eq(1), issue_unit.eq(j < hidden)]
                with m.If(self.done):
                    m.d.sync += k.eq(0)
                    m.next = "FILL"
        return m


class LSTMStep(wiring.Component):
    """The LSTM step: gate engine → cell, ``h_t`` fed back as the next step's input.

    Parameters
    ----------
    config : LSTMConfig
    luts : sequence of int, optional
        Passed to :class:`LSTMCell` (fault-injection tests only).

    Members
    -------
    load : In(stream.Signature(load_fields))
        Words of :func:`darbgen.lstm.load_words` (always ready).
    x : In(stream.Signature(input_fields))
        ``x_t`` per step (:func:`darbgen.lstm.input_words`); ``reset`` restarts the
        state.
    y : Out(stream.Signature(output_fields))
        ``(h_t, c_t)`` per unit, ``last`` on each step's final unit.
    """

    def __init__(self, config: LSTMConfig, *, luts=None):
        if not isinstance(config, LSTMConfig):
            raise TypeError(f"config must be an LSTMConfig, not {config!r}")
        self._config, self._luts = config, luts
        super().__init__({
            "load": In(stream.Signature(to_layout(config.load_fields))),
            "x": In(stream.Signature(to_layout(config.input_fields))),
            "y": Out(stream.Signature(to_layout(config.output_fields))),
        })

    @property
    def config(self) -> LSTMConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        e = c.engine
        m.submodules.engine = engine = SpMVEngine(e)
        m.submodules.cell = cell = LSTMCell(c, luts=self._luts)
        connect(m, engine.y, cell.y)
        connect(m, cell.out, wiring.flipped(self.y))

        # -- loading: registered, then routed by target --------------------------------
        m.d.comb += self.load.ready.eq(1)
        valid, word = Signal(), Signal.like(self.load.payload)
        m.d.sync += [valid.eq(self.load.valid), word.eq(self.load.payload)]
        for target, port in ((LOAD_ENGINE, engine.load), (LOAD_TABLE, cell.load)):
            m.d.comb += [port.valid.eq(valid & (word.target == target)),
                         port.payload.eq(word.data[:len(port.payload.as_value())])]
        c_frac = Signal(C_FRAC_BITS)
        with m.If(valid & (word.target == LOAD_C_FRAC)):
            m.d.sync += c_frac.eq(word.data[:C_FRAC_BITS])
        m.d.comb += cell.c_frac.eq(c_frac)

        # -- x_t from the host, h_{t-1} from the cell: [x_t; h_{t-1}] by columns --------
        iw, sel_bits = e.input_width, ceil_log2(e.input_width)
        word_shape = input_layout(e)["x"].shape
        m.submodules.xbuf = xbuf = memory.Memory(shape=word_shape, depth=c.x_words, init=[])
        m.submodules.hbuf = hbuf = memory.Memory(shape=word_shape, depth=e.x_depth, init=[])
        x_wr, x_rd = xbuf.write_port(), xbuf.read_port()
        h_wr, h_rd = hbuf.write_port(granularity=1), hbuf.read_port()

        # The host's x_t: one buffer, free again once the step has sent it to the engine.
        x_full, x_reset, reset_seen = Signal(), Signal(), Signal()
        wx = Signal(range(c.x_words))
        take = self.x.valid & ~x_full
        m.d.comb += [self.x.ready.eq(~x_full), x_wr.addr.eq(wx), x_wr.data.eq(self.x.payload.x),
                     x_wr.en.eq(take)]
        with m.If(take):
            with m.If(self.x.payload.last):
                m.d.sync += [x_full.eq(1), x_reset.eq(reset_seen | self.x.payload.reset),
                             reset_seen.eq(0), wx.eq(0)]
            with m.Else():
                m.d.sync += [reset_seen.eq(reset_seen | self.x.payload.reset), wx.eq(wx + 1)]

        # The cell's h_t, each into its column inputs + unit.
        col = Signal(range(e.max_cols))
        m.d.comb += [col.eq(c.inputs + cell.h_unit), h_wr.addr.eq(col >> sel_bits),
                     h_wr.en.eq(Mux(cell.h_en, Const(1, 1) << col[:sel_bits], 0))]
        for el in range(iw):
            m.d.comb += h_wr.data[el].eq(cell.h_data)

        # -- feeding the engine ---------------------------------------------------------
        fresh = Signal()                    # this step starts from h = c = 0
        m.d.comb += cell.fresh.eq(fresh)
        w = Signal(range(e.x_depth + 1))
        w_d = Signal(range(e.x_depth))
        ev = engine.x.valid
        advance = ~ev | engine.x.ready
        m.d.comb += [x_rd.addr.eq(w), h_rd.addr.eq(w), x_rd.en.eq(advance), h_rd.en.eq(advance),
                     engine.x.payload.last.eq(w_d == e.x_depth - 1)]
        for el in range(iw):
            # Element el of word w is column w·iw + el: x_t below `inputs`, then h.
            x_words = max(0, -(-(c.inputs - el) // iw))
            all_words = max(0, -(-(e.max_cols - el) // iw))
            m.d.comb += engine.x.payload.x[el].eq(
                Mux(w_d < x_words, x_rd.data[el],
                    Mux((w_d < all_words) & ~fresh, h_rd.data[el], 0)))

        with m.FSM():
            with m.State("Idle"):
                with m.If(x_full):
                    m.d.sync += [fresh.eq(x_reset), w.eq(0)]
                    m.next = "Feed"
            with m.State("Feed"):
                with m.If(advance):
                    with m.If(w < e.x_depth):
                        m.d.sync += [ev.eq(1), w_d.eq(w), w.eq(w + 1)]
                    with m.Else():
                        m.d.sync += [ev.eq(0), x_full.eq(0)]
                        m.next = "Wait"
            with m.State("Wait"):
                with m.If(cell.done):
                    m.next = "Idle"
        return m
