"""Emit the engine as Verilog plus a JSON description of its ports and parameters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from amaranth.back import verilog

from .. import __version__
from ..config import EngineConfig
from ..format import atomic_write
from ..packing import schedule
from .engine import SpMVEngine

__all__ = ["TOP_NAME", "engine_verilog", "generate"]

TOP_NAME = "darbgen_engine"


def engine_verilog(config: EngineConfig, name: str = TOP_NAME, engine=None) -> str:
    """The engine's Verilog text for ``config``."""
    from .. import toolenv
    toolenv.setup()                     # the builtin Yosys, never a system one
    return verilog.convert(engine or SpMVEngine(config), name=name, emit_src=False)


def generate(config: EngineConfig, outdir, layers=(), name: str = TOP_NAME) -> dict:
    """Write ``<name>.v`` and ``<name>.json`` into ``outdir``; return the JSON.

    The JSON holds the configuration, its derived widths, the ports (Amaranth's
    component metadata) and, per layer, its lane schedule figures.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    engine = SpMVEngine(config)
    text = engine_verilog(config, name, engine)
    info = {
        "top": name, "darbgen_version": __version__, "config": config.to_json(),
        "config_digest": config.digest(),
        "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "derived": {"acc_width": config.acc_width, "offset_bits": config.offset_bits,
                    "col_bits": config.col_bits, "x_depth": config.x_depth,
                    "block_sizes": list(config.block_sizes)},
        "ports": engine.metadata.as_json(),
        "layers": [],
    }
    for layer in layers:
        s = schedule(layer, config.lanes)
        info["layers"].append({"name": layer.name, "rows": layer.rows, "cols": layer.cols,
                               "nnz": layer.nnz, "output_beats": s.slots,
                               "lane_beats": s.lane_beats.tolist(), "balance": s.balance})
    atomic_write(outdir / f"{name}.v", lambda f: f.write(text.encode()))
    atomic_write(outdir / f"{name}.json", lambda f: f.write(json.dumps(info, indent=1).encode()))
    return info
