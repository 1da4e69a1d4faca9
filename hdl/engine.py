"""The regular-block sparse matrix-vector engine.

Structure (one :class:`Lane` per multiplier):

* **weights** are loaded at run time through the ``load`` stream into each lane's
  header memory (per row: shift code, keep count, length) and beat memory
  (``(value, offset)`` beats of :func:`darbgen.format.pack_beats`), in the lane
  order of :func:`darbgen.packing.schedule`;
* **x** arrives on the ``x`` stream ``input_width`` elements per beat and is written
  into every lane's private, double-buffered copy: each lane reads one element
  per cycle at any column, with no conflicts, and vector ``v + 1`` loads while
  ``v`` computes;
* each lane **issues one beat per cycle** across its rows with no bubble between
  rows (the next row's header is prefetched). Its pipeline is issue → decode and x
  read → select → multiply → accumulate;
* results go to a double-buffered per-lane y memory, drained as ``y`` beats of one
  exact sum per lane (lane ``i``'s ``t``-th row in beat ``t``) while the next
  vector computes. :func:`darbgen.packing.unpack_outputs` restores row order.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import EngineConfig, layout_width
from .decode import IndexDecoder
from .spram import SinglePortRAM, uses_spram
from .layouts import beat_layout, header_layout, input_layout, load_layout, output_layout

__all__ = ["SpMVEngine", "Lane", "load_lanes", "lane_pipeline_depth"]

# Cycles from a lane issuing its last beat to that beat's sum being in the y memory.
_PIPELINE_DEPTH = 5


def _beat_register(spram: bool | None, platform) -> bool:
    """A sequenced lane registers the beat read before decoding it, unless its bank is
    SPRAM (``spram``, or by default the platform's part): on the ECP5 the read out of
    the bank's five DP16KD, their output multiplexer and the decoder into the x block
    RAM's address were one cycle (the iCE40's lanes keep theirs: no logic cells to spare)."""
    return not (uses_spram(platform) if spram is None else spram)


def lane_pipeline_depth(spram: bool | None, platform) -> int:
    """Cycles from a sequenced lane (of beat bank ``spram``, :class:`Lane`) issuing its
    last beat to that beat's sum being in its y memory, on ``platform``."""
    return _PIPELINE_DEPTH + _beat_register(spram, platform)


class Lane(wiring.Component):
    """One multiplier lane: its memories, decoder and MAC pipeline.

    Members
    -------
    wr_first, wr_beat, wr_header : In(1)
        Load strobes (``wr_first`` resets the write pointers before this write).
    wr_data : In
        The load word's data field.
    x_we, x_addr, x_data : In
        Broadcast write into the x buffers (in a sequenced lane ``x_we`` has a bit per
        element of the word).
    start : In(1)
        Start the vector whose buffers have parity ``par``.
    par : In(1)
    active : Out(1)
        Still issuing beats of the current vector.
    rows : Out
        Rows loaded into this lane (output beats it contributes to).
    y_en, y_addr : In
        Read port of the y memory (for the drain).
    y_data : Out(signed(acc_width))
    rewind : In(1)
        Sequenced lanes only: go back to the first row and beat (an inference starts).
    mark, repeat, again : In(1)
        Replaying lanes only: ``mark`` saves where the lane's beats stand (a step
        begins); ``repeat`` (while the step runs) says it will run again, so the lane
        stays on its first row; ``again`` goes back to the saved beat (the step runs its
        rows again, for the next position of a convolution).

    Parameters
    ----------
    config : EngineConfig
    sequenced : bool
        A lane of :class:`darbgen.hdl.processor.Processor`: its memories hold the rows
        of every step (layer) back to back, each step's rows followed by an end marker
        (a header with ``nnz = 0``), and a ``start`` runs the rows up to the next marker,
        continuing from where the previous step stopped. Its x and y memories are
        single buffers (the processor runs one step at a time), ``par`` is unused and x
        is written element by element.
    slots : int
        Sequenced lanes only: the most rows the lane runs in one step (y memory depth).
    replay : bool
        Sequenced lanes only: add ``mark`` and ``again``.
    spram : bool, optional
        Sequenced lanes only: the beat bank is a :class:`~darbgen.hdl.spram.SinglePortRAM`
        (an SB_SPRAM256KA on iCE40UP parts); ``True``/``False`` force or forbid the
        primitive, by default the platform decides.
    bank_words, bank_width : int
        Sequenced lanes only: the processor keeps ``bank_words`` words of up to
        ``bank_width`` bits of its own behind the beats in this lane's bank (its memories
        of :func:`darbgen.processor.bank_regions`, used only while the lane is idle). The
        bank is then ``lane_depth + bank_words`` deep and at least ``bank_width`` wide,
        and the ports ``bank_sel`` (the processor owns the bank this cycle),
        ``bank_addr`` (a word of the whole bank, the beats at 0), ``bank_we``,
        ``bank_wdata`` and ``bank_rdata`` (a cycle after the address) reach it.
    """

    def __init__(self, config: EngineConfig, *, sequenced: bool = False, slots: int | None = None,
                 replay: bool = False, spram: bool | None = None, bank_words: int = 0,
                 bank_width: int = 0):
        self._config = c = config
        self._sequenced = sequenced
        self._replay = replay and sequenced
        self._spram = spram
        self._bank = (bank_words, bank_width) if sequenced and bank_words else None
        # Sums held per vector: a slot per row, or in a sequenced lane the most rows it
        # runs in one step (its header memory holds every step's rows).
        self._slots = slots if sequenced else c.lane_rows
        self._row_bits = ceil_log2(c.lane_rows + 1)
        # The issue stage's state and its header read address, created here (not in
        # elaborate) so that the formal proof of the scheduler (formal/scheduler.py)
        # can name them; the names are those they would get in elaborate.
        self._slot = Signal(self._row_bits, name="slot")
        self._remaining = Signal(range(c.max_row_nnz + 1), name="remaining")
        self._ptr = Signal(range(c.lane_depth + 1), name="ptr")
        self._row_first = Signal(name="row_first")
        self._cur = Signal(header_layout(c), name="cur")
        self._header_addr = Signal(range(max(c.lane_rows, 2)), name="header_addr")
        super().__init__({
            "wr_first": In(1), "wr_beat": In(1), "wr_header": In(1),
            "wr_data": In(max(layout_width(c.beat_fields), layout_width(c.header_fields))),
            # A sequenced lane writes single elements (the requantizer's results).
            "x_we": In(c.input_width if sequenced else 1),
            "x_addr": In(ceil_log2(2 * c.x_depth)),
            "x_data": In(input_layout(c)["x"].shape.size),
            "start": In(1), "par": In(1),
            "active": Out(1), "rows": Out(self._row_bits),
            "y_en": In(1), "y_addr": In(ceil_log2(2 * self._slots)),
            "y_data": Out(c.acc_width),
            **({"rewind": In(1)} if sequenced else {}),
            **({"mark": In(1), "repeat": In(1), "again": In(1)} if self._replay else {}),
            **({"bank_sel": In(1), "bank_addr": In(range(c.lane_depth + bank_words)),
                "bank_we": In(1), "bank_wdata": In(bank_width),
                "bank_rdata": Out(bank_width)} if self._bank else {}),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        beat_l, header_l = beat_layout(c), header_layout(c)
        xword_l = input_layout(c)["x"].shape

        # At least 2 words: a 1-word memory has a 0-bit address, which Amaranth emits as
        # `wire [-1:0]` and Verilator refuses (a lane of one row or one beat).
        seq = self._sequenced
        if seq:
            # One port is enough: the bank is written only while loading and read only
            # while the lane issues, so it can be a single-ported SPRAM (docs/processor.md).
            words, width = self._bank or (0, 0)
            m.submodules.beats = beats = SinglePortRAM(max(beat_l.size, width),
                                                       max(c.lane_depth + words, 2),
                                                       spram=self._spram)
        else:
            m.submodules.beats = beats = memory.Memory(shape=beat_l, depth=max(c.lane_depth, 2),
                                                       init=[])
        m.submodules.headers = headers = memory.Memory(shape=header_l,
                                                       depth=max(c.lane_rows, 2), init=[])
        buffers = 1 if seq else 2
        m.submodules.xbuf = xbuf = memory.Memory(shape=xword_l, depth=buffers * c.x_depth,
                                                 init=[])
        m.submodules.ybuf = ybuf = memory.Memory(shape=c.acc_width,
                                                  depth=max(buffers * self._slots, 2), init=[])
        if seq:
            header_wr, header_rd = headers.write_port(), headers.read_port()
        else:
            beat_wr, header_wr = beats.write_port(), headers.write_port()
            beat_rd, header_rd = beats.read_port(), headers.read_port()
        x_wr, x_rd = xbuf.write_port(**({"granularity": 1} if seq else {})), xbuf.read_port()
        y_wr, y_rd = ybuf.write_port(), ybuf.read_port()

        # -- loading ---------------------------------------------------------------
        beat_ptr = Signal(range(c.lane_depth + 1))
        row_ptr = Signal(self._row_bits)
        beat_at = Mux(self.wr_first, 0, beat_ptr)
        row_at = Mux(self.wr_first, 0, row_ptr)
        if not seq:
            m.d.comb += [beat_wr.addr.eq(beat_at), beat_wr.data.eq(self.wr_data[:beat_l.size]),
                         beat_wr.en.eq(self.wr_beat)]
        m.d.comb += [
            header_wr.addr.eq(row_at), header_wr.data.eq(self.wr_data[:header_l.size]),
            header_wr.en.eq(self.wr_header),
            self.rows.eq(row_ptr),
        ]
        with m.If(self.wr_first):
            m.d.sync += [beat_ptr.eq(self.wr_beat), row_ptr.eq(self.wr_header)]
        with m.Else():
            m.d.sync += [beat_ptr.eq(beat_ptr + self.wr_beat), row_ptr.eq(row_ptr + self.wr_header)]
        m.d.comb += [x_wr.addr.eq(self.x_addr), x_wr.data.eq(self.x_data), x_wr.en.eq(self.x_we)]

        # -- stage A: issue one beat per cycle -----------------------------------------
        slot, remaining, ptr = self._slot, self._remaining, self._ptr
        row_first, cur = self._row_first, self._cur
        par = Signal()
        last = Signal()
        done = Signal()
        go = Signal()
        if seq:
            # The step's first header is at `base`; the row after `slot` is at
            # base + slot + 1, which is the step's end marker after its last row.
            base = Signal(range(c.lane_rows + 2))
            # While active, `after` = base + slot + 1 and `after2` = base + slot + 2, kept
            # in registers: the adders in front of the header memory's address limited
            # the iCE40UP5K processor to 25.5 MHz.
            after, after2 = Signal.like(base), Signal.like(base)
            empty = header_rd.data.nnz == 0         # at a start: the step has no rows here
            # `remaining == 1`, registered: computed a cycle early from what `remaining`
            # becomes (its compare led the UP5K processor's critical path, 28.4 MHz).
            row_ends = Signal()
            with m.If(go):
                m.d.sync += row_ends.eq(header_rd.data.nnz == 1)
            with m.Elif(self.active):
                m.d.sync += row_ends.eq(Mux(last, header_rd.data.nnz == 1, remaining == 2))
            m.d.comb += [
                go.eq(self.start & ~empty),
                last.eq(row_ends),
                done.eq(self.active & last & empty),
                # The prefetch of the engine's lane, offset by `base`; after the last row
                # it skips the marker to present the next step's first header.
                self._header_addr.eq(Mux(self.start, base + 1, Mux(~self.active, base,
                                                                  Mux(last, after2, after)))),
                header_rd.addr.eq(self._header_addr),
            ]
            first_at = Mux(self.rewind, 0, base)
            with m.If(go):
                m.d.sync += [after.eq(first_at + 1), after2.eq(first_at + 2)]
            with m.Elif(self.active & last & ~done):
                m.d.sync += [after.eq(after + 1), after2.eq(after2 + 1)]
            # The bank reads only while the lane issues, so that what the processor reads
            # from it stays on its output until the next read (no hold register).
            m.d.comb += [beats.addr.eq(Mux(self.wr_beat, beat_at, ptr)),
                         beats.wdata.eq(self.wr_data[:beat_l.size]),
                         beats.we.eq(self.wr_beat), beats.en.eq(self.active)]
            if self._bank:
                # The processor's words sit behind the beats (`bank_sel` only while
                # the lane is idle and loads no beat).
                m.d.comb += self.bank_rdata.eq(beats.rdata[:self._bank[1]])
                with m.If(self.bank_sel):
                    m.d.comb += [beats.addr.eq(self.bank_addr), beats.en.eq(1),
                                 beats.wdata.eq(self.bank_wdata), beats.we.eq(self.bank_we)]
            moves = 1                           # `base` moves past a step that ends
            if self._replay:
                # A step that runs again (`repeat`) leaves `base` at its first header,
                # so `again` restores only the beat pointer (a copy of `base` cost 9
                # flip-flops and a multiplexer input per lane).
                step_ptr = Signal.like(ptr)
                with m.If(self.mark):
                    m.d.sync += step_ptr.eq(ptr)
                moves = ~self.repeat
            with m.If(self.rewind):
                m.d.sync += [base.eq(0), ptr.eq(0)]
            if self._replay:
                # Only between a step's runs (the lane is idle): ptr is not counting.
                with m.Elif(self.again):
                    m.d.sync += ptr.eq(step_ptr)
            with m.Elif(self.start & empty & moves):
                m.d.sync += base.eq(base + 1)
            with m.Elif(done & moves):
                m.d.sync += base.eq(after2)
        else:
            m.d.comb += [
                go.eq(self.start & (row_ptr != 0)),
                last.eq(remaining == 1),
                done.eq(self.active & last & (slot + 1 == row_ptr)),
                beat_rd.addr.eq(ptr),
                # Prefetch: while a row issues, the header memory presents the next row's
                # header (read latency 1), so a row change costs no cycle. Idle, it
                # presents row 0, which a start loads; the start cycle asks for row 1.
                self._header_addr.eq(Mux(go, 1, Mux(~self.active | done, 0,
                                                    Mux(last, slot + 2, slot + 1)))),
                header_rd.addr.eq(self._header_addr),
            ]
        with m.If(go):
            # A sequenced lane's beats follow on from the previous step's: no ptr reset.
            m.d.sync += [self.active.eq(1), slot.eq(0), *([] if seq else [ptr.eq(0)]),
                         par.eq(self.par), row_first.eq(1), cur.eq(header_rd.data),
                         remaining.eq(header_rd.data.nnz)]
        with m.Elif(self.active):
            m.d.sync += ptr.eq(ptr + 1)
            with m.If(last):
                with m.If(done):
                    m.d.sync += self.active.eq(0)
                with m.Else():
                    m.d.sync += [slot.eq(slot + 1), cur.eq(header_rd.data),
                                 remaining.eq(header_rd.data.nnz), row_first.eq(1)]
            with m.Else():
                m.d.sync += [remaining.eq(remaining - 1), row_first.eq(0)]

        # -- stage B: decode the column, read x ----------------------------------------
        b_valid, b_first, b_last, b_par = Signal(), Signal(), Signal(), Signal()
        b_slot = Signal.like(slot)
        b_hdr = Signal(header_l)
        m.d.sync += [b_valid.eq(self.active), b_first.eq(row_first), b_last.eq(last),
                     b_par.eq(par), b_slot.eq(slot), b_hdr.eq(cur)]
        beat = beat_l(beats.rdata[:beat_l.size]) if seq else beat_rd.data
        if seq and _beat_register(self._spram, platform):
            # Stage B': the beat read, registered (and stage B's fields with it).
            r_valid, r_first, r_last, r_par = Signal(), Signal(), Signal(), Signal()
            r_slot, r_hdr = Signal.like(b_slot), Signal.like(b_hdr)
            r_beat = Signal(beat_l)
            m.d.sync += [r_valid.eq(b_valid), r_first.eq(b_first), r_last.eq(b_last),
                         r_par.eq(b_par), r_slot.eq(b_slot), r_hdr.eq(b_hdr), r_beat.eq(beat)]
            b_valid, b_first, b_last, b_par = r_valid, r_first, r_last, r_par
            b_slot, b_hdr, beat = r_slot, r_hdr, r_beat
        m.submodules.decoder = dec = IndexDecoder(c)
        m.d.comb += [dec.valid.eq(b_valid), dec.first.eq(b_first), dec.shift.eq(b_hdr.shift),
                     dec.keep.eq(b_hdr.keep), dec.offset.eq(beat.offset)]
        sel_bits = ceil_log2(c.input_width)
        word = dec.col >> sel_bits
        m.d.comb += x_rd.addr.eq(word if seq else Mux(b_par, c.x_depth + word, word))

        # -- stage C: the x word arrives ------------------------------------------------
        c_valid, c_first, c_last, c_par = Signal(), Signal(), Signal(), Signal()
        c_slot = Signal.like(slot)
        c_value = Signal.like(beat.value)
        c_sel = Signal(max(1, sel_bits))
        m.d.sync += [c_valid.eq(b_valid), c_first.eq(b_first), c_last.eq(b_last),
                     c_par.eq(b_par), c_slot.eq(b_slot), c_value.eq(beat.value),
                     c_sel.eq(dec.col[:sel_bits] if sel_bits else 0)]

        # -- stage D: select the element, register both operands -------------------------
        # The x memory's output and the element select stay out of the multiplier's
        # path: in front of an ECP5 DSP they were the critical path of a 16-lane chain.
        s_valid, s_first, s_last, s_par = Signal(), Signal(), Signal(), Signal()
        s_slot = Signal.like(slot)
        # The multiplier's operands and product have no reset (the valid bits do): Yosys
        # then packs these registers into the iCE40 DSP instead of logic cells.
        s_value = Signal.like(beat.value, reset_less=True)
        s_x = Signal(signed(c.input_bits), reset_less=True)
        m.d.sync += [s_valid.eq(c_valid), s_first.eq(c_first), s_last.eq(c_last),
                     s_par.eq(c_par), s_slot.eq(c_slot), s_value.eq(c_value),
                     s_x.eq(Mux(c_valid, x_rd.data[c_sel] if c.input_width > 1 else x_rd.data[0],
                                0))]

        # -- stage E: multiply ----------------------------------------------------------
        d_valid, d_first, d_last, d_par = Signal(), Signal(), Signal(), Signal()
        d_slot = Signal.like(slot)
        d_prod = Signal(signed(c.weight_bits + c.input_bits), reset_less=True)
        m.d.sync += [d_valid.eq(s_valid), d_first.eq(s_first), d_last.eq(s_last),
                     d_par.eq(s_par), d_slot.eq(s_slot), d_prod.eq(s_value * s_x)]

        # -- stage F: accumulate; stage G: write the row's sum ---------------------------
        # The accumulator adds every cycle (a bubble's product is 0: s_x is) and its
        # register has no reset or enable, and the sum is written a cycle later from it:
        # Yosys then packs adder and register into the iCE40 DSP.
        acc = Signal(signed(c.acc_width), reset_less=True)
        m.d.sync += acc.eq(Mux(d_first, 0, acc) + d_prod)
        e_valid, e_last, e_par = Signal(), Signal(), Signal()
        e_slot = Signal.like(slot)
        m.d.sync += [e_valid.eq(d_valid), e_last.eq(d_last), e_par.eq(d_par), e_slot.eq(d_slot)]
        if seq:
            # A sequenced lane starts a step with its pipeline empty and writes the step's
            # rows in order: a counter addresses the sums (in place of the slot carried
            # down the pipeline, 24 flip-flops).
            # Cleared at every start, rows or not: from `go` it hung on the header memory's
            # output and was the iCE40 device's critical path (28.5 MHz).
            y_slot = Signal.like(slot)
            with m.If(self.start):
                m.d.sync += y_slot.eq(0)
            with m.Elif(e_valid & e_last):
                m.d.sync += y_slot.eq(y_slot + 1)
        m.d.comb += [
            y_wr.en.eq(e_valid & e_last),
            y_wr.addr.eq(y_slot if seq else Mux(e_par, c.lane_rows + e_slot, e_slot)),
            y_wr.data.eq(acc),
            y_rd.en.eq(self.y_en), y_rd.addr.eq(self.y_addr), self.y_data.eq(y_rd.data),
        ]
        return m


def load_lanes(m: Module, lanes, valid, word) -> None:
    """Route load word ``word`` (layout ``load_layout``), present when ``valid``, to
    its lane's header or beat memory."""
    for i, lane in enumerate(lanes):
        mine = valid & (word.lane == i)
        m.d.comb += [lane.wr_first.eq(valid & word.first),
                     lane.wr_beat.eq(mine & ~word.header),
                     lane.wr_header.eq(mine & word.header),
                     lane.wr_data.eq(word.data)]


class SpMVEngine(wiring.Component):
    """Sparse matrix-vector engine for regular-block layers.

    Parameters
    ----------
    config : EngineConfig

    Members
    -------
    load : In(stream.Signature(load_layout))
        Weight-load words from :func:`darbgen.packing.load_words` (``ready`` is always 1).
    x : In(stream.Signature(input_layout))
        Input vectors from :func:`darbgen.packing.input_words`.
    y : Out(stream.Signature(output_layout))
        One beat per output slot per vector, ``last`` on each vector's final beat.
    slots : Out
        Output beats per vector of the loaded layer (the most rows in one lane); 0
        before a layer is loaded, and then no vector starts. It settles
        ``log2(lanes) + 2`` cycles after the last load word; vectors wait for that.

    """

    def __init__(self, config: EngineConfig):
        self._config = config
        super().__init__({
            # Always ready (tied to 1), but a plain stream: verilog.convert refuses the
            # constant port an always_ready signature would create.
            "load": In(stream.Signature(load_layout(config))),
            "x": In(stream.Signature(input_layout(config))),
            "y": Out(stream.Signature(output_layout(config))),
            "slots": Out(ceil_log2(config.lane_rows + 1)),
        })

    @property
    def config(self) -> EngineConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        lanes = [Lane(c) for _ in range(c.lanes)]
        for i, lane in enumerate(lanes):
            m.submodules[f"lane{i}"] = lane

        # -- weight loading: route each word to its lane ------------------------------------
        m.d.comb += self.load.ready.eq(1)
        load_lanes(m, lanes, self.load.valid, self.load.payload)
        # Output beats per vector: the most rows in a lane, as a balanced tree of
        # comparisons with a register per level (a chain across 16 lanes limited ECP5 to
        # 21 MHz, an unregistered tree to 60). It only changes while loading, so the tree
        # may lag: `runnable` holds starts until it has caught up with the last load word.
        slots = self.slots
        level, depth = [lane.rows for lane in lanes], 0
        while len(level) > 1:
            pairs = []
            for a, b in zip(level[::2], level[1::2]):
                most = Signal.like(slots, name=f"most{depth}_{len(pairs)}")
                m.d.sync += most.eq(Mux(a > b, a, b))
                pairs.append(most)
            level, depth = pairs + level[len(pairs) * 2:], depth + 1
        settle = Signal(range(depth + 3))
        with m.If(self.load.valid):
            m.d.sync += settle.eq(depth + 2)
        with m.Elif(settle != 0):
            m.d.sync += settle.eq(settle - 1)
        runnable = Signal()                 # has rows and the tree has settled
        m.d.sync += [slots.eq(level[0]), runnable.eq((level[0] != 0) & (settle == 0))]

        # -- input vectors into the double-buffered x copies --------------------------------
        x_full = Signal(2)
        wpar = Signal()
        waddr = Signal(range(c.x_depth + 1))
        m.d.comb += self.x.ready.eq(~x_full.bit_select(wpar, 1))
        for lane in lanes:
            m.d.comb += [lane.x_we.eq(self.x.valid & self.x.ready),
                         lane.x_addr.eq(Mux(wpar, c.x_depth + waddr, waddr)),
                         lane.x_data.eq(self.x.payload.x.as_value())]
        set_x_full = Signal(2)
        clear_x_full = Signal(2)
        with m.If(self.x.valid & self.x.ready):
            with m.If(self.x.payload.last):
                m.d.comb += set_x_full.eq(Mux(wpar, 0b10, 0b01))
                m.d.sync += [wpar.eq(~wpar), waddr.eq(0)]
            with m.Else():
                m.d.sync += waddr.eq(waddr + 1)

        # -- compute: all lanes start a vector together ------------------------------------
        computing = Signal()
        cpar = Signal()
        y_busy = Signal(2)                          # holds results not yet drained
        any_active = Signal()
        m.d.comb += any_active.eq(Cat(*(lane.active for lane in lanes)).any())
        start = Signal()
        issue_done = Signal()
        npar = Signal()                             # parity of the next vector to start
        m.d.comb += [
            issue_done.eq(computing & ~any_active),
            npar.eq(cpar ^ issue_done),
        ]
        # A vector may start in the very cycle the previous one finishes issuing: the
        # lanes' header memories already present row 0 again. Written as a choice between
        # two precomputed parities rather than an index by `npar`: this decision gates
        # every lane, and the index would put `issue_done` in front of two more LUTs.
        can_start = Signal(2)
        m.d.comb += can_start.eq(x_full & ~y_busy & Mux(runnable, 0b11, 0b00))
        m.d.comb += start.eq(Mux(computing, ~any_active & Mux(cpar, can_start[0], can_start[1]),
                                 Mux(cpar, can_start[1], can_start[0])))
        for lane in lanes:
            m.d.comb += [lane.start.eq(start), lane.par.eq(npar)]
        set_y_busy = Signal(2)
        clear_y_busy = Signal(2)
        with m.If(issue_done):
            # The last x read was presented in the cycle before: the buffer is free.
            m.d.sync += [computing.eq(0), cpar.eq(~cpar)]
            m.d.comb += clear_x_full.eq(Mux(cpar, 0b10, 0b01))
        with m.If(start):
            m.d.sync += computing.eq(1)
            m.d.comb += set_y_busy.eq(Mux(npar, 0b10, 0b01))
        m.d.sync += x_full.eq((x_full | set_x_full) & ~clear_x_full)

        # The y memory holds a vector's sums once its last beat has left the pipeline.
        retire = [Signal(name=f"retire{i}") for i in range(_PIPELINE_DEPTH)]
        retire_par = [Signal(name=f"retire_par{i}") for i in range(_PIPELINE_DEPTH)]
        m.d.sync += [retire[0].eq(issue_done), retire_par[0].eq(cpar)]
        for i in range(1, _PIPELINE_DEPTH):
            m.d.sync += [retire[i].eq(retire[i - 1]), retire_par[i].eq(retire_par[i - 1])]
        y_ready = Signal(2)
        set_y_ready = Signal(2)
        clear_y_ready = Signal(2)
        with m.If(retire[-1]):
            m.d.comb += set_y_ready.eq(Mux(retire_par[-1], 0b10, 0b01))

        # -- drain: one beat per slot, all lanes' sums side by side -----------------------
        draining = Signal()
        dpar = Signal()
        t = Signal.like(slots)
        y_last = Signal()
        advance = Signal()
        m.d.comb += advance.eq(~self.y.valid | self.y.ready)
        for i, lane in enumerate(lanes):
            m.d.comb += [lane.y_en.eq(advance),
                         lane.y_addr.eq(Mux(dpar, c.lane_rows + t, t)),
                         self.y.payload.y[i].eq(lane.y_data)]
        m.d.comb += self.y.payload.last.eq(y_last)
        with m.If(~draining & y_ready.bit_select(dpar, 1)):
            m.d.sync += [draining.eq(1), t.eq(0)]
        with m.If(advance):
            with m.If(draining & (t < slots)):
                m.d.sync += [self.y.valid.eq(1), y_last.eq(t == slots - 1), t.eq(t + 1)]
            with m.Else():
                m.d.sync += self.y.valid.eq(0)
        with m.If(self.y.valid & self.y.ready & y_last):
            m.d.sync += [draining.eq(0), dpar.eq(~dpar), y_last.eq(0)]
            m.d.comb += [clear_y_ready.eq(Mux(dpar, 0b10, 0b01)),
                         clear_y_busy.eq(Mux(dpar, 0b10, 0b01))]
        m.d.sync += [y_ready.eq((y_ready | set_y_ready) & ~clear_y_ready),
                     y_busy.eq((y_busy | set_y_busy) & ~clear_y_busy)]
        return m
