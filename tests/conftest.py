"""Shared test set-up: tool paths, a deterministic hypothesis profile, seeded helpers."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from darbgen import toolenv
from darbgen.format import SparseLayer

toolenv.setup()

# Derandomized: the same examples every run (CI and local), so a failure reproduces;
# hypothesis prints the falsifying example.
settings.register_profile("darbgen", derandomize=True, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "darbgen"))


@pytest.fixture
def rng(request):
    """A numpy generator seeded per test; the seed is shown when the test fails."""
    seed = int(os.environ.get("DARBGEN_SEED", "20261121"))
    request.node.user_properties.append(("seed", seed))
    gen = np.random.default_rng(seed)
    yield gen


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in item.user_properties:
            if name == "seed":
                report.sections.append(("seed", f"DARBGEN_SEED={value}"))


def random_layer(rng, rows, cols, block_sizes, keep=1, weight_bits=8, name="layer") -> SparseLayer:
    """A random valid layer: per-row block sizes drawn from ``block_sizes``, random
    in-block offsets and full-range values."""
    b = rng.choice(np.asarray(block_sizes), size=rows)
    k = np.minimum(keep, b)
    offsets, values = [], []
    lo, hi = -(1 << (weight_bits - 1)), (1 << (weight_bits - 1)) - 1
    for r in range(rows):
        for start in range(0, cols, b[r]):
            width = min(b[r], cols - start)
            offsets.extend(np.sort(rng.choice(width, size=min(k[r], width), replace=False)))
    offsets = np.asarray(offsets, dtype=np.int64)
    values = rng.integers(lo, hi + 1, size=offsets.size)
    return SparseLayer(name=name, rows=rows, cols=cols, block_sizes=b, keep=k,
                       offsets=offsets, values=values, scale=rng.uniform(0.01, 0.1, size=rows),
                       weight_bits=weight_bits, method="darb")
