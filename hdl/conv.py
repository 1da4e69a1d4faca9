"""Convolutions on chip: im2col gathers between the engines of a network.

A convolution runs on the ordinary engine, one matrix-vector product per output
position over that position's patch (:mod:`darbgen.conv`). The patches are gathered on
chip, from an activation buffer, by address tables that the host computes once per
network and loads like the weights (:func:`darbgen.network.load_words`):

* :class:`Gather` owns the buffer (a feature map before pooling, with a zero border
  for the consumer's padding: :class:`darbgen.conv.MapBuffer`) and emits the engine's
  input vectors: element ``e`` of the vector of position ``q`` is the maximum, over the
  pool window ``d``, of ``buffer[base[q] + offset[e] + pool[d]]``. One read per cycle
  per element of an input beat, stalled by the engine's ``ready``.
* :class:`InputGather` writes the network's input image into the buffer (one element
  per cycle, at ``source[i]``) and gathers engine 0's patches.
* :class:`MapRequantizer` is the requantizer of a layer whose output feeds a gather:
  for each of its ``positions`` output vectors it requantizes the engine's sums (the
  same pipeline as :class:`~darbgen.hdl.network.Requantizer`) and writes channel ``f``
  of position ``p`` at ``dest[f] + source[p]`` (``skip``: a position no pool window
  uses); after the last position it starts its gather.

Each buffer is double: the producer writes image ``n + 1`` into one half while the
gather emits image ``n`` from the other, so a stage's time per image is the larger of
the two, not their sum. The buffer is cleared when its table is (re)loaded, so the
border is zero.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect
from amaranth.utils import ceil_log2

from ..network import NetworkConfig
from .layouts import output_layout, to_layout
from .network import _PIPELINE_DEPTH, requant_pipeline, requant_states, requant_table

__all__ = ["Gather", "InputGather", "MapRequantizer"]


class Gather(wiring.Component):
    """The activation buffer in front of engine ``index`` and its im2col emitter.

    Parameters
    ----------
    config : NetworkConfig
    index : int
        The engine it feeds; ``config.gathers[index]`` sizes it.

    Members
    -------
    load : In(stream.Signature(gather fields))
        Table entries (always ready), sections in
        :meth:`~darbgen.network.NetworkConfig.gather_sections` order; ``first`` restarts
        the table and clears the buffer.
    src_index : In
        Read address of the ``source`` section (write offsets).
    src_addr, src_skip : Out
        ``source[src_index]`` one cycle later.
    w_en, w_addr, w_data : In
        The owner's buffer writes, into the half it fills (ignored while clearing).
    start : In(1)
        The half being filled holds a whole image: emit it, and fill the other half.
        Only while ``ready``.
    clearing : Out(1)
        The buffer is being cleared: the owner must not write.
    ready : Out(1)
        Not clearing, and the previous image has been emitted: ``start`` is allowed.
    out : Out(stream.Signature(engine input fields))
        The engine's input beats, ``last`` on each vector's final beat.
    """

    def __init__(self, config: NetworkConfig, index: int):
        self._config, self._index = config, index
        g, e = config.gathers[index], config.engines[index]
        super().__init__({
            "load": In(stream.Signature(to_layout(g.fields))),
            "src_index": In(range(max(g.sources, 2))),
            "src_addr": Out(g.addr_bits), "src_skip": Out(1),
            "w_en": In(1), "w_addr": In(g.addr_bits), "w_data": In(signed(e.input_bits)),
            "start": In(1), "clearing": Out(1), "ready": Out(1),
            "out": Out(stream.Signature(to_layout(e.input_fields))),
        })

    def elaborate(self, platform):
        m = Module()
        c, j = self._config, self._index
        g, e = c.gathers[j], c.engines[j]
        per, words, abits = e.input_width, e.x_depth, g.addr_bits
        sources, positions, cols, pool = c.gather_sections(j)
        elem = signed(e.input_bits)

        # Two halves: `wpar` is the one the owner fills, `rpar` the one being emitted.
        m.submodules.act = act = memory.Memory(shape=elem, depth=2 * g.depth, init=[])
        # Depths of at least 2: a one-entry memory would get a zero-width address.
        m.submodules.src = src = memory.Memory(shape=unsigned(abits + 1),
                                               depth=max(sources, 2), init=[])
        m.submodules.bases = bases = memory.Memory(shape=abits, depth=max(positions, 2), init=[])
        m.submodules.pools = pools = memory.Memory(shape=abits, depth=max(pool, 2), init=[])
        offs = []
        for s in range(per):            # column e lives in memory e % per, at e // per
            m.submodules[f"offs{s}"] = mem = memory.Memory(shape=abits, depth=max(words, 2),
                                                           init=[])
            offs.append(mem)

        # -- the tables, written in order; `first` also starts clearing the buffer -------
        total = sources + positions + cols + pool
        loaded = Signal(range(total + 1))
        at = Signal(range(total + 1))
        word = self.load.payload
        m.d.comb += [self.load.ready.eq(1), at.eq(Mux(word.first, 0, loaded))]
        with m.If(self.load.valid):
            m.d.sync += loaded.eq(at + 1)

        def section(mem, start, size, index, data):
            port = mem.write_port()
            inside = (at < size) if start == 0 else (at >= start) & (at < start + size)
            m.d.comb += [port.en.eq(self.load.valid & inside),
                         port.addr.eq(index), port.data.eq(data)]

        local = Signal(range(total + 1))
        shift = ceil_log2(per)
        section(src, 0, sources, at, word.addr | (word.skip << abits))
        section(bases, sources, positions, at - sources, word.addr)
        m.d.comb += local.eq(at - (sources + positions))
        for s, mem in enumerate(offs):
            port = mem.write_port()
            m.d.comb += [port.en.eq(self.load.valid & (at >= sources + positions)
                                    & (at < sources + positions + cols)
                                    & (local[:shift] == s if shift else 1)),
                         port.addr.eq(local >> shift), port.data.eq(word.addr)]
        section(pools, sources + positions + cols, pool, at - (sources + positions + cols),
                word.addr)

        src_rd = src.read_port()
        m.d.comb += [src_rd.addr.eq(self.src_index), self.src_addr.eq(src_rd.data[:abits]),
                     self.src_skip.eq(src_rd.data[abits])]

        clearing = self.clearing
        clear_at = Signal(range(2 * g.depth))
        wpar, rpar = Signal(), Signal()
        act_wr = act.write_port()
        with m.If(self.load.valid & word.first):
            m.d.sync += [clearing.eq(1), clear_at.eq(0), wpar.eq(0)]
        with m.Elif(clearing):
            m.d.sync += clear_at.eq(clear_at + 1)
            with m.If(clear_at == 2 * g.depth - 1):
                m.d.sync += clearing.eq(0)
        m.d.comb += [act_wr.en.eq(Mux(clearing, 1, self.w_en)),
                     act_wr.addr.eq(Mux(clearing, clear_at,
                                        self.w_addr + Mux(wpar, g.depth, 0))),
                     act_wr.data.eq(Mux(clearing, 0, self.w_data))]

        # -- emit: stage 0 issues (q, w, d), 1 adds the address, 2 takes the maximum -----
        # Every stage holds while the output beat waits: `advance` enables them all.
        emitting, issued = Signal(), Signal()
        m.d.comb += self.ready.eq(~clearing & ~emitting)
        advance = Signal()
        m.d.comb += advance.eq(~self.out.valid | self.out.ready)
        q = Signal(range(max(positions, 2)))
        w = Signal(range(max(words, 2)))
        d = Signal(range(max(pool, 2)))
        issue = Signal()
        m.d.comb += issue.eq(emitting & ~issued)
        base_rd, pool_rd = bases.read_port(), pools.read_port()
        off_rd = [mem.read_port() for mem in offs]
        m.d.comb += [base_rd.addr.eq(q), pool_rd.addr.eq(d), base_rd.en.eq(advance),
                     pool_rd.en.eq(advance)]
        for port in off_rd:
            m.d.comb += [port.addr.eq(w), port.en.eq(advance)]
        with m.If(self.start):
            m.d.sync += [emitting.eq(1), issued.eq(0), q.eq(0), w.eq(0), d.eq(0),
                         rpar.eq(wpar), wpar.eq(~wpar)]
        with m.Elif(advance & issue):
            with m.If(d == pool - 1):
                m.d.sync += d.eq(0)
                with m.If(w == words - 1):
                    m.d.sync += w.eq(0)
                    with m.If(q == positions - 1):
                        m.d.sync += issued.eq(1)
                    with m.Else():
                        m.d.sync += q.eq(q + 1)
                with m.Else():
                    m.d.sync += w.eq(w + 1)
            with m.Else():
                m.d.sync += d.eq(d + 1)

        # Columns past `cols` (the last beat's padding) are sent as 0.
        pad_from = cols - (words - 1) * per
        v1, first1, last_d1, last_w1 = Signal(), Signal(), Signal(), Signal()
        v2, first2, last_d2, last_w2 = Signal(), Signal(), Signal(), Signal()
        with m.If(advance):
            m.d.sync += [v1.eq(issue), first1.eq(d == 0), last_d1.eq(d == pool - 1),
                         last_w1.eq(w == words - 1),
                         v2.eq(v1), first2.eq(first1), last_d2.eq(last_d1), last_w2.eq(last_w1)]
        act_rd = [act.read_port() for _ in range(per)]
        best = [Signal(elem, name=f"best{s}") for s in range(per)]
        half = Mux(rpar, g.depth, 0)
        for s in range(per):
            m.d.comb += [act_rd[s].addr.eq(base_rd.data + off_rd[s].data + pool_rd.data + half),
                         act_rd[s].en.eq(advance)]
            value = act_rd[s].data
            if s >= pad_from:
                value = Mux(last_w2, 0, value)
            top = Mux(first2 | (value > best[s]), value, best[s])
            with m.If(advance & v2):
                m.d.sync += best[s].eq(top)
                with m.If(last_d2):
                    m.d.sync += self.out.payload.x[s].eq(top)
        with m.If(advance):
            m.d.sync += [self.out.valid.eq(v2 & last_d2), self.out.payload.last.eq(last_w2)]
        with m.If(emitting & issued & ~v1 & ~v2 & ~self.out.valid):
            m.d.sync += emitting.eq(0)
        return m


class InputGather(wiring.Component):
    """The network's input image into gather 0's buffer, and engine 0's patches out.

    Members
    -------
    load : In(stream.Signature(gather 0 fields))
    x : In(stream.Signature(engine 0 input fields))
        The image, flattened channel-major, ``last`` on its final beat.
    out : Out(stream.Signature(engine 0 input fields))
    """

    def __init__(self, config: NetworkConfig):
        self._config = config
        g, e = config.gathers[0], config.engines[0]
        super().__init__({
            "load": In(stream.Signature(to_layout(g.fields))),
            "x": In(stream.Signature(to_layout(e.input_fields))),
            "out": Out(stream.Signature(to_layout(e.input_fields))),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        g, e = c.gathers[0], c.engines[0]
        per = e.input_width
        m.submodules.gather = gather = Gather(c, 0)
        connect(m, wiring.flipped(self.load), gather.load)
        connect(m, gather.out, wiring.flipped(self.out))

        beat = Signal.like(self.x.payload)
        element = Signal(range(g.sources + per + 1))       # of the image
        slot = Signal(range(max(per, 2)))
        wv, wd = Signal(), Signal(signed(e.input_bits))
        # source[element] arrives a cycle after its index: the write follows then.
        m.d.comb += [gather.src_index.eq(element), gather.w_en.eq(wv),
                     gather.w_addr.eq(gather.src_addr), gather.w_data.eq(wd)]
        m.d.sync += wv.eq(0)
        with m.FSM():
            with m.State("RECEIVE"):
                m.d.comb += self.x.ready.eq(~gather.clearing)
                with m.If(self.x.valid & ~gather.clearing):
                    m.d.sync += [beat.eq(self.x.payload), slot.eq(0)]
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.sync += [wv.eq(element < g.sources), wd.eq(beat.x[slot]),
                             element.eq(element + 1), slot.eq(slot + 1)]
                with m.If(slot == per - 1):
                    with m.If(beat.last):
                        m.next = "LAST"
                    with m.Else():
                        m.next = "RECEIVE"
            with m.State("LAST"):
                # The image's final element is written in the first cycle here; hand
                # the half over once the previous image has been emitted.
                with m.If(gather.ready):
                    m.d.comb += gather.start.eq(1)
                    m.d.sync += element.eq(0)
                    m.next = "RECEIVE"
        return m


class MapRequantizer(wiring.Component):
    """Requantizer ``index`` when its layer's output feeds a gather (a convolution, or
    the layer before one): every output position's results go into the buffer of gather
    ``index + 1``, which then emits engine ``index + 1``'s input vectors.

    Members
    -------
    load : In(stream.Signature(requant_fields))
        Table entries; ``dest`` is a buffer address (channel plane or element).
    gather_load : In(stream.Signature(gather fields))
        Gather ``index + 1``'s table.
    y : In(stream.Signature(output_layout(engine)))
    out : Out(stream.Signature(next engine's input fields))
    """

    def __init__(self, config: NetworkConfig, index: int):
        self._config, self._index = config, index
        g = config.gathers[index + 1]
        super().__init__({
            "load": In(stream.Signature(to_layout(config.requant_fields(index)))),
            "gather_load": In(stream.Signature(to_layout(g.fields))),
            "y": In(stream.Signature(output_layout(config.engines[index]))),
            "out": Out(stream.Signature(to_layout(config.engines[index + 1].input_fields))),
        })

    def elaborate(self, platform):
        m = Module()
        c, i = self._config, self._index
        src, dst = c.engines[i], c.engines[i + 1]
        vectors = c.gathers[i + 1].sources           # output positions per image
        hi = (1 << (dst.input_bits - 1)) - 1
        lo = 0 if c.relu[i] else -hi - 1
        m.submodules.gather = gather = Gather(c, i + 1)
        connect(m, wiring.flipped(self.gather_load), gather.load)
        connect(m, gather.out, wiring.flipped(self.out))
        positions = c.positions(i)
        table_rd, loaded = requant_table(m, self.load, positions, to_layout(c.requant_fields(i)))
        beat = Signal.like(self.y.payload)
        lane = Signal(range(src.lanes))
        k = Signal(range(positions + 1))
        p = Signal(range(max(vectors, 2)))
        issue = Signal()
        acc = Signal(signed(src.acc_width))
        # The table entry and the position's write offset are read in the same cycle.
        m.d.comb += [table_rd.addr.eq(k), gather.src_index.eq(p)]
        ok, dest, result = requant_pipeline(m, table_rd.data, issue, acc, src.acc_width, False,
                                            lo, hi, base=gather.src_addr, skip=gather.src_skip)
        m.d.comb += [gather.w_en.eq(ok), gather.w_addr.eq(dest), gather.w_data.eq(result)]

        flush = Signal(range(_PIPELINE_DEPTH + 1))

        def tail_done():
            """A position's table is done: the next position, or after the last the flush."""
            with m.Elif(p == vectors - 1):
                m.d.sync += flush.eq(_PIPELINE_DEPTH)
                m.next = "FLUSH"
            with m.Else():
                m.d.sync += [p.eq(p + 1), k.eq(0)]
                m.next = "FILL"

        with m.FSM():
            requant_states(m, self.y, beat, lane, k, issue, acc, src.lanes, loaded, tail_done,
                           can_take=~gather.clearing)
            with m.State("FLUSH"):
                # The last write lands as `flush` reaches 0; then the half is handed
                # over once the gather has emitted the previous image.
                with m.If(flush != 0):
                    m.d.sync += flush.eq(flush - 1)
                with m.Elif(gather.ready):
                    m.d.comb += gather.start.eq(1)
                    m.d.sync += [p.eq(0), k.eq(0)]
                    m.next = "FILL"
        return m
