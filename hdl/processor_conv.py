"""The processor's im2col gather: the scratchpad of feature maps and its address tables.

The contract (what the tables hold, where the maps go) is :mod:`darbgen.processor_conv`;
:class:`~darbgen.hdl.processor.Processor` drives this unit from its sequencer:

* ``scatter`` writes the network's input image, one element per cycle, at the next
  ``POSITIONS`` entry's ``offset`` (unless ``skip``);
* ``step_begin`` notes where the step's columns and pool offsets start, ``position``
  reads its next position entry (patch base, write offset, skip), ``gather`` writes
  that position's patch into every lane's x memory: element ``e`` is the maximum over
  ``d`` of ``scratchpad[base + column[e] + pool[d]]``, one read per cycle (issue →
  table reads → scratchpad read → maximum and lane write); the column and pool
  pointers end past the step's entries;
* the requantizer's writes (``w_*``) land at ``dest + offset`` (``offset`` and
  ``skip`` are the current position's).

Loading the tables (``first``) clears the scratchpad: a region's zero border is never
written afterwards, so it stays zero for every inference.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..processor import GatherTable, ProcessorConfig
from ..processor_conv import gather_fields, gather_memories, position_fields
from .layouts import to_layout
from .spram import SinglePortRAM

__all__ = ["MapUnit", "MEMORIES", "memory_shapes", "port_signature"]


class MapUnit(wiring.Component):
    """The scratchpad and the gather of a :class:`~darbgen.hdl.processor.Processor`.

    Members
    -------
    load : In(stream.Signature(gather_fields))
        Table words (always ready); ``first`` restarts the tables and clears the
        scratchpad.
    clearing : Out(1)
        The scratchpad is being cleared: nothing may write or gather.
    rewind : In(1)
        An inference starts: every table pointer back to its first entry.
    scatter, scatter_data : In
        Write one element of the input image.
    step_begin : In(1)
    cols, pools : In
        The step's column and pool entries (read while gathering).
    position : In(1)
        Read the next position entry (its address must have been stable a cycle).
    gather : In(1)
        Write the current position's patch into the lanes' x; ``busy`` until done.
    busy : Out(1)
    x_we, x_addr, x_data : Out
        The lanes' x writes (one element at a time, as the requantizer's).
    offset, skip : Out
        The current position's write offset (0 outside a gathered step) and skip.
    w_en, w_addr, w_data : In
        The requantizer's writes, at their final address.
    hold : In(1)
        The scratchpad's clear waits this cycle (a load word may use its bank).
    scratchpad_mem, positions_mem, columns_mem, pools_mem : Out(port_signature(...))
        ``banked`` only: the memories' ports, which the processor routes to the lanes'
        banks (:func:`darbgen.processor.bank_regions`); otherwise the memories are the
        unit's own.

    Parameters
    ----------
    config : ProcessorConfig
    banked : bool
        The memories lie in the lanes' banks (outside the unit).
    """

    def __init__(self, config: ProcessorConfig, *, banked: bool = False):
        if not config.has_gather:
            raise ValueError("the processor has no gather (its map_depth is 0)")
        self._config = c = config
        self._banked = banked
        e = c.engine
        a = c.map_bits
        # The scratchpad's accesses, made here so that the formal spec
        # (formal/processor.py) can follow them: a write, and a gather read's address.
        self._pad_we, self._pad_waddr = Signal(name="pad_we"), Signal(a, name="pad_waddr")
        self._pad_read, self._pad_raddr = Signal(name="v1"), Signal(a, name="pad_raddr")
        super().__init__({
            **({f"{name}_mem": Out(port_signature(depth, width))
                for name, depth, width in memory_shapes(c)} if banked else {}),
            "hold": In(1),
            "load": In(stream.Signature(to_layout(gather_fields(c)))),
            "clearing": Out(1), "rewind": In(1),
            "scatter": In(1), "scatter_data": In(signed(e.input_bits)),
            "step_begin": In(1),
            "cols": In(range(c.act_depth + 1)), "pools": In(range(c.gather_pools + 1)),
            "position": In(1), "gather": In(1), "busy": Out(1),
            "x_we": Out(e.input_width), "x_addr": Out(ceil_log2(2 * e.x_depth)),
            "x_data": Out(e.input_width * e.input_bits),
            "offset": Out(a), "skip": Out(1),
            "w_en": In(1), "w_addr": In(a), "w_data": In(signed(e.input_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        e = c.engine
        a, ib, iw = c.map_bits, e.input_bits, e.input_width
        pos_l = to_layout(position_fields(c))
        if self._banked:
            pad, positions, columns, pools = (getattr(self, f"{name}_mem") for name in MEMORIES)
        else:
            pad, positions, columns, pools = (
                _memory(m, name, depth, width) for name, depth, width in memory_shapes(c))

        # -- loading: each table written in order from `first` ---------------------------
        word = self.load.payload
        m.d.comb += self.load.ready.eq(1)
        restart = self.load.valid & word.first
        # The read pointers: `col_ptr` and `pool_ptr` run over the step's entries as the
        # gather reads them and end past them (no `base + index` adders, nor a move at
        # the step's end); `col_base` and `pool_base` keep where the step's entries start.
        pos_ptr = Signal(range(c.gather_positions + 1))
        cols_at, pools_at = range(c.gather_columns + 1), range(c.gather_pools + 1)
        col_ptr, col_base = Signal(cols_at), Signal(cols_at)
        pool_ptr, pool_base = Signal(pools_at), Signal(pools_at)
        for mem, table, depth, ptr in (
                (positions, GatherTable.POSITIONS, c.gather_positions, pos_ptr),
                (columns, GatherTable.COLUMNS, c.gather_columns, col_ptr),
                (pools, GatherTable.POOLS, c.gather_pools, pool_ptr)):
            loaded = Signal(range(depth + 1), name=f"{table.name.lower()}_loaded")
            at = Mux(word.first, 0, loaded)
            mine = self.load.valid & (word.table == table)
            data = Cat(word.addr, word.offset, word.skip) if mem is positions else word.addr
            # (data and address unconditional: a zero default costs a LUT per bit)
            m.d.comb += [mem.addr.eq(Mux(mine, at, ptr)), mem.wdata.eq(data)]
            with m.If(mine):
                m.d.comb += [mem.en.eq(1), mem.we.eq(1)]
            with m.If(restart):
                m.d.sync += loaded.eq(mine)
            with m.Elif(mine):
                m.d.sync += loaded.eq(at + 1)
        with m.If(self.rewind):
            m.d.sync += [pos_ptr.eq(0), col_ptr.eq(0), pool_ptr.eq(0)]

        # -- the scratchpad's writes: clearing, the input image, the requantizer ---------
        # The clear waits while a load word may use the banks (`hold`).
        clear_at = Signal(range(max(c.map_depth, 2)))
        clear = Signal()
        m.d.comb += clear.eq(self.clearing & ~self.hold)
        with m.If(restart):
            m.d.sync += [self.clearing.eq(1), clear_at.eq(0)]
        with m.Elif(clear):
            m.d.sync += clear_at.eq(clear_at + 1)
            with m.If(clear_at == c.map_depth - 1):
                m.d.sync += self.clearing.eq(0)
        entry = Signal(pos_l)
        m.d.comb += entry.eq(positions.rdata)
        # A position entry is read at `scatter` or `position`, and arrives a cycle later.
        with m.If(self.scatter | self.position):
            m.d.comb += positions.en.eq(1)
            m.d.sync += pos_ptr.eq(pos_ptr + 1)
        # The input element whose entry is being read: written a cycle later.
        sv, sdata = Signal(), Signal(signed(ib))
        m.d.sync += [sv.eq(self.scatter), sdata.eq(self.scatter_data)]
        # Address and data without a zero default (a LUT per bit): the gather's reads
        # (below) take the address otherwise.
        with m.If(clear):
            m.d.comb += [pad.en.eq(1), pad.we.eq(1), pad.addr.eq(clear_at)]
        with m.Elif(sv):
            m.d.comb += [pad.en.eq(~entry.skip), pad.we.eq(1), pad.addr.eq(entry.offset)]
        with m.Elif(self.w_en):
            m.d.comb += [pad.en.eq(1), pad.we.eq(1), pad.addr.eq(self.w_addr)]
        with m.Else():
            m.d.comb += pad.addr.eq(self._pad_raddr)
        m.d.comb += pad.wdata.eq(Mux(clear, 0, Mux(sv, sdata, self.w_data)))
        # (for formal/processor.py: every scratchpad write, clears included)
        m.d.comb += [self._pad_we.eq(pad.en & pad.we), self._pad_waddr.eq(pad.addr)]

        # -- the position ------------------------------------------------------------------
        base = Signal(a)
        with m.If(self.step_begin):
            m.d.sync += [col_base.eq(col_ptr), pool_base.eq(pool_ptr), self.offset.eq(0),
                         self.skip.eq(0)]
        got = Signal()                              # the position's entry arrives
        m.d.sync += got.eq(self.position)
        with m.If(got):
            m.d.sync += [base.eq(entry.addr), self.offset.eq(entry.offset),
                         self.skip.eq(entry.skip)]

        # -- the gather: issue (e, d) → column and pool offsets → scratchpad → maximum ----
        # `base` arrives a cycle after `gather`, in time for the first scratchpad read.
        col = Signal(range(c.act_depth + 1))
        d = Signal(range(c.gather_pools + 1))
        issuing = Signal()
        d_last, col_last = Signal(), Signal()
        m.d.comb += [d_last.eq(d + 1 == self.pools), col_last.eq(col + 1 == self.cols)]
        with m.If(self.gather):
            m.d.sync += [issuing.eq(1), self.busy.eq(1), col.eq(0), d.eq(0),
                         col_ptr.eq(col_base), pool_ptr.eq(pool_base)]
        with m.Elif(issuing):
            m.d.sync += pool_ptr.eq(pool_ptr + 1)
            with m.If(d_last):
                m.d.sync += [d.eq(0), col_ptr.eq(col_ptr + 1)]
                with m.If(col_last):
                    m.d.sync += issuing.eq(0)
                with m.Else():
                    # The element's pool window again; after the last element the
                    # pointers stay past the step's entries.
                    m.d.sync += [col.eq(col + 1), pool_ptr.eq(pool_base)]
            with m.Else():
                m.d.sync += d.eq(d + 1)
        with m.If(issuing):
            m.d.comb += [columns.en.eq(1), pools.en.eq(1)]
        v1, first1, last1 = self._pad_read, Signal(), Signal()
        v2, first2, last2 = Signal(), Signal(), Signal()
        m.d.sync += [v1.eq(issuing), first1.eq(d == 0), last1.eq(d_last),
                     v2.eq(v1), first2.eq(first1), last2.eq(last1)]
        # Two adders: as one sum of three, Yosys builds a carry-save adder (9 LUTs more).
        column = Signal(a)
        m.d.comb += [column.eq(base + columns.rdata),
                     self._pad_raddr.eq(column + pools.rdata)]
        with m.If(v1):
            m.d.comb += pad.en.eq(1)
        best = Signal(signed(ib))
        value = pad.rdata.as_signed()
        top = Mux(first2 | (value > best), value, best)
        with m.If(v2):
            m.d.sync += best.eq(top)
        # The patch's elements are written in order: a counter addresses them.
        el = Signal.like(col)
        with m.If(self.gather):
            m.d.sync += el.eq(0)
        with m.Elif(v2 & last2):
            m.d.sync += el.eq(el + 1)
        sel = ceil_log2(iw)
        m.d.comb += [self.x_we.eq(Mux(v2 & last2, 1, 0) << (el[:sel] if sel else 0)),
                     self.x_addr.eq(el >> sel), self.x_data.eq(Cat(*[top] * iw))]
        with m.If(self.busy & ~self.gather & ~issuing & ~v1 & ~v2):
            m.d.sync += self.busy.eq(0)
        return m


#: The gather's memories, in :func:`memory_shapes` order.
MEMORIES = ("scratchpad", "positions", "columns", "pools")


def memory_shapes(config: ProcessorConfig) -> list:
    """``(name, depth, width)`` of each of the gather's memories
    (:func:`darbgen.processor_conv.gather_memories`)."""
    return [(name, depth, width) for name, (_, depth, width)
            in gather_memories(config).items()]


def port_signature(depth: int, width: int) -> wiring.Signature:
    """One address port of a memory, as the gather drives it: ``en`` (this cycle reads
    or, with ``we``, writes ``addr``), ``rdata`` a cycle after a read (held until the
    next)."""
    return wiring.Signature({"addr": Out(range(max(depth, 2))), "en": Out(1), "we": Out(1),
                             "wdata": Out(width), "rdata": In(width)})


def _memory(m: Module, name: str, depth: int, width: int):
    """A memory of the gather's own behind one :func:`port_signature` port."""
    port = port_signature(depth, width).create(path=(name,))
    m.submodules[name] = ram = SinglePortRAM(width, depth, spram=False)
    m.d.comb += [ram.addr.eq(port.addr), ram.en.eq(port.en), ram.we.eq(port.we & port.en),
                 ram.wdata.eq(port.wdata), port.rdata.eq(ram.rdata)]
    return port
