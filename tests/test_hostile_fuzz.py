"""The structure-aware hostile-input fuzzer (darbgen.sim.hostile) on a fixed time budget,
and planted faults it must find. The long runs are bench/fuzz_bench.py's."""

import numpy as np

import darbgen.cli
import darbgen.format
import darbgen.pruning.masks
from darbgen.sim.hostile import FAILURE_KEYS, fuzz_api, fuzz_artifacts, fuzz_paths

SEED = 20261207


def failures(report):
    return {k: report.counts[k] for k in FAILURE_KEYS if report.counts[k]}


def test_hostile_artifacts():
    report = fuzz_artifacts(400, seed=SEED, budget=40)
    assert not failures(report), report.failures
    assert report.counts["inputs"] >= 100, report.counts
    assert report.counts["rejected"] > report.counts["accepted"] > 0, report.counts


def test_hostile_paths():
    """Every special file, under every source suffix, as every command's input; every
    aliasing or special output: 464 cases, the whole space."""
    report = fuzz_paths(1000, seed=SEED, budget=90)
    assert not failures(report), report.failures
    assert report.counts["inputs"] == 464, report.counts


def test_hostile_api_values():
    """Every public entry point that takes user values, with every hostile value: the
    whole cross product (about 2,200 calls)."""
    report = fuzz_api(5000, seed=SEED, budget=30)
    assert not failures(report), report.failures
    assert report.counts["inputs"] > 2000, report.counts


def test_finds_a_ratio_check_in_numpy_words(monkeypatch):
    """The check can fail: the ratio check as it was, whose np.isfinite chokes on ints
    past int64 with a message about ufuncs and casting rules."""
    def old(ratio):
        if not (np.isfinite(ratio) and ratio >= 1):
            raise ValueError(f"pruning ratio must be at least 1, not {ratio}")
        return float(ratio)
    monkeypatch.setattr(darbgen.pruning.masks, "_check_ratio", old)
    report = fuzz_api(5000, seed=SEED)
    assert report.counts["unclear_messages"] > 0, report.counts


def test_finds_a_loader_that_unpickles(monkeypatch):
    """The check can fail: a loader that unpickles runs the payload's command."""
    monkeypatch.setattr(darbgen.format, "read_npy",
                        lambda data: np.load(__import__("io").BytesIO(data), allow_pickle=True))
    report = fuzz_artifacts(300, seed=SEED)
    assert report.counts["security_holes"] > 0, report.counts


def test_finds_raw_names_on_the_terminal(monkeypatch):
    monkeypatch.setattr(darbgen.cli, "printable", str)
    report = fuzz_artifacts(150, seed=SEED)
    assert report.counts["unclear_messages"] > 0, report.counts


def test_finds_an_output_that_replaces_its_input(monkeypatch):
    monkeypatch.setattr(darbgen.cli, "check_output", lambda path, inputs: None)
    report = fuzz_paths(1000, seed=SEED)
    assert report.counts["silent_corruptions"] > 0, report.counts
