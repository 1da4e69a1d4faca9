"""Byte transports between the host driver and a board (no torch).

:class:`Transport` is the whole interface the driver needs; :class:`SerialTransport`
implements it with pyserial, so a real board's ``/dev/ttyUSB1``, a simulated board's
``/dev/pts/N`` and any ``serial_for_url`` URL (``loop://``, ``socket://host:port``)
all work the same way.
"""

from __future__ import annotations

import time

__all__ = ["Transport", "SerialTransport", "LinkError", "MAX_BAUD"]

#: Fastest line rate a serial port is opened at (termios takes a C int; no UART bridge
#: on a supported board comes near it).
MAX_BAUD = 100_000_000


class LinkError(RuntimeError):
    """The link to the board failed (base of the driver's errors)."""


class Transport:
    """A full-duplex byte pipe.

    Members
    -------
    baud : int or None
        Line rate in bits per second, when there is one (for link efficiency).
    """

    baud: int | None = None

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, timeout: float) -> bytes:
        """Bytes that arrive within ``timeout`` seconds (``b""`` if none); returns as
        soon as some are available."""
        raise NotImplementedError

    def clock(self) -> float:
        """Seconds on the link's own clock, in which the driver measures its timeouts and
        deadline: monotonic time, or a simulated link's simulated time."""
        return time.monotonic()

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A serial port through pyserial.

    Parameters
    ----------
    url : str
        A device path or a ``serial.serial_for_url`` URL.
    baud : int
        Line rate; the board's gateware runs at a fixed baud, so this must match it.

    Raises
    ------
    LinkError
        The port cannot be opened.
    """

    def __init__(self, url: str, baud: int = 1_000_000):
        import serial

        if not isinstance(url, str):
            raise TypeError(f"url must be a string (a device path or a pyserial URL), "
                            f"not {url!r}")
        if isinstance(baud, bool) or not isinstance(baud, int):
            raise TypeError(f"baud must be an integer, not {baud!r}")
        if not 1 <= baud <= MAX_BAUD:
            raise ValueError(f"baud must be between 1 and {MAX_BAUD}, not {baud}")
        self.baud = baud
        try:
            self._port = serial.serial_for_url(url, baudrate=baud, timeout=0,
                                               write_timeout=None)
        except (serial.SerialException, ValueError) as e:
            raise LinkError(f"cannot open {url}: {e}") from None
        self._port.reset_input_buffer()

    def write(self, data: bytes) -> None:
        self._port.write(data)
        self._port.flush()

    def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            waiting = self._port.in_waiting
            if waiting:
                return self._port.read(waiting)
            left = deadline - time.monotonic()
            if left <= 0:
                return b""
            # One blocking read of a single byte wakes us as soon as data arrives.
            self._port.timeout = min(left, 0.05)
            data = self._port.read(1)
            self._port.timeout = 0
            if data:
                return data + self._port.read(self._port.in_waiting)

    def close(self) -> None:
        self._port.close()
