"""Formal spec of the index decoder: every beat's column is the artifact's column.

The contract (:attr:`darbgen.format.SparseLayer.columns`): the ``j``-th entry of a row
with block size ``2**s`` and keep count ``k`` sits in block ``j // k`` and its column is
``((j // k) << s) | offset``. :class:`DecoderSpec` drives :class:`~darbgen.hdl.IndexDecoder`
with any sequence of beats that an artifact can produce for one engine configuration
(any row headers from the config's block-size table, any keep count up to the block
size, any in-block offsets, rows of any length within any layer width up to
``max_cols``, idle cycles anywhere) and asserts, for every valid beat, that the decoder's
column equals that formula computed in a width where nothing can overflow, and is a
column of the engine.

Proven in ``prove`` mode (k-induction): the induction invariant ties the decoder's two
registers to the harness's count of beats in the row (``block == j // k``,
``count == j % k + 1``); :class:`~darbgen.hdl.IndexDecoder` creates those registers in
its constructor for this purpose only.

:data:`formal.mutants.DECODER_MUTANTS` are broken decoders made from the real one's
source with one edit each; the same spec, without the invariant, must find a
counterexample for each.
"""

from __future__ import annotations

from amaranth.asserts import AnyConst, AnySeq   # Amaranth 0.5 keeps these two here
from amaranth.hdl import Assert, Assume, Cover, Signal

from darbgen.config import EngineConfig
from darbgen.hdl import IndexDecoder

from .sby import FormalSpec

__all__ = ["DecoderSpec", "DECODER_CONFIGS"]


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


class DecoderSpec(FormalSpec):
    """Any artifact-shaped beat sequence in, the contract's column asserted out.

    Parameters
    ----------
    config : EngineConfig
        The engine whose block-size table (``shifts``), ``max_keep`` and ``max_cols``
        bound the beats.
    dut : IndexDecoder, optional
        The decoder under test (default: a new :class:`~darbgen.hdl.IndexDecoder`); a
        mutant from :func:`formal.mutants.mutant` for the negative checks.
    invariants : bool
        Also assert the induction invariant over the decoder's registers (needed for
        ``prove``; left out for mutants, so that only the contract can catch them).
    """

    def __init__(self, config: EngineConfig, dut=None, *, invariants: bool = True):
        super().__init__()
        self.config = config
        self.dut = IndexDecoder(config) if dut is None else dut
        self.invariants = invariants

    def _shift_of(self, m, code, name):
        """The log2 block size a shift code stands for (the config's table)."""
        c = self.config
        value = Signal(range(max(c.shifts) + 1), name=name)
        with m.Switch(code):
            for i, s in enumerate(c.shifts):
                with m.Case(i):
                    m.d.comb += value.eq(s)
        return value

    def describe(self, m):
        c = self.config
        m.submodules.dut = dut = self.dut

        # -- any beat sequence -----------------------------------------------------------
        cols = AnyConst(range(1, c.max_cols + 1))        # the layer's width
        valid, first = AnySeq(1), AnySeq(1)
        code, keep = AnySeq(len(dut.shift)), AnySeq(len(dut.keep))
        offset = AnySeq(len(dut.offset))
        m.d.comb += [dut.valid.eq(valid), dut.first.eq(first), dut.shift.eq(code),
                     dut.keep.eq(keep), dut.offset.eq(offset)]
        shift = self._shift_of(m, code, "shift_value")

        # -- the reference: j counts the row's beats -----------------------------------
        j_width = _bits(c.max_keep * c.max_cols)
        started = Signal()                       # a row has begun since the start
        j_prev = Signal(j_width)                 # index in its row of the last beat
        row_code, row_keep = Signal.like(code), Signal.like(keep)
        row_shift = self._shift_of(m, row_code, "row_shift")
        j = Signal(j_width)
        ref_col = Signal(j_width + max(c.shifts))
        with m.If(~first):
            m.d.comb += j.eq(j_prev + 1)
        m.d.comb += ref_col.eq(((j // keep) << shift) | offset)
        with m.If(valid):
            m.d.sync += [started.eq(1), j_prev.eq(j), row_code.eq(code), row_keep.eq(keep)]

        # -- what an artifact and the lane guarantee -----------------------------------
        m.d.comb += Assume((cols >= 1) & (cols <= c.max_cols))
        with m.If(valid):
            m.d.comb += [
                Assume(started | first),                 # rows start with a first beat
                Assume(code < len(c.shifts)),            # a size of the table
                Assume((keep >= 1) & (keep <= c.max_keep) & (keep <= (1 << shift))),
                Assume(offset < (1 << shift)),           # in its block
                Assume(ref_col < cols),                  # in the layer
            ]
            with m.If(~first):                           # the header holds for the row
                m.d.comb += Assume((code == row_code) & (keep == row_keep))

        # -- the contract ---------------------------------------------------------------
        with m.If(valid):
            m.d.comb += [
                Assert(dut.col == ref_col),   # full width: no truncated high bits either
                Assert(dut.col < c.max_cols),
            ]
        # Not vacuous: a beat in a row's third block (CSR: a row's third beat) is reachable.
        m.d.comb += Cover(valid & (j == 2 if c.single_block else j // keep == 2))

        # -- the induction invariant ---------------------------------------------------
        if self.invariants:
            with m.If(started):
                m.d.comb += [
                    Assert((row_code < len(c.shifts)) & (row_keep >= 1)
                           & (row_keep <= c.max_keep)),
                    Assert(((j_prev // row_keep) << row_shift) < cols),
                ]
                if not c.single_block:
                    m.d.comb += [
                        Assert(dut._block == j_prev // row_keep),
                        Assert(dut._count == j_prev % row_keep + 1),
                    ]


def _config(shifts, max_keep, max_cols):
    return EngineConfig(lanes=1, shifts=shifts, max_keep=max_keep,
                        max_row_nnz=max_keep * max_cols, max_cols=max_cols, lane_depth=1,
                        lane_rows=1)


#: Block-size tables the decoder is proven for, by name.
DECODER_CONFIGS = {
    # DARB as the digits and LSTM layers use it: b = 2..64, k = 1, odd widths.
    "darb-2to64-k1-300cols": _config((1, 2, 3, 4, 5, 6), 1, 300),
    # k up to 4, b = 1 allowed, a width that is no multiple of any block.
    "darb-1to8-k4-45cols": _config((0, 2, 3), 4, 45),
    # blocks wider than some rows, the widest block past the last column.
    "darb-2to64-k2-100cols": _config((1, 4, 6), 2, 100),
    "bmwm-b16-64cols": _config((4,), 1, 64),
    "dense-b1": _config((0,), 1, 20),
    # CSR: one block per row, the column is the offset itself (no registers).
    "csr-one-block": _config((6,), 40, 50),
}
