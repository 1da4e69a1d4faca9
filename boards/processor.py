"""A measurement top for builds of the processor.

How each board's large memories hold the processor (its sizes are
:data:`darbgen.boards.core.PROCESSORS`; docs/processor.md, "Memories on the parts"):

* **iCE40UP5K** (iCEBreaker): four lanes, each lane's beat bank one SB_SPRAM256KA
  (16,384 beats of up to 16 bits; :class:`~darbgen.hdl.spram.SinglePortRAM`). The four
  SPRAMs give four words per cycle in all, so four lanes are fed every cycle and more
  lanes would wait for their beats; everything else lives in the 30 EBR.
* **ECP5-85F** (ULX3S): 32 lanes, each lane's beat bank five DP16KD (5,120 beats of up
  to 18 bits), its x copy one more; row headers, sums and the program are small enough
  for LUT RAM.

:class:`ProcessorProbe` wraps a :class:`~darbgen.hdl.processor.Processor` in the
``rx``/``tx`` core signature of :func:`darbgen.boards.build` with shift registers in
place of the protocol (as :class:`~darbgen.boards.ceiling.MACArray` does): every input
bit comes from ``rx``, every output bit reaches ``tx``, so synthesis keeps the whole
processor and place and route measures its memories, logic and fmax.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from darbgen.config import layout_width
from darbgen.processor import ProcessorConfig

from .ceiling import XOR_FAN_IN

__all__ = ["ProcessorProbe"]


class ProcessorProbe(wiring.Component):
    """A processor whose ports are shift registers on ``rx`` and an XOR tree on ``tx``.

    For measuring a build only (it runs nothing useful): the load word, the input beat
    and every valid/ready come from one shift register fed by ``rx``; every output bit
    goes into a pipelined XOR tree (one register per :data:`XOR_FAN_IN` inputs) on ``tx``.

    Parameters
    ----------
    config : ProcessorConfig
    """

    def __init__(self, config: ProcessorConfig):
        self.config = config
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        from darbgen.hdl.processor import Processor

        m = Module()
        m.submodules.processor = proc = Processor(self.config)
        c = self.config
        load_w, x_w = layout_width(c.load_fields), layout_width(c.input_fields)
        chain = Signal(load_w + x_w + 3)
        m.d.sync += chain.eq(Cat(self.rx, chain[:-1]))
        m.d.comb += [proc.load.payload.eq(chain[:load_w]),
                     proc.x.payload.eq(chain[load_w:load_w + x_w]),
                     proc.load.valid.eq(chain[-1]), proc.x.valid.eq(chain[-2]),
                     proc.y.ready.eq(chain[-3])]
        leaves = list(Cat(proc.y.payload.as_value(), proc.y.valid, proc.x.ready))
        level = 0
        while len(leaves) > 1:
            nxt = []
            for k in range(0, len(leaves), XOR_FAN_IN):
                r = Signal(name=f"x{level}_{k // XOR_FAN_IN}")
                m.d.sync += r.eq(Cat(*leaves[k:k + XOR_FAN_IN]).xor())
                nxt.append(r)
            leaves, level = nxt, level + 1
        m.d.comb += self.tx.eq(leaves[0])
        return m
