"""The MAC ceiling of a part: a bare registered multiply-accumulate array.

Issue 14 measures the engine's useful MAC/s (lanes × fmax × utilization) against what
the same part and tools reach with nothing but multipliers: :class:`MACArray` is
``macs`` independent int8 × int8 → ``acc_width`` accumulators, every stage registered
(operands, product, sum), the shape of an engine lane's multiply and accumulate with
no memories, decoder or scheduler around it. Built by :func:`darbgen.boards.build`
like any core, its fmax × ``macs`` is the ceiling (``bench/mac_ceiling.py``).

The operands come from a shift register fed by the UART's ``rx`` and the sums leave as
one registered XOR tree on ``tx``, so synthesis can neither fold the array into
constants nor drop an accumulator; the tree is pipelined (one register per level of
:data:`XOR_FAN_IN` inputs) so that it is never the critical path.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["MACArray", "XOR_FAN_IN"]

#: Inputs XORed per register level of the output tree (one iCE40 LUT4 each).
XOR_FAN_IN = 4


class MACArray(wiring.Component):
    """``macs`` registered int8 multiply-accumulates, observable only through ``tx``.

    Parameters
    ----------
    macs : int
        Number of multiply-accumulate units (the part's DSP count).
    acc_width : int
        Accumulator width (24: the engine's for 8-bit weights and inputs).

    Members
    -------
    rx : In(1)
        Operand source (a UART line in a board top).
    tx : Out(1)
        The XOR of every accumulator bit, pipelined.
    """

    def __init__(self, macs: int, acc_width: int = 24):
        if not isinstance(macs, int) or macs < 1:
            raise ValueError(f"macs must be a positive integer, not {macs!r}")
        if not isinstance(acc_width, int) or acc_width < 16:
            raise ValueError(f"acc_width must be an integer of at least 16 (an int8 × int8 "
                             f"product), not {acc_width!r}")
        self.macs, self.acc_width = macs, acc_width
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        # Operand chain: macs + 1 bytes; MAC i multiplies bytes i and i + 1.
        chain = [Signal(signed(8), name=f"op{i}") for i in range(self.macs + 1)]
        m.d.sync += chain[0].eq(Cat(self.rx, chain[0][:7]) ^ chain[-1])
        for prev, nxt in zip(chain, chain[1:]):
            m.d.sync += nxt.eq(prev)
        leaves = []
        for i in range(self.macs):
            a, b = Signal(signed(8), name=f"a{i}"), Signal(signed(8), name=f"b{i}")
            product = Signal(signed(16), name=f"p{i}")
            acc = Signal(signed(self.acc_width), name=f"acc{i}")
            m.d.sync += [a.eq(chain[i]), b.eq(chain[i + 1]), product.eq(a * b),
                         acc.eq(acc + product)]
            leaves.extend(acc[j] for j in range(self.acc_width))
        level = 0
        while len(leaves) > 1:
            groups = [leaves[k:k + XOR_FAN_IN] for k in range(0, len(leaves), XOR_FAN_IN)]
            nxt = []
            for k, group in enumerate(groups):
                r = Signal(name=f"x{level}_{k}")
                m.d.sync += r.eq(Cat(*group).xor())
                nxt.append(r)
            leaves, level = nxt, level + 1
        m.d.comb += self.tx.eq(leaves[0])
        return m
