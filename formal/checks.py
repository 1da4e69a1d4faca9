"""The formal checks as named units: what the tests and ``python -m formal`` run.

Each check runs one or more sby tasks and returns an :class:`Outcome`: whether the
check holds (for a mutant: whether the spec caught it), what kind of result it is
(a proof by k-induction or a bounded check, with its depth) and how long sby took.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from darbgen.config import EngineConfig
from darbgen.hdl import IndexDecoder, Lane
from darbgen.hdl import engine as _engine
from darbgen.packing import load_words

from .decoder import DECODER_CONFIGS, DecoderSpec
from .engine import ENGINE_LAYERS, FORMAL_ENGINE, EngineSpec, skeleton
from .mutants import (LANE_MUTANTS, MAP_UNIT_MUTANTS, PROCESSOR_MUTANTS,
                      SEQUENCED_LANE_MUTANTS, STEP_END_MUTANTS, mutant, replaced)
from .order import ORDER_CONFIGS, ORDER_DEPTH, ProgramOrderSpec, free_parts
from .processor import PROCESSOR_CONFIG, ProcessorSpec
from .sby import run_sby
from .scheduler import SCHEDULER_CONFIGS, SchedulerSpec
from .sequencer import SEQUENCED_CONFIG, SequencedSchedulerSpec

__all__ = ["Outcome", "Check", "prove_decoder", "decoder_mutant_caught", "prove_scheduler",
           "scheduler_mutant_caught", "check_sequenced_lane", "sequenced_mutant_caught",
           "check_processor", "processor_mutant_caught", "prove_order", "order_mutant_caught",
           "check_engine",
           "engine_mutant_caught", "random_skeletons", "all_checks"]

#: k-induction depth of the decoder proofs (the invariant makes it 1-inductive).
DECODER_DEPTH = 2
#: Cycles of the decoder's cover run (a beat in a row's third block needs 3).
DECODER_COVER_DEPTH = 4
#: k-induction depth of the scheduler proofs (a row's header address is 2 cycles old).
SCHEDULER_DEPTH = 4
#: Cycles of the scheduler's cover run (a start, then the third row's second beat).
SCHEDULER_COVER_DEPTH = 12
#: Cycles of the sequenced lane's bounded check in the default suite (its cover, the
#: second step's second row after a rewind, needs 10; 24 cycles take ~90 s: slow).
SEQUENCER_DEPTH = 16
#: Cycles of the whole processor's bounded check in the default suite: the loads, an
#: input and the first step's start and gather (each solver step costs more the
#: deeper it goes: 14 cycles took about a minute on a shared core).
PROCESSOR_DEPTH = 12
#: Cycles of the processor's cover: a step writing the scratchpad, then a gathered
#: last step at two positions (reached at 76).
PROCESSOR_COVER_DEPTH = 80
#: Cycles of the program-order proof's cover (the second step's start: 23 cycles;
#: a gathered step's second position: 25).
ORDER_COVER_DEPTH = 30
#: Cycles of its whole-inference cover (two steps: 45; a gathered step at two
#: positions: 48; an LSTM step: 12; before e3c0ce2's START cycle per step and
#: registered `again`, which made 50 too few for the gathered step).
ORDER_INFERENCE_DEPTH = 56
#: Cycles of the bounded run from reset that must show a step-end mutant's fault (a
#: step or a position ends at about 22).
ORDER_MUTANT_DEPTH = 30


@dataclass
class Outcome:
    """What one check found.

    Parameters
    ----------
    holds : bool
        The property holds (for a mutant: the spec found its counterexample).
    kind : str
        ``"proof"`` (k-induction: every reachable state), ``"bounded"`` or
        ``"mutant caught"``.
    depth : int
        The k-induction or BMC depth in cycles.
    results : list of SbyResult
    """

    holds: bool
    kind: str
    depth: int
    results: list = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.results)

    def report(self) -> str:
        """The sby logs of the tasks, for a failure message."""
        return "\n".join(f"--- {r.name} ({r.mode} {r.depth}): {r.status}\n{r.log[-4000:]}"
                         for r in self.results)


def _proved(spec_of, name: str, workdir, depth: int, cover_depth: int, **options) -> Outcome:
    """k-induction of ``spec_of()`` at ``depth``, and its cover reached from the initial
    state within ``cover_depth`` (the assumptions leave real behaviour: not vacuous);
    ``options`` go to :func:`~formal.sby.run_sby`."""
    proof = run_sby(spec_of(), name, workdir, mode="prove", depth=depth, **options)
    cover = run_sby(spec_of(), f"{name}-cover", workdir, mode="cover", depth=cover_depth,
                    **options)
    return Outcome(proof.status == "PASS" and cover.status == "PASS", "proof", depth,
                   [proof, cover])


def _caught(result, covers=()) -> Outcome:
    """A mutant's check: caught when sby found a counterexample (``FAIL``)."""
    caught = result.status == "FAIL" and bool(result.failed_properties)
    return Outcome(caught, "mutant caught", result.depth, [*covers, result])


def prove_decoder(config: EngineConfig, name: str, workdir) -> Outcome:
    """Prove :class:`~darbgen.hdl.IndexDecoder` for ``config`` (k-induction), and reach its
    cover (the assumptions leave long rows possible: the proof is not vacuous)."""
    return _proved(lambda: DecoderSpec(config), f"decoder-{name}", workdir, DECODER_DEPTH,
                   DECODER_COVER_DEPTH)


def decoder_mutant_caught(config: EngineConfig, fault: str, workdir) -> Outcome:
    """Run the decoder proof, contract assertions only, on the mutant ``fault``: caught
    when sby finds a counterexample from the initial state (``FAIL``)."""
    dut = mutant(IndexDecoder, fault)(config)
    return _caught(run_sby(DecoderSpec(config, dut, invariants=False),
                           f"decoder-mutant-{fault}", workdir, mode="prove",
                           depth=DECODER_DEPTH))


def prove_scheduler(config: EngineConfig, name: str, workdir) -> Outcome:
    """Prove a :class:`~darbgen.hdl.Lane`'s issue scheduler for ``config``'s lane sizes
    (k-induction), and reach its cover (the proof is not vacuous)."""
    return _proved(lambda: SchedulerSpec(config), f"scheduler-{name}", workdir,
                   SCHEDULER_DEPTH, SCHEDULER_COVER_DEPTH)


def scheduler_mutant_caught(config: EngineConfig, fault: str, workdir) -> Outcome:
    """The scheduler spec on the lane mutant ``fault``, bounded from the initial state
    (a load, a start and a few rows fit in the cover's depth): caught when sby finds a
    counterexample (``FAIL``), which an induction step alone could not show."""
    dut = mutant(Lane, fault)(config)
    return _caught(run_sby(SchedulerSpec(config, dut), f"scheduler-mutant-{fault}", workdir,
                           mode="bmc", depth=SCHEDULER_COVER_DEPTH))


def check_sequenced_lane(depth: int, workdir) -> Outcome:
    """Bounded check of a sequenced lane (the processor's) for ``depth`` cycles from
    reset, and its cover: a rewind, then the second row of the second step."""
    name = f"sequencer-bmc{depth}"
    result = run_sby(SequencedSchedulerSpec(SEQUENCED_CONFIG), name, workdir, mode="bmc",
                     depth=depth, map_memories=True)
    cover = run_sby(SequencedSchedulerSpec(SEQUENCED_CONFIG), f"{name}-cover", workdir,
                    mode="cover", depth=depth, map_memories=True)
    return Outcome(result.status == "PASS" and cover.status == "PASS", "bounded", depth,
                   [result, cover])


def sequenced_mutant_caught(fault: str, workdir) -> Outcome:
    """The sequenced-lane check on the mutant ``fault``: caught when it FAILs."""
    c = SEQUENCED_CONFIG
    dut = mutant(Lane, fault, SEQUENCED_LANE_MUTANTS)(c, sequenced=True, slots=c.lane_rows)
    return _caught(run_sby(SequencedSchedulerSpec(c, dut), f"sequencer-mutant-{fault}",
                           workdir, mode="bmc", depth=SEQUENCER_DEPTH, map_memories=True))


def check_processor(depth: int, workdir) -> Outcome:
    """Bounded check of the whole processor's sequencer (:mod:`formal.processor`) for
    ``depth`` cycles from reset, and its short cover (a gather read of an entry the
    image wrote)."""
    name = f"processor-bmc{depth}"
    result = run_sby(ProcessorSpec(PROCESSOR_CONFIG), name, workdir, mode="bmc",
                     depth=depth, map_memories=True, split=True)
    cover = run_sby(ProcessorSpec(PROCESSOR_CONFIG), f"{name}-cover", workdir, mode="cover",
                    depth=PROCESSOR_DEPTH, map_memories=True, split=True)
    return Outcome(result.status == "PASS" and cover.status == "PASS", "bounded", depth,
                   [result, cover])


def _processor_cover(workdir) -> Outcome:
    """The processor spec's cover alone (slow): its assumptions leave real inferences."""
    result = run_sby(ProcessorSpec(PROCESSOR_CONFIG, cover="inference"), "processor-cover",
                     workdir, mode="cover",
                     depth=PROCESSOR_COVER_DEPTH, map_memories=True, split=True)
    return Outcome(result.status == "PASS", "bounded", PROCESSOR_COVER_DEPTH, [result])


def processor_mutant_caught(fault: str, workdir, depth: int = None) -> Outcome:
    """The processor check on the sequencer (:data:`~formal.mutants.PROCESSOR_MUTANTS`) or
    gather (:data:`~formal.mutants.MAP_UNIT_MUTANTS`) fault ``fault``: caught when it
    FAILs within ``depth`` cycles (default :data:`PROCESSOR_DEPTH`)."""
    from darbgen.hdl import processor_conv
    from darbgen.hdl.processor import Processor
    from darbgen.hdl.processor_conv import MapUnit

    depth = depth or PROCESSOR_DEPTH
    name = f"processor-mutant-{fault}"
    if fault in MAP_UNIT_MUTANTS:
        with replaced(processor_conv, "MapUnit", mutant(MapUnit, fault, MAP_UNIT_MUTANTS)):
            return _caught(run_sby(ProcessorSpec(PROCESSOR_CONFIG), name, workdir,
                                   mode="bmc", depth=depth, map_memories=True, split=True))
    dut = mutant(Processor, fault, PROCESSOR_MUTANTS)(PROCESSOR_CONFIG, spram=False,
                                                       table_in_banks=False)
    return _caught(run_sby(ProcessorSpec(PROCESSOR_CONFIG, dut), name, workdir, mode="bmc",
                           depth=depth, map_memories=True, split=True))


def prove_order(name: str, workdir) -> Outcome:
    """Prove the processor's program order (:mod:`formal.order`) on
    :data:`~formal.order.ORDER_CONFIGS` ``[name]`` by k-induction, and reach its cover
    (the second step, or a gathered step's second position, starts)."""
    config = ORDER_CONFIGS[name]
    return _proved(lambda: ProgramOrderSpec(config), f"order-{name}", workdir, ORDER_DEPTH,
                   ORDER_COVER_DEPTH, map_memories=True, split=True)


def _order_inference(name: str, workdir) -> Outcome:
    """The program-order spec's whole-inference cover alone (slower)."""
    result = run_sby(ProgramOrderSpec(ORDER_CONFIGS[name], cover="inference"),
                     f"order-{name}-inference", workdir, mode="cover",
                     depth=ORDER_INFERENCE_DEPTH, map_memories=True, split=True)
    return Outcome(result.status == "PASS", "bounded", ORDER_INFERENCE_DEPTH, [result])


def order_mutant_caught(fault: str, workdir, name: str = "gather") -> Outcome:
    """The program-order spec on the sequencer fault ``fault`` (of
    :data:`~formal.mutants.STEP_END_MUTANTS` or :data:`~formal.mutants.PROCESSOR_MUTANTS`)
    in processor ``name`` (``"gather-lstm"`` for a ``cell-`` fault), bounded from reset
    (an induction step alone cannot show a counterexample is reachable): caught when it
    FAILs within :data:`ORDER_MUTANT_DEPTH` cycles."""
    from darbgen.hdl.processor import Processor

    faults = STEP_END_MUTANTS if fault in STEP_END_MUTANTS else PROCESSOR_MUTANTS
    if fault.startswith("cell-"):
        name = "gather-lstm"                # a fault of the CELL state needs a cell
    config = ORDER_CONFIGS[name]
    with free_parts():          # the mutant's namespace is taken now
        dut = mutant(Processor, fault, faults)(config, spram=False, table_in_banks=False)
    return _caught(run_sby(ProgramOrderSpec(config, dut), f"order-mutant-{fault}", workdir,
                           mode="bmc", depth=ORDER_MUTANT_DEPTH, map_memories=True,
                           split=True))


# Cycles of a complete run of the real engine, per (layer, stalls, vectors): the
# mutant checks reuse the real engine's.
_RUN_CYCLES = {}


def _engine_depth(layer, stalls, vectors, workdir, name) -> tuple:
    """The cycles a complete run takes: one more than the first cycle at which the cover
    is reached (with free stalls: the run with none); and the cover runs made."""
    stalls = "none" if stalls == "any" else stalls
    key = (layer.name, stalls, vectors)
    if key in _RUN_CYCLES:
        return _RUN_CYCLES[key], []
    spec = EngineSpec(FORMAL_ENGINE, layer, vectors=vectors, stalls=stalls)
    cover = run_sby(spec, f"{name}-cover", workdir, mode="cover", depth=200,
                    map_memories=True)
    steps = cover.cover_steps
    if cover.status != "PASS" or not steps:
        return None, [cover]
    _RUN_CYCLES[key] = steps[0] + 1
    return steps[0] + 1, [cover]


def check_engine(layer, workdir, *, stalls: str = "none", vectors: int = 2, slack: int = 0,
                 fault: tuple | None = None, name: str | None = None) -> Outcome:
    """Bounded check of the engine on ``layer``'s skeleton with free weights, offsets and
    inputs, against the naive reference.

    A cover run first finds the cycles a complete run takes; the bounded check then
    covers that many cycles plus ``slack`` (with ``stalls="any"``: traces with up to
    ``slack`` idle or back-pressured cycles come out complete within the depth).

    Parameters
    ----------
    fault : (class, name), optional
        Build the engine with this mutant of :class:`~darbgen.hdl.IndexDecoder` or
        :class:`~darbgen.hdl.Lane`; the outcome then holds if the check fails.
    """
    name = name or f"engine-{layer.name}-{stalls}-{vectors}v"
    depth, covers = _engine_depth(layer, stalls, vectors, workdir, name)
    if depth is None:
        return Outcome(False, "bounded", 0, covers)
    depth += slack
    spec_args = dict(vectors=vectors, stalls=stalls,
                     depth=None if stalls == "any" else depth)
    if fault is None:
        result = run_sby(EngineSpec(FORMAL_ENGINE, layer, **spec_args), name, workdir,
                         mode="bmc", depth=depth, map_memories=True)
        return Outcome(result.status == "PASS", "bounded", depth, [*covers, result])
    cls, fault_name = fault
    with replaced(_engine, cls.__name__, mutant(cls, fault_name)):
        result = run_sby(EngineSpec(FORMAL_ENGINE, layer, **spec_args),
                         f"{name}-mutant-{fault_name}", workdir, mode="bmc", depth=depth,
                         map_memories=True)
    return _caught(result, covers)


def engine_mutant_caught(cls, fault: str, workdir, layer_name: str = "two-full-lanes"):
    """The engine check on a layer, with one decoder or lane fault: caught when it FAILs."""
    return check_engine(ENGINE_LAYERS[layer_name], workdir, fault=(cls, fault))


def random_skeletons(count: int, seed: int) -> list:
    """``count`` random layer skeletons that fit :data:`~formal.engine.FORMAL_ENGINE`
    (seeded; 1 to 4 rows, b in {2, 4}, k in 0..2, 1 to 6 columns)."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        cols = rng.randint(1, FORMAL_ENGINE.max_cols)
        rows = [(rng.choice([2, 4]), rng.randint(0, 2)) for _ in range(rng.randint(1, 4))]
        try:
            layer = skeleton(f"random{seed}-{len(out)}", cols, rows)
            load_words(layer, FORMAL_ENGINE)               # fits the engine?
        except ValueError:       # ArtifactError (no weight) or ConfigError (too long)
            continue
        out.append(layer)
    return out


@dataclass(frozen=True)
class Check:
    """One named check: ``run(workdir) -> Outcome``; ``slow`` ones stay out of the
    default test suite."""

    name: str
    what: str
    run: object
    slow: bool = False


def all_checks() -> list:
    """Every check, in the order of docs/formal.md."""
    checks = []
    for name, config in DECODER_CONFIGS.items():
        checks.append(Check(f"decoder/{name}", f"decoder columns, shifts {config.shifts}, "
                            f"k <= {config.max_keep}, {config.max_cols} columns",
                            lambda w, c=config, n=name: prove_decoder(c, n, w)))
    base = DECODER_CONFIGS["darb-1to8-k4-45cols"]
    for fault in ("shift-off-by-one", "offset-msb-dropped", "block-wraps-early",
                  "no-row-restart"):
        checks.append(Check(f"decoder-mutant/{fault}", f"decoder with fault {fault}",
                            lambda w, f=fault: decoder_mutant_caught(base, f, w)))
    for name, config in SCHEDULER_CONFIGS.items():
        checks.append(Check(f"scheduler/{name}", f"lane issue order, {config.lane_rows} rows, "
                            f"{config.lane_depth} beats, nnz <= {config.max_row_nnz}",
                            lambda w, c=config, n=name: prove_scheduler(c, n, w)))
    for fault in LANE_MUTANTS:
        checks.append(Check(f"scheduler-mutant/{fault}", f"lane scheduler with fault {fault}",
                            lambda w, f=fault: scheduler_mutant_caught(
                                SCHEDULER_CONFIGS["rows4-depth16-nnz8"], f, w)))
    for depth, slow in ((SEQUENCER_DEPTH, False), (24, True)):
        checks.append(Check(f"sequencer/bmc{depth}", f"processor lane: steps in order, none "
                            f"skipped or repeated, beats continue across steps; {depth} cycles",
                            lambda w, d=depth: check_sequenced_lane(d, w), slow))
    for fault in SEQUENCED_LANE_MUTANTS:
        checks.append(Check(f"sequencer-mutant/{fault}", f"processor lane with fault {fault}",
                            lambda w, f=fault: sequenced_mutant_caught(f, w)))
    for depth, slow in ((PROCESSOR_DEPTH, False), (16, True)):
        checks.append(Check(f"processor/bmc{depth}", f"whole processor: steps 0, 1, ... each "
                            f"once, positions in order, gather reads written entries or the "
                            f"zero border; {depth} cycles",
                            lambda w, d=depth: check_processor(d, w), slow))
    checks.append(Check("processor/cover", f"whole processor: a two-step inference ending "
                        f"in a gathered step at two positions, within {PROCESSOR_COVER_DEPTH} "
                        f"cycles", lambda w: _processor_cover(w), slow=True))
    for fault in (*PROCESSOR_MUTANTS, *MAP_UNIT_MUTANTS):
        checks.append(Check(f"processor-mutant/{fault}", f"processor with fault {fault}",
                            lambda w, f=fault: processor_mutant_caught(f, w)))
    for name, slow in (("gather", False), ("linear", True), ("gather-lstm", True)):
        checks.append(Check(f"order/{name}", f"sequencer with free parts ({name}): steps "
                            f"0, 1, ... each once up to `last`, positions 0..n-1 each once, "
                            f"lanes started/rewound only where they may",
                            lambda w, n=name: prove_order(n, w), slow))
        checks.append(Check(f"order/{name}/inference", f"program-order spec ({name}): a "
                            f"whole inference ends within {ORDER_INFERENCE_DEPTH} cycles",
                            lambda w, n=name: _order_inference(n, w), slow=True))
    # The default suite keeps the proof on the gather processor and one step-end fault.
    for fault in (*STEP_END_MUTANTS, *PROCESSOR_MUTANTS):
        checks.append(Check(f"order-mutant/{fault}", f"program-order proof on fault {fault}",
                            lambda w, f=fault: order_mutant_caught(f, w),
                            slow=fault != "pc-advances-twice"))
    for layer_name, stalls, vectors, slack, slow in (
            ("two-full-lanes", "none", 2, 0, False),
            ("partial-blocks", "periodic", 2, 0, False),
            ("one-row", "any", 1, 10, False),
            ("two-full-lanes", "periodic", 2, 0, True),
            ("partial-blocks", "none", 2, 0, True),
            ("one-row", "any", 2, 12, True)):
        layer = ENGINE_LAYERS[layer_name]
        checks.append(Check(
            f"engine/{layer_name}/{stalls}/{vectors}v",
            f"engine vs reference, {layer_name}, stalls {stalls}, {vectors} vectors"
            + (f", {slack} cycles of slack" if slack else ""),
            lambda w, lay=layer, s=stalls, v=vectors, sl=slack:
                check_engine(lay, w, stalls=s, vectors=v, slack=sl),
            slow))
    for cls, fault, slow in ((IndexDecoder, "shift-off-by-one", False),
                             (Lane, "first-beat-twice", False),
                             (IndexDecoder, "no-row-restart", True),
                             (Lane, "row-drops-last-beat", True)):
        checks.append(Check(f"engine-mutant/{fault}", f"engine with {cls.__name__} fault {fault}",
                            lambda w, c=cls, f=fault: engine_mutant_caught(c, f, w), slow))
    for i, layer in enumerate(random_skeletons(12, seed=7)):
        for stalls in ("none", "periodic"):
            rows = ", ".join(f"{b}/{k}" for b, k in zip(layer.block_sizes, layer.keep))
            checks.append(Check(f"engine-random/{i}/{stalls}",
                                f"engine vs reference, random skeleton (seed 7): "
                                f"{layer.cols} columns, rows b/k {rows}; stalls {stalls}",
                                lambda w, lay=layer, s=stalls: check_engine(lay, w, stalls=s),
                                slow=True))
    return checks
