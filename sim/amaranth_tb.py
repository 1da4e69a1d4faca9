"""Run the engine in Amaranth's simulator: fast unit tests of small configurations.

The same stimulus as the Verilator testbench: :func:`darbgen.packing.load_words`
and :func:`~darbgen.packing.input_words` in, output beats out through
:func:`~darbgen.packing.unpack_outputs`, with random idle cycles on the input
and random back-pressure on the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.sim import Simulator

from ..config import EngineConfig
from ..format import SparseLayer
from ..hdl import SpMVEngine
from ..packing import Schedule, input_words, load_words, schedule, unpack_outputs

__all__ = ["EngineRun", "run_engine"]


@dataclass
class EngineRun:
    """Outputs and timing of one engine run."""

    y: np.ndarray          # (n, rows) int64, in row order
    cycles: int            # first input accepted to last output produced, inclusive
    schedule: Schedule


def run_engine(layer: SparseLayer, x, config: EngineConfig | None = None, *, lanes: int = 4,
               idle: float = 0.0, backpressure: float = 0.0, seed: int = 0,
               load: list | None = None, preload: list | None = None, load_gap: int = 0,
               x_during_load: bool = False, max_cycles: int = 200_000) -> EngineRun:
    """Load ``layer`` into a simulated engine and run input vectors ``x`` through it.

    Parameters
    ----------
    idle, backpressure : float
        Probability that the input is not offered / the output is not accepted in a
        cycle (seeded by ``seed``).
    load : list of int, optional
        Load words to use instead of the layer's own (mutation tests).
    preload : list of int, optional
        Load words of an earlier load (another layer that fits ``config``), streamed
        just before: the engine must hold only the second load.
    load_gap : int
        Idle cycles between load words (the serial controller leaves some).
    x_during_load : bool
        Offer the input vectors from the first cycle on, while the weights still load:
        the engine must not start a vector before its load has settled.
    """
    config = config or EngineConfig.for_layers([layer], lanes)
    sched = schedule(layer, config.lanes)
    x = np.atleast_2d(x)
    words = load if load is not None else load_words(layer, config, sched)
    beats = input_words(x, config)
    expected = len(x) * sched.slots
    dut = SpMVEngine(config)
    rng = np.random.default_rng(seed)
    out, marks = [], {}
    stream = [*(preload or []), *words]

    async def testbench(ctx):
        if not x_during_load:
            await load_all(ctx)
        i = cycle = 0
        pending = list(stream) if x_during_load else []
        gap = 0
        while len(out) < expected and cycle < max_cycles:
            # Load words (x_during_load only): one every load_gap + 1 cycles.
            ctx.set(dut.load.valid, bool(pending) and gap == 0)
            if pending and gap == 0:
                ctx.set(dut.load.payload.as_value(), pending.pop(0))
                gap = load_gap
            elif gap:
                gap -= 1
            offer = i < len(beats) and rng.random() >= idle
            ctx.set(dut.x.valid, offer)
            if offer:
                ctx.set(dut.x.payload.as_value(), beats[i])
            ctx.set(dut.y.ready, rng.random() >= backpressure)
            await ctx.delay(1e-9)                    # settle combinational ready/valid
            if ctx.get(dut.y.valid) and ctx.get(dut.y.ready):
                out.append(ctx.get(dut.y.payload.as_value()))
                marks["last"] = cycle
            if offer and ctx.get(dut.x.ready):
                marks.setdefault("first", cycle)
                i += 1
            await ctx.tick()
            cycle += 1

    async def load_all(ctx):
        for w in stream:
            ctx.set(dut.load.valid, 1)
            ctx.set(dut.load.payload.as_value(), w)
            await ctx.tick()
            if load_gap:
                ctx.set(dut.load.valid, 0)
                for _ in range(load_gap):
                    await ctx.tick()
        ctx.set(dut.load.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    if len(out) < expected:
        raise TimeoutError(f"engine produced {len(out)} of {expected} output beats in "
                           f"{max_cycles} cycles")
    return EngineRun(unpack_outputs(out, config, sched),
                     marks["last"] - marks["first"] + 1, sched)
