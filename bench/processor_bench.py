"""Processor benchmark: cycles per inference of the layer-sequenced processor against
the chain of engines, on digits-mlp (DARB 16×), in Verilator.

For the chain (one engine per layer, ``--chain-lanes`` lanes each) and for the processor
at each of ``--lanes``, it runs the first ``--images`` images of the digits test split
and checks every logit against the golden integer model. It prints, per design, the
multipliers, the cycles per inference over the run (the chain overlaps images; the
processor runs one at a time), one image's latency, the lane-beat bound (the busiest
lane's beats, summed over the layers: a processor step can be no shorter) and the
share of the processor's cycles spent outside it (requantization, copying the
activations, sequencing). It then runs a random 784-300-100-10 DARB network (LeNet-300-100's
shape) on the processor that holds both. Figures go to ``docs/processor.json``.

Run: ``nice -n 10 .venv/bin/python bench/processor_bench.py [--artifact digits.darb]``
(without ``--artifact`` it prunes digits-mlp first through the CLI).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _record import ROOT, commit, record, uncommitted_changes
from darbgen.datasets import test_split
from darbgen.format import Artifact
from darbgen.network import plan
from darbgen.packing import schedule
from darbgen.processor import ProcessorConfig, load_words
from darbgen.sim.golden import network_ref
from darbgen.sim.runner import simulate_network, simulate_processor

SEED = 20261207


def lenet_300_100(seed: int):
    """A random DARB 784-300-100-10 network (LeNet-300-100's shape), blocks of 8 to 32
    keeping one weight each, as in tests/test_processor.py."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import random_network
    return plan(random_network(np.random.default_rng(seed), dims=(784, 300, 100, 10),
                               block_sizes=(8, 16, 32)))


def beat_bound(net, lanes: int) -> int:
    """Cycles a processor step can take at the least: its busiest lane's beats."""
    return int(sum(schedule(q.layer, lanes).lane_beats.max() for q in net.layers))


def run(label, simulate, net, x, **kw) -> dict:
    start = time.monotonic()
    r = simulate(net, x, **kw)
    seconds = time.monotonic() - start
    if not np.array_equal(r.logits, network_ref(net, x)):
        raise SystemExit(f"{label}: logits differ from the golden model")
    one = simulate(net, x[:1], r.config)
    return {"cycles": r.cycles, "per_inference": r.cycles / len(x), "latency": one.cycles,
            "images": len(x), "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, help="a pruned digits-mlp (default: prune one)")
    parser.add_argument("--images", type=int, default=60, help="default: %(default)s")
    parser.add_argument("--lanes", type=int, nargs="+", default=[4, 8, 12],
                        help="processor lane counts (default: %(default)s)")
    parser.add_argument("--chain-lanes", type=int, default=4, help="default: %(default)s")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.artifact
        if path is None:
            path = Path(tmp) / "digits.darb"
            subprocess.run([sys.executable, "-m", "darbgen.cli", "prune", "digits-mlp",
                            "--method", "darb", "--ratio", "16", "-o", str(path)], check=True)
        digits = plan(Artifact.load(path))
    x, _ = test_split("digits")
    x = digits.quantize_input(x[:args.images])
    kept = sum(q.layer.nnz for q in digits.layers)
    print(f"digits-mlp: {kept} kept weights, {args.images} images; every logit checked")
    print("| design | multipliers | cycles per inference | one image | lane-beat bound | "
          "outside the bound |")
    print("|---|---|---|---|---|---|")
    rows = {}
    chain = run("chain", simulate_network, digits, x, lanes=args.chain_lanes)
    chain["multipliers"] = args.chain_lanes * len(digits.layers)
    rows[f"chain, {args.chain_lanes} lanes per engine"] = chain
    for lanes in args.lanes:
        config = ProcessorConfig.for_plans([digits], lanes)
        r = run(f"processor {lanes}", simulate_processor, digits, x, config=config)
        r.update(multipliers=lanes, bound=beat_bound(digits, lanes),
                 load_words=len(load_words(digits, config)))
        rows[f"processor, {lanes} lanes"] = r
    for name, r in rows.items():
        bound = r.get("bound")
        outside = f"{1 - bound / r['per_inference']:.0%}" if bound else "-"
        print(f"| {name} | {r['multipliers']} | {r['per_inference']:.0f} | {r['latency']} | "
              f"{bound or '-'} | {outside} |", flush=True)

    big = lenet_300_100(SEED)
    config = ProcessorConfig.for_plans([digits, big], lanes=4)
    xb = np.random.default_rng(SEED).integers(-128, 128, size=(4, big.cols))
    r = run("784-300-100-10", simulate_processor, big, xb, config=config)
    r.update(kept=sum(q.layer.nnz for q in big.layers), bound=beat_bound(big, 4),
             config=config.to_json(), capacity=config.capacity)
    rows["784-300-100-10 on the 4-lane processor that holds both"] = r
    print(f"\n784-300-100-10 (random DARB, {r['kept']} kept weights) on the 4-lane processor "
          f"that also holds digits-mlp (capacity {config.capacity} beats): "
          f"{r['per_inference']:.0f} cycles per inference, lane-beat bound {r['bound']} "
          f"({1 - r['bound'] / r['per_inference']:.0%} outside it)")
    at = commit() + ("+" if uncommitted_changes() else "")
    record("digits-mlp", {"commit": at, "images": args.images, "kept": kept, "designs": rows},
           ROOT / "docs" / "processor.json")
    print(f"recorded in docs/processor.json at {at}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
