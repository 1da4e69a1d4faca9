"""Formal check of the whole engine against a naive reference: every loaded weight is
multiplied exactly once, with the right input element, into the right output.

:class:`EngineSpec` takes a layer's *skeleton*, what the engine's control depends on
(the width, each row's block size and keep count, the rows' assignment to lanes by
:func:`darbgen.packing.schedule`), and makes everything else free (``AnyConst``):

* every weight's value (full range) and in-block offset (anywhere inside its, possibly
  partial, block; repeats allowed);
* every element of every input vector, the padding past ``cols`` included.

It loads the layer through the engine's ``load`` port with the words of
:func:`darbgen.packing.load_words` (headers as packed by it, each beat word's data
replaced by the symbolic value and offset), streams the vectors through ``x`` after the
load (as the device does: RUN follows LOAD_WEIGHTS) and checks every ``y`` beat.

The reference is the artifact's contract written out with no counter, pipeline or
memory: row ``r``'s result is ``sum value[i] * x[(block[i] << log2 b_r) | offset[i]]``
over its entries ``i``, with ``block`` = :attr:`darbgen.format.SparseLayer.entry_blocks`.
Output beat ``t`` must carry, in lane ``l``, the result of the row that
:meth:`darbgen.packing.Schedule.output_map` places there, ``last`` must mark each
vector's final beat, and no beat may follow the last vector. With values and inputs
free, a weight dropped, repeated, paired with another input element or added into
another row is a counterexample.

This is a bounded check (sby ``bmc``): for the given skeleton it covers every value,
offset and input, over every trace of ``depth`` cycles. ``stalls`` chooses the
handshakes: ``"none"`` (always offered and accepted) and ``"periodic"`` (a fixed
pattern of idle cycles and back-pressure) are single traces in time, and the spec also
asserts that every vector has come out by the last cycle, so the check cannot pass by
stopping short; ``"any"`` leaves idle cycles and back-pressure free in every cycle
(``AnySeq``), and a ``cover`` run shows a complete run fits in the depth.
"""

from __future__ import annotations

import numpy as np
from amaranth.asserts import AnyConst, AnySeq, Initial
from amaranth.hdl import Array, Assert, Assume, Cat, Const, Cover, Signal

from darbgen.config import EngineConfig, layout_width
from darbgen.format import SparseLayer
from darbgen.hdl import SpMVEngine
from darbgen.hdl.layouts import beat_layout, to_shape
from darbgen.packing import load_words, schedule, unpack_fields

from .sby import FormalSpec

__all__ = ["EngineSpec", "skeleton", "FORMAL_ENGINE", "ENGINE_LAYERS", "STALLS"]

STALLS = ("none", "periodic", "any")


def skeleton(name: str, cols: int, rows) -> SparseLayer:
    """A layer with the given rows ``[(block_size, keep), ...]``: the first ``keep``
    offsets of each block and weight 1 (the spec replaces both by free values)."""
    b = np.array([r[0] for r in rows])
    k = np.array([r[1] for r in rows])
    offsets = []
    for size, keep in rows:
        for start in range(0, cols, size):
            offsets.extend(range(min(keep, size, cols - start)))
    return SparseLayer(name=name, rows=len(rows), cols=cols, block_sizes=b, keep=k,
                       offsets=np.array(offsets, dtype=np.int64),
                       values=np.ones(len(offsets), dtype=np.int64), scale=1.0, weight_bits=2)


#: The engine checked: 2 lanes of 2 rows and 8 beats, b in {2, 4}, k <= 2, up to 6
#: columns. Weights and inputs are 2-bit: the schedule does not depend on the datapath
#: width, and narrow multipliers keep the solver fast.
FORMAL_ENGINE = EngineConfig(lanes=2, shifts=(1, 2), max_keep=2, max_row_nnz=6, max_cols=6,
                             lane_depth=8, lane_rows=2, weight_bits=2, input_bits=2,
                             input_width=2)

#: Layer skeletons checked, by name.
ENGINE_LAYERS = {
    # both lanes full: two rows each, 8 and 7 beats, b = 2 and 4, k = 1 and 2
    "two-full-lanes": skeleton("two-full-lanes", 6, [(2, 2), (4, 1), (2, 1), (4, 2)]),
    # partial last blocks (5 columns), an empty row (k = 0: no lane, output 0)
    "partial-blocks": skeleton("partial-blocks", 5, [(4, 2), (2, 1), (2, 2), (2, 0)]),
    # one row of one block: lane 1 holds nothing
    "one-row": skeleton("one-row", 3, [(4, 1)]),
}


class EngineSpec(FormalSpec):
    """A layer skeleton with free weights, offsets and inputs through the engine, each
    output beat checked against the naive reference.

    Parameters
    ----------
    config : EngineConfig
    layer : SparseLayer
        Its rows' block sizes and keep counts, its width and its schedule are used; its
        values and offsets are not.
    vectors : int
        Input vectors run back to back (2 uses both halves of the double buffers).
    stalls : {"none", "periodic", "any"}
    depth : int, optional
        For ``"none"`` and ``"periodic"``: assert that every vector has come out by this
        many cycles (the sby depth).

    Raises
    ------
    darbgen.config.ConfigError
        The layer does not fit ``config``.
    ValueError
        Unknown ``stalls``.
    """

    def __init__(self, config: EngineConfig, layer: SparseLayer, *, vectors: int = 2,
                 stalls: str = "none", depth: int | None = None):
        super().__init__()
        # Amaranth warns about an elaboratable that is never used; one refused by its
        # constructor never is, so the warning is off until the arguments are accepted.
        self._MustUse__silence = True
        if stalls not in STALLS:
            raise ValueError(f"stalls must be one of {', '.join(STALLS)}, not {stalls!r}")
        self.config = config
        self.layer = layer
        self.schedule = schedule(layer, config.lanes)
        # packing's own words: also checks that the layer fits the engine
        self.words = load_words(layer, config, self.schedule)
        self.vectors = vectors
        self.stalls = stalls
        self.depth = depth
        self._MustUse__silence = False

    def _load_words(self, value, offset):
        """packing.load_words with each beat word's data made of the free value and offset.

        Beats travel per lane, its rows in slot order, each row's entries in order:
        the entries in that order are matched to the beat words.
        """
        c, layer, sched = self.config, self.layer, self.schedule
        fields = unpack_fields(c.load_fields, self.words)
        order = [i for rows in sched.lane_row_lists for r in rows
                 for i in range(layer.row_starts[r], layer.row_starts[r + 1])]
        beat_words = np.flatnonzero(fields["header"] == 0)
        assert len(beat_words) == len(order), "load_words and the schedule disagree"
        width = layout_width(c.load_fields)
        data_width = c.load_fields[0][1][1]
        # Cat below builds the beat LSB first, in the config's field order.
        assert [name for name, _ in c.beat_fields] == ["value", "offset"]
        entry_of = dict(zip(beat_words.tolist(), order))
        words = []
        for n, word in enumerate(self.words):
            if n in entry_of:
                i = entry_of[n]
                head = word & ~((1 << data_width) - 1)   # lane, header, first as packed
                words.append(Const(head, width) | Cat(value[i], offset[i]).as_unsigned())
            else:
                words.append(Const(word, width))
        return words

    def describe(self, m):
        c, layer, sched = self.config, self.layer, self.schedule
        # Made here: a mutant put in place for the check is picked up by elaborate().
        m.submodules.dut = dut = SpMVEngine(c)

        # -- the free part of the layer and the vectors ---------------------------------
        beat_l = beat_layout(c)
        value = [AnyConst(beat_l["value"].shape) for _ in range(layer.nnz)]
        offset = [AnyConst(beat_l["offset"].shape) for _ in range(layer.nnz)]
        xw = c.input_width
        x = [[AnyConst(to_shape(c.input_fields[0][1][1])) for _ in range(c.x_depth * xw)]
             for _ in range(self.vectors)]
        log2_b = layer.log2_block_sizes[layer.entry_rows]
        blocks = layer.entry_blocks
        # The block's width: b, or what is left of the row for a partial last block.
        width = np.minimum(layer.block_sizes[layer.entry_rows], layer.cols - (blocks << log2_b))
        layout = [offset[i] < int(width[i]) for i in range(layer.nnz)]

        # -- the naive reference: constants of the run, tied to their formula once ------
        acc = to_shape(c.output_fields[0][1][1])
        ref = [[Signal(acc, name=f"ref{v}_row{r}") for r in range(layer.rows)]
               for v in range(self.vectors)]
        for v in range(self.vectors):
            for r in range(layer.rows):
                terms = [value[i] * Array(x[v])[(int(blocks[i]) << int(log2_b[i])) | offset[i]]
                         for i in range(layer.row_starts[r], layer.row_starts[r + 1])]
                fixed = AnyConst(acc)
                m.d.comb += ref[v][r].eq(fixed)
                # Only in the first cycle: the solver meets each sum once, not once
                # per unrolled cycle (the AnyConst keeps it for the run).
                layout.append(fixed == sum(terms, Const(0, acc)))
        with m.If(Initial()):
            m.d.comb += [Assume(a) for a in layout]

        # -- handshakes -----------------------------------------------------------------
        cycle = Signal(16)                        # cycles since the start (no wrap in any depth)
        m.d.sync += cycle.eq(cycle + 1)
        if self.stalls == "any":
            load_offer, x_offer, y_ready = AnySeq(1), AnySeq(1), AnySeq(1)
        elif self.stalls == "periodic":
            # Fixed gaps: load 2 of 3 cycles, x 1 of 2, y accepted 2 of 3 (out of phase).
            load_offer, x_offer, y_ready = cycle % 3 != 2, cycle[0], cycle % 3 != 0
        else:
            load_offer = x_offer = y_ready = 1

        # -- the load stream ------------------------------------------------------------
        words = self._load_words(value, offset)
        w = Signal(range(len(words) + 1))
        loading = w < len(words)
        m.d.comb += [dut.load.valid.eq(loading & load_offer),
                     dut.load.payload.as_value().eq(Array(words)[w])]
        with m.If(dut.load.valid & dut.load.ready):
            m.d.sync += w.eq(w + 1)

        # -- the input stream: after the load ------------------------------------------
        x_words = -(-layer.cols // xw)            # as packing.input_words
        u = Signal(range(x_words + 1))
        vx = Signal(range(self.vectors + 1))
        m.d.comb += [dut.x.valid.eq(~loading & (vx < self.vectors) & x_offer),
                     dut.x.payload.last.eq(u == x_words - 1)]
        for e in range(xw):
            m.d.comb += dut.x.payload.x[e].eq(
                Array(Array(x[v][i * xw + e] for i in range(x_words))
                      for v in range(self.vectors))[vx][u])
        with m.If(dut.x.valid & dut.x.ready):
            with m.If(dut.x.payload.last):
                m.d.sync += [u.eq(0), vx.eq(vx + 1)]
            with m.Else():
                m.d.sync += u.eq(u + 1)

        # -- the output stream: each beat against the reference -------------------------
        omap = sched.output_map()                 # (slots, lanes) → row, -1 if none
        slots = sched.slots
        t = Signal(range(slots + 1))
        vy = Signal(range(self.vectors + 1))
        m.d.comb += dut.y.ready.eq(y_ready)
        with m.If(dut.y.valid & dut.y.ready):
            m.d.comb += [
                Assert(vy < self.vectors),                # no beat beyond the vectors
                Assert(dut.y.payload.last == (t == slots - 1)),
            ]
            for lane in range(c.lanes):
                for slot in range(slots):
                    row = int(omap[slot, lane])
                    if row < 0:
                        continue
                    with m.If(t == slot):
                        m.d.comb += Assert(dut.y.payload.y[lane]
                                           == Array(ref[v][row] for v in
                                                    range(self.vectors))[vy])
            with m.If(dut.y.payload.last):
                m.d.sync += [t.eq(0), vy.eq(vy + 1)]
            with m.Else():
                m.d.sync += t.eq(t + 1)
        done = vy == self.vectors
        m.d.comb += Cover(done)
        if self.stalls != "any" and self.depth is not None:
            # One trace in time: it must finish within the depth, or the check would
            # pass by stopping short of the outputs.
            with m.If(cycle == self.depth - 1):
                m.d.comb += Assert(done)
