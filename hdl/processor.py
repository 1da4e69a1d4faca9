"""The layer-sequenced processor: one set of lanes runs every layer of a network.

The contract (capacities, load words, program encoding) is
:class:`darbgen.processor.ProcessorConfig`; its module docstring says how the
memories are laid out. Per inference the sequencer walks the program:

* **IDLE** takes the input vector from ``x`` into every lane's x memory and rewinds
  the lanes and the table to their first row, beat and entry;
* per step: **FETCH** reads the step, **GO** starts every lane on its rows of the layer
  (the :class:`~darbgen.hdl.engine.Lane` of the chain, sequenced: it runs up to its
  next end marker), **ISSUE** waits until no lane is issuing and **RETIRE** until the
  last sums are in the lanes' y memories;
* **FILL/APPLY/TAIL** are the chain's requantizer (:func:`~darbgen.hdl.network.requant_states`):
  the sums, drained one beat (a sum per lane) at a time, go through the table's
  entries and the requantization pipeline. A hidden step's results are written, one
  element per cycle, straight into every lane's x memory (its lanes have finished
  reading it): the next step's input, with no copy. The last step's go to the logit
  memory;
* **FLUSH** lets the pipeline empty; after the last step **READ/SEND** send the
  logits out on ``y``, rows in order, one per beat;
* an LSTM step (a processor with an LSTM cell, :mod:`darbgen.hdl.processor_lstm`)
  goes from RETIRE to **CELL** instead: the sums go to the chain's LSTM cell, which
  writes ``h_t`` into every lane's x memory (the next time step's ``h_{t-1}``) and,
  as the last step, sends ``(h_t, c_t)`` out on ``y``.

A processor with a gather (``config.has_gather``) also runs convolution steps
(:mod:`darbgen.processor_conv`, :class:`~darbgen.hdl.processor_conv.MapUnit`): a
network starting with one takes its image into the scratchpad (**SCATTER**/**TAKE**);
a gathered step runs, per position, **POSITION** (its table entry) → **GATHER** (the
patch into every lane's x) → **RUN** (lanes start) → ... → **FLUSH**, and back to
**POSITION** with the lanes and the table replaying the step, until its last position.

Everything happens in turn (no two steps overlap): a step costs its busiest lane's
beats plus about ``slots · lanes + empty rows`` cycles of requantization and a dozen
of sequencing (docs/processor.md has the figures).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..config import layout_width
from ..network import OUTPUT_BITS
from ..processor import ProcessorConfig, StepKind, Target
from .engine import _PIPELINE_DEPTH as LANE_PIPELINE_DEPTH
from .engine import Lane, load_lanes
from .layouts import load_layout, output_layout, to_layout
from .network import _PIPELINE_DEPTH as REQUANT_PIPELINE_DEPTH
from .network import requant_pipeline, requant_states, requant_table
from .processor_lstm import lstm_unit
from .spram import uses_spram

__all__ = ["Processor"]


class Processor(wiring.Component):
    """One engine for every layer, driven by a program loaded with the weights.

    Parameters
    ----------
    config : ProcessorConfig
    spram : bool, optional
        Put each lane's beat bank on an SB_SPRAM256KA (``True``), never (``False``), or
        when the platform is an iCE40UP part (``None``, the default;
        :class:`~darbgen.hdl.spram.SinglePortRAM`).
    table_in_banks : bool, optional
        Keep the requantizer table in the lanes' beat banks, behind the beats, each lane
        holding ``ceil(entry bits / lanes)`` bits of every entry, instead of in a memory
        of its own; by default wherever the banks are SPRAM (on the UP5K the table would
        otherwise take 9 of the 30 block RAMs; docs/processor.md).

    Members
    -------
    load : In(stream.Signature(load_fields))
        Words of :func:`darbgen.processor.load_words` (always ready): ``target`` (a
        :class:`~darbgen.processor.Target`) picks the lanes, the requantizer table or
        the program.
    x : In(stream.Signature(input_fields))
        The input vector, ``input_width`` elements per beat; taken between inferences.
    y : Out(stream.Signature(output_fields))
        One integer logit per beat, rows in order, ``last`` on each vector's final row.
    """

    def __init__(self, config: ProcessorConfig, *, spram: bool | None = None,
                 table_in_banks: bool | None = None):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._spram = spram
        self._table_in_banks = table_in_banks
        super().__init__({
            "load": In(stream.Signature(to_layout(config.load_fields))),
            "x": In(stream.Signature(to_layout(config.input_fields))),
            "y": Out(stream.Signature(to_layout(config.output_fields))),
        })

    @property
    def config(self) -> ProcessorConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        e = c.engine
        conv = c.has_gather
        in_banks = self._table_in_banks
        if in_banks is None:
            in_banks = uses_spram(platform) if self._spram is None else self._spram
        # The stored `first` bit only restarts the table's write pointer: not kept.
        entry_bits = layout_width(c.requant_fields) - 1
        share = -(-entry_bits // e.lanes) if in_banks else 0
        lanes = [Lane(e, sequenced=True, slots=c.lane_slots, replay=conv, spram=self._spram,
                      table_words=c.table_depth if in_banks else 0, table_width=share)
                 for _ in range(e.lanes)]
        for i, lane in enumerate(lanes):
            m.submodules[f"lane{i}"] = lane
        if conv:
            from .processor_conv import MapUnit
            m.submodules.maps = maps = MapUnit(c)

        # -- loading: registered, then routed by target (as in the chain) -----------------
        m.d.comb += self.load.ready.eq(1)
        valid, word = Signal(), Signal.like(self.load.payload)
        m.d.sync += [valid.eq(self.load.valid), word.eq(self.load.payload)]
        lane_word = Signal(load_layout(e))
        m.d.comb += lane_word.eq(word.data[:len(lane_word.as_value())])
        load_lanes(m, lanes, valid & (word.target == Target.LANES), lane_word)
        table_l, step_l = to_layout(c.requant_fields), to_layout(c.step_fields)
        table_load = stream.Signature(table_l).create(path=("table_load",))
        program_load = stream.Signature(step_l).create(path=("program_load",))
        for port, target in ((table_load, Target.TABLE), (program_load, Target.PROGRAM)):
            m.d.comb += [port.valid.eq(valid & (word.target == target)),
                         port.payload.eq(word.data[:len(port.payload.as_value())])]
        if in_banks:
            table_rd = _banked_table(m, lanes, table_load, c.table_depth, table_l, share)
        else:
            table_rd, _ = requant_table(m, table_load, c.table_depth, table_l)
        program_rd, _ = requant_table(m, program_load, c.max_steps, step_l, name="program")
        # A network starting with a convolution takes its image into the scratchpad:
        # its program's first step says so (latched as the program is loaded).
        map_input = Signal()
        if conv:
            gather_l = maps.load.payload.shape()
            m.d.comb += [maps.load.valid.eq(valid & (word.target == Target.GATHER)),
                         maps.load.payload.eq(word.data[:gather_l.size])]
            with m.If(program_load.valid & program_load.payload.first):
                m.d.sync += map_input.eq(program_load.payload.kind == StepKind.CONV)
        # The LSTM cell (None without one): its table loads from target CELL.
        cell = lstm_unit(m, c, valid & (word.target == Target.CELL), word.data, program_load,
                         platform)

        # -- the step being run ----------------------------------------------------------
        pc = Signal(range(c.max_steps + 1))
        step = Signal(step_l)
        if cell is not None:
            cell.bind(step)
        m.d.comb += program_rd.addr.eq(pc)
        any_active = Signal()
        m.d.comb += any_active.eq(Cat(*(lane.active for lane in lanes)).any())

        # -- lane sums → a stream of beats (one sum per lane), as the engine drains them ---
        sums = stream.Signature(output_layout(e)).create(path=("sums",))
        draining = Signal()
        t = Signal(range(c.lane_slots + 1))
        sums_last = Signal()
        advance = Signal()
        m.d.comb += advance.eq(~sums.valid | sums.ready)
        for i, lane in enumerate(lanes):
            m.d.comb += [lane.y_en.eq(advance), lane.y_addr.eq(t),
                         sums.payload.y[i].eq(lane.y_data)]
        m.d.comb += sums.payload.last.eq(sums_last)
        with m.If(advance):
            with m.If(draining & (t < step.slots)):
                m.d.sync += [sums.valid.eq(1), sums_last.eq(t == step.slots - 1), t.eq(t + 1)]
            with m.Else():
                m.d.sync += sums.valid.eq(0)
        with m.If(sums.valid & sums.ready & sums_last):
            m.d.sync += [draining.eq(0), sums_last.eq(0)]

        # -- requantization: a hidden step's results go straight into every lane's x
        # memory (its lanes have finished reading it), the last step's into the logits
        iw, ib = e.input_width, e.input_bits
        m.submodules.logits = logits = memory.Memory(shape=signed(OUTPUT_BITS),
                                                     depth=max(c.logit_depth, 2), init=[])
        logit_wr, logit_rd = logits.write_port(), logits.read_port()
        beat = Signal.like(sums.payload)
        lane_i = Signal(range(max(e.lanes, 2)))           # never zero-width
        k = Signal(range(c.table_depth + 1))
        issue = Signal()
        acc = Signal(signed(e.acc_width))
        m.d.comb += table_rd.addr.eq(k)
        # The last step's entries have mult 1 and shift 0: its clamp is the logits' range.
        out_hi = (1 << (OUTPUT_BITS - 1)) - 1
        in_hi = (1 << (ib - 1)) - 1
        lo = Mux(step.last, Const(-out_hi - 1, signed(OUTPUT_BITS)),
                 Mux(step.relu, 0, Const(-in_hi - 1, signed(ib))))
        hi = Mux(step.last, Const(out_hi, signed(OUTPUT_BITS)), Const(in_hi, signed(ib)))
        ok, dest, result = requant_pipeline(m, table_rd.data, issue, acc, e.acc_width, False,
                                            lo, hi, clamp_stage=True,
                                            **({"base": maps.offset, "skip": maps.skip}
                                               if conv else {}))
        m.d.comb += [logit_wr.en.eq(ok & step.last), logit_wr.addr.eq(dest),
                     logit_wr.data.eq(result)]
        sel = ceil_log2(iw)
        to_x = Signal(iw)
        m.d.comb += to_x.eq(Mux(ok & ~step.last & ~step.to_map, 1, 0)
                            << (dest[:sel] if sel else 0))
        x_addr, x_data = Signal.like(lanes[0].x_addr), Signal.like(lanes[0].x_data)
        m.d.comb += [x_addr.eq(dest >> sel), x_data.eq(Cat(*[result[:ib]] * iw))]
        if conv:
            # The requantizer writes the next map; the gather, a position's patch.
            m.d.comb += [maps.w_en.eq(ok & step.to_map), maps.w_addr.eq(dest),
                         maps.w_data.eq(result[:ib]), maps.cols.eq(step.cols),
                         maps.pools.eq(step.pools)]
            with m.If(maps.x_we.any()):
                m.d.comb += [to_x.eq(maps.x_we), x_addr.eq(maps.x_addr), x_data.eq(maps.x_data)]
        for lane in lanes:
            m.d.comb += [lane.x_we.eq(to_x), lane.x_addr.eq(x_addr), lane.x_data.eq(x_data)]

        # -- the logits out, rows in order --------------------------------------------------
        r = Signal(range(c.act_depth + 1))                  # row read
        w = Signal(range(c.act_depth + 1))                  # row sent
        m.d.comb += [logit_rd.addr.eq(r), logit_rd.en.eq(0), self.y.payload.y.eq(logit_rd.data),
                     self.y.payload.last.eq(w + 1 == step.rows)]

        in_word = Signal(range(e.x_depth + 1))
        retire = Signal(range(LANE_PIPELINE_DEPTH + 1))
        flush = Signal(range(REQUANT_PIPELINE_DEPTH + 3))

        held = Signal.like(self.x.payload)                 # an image beat being scattered
        slot = Signal(range(max(iw, 2)))
        kbase = Signal.like(k)
        p = Signal(range(c.gather_positions + 1 if conv else 2))

        def take_image_beat():
            """Take an image beat into `held` for SCATTER (conv-first networks)."""
            with m.If(self.x.valid):
                m.d.sync += [held.eq(self.x.payload), slot.eq(0)]
                m.next = "SCATTER"

        def tail_done():
            with m.Else():
                m.d.sync += flush.eq(REQUANT_PIPELINE_DEPTH + 2)      # + the clamp stages
                m.next = "FLUSH"

        with m.FSM(init="IDLE") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.x.ready.eq(1)
                m.d.sync += [pc.eq(0), k.eq(0)]
                for lane in lanes:
                    m.d.comb += lane.rewind.eq(1)
                if conv:
                    # Loading the gather's tables clears the scratchpad: wait for it.
                    m.d.comb += [maps.rewind.eq(1), self.x.ready.eq(~maps.clearing)]
                    with m.If(map_input & ~maps.clearing):
                        take_image_beat()
                with m.If(self.x.valid & self.x.ready & ~map_input):
                    mask = -1 if cell is None else cell.x_mask(self.x.payload, in_word)
                    for lane in lanes:
                        m.d.comb += [lane.x_we.eq(mask), lane.x_addr.eq(in_word),
                                     lane.x_data.eq(self.x.payload.x.as_value())]
                    m.d.sync += in_word.eq(Mux(self.x.payload.last, 0, in_word + 1))
                    with m.If(self.x.payload.last):
                        m.next = "FETCH"
            if conv:
                with m.State("SCATTER"):
                    m.d.comb += [maps.scatter.eq(1), maps.scatter_data.eq(held.x[slot])]
                    m.d.sync += slot.eq(slot + 1)
                    with m.If(slot == iw - 1):
                        m.next = "FETCH"
                        with m.If(~held.last):
                            m.next = "TAKE"
                with m.State("TAKE"):
                    m.d.comb += self.x.ready.eq(1)
                    take_image_beat()
            with m.State("FETCH"):                  # the program memory reads step `pc`
                m.next = "GO"
            with m.State("GO"):
                m.d.sync += step.eq(program_rd.data)
                if conv:
                    m.d.comb += maps.step_begin.eq(1)
                    m.d.sync += [kbase.eq(k), p.eq(0)]
                    for lane in lanes:
                        m.d.comb += lane.mark.eq(1)
                gathered = Signal()                 # the step gathers its input
                if conv:
                    m.d.comb += gathered.eq(program_rd.data.kind == StepKind.CONV)
                    with m.If(gathered):
                        m.next = "POSITION"
                with m.If(~gathered):
                    for lane in lanes:
                        m.d.comb += lane.start.eq(1)
                    m.next = "ISSUE"
            if conv:
                with m.State("POSITION"):           # the next position's entry, its patch
                    m.d.comb += [maps.position.eq(1), maps.gather.eq(1)]
                    m.next = "GATHER"
                with m.State("GATHER"):
                    with m.If(~maps.busy):
                        m.next = "RUN"
                with m.State("RUN"):
                    for lane in lanes:
                        m.d.comb += lane.start.eq(1)
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                with m.If(~any_active):
                    m.d.sync += retire.eq(LANE_PIPELINE_DEPTH)
                    m.next = "RETIRE"
            with m.State("RETIRE"):
                # The last beat's sum reaches its lane's y memory LANE_PIPELINE_DEPTH
                # cycles after the lane stops issuing.
                m.d.sync += retire.eq(retire - 1)
                with m.If(retire == 0):
                    # A layer keeps a weight (format.SparseLayer), so slots >= 1.
                    m.d.sync += [draining.eq(1), t.eq(0)]
                    m.next = "FILL"
                    if cell is not None:
                        with m.If(step.kind == StepKind.LSTM):
                            m.next = "CELL"
            requant_states(m, sums, beat, lane_i, k, issue, acc, e.lanes, step.table_end,
                           tail_done, gapless=True)
            with m.State("FLUSH"):
                m.d.sync += flush.eq(flush - 1)
                again = Signal()                    # a gathered step's next position
                if conv:
                    m.d.comb += again.eq((step.kind == StepKind.CONV) & (p + 1 < step.positions))
                    with m.If((flush == 1) & again):
                        # Its rows and table entries again.
                        m.d.sync += [p.eq(p + 1), k.eq(kbase)]
                        for lane in lanes:
                            m.d.comb += lane.again.eq(1)
                        m.next = "POSITION"
                    m.d.comb += maps.step_end.eq((flush == 1) & ~again)
                with m.If((flush == 1) & ~again):
                    m.d.sync += [r.eq(0), w.eq(0), pc.eq(pc + 1)]
                    m.next = "FETCH"
                    with m.If(step.last):
                        m.next = "READ"
            if cell is not None:
                with m.State("CELL"):
                    # The gate sums go to the cell, its h_t into the lanes' x memories.
                    with m.If(cell.state(m, sums, step, lanes, self.y)):
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "FETCH"
                        with m.If(step.last):
                            m.next = "IDLE"
            with m.State("READ"):                    # the logit memory reads row `r`
                m.d.comb += logit_rd.en.eq(1)
                m.d.sync += r.eq(r + 1)
                m.next = "SEND"
            with m.State("SEND"):                    # ... and holds it until it is taken
                m.d.comb += self.y.valid.eq(1)
                with m.If(self.y.valid & self.y.ready):
                    m.d.sync += w.eq(w + 1)
                    m.next = "READ"
                    with m.If(self.y.payload.last):
                        m.next = "IDLE"
        if in_banks:
            # The requantizer reads the table only while every lane is idle.
            owns = Cat(*(fsm.ongoing(s) for s in ("FILL", "APPLY", "TAIL", "FLUSH"))).any()
            for lane in lanes:
                m.d.comb += lane.bank_sel.eq(owns | table_load.valid)
        return m


class _BankedTable:
    """The requantizer table's read port when it lives in the lanes' banks."""

    def __init__(self, addr, data):
        self.addr, self.data = addr, data


def _banked_table(m: Module, lanes, load, depth: int, entry_l, share: int) -> _BankedTable:
    """The requantizer table in the lanes' beat banks: lane ``l`` holds bits
    ``[l * share, (l + 1) * share)`` of every entry (all but ``first``), written in order
    from ``load`` (``first`` restarts it) and read with a latency of one cycle, like
    :func:`~darbgen.hdl.network.requant_table`'s memory."""
    entry_bits = entry_l.size - 1
    loaded = Signal(range(depth + 1))
    at = Mux(load.payload.first, 0, loaded)
    with m.If(load.valid):
        m.d.sync += loaded.eq(at + 1)
    addr = Signal(range(max(depth, 2)))
    bits = Cat(load.payload.as_value()[:entry_bits], Const(0, share * len(lanes) - entry_bits))
    for i, lane in enumerate(lanes):
        m.d.comb += [lane.bank_addr.eq(Mux(load.valid, at, addr)), lane.bank_we.eq(load.valid),
                     lane.bank_wdata.eq(bits[i * share:(i + 1) * share])]
    data = Signal(entry_l)
    m.d.comb += data.as_value()[:entry_bits].eq(Cat(*(lane.bank_rdata for lane in lanes)))
    return _BankedTable(addr, data)
