"""What the benches that record figures share: the commit they ran at, and an atomic
update of one key of a JSON file under ``docs/`` (other benches' keys are kept)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The directories whose changes make a figure no longer the committed code's.
SOURCES = ("darbgen", "hdl", "host", "sim", "pruning", "boards")


def commit(ref: str = "HEAD") -> str:
    """The short hash of ``ref``."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref],
                          capture_output=True, text=True, check=True).stdout.strip()


def uncommitted_changes() -> bool:
    """The checkout's sources differ from HEAD (a figure is then not HEAD's)."""
    return bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                *SOURCES], capture_output=True, text=True).stdout.strip())


def record(key: str, value, path: Path) -> None:
    """Set ``key`` in the JSON file at ``path``, keeping the other keys."""
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
