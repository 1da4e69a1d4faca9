"""Deliberately broken hardware, made from the real source with one edit each.

A mutant's ``elaborate`` is the real class's ``elaborate`` source with one piece of
text replaced, compiled in the real module's namespace; it follows the hardware as the
hardware changes, and :func:`mutant` refuses to build it once the text is gone.
:func:`replaced` puts a mutant where the engine looks its parts up, so the whole-engine
check can be run against a broken decoder or lane.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import textwrap

from darbgen.hdl import IndexDecoder, Lane

__all__ = ["DECODER_MUTANTS", "LANE_MUTANTS", "SEQUENCED_LANE_MUTANTS", "PROCESSOR_MUTANTS",
           "STEP_END_MUTANTS", "MAP_UNIT_MUTANTS", "mutant", "replaced"]

#: Faults in :class:`~darbgen.hdl.IndexDecoder`: name → (text, replacement).
DECODER_MUTANTS = {
    # the block index shifted one place too far: every block after the first is wrong
    "shift-off-by-one": ("(current << s)", "(current << (s + 1))"),
    # the offset's top bit lost
    "offset-msb-dropped": ("| self.offset)", "| self.offset[:-1])"),
    # the next block starts one entry early (k - 1 entries per block)
    "block-wraps-early": ("count == self.keep", "count + 1 == self.keep"),
    # a new row carries on from the previous row's block
    "no-row-restart": ("Mux(self.first, 0, Mux(wrap, block + 1, block))",
                       "Mux(wrap, block + 1, block)"),
}

#: Faults in the scheduler of :class:`~darbgen.hdl.Lane`: name → (text, replacement).
LANE_MUTANTS = {
    # a row ends one beat early: its last weight is never multiplied
    "row-drops-last-beat": ("last.eq(remaining == 1)", "last.eq(remaining <= 2)"),
    # the beat pointer stalls after a row's first beat: that weight is multiplied twice
    "first-beat-twice": ("m.d.sync += ptr.eq(ptr + 1)", "m.d.sync += ptr.eq(ptr + ~row_first)"),
    # on a row's last beat the header prefetch asks for the next row again instead of
    # the one after it: the row after next runs with the next row's header
    "prefetch-off-by-one": ("Mux(last, slot + 2, slot + 1)", "Mux(last, slot + 1, slot + 1)"),
    # a row is skipped: its weights are never multiplied
    "skips-a-row": ("m.d.sync += [slot.eq(slot + 1),", "m.d.sync += [slot.eq(slot + 2),"),
}

#: Faults of a sequenced :class:`~darbgen.hdl.Lane` (the processor's), in code the
#: engine's lanes do not run: ``mutant(Lane, name, SEQUENCED_LANE_MUTANTS)``.
SEQUENCED_LANE_MUTANTS = {
    # after a step's last row the end marker is not skipped: the next step finds it
    # and runs nothing (a step skipped)
    "marker-not-skipped": ("base.eq(after2)", "base.eq(after)"),
    # every step restarts at beat 0: the first layer's weights are used again
    "beats-restart-each-step": ("*([] if seq else [ptr.eq(0)])", "ptr.eq(0)"),
}

#: Faults of the processor's sequencer (:class:`~darbgen.hdl.processor.Processor`):
#: ``mutant(Processor, name, PROCESSOR_MUTANTS)``.
PROCESSOR_MUTANTS = {
    # the program memory is read one step ahead: step 0 is skipped, step 1 runs first
    "reads-the-next-step": ("program_rd.addr.eq(pc)", "program_rd.addr.eq(pc + 1)"),
    # a convolution's positions start at 1: position 0 never runs
    "positions-start-at-one": ("[kbase.eq(k), p.eq(0)]", "[kbase.eq(k), p.eq(1)]"),
}

#: Faults at a step's or a position's END in the processor's sequencer, which the
#: bounded check (:data:`PROCESSOR_MUTANTS`'s, 12 cycles) never reaches and the
#: program-order proof (:mod:`formal.order`) catches:
#: ``mutant(Processor, name, STEP_END_MUTANTS)``.
STEP_END_MUTANTS = {
    # pc advances by two at a step's end: the next step is skipped
    "pc-advances-twice": ("w.eq(0), pc.eq(pc + 1)]", "w.eq(0), pc.eq(pc + 2)]"),
    # the step marked `last` is not the end: the sequencer fetches the step after it
    "last-ignored": ('with m.If(step.last):\n                    m.next = "READ"',
                     'with m.If(0):\n                    m.next = "READ"'),
    # a convolution's position counter is not advanced: position 0 runs again
    "position-repeated": ("[p.eq(p + 1), k.eq(kbase)]", "[p.eq(p), k.eq(kbase)]"),
    # FLUSH two cycles short (one of its cycles is slack: one short still lands every
    # write in it): a step's last requantizer write lands after the next position's
    # gather (or the next step) has begun, which may read it
    "flush-too-short": ("flush.eq(REQUANT_PIPELINE_DEPTH + 2)",
                        "flush.eq(REQUANT_PIPELINE_DEPTH)"),
    # pc is not advanced when the LSTM cell is done: the LSTM step runs again
    "cell-step-repeated": ("m.d.sync += pc.eq(pc + 1)", "m.d.sync += pc.eq(pc)"),
}

#: Faults of the scratchpad and gather (:class:`~darbgen.hdl.processor_conv.MapUnit`):
#: ``mutant(MapUnit, name, MAP_UNIT_MUTANTS)``.
MAP_UNIT_MUTANTS = {
    # the image's element goes one entry too far: the entry the gather reads is not
    # the one written
    "scatter-one-entry-off": ("pad.addr.eq(entry.offset)", "pad.addr.eq(entry.offset + 1)"),
    # the gather reads the column after the one the table says
    "gather-next-column": ("col_ptr.eq(col_base), pool_ptr.eq(pool_base)]",
                           "col_ptr.eq(col_base + 1), pool_ptr.eq(pool_base)]"),
}

_KINDS = {IndexDecoder: DECODER_MUTANTS, Lane: LANE_MUTANTS}


def mutant(cls: type, name: str, faults: dict | None = None) -> type:
    """A subclass of ``cls`` (:class:`~darbgen.hdl.IndexDecoder` or
    :class:`~darbgen.hdl.Lane`) with the fault ``name`` (of ``faults``, by default the
    class's table).

    Raises
    ------
    ValueError
        ``name`` is not a fault of ``cls``, or its text no longer occurs exactly once
        in ``cls.elaborate``.
    """
    faults = _KINDS.get(cls, {}) if faults is None else faults
    if name not in faults:
        raise ValueError(f"{cls.__name__} has no mutant {name!r}; known: "
                         f"{', '.join(faults) or 'none'}")
    find, replace = faults[name]
    source = textwrap.dedent(inspect.getsource(cls.elaborate))
    if source.count(find) != 1:
        raise ValueError(f"mutant {name!r}: {find!r} occurs {source.count(find)} times in "
                         f"{cls.__name__}.elaborate, not once")
    namespace = dict(vars(sys.modules[cls.__module__]))
    exec(compile(source.replace(find, replace), f"<mutant {name}>", "exec"), namespace)
    return type(f"{cls.__name__}Mutant_{name.replace('-', '_')}", (cls,),
                {"elaborate": namespace["elaborate"], "__module__": __name__})


@contextlib.contextmanager
def replaced(module, attr: str, value):
    """Temporarily set ``module.attr`` to ``value`` (fault injection while elaborating)."""
    saved = getattr(module, attr)
    setattr(module, attr, value)
    try:
        yield
    finally:
        setattr(module, attr, saved)
