"""Packing: how a layer's beats, headers and vectors travel to and from an engine.

:func:`schedule` assigns rows to lanes; :func:`load_words` turns a layer into the
weight-load stream (each lane's row headers, then its ``(value, offset)`` beats
from :func:`darbgen.format.pack_beats`); :func:`input_words` and
:func:`unpack_outputs` do the same for vectors. Bit layouts come from
:class:`darbgen.config.EngineConfig`; this module is the only place where numpy
data becomes stream words, for the testbenches and the host alike.

Only numpy: no torch, no Amaranth.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from .config import MAX_LANES, EngineConfig, shape_width
from .format import SparseLayer, pack_beats

__all__ = ["Schedule", "schedule", "pack_fields", "unpack_fields", "load_words",
           "input_words", "unpack_outputs"]


@dataclass(frozen=True, eq=False)
class Schedule:
    """Rows of a layer assigned to lanes.

    Parameters
    ----------
    rows : int
        Rows of the layer.
    lane_row_lists : tuple of arrays
        Per lane, its rows in the order the lane runs them (its slots).
    lane_beats : array of int, shape (lanes,)
        Per lane, the weight beats it holds: its work in cycles per vector.
    """

    rows: int
    lane_row_lists: tuple
    lane_beats: np.ndarray

    @property
    def lanes(self) -> int:
        return len(self.lane_row_lists)

    @property
    def lane_counts(self) -> np.ndarray:
        return np.array([len(r) for r in self.lane_row_lists])

    @property
    def slots(self) -> int:
        """Output beats per vector: the most rows any lane runs."""
        return int(self.lane_counts.max())

    @property
    def balance(self) -> float:
        """Mean over max lane work: the utilization bound this assignment allows."""
        return float(self.lane_beats.mean() / max(self.lane_beats.max(), 1))

    def output_map(self) -> np.ndarray:
        """``(slots, lanes)`` row index of every output position, -1 where empty."""
        out = np.full((self.slots, self.lanes), -1, dtype=np.int64)
        for lane, rows in enumerate(self.lane_row_lists):
            out[:len(rows), lane] = rows
        return out


def schedule(layer: SparseLayer, lanes: int) -> Schedule:
    """Assign rows to lanes, longest row first to the least-loaded lane (LPT).

    A lane's work is the sum of its rows' entries, because a lane issues one beat per
    cycle with no bubble between rows. LPT keeps the busiest lane within one row of
    the mean. Rows without entries get no lane: their output is 0. Each lane runs its
    rows in ascending row order.
    """
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
    if lanes > MAX_LANES:
        raise ValueError(f"lanes must be at most {MAX_LANES}, not {lanes}")
    nnz = layer.row_nnz
    order = np.argsort(-nnz, kind="stable")
    heap = [(0, lane) for lane in range(lanes)]
    assigned = [[] for _ in range(lanes)]
    for row in order:
        if nnz[row] == 0:
            continue
        work, lane = heapq.heappop(heap)
        assigned[lane].append(int(row))
        heapq.heappush(heap, (work + int(nnz[row]), lane))
    lists = tuple(np.array(sorted(rows), dtype=np.int64) for rows in assigned)
    beats = np.array([int(nnz[rows].sum()) for rows in lists], dtype=np.int64)
    return Schedule(layer.rows, lists, beats)


# -- bit packing from the config's field lists -----------------------------------------

def _as_unsigned(values, shape) -> np.ndarray:
    v = np.asarray(values, dtype=object)
    width = shape[1]
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if shape[0] == "s" else (0, (1 << width) - 1)
    if v.size and (min(v.flat) < lo or max(v.flat) > hi):
        raise ValueError(f"value out of range for a {shape[0]}{width} field")
    return v % (1 << width)


def pack_fields(fields, columns: dict, n: int) -> list:
    """Pack ``n`` records into integers, fields LSB first (Amaranth's layout order).

    ``columns`` maps each field name to ``n`` values (an array field: ``(n, count)``);
    a missing field packs as 0.
    """
    words = np.zeros(n, dtype=object)
    shift = 0
    for name, shape in fields:
        if name in columns:
            if shape[0] == "array":
                col = np.asarray(columns[name]).reshape(n, shape[2])
                ew = shape_width(shape[1])
                for i in range(shape[2]):
                    words += _as_unsigned(col[:, i], shape[1]) << (shift + i * ew)
            else:
                # dtype=object: a column of packed words (a network's load data) may mix
                # ints above and below 2**63, which numpy would turn into floats.
                col = np.asarray(columns[name], dtype=object).reshape(n)
                words += _as_unsigned(col, shape) << shift
        shift += shape_width(shape)
    return [int(w) for w in words]


def _signed(v, width):
    return v - (1 << width) if v >> (width - 1) else v


def unpack_fields(fields, words) -> dict:
    """Inverse of :func:`pack_fields`: field name → int64 array (arrays: ``(n, count)``;
    a field of 64 bits or more: an object array of Python ints)."""
    out, shift = {}, 0
    for name, shape in fields:
        if shape[0] == "array":
            ew = shape_width(shape[1])
            vals = [[(w >> (shift + i * ew)) & ((1 << ew) - 1) for i in range(shape[2])]
                    for w in words]
            if shape[1][0] == "s":
                vals = [[_signed(v, ew) for v in row] for row in vals]
            out[name] = np.array(vals, dtype=np.int64).reshape(len(words), shape[2])
        else:
            width = shape[1]
            vals = [(w >> shift) & ((1 << width) - 1) for w in words]
            if shape[0] == "s":
                vals = [_signed(v, width) for v in vals]
            # A field wider than int64 (a processor's load data) stays Python ints.
            out[name] = np.array(vals, dtype=np.int64 if width < 64 else object)
        shift += shape_width(shape)
    return out


# -- the streams ---------------------------------------------------------------------

def load_words(layer: SparseLayer, config: EngineConfig, sched: Schedule | None = None) -> list:
    """The weight-load stream for ``layer``: per lane, its row headers then its beats.

    The first word has ``first`` set, which resets every lane's write pointers.
    """
    sched = sched or schedule(layer, config.lanes)
    config.check_layer(layer, sched)
    beats = pack_beats(layer)
    starts = layer.row_starts
    code = {s: i for i, s in enumerate(config.shifts)}
    lanes, data, is_header = [], [], []
    for lane, rows in enumerate(sched.lane_row_lists):
        if len(rows) == 0:
            continue
        header = pack_fields(config.header_fields, {
            "shift": [code[int(s)] for s in layer.log2_block_sizes[rows]],
            "keep": layer.keep[rows], "nnz": layer.row_nnz[rows]}, len(rows))
        idx = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in rows])
        lane_beats = beats[idx]
        body = pack_fields(config.beat_fields, {"value": lane_beats["value"],
                                                "offset": lane_beats["offset"]}, len(idx))
        data += header + body
        is_header += [1] * len(header) + [0] * len(body)
        lanes += [lane] * (len(header) + len(body))
    first = [1] + [0] * (len(data) - 1)
    return pack_fields(config.load_fields, {"data": data, "lane": lanes, "header": is_header,
                                            "first": first}, len(data))


def input_words(x, config: EngineConfig, *, last: bool = True) -> list:
    """Input beats for vectors ``x`` (``(n, cols)`` ints): ``input_width`` elements per beat,
    the last beat of each vector zero-padded and flagged ``last``.

    With ``last=False`` the beats carry only the elements (the serial link's RUN
    payload: the device marks the last beat itself).
    """
    x = np.atleast_2d(np.asarray(x, dtype=np.int64))
    n, cols = x.shape
    per = -(-cols // config.input_width)
    padded = np.zeros((n, per * config.input_width), dtype=np.int64)
    padded[:, :cols] = x
    fields = config.input_fields if last else config.input_fields[:1]
    flags = np.zeros((n, per), dtype=np.int64)
    flags[:, -1] = 1
    return pack_fields(fields, {"x": padded.reshape(n * per, config.input_width),
                                "last": flags.reshape(-1)}, n * per)


def unpack_outputs(words, config: EngineConfig, sched: Schedule) -> np.ndarray:
    """Output beats → ``(n, rows)`` int64 results, in row order.

    Raises
    ------
    ValueError
        The beat count or the ``last`` flags do not match the schedule.
    """
    fields = unpack_fields(config.output_fields, list(words))
    if len(words) % sched.slots:
        raise ValueError(f"{len(words)} output beats are not a whole number of vectors of "
                         f"{sched.slots} beats")
    n = len(words) // sched.slots
    expected_last = np.tile(np.arange(sched.slots) == sched.slots - 1, n)
    if not np.array_equal(fields["last"].astype(bool), expected_last):
        raise ValueError("output 'last' flags do not mark the end of each vector")
    y = np.zeros((n, sched.rows), dtype=np.int64)
    omap = sched.output_map()
    sums = fields["y"].reshape(n, sched.slots, sched.lanes)
    valid = omap >= 0
    for v in range(n):
        y[v, omap[valid]] = sums[v][valid]
    return y
