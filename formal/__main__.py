"""Run every formal check and print the table of docs/formal.md.

``python -m formal [--fast] [--workdir DIR] [NAME-PREFIX ...]``: ``--fast`` leaves out
the slow checks; prefixes select checks by name (``decoder/``, ``engine/``, ...).
"""

import argparse
import sys
import time

from .checks import all_checks
from .sby import solver_available


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m formal", description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="leave out the slow checks")
    parser.add_argument("--workdir", default="build/formal", metavar="DIR",
                        help="sby work directories (default: %(default)s)")
    parser.add_argument("only", nargs="*", metavar="NAME-PREFIX")
    args = parser.parse_args(argv)
    if not solver_available():
        print("yowasp-sby or yices-smt2 is missing: pip install -e '.[formal]'", file=sys.stderr)
        return 2
    checks = [c for c in all_checks() if not (args.fast and c.slow)
              and (not args.only or any(c.name.startswith(p) for p in args.only))]
    print("| check | what | result | kind | depth | sby s |")
    print("|---|---|---|---|---|---|")
    failed = 0
    start = time.perf_counter()
    for check in checks:
        outcome = check.run(args.workdir)
        failed += not outcome.holds
        print(f"| {check.name} | {check.what} | {'holds' if outcome.holds else 'FAILED'} | "
              f"{outcome.kind} | {outcome.depth} | {outcome.seconds:.1f} |", flush=True)
    print(f"{len(checks) - failed} passed, {failed} failed in {time.perf_counter() - start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
