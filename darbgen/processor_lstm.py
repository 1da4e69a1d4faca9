"""The LSTM step on the layer-sequenced processor (numpy only: no torch, no Amaranth).

A processor with an LSTM cell (``ProcessorConfig.lstm_hidden > 0``) runs one LSTM
layer's time step as a program step of kind :attr:`~darbgen.processor.StepKind.LSTM`:

* the gate layer (``4·hidden × (inputs + hidden)``, :func:`darbgen.lstm_format.lstm_shape`)
  runs on the lanes exactly as a Linear layer does (its rows' headers, end markers and
  beats in the lanes' memories, :func:`darbgen.processor.lane_words`);
* its sums go, instead of to the requantizer, to the chain's LSTM cell
  (:class:`darbgen.hdl.lstm.LSTMCell`, table :func:`darbgen.lstm.cell_table`, loaded
  with target :attr:`~darbgen.processor.Target.CELL`), which keeps the cell state ``c``;
* the cell writes ``h_t`` into every lane's x memory at column ``inputs + unit``: the
  next time step's ``h_{t-1}``, with no copy (as a hidden Linear step's results);
* an inference is one time step: the host sends ``x_t`` (with ``reset`` on a step that
  starts from ``h = c = 0``, then followed by ``hidden`` zeros, which clear the lanes'
  ``h``), and gets ``(h_t, c_t)`` per unit back, packed in the output beat's ``y``
  (:func:`lstm_output_fields`), ``last`` on the final unit: what the chain's
  :class:`~darbgen.hdl.lstm.LSTMStep` returns, so both are checked against
  :func:`darbgen.sim.lstm_golden.int_lstm_sequence` alike.

Without ``reset`` only ``ceil(inputs / input_width)`` words are sent; the processor
writes only the first ``inputs`` elements of them (the rest of the last word is ``h``).
"""

from __future__ import annotations

import numpy as np

from .config import ConfigError, _bits, layout_width
from dataclasses import dataclass

from .format import Artifact, ArtifactError, SparseLayer
from .lstm import (C_BITS, C_FRAC_BITS, FOLDED_BITS, GATES, LUT_BITS, LSTMConfig, cell_table,
                   check_steps, folded_lut_init)
from .lstm_format import IntLSTMParams, derive_params, lstm_shape
from .packing import pack_fields, schedule, unpack_fields
from .processor import (ProcessorConfig, StepKind, Target, _field_bit, _needs, lane_words,
                        load_stream)

__all__ = ["LSTMPlan", "lstm_plan", "is_lstm", "lstm_provenance", "cell_config", "cell_fields", "lstm_step_fields", "lstm_output_fields",
           "cell_memories", "check_lstm", "lstm_load_words", "lstm_input_words",
           "unpack_lstm_outputs", "lstm_image_cycles"]


@dataclass(frozen=True)
class LSTMPlan:
    """An LSTM layer's time step as the processor runs it: its gate layer and integer
    parameters (what :func:`lstm_load_words` loads). An inference is one time step:
    ``x_t`` (``cols`` = the layer's inputs) in, ``(h_t, c_t)`` out.

    Raises
    ------
    ArtifactError
        ``gate`` is no LSTM gate layer, or ``params`` has other hidden units.
    """

    gate: SparseLayer
    params: IntLSTMParams

    def __post_init__(self):
        try:
            inputs, hidden = lstm_shape(self.gate)
        except ValueError as err:
            raise ArtifactError(str(err)) from None
        if self.params.hidden != hidden:
            raise ArtifactError(f"layer {self.gate.name!r} has {hidden} hidden units, its "
                                f"parameters {self.params.hidden}")

    @property
    def name(self) -> str:
        return self.gate.name

    @property
    def cols(self) -> int:
        """Inputs of one time step (``x_t``)."""
        return lstm_shape(self.gate)[0]

    @property
    def hidden(self) -> int:
        return lstm_shape(self.gate)[1]

    @property
    def outputs(self) -> int:
        """Outputs of one time step: ``h_t`` then ``c_t``, one per unit each."""
        return 2 * self.hidden

    def golden(self, x, reset) -> np.ndarray:
        """The golden model's ``[h_t | c_t]`` after each step (``(steps, 2·hidden)``,
        :func:`darbgen.sim.lstm_golden.int_lstm_sequence`)."""
        from .sim.lstm_golden import int_lstm_sequence
        h, c = int_lstm_sequence(self.gate, self.params, x, reset)
        return np.concatenate([h, c], axis=1)


#: The provenance key of an LSTM artifact: ``{"gate": layer name, "c_frac": int}``.
LSTM_KEY = "lstm"


def lstm_provenance(gate: str, c_frac: int) -> dict:
    """The provenance entry that makes an artifact an LSTM step's (:func:`lstm_plan`):
    its gate layer and the calibrated cell format ``c_frac``."""
    return {LSTM_KEY: {"gate": gate, "c_frac": int(c_frac)}}


def is_lstm(artifact: Artifact) -> bool:
    """Whether ``artifact`` holds an LSTM step (its provenance names the gate layer)."""
    return LSTM_KEY in artifact.provenance


def lstm_plan(artifact: Artifact) -> LSTMPlan:
    """The LSTM step of ``artifact``: the gate layer its provenance names, with the
    integer parameters from the layer's scales and bias and the provenance's ``c_frac``.

    Raises
    ------
    ArtifactError
        The provenance names no gate layer and ``c_frac``, or the layer is no LSTM gate
        layer.
    """
    entry = artifact.provenance.get(LSTM_KEY)
    if not isinstance(entry, dict) or not isinstance(entry.get("gate"), str) \
            or isinstance(entry.get("c_frac"), bool) or not isinstance(entry.get("c_frac"), int):
        raise ArtifactError(f"an LSTM artifact's provenance must hold {LSTM_KEY!r}: "
                            f"{{\"gate\": layer name, \"c_frac\": integer}}, not {entry!r:.80}")
    gate = artifact.layer(entry["gate"])
    try:
        params = derive_params(gate, c_frac=entry["c_frac"])
    except ValueError as err:
        raise ArtifactError(f"layer {gate.name!r}: {err}") from None
    return LSTMPlan(gate, params)


def cell_config(config: ProcessorConfig) -> LSTMConfig:
    """The chain's :class:`~darbgen.lstm.LSTMConfig` of the processor's cell: its lanes,
    widths and ``lstm_hidden`` units (its own ``positions`` are not used: the cell's
    table holds ``lstm_table`` entries)."""
    if not config.lstm_hidden:
        raise ConfigError("the processor has no LSTM cell (lstm_hidden is 0)")
    return LSTMConfig(config.engine, config.lstm_hidden)


def cell_fields(config: ProcessorConfig) -> list:
    """One entry of the cell's table (:attr:`darbgen.lstm.LSTMConfig.table_fields`)."""
    return cell_config(config).table_fields


def lstm_step_fields(config: ProcessorConfig) -> list:
    """The program step's LSTM fields (none without a cell): ``units`` (hidden units
    of this layer, at most ``lstm_hidden``), ``inputs`` (the column of ``h``'s first
    unit) and the cell format ``c_frac``."""
    if not config.lstm_hidden:
        return []
    return [("units", ("u", _bits(config.lstm_hidden))),
            ("inputs", ("u", _bits(config.act_depth))), ("c_frac", ("u", C_FRAC_BITS))]


def lstm_output_fields(config: ProcessorConfig) -> list:
    """What an LSTM step's output beat carries in its 32-bit ``y``: one unit's ``h_t``
    and ``c_t``."""
    return [("h", ("s", config.engine.input_bits)), ("c", ("s", C_BITS))]


def cell_memories(config: ProcessorConfig) -> dict:
    """The cell's memories (none without a cell): name → ``(count, depth, width)``.
    The ``lut`` is the folded ROM (:func:`darbgen.lstm.folded_lut_init`); ``gates``
    holds a unit's four gate activations in one word."""
    if not config.lstm_hidden:
        return {}
    h = config.lstm_hidden
    return {"lut": (1, len(folded_lut_init()), FOLDED_BITS), "gates": (1, h, GATES * LUT_BITS),
            "cell": (1, h, C_BITS),
            "cell_table": (1, config.lstm_table, layout_width(cell_fields(config)))}


def check_lstm(gate: SparseLayer, params: IntLSTMParams, config: ProcessorConfig):
    """Raise :class:`ConfigError` unless the LSTM step of ``gate`` and ``params`` runs
    on ``config``; the message names the layer and the capacity. Returns the gate
    layer's lane schedule."""
    where = f"layer {gate.name!r}"
    try:
        inputs, hidden = lstm_shape(gate)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not config.lstm_hidden:
        raise ConfigError(f"{where} is an LSTM step: the processor has no LSTM cell")
    if params.hidden != hidden:
        raise ConfigError(f"{where} has {hidden} hidden units, its parameters "
                          f"{params.hidden}")
    if hidden > config.lstm_hidden:
        raise ConfigError(f"{where} has {hidden:,} hidden units, the processor's LSTM cell "
                          f"holds {config.lstm_hidden:,}")
    if gate.cols > config.act_depth:
        raise ConfigError(f"{where} has {gate.cols:,} inputs (x_t and h), the processor's "
                          f"activations hold {config.act_depth:,}")
    config.engine.check_layer(gate)
    need = _needs([gate], config.lanes, lstm=True)
    if need["slots"][0] > config.lane_slots:
        raise ConfigError(f"{where} runs {need['slots'][0]:,} rows in one lane, the "
                          f"processor's lanes hold {config.lane_slots:,} per layer")
    for key, what, cap in (("beats", "beats", config.lane_depth),
                           ("headers", "row headers", config.lane_rows)):
        lane = int(np.argmax(need[key][0]))
        if need[key][0][lane] > cap:
            raise ConfigError(f"{where} needs {int(need[key][0][lane]):,} {what} in lane "
                              f"{lane}, the processor holds {cap:,}")
    if need["table"][0] > config.lstm_table:
        raise ConfigError(f"{where} needs {need['table'][0]:,} LSTM cell entries, the "
                          f"processor holds {config.lstm_table:,}")
    return schedule(gate, config.lanes)


def lstm_load_words(gate: SparseLayer, params: IntLSTMParams, config: ProcessorConfig) -> list:
    """The processor's load stream for the LSTM step of ``gate``: the lanes' headers
    (with each lane's end marker) and beats, the cell's table, the one-step program.

    Raises
    ------
    ConfigError
        The step does not fit ``config`` (:func:`check_lstm`).
    """
    sched = check_lstm(gate, params, config)
    inputs, hidden = lstm_shape(gate)
    lanes = lane_words(gate, config.engine, sched)
    lanes[0] |= _field_bit(config.engine.load_fields, "first")
    table = cell_table(params, sched, gate)
    cell = pack_fields(cell_fields(config), table, len(table["unit"]))
    step = pack_fields(config.step_fields, {
        # rows: the step's output beats, one (h, c) per unit (the device counts them).
        "kind": [int(StepKind.LSTM)], "rows": [hidden], "slots": [sched.slots], "last": [1],
        "first": [1],
        "units": [hidden], "inputs": [inputs], "c_frac": [params.c_frac]}, 1)
    return load_stream(config, [(Target.LANES, lanes), (Target.CELL, cell),
                                (Target.PROGRAM, step)])


def lstm_input_words(x, reset, config: ProcessorConfig, gate: SparseLayer, *,
                     continues: bool = False) -> list:
    """The ``x`` beats of a sequence of LSTM time steps of ``gate`` (one inference each).

    Parameters
    ----------
    x : array of int, shape (steps, inputs)
        int8 ``x_t`` (one-hot: ``X_ONE``).
    reset : array of bool, shape (steps,)
        Steps that start from ``h = c = 0`` (the first one must): they send
        ``[x_t; 0]``, ``inputs + hidden`` elements, which clear ``h`` in the lanes.
    config : ProcessorConfig
    gate : SparseLayer
    continues : bool
        The steps continue a sequence the processor is running (the host driver sends
        one step per RUN): the first need not reset.

    Raises
    ------
    ValueError
        A shape is wrong, an input is out of range or the first step does not reset.
    """
    inputs, hidden = lstm_shape(gate)
    x, reset = check_steps(x, reset, inputs, config.engine.input_bits, continues=continues)
    iw = config.engine.input_width
    words = []
    for xt, r in zip(x, reset.astype(bool)):
        n = -(-(inputs + hidden * r) // iw)
        v = np.zeros(n * iw, np.int64)
        v[:inputs] = xt
        last = np.zeros(n, np.int64)
        last[-1] = 1
        words += pack_fields(config.input_fields, {"x": v.reshape(n, iw), "last": last,
                                                   "reset": np.full(n, int(r))}, n)
    return words


def unpack_lstm_outputs(words, config: ProcessorConfig, hidden: int):
    """Output beats of LSTM time steps → ``(h, c)``, int64 arrays of shape
    ``(steps, hidden)``.

    Raises
    ------
    ValueError
        The beat count or the ``last`` flags do not match whole steps.
    """
    words = list(words)
    if len(words) % hidden:
        raise ValueError(f"{len(words)} output beats are not a whole number of steps of "
                         f"{hidden} beats")
    f = unpack_fields(config.output_fields, words)
    steps = len(words) // hidden
    if not np.array_equal(f["last"].astype(bool), np.tile(np.arange(hidden) == hidden - 1,
                                                          steps)):
        raise ValueError("output 'last' flags do not mark the end of each step")
    y = [int(v) & 0xFFFFFFFF for v in f["y"]]
    hc = unpack_fields(lstm_output_fields(config), y)
    return hc["h"].reshape(steps, hidden), hc["c"].reshape(steps, hidden)


def lstm_image_cycles(gate: SparseLayer, config: ProcessorConfig) -> int:
    """A generous bound on one time step's cycles (for simulation time limits)."""
    sched = schedule(gate, config.lanes)
    return int(sched.lane_beats.max() + sched.slots * (config.lanes + 1) + gate.rows
               + 4 * gate.cols + 64)
