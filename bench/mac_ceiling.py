"""The MAC ceiling of each board's part: a bare registered MAC array with every DSP.

Builds :class:`darbgen.boards.ceiling.MACArray` (one int8 multiply-accumulate per DSP
block, every stage registered) with the same tools and board top as the engine, and
prints fmax, resources and the ceiling in MAC/s (``macs × fmax``): the figure the
engine's useful MAC/s (lanes × fmax × utilization) is measured against.

    python bench/mac_ceiling.py [--boards icebreaker,ulx3s] [--macs N] [-o docs/mac-ceiling.json]

The ECP5 array (156 multipliers) takes minutes to place and route on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from _record import ROOT, commit, record, uncommitted_changes

from darbgen.boards import TimingError, build, get_board
from darbgen.boards.ceiling import MACArray

#: nextpnr's names of the DSP cells each MAC must occupy.
DSP_CELLS = ("ICESTORM_DSP", "MULT18X18D")


def measure(board_name: str, macs: int | None = None) -> dict:
    """Build the MAC array for ``board_name`` (``macs`` defaults to its DSP count)."""
    board = get_board(board_name)
    macs = macs or board.dsp_blocks
    with tempfile.TemporaryDirectory(prefix="darbgen-ceiling-") as out:
        try:
            report = build(MACArray(macs), board, out, lanes=macs, extra_report={"macs": macs})
        except TimingError:                   # still a measurement: the report is written
            report = json.loads((Path(out) / "report.json").read_text())
    # A multiplier folded away or left in logic would make the figure no ceiling.
    dsps = {k: v["used"] for k, v in report["resources"].items() if k in DSP_CELLS}
    if list(dsps.values()) != [macs]:
        raise RuntimeError(f"{board.name}: {macs} MACs placed as {dsps or 'no'} DSP cells")
    return {"board": board.name, "device": report["device"], "macs": macs,
            "fmax_mhz": report["fmax_mhz"], "target_mhz": report["target_mhz"],
            "mac_per_s": macs * report["fmax_mhz"] * 1e6, "resources": report["resources"],
            "build_seconds": report["build_seconds"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boards", default="icebreaker,ulx3s")
    p.add_argument("--macs", type=int, help="MACs in the array (default: the part's DSPs)")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "mac-ceiling.json")
    args = p.parse_args(argv)
    rows = []
    for name in args.boards.split(","):
        row = measure(name, args.macs)
        rows.append(row)
        lcs = {k: v["used"] for k, v in row["resources"].items() if k not in DSP_CELLS
               and ("LC" in k or "COMB" in k)}
        print(f"{row['board']}: {row['macs']} MACs, one DSP cell each, at "
              f"{row['fmax_mhz']:.1f} MHz = {row['mac_per_s'] / 1e9:.2f} G MAC/s ({lcs}; "
              f"built in {row['build_seconds']:.0f} s)", flush=True)
    record("ceiling", {"commit": commit() + ("+" if uncommitted_changes() else ""),
                       "boards": rows}, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
