"""Bounded check of the whole processor's sequencer: steps in order, the scratchpad
read only where it was written.

:class:`ProcessorSpec` drives a :class:`~darbgen.hdl.processor.Processor` as a host
could: any load words (lane words, requantizer entries, program steps, gather table
entries, any data, any ``first``) between inferences, any input beats and any
``y.ready``. It mirrors the program, the requantizer table's ``dest``/``valid`` and
the three gather tables as they are loaded, and keeps ghost state of its own. On every
cycle it asserts:

* **program order**: after an input is taken, the steps that start (the sequencer's
  ``GO``) are 0, 1, 2, ... (a ghost count of steps started equals ``pc`` at each
  ``GO``), each runs the program's own step, each ends exactly once with ``pc``
  advanced by one, the step marked ``last`` ends in ``READ`` (every other in
  ``FETCH``), no step starts after it, and the sequencer is back in ``IDLE`` only after
  it. A convolution (``CONV``) step runs its positions 0, 1, ..., n-1 in order, each
  once (a ghost count of positions against ``p``), and ends after the last;
* **the scratchpad**: per entry a ghost ``written`` bit, cleared when an inference
  starts and set by every scratchpad write (the image scatter, the requantizer's map
  writes). Every gather read is of a written entry or of the zero border ``Z`` (entries
  the tables never write; the hardware cleared them when the tables were loaded). The
  gather reads, in order, ``base[i] + column[c + e] + pool[d + j]`` of the position
  entry ``i``, the step's column and pool entries the walk of
  :func:`darbgen.processor_conv.check_scratchpad` says (the spec's own pointers), and
  each write goes where the tables send it: the image's element ``n`` to
  ``offset[n]``, a step's row entry ``k`` of position ``i`` to ``dest[k] + offset[i]``
  (nothing where ``skip``), while that position runs.

Assumed, as :func:`darbgen.processor.load_words` and ``check_plan`` guarantee:
loads come between inferences (in ``IDLE``, not with an input beat, and no input beat
in the cycle right after a load word: the load's register); the program has a step
marked ``last``; a ``CONV`` step has 1 to ``gather_positions`` positions and at least
one column and one pool entry, and its entries fit the tables (``check_gather``); a
step's table entries end at or after the previous step's plus ``slots`` × ``lanes``
(one per drained sum) and within the table. The zero border ``Z`` is any set of
entries (``AnyConst``) such that the tables' walk never writes ``Z`` and reads, at each
gather read, an entry of ``Z`` or one an earlier step (or the image) wrote: the
condition :func:`~darbgen.processor_conv.check_scratchpad` checks on the tables (its
"reads before this inference writes it"). The spec's walk and ``written`` bits are
logical: a position's writes count as done when it ends, so a read that the hardware
issues before the write it depends on has landed fails the check.

Bounded (sby ``bmc``) from reset, with ``cover`` runs showing that the assumptions
leave real behaviour: a gather read of an entry the image wrote (in a few cycles), and
a whole inference of a two-step program whose first step writes the scratchpad and whose
second, a ``CONV`` step, gathers from it at two positions and is the last (minutes).
"""

from __future__ import annotations

from amaranth.asserts import AnyConst, AnySeq      # Amaranth 0.5 keeps them here
from amaranth.hdl import Array, Assert, Assume, Cat, Cover, Mux, Signal

from darbgen.config import EngineConfig
from darbgen.hdl.layouts import to_layout
from darbgen.hdl.processor import Processor
from darbgen.processor import GatherTable, ProcessorConfig, StepKind, Target
from darbgen.processor_conv import gather_fields

from .sby import FormalSpec

__all__ = ["ProcessorHarness", "ProcessorSpec", "PROCESSOR_CONFIG", "COVERS"]

#: The covers :class:`ProcessorSpec` can ask for.
COVERS = ("gather", "inference")


class ProcessorHarness(FormalSpec):
    """Base of the specs that drive a whole :class:`~darbgen.hdl.processor.Processor`:
    its config, the processor under test (a new one with its memories in block RAM, or a
    mutant) and the cover asked for, one of the class's ``covers`` (the first by default).
    A subclass refuses a config it cannot check in :meth:`check_config`."""

    covers: tuple = ()

    def __init__(self, config: ProcessorConfig, dut=None, cover: str | None = None):
        super().__init__()
        self._MustUse__silence = True           # until the arguments are checked
        self.check_config(config)
        cover = self.covers[0] if cover is None else cover
        if cover not in self.covers:
            raise ValueError(f"cover must be one of {', '.join(self.covers)}, not {cover!r}")
        self._MustUse__silence = False
        self.cover = cover
        self.config = config
        self.dut = Processor(config, spram=False, table_in_banks=False) if dut is None else dut

    def check_config(self, config: ProcessorConfig):
        """Raise ``ValueError`` for a config this spec cannot check (any, here)."""


class ProcessorSpec(ProcessorHarness):
    """A :class:`~darbgen.hdl.processor.Processor` loaded and run by any host, against
    the program order and the scratchpad's written entries.

    Parameters
    ----------
    config : ProcessorConfig
        A processor with a gather (``map_depth > 0``), tiny enough for a bounded check.
    dut : Processor, optional
        The processor under test (default: a new one, memories in block RAM); a mutant
        for the negative checks.
    cover : {"gather", "inference"}
        What its ``Cover`` asks for: a gather read of an entry the image wrote (a few
        cycles), or a whole two-step inference (:data:`COVERS`).
    """

    covers = COVERS

    def check_config(self, config):
        if not config.has_gather:
            raise ValueError("the processor spec needs a processor with a gather "
                             "(map_depth > 0)")

    def describe(self, m):
        c = self.config
        e = c.engine
        dut = self.dut
        # Elaborated here, not as a submodule: the sequencer's FSM exists only then.
        m.submodules.processor = proc = dut.elaborate(None)
        dut._MustUse__silence = True            # used through its elaborated module
        fsm, maps = dut._fsm, proc.submodules.maps
        pc, p, step = dut._pc, dut._p, dut._step
        state = fsm.ongoing
        a = c.map_bits

        # -- the host: any loads between inferences, any inputs, any y.ready --------------
        load, x, y = dut.load, dut.x, dut.y
        m.d.comb += [load.valid.eq(AnySeq(1)), x.valid.eq(AnySeq(1)), y.ready.eq(AnySeq(1)),
                     *(v.eq(AnySeq(len(v))) for v in (load.payload.as_value(),
                                                       x.payload.as_value()))]
        lv, lw = Signal(), Signal.like(load.payload)       # the processor's load register
        m.d.sync += [lv.eq(load.valid), lw.eq(load.payload)]
        m.d.comb += [Assume(~load.valid | (state("IDLE") & ~x.valid)),
                     Assume(~(x.valid & lv))]

        # -- the loaded memories, mirrored as the processor writes them ---------------------
        def mirrored(target, layout, depth, fields, name):
            """Arrays of ``fields`` of the words loaded to ``target``, written in order
            from ``first``."""
            word = layout(lw.data[:layout.size])
            rows = {f: Array(Signal.like(getattr(word, f), name=f"{name}_{f}{i}")
                             for i in range(depth)) for f in fields}
            at = Signal(range(depth + 1), name=f"{name}_at")
            loaded = Signal(range(depth + 1), name=f"{name}_loaded")
            m.d.comb += at.eq(Mux(word.first, 0, loaded))
            with m.If(lv & (lw.target == target)):
                m.d.comb += Assume(at < depth)            # the load fits (check_plan)
                m.d.sync += [loaded.eq(at + 1),
                             *(rows[f][at].eq(getattr(word, f)) for f in fields)]
            return rows

        step_l = to_layout(c.step_fields)
        prog = mirrored(Target.PROGRAM, step_l, c.max_steps,
                        ("kind", "last", "positions", "cols", "pools", "to_map", "slots",
                         "table_end"), "prog")
        table = mirrored(Target.TABLE, to_layout(c.requant_fields), c.table_depth,
                         ("dest", "valid"), "table")
        # The gather's three tables: `first` restarts all of them.
        gword = to_layout(gather_fields(c))(lw.data[:to_layout(gather_fields(c)).size])
        gather = {}
        for t, depth, fields in ((GatherTable.POSITIONS, c.gather_positions,
                                  ("addr", "offset", "skip")),
                                 (GatherTable.COLUMNS, c.gather_columns, ("addr",)),
                                 (GatherTable.POOLS, c.gather_pools, ("addr",))):
            rows = {f: Array(Signal.like(getattr(gword, f), name=f"{t.name.lower()}_{f}{i}")
                             for i in range(depth)) for f in fields}
            loaded = Signal(range(depth + 1), name=f"{t.name.lower()}_loaded")
            at = Mux(gword.first, 0, loaded)
            mine = lv & (lw.target == Target.GATHER) & (gword.table == t)
            with m.If(mine):
                m.d.comb += Assume(at < depth)
                m.d.sync += [r[at].eq(getattr(gword, f)) for f, r in rows.items()]
            with m.If(lv & (lw.target == Target.GATHER) & gword.first):
                m.d.sync += loaded.eq(mine)
            with m.Elif(mine):
                m.d.sync += loaded.eq(at + 1)
            gather[t] = rows
        positions = gather[GatherTable.POSITIONS]
        columns = gather[GatherTable.COLUMNS]["addr"]
        pools = gather[GatherTable.POOLS]["addr"]

        # -- program order -------------------------------------------------------------
        running = Signal()                      # an inference has left IDLE
        started = Signal(range(c.max_steps + 2))
        finished = Signal()                     # the step marked `last` has ended
        cur = {f: Signal.like(prog[f][0], name=f"cur_{f}") for f in prog}
        q = Signal(range(c.gather_positions + 2))     # positions started in the step
        conv = cur["kind"] == StepKind.CONV
        in_flush = Signal()
        m.d.sync += in_flush.eq(state("FLUSH"))
        ended = in_flush & ~state("FLUSH")     # a position or a step has just ended
        step_ends = ended & ~state("POSITION")
        has_last = Cat(*prog["last"]).any()

        with m.If(state("IDLE")):
            m.d.comb += Assert(~running | finished)   # back only after the last step
            m.d.sync += [running.eq(0), started.eq(0), finished.eq(0)]
        with m.Else():
            m.d.sync += running.eq(1)
            m.d.comb += Assume(has_last)               # the program ends (load_words)
        with m.If(finished):
            m.d.comb += Assert(state("READ") | state("SEND") | state("IDLE"))

        nxt = {f: prog[f][started] for f in prog}
        prev_end = Signal.like(cur["table_end"])     # table entries of the steps before
        with m.If(state("GO")):
            m.d.comb += [Assert(pc == started), Assert(~finished), Assert(running),
                         # what load_words writes: the step's table entries follow the
                         # previous step's, one per drained sum at least
                         Assume(nxt["table_end"] >= prev_end + nxt["slots"] * e.lanes),
                         Assume(nxt["table_end"] <= c.table_depth)]
            m.d.sync += [started.eq(started + 1), q.eq(0),
                         *(cur[f].eq(nxt[f]) for f in cur)]
        with m.If(running & (started != 0) & ~state("GO")):
            m.d.comb += [Assert(step.kind == cur["kind"]), Assert(step.last == cur["last"]),
                         Assert(step.positions == cur["positions"]),
                         Assert(step.table_end == cur["table_end"])]
        with m.If(state("POSITION")):
            m.d.comb += [Assert(conv), Assert(p == q), Assert(q < cur["positions"])]
            m.d.sync += q.eq(q + 1)
        with m.If(ended):
            m.d.comb += Assert(state("POSITION") | state("FETCH") | state("READ"))
            with m.If(state("POSITION")):
                m.d.comb += Assert(conv & (q < cur["positions"]))
            with m.Else():
                m.d.comb += [Assert(~conv | (q == cur["positions"])), Assert(pc == started),
                             Assert(state("READ") == cur["last"])]
                m.d.sync += [finished.eq(cur["last"]), prev_end.eq(cur["table_end"])]
        with m.If(state("IDLE")):
            m.d.sync += prev_end.eq(0)

        # -- the scratchpad ----------------------------------------------------------------
        zero = AnyConst(c.map_depth)            # the zero border Z
        written = Signal(c.map_depth)           # written in this inference (hardware)
        logical = Signal(c.map_depth)           # written in this inference (the walk)
        i = Signal(range(c.gather_positions + 1))    # the walk's position entry
        cb = Signal(range(c.gather_columns + 1))     # the step's first column entry
        pb = Signal(range(c.gather_pools + 1))       # ... and pool entry
        el = Signal(range(e.max_cols + 1))           # the gather's element, pool entry
        d = Signal(range(c.gather_pools + 1))

        def bit(mask, at):
            return mask.bit_select(at, 1)

        def onehot(at):
            return (1 << at)[:c.map_depth]

        hw_write = maps._pad_we & ~maps.clearing
        with m.If(hw_write):
            m.d.sync += written.eq(written | onehot(maps._pad_waddr))

        # The image: element n goes to offset[n] (nothing where skip), a cycle later.
        scattered, s_at, s_skip = Signal(), Signal(a), Signal()
        m.d.sync += scattered.eq(maps.scatter)
        with m.If(maps.scatter):
            m.d.comb += [Assume(i < c.gather_positions),
                         Assume(positions["skip"][i] | ~bit(zero, positions["offset"][i]))]
            m.d.sync += [s_at.eq(positions["offset"][i]), s_skip.eq(positions["skip"][i]),
                         i.eq(i + 1)]
            with m.If(~positions["skip"][i]):
                m.d.sync += logical.eq(logical | onehot(positions["offset"][i]))
        with m.If(scattered):
            m.d.comb += Assert(hw_write == ~s_skip)
            with m.If(hw_write):
                m.d.comb += Assert(maps._pad_waddr == s_at)

        # The requantizer: entry k of the step, at the position's offset.
        offset = Mux(conv, positions["offset"][i], 0)
        skip = Mux(conv, positions["skip"][i], 0)
        targets = []
        for k in range(c.table_depth):
            live = ((k >= prev_end) & (k < cur["table_end"]) & table["valid"][k] & ~skip
                    & cur["to_map"])
            targets.append((live, (table["dest"][k] + offset)[:a]))
        with m.If(hw_write & ~scattered):
            m.d.comb += [Assert(running & ~state("GO")),
                         Assert(Cat(*(live & (at == maps._pad_waddr)
                                      for live, at in targets)).any())]
        with m.If(step_ends | (ended & state("POSITION"))):
            # The position's (or Linear step's) writes are done: Z is never written.
            m.d.comb += [Assume(~(live & bit(zero, at))) for live, at in targets]
            m.d.sync += logical.eq(logical | _or_onehots(targets, c.map_depth))
            with m.If(conv):
                m.d.sync += i.eq(i + 1)
        with m.If(step_ends & conv):
            m.d.sync += [cb.eq(cb + cur["cols"]), pb.eq(pb + cur["pools"])]

        # The gather: element el, pool entry d of the position's patch.
        with m.If(state("GO") & (nxt["kind"] == StepKind.CONV)):
            m.d.comb += [Assume((nxt["positions"] >= 1)
                                & (nxt["positions"] <= c.gather_positions)),
                         Assume((nxt["cols"] >= 1) & (cb + nxt["cols"] <= c.gather_columns)),
                         Assume((nxt["pools"] >= 1) & (pb + nxt["pools"] <= c.gather_pools))]
        with m.If(state("POSITION")):
            m.d.sync += [el.eq(0), d.eq(0)]
        read_at = (positions["addr"][i] + columns[cb + el] + pools[pb + d])[:a]
        with m.If(maps._pad_read):
            m.d.comb += [Assume(i < c.gather_positions),
                         Assert(state("GATHER")), Assert(el < cur["cols"]),
                         Assert(maps._pad_raddr == read_at),
                         Assume(bit(logical, read_at) | bit(zero, read_at)),
                         Assert(bit(written, maps._pad_raddr) | bit(zero, maps._pad_raddr))]
            with m.If(d + 1 == cur["pools"]):
                m.d.sync += [d.eq(0), el.eq(el + 1)]
            with m.Else():
                m.d.sync += d.eq(d + 1)
        with m.If(state("RUN")):
            m.d.comb += Assert(el == cur["cols"])     # the whole patch, once
        with m.If(state("IDLE")):
            m.d.sync += [written.eq(0), logical.eq(0), i.eq(0), cb.eq(0), pb.eq(0)]

        # Not vacuous: the gather reads an entry the image wrote; or a step writes the
        # scratchpad, the next (the last) gathers from it at two positions and ends.
        two = Signal()
        with m.If(state("POSITION") & (q == 1)):
            m.d.sync += two.eq(1)
        with m.If(state("IDLE")):
            m.d.sync += two.eq(0)
        if self.cover == "gather":
            m.d.comb += Cover(maps._pad_read & bit(written, maps._pad_raddr))
        else:
            m.d.comb += Cover(state("READ") & finished & two & (started == 2)
                              & (written != 0))


def _or_onehots(targets, width):
    """The OR of ``live << at`` over ``targets``, ``width`` bits."""
    out = 0
    for live, at in targets:
        out = out | Mux(live, (1 << at)[:width], 0)
    return out


#: A processor small enough for the bounded check: 2 lanes, 3 steps, 8 scratchpad
#: entries, 4 position entries.
PROCESSOR_CONFIG = ProcessorConfig(
    EngineConfig(lanes=2, shifts=(1,), max_keep=1, max_row_nnz=2, max_cols=4, lane_depth=4,
                 lane_rows=4, weight_bits=2, input_bits=2, input_width=1),
    lane_slots=1, table_depth=4, max_steps=3, map_depth=8, gather_positions=4,
    gather_columns=2, gather_pools=2, max_classes=2)
