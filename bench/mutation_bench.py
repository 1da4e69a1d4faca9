"""Mutation checks: small faults planted in the engine, one at a time; the tests must fail.

Each mutant is one textual edit of ``hdl/engine.py`` or ``hdl/decode.py``: an operator
swapped, an index or constant off by one, an offset bit dropped, a width one bit
short, a guard removed (:data:`MUTANTS`). For each, the bench works on a temporary
copy of the committed tree (``git archive REF``; the checkout's files are never
touched, and the copy is removed even on Ctrl-C), applies the edit there, and runs
the engine tests against the copy, each stage with ``pytest -x``:

1. ``tests/test_engine_amaranth.py`` (Amaranth's simulator, seconds);
2. if the mutant survived, ``tests/test_engine_verilator.py`` without its two
   slowest tests (one fresh Verilator build of the mutated engine, about a minute).

A mutant is *killed* when a test fails (the first failing test is recorded),
*survived* when both stages pass. The unmutated copy runs both stages first: a
baseline failure stops the bench. Mutants marked ``equivalent`` cannot change any
output (the reason is given) and are left out of the kill rate. The table is printed
and recorded under ``"mutation"`` in ``docs/adversarial.json``.

Run: ``.venv/bin/python bench/mutation_bench.py`` (about 20 minutes on 2 cores);
``--only NAME ...`` runs some mutants, ``--ref`` picks the commit, ``--list`` lists.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from _record import commit, record

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "adversarial.json"

#: Test stages: (name, pytest arguments). A later stage runs only if the mutant survived.
STAGES = (
    ("amaranth", ["tests/test_engine_amaranth.py"]),
    ("verilator", ["tests/test_engine_verilator.py", "-k",
                   "not test_darb_utilization_at_8_lanes and not test_icarus_agrees"]),
)


@dataclass(frozen=True)
class Mutant:
    """One planted fault.

    Members
    -------
    name : str
    path : str
        File, relative to the tree.
    old : str
        Regular expression that must match exactly once.
    new : str
        Its replacement (``re.sub`` syntax).
    kind : str
        operator, index, offset bit, width, constant or guard.
    what : str
        The fault in words.
    equivalent : str
        Why no output can change, for an equivalent mutant (else empty).
    """

    name: str
    path: str
    old: str
    new: str
    kind: str
    what: str
    equivalent: str = ""


def _lit(text: str) -> str:
    return re.escape(text)


E, D = "hdl/engine.py", "hdl/decode.py"
MUTANTS = (
    # -- the index decoder ---------------------------------------------------------------
    Mutant("decode-or-and", D, _lit("(current << s) | self.offset"),
           "(current << s) & self.offset", "operator",
           "column = (block << s) AND offset instead of OR"),
    Mutant("decode-or-add", D, _lit("(current << s) | self.offset"),
           "(current << s) + self.offset", "operator",
           "column = (block << s) + offset instead of OR",
           equivalent="offset < 2**s by the contract, so the OR of disjoint bits equals the sum"),
    Mutant("decode-next-block", D, _lit("Mux(wrap, block + 1, block)"),
           "Mux(wrap, block + 2, block)", "index", "the next block is block + 2"),
    Mutant("decode-keep-count", D, _lit("count == self.keep"), "count == self.keep + 1",
           "index", "a block ends after k + 1 entries"),
    Mutant("decode-count-reset", D, _lit("Mux(self.first | wrap, 1, count + 1)"),
           "Mux(self.first | wrap, 0, count + 1)", "constant",
           "the entry counter restarts at 0 instead of 1"),
    Mutant("decode-first-block", D, _lit("Mux(self.first, 0, Mux("), "Mux(self.first, 1, Mux(",
           "constant", "a row starts in block 1"),
    Mutant("decode-shift-code", D, _lit("m.Case(code)"), "m.Case(code + 1)", "index",
           "shift code i selects block size i - 1"),
    Mutant("decode-offset-bit", D, _lit("(current << s) | self.offset)"),
           "(current << s) | self.offset[:-1])", "offset bit",
           "the offset's top bit is dropped"),
    Mutant("decode-block-width", D, _lit("current = Signal(c.col_bits)"),
           "current = Signal(c.col_bits - 1)", "width", "the block index is one bit short"),
    # -- the lanes ------------------------------------------------------------------------
    Mutant("lane-prefetch", E, _lit("Mux(last, slot + 2, slot + 1)"),
           "Mux(last, slot + 1, slot + 1)", "index",
           "the header prefetch at a row's last beat reads the current row again"),
    Mutant("lane-last-beat", E, _lit("last.eq(remaining == 1)"), "last.eq(remaining == 2)",
           "constant", "a row ends one beat early"),
    Mutant("lane-start-guard", E, _lit("go.eq(self.start & (row_ptr != 0))"),
           "go.eq(self.start)", "guard", "a lane without rows starts anyway"),
    Mutant("lane-x-parity", E, _lit("Mux(b_par, c.x_depth + word, word)"),
           "Mux(b_par, word, c.x_depth + word)", "index",
           "x is read from the other half of the double buffer"),
    Mutant("lane-select-bit", E, _lit("dec.col[:sel_bits]"), "dec.col[1:sel_bits + 1]",
           "offset bit", "the element select within an x word uses column bits 1.. not 0.."),
    Mutant("lane-product-width", E,
           _lit("Signal(signed(c.weight_bits + c.input_bits), reset_less=True)"),
           "Signal(signed(c.weight_bits + c.input_bits - 1), reset_less=True)", "width",
           "the product register is one bit short"),
    Mutant("lane-acc-width", E, _lit("acc = Signal(signed(c.acc_width), reset_less=True)"),
           "acc = Signal(signed(c.acc_width - 1), reset_less=True)", "width",
           "the accumulator, which holds the row's sum, is one bit short"),
    Mutant("lane-accumulate", E, _lit("Mux(d_first, 0, acc) + d_prod"),
           "Mux(d_first, 0, acc) - d_prod", "operator", "products are subtracted"),
    Mutant("lane-y-address", E, _lit("Mux(e_par, c.lane_rows + e_slot, e_slot)"),
           "Mux(e_par, c.lane_rows + e_slot, e_slot + 1)", "index",
           "even vectors' sums are written one row down"),
    # -- the engine -----------------------------------------------------------------------
    Mutant("engine-lane-route", E, _lit("(word.lane == i)"), "(word.lane == (i + 1) % c.lanes)",
           "index", "load words go to the next lane (the schedule's lane index + 1)"),
    Mutant("engine-load-reset", E, _lit("lane.wr_first.eq(valid & word.first)"),
           "lane.wr_first.eq(0)", "guard",
           "a new load does not reset the lanes' write pointers"),
    Mutant("engine-settle", E, _lit("settle.eq(depth + 2)"), "settle.eq(depth)", "constant",
           "vectors may start before the slots tree has caught up with a load"),
    Mutant("engine-x-ready", E, _lit("self.x.ready.eq(~x_full.bit_select(wpar, 1))"),
           "self.x.ready.eq(1)", "guard", "x overwrites a buffer still in use"),
    Mutant("engine-pipeline-depth", E, r"_PIPELINE_DEPTH = (\d+)", "_PIPELINE_DEPTH = @DEPTH-1@",
           "constant", "the drain may start one cycle earlier",
           equivalent="the drain reads the y memory two registered cycles (y_ready, draining) "
                      "after the retire chain, so it already reads after the last write with "
                      "a chain two shorter; measured: depth - 1 and - 2 pass, - 3 fails"),
    Mutant("engine-retire-parity", E, _lit("retire_par[0].eq(cpar)"), "retire_par[0].eq(~cpar)",
           "index", "a finished vector marks the other y buffer ready"),
    Mutant("engine-drain-last", E, _lit("y_last.eq(t == slots - 1)"), "y_last.eq(t == slots)",
           "index", "a vector's last output beat is flagged one beat late"),
)


class MutantError(Exception):
    """A mutant's pattern does not match its file exactly once (the source moved on)."""


def apply(tree: Path, mutant: Mutant) -> str:
    """Apply ``mutant`` to the copy at ``tree``; return the original text of its file."""
    path = tree / mutant.path
    text = path.read_text()
    matches = list(re.finditer(mutant.old, text))
    if len(matches) != 1:
        raise MutantError(f"mutant {mutant.name}: {mutant.old!r} matches {len(matches)} "
                          f"times in {mutant.path}, not once")
    new = mutant.new
    if "@DEPTH-1@" in new:
        new = new.replace("@DEPTH-1@", str(int(matches[0][1]) - 1))
    path.write_text(text[:matches[0].start()] + matches[0].expand(new) + text[matches[0].end():])
    return text


def export_tree(ref: str, dest: Path) -> None:
    """The files of commit ``ref`` in ``dest``, importable as ``darbgen`` from there.

    The package maps folders (``hdl/`` is ``darbgen.hdl``, see pyproject.toml); links
    inside the copy's ``darbgen/`` give the same names, so that with ``dest`` first on
    ``sys.path`` the copy is imported, never the checkout the venv points at.
    """
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    mapping = tomllib.loads((dest / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"]
    for name, folder in mapping.items():
        if name != "darbgen":
            (dest / "darbgen" / name.split(".", 1)[1]).symlink_to(Path("..") / folder)


def run_stage(tree: Path, args: list, cache: Path, timeout: float) -> dict:
    """Run pytest with ``-x`` on the copy; the verdict and the first failing test."""
    env = {**os.environ, "PYTHONPATH": str(tree), "DARBGEN_CACHE": str(cache),
           "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--tb=line",
           "-rf", *args]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:                      # timeout or Ctrl-C: stop the whole group
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if sys.exc_info()[0] is subprocess.TimeoutExpired:
            return {"passed": False, "failed": f"(timed out after {timeout:.0f} s)",
                    "seconds": time.monotonic() - start, "output": ""}
        raise
    failed = re.findall(r"^FAILED (\S+)", out, re.M) or re.findall(r"^ERROR (\S+)", out, re.M)
    return {"passed": proc.returncode == 0, "failed": failed[0] if failed else None,
            "seconds": time.monotonic() - start, "output": out}


def check(tree: Path, cache: Path, timeout: float, stages=STAGES) -> dict:
    """Run the stages on the copy as it is; stop at the first that fails."""
    total = 0.0
    for stage, args in stages:
        result = run_stage(tree, args, cache, timeout)
        total += result["seconds"]
        if not result["passed"]:
            return {"status": "killed", "stage": stage, "test": result["failed"] or
                    "(pytest failed: " + result["output"].strip().splitlines()[-1] + ")",
                    "seconds": round(total, 1)}
    return {"status": "survived", "stage": None, "test": None, "seconds": round(total, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ref", default="HEAD", help="commit to mutate (default %(default)s)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run these mutants only")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    p.add_argument("--timeout", type=float, default=600, help="seconds per stage")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--no-record", action="store_true", help="do not write --out")
    p.add_argument("--overlay", nargs="+", metavar="PATH", default=[],
                   help="copy these files of the checkout over the exported tree "
                        "(trying new tests before committing them; nothing is recorded)")
    p.add_argument("--quick", action="store_true",
                   help="the first stage only (exploring; nothing is recorded)")
    args = p.parse_args(argv)
    stages = STAGES[:1] if args.quick else STAGES
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list or not mutants:
        for m in MUTANTS:
            print(f"{m.name:24} {m.path:15} {m.kind:10} {m.what}")
        return 0 if args.list else 2
    at = commit(args.ref)
    rows = []
    with tempfile.TemporaryDirectory(prefix="darbgen-mutants-") as tmp:
        tree = Path(tmp) / "tree"
        export_tree(args.ref, tree)
        for path in args.overlay:
            shutil.copy(ROOT / path, tree / path)
        for m in mutants:                   # every pattern first: fail before the long part
            (tree / m.path).write_text(apply(tree, m))
        print(f"mutating {at}: baseline ...", flush=True)
        base = check(tree, Path(tmp) / "cache-baseline", args.timeout, stages)
        if base["status"] != "survived":
            print(f"the unmutated tree fails {base['test']}: fix that first", file=sys.stderr)
            return 1
        print(f"baseline passes ({base['seconds']} s)", flush=True)
        for m in mutants:
            original = apply(tree, m)
            cache = Path(tmp) / f"cache-{m.name}"
            try:
                result = check(tree, cache, args.timeout, stages)
            finally:
                (tree / m.path).write_text(original)
                shutil.rmtree(cache, ignore_errors=True)
            row = {"name": m.name, "file": m.path, "kind": m.kind, "what": m.what,
                   **result, "equivalent": m.equivalent or None}
            rows.append(row)
            print(f"{m.name:24} {result['status']:8} {result['seconds']:6.1f} s  "
                  f"{result['test'] or ''}", flush=True)
    counted = [r for r in rows if not r["equivalent"]]
    killed = sum(r["status"] == "killed" for r in counted)
    rate = killed / len(counted) if counted else 0.0
    equivalent = [r for r in rows if r["equivalent"]]
    print(f"kill rate {killed}/{len(counted)} = {rate:.1%} of the non-equivalent mutants"
          + (f"; {len(equivalent)} equivalent: " + ", ".join(
              f"{r['name']} ({r['status']})" for r in equivalent) if equivalent else ""))
    if not (args.no_record or args.only or args.quick or args.overlay):
        record("mutation", {"commit": at, "stages": [s for s, _ in STAGES],
                            "killed": killed, "mutants": len(counted),
                            "kill_rate": round(rate, 4), "equivalent": len(equivalent),
                            "baseline_seconds": base["seconds"], "results": rows}, args.out)
        print(f"wrote {args.out}")
    return 0 if killed == len(counted) else 1


if __name__ == "__main__":
    sys.exit(main())
