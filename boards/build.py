"""Build a core for a board with the open toolchain and report what place and route found.

:func:`build` wraps the core in :class:`~darbgen.boards.wrapper.BoardTop`, runs
Amaranth's build script (Yosys, nextpnr, icepack/ecppack, all YoWASP) and writes
into ``outdir``:

- ``top.bin`` (iCE40) or ``top.bit`` (ECP5), the bitstream;
- ``report.json``: board, device, lanes, target and achieved clock, and the cell
  counts of nextpnr's "Device utilisation" block under nextpnr's own names;
- ``nextpnr.log``, ``yosys.log`` and ``build.log`` (the script's output).

Boards without an open flow (and ``do_build=False``) get the build plan instead:
the Verilog or RTLIL, the constraints and the build script.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.lib import wiring

from darbgen import toolenv
from darbgen.format import atomic_write

from .targets import Board, get_board
from .wrapper import BoardTop

__all__ = ["BuildError", "TimingError", "ClockTiming", "NextpnrLog", "parse_nextpnr_log",
           "build"]

# Lines of the log quoted in a BuildError.
LOG_TAIL_LINES = 30

# Keys of report.json that build() owns; extra_report may not replace them.
REPORT_KEYS = ("board", "device", "lanes", "target_mhz", "clock_mhz", "fmax_mhz", "resources",
               "bitstream", "generate_only", "build_seconds")


class BuildError(RuntimeError):
    """A build tool failed or is missing; the message ends with the tail of its log."""


class TimingError(RuntimeError):
    """Place and route finished, but the sync clock's fmax is below the board's target.

    The bitstream and ``report.json`` are written before this is raised.
    """


@dataclass(frozen=True)
class ClockTiming:
    """nextpnr's timing verdict for one clock.

    Parameters
    ----------
    fmax_mhz : float
        Maximum frequency of the clock.
    constraint_mhz : float or None
        The frequency it was checked against (``None`` if unconstrained).
    """

    fmax_mhz: float
    constraint_mhz: float | None


@dataclass(frozen=True)
class NextpnrLog:
    """The figures of a nextpnr log.

    Parameters
    ----------
    resources : dict
        ``{cell type: {"used": n, "available": m}}`` from the last "Device utilisation"
        block, cell types named as nextpnr names them (``ICESTORM_LC``, ``TRELLIS_COMB``…).
    clocks : dict
        ``{net name: ClockTiming}``, from the last "Max frequency for clock" line of each
        clock: the post-route figure (the earlier ones are placement estimates).
    """

    resources: dict
    clocks: dict

    def fmax_for(self, clock_mhz: float) -> float | None:
        """fmax of the clock constrained to ``clock_mhz``, in MHz.

        nextpnr reports a clock under a net name of its choosing (``clk``,
        ``$glbnet$clk``…), so the sync clock is found by its constraint. If several
        clocks share it, the slowest counts; with a single clock in the log, that one.
        """
        matches = [t.fmax_mhz for t in self.clocks.values()
                   if t.constraint_mhz is not None
                   and abs(t.constraint_mhz - clock_mhz) <= 0.01 + 1e-3 * clock_mhz]
        if matches:
            return min(matches)
        if len(self.clocks) == 1:
            return next(iter(self.clocks.values())).fmax_mhz
        return None


_UTILISATION_HEADER = re.compile(r"^Info: Device utilisation:\s*$")
_UTILISATION_LINE = re.compile(r"^Info:\s+(\S+):\s+(\d+)/\s*(\d+)\s+\d+%\s*$")
# nextpnr pads the clock names to align them ("for clock      'clk'") when several fail.
_FMAX_LINE = re.compile(r"^(?:Info|Warning|ERROR): Max frequency for clock\s+'([^']+)': "
                        r"([0-9.]+) MHz"
                        r"(?: \((?:PASS|FAIL) at ([0-9.]+) MHz\))?")


def parse_nextpnr_log(text: str) -> NextpnrLog:
    """Parse the utilisation and timing figures of a nextpnr (ice40 or ecp5) log.

    Parameters
    ----------
    text : str
        The log, as written by ``nextpnr-* --log``.

    Returns
    -------
    NextpnrLog
    """
    resources: dict = {}
    clocks: dict = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _UTILISATION_HEADER.match(line):
            resources = {}
            for item in lines[i + 1:]:
                found = _UTILISATION_LINE.match(item)
                if found is None:
                    break
                resources[found[1]] = {"used": int(found[2]), "available": int(found[3])}
            continue
        found = _FMAX_LINE.match(line)
        if found is not None:
            constraint = float(found[3]) if found[3] is not None else None
            clocks[found[1]] = ClockTiming(float(found[2]), constraint)
    return NextpnrLog(resources=resources, clocks=clocks)


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tool_missing(tool: str) -> bool:
    override = os.environ.get(tool.upper().replace("-", "_"))
    return shutil.which(override or tool) is None


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def _copy(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    atomic_write(dst, lambda f: f.write(data))


def build(core: wiring.Component, board: Board | str, outdir, *, lanes: int | None = None,
          extra_report: dict | None = None, do_build: bool = True) -> dict:
    """Build ``core`` for ``board`` and write the bitstream and ``report.json`` to ``outdir``.

    Parameters
    ----------
    core : wiring.Component
        A core with signature ``{"rx": In(1), "tx": Out(1)}``, built for
        ``board.clock_hz``.
    board : Board or str
        The target, or its name in :data:`~darbgen.boards.BOARDS`.
    outdir : path-like
        Output directory (created if needed).
    lanes : int, optional
        Engine lanes of ``core``, for the report; ``board.default_lanes`` when omitted.
    extra_report : dict, optional
        More JSON-serializable fields for ``report.json`` (build ID, config digest…).
    do_build : bool
        Run the tools. ``False`` (and always on boards without an open flow) only
        writes the build plan: RTLIL/Verilog, constraints and the build script.

    Returns
    -------
    dict
        The report: ``board``, ``device``, ``lanes``, ``target_mhz``, ``clock_mhz``,
        ``fmax_mhz`` (post-route, sync clock; ``None`` when only generating),
        ``resources`` (``{cell: {"used", "available"}}``), ``bitstream`` (file name or
        ``None``), ``generate_only`` (no tools were run), ``build_seconds``, then
        ``extra_report``.

    Raises
    ------
    ValueError
        Unknown board name, ``lanes`` not a positive integer, or ``extra_report``
        replaces a standard field.
    TypeError
        ``core`` does not have the core signature.
    BuildError
        A tool is missing or failed.
    TimingError
        The sync clock misses ``target_mhz``; the outputs are written first.
    """
    if not isinstance(board, Board):
        board = get_board(board)
    if lanes is not None and (not isinstance(lanes, int) or lanes < 1):
        raise ValueError(f"Lanes must be a positive integer, not {lanes!r}")
    extra_report = dict(extra_report or {})
    clash = sorted(set(extra_report) & set(REPORT_KEYS))
    if clash:
        raise ValueError(f"extra_report must not replace report fields, not {', '.join(clash)}")
    top = BoardTop(board, core)
    toolenv.setup()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    report = {
        "board": board.name,
        "device": board.device,
        "lanes": board.default_lanes if lanes is None else lanes,
        "target_mhz": board.target_mhz,
        "clock_mhz": board.clock_hz / 1e6,
        "fmax_mhz": None,
        "resources": {},
        "bitstream": None,
        "generate_only": not (board.open_flow and do_build),
        "build_seconds": None,
    }
    started = time.monotonic()
    platform = board.platform()

    overrides = {"synth_opts": board.synth_opts} if board.synth_opts else {}

    if report["generate_only"]:
        # The script in the plan fails on missed timing, as nextpnr does by default.
        platform.build(top, name="top", do_build=False, **overrides).extract(outdir)
        report["build_seconds"] = round(time.monotonic() - started, 1)
        report.update(extra_report)
        _write_json(outdir / "report.json", report)
        return report

    # Timing is judged below, from the log, after the outputs are written.
    overrides["nextpnr_opts"] = "--timing-allow-fail"
    plan = platform.build(top, name="top", do_build=False, **overrides)
    script = plan.files[f"{plan.script}.sh"]
    # Only the tools the script runs (the ULX3S platform also lists its programmer).
    missing = [tool for tool in platform.required_tools
               if f"${{{tool.upper().replace('-', '_')}" in script and _tool_missing(tool)]
    if missing:
        raise BuildError(f"Cannot build for board {board.name!r}: {', '.join(missing)} not "
                         f"found; install darbgen[fpga] (darbgen.toolenv finds the tools)")

    bitstream = f"top{board.bitstream_suffix}"
    # A failed build must not leave an earlier build's results looking current.
    for stale in (bitstream, "report.json", "nextpnr.log", "yosys.log", "build.log"):
        (outdir / stale).unlink(missing_ok=True)
    # YoWASP tools see only their working directory, so the script runs inside the build
    # directory and names every file relative to it.
    with tempfile.TemporaryDirectory(prefix=f"darbgen-{board.name}-") as tmp:
        tmp = Path(tmp)
        plan.extract(tmp)
        result = subprocess.run(["sh", f"{plan.script}.sh"], cwd=tmp, env=os.environ,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = result.stdout
        atomic_write(outdir / "build.log", lambda f: f.write(output.encode()))
        for name, keep_as in (("top.tim", "nextpnr.log"), ("top.rpt", "yosys.log")):
            if (tmp / name).exists():
                _copy(tmp / name, outdir / keep_as)
        if result.returncode != 0 or not (tmp / bitstream).exists():
            log = output
            if (tmp / "top.tim").exists():
                log = (tmp / "top.tim").read_text(errors="replace") + "\n" + output
            raise BuildError(f"Build for board {board.name!r} failed (exit code "
                             f"{result.returncode}); last lines of the log:\n{_tail(log)}")
        _copy(tmp / bitstream, outdir / bitstream)
        nextpnr = parse_nextpnr_log((tmp / "top.tim").read_text(errors="replace"))

    fmax = nextpnr.fmax_for(board.clock_hz / 1e6)
    if fmax is None:
        raise BuildError(f"Build for board {board.name!r}: no timing figure for the "
                         f"{board.clock_hz / 1e6:g} MHz sync clock in {outdir / 'nextpnr.log'}")
    report.update(fmax_mhz=fmax, resources=nextpnr.resources, bitstream=bitstream,
                  build_seconds=round(time.monotonic() - started, 1))
    report.update(extra_report)
    _write_json(outdir / "report.json", report)
    if fmax < board.clock_hz / 1e6:
        raise TimingError(f"Board {board.name!r} misses timing: sync clock fmax {fmax:g} MHz "
                          f"is below the {board.target_mhz:g} MHz target")
    return report
