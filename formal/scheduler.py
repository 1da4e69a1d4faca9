"""Formal spec of a lane's issue scheduler: no weight dropped, none issued twice.

A lane holds, after its load, ``rows`` row headers and the rows' weight beats one after
another; a vector's run must issue beat addresses ``0, 1, 2, ...`` without a gap or a
repeat, row ``r`` (slot ``r``) for exactly ``nnz`` of its header beats, rows in order,
and stop after the last row's last beat. :class:`SchedulerSpec` drives a
:class:`~darbgen.hdl.Lane` with any loads (restarts, header and beat writes with any
data, up to ``lane_rows`` rows; the headers a run reads have ``1 <= nnz <=
max_row_nnz`` and the beats fit ``lane_depth``) and any starts, both while the lane is
idle, as the engine drives it, and asserts on every cycle:

* while active, the beat address ``ptr`` is the count of beats issued since the start;
* the slot is the harness's row count, and below ``rows``;
* ``row_first`` marks exactly a row's first beat, and the beats left in the row plus
  the beats issued of it are the row's ``nnz``: a row ends after exactly ``nnz`` beats
  (the lane's ``last``);
* the header a row runs with was read from the row's own slot (the address presented
  two cycles before the row's first beat: the memory's read latency, then the latch);
* the lane stays active until its last row's last beat and stops right after it.

Proven in ``prove`` mode (k-induction): every reachable state, any number of vectors.
The harness's counters are tied to the lane's registers by the assertions themselves,
which make the property inductive; :class:`~darbgen.hdl.Lane` creates the registers it
names in its constructor for this purpose only. What happens to an issued beat (decode,
multiply, accumulate) is the decoder proof's and the engine check's business.
"""

from __future__ import annotations

from amaranth.asserts import AnySeq            # Amaranth 0.5 keeps it here
from amaranth.hdl import Assert, Assume, Cover, Signal

from darbgen.config import EngineConfig
from darbgen.hdl import Lane

from .sby import FormalSpec

__all__ = ["SchedulerSpec", "SCHEDULER_CONFIGS"]


class SchedulerSpec(FormalSpec):
    """A loaded lane, started at any idle time, against the issue order it must follow.

    Parameters
    ----------
    config : EngineConfig
        Sizes of the lane (``lane_rows``, ``lane_depth``, ``max_row_nnz``).
    dut : Lane, optional
        The lane under test (default: a new :class:`~darbgen.hdl.Lane`); a mutant from
        :func:`formal.mutants.mutant` for the negative checks.
    """

    def __init__(self, config: EngineConfig, dut=None):
        super().__init__()
        self.config = config
        self.dut = Lane(config) if dut is None else dut

    def describe(self, m):
        c = self.config
        m.submodules.lane = lane = self.dut
        slot, remaining, ptr = lane._slot, lane._remaining, lane._ptr
        row_first, nnz = lane._row_first, lane._cur.nnz
        rows, active = lane.rows, lane.active

        # -- any loads and starts while the lane is idle (as the engine drives it) -----
        start, wr_first = AnySeq(1), AnySeq(1)
        wr_beat, wr_header = AnySeq(1), AnySeq(1)
        m.d.comb += [lane.start.eq(start), lane.par.eq(AnySeq(1)),
                     lane.wr_first.eq(wr_first), lane.wr_beat.eq(wr_beat),
                     lane.wr_header.eq(wr_header), lane.wr_data.eq(AnySeq(len(lane.wr_data))),
                     lane.x_we.eq(0), lane.y_en.eq(0)]
        writing = wr_first | wr_beat | wr_header
        m.d.comb += [Assume(rows <= c.lane_rows),     # a load fits the lane's rows
                     Assume(~(start & active)),       # the engine starts idle lanes only
                     Assume(~(writing & (active | start)))]   # and loads idle ones

        # -- the reference: beats issued since the start and in the current row -------
        n = Signal(range(c.lane_depth + 1))          # beats issued before this cycle
        row = Signal.like(slot)
        j = Signal(range(c.max_row_nnz + 1))         # beats of this row before this cycle
        addr1, addr2 = Signal.like(lane._header_addr), Signal.like(lane._header_addr)
        m.d.sync += [addr1.eq(lane._header_addr), addr2.eq(addr1)]
        go = start & (rows != 0)
        last = remaining == 1
        with m.If(go):
            m.d.sync += [n.eq(0), row.eq(0), j.eq(0)]
        with m.Elif(active):
            m.d.sync += n.eq(n + 1)
            with m.If(last):
                m.d.sync += [row.eq(row + 1), j.eq(0)]
            with m.Else():
                m.d.sync += j.eq(j + 1)

        # -- what the load guarantees about the rows (packing.load_words) --------------
        with m.If(active & row_first):
            # The header was read from this slot (asserted below): its beat count is
            # one the packer writes.
            m.d.comb += Assume((nnz >= 1) & (nnz <= c.max_row_nnz))
        with m.If(active):
            m.d.comb += Assume(n < c.lane_depth)     # the lane's beats fit its memory

        # -- the contract ----------------------------------------------------------------
        with m.If(active):
            m.d.comb += [
                Assert(ptr == n),                     # no beat skipped or issued twice
                Assert(slot == row),
                Assert(row < rows),                   # only loaded rows
                Assert(row_first == (j == 0)),
                Assert(remaining + j == nnz),         # the row ends after nnz beats
                Assert(j < nnz),
            ]
            with m.If(row_first):
                m.d.comb += Assert(addr2 == slot)     # its own header
        was_active, was_last_row = Signal(), Signal()
        m.d.sync += [was_active.eq(active & ~go), was_last_row.eq(last & (row + 1 == rows))]
        with m.If(was_active):
            # Active until the last row's last beat, idle right after it.
            m.d.comb += Assert(active == ~was_last_row)
        # Not vacuous: a run reaches its third row's second beat (or its last row's).
        m.d.comb += Cover(active & (row == min(2, c.lane_rows - 1)) & (j == 1))


def _config(lane_rows, lane_depth, max_row_nnz):
    return EngineConfig(lanes=1, shifts=(1,), max_keep=1, max_row_nnz=max_row_nnz,
                        max_cols=2 * max_row_nnz, lane_depth=lane_depth, lane_rows=lane_rows)


#: Lane sizes the scheduler is proven for, by name.
SCHEDULER_CONFIGS = {
    "rows4-depth16-nnz8": _config(4, 16, 8),
    # rows a power of two minus one: the row counter's top value is a real count
    "rows3-depth12-nnz4": _config(3, 12, 4),
    "rows76-depth300-nnz8": _config(76, 300, 8),      # the iCEBreaker's digits fc1 lanes
    "rows1-depth5-nnz5": _config(1, 5, 5),
}
