"""cocotb testbench of the generated engine (run through darbgen.sim.runner).

Reads its stimulus from the JSON file named by ``DARBGEN_STIMULUS``: the load words,
the input beats, the number of output beats to collect, idle / back-pressure
probabilities and a seed. Writes the output beats and the cycle count to the
file named in the stimulus. The comparison with the golden model happens in the
caller, so the same run serves tests and ``darbgen simulate``.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge


class EngineTB:
    """Drives the engine's streams: ``load`` words, ``x`` beats with idle cycles, ``y``
    with back-pressure (Forencich's TB shape)."""

    def __init__(self, dut, seed: int):
        self.dut = dut
        self.rng = random.Random(seed)
        self.idle = 0.0
        self.backpressure = 0.0
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    def set_idle_generator(self, probability: float):
        self.idle = probability

    def set_backpressure_generator(self, probability: float):
        self.backpressure = probability

    async def reset(self):
        self.dut.rst.value = 1
        self.dut.load__valid.value = 0
        self.dut.x__valid.value = 0
        self.dut.y__ready.value = 0
        for _ in range(2):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def load(self, words):
        for w in words:
            self.dut.load__valid.value = 1
            self.dut.load__payload.value = w
            await RisingEdge(self.dut.clk)
        self.dut.load__valid.value = 0

    async def run(self, beats, n_out, max_cycles):
        """Stream ``beats`` in and collect ``n_out`` output beats; return them and the
        cycles from the first input accepted to the last output produced."""
        dut, out = self.dut, []
        i = cycle = 0
        first = last = None
        while len(out) < n_out and cycle < max_cycles:
            offer = i < len(beats) and self.rng.random() >= self.idle
            accept = self.rng.random() >= self.backpressure
            dut.x__valid.value = int(offer)
            if offer:
                dut.x__payload.value = beats[i]
            dut.y__ready.value = int(accept)
            await ReadOnly()
            if offer and dut.x__ready.value:
                first = cycle if first is None else first
                i += 1
            if accept and dut.y__valid.value:
                out.append(int(dut.y__payload.value.to_unsigned()))
                last = cycle
            await RisingEdge(dut.clk)
            cycle += 1
        return out, (None if first is None or last is None else last - first + 1)


@cocotb.test()
async def run_stimulus(dut):
    with open(os.environ["DARBGEN_STIMULUS"]) as f:
        stim = json.load(f)
    tb = EngineTB(dut, stim["seed"])
    tb.set_idle_generator(stim["idle"])
    tb.set_backpressure_generator(stim["backpressure"])
    await tb.reset()
    await tb.load(stim["load"])
    out, cycles = await tb.run(stim["input"], stim["outputs"], stim["max_cycles"])
    with open(stim["result"], "w") as f:
        json.dump({"outputs": out, "cycles": cycles}, f)
    assert len(out) == stim["outputs"], f"got {len(out)} of {stim['outputs']} output beats"
