"""A single-port RAM that is the iCE40UP5K's SPRAM on that part and a plain memory elsewhere.

The UP5K's four SB_SPRAM256KA blocks (16k × 16 bits each, 1 Mbit in all, eight times its
block RAM) are the only place a real model's weights fit on the iCEBreaker. Yosys does
not map an Amaranth ``Memory`` onto them: the memory always carries initial contents,
which SPRAM cannot have, so ``synth_ice40 -spram`` with ``ram_style = "huge"`` finds "no
valid mapping". :class:`SinglePortRAM` therefore instantiates the primitives itself on
an iCE40UP platform (or when asked, for the equivalence test against Yosys's simulation
model) and is a ``memory.Memory`` with one shared address everywhere else (simulation,
ECP5, where it becomes block RAM).

Its contract is the primitive's: one address per cycle, a write (``we``) or a read
(``en``), read data one cycle later and held until the next read. After a write the
primitive's output is undefined (``16'bx`` in the model), so a user must not read
``rdata`` on the cycle after a write; the memory form holds it, which hides nothing a
correct user relies on. Contents are undefined at power-up: weights are loaded at run
time.
"""

from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["SinglePortRAM", "SPRAM_DEPTH", "SPRAM_WIDTH", "UP5K_SPRAMS", "uses_spram"]

#: Words and bits of one SB_SPRAM256KA.
SPRAM_DEPTH, SPRAM_WIDTH = 16384, 16
#: SB_SPRAM256KA blocks on the iCE40UP5K.
UP5K_SPRAMS = 4


def uses_spram(platform) -> bool:
    """The platform is an iCE40UP part, whose large memories are SPRAM."""
    return str(getattr(platform, "device", "")).startswith("iCE40UP")


class SinglePortRAM(wiring.Component):
    """``depth`` words of ``width`` bits behind one address port.

    Parameters
    ----------
    width, depth : int
        Word size and count. As SPRAM, the words take ``ceil(width / 16)`` blocks side by
        side and ``ceil(depth / 16384)`` rows of them.
    spram : bool, optional
        Force (``True``) or forbid (``False``) the SB_SPRAM256KA form; by default it is
        used on iCE40UP platforms (:func:`uses_spram`).

    Members
    -------
    addr : In(range(depth))
    wdata : In(width)
    we : In(1)
        Write ``wdata`` at ``addr``.
    en : In(1)
        Read ``addr``: ``rdata`` has the word from the next cycle on (ignored with ``we``).
    rdata : Out(width)

    Raises
    ------
    ValueError
        ``width`` or ``depth`` not a positive integer; as SPRAM, more blocks than the
        UP5K has.
    """

    def __init__(self, width: int, depth: int, *, spram: bool | None = None):
        for name, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self.width, self.depth, self._spram = width, depth, spram
        super().__init__({"addr": In(range(max(depth, 2))), "wdata": In(width), "we": In(1),
                          "en": In(1), "rdata": Out(width)})

    @property
    def blocks(self) -> int:
        """SB_SPRAM256KA blocks this RAM takes as SPRAM."""
        return -(-self.width // SPRAM_WIDTH) * -(-self.depth // SPRAM_DEPTH)

    def elaborate(self, platform):
        spram = uses_spram(platform) if self._spram is None else self._spram
        return self._spram_form() if spram else self._memory_form()

    def _memory_form(self) -> Module:
        m = Module()
        # At least 2 words: a 1-word memory's 0-bit address is `wire [-1:0]` in Verilog.
        m.submodules.mem = mem = memory.Memory(shape=self.width, depth=max(self.depth, 2),
                                               init=[])
        w, r = mem.write_port(), mem.read_port(transparent_for=())
        m.d.comb += [w.addr.eq(self.addr), w.data.eq(self.wdata), w.en.eq(self.we),
                     r.addr.eq(self.addr), r.en.eq(self.en & ~self.we),
                     self.rdata.eq(r.data)]
        return m

    def _spram_form(self) -> Module:
        if self.blocks > UP5K_SPRAMS:
            raise ValueError(f"{self.depth} words of {self.width} bits need {self.blocks} "
                             f"SB_SPRAM256KA blocks; the iCE40UP5K has {UP5K_SPRAMS}")
        m = Module()
        rows, cols = -(-self.depth // SPRAM_DEPTH), -(-self.width // SPRAM_WIDTH)
        low = self.addr[:ceil_log2(SPRAM_DEPTH)]
        row = self.addr[ceil_log2(SPRAM_DEPTH):] if rows > 1 else Const(0, 1)
        read_row = Signal.like(row, name="read_row")        # which row answers the read
        with m.If(self.en & ~self.we):
            m.d.sync += read_row.eq(row)
        wdata = Cat(self.wdata, Const(0, cols * SPRAM_WIDTH - self.width))
        outs = []
        for i in range(rows):
            out = Signal(cols * SPRAM_WIDTH, name=f"row{i}")
            for j in range(cols):
                m.submodules[f"spram_{i}_{j}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=low, i_DATAIN=wdata[j * SPRAM_WIDTH:(j + 1) * SPRAM_WIDTH],
                    i_MASKWREN=Const(0b1111, 4), i_WREN=self.we,
                    i_CHIPSELECT=(row == i) & (self.we | self.en),
                    i_CLOCK=ClockSignal("sync"),
                    i_STANDBY=Const(0), i_SLEEP=Const(0), i_POWEROFF=Const(1),
                    o_DATAOUT=out[j * SPRAM_WIDTH:(j + 1) * SPRAM_WIDTH])
            outs.append(out)
        selected = outs[0]
        for i in range(1, rows):
            selected = Mux(read_row == i, outs[i], selected)
        m.d.comb += self.rdata.eq(selected[:self.width])
        return m
