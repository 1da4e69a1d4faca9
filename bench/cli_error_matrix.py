"""The CLI error matrix of docs/adversarial.md, from a run of tests/test_cli_errors.py.

Runs the bad-input cases (each must print one line and leave nothing behind; the test
checks that), records the line each printed, and rewrites the section between the
``<!-- cli-error-matrix -->`` markers of ``docs/adversarial.md``: cases per subcommand,
then every case with its exit status and its line.

Run: ``.venv/bin/python bench/cli_error_matrix.py`` (about a minute).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from _record import ROOT

DOC = ROOT / "docs" / "adversarial.md"
BEGIN, END = "<!-- cli-error-matrix -->", "<!-- /cli-error-matrix -->"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        record = Path(tmp) / "matrix.jsonl"
        env = {**os.environ, "DARBGEN_ERROR_MATRIX": str(record)}
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/test_cli_errors.py", "-k", "one_clear_line"],
                             cwd=ROOT, env=env)
        if run.returncode:
            return run.returncode
        cases = [json.loads(line) for line in record.read_text().splitlines()]
    by_command = Counter(c["line"].split(":")[0].removeprefix("darbgen").strip() or "(none)"
                         for c in cases)
    lines = [BEGIN, "", "| subcommand | cases |", "| --- | ---: |"]
    lines += [f"| `{cmd}` | {n} |" for cmd, n in sorted(by_command.items())]
    lines += [f"| all | {len(cases)} |", "",
              "Every case and the line it prints (`IN` and `OUT` stand for the test's "
              "directories):", "", f"<details><summary>{len(cases)} cases</summary>", "",
              "| case | exit | the one line on stderr |", "| --- | ---: | --- |"]
    lines += [f"| {c['case']} | {c['exit']} | `{c['line']}` |" for c in cases]
    lines += ["", "</details>", "", END]
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    DOC.write_text(head + "\n".join(lines) + rest.split(END, 1)[1])
    print(f"{len(cases)} cases written to {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
