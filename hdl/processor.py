"""The layer-sequenced processor: one set of lanes runs every layer of a network.

The contract (capacities, load words, program encoding) is
:class:`darbgen.processor.ProcessorConfig`; its module docstring says how the
memories are laid out. Per inference the sequencer walks the program:

* **IDLE** takes the input vector from ``x`` into every lane's x memory and rewinds
  the lanes and the table to their first row, beat and entry;
* per step: **FETCH** reads the step, **GO** takes it, **START** starts every lane on its
  rows of the layer (the :class:`~darbgen.hdl.engine.Lane` of the chain, sequenced: it
  runs up to its next end marker), **ISSUE** waits until no lane is issuing and
  **RETIRE** until the last sums are in the lanes' y memories;
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

import contextlib
from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..network import OUTPUT_BITS
from ..processor import ProcessorConfig, StepKind, Target, bank_regions
from .engine import Lane, lane_pipeline_depth, load_lanes
from .layouts import load_layout, output_layout, to_layout
from .network import _PIPELINE_DEPTH as REQUANT_PIPELINE_DEPTH
from .network import requant_pipeline, requant_states, requant_table, saturate
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
        Keep the processor's other memories in the lanes' beat banks, behind the beats,
        as :func:`darbgen.processor.bank_regions` places them (the requantizer table,
        the program and, with a gather and at least 3 lanes, the gather's tables and
        scratchpad), instead of in memories of their own; by default wherever the banks
        are SPRAM (on the UP5K those memories would take more block RAM than it has;
        docs/processor.md).

    Members
    -------
    load : In(stream.Signature(load_fields))
        Words of :func:`darbgen.processor.load_words` (always ready): ``target`` (a
        :class:`~darbgen.processor.Target`) picks the lanes, the requantizer table or
        the program. Taken as they come: present them from registers.
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
        # The sequencer's registers, made here (with the names they had) so that the
        # formal spec (formal/processor.py) can read them; so is the FSM, at elaboration.
        self._pc = Signal(range(config.max_steps + 1), name="pc")
        self._step = Signal(to_layout(config.step_fields), name="step")
        self._p = Signal(range(config.gather_positions + 1 if config.has_gather else 2),
                         name="p")
        self._fsm = None
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
        in_spram = uses_spram(platform) if self._spram is None else self._spram
        in_banks = in_spram if self._table_in_banks is None else self._table_in_banks
        # With the banks: every memory of `bank_regions` behind the beats.
        regions = bank_regions(c) if in_banks else {}
        depth = max((r.first + r.words for r in regions.values()), default=0)
        width = max((r.bits for r in regions.values()), default=0)
        lanes = [Lane(e, sequenced=True, slots=c.lane_slots, replay=conv, spram=self._spram,
                      bank_words=max(depth - c.lane_depth, 0), bank_width=width)
                 for _ in range(e.lanes)]
        for i, lane in enumerate(lanes):
            m.submodules[f"lane{i}"] = lane
        banks = _Banks(lanes, regions)
        if conv:
            from .processor_conv import MEMORIES, MapUnit
            m.submodules.maps = maps = MapUnit(c, banked="scratchpad" in regions)

        # -- loading: routed by target. Not registered here: the controller presents each
        # word from registers (hdl/device.py), and another copy cost 69 iCE40 logic cells.
        m.d.comb += self.load.ready.eq(1)
        valid, word = self.load.valid, self.load.payload
        lane_word = Signal(load_layout(e))
        m.d.comb += lane_word.eq(word.data[:len(lane_word.as_value())])
        load_lanes(m, lanes, valid & (word.target == Target.LANES), lane_word)
        table_l, step_l = to_layout(c.requant_fields), to_layout(c.step_fields)
        table_load = stream.Signature(table_l).create(path=("table_load",))
        program_load = stream.Signature(step_l).create(path=("program_load",))
        for port, target in ((table_load, Target.TABLE), (program_load, Target.PROGRAM)):
            m.d.comb += [port.valid.eq(valid & (word.target == target)),
                         port.payload.eq(word.data[:len(port.payload.as_value())])]
        # The requantizer reads its table only while every lane is idle; a step is
        # fetched only then.
        table_read, program_read = Signal(), Signal()
        if in_banks:
            table_rd = _banked_table(m, banks, table_load, c.table_depth, table_l, table_read)
        else:
            table_rd, _ = requant_table(m, table_load, c.table_depth, table_l)
        if "program" in regions:
            program_rd = _banked_table(m, banks, program_load, c.max_steps, step_l,
                                       program_read, name="program")
        else:
            program_rd, _ = requant_table(m, program_load, c.max_steps, step_l, name="program")
        # A network starting with a convolution takes its image into the scratchpad:
        # its program's first step says so (latched as the program is loaded).
        map_input = Signal()
        if conv:
            gather_l = maps.load.payload.shape()
            m.d.comb += [maps.load.valid.eq(valid & (word.target == Target.GATHER)),
                         maps.load.payload.eq(word.data[:gather_l.size]), maps.hold.eq(valid)]
            with m.If(program_load.valid & program_load.payload.first):
                m.d.sync += map_input.eq(program_load.payload.kind == StepKind.CONV)
            if "scratchpad" in regions:
                for name in MEMORIES:
                    port = getattr(maps, f"{name}_mem")
                    m.d.comb += port.rdata.eq(banks.client(name, port.addr, port.en, port.we,
                                                           port.wdata))
        # The LSTM cell (None without one): its table loads from target CELL.
        cell = lstm_unit(m, c, valid & (word.target == Target.CELL), word.data, program_load,
                         platform)

        # -- the step being run ----------------------------------------------------------
        pc, step = self._pc, self._step
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
        if "logits" in regions:
            # In the banks (their low halves): written by the last step's requantizer,
            # read as they are sent.
            at = range(max(c.logit_depth, 2))
            logit_wr = SimpleNamespace(en=Signal(), addr=Signal(at, name="logit_waddr"),
                                       data=Signal(signed(OUTPUT_BITS), name="logit_wdata"))
            logit_rd = SimpleNamespace(en=Signal(), addr=Signal(at, name="logit_raddr"))
            logit_rd.data = _banked(m, banks, "logits", c.logit_depth, OUTPUT_BITS,
                                    logit_wr.en, logit_wr.addr, logit_wr.data,
                                    logit_rd.en, logit_rd.addr)
        else:
            m.submodules.logits = logits = memory.Memory(shape=signed(OUTPUT_BITS),
                                                         depth=max(c.logit_depth, 2), init=[])
            logit_wr, logit_rd = logits.write_port(), logits.read_port()
        lane_i = Signal(range(max(e.lanes, 2)))           # never zero-width
        k = Signal(range(c.table_depth + 1))
        issue = Signal()
        acc = Signal(signed(e.acc_width))
        m.d.comb += table_rd.addr.eq(k)
        # The last step's entries have mult 1 and shift 0: its clamp is the logits' range.
        def clamp(v):
            return Mux(step.last, saturate(v, OUTPUT_BITS), saturate(v, ib, step.relu))

        ok, dest, result = requant_pipeline(m, table_rd.data, issue, acc, e.acc_width, False,
                                            None, None, clamp_stage=True, clamp=clamp,
                                            **({"base": maps.offset, "skip": maps.skip}
                                               if conv else {}))
        m.d.comb += [logit_wr.en.eq(ok & step.last), logit_wr.addr.eq(dest),
                     logit_wr.data.eq(result)]
        sel = ceil_log2(iw)
        to_x = Signal(iw)
        m.d.comb += to_x.eq(Mux(ok & ~step.last & ~(step.to_map if conv else 0), 1, 0)
                            << (dest[:sel] if sel else 0))
        x_addr, x_data = Signal.like(lanes[0].x_addr), Signal.like(lanes[0].x_data)
        m.d.comb += [x_addr.eq(dest >> sel), x_data.eq(Cat(*[result[:ib]] * iw))]
        # Every writer of the lanes' x memories (the input, the requantizer, the gather,
        # the LSTM cell) writes `x_port`; where the beat banks are block RAM the lanes see
        # it a cycle later, from registers: the gather's maximum, through the choice of
        # writer, into the 32 lanes' x block RAMs limited the ULX3S processor (on the
        # iCE40 the 27 flip-flops would cost logic cells it does not have). Each writer is
        # done a cycle or more before the lanes read x (two cycles after FETCH at least).
        names = ("x_we", "x_addr", "x_data")
        x_port = SimpleNamespace(x_we=Signal.like(to_x, name="x_we"),
                                 x_addr=Signal.like(x_addr, name="x_waddr"),
                                 x_data=Signal.like(x_data, name="x_wdata"))
        x_reg = x_port
        if not in_spram:
            x_reg = SimpleNamespace(**{n: Signal.like(getattr(x_port, n), name=f"{n}_q")
                                       for n in names})
            m.d.sync += [getattr(x_reg, n).eq(getattr(x_port, n)) for n in names]
        if conv:
            # The requantizer writes the next map; the gather, a position's patch.
            m.d.comb += [maps.w_en.eq(ok & step.to_map), maps.w_addr.eq(dest),
                         maps.w_data.eq(result[:ib]), maps.cols.eq(step.cols),
                         maps.pools.eq(step.pools)]
            with m.If(maps.x_we.any()):
                m.d.comb += [to_x.eq(maps.x_we), x_addr.eq(maps.x_addr), x_data.eq(maps.x_data)]
        m.d.comb += [x_port.x_we.eq(to_x), x_port.x_addr.eq(x_addr),
                     x_port.x_data.eq(x_data)]
        for lane in lanes:
            m.d.comb += [lane.x_we.eq(x_reg.x_we), lane.x_addr.eq(x_reg.x_addr),
                         lane.x_data.eq(x_reg.x_data)]

        # -- the logits out, rows in order --------------------------------------------------
        r = Signal(range(c.act_depth + 1))                  # row read
        w = Signal(range(c.act_depth + 1))                  # row sent
        m.d.comb += [logit_rd.addr.eq(r), logit_rd.en.eq(0), self.y.payload.y.eq(logit_rd.data),
                     self.y.payload.last.eq(w + 1 == step.rows)]

        in_word = Signal(range(e.x_depth + 1))
        lane_latency = lane_pipeline_depth(self._spram, platform)
        retire = Signal(range(lane_latency + 1))
        flush = Signal(range(REQUANT_PIPELINE_DEPTH + 3))

        held = Signal.like(self.x.payload)                 # an image beat being scattered
        slot = Signal(range(max(iw, 2)))
        kbase = Signal.like(k)
        p = self._p
        # A gathered step's position but its last: the lanes stay on the step's first
        # rows, and the step goes on at the next position.
        more_positions = Signal()
        if conv:
            m.d.comb += more_positions.eq((step.kind == StepKind.CONV)
                                          & (p + 1 < step.positions))
            for lane in lanes:
                m.d.comb += lane.repeat.eq(more_positions)

        def take_image_beat():
            """Take an image beat into `held` for SCATTER (conv-first networks)."""
            with m.If(self.x.valid):
                m.d.sync += [held.eq(self.x.payload), slot.eq(0)]
                m.next = "SCATTER"

        # The lanes' start, from a register set on the way into START (or RUN): decoded
        # from the state and the step read, it reached every lane's issue logic and
        # header address through the whole ULX3S part (a cycle per step).
        starting = Signal()
        for lane in lanes:
            m.d.comb += lane.start.eq(starting)

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
                    m.d.comb += [x_port.x_we.eq(mask), x_port.x_addr.eq(in_word),
                                 x_port.x_data.eq(self.x.payload.x.as_value())]
                    m.d.sync += in_word.eq(Mux(self.x.payload.last, 0, in_word + 1))
                    with m.If(self.x.payload.last):
                        m.next = "FETCH"
            if conv:
                with m.State("SCATTER"):
                    m.d.comb += [maps.scatter.eq(1), maps.scatter_data.eq(held.x[slot])]
                    m.d.sync += slot.eq(slot + 1)
                    with m.If(slot == iw - 1):
                        m.next = "SCATTERED"
                        with m.If(~held.last):
                            m.next = "TAKE"
                with m.State("SCATTERED"):
                    # The image's last element is written now, in the scratchpad's bank,
                    # which FETCH's program read may need.
                    m.next = "FETCH"
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
                    m.d.sync += starting.eq(1)
                    m.next = "START"
            if conv:
                with m.State("POSITION"):           # the next position's entry, its patch
                    m.d.comb += [maps.position.eq(1), maps.gather.eq(1)]
                    m.next = "GATHER"
                with m.State("GATHER"):
                    with m.If(~maps.busy):
                        m.d.sync += starting.eq(1)
                        m.next = "RUN"
                with m.State("RUN"):                # the lanes start (`starting`)
                    m.d.sync += starting.eq(0)
                    m.next = "ISSUE"
            with m.State("START"):                  # the lanes start (`starting`)
                m.d.sync += starting.eq(0)
                m.next = "ISSUE"
            with m.State("ISSUE"):
                with m.If(~any_active):
                    m.d.sync += retire.eq(lane_latency)
                    m.next = "RETIRE"
            with m.State("RETIRE"):
                # The last beat's sum reaches its lane's y memory `lane_latency`
                # cycles after the lane stops issuing.
                m.d.sync += retire.eq(retire - 1)
                with m.If(retire == 0):
                    # A layer keeps a weight (format.SparseLayer), so slots >= 1.
                    m.d.sync += [draining.eq(1), t.eq(0)]
                    m.next = "FILL"
                    if cell is not None:
                        with m.If(step.kind == StepKind.LSTM):
                            m.next = "CELL"
            requant_states(m, sums, None, lane_i, k, issue, acc, e.lanes, step.table_end,
                           tail_done, gapless=True, in_place=True)
            with m.State("FLUSH"):
                m.d.sync += flush.eq(flush - 1)
                again = Signal()                    # a gathered step's next position
                if conv:
                    # Registered (p and the step hold while FLUSH counts down): its compare
                    # reached every lane's `again` through the whole ULX3S part.
                    m.d.sync += again.eq(more_positions)
                    with m.If((flush == 1) & again):
                        # Its rows and table entries again.
                        m.d.sync += [p.eq(p + 1), k.eq(kbase)]
                        for lane in lanes:
                            m.d.comb += lane.again.eq(1)
                        m.next = "POSITION"
                with m.If((flush == 1) & ~again):
                    m.d.sync += [r.eq(0), w.eq(0), pc.eq(pc + 1)]
                    m.next = "FETCH"
                    with m.If(step.last):
                        m.next = "READ"
            if cell is not None:
                with m.State("CELL"):
                    # The gate sums go to the cell, its h_t into the lanes' x memories.
                    with m.If(cell.state(m, sums, step, [x_port], self.y)):
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
        m.d.comb += [table_read.eq(Cat(*(fsm.ongoing(s) for s in ("FILL", "APPLY", "TAIL",
                                                                  "FLUSH"))).any()),
                     program_read.eq(fsm.ongoing("FETCH"))]
        banks.route(m)
        self._fsm = fsm
        return m


class _Banks:
    """The lanes' banks shared by the processor's memories
    (:func:`darbgen.processor.bank_regions`): each memory asks for its banks with
    :meth:`client`; the sequencer never lets two ask for one bank in the same cycle (where
    two could, the first to call wins)."""

    def __init__(self, lanes, regions: dict):
        self._lanes, self.regions = lanes, regions
        self._asks = [[] for _ in lanes]

    def client(self, name: str, addr, en, we, wdata):
        """Region ``name``'s port: ``en`` reads (or with ``we`` writes) entry ``addr``;
        returns the entry read a cycle earlier (``width`` bits of the region and more)."""
        r = self.regions[name]
        data = Cat(wdata, Const(0, r.width))
        for j, b in enumerate(r.banks):
            self._asks[b].append((en, r.first + addr, we, data[j * r.bits:(j + 1) * r.bits]))
        return Cat(*(self._lanes[b].bank_rdata[:r.bits] for b in r.banks))

    def route(self, m: Module) -> None:
        """Give each bank to the memory that asks for it (else to its lane). The last to
        ask drives the bank's port when none does (the lane ignores it then): a zero
        default cost a LUT per address and data bit."""
        for lane, asks in zip(self._lanes, self._asks):
            if not asks:
                continue
            m.d.comb += lane.bank_sel.eq(Cat(*(ask[0] for ask in asks)).any())
            for i, (en, addr, we, wdata) in enumerate(asks[::-1]):
                with m.If(en) if i else contextlib.nullcontext():
                    m.d.comb += [lane.bank_addr.eq(addr), lane.bank_we.eq(we),
                                 lane.bank_wdata.eq(wdata)]


class _BankedTable:
    """A table's read port when it lives in the lanes' banks."""

    def __init__(self, addr, data):
        self.addr, self.data = addr, data


def _banked_table(m: Module, banks: _Banks, load, depth: int, entry_l, read,
                  name: str = "table") -> _BankedTable:
    """Table ``name`` (the requantizer's or the program) in the lanes' banks (:func:`_banked`),
    its entries (all but ``first`` for the requantizer's) written in order from ``load``
    (``first`` restarts it) and read at ``addr`` while ``read``, with a latency of one
    cycle like :func:`~darbgen.hdl.network.requant_table`'s memory."""
    bits = entry_l.size - (name == "table")
    loaded = Signal(range(depth + 1), name=f"{name}_loaded")
    at = Mux(load.payload.first, 0, loaded)
    with m.If(load.valid):
        m.d.sync += loaded.eq(at + 1)
    addr = Signal(range(max(depth, 2)), name=f"{name}_addr")
    data = Signal(entry_l, name=f"{name}_entry")
    m.d.comb += data.as_value()[:bits].eq(_banked(m, banks, name, depth, bits, load.valid, at,
                                                  load.payload.as_value()[:bits], read, addr))
    return _BankedTable(addr, data)


def _banked(m: Module, banks: _Banks, name: str, depth: int, width: int, we, waddr, wdata,
            re, raddr):
    """Memory ``name`` (``depth`` entries of ``width`` bits) in the lanes' banks, at its
    :func:`~darbgen.processor.bank_regions` region: ``we`` writes ``wdata`` at ``waddr``,
    ``re`` reads ``raddr``; returns the entry read a cycle earlier, held until the next
    read of its banks (a lane reads its bank only while it issues). The bits its banks
    do not hold (the region's ``rest``) go to a memory of their own."""
    region = banks.regions[name]
    kept = width - region.rest
    got = banks.client(name, Mux(we, waddr, raddr), we | re, we, wdata[:kept])[:kept]
    data = Signal(width, name=f"{name}_data")
    m.d.comb += data[:kept].eq(got)
    if region.rest:
        m.submodules[f"{name}_rest"] = mem = memory.Memory(shape=region.rest,
                                                           depth=max(depth, 2), init=[])
        wr, rd = mem.write_port(), mem.read_port()
        m.d.comb += [wr.addr.eq(waddr), wr.data.eq(wdata[kept:]), wr.en.eq(we),
                     rd.addr.eq(raddr), rd.en.eq(re), data[kept:].eq(rd.data)]
    return data
