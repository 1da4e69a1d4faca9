"""Board builds and the serial link for one layer (issue 4's figures).

For each board: the open-toolchain build of UART + protocol controller + engine for
the layer (nextpnr's fmax and utilisation), then, on the simulated board, the link
efficiency while the weights stream and an exact run of input vectors.

    python bench/board_bench.py ARTIFACT [--layer fc1] [--boards icebreaker,ulx3s]
                                [--inputs X.npy] [-o docs/boards.json] [--reports docs]

With ``--reports DIR`` each build's ``report.json`` is kept as
``DIR/report-BOARD-ARTIFACT-LAYER.json``.

ECP5 builds at 16 lanes take minutes; this is not part of the test suite.
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
