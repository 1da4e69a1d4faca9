"""Board builds and the serial link for one layer (issue 4's figures), and the
layer-sequenced processor on each board (issue 14's figures, ``--processor``).

For each board: the open-toolchain build of UART + protocol controller + engine for
the layer (nextpnr's fmax and utilisation), then, on the simulated board, the link
efficiency while the weights stream and an exact run of input vectors.

    python bench/board_bench.py ARTIFACT [--layer fc1] [--boards icebreaker,ulx3s]
                                [--inputs X.npy] [-o docs/boards.json] [--reports docs]

With ``--reports DIR`` each build's ``report.json`` is kept as
``DIR/report-BOARD-ARTIFACT-LAYER.json``.

ECP5 builds at 16 lanes take minutes; this is not part of the test suite.

    python bench/board_bench.py --processor [--artifact digits.darb] [--boards ...]
                                [--reuse DIR] [-o docs/processor-boards.json]

builds each board's processor (:func:`darbgen.boards.processor.processor_config`) and
records its capacity (kept weights, activations), lanes, fmax, resources and build time;
then runs digits-mlp (DARB 16×) and a random DARB 784-300-100-10 on the same processor in
Verilator, every logit checked, for the cycles per inference, the utilization (useful
MACs / (lanes × cycles)) and the useful MAC/s (lanes × fmax × utilization) against the
part's measured MAC ceiling (docs/mac-ceiling.json). ``--reuse DIR`` takes the build
from ``DIR/report-processor-BOARD.json`` (written by an earlier run with ``--reports
DIR``) when its config digest is the board's current one. The ECP5 build of 32 lanes
takes about an hour on two loaded cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from darbgen import toolenv
from darbgen.boards import TimingError, build, get_board
from darbgen.boards.core import DEVICE_TOP, device, device_verilog
from darbgen.format import Artifact
from darbgen.host import Board, SerialTransport
from darbgen.sim.board_sim import BoardSim
from darbgen.sim.golden import spmv_ref


def measure(board_name, layer, x, outdir, keep_report=None):
    board = get_board(board_name)
    dev = device(board, layer)
    row = {"board": board.name, "lanes": dev.config.lanes, "layer": layer.name}
    try:
        report = build(dev, board, outdir, lanes=dev.config.lanes,
                       extra_report={"layer": layer.name})
        row["met_timing"] = True
    except TimingError:
        report = json.loads((Path(outdir) / "report.json").read_text())
        row["met_timing"] = False
    row.update({k: report[k] for k in ("device", "target_mhz", "fmax_mhz", "resources",
                                       "build_seconds")})
    if keep_report:
        Path(keep_report).parent.mkdir(parents=True, exist_ok=True)
        Path(keep_report).write_text((Path(outdir) / "report.json").read_text())
    with BoardSim(device_verilog(dev), DEVICE_TOP, dev.divisor) as sim:
        host = Board(SerialTransport(sim.port, board.baud))
        host.identify()
        loaded = host.load(layer)
        y = host.run(x)
        host.transport.close()
    row.update({"weight_bytes": loaded.payload_bytes, "link_efficiency": loaded.link_efficiency,
                "vectors": len(x), "exact": bool(np.array_equal(y, spmv_ref(layer, x)))})
    return row


def processor_networks(artifact, images: int = 8):
    """digits-mlp (pruned through the CLI unless ``artifact`` is given) with the first
    ``images`` digits test images, and a random DARB 784-300-100-10 with 2 vectors."""
    from _record import ROOT
    from darbgen.datasets import test_split
    from darbgen.network import plan

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import random_network
    from processor_bench import pruned
    with tempfile.TemporaryDirectory() as tmp:
        digits = plan(Artifact.load(pruned("digits-mlp", 16, artifact, tmp)))
    x, _ = test_split("digits")
    rng = np.random.default_rng(20261207)
    big = plan(random_network(rng, dims=(784, 300, 100, 10), block_sizes=(8, 16, 32)))
    return {"digits-mlp": (digits, digits.quantize_input(x[:images])),
            "784-300-100-10": (big, rng.integers(-128, 128, size=(2, big.cols)))}


def measure_processor(board_name, networks, reuse=None, keep_report=None, probe=False):
    """Build ``board_name``'s processor as its device (UART, protocol controller and
    processor; with ``probe``, the bare processor in
    :class:`~darbgen.boards.processor.ProcessorProbe`), or take the build from
    ``reuse``, and run ``networks`` on it in Verilator."""
    from darbgen.boards.core import processor_config
    from darbgen.boards.processor import ProcessorProbe
    from darbgen.boards.targets import get_board
    from darbgen.sim.golden import network_ref
    from darbgen.sim.runner import simulate_processor

    board = get_board(board_name)
    config = processor_config(board)
    report = None
    if reuse and reuse.exists():
        # A build of this very processor: by this bench, or `darbgen build --board`.
        report = json.loads(reuse.read_text())
        if report.get("config") not in (config.digest(), config.to_json()):
            report = None
    if report is None:
        from darbgen.boards.core import processor_device
        with tempfile.TemporaryDirectory(prefix=f"darbgen-{board.name}-") as out:
            top = "ProcessorProbe" if probe else "device"
            core = ProcessorProbe(config) if probe else processor_device(board)
            try:
                report = build(core, board, out, lanes=config.lanes,
                               extra_report={"config": config.digest(), "top": top})
            except TimingError:
                report = json.loads((Path(out) / "report.json").read_text())
            if keep_report:
                Path(keep_report).parent.mkdir(parents=True, exist_ok=True)
                Path(keep_report).write_text((Path(out) / "report.json").read_text())
    ceiling = json.loads((Path(__file__).resolve().parent.parent / "docs" /
                          "mac-ceiling.json").read_text())["ceiling"]["boards"]
    ceiling = next(c for c in ceiling if c["board"] == board.name)
    row = {"board": board.name, "device": report["device"], "lanes": config.lanes,
           "capacity": {"weights": config.capacity, "activations": config.act_depth,
                        "lanes": config.lanes},
           "config": config.digest(), "top": report.get("top", "device"),
           "target_mhz": report["target_mhz"], "fmax_mhz": report["fmax_mhz"],
           "margin_met": report["fmax_mhz"] >= 1.1 * report["target_mhz"],
           "resources": {k: v for k, v in report["resources"].items() if v["used"]},
           "build_seconds": report["build_seconds"],
           "ceiling_mac_per_s": ceiling["mac_per_s"], "models": {}}
    for name, (net, x) in networks.items():
        run = simulate_processor(net, x, config, table_in_banks=board.name == "icebreaker")
        if not np.array_equal(run.logits, network_ref(net, x)):
            raise SystemExit(f"{board.name}: {name}: logits differ from the golden model")
        cycles = run.cycles / len(x)
        macs = sum(q.layer.nnz for q in net.layers)
        utilization = macs / (config.lanes * cycles)
        useful = config.lanes * report["fmax_mhz"] * 1e6 * utilization
        row["models"][name] = {
            "kept_weights": macs, "inputs": len(x), "cycles_per_inference": round(cycles, 1),
            "utilization": round(utilization, 4), "useful_mac_per_s": round(useful),
            "of_ceiling": round(useful / ceiling["mac_per_s"], 4), "exact": True}
    return row


def processor_main(args) -> int:
    from _record import commit, record, uncommitted_changes

    networks = processor_networks(args.artifact)
    rows = []
    for name in args.boards.split(","):
        reuse = args.reuse and args.reuse / f"report-processor-{name}.json"
        keep = args.reports and args.reports / f"report-processor-{name}.json"
        row = measure_processor(name, networks, reuse, keep, args.probe)
        rows.append(row)
        res = ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in row["resources"].items())
        print(f"{name}: {row['lanes']} lanes, capacity {row['capacity']['weights']:,} kept "
              f"weights, {row['capacity']['activations']} activations; fmax "
              f"{row['fmax_mhz']} MHz (target {row['target_mhz']}), build "
              f"{row['build_seconds']} s; {res}", flush=True)
        for model, m in row["models"].items():
            print(f"  {model}: {m['kept_weights']:,} kept weights, "
                  f"{m['cycles_per_inference']:.0f} cycles per inference, utilization "
                  f"{m['utilization']:.1%}, useful {m['useful_mac_per_s'] / 1e6:.0f} MMAC/s = "
                  f"{m['of_ceiling']:.1%} of the ceiling "
                  f"{row['ceiling_mac_per_s'] / 1e6:.0f} MMAC/s", flush=True)
    out = Path(args.output or "docs/processor-boards.json")
    record("processor", {"commit": commit(), "uncommitted": uncommitted_changes(),
                         "boards": rows}, out)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if argv is None:
        argv = sys.argv[1:]
    if "--processor" in argv:
        p.add_argument("--processor", action="store_true")
        p.add_argument("--artifact", type=Path, help="a pruned digits-mlp (default: prune one)")
        p.add_argument("--boards", default="icebreaker,ulx3s")
        p.add_argument("-o", "--output", type=Path)
        p.add_argument("--reports", type=Path, help="keep each build's report.json here")
        p.add_argument("--reuse", type=Path, help="take builds from this --reports directory")
        p.add_argument("--probe", action="store_true",
                       help="build the bare processor (ProcessorProbe), not the device")
        toolenv.setup()
        return processor_main(p.parse_args(argv))
    p.add_argument("artifact")
    p.add_argument("--layer")
    p.add_argument("--boards", default="icebreaker,ulx3s")
    p.add_argument("--inputs", help="int8 vectors (default: 16 seeded random vectors)")
    p.add_argument("-o", "--output", default="docs/boards.json")
    p.add_argument("--reports", type=Path, help="keep each build's report.json here")
    args = p.parse_args(argv)
    toolenv.setup()
    artifact = Artifact.load(args.artifact)
    layer = artifact.layer(args.layer) if args.layer else artifact.layers[0]
    if args.inputs:
        x = np.load(args.inputs)[:, :layer.cols].astype(np.int64)
    else:
        x = np.random.default_rng(20261121).integers(-128, 128, size=(16, layer.cols))
    rows = []
    for name in args.boards.split(","):
        with tempfile.TemporaryDirectory(prefix=f"darbgen-{name}-") as tmp:
            keep = args.reports and args.reports / \
                f"report-{name}-{Path(args.artifact).stem}-{layer.name}.json"
            row = measure(name, layer, x, tmp, keep)
        rows.append(row)
        r = row["resources"]
        print(f"{name}: {row['lanes']} lanes, fmax {row['fmax_mhz']} MHz "
              f"(target {row['target_mhz']}), build {row['build_seconds']} s, "
              f"link efficiency {row['link_efficiency']:.3f}, exact {row['exact']}; "
              + ", ".join(f"{k} {v['used']}/{v['available']}" for k, v in r.items()
                          if v["used"]), flush=True)
    Path(args.output).write_text(json.dumps(rows, indent=1) + "\n")
    print(json.dumps({"boards": [r["board"] for r in rows],
                      "all_met_timing": all(r["met_timing"] for r in rows),
                      "all_exact": all(r["exact"] for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
