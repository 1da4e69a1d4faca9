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

With ``--cnn`` it measures convolution steps instead: digits-cnn (DARB 8×) on the chain
and on the processor (each at ``--lanes``; with ``--artifact`` the processor also holds
digits-mlp), every logit checked, and a random DARB LeNet-5 (fashion-lenet5's shape on 28×28:
conv 6@5×5, pool 2, conv 16@5×5, pool 2, 256-120-84-10) on the processor that holds all
three; with the memories each needs (figures to ``docs/processor.json``, "digits-cnn").

Run: ``nice -n 10 .venv/bin/python bench/processor_bench.py [--artifact digits.darb]``
(without ``--artifact`` it prunes digits-mlp first through the CLI; ``--cnn`` without
``--cnn-artifact`` prunes digits-cnn).
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
    """Cycles a processor's steps can take at the least: each step's busiest lane's
    beats, once per output position of a convolution."""
    return int(sum((1 if q.layer.conv_geometry is None else q.layer.conv_geometry.positions)
                   * schedule(q.layer, lanes).lane_beats.max() for q in net.layers))


def nnz(net) -> int:
    """Kept weights of a network."""
    return sum(q.layer.nnz for q in net.layers)


def compare(name: str, net, x, args, others=(), extra=None) -> dict:
    """``net`` over ``x`` on the chain and on a processor of each ``args.lanes`` lanes
    (that also holds the networks ``others``), every logit checked; prints the table and
    returns its rows. ``extra(config)`` adds figures to a processor's row."""
    print(f"{name}: {nnz(net)} kept weights, {len(x)} images; every logit checked")
    print("| design | multipliers | cycles per inference | one image | lane-beat bound | "
          "outside the bound |")
    print("|---|---|---|---|---|---|")
    rows = {}
    chain = run("chain", simulate_network, net, x, lanes=args.chain_lanes)
    chain["multipliers"] = args.chain_lanes * len(net.layers)
    rows[f"chain, {args.chain_lanes} lanes per engine"] = chain
    for lanes in args.lanes:
        config = ProcessorConfig.for_plans([net, *others], lanes)
        r = run(f"processor {lanes}", simulate_processor, net, x, config=config)
        r.update(multipliers=lanes, bound=beat_bound(net, lanes),
                 **(extra(config) if extra else {}))
        rows[f"processor, {lanes} lanes"] = r
    for label, r in rows.items():
        bound = r.get("bound")
        outside = f"{1 - bound / r['per_inference']:.0%}" if bound else "-"
        print(f"| {label} | {r['multipliers']} | {r['per_inference']:.0f} | {r['latency']} | "
              f"{bound or '-'} | {outside} |", flush=True)
    return rows


def run(label, simulate, net, x, **kw) -> dict:
    start = time.monotonic()
    r = simulate(net, x, **kw)
    seconds = time.monotonic() - start
    if not np.array_equal(r.logits, network_ref(net, x)):
        raise SystemExit(f"{label}: logits differ from the golden model")
    one = simulate(net, x[:1], r.config)
    return {"cycles": r.cycles, "per_inference": r.cycles / len(x), "latency": one.cycles,
            "images": len(x), "seconds": round(seconds, 1)}


#: Block RAM shapes (depth, width) of each part, and its count; the iCE40UP5K's four
#: SB_SPRAM256KA (16k × 16, single-ported) hold the lanes' beats.
BRAMS = {"ice40up5k": ((256, 16), (512, 8), (1024, 4), (2048, 2)),
         "ecp5-85f": ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))}
BRAM_COUNT = {"ice40up5k": 30, "ecp5-85f": 208}


def blocks(depth: int, width: int, part: str) -> int:
    """Block RAMs of ``part`` for one ``depth × width`` memory (its best shape)."""
    return min(-(-width // w) * -(-depth // d) for d, w in BRAMS[part])


def memory_plan(part: str, lanes: int, lane_depth: int, *, spram: bool) -> dict:
    """The block RAMs of a processor sized for LeNet-300-100-scale networks on ``part``:
    784 activations, blocks of 8 to 64, up to 256 entries a row, 256 row headers and
    128 rows a step per lane, 2048 requantizer entries, 16 steps, 4 inputs a word."""
    from darbgen.config import EngineConfig
    engine = EngineConfig(lanes=lanes, shifts=(3, 4, 5, 6), max_keep=1, max_row_nnz=256,
                          max_cols=784, lane_depth=lane_depth, lane_rows=256,
                          input_width=4)
    config = ProcessorConfig(engine, lane_slots=128, table_depth=2048, max_steps=16)
    out = {}
    for name, (count, depth, width) in config.memories.items():
        per = 0 if spram and name == "beats" else blocks(depth, width, part)
        out[name] = {"count": count, "depth": depth, "width": width, "blocks": count * per}
    out["total"] = sum(v["blocks"] for v in out.values())
    out["capacity"] = config.capacity
    return out


def print_memory_plans() -> dict:
    plans = {"icebreaker, 4 lanes, a SPRAM per lane": memory_plan("ice40up5k", 4, 16384,
                                                                  spram=True),
             "ulx3s-85f, 12 lanes, 13 DP16KD per lane": memory_plan("ecp5-85f", 12, 13 * 1024,
                                                                    spram=False)}
    for name, plan_ in plans.items():
        part = "ice40up5k" if name.startswith("ice") else "ecp5-85f"
        print(f"\n{name}: capacity {plan_['capacity']:,} beats; block RAMs "
              f"{plan_['total']} of {BRAM_COUNT[part]}")
        print("| memory | count | depth × width | block RAMs |")
        print("|---|---|---|---|")
        for mem, v in plan_.items():
            if isinstance(v, dict):
                print(f"| {mem} | {v['count']} | {v['depth']} × {v['width']} | {v['blocks']} |")
    return plans


def pruned(example: str, ratio: int, path, tmp) -> Path:
    """``path``, or ``example`` pruned by the CLI (DARB, ``ratio``×) into ``tmp``."""
    if path is not None:
        return path
    path = Path(tmp) / f"{example}.darb"
    subprocess.run([sys.executable, "-m", "darbgen.cli", "prune", example, "--method", "darb",
                    "--ratio", str(ratio), "-o", str(path)], check=True)
    return path


def lenet5(seed: int):
    """A random DARB LeNet-5 on 28×28 (tests/conftest.py ``random_lenet5``)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import random_lenet5
    return random_lenet5(seed)


def gather_memory(config: ProcessorConfig) -> dict:
    """The gather's memories of ``config`` and their iCE40UP5K EBR (4 kbit) count."""
    out = {}
    for name in ("scratchpad", "positions", "columns", "pools"):
        count, depth, width = config.memories[name]
        out[name] = {"depth": depth, "width": width, "ebr": blocks(depth, width, "ice40up5k")}
    out["ebr"] = sum(v["ebr"] for v in out.values())
    return out


def cnn_main(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        cnn = plan(Artifact.load(pruned("digits-cnn", 8, args.cnn_artifact, tmp)))
        # With --artifact the processors also hold digits-mlp (the cycles do not change).
        mlps = [] if args.artifact is None else [plan(Artifact.load(args.artifact))]
    x, _ = test_split("digits")
    rows = compare("digits-cnn", cnn, cnn.quantize_input(x[:args.images]), args, mlps,
                   lambda config: {"gather": gather_memory(config),
                                   "config": config.to_json()})
    lenet = lenet5(SEED)
    config = ProcessorConfig.for_plans([cnn, *mlps, lenet], lanes=4)
    xl = np.random.default_rng(SEED).integers(-128, 128, size=(2, lenet.cols))
    r = run("lenet5", simulate_processor, lenet, xl, config=config)
    r.update(kept=nnz(lenet), gather=gather_memory(config),
             config=config.to_json(), lenet_alone=gather_memory(
                 ProcessorConfig.for_plans([lenet], lanes=4)))
    rows["LeNet-5 (random DARB, 28x28) on the 4-lane processor that also runs digits-cnn"] = r
    print(f"\nLeNet-5 (random DARB, {r['kept']} kept weights, 28×28) on the 4-lane processor "
          f"that also runs digits-cnn: {r['per_inference']:.0f} cycles per inference, every "
          "logit checked")
    print("\n| processor | scratchpad | positions | columns | pools | gather EBR (UP5K) |")
    print("|---|---|---|---|---|---|")
    for name, g in ((f"digits-cnn, {args.lanes[0]} lanes",
                     rows[f"processor, {args.lanes[0]} lanes"]["gather"]),
                    ("LeNet-5 alone", r["lenet_alone"]), ("both", r["gather"])):
        print(f"| {name} | " + " | ".join(f"{g[k]['depth']} × {g[k]['width']} ({g[k]['ebr']})"
                                          for k in ("scratchpad", "positions", "columns",
                                                    "pools")) + f" | {g['ebr']} |")
    at = commit() + ("+" if uncommitted_changes() else "")
    record("digits-cnn", {"commit": at, "images": args.images, "kept": nnz(cnn),
                          "designs": rows},
           ROOT / "docs" / "processor.json")
    print(f"recorded in docs/processor.json at {at}")
    return 0


def icebreaker_main(args) -> int:
    """digits-cnn and the random LeNet-5 on the iCEBreaker's default processor as built
    (its banks SB_SPRAM256KA on Yosys's model, holding the table, the program and the
    gather), every logit checked; and the memories left outside the banks, in EBR."""
    from darbgen.boards import get_board
    from darbgen.boards.core import processor_config
    from darbgen.processor import bank_memories

    config = processor_config(get_board("icebreaker"))
    mems = bank_memories(config)
    ebr = {name: count * blocks(depth, width, "ice40up5k")
           for name, (count, depth, width) in mems.items() if name != "banks"}
    print(f"iCEBreaker processor: banks {mems['banks']} (count, words, bits) on 4 SPRAM; "
          f"EBR {sum(ebr.values())} of {BRAM_COUNT['ice40up5k']}: {ebr}")
    with tempfile.TemporaryDirectory() as tmp:
        cnn = plan(Artifact.load(pruned("digits-cnn", 8, args.cnn_artifact, tmp)))
    x, _ = test_split("digits")
    spram = lambda net, xs, config: simulate_processor(net, xs, config, spram=True)  # noqa: E731
    rows = {"digits-cnn": run("digits-cnn on the iCEBreaker", spram, cnn,
                              cnn.quantize_input(x[:args.images]), config=config)}
    lenet = lenet5(SEED)
    xl = np.random.default_rng(SEED).integers(-128, 128, size=(2, lenet.cols))
    rows["LeNet-5 (random DARB, 28x28)"] = run("LeNet-5 on the iCEBreaker", spram, lenet, xl,
                                               config=config)
    for name, r in rows.items():
        print(f"{name} on the iCEBreaker processor: {r['per_inference']:.0f} cycles per "
              f"inference ({r['images']} images, every logit checked)")
    at = commit() + ("+" if uncommitted_changes() else "")
    record("icebreaker-cnn", {"commit": at, "ebr": ebr, "banks": list(mems["banks"]),
                              "config": config.to_json(), "designs": rows},
           ROOT / "docs" / "processor.json")
    print(f"recorded in docs/processor.json at {at}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifact", type=Path, help="a pruned digits-mlp (default: prune one)")
    parser.add_argument("--images", type=int, default=60, help="default: %(default)s")
    parser.add_argument("--lanes", type=int, nargs="+", default=[4, 8, 12],
                        help="processor lane counts (default: %(default)s)")
    parser.add_argument("--chain-lanes", type=int, default=4, help="default: %(default)s")
    parser.add_argument("--memory-only", action="store_true",
                        help="print the block-RAM plans only (no simulation)")
    parser.add_argument("--cnn", action="store_true",
                        help="convolution steps: digits-cnn and a LeNet-5 (see above)")
    parser.add_argument("--cnn-artifact", type=Path,
                        help="a pruned digits-cnn (default: prune one)")
    parser.add_argument("--icebreaker", action="store_true",
                        help="digits-cnn and LeNet-5 on the iCEBreaker's default processor")
    args = parser.parse_args(argv)
    if args.icebreaker:
        return icebreaker_main(args)
    if args.cnn:
        return cnn_main(args)
    if args.memory_only:
        print_memory_plans()
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        digits = plan(Artifact.load(pruned("digits-mlp", 16, args.artifact, tmp)))
    x, _ = test_split("digits")
    rows = compare("digits-mlp", digits, digits.quantize_input(x[:args.images]), args,
                   extra=lambda config: {"load_words": len(load_words(digits, config))})

    big = lenet_300_100(SEED)
    config = ProcessorConfig.for_plans([digits, big], lanes=4)
    xb = np.random.default_rng(SEED).integers(-128, 128, size=(4, big.cols))
    r = run("784-300-100-10", simulate_processor, big, xb, config=config)
    r.update(kept=nnz(big), bound=beat_bound(big, 4),
             config=config.to_json(), capacity=config.capacity)
    rows["784-300-100-10 on the 4-lane processor that holds both"] = r
    print(f"\n784-300-100-10 (random DARB, {r['kept']} kept weights) on the 4-lane processor "
          f"that also holds digits-mlp (capacity {config.capacity} beats): "
          f"{r['per_inference']:.0f} cycles per inference, lane-beat bound {r['bound']} "
          f"({1 - r['bound'] / r['per_inference']:.0%} outside it)")
    plans = print_memory_plans()
    at = commit() + ("+" if uncommitted_changes() else "")
    record("digits-mlp", {"commit": at, "images": args.images, "kept": nnz(digits),
                          "designs": rows},
           ROOT / "docs" / "processor.json")
    record("memory-plans", {"commit": at, "plans": plans}, ROOT / "docs" / "processor.json")
    print(f"recorded in docs/processor.json at {at}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
