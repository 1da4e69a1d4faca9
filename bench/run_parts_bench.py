"""RUN replies of several frames (protocol v5): bytes and frames on the line per RUN.

For each ``ROWSxLANES`` shape, a random DARB layer of 16 columns (seeded) is loaded onto
the protocol controller in Amaranth's simulator (:class:`~darbgen.sim.link_sim.SimulatedLink`,
one byte per cycle each way) through the host driver; one vector is run and checked
against the golden model, and the bench prints the bytes sent and received for that
RUN, the reply frames they took, and what one frame of protocol v4's layout (no part
head) would have been.

    python bench/run_parts_bench.py [--shapes 400x1,512x2] [--seed 20261207]
                                    [-o docs/run_parts.json]

Each shape takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from darbgen.config import EngineConfig
from darbgen.format import SparseLayer
from darbgen.hdl.protocol import (HEADER_BYTES, PART_BYTES, REPLY_HEAD_BYTES, TRAILER_BYTES,
                                  Sizes)
from darbgen.host import Board
from darbgen.sim.golden import spmv_ref
from darbgen.sim.link_sim import SimulatedLink

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import commit, record, uncommitted_changes  # noqa: E402


def darb_layer(rng, rows: int, cols: int = 16) -> SparseLayer:
    """A random DARB layer: per row a block size of 4 or 8, one kept weight per block."""
    b = rng.choice([4, 8], size=rows)
    offsets = [o for r in range(rows) for _ in range(0, cols, b[r])
               for o in [int(rng.integers(b[r]))]]
    return SparseLayer(name="tall", rows=rows, cols=cols, block_sizes=b,
                       keep=np.ones(rows, dtype=np.int64), offsets=np.asarray(offsets),
                       values=rng.integers(-128, 128, size=len(offsets)),
                       scale=np.full(rows, 0.05), method="darb")


def measure(rows: int, lanes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    layer = darb_layer(rng, rows)
    config = EngineConfig.for_layers([layer], lanes)
    sizes = Sizes.of(config)
    link = SimulatedLink(config, byte_cycles=1)
    board = Board(link, timeout=link.seconds(20_000))
    board.load(layer)
    x = rng.integers(-128, 128, size=(1, layer.cols))
    sent, received = link.sent, link.received
    y = board.run(x)
    beats = config.output_beats
    frames = -(-beats // sizes.y_frame_beats)
    one_v4_frame = HEADER_BYTES + REPLY_HEAD_BYTES + beats * sizes.y_bytes + TRAILER_BYTES
    got = link.received - received
    assert got == one_v4_frame + frames * PART_BYTES + (frames - 1) * (
        HEADER_BYTES + REPLY_HEAD_BYTES + TRAILER_BYTES), "the line carried other bytes"
    return {"rows": rows, "lanes": lanes, "output_beats": beats, "y_bytes": sizes.y_bytes,
            "beats_per_frame": sizes.y_frame_beats, "frames": frames,
            "sent": link.sent - sent, "received": got, "one_v4_frame": one_v4_frame,
            "overhead": round(got / one_v4_frame - 1, 4),
            "exact": bool(np.array_equal(y, spmv_ref(layer, x))), "retries": board.retried}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="400x1,512x2")
    p.add_argument("--seed", type=int, default=20261207)
    p.add_argument("-o", "--output", type=Path, help="record the rows in this JSON file")
    args = p.parse_args(argv)
    rows = []
    for shape in args.shapes.split(","):
        r, lanes = (int(v) for v in shape.split("x"))
        rows.append(measure(r, lanes, args.seed))
        m = rows[-1]
        print(f"{m['rows']} rows on {m['lanes']} lane(s): {m['output_beats']} beats of "
              f"{m['y_bytes']} B in {m['frames']} frame(s) of up to {m['beats_per_frame']}; "
              f"RUN sent {m['sent']} B, received {m['received']} B (one v4 frame: "
              f"{m['one_v4_frame']} B, +{100 * m['overhead']:.1f} %), exact {m['exact']}")
    if args.output:
        record("run_parts", {"commit": commit(), "dirty": uncommitted_changes(),
                             "seed": args.seed, "rows": rows}, args.output)
    return 0 if all(m["exact"] for m in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
