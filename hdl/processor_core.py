"""The processor as a device core: :class:`~darbgen.hdl.processor.Processor` plus the
``slots`` output the protocol controller needs.

The controller (:mod:`darbgen.hdl.device`) refuses a RUN while its core holds nothing
and counts a RUN's output beats from the core's ``slots``. A processor's output is one
logit per beat, the rows of its program's ``last`` step, so :class:`CoreProcessor`
watches the load stream: a load's first word clears the count (nothing is loaded
until the program is), the program step marked ``last`` sets it to that step's rows.
The program is the end of every load (:func:`darbgen.processor.load_words`).
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out, connect

from ..processor import ProcessorConfig, Target
from .layouts import to_layout
from .processor import Processor

__all__ = ["CoreProcessor"]


class CoreProcessor(wiring.Component):
    """A :class:`~darbgen.hdl.processor.Processor` that counts the output beats of what
    is loaded.

    Parameters
    ----------
    config : ProcessorConfig

    Members
    -------
    load, x, y : streams
        The processor's (see :class:`~darbgen.hdl.processor.Processor`).
    slots : Out(range(config.output_beats + 1))
        Output beats per input vector of the loaded network (its last layer's rows); 0
        until a whole load, program included, has arrived.
    """

    def __init__(self, config: ProcessorConfig):
        if not isinstance(config, ProcessorConfig):
            raise TypeError(f"config must be a ProcessorConfig, not {config!r}")
        self._config = config
        self._processor = Processor(config)
        super().__init__({**self._processor.signature.members,
                          "slots": Out(range(config.output_beats + 1))})

    @property
    def config(self) -> ProcessorConfig:
        return self._config

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.submodules.processor = processor = self._processor
        connect(m, wiring.flipped(self.load), processor.load)
        connect(m, wiring.flipped(self.x), processor.x)
        connect(m, processor.y, wiring.flipped(self.y))

        step = Signal(to_layout(c.step_fields))
        word = self.load.payload
        m.d.comb += step.eq(word.data[:len(step.as_value())])
        with m.If(self.load.valid):                 # the processor is always ready
            with m.If(word.first):
                m.d.sync += self.slots.eq(0)
            with m.Elif((word.target == Target.PROGRAM) & step.last):
                m.d.sync += self.slots.eq(step.rows)
        return m
