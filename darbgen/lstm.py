"""The LSTM step on chip: the contract between the host, the step's gateware and the
golden model (numpy only: no torch, no Amaranth).

One step of :mod:`darbgen.sim.lstm_golden` (with the integers of
:mod:`darbgen.lstm_format`) runs as the gate layer's SpMV on a
:class:`~darbgen.config.EngineConfig` engine followed by the LSTM cell
(:class:`darbgen.hdl.lstm.LSTMCell`), with ``h_t`` fed back into the engine's input
for the next step (:class:`darbgen.hdl.lstm.LSTMStep`). :class:`LSTMConfig` holds that
hardware and every field list of its streams; :func:`load_words`,
:func:`input_words` and :func:`unpack_outputs` are the only places where numpy data
becomes stream words and back.

Streams of the step
-------------------

``load``
    Words of :attr:`LSTMConfig.load_fields`: ``target`` :data:`LOAD_ENGINE` carries an
    engine load word (:func:`darbgen.packing.load_words`), :data:`LOAD_TABLE` an entry
    of the cell's table, :data:`LOAD_C_FRAC` the cell format ``c_frac``.
``x``
    Per step, ``x_t`` (the ``inputs`` int8 elements of ``[x_t; h_{t-1}]``) in
    ``input_width`` elements per beat, ``last`` on its final beat. ``reset`` on the
    beats of a step starts that step from ``h = c = 0`` (a new stream); without it the
    step continues from the state the previous step left on chip.
``y``
    Per step, one beat per hidden unit in unit order: ``h_t`` (int8) and ``c_t`` (int16),
    ``last`` on the final unit.

The cell's table
----------------

One entry per output position of the engine (slot-major, lane-minor, the order of
its output beats) and then one per gate row without weights (those rows never leave
the engine; the cell applies them with a zero sum), like the requantizer of
:mod:`darbgen.network`. An entry names its row as ``(gate, unit)`` (row
``gate · hidden + unit``, gates in PyTorch's order i, f, g, o) and carries that row's
integer bias, multiplier and shift from :class:`~darbgen.lstm_format.IntLSTMParams`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .config import ConfigError, EngineConfig, layout_width
from .format import SparseLayer, ceil_log2
from .packing import Schedule, pack_fields, schedule, unpack_fields
from .packing import load_words as engine_load_words
from .lstm_format import (A_FRAC, BIAS_MAX, SIGMOID_LUT, TANH_LUT, X_ONE, Z_MAX, Z_MIN,
                          IntLSTMParams, lstm_shape)
from .quant import MULT_BITS

__all__ = ["LOAD_ENGINE", "LOAD_TABLE", "LOAD_C_FRAC", "GATES", "LUT_BITS", "C_BITS",
           "SHIFT_BITS", "BIAS_BITS", "C_FRAC_BITS", "Z_BITS", "LSTMConfig", "lut_init",
           "FOLDED_TANH_SAT", "FOLDED_BITS", "folded_lut_init", "folded_lookup",
           "cell_table", "load_words", "check_steps", "input_words", "unpack_outputs"]

#: Load targets of the step's ``load`` stream.
LOAD_ENGINE, LOAD_TABLE, LOAD_C_FRAC = 0, 1, 2
#: Gates per hidden unit (i, f, g, o); gate 2 (g) goes through tanh, the others sigmoid.
GATES = 4
#: Signed width of a lookup-table entry (Q1.14: values -2^14..2^14 need 16 bits).
LUT_BITS = A_FRAC + 2
#: Signed width of the cell state c.
C_BITS = 16
#: Width of a row's requantization shift in the table (shifts 1..62).
SHIFT_BITS = 6
#: Signed width of a row's integer bias.
BIAS_BITS = (BIAS_MAX + 1).bit_length()
#: Width of the cell format ``c_frac`` (7..14).
C_FRAC_BITS = A_FRAC.bit_length()
#: Signed width of the clamped pre-activation z (Q3.7): a table index is ``z - Z_MIN``.
Z_BITS = (Z_MAX - Z_MIN).bit_length()


def lut_init() -> list:
    """The cell's lookup memory: ``SIGMOID_LUT`` at ``0..2047``, ``TANH_LUT`` at
    ``2048..4095`` (the index's top bit picks tanh)."""
    return [int(v) for v in np.concatenate([SIGMOID_LUT, TANH_LUT])]


def _tanh_saturation() -> int:
    """The smallest ``z`` from which ``TANH_LUT`` is 1.0 (``2^A_FRAC``) to the end."""
    one = TANH_LUT == 1 << A_FRAC
    return int(np.flatnonzero(~one)[-1]) + 1 + Z_MIN


#: ``TANH_LUT`` is 1.0 from this ``z`` on: the folded ROM stores tanh only below it.
FOLDED_TANH_SAT = _tanh_saturation()
#: Width of a folded ROM entry: unsigned, up to 1.0 = ``2^A_FRAC``.
FOLDED_BITS = A_FRAC + 1


def folded_lut_init() -> list:
    """The lookup ROM folded by the tables' symmetries (the processor's cell):
    ``sigma(z)`` for ``z = 0..Z_MAX`` at ``0..Z_MAX``, ``sigma(Z_MIN)`` (no mirror: ``-Z_MIN``
    is out of range) at ``Z_MAX + 1``, then ``tanh(z)`` for ``z = 0..FOLDED_TANH_SAT`` (the
    last entry is 1.0, for every larger ``|z|``). :func:`folded_lookup` reads it; the
    result equals ``SIGMOID_LUT`` and ``TANH_LUT`` at every ``z`` (tested on all of them)."""
    sig = SIGMOID_LUT[-Z_MIN:].astype(np.int64)                 # z = 0..Z_MAX
    tanh = TANH_LUT[-Z_MIN:FOLDED_TANH_SAT - Z_MIN + 1].astype(np.int64)
    return [int(v) for v in np.concatenate([sig, [SIGMOID_LUT[0]], tanh])]


def folded_lookup(z, tanh: bool) -> np.ndarray:
    """The folded ROM's read, in numpy (what :class:`darbgen.hdl.lstm.FoldedLUT` computes):
    the entry of ``|z|``, mirrored for ``z < 0`` (``sigma(-z) = 1 - sigma(z)``,
    ``tanh(-z) = -tanh(z)``)."""
    z = np.clip(np.asarray(z, np.int64), Z_MIN, Z_MAX)
    rom = np.asarray(folded_lut_init(), np.int64)
    mag = np.abs(z)
    if tanh:
        v = rom[Z_MAX + 2 + np.minimum(mag, FOLDED_TANH_SAT)]
        return np.where(z < 0, -v, v)
    v = rom[np.minimum(mag, Z_MAX + 1)]
    return np.where((z < 0) & (z != Z_MIN), (1 << A_FRAC) - v, v)


@dataclass(frozen=True)
class LSTMConfig:
    """The hardware of one LSTM layer's step: a gate engine and the cell after it.

    The engine's ``max_cols`` is the width of ``[x_t; h_{t-1}]``, so the step takes
    ``inputs = max_cols - hidden`` inputs.

    Parameters
    ----------
    engine : EngineConfig
        The gate engine; its inputs must hold ``h`` (``input_bits >= 8``).
    hidden : int
        Hidden units: the gate layer has ``4 · hidden`` rows.

    Raises
    ------
    ConfigError
        ``hidden`` is not a positive integer below ``engine.max_cols``, or the engine's
        inputs cannot hold ``h``.
    """

    engine: EngineConfig
    hidden: int

    def __post_init__(self):
        if not isinstance(self.engine, EngineConfig):
            raise ConfigError(f"engine must be an EngineConfig, not {self.engine!r}")
        h = self.hidden
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1 \
                or h >= self.engine.max_cols:
            raise ConfigError(f"hidden must be a positive integer below the engine's "
                              f"{self.engine.max_cols} columns, not {h!r}")
        object.__setattr__(self, "hidden", int(h))
        if (1 << (self.engine.input_bits - 1)) - 1 < X_ONE:
            raise ConfigError(f"the engine's {self.engine.input_bits}-bit inputs cannot hold "
                              f"h in [-{X_ONE}, {X_ONE}]")

    # -- derived sizes ------------------------------------------------------------------

    @property
    def inputs(self) -> int:
        """Elements of ``x_t``."""
        return self.engine.max_cols - self.hidden

    @property
    def rows(self) -> int:
        """Gate rows: ``4 · hidden``."""
        return GATES * self.hidden

    @property
    def x_words(self) -> int:
        """Input beats per step (``x_t`` in ``input_width`` elements per beat)."""
        return -(-self.inputs // self.engine.input_width)

    @property
    def positions(self) -> int:
        """Entries of the cell's table: every output position, then every row."""
        return self.engine.lanes * self.engine.lane_rows + self.rows

    @property
    def unit_bits(self) -> int:
        return max(1, ceil_log2(self.hidden))

    # -- layouts (LSB first) ------------------------------------------------------------

    @property
    def table_fields(self) -> list:
        """One entry of the cell's table (``first`` restarts the table)."""
        return [("unit", ("u", self.unit_bits)), ("gate", ("u", ceil_log2(GATES))),
                ("bias", ("s", BIAS_BITS)), ("mult", ("u", MULT_BITS)),
                ("shift", ("u", SHIFT_BITS)), ("valid", ("u", 1)), ("first", ("u", 1))]

    @property
    def load_fields(self) -> list:
        """One load word: a target's own word in ``data``."""
        data = max(layout_width(self.engine.load_fields), layout_width(self.table_fields),
                   C_FRAC_BITS)
        return [("data", ("u", data)), ("target", ("u", 2))]

    @property
    def input_fields(self) -> list:
        """One beat of ``x_t``: the engine's input beat plus ``reset``."""
        return self.engine.input_fields + [("reset", ("u", 1))]

    @property
    def output_fields(self) -> list:
        """One beat of the step's result: one unit's ``h_t`` and ``c_t``."""
        return [("h", ("s", self.engine.input_bits)), ("c", ("s", C_BITS)), ("last", ("u", 1))]

    # -- layers and identity ------------------------------------------------------------

    @classmethod
    def for_layer(cls, gate: SparseLayer, lanes: int = 4, *,
                  input_width: int | None = None) -> "LSTMConfig":
        """The smallest step that runs ``gate`` at ``lanes`` lanes."""
        _, hidden = lstm_shape(gate)
        return cls(EngineConfig.for_layers([gate], lanes, input_width=input_width), hidden)

    def check(self, gate: SparseLayer, params: IntLSTMParams) -> Schedule:
        """Raise :class:`ConfigError` unless ``gate`` and ``params`` run on this step;
        return the gate layer's lane schedule."""
        inputs, hidden = lstm_shape(gate)
        if (inputs, hidden) != (self.inputs, self.hidden):
            raise ConfigError(f"gate layer {gate.name!r} has {inputs} inputs and {hidden} "
                              f"hidden units, the step {self.inputs} and {self.hidden}")
        if params.hidden != hidden:
            raise ConfigError(f"params are for hidden = {params.hidden}, the gate layer "
                              f"{gate.name!r} has {hidden}")
        sched = schedule(gate, self.engine.lanes)
        self.engine.check_layer(gate, sched)
        return sched

    def to_json(self) -> dict:
        return {"engine": self.engine.to_json(), "hidden": self.hidden}

    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.blake2s(text.encode(), digest_size=8).hexdigest()


def cell_table(params: IntLSTMParams, sched: Schedule, gate: SparseLayer) -> dict:
    """The cell's table as columns: one entry per output position of ``sched``
    (slot-major, lane-minor), then one per row without weights."""
    hidden = params.hidden
    omap = sched.output_map().reshape(-1)
    empty = np.flatnonzero(gate.row_nnz == 0)
    row = np.concatenate([np.maximum(omap, 0), empty])
    valid = np.concatenate([omap >= 0, np.ones(len(empty), bool)]).astype(np.int64)
    first = np.zeros(len(row), np.int64)
    first[0] = 1
    return {"unit": row % hidden * valid, "gate": row // hidden * valid,
            "bias": params.bias[row] * valid, "mult": params.mult[row] * valid,
            "shift": params.shift[row] * valid, "valid": valid, "first": first}


def load_words(gate: SparseLayer, params: IntLSTMParams, config: LSTMConfig) -> list:
    """The step's whole load stream: the engine's words, the cell's table, ``c_frac``.

    Raises
    ------
    ConfigError
        ``gate`` or ``params`` do not fit ``config``.
    """
    sched = config.check(gate, params)
    engine = engine_load_words(gate, config.engine, sched)
    table = cell_table(params, sched, gate)
    entries = pack_fields(config.table_fields, table, len(table["unit"]))
    data = engine + entries + [params.c_frac]
    targets = ([LOAD_ENGINE] * len(engine) + [LOAD_TABLE] * len(entries) + [LOAD_C_FRAC])
    return pack_fields(config.load_fields, {"data": data, "target": targets}, len(data))


def check_steps(x, reset, inputs: int, input_bits: int, *, continues: bool = False):
    """``x`` and ``reset`` of a sequence of steps as arrays, checked; ``continues``: the
    steps continue a sequence already running (the first need not reset).

    Raises
    ------
    ValueError
        ``x`` is not integers of shape ``(steps, inputs)``, ``reset`` not of shape
        ``(steps,)``, an input is out of the ``input_bits`` range or the first step does
        not reset.
    """
    x = np.asarray(x)
    reset = np.asarray(reset)
    if x.dtype.kind not in "iu" or x.ndim != 2 or x.shape[1] != inputs:
        raise ValueError(f"x must be integers of shape (steps, {inputs}), not "
                         f"{x.dtype} of shape {x.shape}")
    if reset.shape != (x.shape[0],):
        raise ValueError(f"reset must have shape ({x.shape[0]},), not {reset.shape}")
    if x.shape[0] and not reset[0] and not continues:
        raise ValueError("the first step must reset the state")
    lim = 1 << (input_bits - 1)
    if x.size and (x.min() < -lim or x.max() >= lim):
        raise ValueError(f"x must be between {-lim} and {lim - 1}, not "
                         f"{int(x.min())}..{int(x.max())}")
    return x, reset


def input_words(x, config: LSTMConfig, reset) -> list:
    """The ``x`` beats of a sequence of steps.

    Parameters
    ----------
    x : array of int, shape (steps, inputs)
        int8 inputs ``x_t`` (one-hot: ``X_ONE``).
    config : LSTMConfig
    reset : array of bool, shape (steps,)
        Steps that start from ``h = c = 0``; the first step must be one (the state
        on chip is undefined before).

    Raises
    ------
    ValueError
        A shape is wrong, an input is out of range or the first step does not reset.
    """
    x, reset = check_steps(x, reset, config.inputs, config.engine.input_bits)
    steps, iw, per = x.shape[0], config.engine.input_width, config.x_words
    padded = np.zeros((steps, per * iw), dtype=np.int64)
    padded[:, :config.inputs] = x
    last = np.zeros((steps, per), dtype=np.int64)
    last[:, -1] = 1
    flags = np.repeat(reset.astype(np.int64)[:, None], per, axis=1)
    return pack_fields(config.input_fields, {"x": padded.reshape(steps * per, iw),
                                             "last": last.reshape(-1),
                                             "reset": flags.reshape(-1)}, steps * per)


def unpack_outputs(words, config: LSTMConfig) -> tuple[np.ndarray, np.ndarray]:
    """Output beats → ``(h, c)``, int64 arrays of shape ``(steps, hidden)``.

    Raises
    ------
    ValueError
        The beat count or the ``last`` flags do not match whole steps.
    """
    words = list(words)
    if len(words) % config.hidden:
        raise ValueError(f"{len(words)} output beats are not a whole number of steps of "
                         f"{config.hidden} beats")
    f = unpack_fields(config.output_fields, words)
    steps = len(words) // config.hidden
    if not np.array_equal(f["last"].astype(bool),
                          np.tile(np.arange(config.hidden) == config.hidden - 1, steps)):
        raise ValueError("output 'last' flags do not mark the end of each step")
    return f["h"].reshape(steps, config.hidden), f["c"].reshape(steps, config.hidden)

