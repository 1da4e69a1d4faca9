"""The UART in Amaranth's simulator against a bit-level Python driver and sampler."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from darbgen.hdl.uart import UARTRx, UARTTx


def frame_bits(byte, stop=1):
    """The line levels of one 8N1 frame: start, eight data bits LSB first, stop."""
    return [0, *((byte >> i) & 1 for i in range(8)), stop]


def line_runs(bits, period, lead=20, tail=None):
    """``(level, cycles)`` runs of a line that sends ``bits`` every ``period`` cycles
    (a float: the sender's clock need not match ours), after ``lead`` idle cycles."""
    tail = 3 * round(period) if tail is None else tail
    edges = [lead + round(i * period) for i in range(len(bits) + 1)]
    runs = [(1, lead)]
    for level, start, end in zip(bits, edges, edges[1:]):
        if level == runs[-1][0]:
            runs[-1] = (level, runs[-1][1] + end - start)
        else:
            runs.append((level, end - start))
    runs.append((1, tail))
    return runs


def run_rx(runs, divisor, ready_at=0):
    """Drive ``runs`` into a receiver; ``ready`` rises at cycle ``ready_at``.
    Returns the bytes taken, and the frame_error and overrun strobe counts."""
    dut = UARTRx(divisor)
    total = sum(n for _, n in runs)
    got, errors = [], {"frame_error": 0, "overrun": 0}

    async def drive(ctx):
        for level, n in runs:
            ctx.set(dut.rx, level)
            await ctx.tick().repeat(n)

    async def collect(ctx):
        ctx.set(dut.data.ready, ready_at == 0)
        cycle = 0
        async for _, _, valid, ready, payload, fe, ov in ctx.tick().sample(
                dut.data.valid, dut.data.ready, dut.data.payload, dut.frame_error,
                dut.overrun):
            if valid and ready:
                got.append(payload)
            errors["frame_error"] += fe
            errors["overrun"] += ov
            cycle += 1
            if cycle == ready_at:
                ctx.set(dut.data.ready, 1)
            if cycle >= max(total, ready_at) + 2:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(collect)
    sim.run()
    return got, errors


def decode_line(levels, divisor):
    """A Python UART sampler: ``(start cycle, byte, stop bit ok)`` per frame."""
    frames, i = [], 0
    while i < len(levels):
        if levels[i] == 1:
            i += 1
            continue
        mid = i + divisor // 2
        if mid + 9 * divisor >= len(levels):
            break
        bits = [levels[mid + k * divisor] for k in range(10)]
        assert bits[0] == 0, f"start bit at cycle {i} shorter than half a bit"
        byte = sum(b << k for k, b in enumerate(bits[1:9]))
        frames.append((i, byte, bits[9] == 1))
        i = mid + 9 * divisor
    return frames


def run_tx(data, divisor, idle=0.0, seed=0):
    """Send ``data`` through a transmitter (valid dropped with probability ``idle``
    per byte); return the ``tx`` level of every cycle."""
    rng = np.random.default_rng(seed)
    dut = UARTTx(divisor)
    levels = []
    n_cycles = (len(data) + 4) * 10 * divisor * (2 if idle else 1)

    async def feed(ctx):
        for byte in data:
            if rng.random() < idle:
                ctx.set(dut.data.valid, 0)
                await ctx.tick().repeat(int(rng.integers(1, 3 * divisor)))
            ctx.set(dut.data.payload, byte)
            ctx.set(dut.data.valid, 1)
            await ctx.tick().until(dut.data.ready)
        ctx.set(dut.data.valid, 0)

    async def sample(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            levels.append(tx)
            if len(levels) == n_cycles:
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(sample)
    sim.run()
    return levels


@pytest.mark.parametrize("cls", [UARTRx, UARTTx])
@pytest.mark.parametrize("divisor", [3, 0, -8, 8.0, "8", True])
def test_bad_divisor(cls, divisor):
    with pytest.raises(ValueError, match=r"^UART divisor must be an integer of at least 4 clock "
                                         rf"cycles per bit, not {divisor!r}$"):
        cls(divisor)


@pytest.mark.parametrize("divisor, rate", [(4, 1.0), (8, 1.0), (8, 1.02), (8, 0.98),
                                           (13, 1.02), (13, 0.98)])
def test_rx_random_bytes(divisor, rate):
    seed = 100 + divisor
    data = [int(b) for b in np.random.default_rng(seed).integers(0, 256, size=64)]
    bits = [b for byte in data for b in frame_bits(byte)]
    got, errors = run_rx(line_runs(bits, divisor / rate), divisor)
    assert got == data, f"seed {seed}, divisor {divisor}, rate {rate}"
    assert errors == {"frame_error": 0, "overrun": 0}, f"seed {seed}"


def test_rx_idle_gaps():
    seed, divisor = 7, 8
    rng = np.random.default_rng(seed)
    data = [int(b) for b in rng.integers(0, 256, size=32)]
    bits = []
    for byte in data:
        bits += frame_bits(byte) + [1] * int(rng.integers(0, 4))
    got, errors = run_rx(line_runs(bits, divisor), divisor)
    assert got == data, f"seed {seed}"
    assert errors == {"frame_error": 0, "overrun": 0}, f"seed {seed}"


@pytest.mark.parametrize("divisor", [4, 8, 10])
def test_tx_back_to_back(divisor):
    seed = 200 + divisor
    data = [int(b) for b in np.random.default_rng(seed).integers(0, 256, size=48)]
    frames = decode_line(run_tx(data, divisor), divisor)
    assert [byte for _, byte, _ in frames] == data, f"seed {seed}"
    assert all(ok for _, _, ok in frames), f"seed {seed}: bad stop bit"
    starts = np.array([start for start, _, _ in frames])
    # No idle time between frames while data is always valid.
    assert np.all(np.diff(starts) == 10 * divisor), f"seed {seed}"


def test_tx_with_gaps():
    seed, divisor = 11, 8
    data = [int(b) for b in np.random.default_rng(seed).integers(0, 256, size=32)]
    frames = decode_line(run_tx(data, divisor, idle=0.5, seed=seed), divisor)
    assert [(byte, ok) for _, byte, ok in frames] == [(b, True) for b in data], f"seed {seed}"


@pytest.mark.parametrize("divisor", [4, 9])
def test_loopback(divisor):
    seed = 300 + divisor
    rng = np.random.default_rng(seed)
    data = [int(b) for b in rng.integers(0, 256, size=48)]
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got, errors = [], []

    async def feed(ctx):
        for byte in data:
            if rng.random() < 0.3:
                await ctx.tick().repeat(int(rng.integers(1, 20 * divisor)))
            ctx.set(tx.data.payload, byte)
            ctx.set(tx.data.valid, 1)
            await ctx.tick().until(tx.data.ready)
            ctx.set(tx.data.valid, 0)

    async def collect(ctx):
        ctx.set(rx.data.ready, 1)
        while len(got) < len(data):
            payload, fe, ov = await ctx.tick().sample(rx.data.payload, rx.frame_error,
                                                      rx.overrun).until(
                rx.data.valid | rx.frame_error | rx.overrun)
            if fe or ov:
                errors.append((fe, ov))
                break
            got.append(payload)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(feed)
    sim.add_testbench(collect)
    sim.run_until(1e-6 * 40 * divisor * len(data) * 10)  # bounded: a bug must not hang
    assert errors == [], f"seed {seed}"
    assert got == data, f"seed {seed}"


def test_rx_frame_error():
    # The line must go high again before the next start bit can be told apart.
    divisor = 8
    bits = frame_bits(0x5A, stop=0) + [1] + frame_bits(0xC3)
    got, errors = run_rx(line_runs(bits, divisor), divisor)
    assert got == [0xC3]
    assert errors == {"frame_error": 1, "overrun": 0}


def test_rx_break_is_one_error():
    # A line held low for three frames: one error, then it resynchronizes on the
    # first start bit after the line returns high.
    divisor = 8
    bits = [0] * 30 + [1] + frame_bits(0x81)
    got, errors = run_rx(line_runs(bits, divisor), divisor)
    assert got == [0x81]
    assert errors == {"frame_error": 1, "overrun": 0}


def test_rx_rejects_glitches():
    seed, divisor = 17, 8
    rng = np.random.default_rng(seed)
    runs = [(1, 20)]
    for _ in range(20):
        # Low pulses shorter than half a bit, far enough apart to be judged one by one.
        runs += [(0, int(rng.integers(1, divisor // 2))), (1, int(rng.integers(divisor, 30)))]
    bits = frame_bits(0x3C)
    runs += line_runs(bits, divisor, lead=1)
    got, errors = run_rx(runs, divisor)
    assert got == [0x3C], f"seed {seed}"
    assert errors == {"frame_error": 0, "overrun": 0}, f"seed {seed}"


def test_rx_overrun():
    # Three bytes arrive while nobody reads: the first is held, the other two dropped.
    divisor = 8
    bits = frame_bits(0x11) + frame_bits(0x22) + frame_bits(0x33)
    runs = line_runs(bits, divisor)
    later = sum(n for _, n in runs)
    runs += line_runs(frame_bits(0x44), divisor, lead=1)
    got, errors = run_rx(runs, divisor, ready_at=later)
    assert got == [0x11, 0x44]
    assert errors == {"frame_error": 0, "overrun": 2}
