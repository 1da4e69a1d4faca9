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

__all__ = ["EngineRun", "run_engine", "StreamRun", "drive_streams"]


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
    run = drive_streams(SpMVEngine(config), [*(preload or []), *words], input_words(x, config),
                        len(x) * sched.slots, idle=idle, backpressure=backpressure, seed=seed,
                        load_gap=load_gap, x_during_load=x_during_load, max_cycles=max_cycles)
    if len(run.beats) < run.expected:
        raise TimeoutError(f"engine produced {len(run.beats)} of {run.expected} output beats "
                           f"in {max_cycles} cycles")
    return EngineRun(unpack_outputs(run.beats, config, sched), run.cycles, sched)


@dataclass
class StreamRun:
    """What :func:`drive_streams` collected."""

    beats: list            # output beats, as integers
    expected: int
    cycles: int            # first input accepted to last output produced, inclusive


def drive_streams(dut, load: list, beats: list, expected: int, *, idle: float = 0.0,
                  backpressure: float = 0.0, seed: int = 0, load_gap: int = 0,
                  x_during_load: bool = False, max_cycles: int = 200_000) -> StreamRun:
    """Drive a core with ``load``, ``x`` and ``y`` streams (an engine, a network, an
    LSTM step) in Amaranth's simulator: the load words, then (or, with
    ``x_during_load``, meanwhile) the input beats with random idle cycles, while the
    output is taken with random back-pressure until ``expected`` beats came out or
    ``max_cycles`` passed. Parameters as in :func:`run_engine`."""
    rng = np.random.default_rng(seed)
    out, marks = [], {}

    async def testbench(ctx):
        if not x_during_load:
            await load_all(ctx)
        i = cycle = 0
        pending = list(load) if x_during_load else []
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
        for w in load:
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
    cycles = marks["last"] - marks["first"] + 1 if "last" in marks else 0
    return StreamRun(out, expected, cycles)
