"""Formal checks (formal/): the decoder and a lane's issue scheduler proven by
k-induction, the engine checked against a naive reference with free weights, offsets and
inputs, and broken hardware caught."""

import sys
from pathlib import Path

import pytest
from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Assume, Signal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # the repository's formal/

from darbgen.config import ConfigError, EngineConfig  # noqa: E402
from darbgen.hdl import IndexDecoder, Lane  # noqa: E402
from formal.checks import all_checks, prove_decoder  # noqa: E402
from formal.engine import FORMAL_ENGINE, EngineSpec, skeleton  # noqa: E402
from formal.mutants import mutant  # noqa: E402
from formal.sby import FormalSpec, run_sby, solver_available  # noqa: E402

from conftest import random_layer  # noqa: E402

pytestmark = pytest.mark.skipif(not solver_available(),
                                reason="yowasp-sby or yices-smt2 is not installed "
                                       "(pip install -e '.[formal]')")

CHECKS = all_checks()


@pytest.mark.parametrize("check", [pytest.param(c, id=c.name,
                                                marks=[pytest.mark.slow] if c.slow else [])
                                   for c in CHECKS])
def test_formal_check(check, tmp_path):
    outcome = check.run(tmp_path)
    assert outcome.holds, f"{check.name}: {check.what}\n{outcome.report()}"


def test_every_kind_of_check_is_in_the_default_suite():
    fast = [c.name.split("/")[0] for c in CHECKS if not c.slow]
    assert {"decoder", "decoder-mutant", "scheduler", "scheduler-mutant", "engine",
            "engine-mutant", "processor", "processor-mutant", "order",
            "order-mutant"} <= set(fast)


def test_decoder_proven_for_a_layers_block_size_table(rng, tmp_path):
    # The engine a real layer asks for (EngineConfig.for_layers), not a hand-made table.
    layer = random_layer(rng, 12, 77, [2, 4, 8, 32], keep=3)
    config = EngineConfig.for_layers([layer], lanes=2)
    outcome = prove_decoder(config, "from-layer", tmp_path)
    assert outcome.holds, outcome.report()
    assert outcome.kind == "proof"


def test_a_mutant_follows_the_real_source():
    broken = mutant(IndexDecoder, "shift-off-by-one")
    assert issubclass(broken, IndexDecoder) and broken.elaborate is not IndexDecoder.elaborate
    with pytest.raises(ValueError, match=r"^IndexDecoder has no mutant 'nope'; known: "
                                         r"shift-off-by-one, .*$"):
        mutant(IndexDecoder, "nope")
    with pytest.raises(ValueError, match=r"^Lane has no mutant 'shift-off-by-one'; known: "
                                         r"row-drops-last-beat, first-beat-twice, "
                                         r"prefetch-off-by-one, skips-a-row$"):
        mutant(Lane, "shift-off-by-one")


def test_every_gateware_mutant_still_applies():
    # Most mutant checks are slow: a change of the text a mutant edits fails here, fast.
    from formal.mutants import (DECODER_MUTANTS, LANE_MUTANTS, MAP_UNIT_MUTANTS,
                                PROCESSOR_MUTANTS, SEQUENCED_LANE_MUTANTS, STEP_END_MUTANTS)

    from darbgen.hdl.processor import Processor
    from darbgen.hdl.processor_conv import MapUnit

    for cls, faults in ((Processor, PROCESSOR_MUTANTS), (Processor, STEP_END_MUTANTS),
                        (MapUnit, MAP_UNIT_MUTANTS), (Lane, SEQUENCED_LANE_MUTANTS),
                        (Lane, LANE_MUTANTS), (IndexDecoder, DECODER_MUTANTS)):
        for name in faults:
            assert issubclass(mutant(cls, name, faults), cls), name


def test_vacuous_assumptions_are_an_error_not_a_pass(tmp_path):
    class Contradiction(FormalSpec):
        def describe(self, m):
            a, count = AnyConst(4), Signal(4)
            m.d.sync += count.eq(count + 1)
            m.d.comb += [Assume(a == 3), Assume(a == 4), Assert(count != 2)]

    assert run_sby(Contradiction(), "vacuous", tmp_path, mode="bmc", depth=4).status == "ERROR"


def test_run_sby_rejects_bad_arguments(tmp_path):
    spec = EngineSpec(FORMAL_ENGINE, skeleton("s", 3, [(2, 1)]))
    spec._MustUse__silence = True           # never elaborated: the arguments are refused
    with pytest.raises(ValueError, match=r"^mode must be 'prove', 'bmc' or 'cover', not 'live'$"):
        run_sby(spec, "x", tmp_path, mode="live")
    with pytest.raises(ValueError, match=r"^solver must be one of yices, z3, not 'cvc5'$"):
        run_sby(spec, "x", tmp_path, solver="cvc5")
    with pytest.raises(TypeError, match=r"^spec must be a FormalSpec, not 'top.il'$"):
        run_sby("top.il", "x", tmp_path)


def test_engine_spec_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"^stalls must be one of none, periodic, any, "
                                         r"not 'some'$"):
        EngineSpec(FORMAL_ENGINE, skeleton("s", 3, [(2, 1)]), stalls="some")
    with pytest.raises(ConfigError, match=r"^layer 'wide' has 7 columns, the engine takes 6$"):
        EngineSpec(FORMAL_ENGINE, skeleton("wide", 7, [(2, 1)]))


def test_processor_spec_rejects_bad_arguments():
    from formal.processor import PROCESSOR_CONFIG, ProcessorSpec

    from darbgen.processor import ProcessorConfig

    plain = ProcessorConfig(PROCESSOR_CONFIG.engine, lane_slots=1, table_depth=4, max_steps=2)
    with pytest.raises(ValueError, match=r"^the processor spec needs a processor with a "
                                         r"gather \(map_depth > 0\)$"):
        ProcessorSpec(plain)
    with pytest.raises(ValueError, match=r"^cover must be one of gather, inference, "
                                         r"not 'all'$"):
        ProcessorSpec(PROCESSOR_CONFIG, cover="all")


def test_program_order_spec_rejects_bad_arguments():
    from formal.order import ORDER_CONFIGS, ProgramOrderSpec

    with pytest.raises(ValueError, match=r"^cover must be one of step, inference, "
                                         r"not 'all'$"):
        ProgramOrderSpec(ORDER_CONFIGS["linear"], cover="all")
