"""Proof (k-induction) of the processor's sequencer: every program step runs once, in order.

:class:`ProgramOrderSpec` elaborates the real :class:`~darbgen.hdl.processor.Processor`
(its FSM, program memory, ``pc``, step register, position counter, sum drain and
requantizer states) with its lanes, its gather unit and its LSTM cell replaced by
**free** components (:class:`FreeLane`, :class:`FreeMapUnit`, :class:`FreeCell`): every
output of theirs (``active``, the sums, the bank data, ``busy``, ``clearing``, the
gather's x writes, the cell's end of ``CELL``, ...) is ``AnySeq``, so the proof holds
whatever they do and however long they take. The sequencer waits for them and never
needs more of them than that (its side of those contracts is asserted below; the lanes'
side has its own checks: formal/sequencer.py, formal/scheduler.py). The host is free
too: any load words (between inferences, as the device sends them), any input beats,
any ``y.ready``; the program memory holds whatever was loaded.

Asserted on every cycle, with ghost counters of the steps started since the input
(``started``, at each ``GO``) and of the positions started in the step (``q``, at each
``POSITION``):

* **each step in order, once**: at ``GO`` the program is read at ``pc``, and
  ``pc == started`` (the ghost count *before* this ``GO``): the steps start 0, 1, 2, ...;
  while a step runs ``pc + 1 == started``, and when it ends (``FLUSH`` or ``CELL`` out)
  ``pc == started``: ``pc`` advanced by exactly one, once;
* **``last`` ends the inference**: the step that ends goes to ``FETCH`` exactly when it
  is not marked ``last``; the last goes to ``READ`` (an LSTM step, whose cell sends
  ``(h, c)`` itself: to ``IDLE``); after it no step starts, ``READ``/``SEND`` are only
  reached through it, and ``IDLE`` only after it;
* **an LSTM step** (with a cell) goes through ``CELL``, never the requantizer, and
  ``CELL`` ends into ``FETCH`` or ``IDLE``;
* **a convolution's positions 0..n-1, each once**: at each ``POSITION`` the position
  counter ``p`` equals ``q`` and is below the step's ``positions``; a position ends
  back in ``POSITION`` only while ``q < positions``, and the step ends with
  ``q == positions``; a Linear step never gathers;
* **the lanes, driven as their contract asks**: rewound only in ``IDLE``, started only
  in ``START`` (a Linear step) or ``RUN`` (a position's patch is in), marked only at
  ``GO`` and replayed (``again``) only when a position ends into the next.

These assertions are their own induction invariant (with ``fsm.state`` one of the
FSM's states): sby's basecase and induction step pass at depth :data:`ORDER_DEPTH`,
so they hold in every reachable state, for inferences of any length and any number of
inferences, not only for the first cycles of a bounded run.

Assumed, as :func:`darbgen.processor.load_words` and ``check_plan`` guarantee: loads
only in ``IDLE`` and not with an input beat; a program whose step ``max_steps - 1``, if
it is reached, is marked ``last`` (a plan fits the program memory and ends with its
``last`` step); a ``CONV`` step has 1 to ``gather_positions`` positions.
"""

from __future__ import annotations

import contextlib

from amaranth.asserts import AnySeq      # Amaranth 0.5 keeps it here
from amaranth.hdl import Assert, Assume, Cat, Cover, Module, Signal
from amaranth.lib.wiring import Out

from darbgen.config import EngineConfig
from darbgen.hdl import processor as _processor
from darbgen.hdl import processor_conv as _processor_conv
from darbgen.hdl.engine import Lane
from darbgen.hdl.processor_conv import MapUnit
from darbgen.processor import ProcessorConfig, StepKind

from .mutants import replaced
from .processor import ProcessorHarness

__all__ = ["ProgramOrderSpec", "FreeLane", "FreeMapUnit", "FreeCell", "ORDER_CONFIGS",
           "ORDER_COVERS", "ORDER_DEPTH", "free_parts"]

#: The covers :class:`ProgramOrderSpec` can ask for.
ORDER_COVERS = ("step", "inference")

#: k-induction depth of the proof: the requantizer's pipeline (an issue to its write,
#: about 6 cycles, no feedback) is fully inside the induction's window, so its registers
#: need no invariant of their own (depth 3 proves the order alone; the writes need 6).
ORDER_DEPTH = 6


def _free_outputs(m: Module, component) -> None:
    """Drive every output port of ``component`` from ``AnySeq``."""
    for name, member in component.signature.members.items():
        if member.is_port and member.flow == Out:
            port = getattr(component, name)
            m.d.comb += port.eq(AnySeq(len(port)))
        elif not member.is_port:
            # A sub-interface (a banked memory's port): its Out signals.
            sub = getattr(component, name)
            for sub_name, sub_member in member.signature.members.items():
                if sub_member.flow == Out:
                    port = getattr(sub, sub_name)
                    m.d.comb += port.eq(AnySeq(len(port)))


class FreeLane(Lane):
    """A :class:`~darbgen.hdl.engine.Lane` with the same ports whose outputs (``active``,
    ``rows``, ``y_data``, ``bank_rdata``) are free in every cycle: the sequencer's proof
    holds for any lane behaviour."""

    def elaborate(self, platform):
        m = Module()
        _free_outputs(m, self)
        return m


class FreeMapUnit(MapUnit):
    """A :class:`~darbgen.hdl.processor_conv.MapUnit` with the same ports whose outputs
    (``clearing``, ``busy``, the x writes, ``offset``, ``skip``, ...) are free in every
    cycle."""

    def elaborate(self, platform):
        m = Module()
        _free_outputs(m, self)
        return m


def free_parts():
    """Context manager: :class:`~darbgen.hdl.processor.Processor` elaborated inside it
    (or a mutant made inside it) builds :class:`FreeLane`, :class:`FreeMapUnit` and a
    :class:`FreeCell`."""
    stack = contextlib.ExitStack()
    stack.enter_context(replaced(_processor, "Lane", FreeLane))
    stack.enter_context(replaced(_processor_conv, "MapUnit", FreeMapUnit))
    stack.enter_context(replaced(_processor, "lstm_unit", _free_lstm_unit))
    return stack


class FreeCell:
    """The processor's LSTM cell (:func:`darbgen.hdl.processor_lstm.lstm_unit`) as a free
    part: the CELL state takes the sums and drives ``y`` freely, and ends (its
    :meth:`state`'s condition) in any cycle; the input mask is free."""

    def __init__(self, input_width: int):
        self._iw = input_width

    def bind(self, step):
        pass

    def x_mask(self, beat, word):
        return AnySeq(self._iw)

    def state(self, m, sums, step, lanes, y):
        m.d.comb += [sums.ready.eq(AnySeq(1)), y.valid.eq(AnySeq(1)),
                     y.payload.as_value().eq(AnySeq(len(y.payload.as_value())))]
        return AnySeq(1)


def _free_lstm_unit(m, config, *args, **kwargs):
    """:func:`~darbgen.hdl.processor_lstm.lstm_unit` with a :class:`FreeCell`."""
    return FreeCell(config.engine.input_width) if config.lstm_hidden else None


class ProgramOrderSpec(ProcessorHarness):
    """The processor's sequencer, with free lanes, gather and cell, against the program order.

    Parameters
    ----------
    config : ProcessorConfig
        A processor, with or without a gather and an LSTM cell.
    dut : Processor, optional
        The processor under test (default: a new one, memories in block RAM); a mutant
        for the negative checks, made inside :func:`free_parts`.
    cover : {"step", "inference"}
        What its ``Cover`` asks for: the second step's start (with a gather: a
        gathered step's second position), or a whole inference (:data:`ORDER_COVERS`).
    """

    covers = ORDER_COVERS

    def describe(self, m):
        c = self.config
        dut = self.dut
        conv, lstm = c.has_gather, bool(c.lstm_hidden)
        # Elaborated here, not as a submodule: the sequencer's FSM exists only then.
        with free_parts():
            proc = dut.elaborate(None)
        m.submodules.processor = proc
        dut._MustUse__silence = True            # used through its elaborated module
        fsm = dut._fsm
        pc, p, step = dut._pc, dut._p, dut._step
        lanes = [proc.submodules[f"lane{i}"] for i in range(c.engine.lanes)]
        program_rd = proc.submodules["program"].read_ports[0]

        def state(name):
            assert name in fsm.encoding, name    # ongoing() would add an unknown state
            return fsm.ongoing(name)

        def any_of(*names):
            return Cat(*(state(n) for n in names)).any()

        requant = ("FILL", "APPLY", "TAIL", "FLUSH")
        in_step = ("START", "ISSUE", "RETIRE", *requant, *(("POSITION", "GATHER", "RUN") if conv else ()),
                   *(("CELL",) if lstm else ()))

        # -- the host: any loads between inferences, any inputs, any y.ready ------------
        load, x, y = dut.load, dut.x, dut.y
        m.d.comb += [load.valid.eq(AnySeq(1)), x.valid.eq(AnySeq(1)), y.ready.eq(AnySeq(1)),
                     *(v.eq(AnySeq(len(v))) for v in (load.payload.as_value(),
                                                       x.payload.as_value()))]
        m.d.comb += Assume(~load.valid | (state("IDLE") & ~x.valid))

        # -- ghost state ---------------------------------------------------------------------
        started = Signal(range(c.max_steps + 2))    # steps started since the input
        q = Signal(range(c.gather_positions + 2 if conv else 2))  # positions in the step
        finished = Signal()                         # the step marked `last` has ended
        fetched = Signal.like(program_rd.addr)      # the program address read in FETCH
        was_flush, was_cell, was_idle = Signal(), Signal(), Signal(init=1)
        m.d.sync += [was_flush.eq(state("FLUSH")), was_idle.eq(state("IDLE"))]
        ended = was_flush & ~state("FLUSH")         # a position or a step has just ended
        step_ended = ended & ~state("POSITION") if conv else ended
        if lstm:
            # An LSTM step ends when the cell is done: into FETCH, or IDLE if `last`.
            m.d.sync += was_cell.eq(state("CELL"))
            cell_ended = was_cell & ~state("CELL")
            step_ended = step_ended | cell_ended
        gathered = step.kind == StepKind.CONV if conv else 0       # the running step

        with m.If(state("FETCH")):
            m.d.sync += fetched.eq(program_rd.addr)
        with m.If(state("GO")):
            m.d.sync += [started.eq(started + 1), q.eq(0)]
        if conv:
            with m.If(state("POSITION")):
                m.d.sync += q.eq(q + 1)
        with m.If(step_ended):
            m.d.sync += finished.eq(step.last)
        with m.If(state("IDLE")):
            m.d.sync += [started.eq(0), finished.eq(0)]

        # -- what check_plan guarantees about the program ------------------------------------
        with m.If(state("GO")):
            data = program_rd.data
            m.d.comb += Assume((started + 1 < c.max_steps) | data.last)
            if conv:
                with m.If(data.kind == StepKind.CONV):
                    m.d.comb += Assume((data.positions >= 1)
                                       & (data.positions <= c.gather_positions))

        # -- the invariant and the contract ----------------------------------------------------
        m.d.comb += Assert(fsm.state < len(fsm.encoding))     # one of the FSM's states
        with m.If(any_of("FETCH", "GO")):
            m.d.comb += [Assert(pc == started), Assert(~finished),
                         Assert(started < c.max_steps)]
        with m.If(state("GO")):
            m.d.comb += Assert(fetched == started)              # step `pc` of the program
        with m.If(any_of(*in_step)):
            m.d.comb += [Assert(pc + 1 == started), Assert(~finished),
                         Assert(started <= c.max_steps),
                         Assert((started < c.max_steps) | step.last)]
        with m.If(any_of("READ", "SEND")):
            # (`finished` is set in the cycle after the last step's end)
            m.d.comb += [Assert(finished | step_ended), Assert(pc == started)]
        with m.If(finished):
            m.d.comb += Assert(any_of("READ", "SEND", "IDLE"))
        with m.If(state("IDLE") & ~was_idle):
            # Back in IDLE only after the last step.
            m.d.comb += Assert(finished | (step_ended & step.last))
        with m.If(was_flush):
            # A step ends into FETCH (the next step) or READ (it was the last), a
            # position into the next POSITION.
            m.d.comb += Assert(any_of("FLUSH", "FETCH", "READ", *(("POSITION",) if conv else ())))
        with m.If(step_ended):
            # pc one further, once; the last step ends the inference: its logits are
            # sent (READ), or an LSTM step's cell has sent (h, c) (IDLE).
            m.d.comb += [Assert(pc == started), Assert(state("FETCH") == ~step.last)]
            if conv:
                m.d.comb += Assert(~gathered | (q == step.positions))
        with m.If(ended & ~state("POSITION") if conv else ended):
            m.d.comb += Assert(state("READ") == step.last)
        if lstm:
            lstm_step = step.kind == StepKind.LSTM
            with m.If(was_cell):
                m.d.comb += Assert(any_of("CELL", "FETCH", "IDLE"))
            with m.If(state("CELL")):
                m.d.comb += Assert(lstm_step)
            with m.If(any_of(*requant)):
                m.d.comb += Assert(~lstm_step)              # the cell, not the requantizer
        if conv:
            with m.If(ended & state("POSITION")):
                m.d.comb += Assert(gathered & (q < step.positions))
            with m.If(state("POSITION")):
                m.d.comb += [Assert(gathered), Assert(p == q), Assert(q < step.positions)]
            with m.If(any_of(*(s for s in in_step if s != "POSITION"))):
                m.d.comb += Assert(~gathered | ((q == p + 1) & (q <= step.positions)))
                m.d.comb += Assert(gathered | (q == 0))
            with m.If(any_of("POSITION", "GATHER", "RUN")):
                m.d.comb += Assert(gathered)
        # The image states come before the first step.
        pre = ("SCATTER", "SCATTERED", "TAKE") if conv else ()
        with m.If(any_of(*pre) if pre else 0):
            m.d.comb += [Assert(pc == 0), Assert(started == 0), Assert(~finished)]
        # The sequencer's side of the lanes' contract.
        for lane in lanes:
            m.d.comb += [Assert(~lane.rewind | state("IDLE")),
                         # (`start` comes from a register set on the way in)
                         Assert(lane.start == any_of("START", *(("RUN",) if conv else ())))]
            if conv:
                m.d.comb += [Assert(~lane.mark | state("GO")),
                             Assert(~lane.again | (state("FLUSH") & gathered
                                                   & (p + 1 < step.positions)))]

        # The sequencer's side of the scratchpad's contract: the requantizer's writes
        # (the scratchpad's, the logits') come only while their step requantizes, so each
        # has landed before the next position's gather and before the next GO (which
        # changes the step they are written for); the gather runs only in POSITION, the
        # image is scattered only before the first step.
        logit_we = proc.submodules["logits"].write_ports[0].en
        m.d.comb += Assert(~logit_we | any_of(*requant))
        if conv:
            maps = proc.submodules["maps"]
            m.d.comb += [Assert(~maps.w_en | any_of(*requant)),
                         Assert(~(maps.gather | maps.position) | state("POSITION")),
                         Assert(~maps.scatter | state("SCATTER")),
                         Assert(~maps.step_begin | state("GO"))]

        # Not vacuous: the second step (with a gather: a gathered step's second position;
        # with a cell: after an LSTM step) starts; or an inference reaches READ after two
        # steps (with a gather: after a gathered step at two positions; with a cell: an
        # LSTM step marked `last` ends it).
        two = Signal()
        if conv:
            with m.If(state("POSITION") & (q == 1)):
                m.d.sync += two.eq(1)
            with m.If(state("IDLE")):
                m.d.sync += two.eq(0)
        else:
            m.d.comb += two.eq(1)
        cell_ran = Signal()
        if lstm:
            with m.If(state("CELL")):
                m.d.sync += cell_ran.eq(1)
            with m.If(state("IDLE")):
                m.d.sync += cell_ran.eq(0)
        else:
            m.d.comb += cell_ran.eq(1)
        if self.cover == "step" and (lstm or not conv):
            m.d.comb += Cover(state("GO") & (started == 1) & cell_ran)
        elif self.cover == "step":
            m.d.comb += Cover(state("POSITION") & (q == 1))
        elif lstm:
            # An LSTM step marked `last` sends (h, c) itself and ends in IDLE.
            m.d.comb += Cover(state("IDLE") & ~was_idle & cell_ran & (started == 1))
        else:
            m.d.comb += Cover(state("READ") & finished & two & (started == (1 if conv else 2)))


def _config(gather: bool, lstm: bool = False) -> ProcessorConfig:
    # An LSTM cell needs 8-bit inputs (h); the free cell makes the width cost nothing.
    engine = EngineConfig(lanes=2, shifts=(1,), max_keep=1, max_row_nnz=2, max_cols=4,
                          lane_depth=4, lane_rows=4, weight_bits=2,
                          input_bits=8 if lstm else 2, input_width=1)
    extra = dict(map_depth=8, gather_positions=4, gather_columns=2, gather_pools=2) \
        if gather else {}
    if lstm:
        extra.update(lstm_hidden=2, lstm_table=4)
    return ProcessorConfig(engine, lane_slots=1, table_depth=4, max_steps=3, max_classes=2,
                           **extra)


#: Processors the order is proven for: with a gather (the bounded check's), without, and
#: with a gather and an LSTM cell (as the ULX3S's).
ORDER_CONFIGS = {"gather": _config(True), "linear": _config(False),
                 "gather-lstm": _config(True, lstm=True)}
