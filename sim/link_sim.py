"""The protocol controller in Amaranth's simulator behind the host's :class:`Transport`.

:class:`SimulatedLink` runs a :class:`~darbgen.hdl.device.Controller` (the gateware
that ``darbgen build`` and ``serve-sim`` put behind the UART) cycle by cycle and
exposes its byte streams as a :class:`~darbgen.host.transport.Transport`, so the real
host driver (:class:`~darbgen.host.driver.Board`) talks to the real controller
without a UART, a pseudo-terminal or wall-clock waits: time is simulated time, and a
run is reproducible. The fuzzers of :mod:`darbgen.sim.fuzz` use it::

    link = SimulatedLink(config)
    board = Board(link, timeout=link.seconds(4000))
    board.identify()

Bytes written go onto the controller's ``rx`` stream one every ``byte_cycles``
cycles (a UART delivers one every ``10 * divisor``); the device drops a frame after
``IDLE_BYTES`` byte times of silence, as :class:`~darbgen.hdl.device.Device` does.
"""

from __future__ import annotations

from collections import deque

from amaranth.sim import Simulator

from ..config import EngineConfig
from ..hdl.device import Controller, check_link
from ..hdl.protocol import IDLE_BYTES
from ..host.transport import Transport
from ..network import NetworkConfig

__all__ = ["SimulatedLink"]

# Simulated cycles per step of the simulator between checks of the transmit buffer.
_STEP = 32


class SimulatedLink(Transport):
    """A :class:`Controller` in Amaranth's simulator, as a byte transport.

    Parameters
    ----------
    config : EngineConfig or NetworkConfig
        The device's core.
    clock_hz, baud : int
        What the device reports in IDENTIFY (and hashes into its build ID); the
        simulator's clock runs at ``clock_hz``, so transport timeouts are simulated
        seconds.
    byte_cycles : int
        Cycles between bytes delivered to the controller (at least 1).

    Members
    -------
    controller : Controller or None
        The simulated controller, once the link has been used.
    cycles : int
        Simulated cycles so far.
    sent, received : int
        Bytes delivered to the device and bytes it sent.
    """

    #: Default clock and baud (an iCEBreaker's).
    CLOCK_HZ, BAUD = 12_000_000, 1_000_000

    def __init__(self, config: EngineConfig | NetworkConfig, *, clock_hz: int = CLOCK_HZ,
                 baud: int = BAUD, byte_cycles: int = 2):
        if isinstance(byte_cycles, bool) or not isinstance(byte_cycles, int) or byte_cycles < 1:
            raise ValueError(f"byte_cycles must be a positive integer, not {byte_cycles!r}")
        self.baud = baud
        self.clock_hz = clock_hz
        self.byte_cycles = byte_cycles
        check_link(config)              # fail now, not on first use
        self._config = config
        self.controller = None          # built on first use, with the simulator
        self.cycles = self.sent = self.received = 0
        self._rx: deque[int] = deque()
        self._tx = bytearray()
        self._sim = None

    async def _bench(self, ctx):
        ctl = self.controller
        ctx.set(ctl.tx.ready, 1)
        wait = 0
        while True:
            offer = bool(self._rx) and wait == 0
            ctx.set(ctl.rx.valid, offer)
            if offer:
                ctx.set(ctl.rx.payload, self._rx.popleft())
                self.sent += 1
                wait = self.byte_cycles - 1
            elif wait:
                wait -= 1
            if ctx.get(ctl.tx.valid):              # tx.ready is always 1
                self._tx.append(ctx.get(ctl.tx.payload))
                self.received += 1
            await ctx.tick()
            self.cycles += 1

    def clock(self) -> float:
        """Simulated seconds since the link began: the driver's timeouts count these."""
        return self.cycles / self.clock_hz

    def seconds(self, cycles: int) -> float:
        """Simulated seconds of ``cycles`` clock cycles (for driver timeouts)."""
        return cycles / self.clock_hz

    def run(self, cycles: int) -> None:
        """Advance the simulation by ``cycles`` clock cycles."""
        if self._sim is None:
            # Elaborating takes a while: a link that is never used costs nothing.
            self.controller = Controller(self._config, clock_hz=self.clock_hz, baud=self.baud,
                                         idle_cycles=IDLE_BYTES * self.byte_cycles)
            self._sim = Simulator(self.controller)
            self._sim.add_clock(1 / self.clock_hz)
            self._sim.add_testbench(self._bench, background=True)
        target = self.cycles + cycles
        while self.cycles < target:
            self._sim.advance()

    def write(self, data: bytes) -> None:
        self._rx.extend(bytes(data))

    def read(self, timeout: float) -> bytes:
        """Deliver what was written, then wait up to ``timeout`` simulated seconds for
        the device's bytes; return as soon as some have arrived (``b""`` if none).

        The silence is counted from the end of the transmission, as a host counts it
        from the end of its write."""
        while self._rx:
            self.run(_STEP)
        limit = self.cycles + max(1, round(timeout * self.clock_hz))
        while not self._tx and self.cycles < limit:
            self.run(min(_STEP, limit - self.cycles))
        if self._tx:
            # Let the rest of a frame in flight arrive: one read, one whole reply.
            quiet = 0
            while quiet < 4 * self.byte_cycles + 8:
                before = len(self._tx)
                self.run(4)
                quiet = 0 if len(self._tx) != before else quiet + 4
        data, self._tx = bytes(self._tx), bytearray()
        return data

    def drain(self, cycles: int) -> bytes:
        """Run ``cycles`` cycles and return (and forget) whatever the device sent."""
        while self._rx:
            self.run(_STEP)
        self.run(cycles)
        data, self._tx = bytes(self._tx), bytearray()
        return data
