"""The mutation bench's machinery (bench/mutation_bench.py runs every mutant, about
20 minutes): one mutant on a temporary copy of the committed tree is caught by the
Amaranth-simulator decoder test, the unmutated copy passes it, the checkout is never
touched, and every mutant still matches the source it mutates."""

import hashlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))        # as when run as a script: its helpers
_spec = importlib.util.spec_from_file_location("mutation_bench",
                                               ROOT / "bench" / "mutation_bench.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["mutation_bench"] = bench          # its dataclass looks itself up there
_spec.loader.exec_module(bench)

DECODER_TEST = "tests/test_engine_amaranth.py::test_index_decoder_matches_the_contract"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_planted_mutant_is_caught_on_a_copy(tmp_path):
    before = {p: digest(ROOT / p) for p in ("hdl/decode.py", "hdl/engine.py")}
    tree = tmp_path / "tree"
    bench.export_tree("HEAD", tree)
    mutant = next(m for m in bench.MUTANTS if m.name == "decode-next-block")
    original = bench.apply(tree, mutant)
    assert "block + 2" in (tree / mutant.path).read_text()
    result = bench.run_stage(tree, [DECODER_TEST], tmp_path / "cache", timeout=120)
    assert not result["passed"] and result["failed"] == DECODER_TEST, result["output"]
    (tree / mutant.path).write_text(original)
    result = bench.run_stage(tree, [DECODER_TEST], tmp_path / "cache", timeout=120)
    assert result["passed"], result["output"]
    assert {p: digest(ROOT / p) for p in before} == before      # the checkout is untouched


@pytest.mark.parametrize("mutant", bench.MUTANTS, ids=lambda m: m.name)
def test_every_mutant_matches_its_source_once(mutant):
    assert len(re.findall(mutant.old, (ROOT / mutant.path).read_text())) == 1


def test_a_pattern_that_moved_is_reported(tmp_path):
    (tmp_path / "hdl").mkdir()
    (tmp_path / "hdl" / "decode.py").write_text("nothing to mutate here\n")
    mutant = next(m for m in bench.MUTANTS if m.name == "decode-next-block")
    with pytest.raises(bench.MutantError, match=r"^mutant decode-next-block: .* matches 0 "
                                                r"times in hdl/decode\.py, not once$"):
        bench.apply(tmp_path, mutant)
