"""The engine contract: :class:`EngineConfig` and the bit layouts derived from it.

Every width in the engine, its testbench, the packing of weights and the host's
framing comes from one frozen :class:`EngineConfig`. Payload layouts are
described once here as field lists (LSB first, the order Amaranth's
``data.StructLayout`` uses); ``darbgen.hdl.layouts`` turns them into Amaranth
layouts and :mod:`darbgen.packing` packs numpy data with them.

A field's shape is ``("u", width)``, ``("s", width)`` or
``("array", element_shape, count)``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from .format import SparseLayer, ceil_log2

__all__ = ["EngineConfig", "ConfigError", "shape_width", "layout_width"]


#: Most lanes an engine has (a thousand multipliers is past every supported part; a
#: bound keeps per-lane tables from allocating without limit).
MAX_LANES = 1024


class ConfigError(ValueError):
    """An engine configuration is invalid, or a layer does not fit it."""


def _bits(max_value: int) -> int:
    """Unsigned bits to hold 0..max_value."""
    return max(1, int(max_value).bit_length())


def shape_width(shape) -> int:
    """Bit width of a field shape."""
    if shape[0] == "array":
        return shape_width(shape[1]) * shape[2]
    return shape[1]


def layout_width(fields) -> int:
    """Bit width of a field list."""
    return sum(shape_width(shape) for _, shape in fields)


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one generated sparse matrix-vector engine.

    Parameters
    ----------
    lanes : int
        Parallel multipliers P; each lane runs its own rows.
    shifts : tuple of int
        Supported ``log2`` block sizes; a row header stores an index into this tuple.
    max_keep : int
        Largest keep count k per block.
    max_row_nnz : int
        Most entries in one row (sets the accumulator and the row-length field).
    max_cols : int
        Widest input vector.
    lane_depth : int
        Weight beats one lane can hold.
    lane_rows : int
        Rows one lane can hold.
    weight_bits, input_bits : int
        Signed widths of weights and inputs.
    input_width : int
        Input elements per input-stream beat.

    Raises
    ------
    ConfigError
        A parameter is out of range; the message names it.
    """

    lanes: int
    shifts: tuple
    max_keep: int
    max_row_nnz: int
    max_cols: int
    lane_depth: int
    lane_rows: int
    weight_bits: int = 8
    input_bits: int = 8
    input_width: int = 8

    def __post_init__(self):
        shifts = self.shifts
        if not isinstance(shifts, (tuple, list)) or not all(
                isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shifts):
            raise ConfigError(f"shifts must be a tuple of integers, not {shifts!r}")
        object.__setattr__(self, "shifts", tuple(int(s) for s in shifts))
        for name in ("lanes", "max_keep", "max_row_nnz", "max_cols", "lane_depth",
                     "lane_rows", "input_width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, not {v!r}")
        if self.lanes > MAX_LANES:
            raise ConfigError(f"lanes must be at most {MAX_LANES}, not {self.lanes}")
        for name in ("weight_bits", "input_bits"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 16:
                raise ConfigError(f"{name} must be an integer between 2 and 16, not {v!r}")
        if not self.shifts or any(s < 0 or s > 20 for s in self.shifts) or \
                len(set(self.shifts)) != len(self.shifts):
            raise ConfigError(f"shifts must be distinct log2 block sizes between 0 and 20, "
                              f"not {self.shifts!r}")
        if self.input_width & (self.input_width - 1):
            raise ConfigError(f"input_width must be a power of 2, not {self.input_width}")
        if self.max_keep > 1 << max(self.shifts):
            raise ConfigError(f"max_keep {self.max_keep} exceeds the largest block size "
                              f"{1 << max(self.shifts)}")

    # -- derived widths ---------------------------------------------------------------

    @property
    def block_sizes(self) -> tuple:
        return tuple(1 << s for s in self.shifts)

    @property
    def offset_bits(self) -> int:
        """In-block offset width: ``max log2 b``."""
        return max(self.shifts)

    @property
    def col_bits(self) -> int:
        return max(1, ceil_log2(self.max_cols))

    @property
    def acc_width(self) -> int:
        """Signed accumulator width: exact for any row (see SparseLayer.accumulator_width)."""
        return self.weight_bits + self.input_bits + ceil_log2(self.max_row_nnz)

    @property
    def x_depth(self) -> int:
        """Input-buffer words per vector."""
        return -(-self.max_cols // self.input_width)

    @property
    def output_beats(self) -> int:
        """Most output beats per vector (one per slot)."""
        return self.lane_rows

    @property
    def single_block(self) -> bool:
        """Every row is one block (the CSR layout): the column is the offset itself."""
        return len(self.shifts) == 1 and (1 << self.shifts[0]) >= self.max_cols

    # -- payload layouts (LSB first) ----------------------------------------------------

    @property
    def beat_fields(self) -> list:
        """One weight beat: the packing function's ``(value, offset)``."""
        return [("value", ("s", self.weight_bits)), ("offset", ("u", max(1, self.offset_bits)))]

    @property
    def header_fields(self) -> list:
        """One row header: shift code, keep count, row length."""
        return [("shift", ("u", max(1, ceil_log2(len(self.shifts))))),
                ("keep", ("u", _bits(self.max_keep))),
                ("nnz", ("u", _bits(self.max_row_nnz)))]

    @property
    def load_fields(self) -> list:
        """One word of the weight-load stream: a beat or a header for one lane."""
        data = max(layout_width(self.beat_fields), layout_width(self.header_fields))
        return [("data", ("u", data)), ("lane", ("u", max(1, ceil_log2(self.lanes)))),
                ("header", ("u", 1)), ("first", ("u", 1))]

    @property
    def input_fields(self) -> list:
        """One input beat: ``input_width`` elements, ``last`` on a vector's final beat."""
        return [("x", ("array", ("s", self.input_bits), self.input_width)), ("last", ("u", 1))]

    @property
    def output_fields(self) -> list:
        """One output beat: one exact sum per lane, ``last`` on a vector's final beat."""
        return [("y", ("array", ("s", self.acc_width), self.lanes)), ("last", ("u", 1))]

    # -- identity -----------------------------------------------------------------------

    def to_json(self) -> dict:
        d = asdict(self)
        d["shifts"] = list(self.shifts)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "EngineConfig":
        try:
            return cls(**{**d, "shifts": tuple(d["shifts"])})
        except (TypeError, KeyError) as e:
            raise ConfigError(f"not an engine configuration ({e})") from None

    def digest(self) -> str:
        """Stable hash of the configuration (feeds build IDs)."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.blake2s(text.encode(), digest_size=8).hexdigest()

    # -- layers -------------------------------------------------------------------------

    def check_layer(self, layer: SparseLayer, schedule=None) -> None:
        """Raise :class:`ConfigError` unless ``layer`` runs on this engine."""
        where = f"layer {layer.name!r}"
        if layer.weight_bits > self.weight_bits:
            raise ConfigError(f"{where} has {layer.weight_bits}-bit weights, the engine "
                              f"takes {self.weight_bits}")
        if layer.cols > self.max_cols:
            raise ConfigError(f"{where} has {layer.cols} columns, the engine takes "
                              f"{self.max_cols}")
        missing = sorted(set(layer.log2_block_sizes.tolist()) - set(self.shifts))
        if missing:
            raise ConfigError(f"{where} uses block size {1 << missing[0]}, the engine supports "
                              f"{', '.join(map(str, self.block_sizes))}")
        if layer.keep.max() > self.max_keep:
            raise ConfigError(f"{where} keeps {layer.keep.max()} per block, the engine at most "
                              f"{self.max_keep}")
        if layer.row_nnz.max() > self.max_row_nnz:
            raise ConfigError(f"{where} has a row of {layer.row_nnz.max()} entries, the engine "
                              f"takes {self.max_row_nnz}")
        if schedule is not None:
            beats, rows = schedule.lane_beats.max(), schedule.lane_counts.max()
            if beats > self.lane_depth or rows > self.lane_rows:
                raise ConfigError(f"{where} needs {beats} beats and {rows} rows in a lane, "
                                  f"the engine holds {self.lane_depth} and {self.lane_rows}")

    @classmethod
    def for_layers(cls, layers, lanes: int = 8, *, input_width: int | None = None,
                   weight_bits: int | None = None) -> "EngineConfig":
        """The smallest engine that runs every one of ``layers`` at ``lanes`` lanes."""
        from .packing import schedule as make_schedule

        layers = list(layers)
        if not layers:
            raise ConfigError("need at least one layer to size an engine")
        scheds = [make_schedule(layer, lanes) for layer in layers]
        return cls(
            lanes=lanes,
            shifts=tuple(sorted({int(s) for layer in layers
                                 for s in layer.log2_block_sizes.tolist()})),
            max_keep=max(int(layer.keep.max()) for layer in layers),
            max_row_nnz=max(int(layer.row_nnz.max()) for layer in layers),
            max_cols=max(layer.cols for layer in layers),
            lane_depth=max(int(s.lane_beats.max()) for s in scheds),
            lane_rows=max(int(s.lane_counts.max()) for s in scheds),
            weight_bits=weight_bits or max(layer.weight_bits for layer in layers),
            input_width=input_width or 1 << ceil_log2(lanes))
