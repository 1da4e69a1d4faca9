"""Fuzz bench: long runs of the artifact-loader and serial-link fuzzers, with counts.

Runs :func:`darbgen.sim.fuzz.fuzz_loader` over random and mutated artifacts, then
:func:`darbgen.sim.fuzz.fuzz_link` twice: against the protocol controller in
Amaranth's simulator (reproducible, simulated time) and against a whole iCEBreaker
device (UART + controller + engine, the bitstream's RTL) in Verilator behind a
pseudo-terminal (wall-clock time, real UART framing), each followed by sessions of
the host driver over a noisy link; then the structure-aware hostile-input fuzzers
(:mod:`darbgen.sim.hostile`: artifacts built field by field through the loader and the
CLI, hostile values through the Python API, hostile input and output paths). Prints each report and records them under
``"fuzz"`` in ``docs/adversarial.json``, each with the commit it ran at (a count of 0
skips a run and keeps its earlier record; the mutation bench has its own key).
Exit status 1 if anything hung, crashed, was silently accepted or replied otherwise
than the protocol model, or a hostile input found a security hole, a traceback, a
warning or an unclear message.

Run: ``.venv/bin/python bench/fuzz_bench.py`` (about 30 minutes on 2 cores);
``--loader``, ``--link``, ``--board-link``, ``--hostile``, ``--api``, ``--paths`` and the session
options set the counts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _record import ROOT, commit, record, uncommitted_changes
from darbgen import toolenv
from darbgen.sim.fuzz import board_target, fuzz_link, fuzz_loader
from darbgen.sim.hostile import FAILURE_KEYS, fuzz_api, fuzz_artifacts, fuzz_paths

OUT = ROOT / "docs" / "adversarial.json"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=20261121)
    p.add_argument("--loader", type=int, default=100_000, help="loader inputs (%(default)s)")
    p.add_argument("--link", type=int, default=3000,
                   help="link inputs, Amaranth-simulated controller (%(default)s)")
    p.add_argument("--sessions", type=int, default=30,
                   help="host-driver sessions over a noisy link, simulated (%(default)s)")
    p.add_argument("--board-link", type=int, default=4000,
                   help="link inputs, iCEBreaker device in Verilator (%(default)s)")
    p.add_argument("--board-sessions", type=int, default=20, help="(%(default)s)")
    p.add_argument("--hostile", type=int, default=20_000,
                   help="hostile artifacts through loader and CLI (%(default)s)")
    p.add_argument("--api", type=int, default=5000,
                   help="hostile values through the Python API; ~2,200 is all (%(default)s)")
    p.add_argument("--paths", type=int, default=1000,
                   help="hostile input/output paths through the CLI; 464 is all (%(default)s)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    toolenv.setup()
    at, dirty = commit(), uncommitted_changes()
    runs = {
        "loader": lambda: fuzz_loader(args.loader, seed=args.seed, bases=24),
        "link_amaranth": lambda: fuzz_link(args.link, seed=args.seed,
                                           host_sessions=args.sessions),
        "link_verilator": lambda: fuzz_link(args.board_link, seed=args.seed + 1,
                                            host_sessions=args.board_sessions,
                                            target=lambda layer: board_target(layer)),
        "hostile_artifacts": lambda: fuzz_artifacts(args.hostile, seed=args.seed),
        "hostile_api": lambda: fuzz_api(args.api, seed=args.seed),
        "hostile_paths": lambda: fuzz_paths(args.paths, seed=args.seed),
    }
    counts = {"loader": args.loader, "link_amaranth": args.link,
              "link_verilator": args.board_link, "hostile_artifacts": args.hostile,
              "hostile_api": args.api, "hostile_paths": args.paths}
    reports = {name: run() for name, run in runs.items() if counts[name]}    # 0: skip
    bad = 0
    for report in reports.values():
        print(report)
        for failure in report.failures:
            print("  ", failure)
        bad += report.bad + sum(report.counts.get(k, 0) for k in
                                {"protocol_mismatches", "unclear_messages", *FAILURE_KEYS})
    fuzz = json.loads(args.out.read_text()).get("fuzz", {}) if args.out.exists() else {}
    for name, report in reports.items():
        fuzz[name] = {"commit": at, "uncommitted_changes": dirty, **report.to_json()}
    record("fuzz", fuzz, args.out)
    print(f"wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
