"""The index decoder: in-block offsets to column addresses, ``(block << log2 b) | offset``."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import EngineConfig, shape_width

__all__ = ["IndexDecoder"]


class IndexDecoder(wiring.Component):
    """Decodes one beat per cycle into its column, with no per-weight absolute index.

    The row's block size arrives as a shift code (an index into ``config.shifts``) with
    its keep count ``k``; the decoder counts ``k`` entries per block to know the block
    index, and forms the column with a shift and an OR (the offset is below the block
    size, so no adder is needed). For a single-block layout (CSR) the column is the
    offset itself and no counter is built.

    Members
    -------
    valid : In(1)
        A beat is decoded this cycle (advances the counters).
    first : In(1)
        The beat is the first of its row.
    shift, keep : In
        The row's shift code and keep count (header fields).
    offset : In
        The beat's in-block offset.
    col : Out(config.col_bits)
        The decoded column, combinational.
    """

    def __init__(self, config: EngineConfig):
        self._config = config
        widths = dict((name, shape_width(shape)) for name, shape in config.header_fields)
        super().__init__({
            "valid": In(1), "first": In(1),
            "shift": In(widths["shift"]), "keep": In(widths["keep"]),
            "offset": In(max(1, config.offset_bits)),
            "col": Out(config.col_bits),
        })
        # The decoder's two registers, created here rather than in elaborate() only so
        # that formal/decoder.py can state its induction invariant over them. Nothing
        # else reads them: the same registers (none for CSR), no port, no logic.
        self._count = Signal(widths["keep"], name="count")   # entries of this block so far
        self._block = Signal(config.col_bits, name="block")  # block of the previous beat

    @property
    def config(self) -> EngineConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        if c.single_block:
            m.d.comb += self.col.eq(self.offset)
            return m
        count, block = self._count, self._block
        wrap = Signal()
        current = Signal(c.col_bits)
        m.d.comb += [
            wrap.eq(count == self.keep),
            current.eq(Mux(self.first, 0, Mux(wrap, block + 1, block))),
        ]
        with m.Switch(self.shift):
            for code, s in enumerate(c.shifts):
                # The last size also takes codes past the table (the contract never
                # sends them): a full case, no extra logic.
                with (m.Default() if code == len(c.shifts) - 1 else m.Case(code)):
                    # offset < 2^s by the contract, so OR is concatenation
                    m.d.comb += self.col.eq((current << s) | self.offset)
        with m.If(self.valid):
            m.d.sync += [block.eq(current), count.eq(Mux(self.first | wrap, 1, count + 1))]
        return m
