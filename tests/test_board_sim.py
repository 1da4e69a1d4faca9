"""The simulated board: an echo design in Verilator, talked to with pyserial over a pty."""

import re
import sys
import threading
import time

import numpy as np
import pytest
import serial
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from darbgen.hdl.uart import UARTRx, UARTTx
from darbgen.sim.board_sim import BoardSim, build_bridge
from darbgen.sim.runner import SimulationError, simulator_available

pytestmark = pytest.mark.skipif(not simulator_available("verilator"),
                                reason="verilator is not installed")

DIVISOR = 8


class Echo(wiring.Component):
    """Sends back every byte it receives, through a small FIFO."""

    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __init__(self, divisor):
        self._divisor = divisor
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = UARTRx(self._divisor)
        m.submodules.fifo = fifo = SyncFIFO(width=8, depth=16)
        m.submodules.tx = tx = UARTTx(self._divisor)
        wiring.connect(m, rx.data, fifo.w_stream)
        wiring.connect(m, fifo.r_stream, tx.data)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        return m


@pytest.fixture(scope="module")
def echo_verilog():
    return verilog.convert(Echo(DIVISOR), name="echo_top", emit_src=False)


def echo(port, data):
    """Write ``data`` and read the same number of bytes back; returns (bytes, seconds)."""
    start = time.monotonic()
    port.write(data)
    got = port.read(len(data))
    return got, time.monotonic() - start


def test_echo_reconnect_and_exit(echo_verilog, request):
    seed = 20261121
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=2000, dtype=np.uint8).tobytes()
    with BoardSim(echo_verilog, "echo_top", DIVISOR) as board:
        assert board.port.startswith("/dev/")
        with serial.Serial(board.port, timeout=10) as port:
            got, seconds = echo(port, data)
        assert got == data, f"seed {seed}: {len(got)} of {len(data)} bytes echoed"
        # Each byte occupies 10 bits on rx, and the echo trails by one byte.
        request.node.user_properties += [
            ("bytes_per_s", round(len(data) / seconds)),
            ("active_cycles_per_s", round(len(data) * 10 * DIVISOR / seconds))]

        again = rng.integers(0, 256, size=300, dtype=np.uint8).tobytes()
        with serial.Serial(board.port, timeout=10) as port:
            got, _ = echo(port, again)
        assert got == again, f"seed {seed}: after reconnecting"
        assert board.returncode is None
    assert board.returncode == 0
    summary = re.search(r"(\d+) cycles in ([\d.]+) s.*?(\d+) bytes in, (\d+) bytes out",
                        board.log)
    assert summary, board.log
    assert int(summary[3]) == int(summary[4]) == 2300, board.log


def test_stream_beyond_pty_buffers(echo_verilog):
    # More than the pty holds in either direction: the bridge must stop reading while
    # its rx queue is full, and the client must read while it writes.
    seed = 7
    data = np.random.default_rng(seed).integers(0, 256, size=20000, dtype=np.uint8).tobytes()
    with BoardSim(echo_verilog, "echo_top", DIVISOR) as board:
        with serial.Serial(board.port, timeout=20) as port:
            writer = threading.Thread(target=port.write, args=(data,))
            writer.start()
            got = port.read(len(data))
            writer.join()
    assert got == data, f"seed {seed}: {len(got)} of {len(data)} bytes echoed"


def test_bad_divisor(echo_verilog):
    with pytest.raises(ValueError, match=r"^UART divisor must be an integer of at least 4 "
                                         r"clock cycles per bit, not 2$"):
        BoardSim(echo_verilog, "echo_top", 2)


def test_build_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DARBGEN_CACHE", str(tmp_path))
    with pytest.raises(SimulationError, match=r"(?s)^Verilator build of the simulated board "
                                              r"'broken' failed.*%Error"):
        build_bridge("module broken(input clk;\n", "broken")
    assert list((tmp_path / "board-sim").iterdir()) == []     # nothing half-built is kept


def test_start_failure(echo_verilog, monkeypatch):
    dying = [sys.executable, "-c", "import sys; sys.exit('no pty for you')"]
    monkeypatch.setattr(BoardSim, "command", lambda self: dying)
    board = BoardSim(echo_verilog, "echo_top", DIVISOR)
    with pytest.raises(SimulationError, match=r"(?s)did not start: it exited with code 1"
                                              r".*no pty for you"):
        board.start()
