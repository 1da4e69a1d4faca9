"""Bounded check of a sequenced lane (the processor's): no step skipped or repeated.

A lane of :class:`darbgen.hdl.processor.Processor` holds the rows of every step back to
back, each step's row headers followed by an end marker (``nnz = 0``); its beats follow
on from step to step (:class:`~darbgen.hdl.Lane` with ``sequenced=True``).
:class:`SequencedSchedulerSpec` drives such a lane with any loads (any header and beat
words, restarts), any rewinds and any starts, as the processor's sequencer does (while
the lane is idle, with two quiet cycles before a start), and mirrors the header memory
to follow the order the lane must run. On every cycle it asserts:

* while active, the beat address ``ptr`` is the count of beats issued since the last
  rewind, across steps: no beat of any step skipped or issued twice;
* the row being run is the one after the previous row (or the step's first header),
  runs with that row's own ``nnz``, marks exactly its first beat, and ends after
  exactly ``nnz`` beats;
* a start on a marker (a lane with no rows in the step) issues nothing and moves on to
  the next step; after a step's last row the lane stops right after its last beat and
  the next start runs the next step's first row: no step skipped, none repeated.

Bounded (sby ``bmc``) from reset; a ``cover`` shows a run reaching the second row of the
second step after a rewind (the assumptions leave real behaviour).
"""

from __future__ import annotations

from amaranth.asserts import AnySeq            # Amaranth 0.5 keeps it here
from amaranth.hdl import Array, Assert, Assume, Cover, Mux, Signal

from darbgen.config import EngineConfig, shape_width
from darbgen.hdl import Lane

from .sby import FormalSpec

__all__ = ["SequencedSchedulerSpec", "SEQUENCED_CONFIG"]


class SequencedSchedulerSpec(FormalSpec):
    """A sequenced lane, loaded, rewound and started at any idle time, against the
    step and row order it must follow.

    Parameters
    ----------
    config : EngineConfig
        Sizes of the lane (``lane_rows`` headers with markers, ``lane_depth`` beats).
    dut : Lane, optional
        The lane under test (default: a new sequenced :class:`~darbgen.hdl.Lane`); a
        mutant for the negative checks.
    """

    def __init__(self, config: EngineConfig, dut=None):
        super().__init__()
        self.config = config
        self.dut = Lane(config, sequenced=True, slots=config.lane_rows) if dut is None else dut

    def describe(self, m):
        c = self.config
        m.submodules.lane = lane = self.dut
        ptr, remaining, row_first = lane._ptr, lane._remaining, lane._row_first
        active = lane.active

        # -- the processor's driving: any loads, rewinds and starts while idle ----------
        start, rewind = AnySeq(1), AnySeq(1)
        wr_first, wr_beat, wr_header = AnySeq(1), AnySeq(1), AnySeq(1)
        wr_data = AnySeq(len(lane.wr_data))
        m.d.comb += [lane.start.eq(start), lane.rewind.eq(rewind), lane.par.eq(0),
                     lane.wr_first.eq(wr_first), lane.wr_beat.eq(wr_beat),
                     lane.wr_header.eq(wr_header), lane.wr_data.eq(wr_data),
                     lane.x_we.eq(0), lane.y_en.eq(0)]
        writing = wr_first | wr_beat | wr_header
        busy = active | start
        quiet = Signal(range(3))        # cycles since a write, rewind, start or finish
        stopped = Signal()
        event = writing | rewind | start | stopped
        m.d.sync += quiet.eq(Mux(event, 0, Mux(quiet == 2, 2, quiet + 1)))
        m.d.comb += [Assume(~(writing & busy)), Assume(~(rewind & busy)),
                     Assume(~(start & active)), Assume(~(start & rewind)),
                     # The header memory presents the step's first header two cycles after
                     # the base changes; the sequencer's FETCH and RETIRE give it that.
                     Assume(~start | (quiet == 2))]

        # -- the header memory, mirrored: each header's row length (0: a marker) ---------
        widths = [(name, shape_width(shape)) for name, shape in c.header_fields]
        low = sum(w for name, w in widths[:[n for n, _ in widths].index("nnz")])
        nnz_w = dict(widths)["nnz"]
        shadow = Array(Signal(nnz_w, name=f"nnz{i}") for i in range(c.lane_rows))
        wptr = Signal(range(c.lane_rows + 1))
        at = Mux(wr_first, 0, wptr)
        with m.If(wr_header):
            m.d.comb += Assume(at < c.lane_rows)
            m.d.sync += shadow[at].eq(wr_data[low:low + nnz_w])
        m.d.sync += wptr.eq(at + wr_header)

        # -- the reference: where the run must be ---------------------------------------
        base = Signal(range(c.lane_rows + 2))   # the current step's first header
        row = Signal(range(c.lane_rows + 2))    # the header of the row being run
        n = Signal(range(c.lane_depth + 1))     # beats issued since the rewind
        j = Signal(range(c.max_row_nnz + 1))    # beats of this row issued before this cycle
        steps = Signal(2)                        # steps finished since the rewind (saturating)
        nnz = shadow[row]
        ends = j + 1 == nnz
        next_marker = shadow[row + 1] == 0
        expect = Signal()                        # the lane must be active this cycle
        m.d.comb += stopped.eq(active & ends & next_marker)
        with m.If(rewind):
            m.d.sync += [base.eq(0), n.eq(0), steps.eq(0)]
        with m.Elif(start):
            m.d.comb += Assume(base < c.lane_rows)
            with m.If(shadow[base] == 0):       # no rows in this step: skip its marker
                m.d.sync += [base.eq(base + 1), steps.eq(steps + (steps != 3))]
            with m.Else():
                m.d.sync += [row.eq(base), j.eq(0), expect.eq(1)]
        with m.Elif(active):
            m.d.sync += n.eq(n + 1)
            with m.If(ends):
                with m.If(next_marker):
                    m.d.sync += [base.eq(row + 2), expect.eq(0),
                                 steps.eq(steps + (steps != 3))]
                with m.Else():
                    m.d.sync += [row.eq(row + 1), j.eq(0)]
            with m.Else():
                m.d.sync += j.eq(j + 1)

        # -- what the load guarantees (darbgen.processor.load_words) ---------------------
        with m.If(active):
            m.d.comb += [Assume(nnz <= c.max_row_nnz), Assume(n < c.lane_depth),
                         Assume(row + 1 < c.lane_rows)]     # each step ends in a marker

        # -- the contract ------------------------------------------------------------------
        m.d.comb += Assert(active == expect)     # runs exactly the rows up to the marker
        with m.If(active):
            m.d.comb += [Assert(ptr == n),       # no beat skipped or issued twice
                         Assert(lane._cur.nnz == nnz),     # the row's own header
                         Assert(row_first == (j == 0)),
                         Assert(remaining + j == nnz)]
        # Not vacuous: after a rewind, the second row of the second step runs.
        m.d.comb += Cover(active & (steps == 1) & (row == base + 1) & (j == 0))


#: The lane the sequencer check runs on: room for a few short steps.
SEQUENCED_CONFIG = EngineConfig(lanes=1, shifts=(1,), max_keep=1, max_row_nnz=3, max_cols=6,
                                lane_depth=12, lane_rows=6)
