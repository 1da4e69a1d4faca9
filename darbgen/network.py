"""Whole networks in integers: the requantization contract and the chain of engines.

An artifact whose layers form a chain (each layer's rows are the next one's columns)
and carry an ``input_scale`` runs end to end in integers:

* layer ``L`` computes ``acc = Wq @ x`` exactly (the engine), then adds its integer bias
  ``bias_q = round(bias / (scale_w * s_in))``;
* a hidden layer requantizes to the next layer's int8 input with a per-row integer
  multiplier and shift, rounding half up::

      q = clamp((v * mult + 2**(shift - 1)) >> shift, lo, hi),   v = acc + bias_q

  where ``mult / 2**shift`` approximates ``scale_w * s_in / s_next`` (``mult`` has
  :data:`MULT_BITS` bits, its top bit set) and ``lo = 0`` after a ReLU, else ``-128``;
* the last layer's output is ``v`` itself: integer logits, whose argmax is the class.

:func:`plan` derives those integers from the artifact once; the golden model
(:func:`darbgen.sim.golden.network_ref`), the packing of the requantizers'
tables (:func:`load_words`) and the hardware (:class:`darbgen.hdl.network.Network`)
all read them from the :class:`NetworkPlan`. :class:`NetworkConfig` is the chain's
hardware: one :class:`~darbgen.config.EngineConfig` per layer and the field lists of
the requantizer tables and the streams.

Only numpy: no torch, no Amaranth.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .config import ConfigError, EngineConfig, layout_width
from .format import Artifact, ArtifactError, SparseLayer, ceil_log2
from .packing import Schedule, pack_fields, schedule
from .packing import load_words as layer_load_words

__all__ = ["MULT_BITS", "SHIFT_BITS", "BIAS_BITS", "OUTPUT_BITS", "LayerQuant", "NetworkPlan",
           "NetworkConfig", "plan", "load_words", "requant"]

#: Requantization multiplier width (unsigned; its top bit is set for precision).
MULT_BITS = 15
#: Width of a per-row right shift (1 .. 2**SHIFT_BITS - 1).
SHIFT_BITS = 6
#: Integer bias width (signed).
BIAS_BITS = 32
#: Width of the final layer's integer logits (signed).
OUTPUT_BITS = 32


def requant(v, mult, shift, lo: int, hi: int) -> np.ndarray:
    """``clamp((v * mult + 2**(shift-1)) >> shift, lo, hi)`` in int64, elementwise.

    The one definition of the rounding, shared by the golden model and the tests of
    the hardware: arithmetic shift (floor), so ``.5`` rounds up, towards +inf.
    """
    v, mult, shift = (np.asarray(a, dtype=np.int64) for a in (v, mult, shift))
    return np.clip((v * mult + (np.int64(1) << (shift - 1))) >> shift, lo, hi)


@dataclass(frozen=True, eq=False)
class LayerQuant:
    """The integers of one layer of a network (see the module docstring).

    Parameters
    ----------
    layer : SparseLayer
    bias : array of int64, shape (rows,)
    mult, shift : array of int64, shape (rows,)
        Requantization to the next layer's input (unused for the last layer).
    lo, hi : int
        Clamp range of the requantized output (``lo = 0`` after a ReLU).
    final : bool
        The network's last layer: its output is ``acc + bias`` (logits).
    """

    layer: SparseLayer
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray
    lo: int
    hi: int
    final: bool


@dataclass(frozen=True, eq=False)
class NetworkPlan:
    """A chain of layers with their integer requantization, from :func:`plan`."""

    layers: tuple
    input_bits: int = 8

    @property
    def input_scale(self) -> float:
        """Quantization step of the network's input: ``x_int = round(x / input_scale)``."""
        return self.layers[0].layer.input_scale

    @property
    def classes(self) -> int:
        return self.layers[-1].layer.rows

    @property
    def cols(self) -> int:
        return self.layers[0].layer.cols

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs → the network's signed ``input_bits`` integers (round, clamp)."""
        lim = (1 << (self.input_bits - 1)) - 1
        return np.clip(np.round(np.asarray(x, dtype=np.float64) / self.input_scale),
                       -lim - 1, lim).astype(np.int64)


def _fixed_point(ratio: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``mult / 2**shift ≈ ratio`` with ``mult`` in ``[2**(MULT_BITS-1), 2**MULT_BITS)``."""
    exp = np.floor(np.log2(ratio)).astype(np.int64)
    shift = (MULT_BITS - 1) - exp
    mult = np.round(ratio * np.exp2(shift.astype(np.float64))).astype(np.int64)
    over = mult >= 1 << MULT_BITS              # rounding carried into a new top bit
    mult[over] >>= 1
    shift[over] -= 1
    bad = (shift < 1) | (shift >= 1 << SHIFT_BITS)
    if bad.any():
        row = int(np.argmax(bad))
        raise ArtifactError(f"{where}: row {row} rescales by {ratio[row]:.3g}, outside what a "
                            f"{MULT_BITS}-bit multiplier and a {SHIFT_BITS}-bit shift express")
    return mult, shift


def plan(artifact: Artifact, input_bits: int = 8) -> NetworkPlan:
    """The integer network of ``artifact``: its layers in order, each with the integers
    that turn its accumulators into the next layer's inputs.

    Raises
    ------
    ArtifactError
        The layers do not chain (rows ≠ next columns), a layer lacks ``input_scale`` or
        ``bias`` cannot be expressed; the message names the layer.
    """
    layers = artifact.layers
    lim = (1 << (input_bits - 1)) - 1
    for layer in layers:
        if layer.input_scale is None:
            raise ArtifactError(f"layer {layer.name!r} has no input_scale: prune with "
                                "calibration (darbgen prune does it for the built-in examples)")
        if layer.input_columns is not None:
            raise ArtifactError(f"layer {layer.name!r} has compacted input columns; "
                                "whole-network runs take uncompacted layers")
    out = []
    for i, layer in enumerate(layers):
        where = f"layer {layer.name!r}"
        final = i == len(layers) - 1
        if not final and layers[i + 1].cols != layer.rows:
            raise ArtifactError(f"{where} has {layer.rows} outputs but the next layer "
                                f"{layers[i + 1].name!r} takes {layers[i + 1].cols} inputs")
        step = np.broadcast_to(layer.scale, (layer.rows,)) * layer.input_scale
        bias_f = np.zeros(layer.rows) if layer.bias is None else layer.bias.astype(np.float64)
        bias = np.round(bias_f / step).astype(np.int64)
        acc_max = (1 << (layer.accumulator_width(input_bits) - 1))
        if np.abs(bias).max(initial=0) + acc_max >= 1 << (BIAS_BITS - 1):
            raise ArtifactError(f"{where}: bias plus accumulator exceeds {BIAS_BITS} bits")
        if final:
            mult = shift = np.zeros(layer.rows, dtype=np.int64)
            lo, hi = -(1 << (OUTPUT_BITS - 1)), (1 << (OUTPUT_BITS - 1)) - 1
        else:
            mult, shift = _fixed_point(step / layers[i + 1].input_scale, where)
            lo, hi = (0 if layer.activation == "relu" else -lim - 1), lim
        for a in (bias, mult, shift):
            a.flags.writeable = False
        out.append(LayerQuant(layer, bias, mult, shift, lo, hi, final))
    return NetworkPlan(tuple(out), input_bits)


# -- the hardware chain ----------------------------------------------------------------

@dataclass(frozen=True)
class NetworkConfig:
    """A chain of engines, one per layer, with a requantizer after each.

    Parameters
    ----------
    engines : tuple of EngineConfig
        Engine ``L`` runs layer ``L``; its ``max_cols`` is that layer's input width.
    rows : tuple of int
        Output rows of each layer.
    relu : tuple of bool
        Whether a ReLU clamps each hidden layer's requantized output at 0.
    """

    engines: tuple
    rows: tuple
    relu: tuple

    def __post_init__(self):
        object.__setattr__(self, "engines", tuple(self.engines))
        object.__setattr__(self, "rows", tuple(int(r) for r in self.rows))
        object.__setattr__(self, "relu", tuple(bool(r) for r in self.relu))
        n = len(self.engines)
        if n < 1 or len(self.rows) != n or len(self.relu) != n:
            raise ConfigError(f"a network needs one engine, row count and relu flag per layer, "
                              f"not {n}, {len(self.rows)} and {len(self.relu)}")
        for i, (e, nxt) in enumerate(zip(self.engines, self.engines[1:])):
            if nxt.max_cols < self.rows[i]:
                raise ConfigError(f"engine {i + 1} takes {nxt.max_cols} inputs, layer {i} "
                                  f"produces {self.rows[i]}")
            if nxt.input_bits != e.input_bits:
                raise ConfigError("every engine of a network takes the same input width")

    @property
    def layers(self) -> int:
        return len(self.engines)

    @property
    def lanes(self) -> int:
        """Multipliers of the widest engine."""
        return max(e.lanes for e in self.engines)

    @property
    def max_cols(self) -> int:
        """Width of the network's input vector (engine 0's)."""
        return self.engines[0].max_cols

    @property
    def x_depth(self) -> int:
        return self.engines[0].x_depth

    @property
    def output_beats(self) -> int:
        """Output beats per vector: one logit per row of the last layer."""
        return self.rows[-1]

    def positions(self, i: int) -> int:
        """Table entries of requantizer ``i``: every output position, plus every row."""
        e = self.engines[i]
        return e.lanes * e.lane_rows + self.rows[i]

    def requant_fields(self, i: int) -> list:
        """One entry of requantizer ``i``'s table (``first`` restarts the table)."""
        dest = max(1, ceil_log2(self.rows[i]))
        return [("dest", ("u", dest)), ("bias", ("s", BIAS_BITS)), ("mult", ("u", MULT_BITS)),
                ("shift", ("u", SHIFT_BITS)), ("valid", ("u", 1)), ("first", ("u", 1))]

    @property
    def targets(self) -> int:
        """Load targets: engines ``0..n-1``, then requantizers ``n..2n-1``."""
        return 2 * self.layers

    @property
    def load_fields(self) -> list:
        """One load word: a target's own word in ``data``. ``first`` marks a load's first
        word, like an engine's; the chain needs no more, because each target's own
        first word (set by :func:`load_words`) restarts it."""
        widths = [layout_width(e.load_fields) for e in self.engines]
        widths += [layout_width(self.requant_fields(i)) for i in range(self.layers)]
        return [("data", ("u", max(widths))), ("target", ("u", max(1, ceil_log2(self.targets)))),
                ("first", ("u", 1))]

    @property
    def input_fields(self) -> list:
        return self.engines[0].input_fields

    @property
    def output_fields(self) -> list:
        """One output beat: one logit, rows in order, ``last`` on a vector's final row."""
        return [("y", ("s", OUTPUT_BITS)), ("last", ("u", 1))]

    @classmethod
    def for_plan(cls, net: NetworkPlan, lanes: int = 4, *,
                 input_width: int | None = None) -> "NetworkConfig":
        """The smallest chain that runs ``net`` at ``lanes`` lanes per engine."""
        engines = tuple(EngineConfig.for_layers([q.layer], lanes, input_width=input_width)
                        for q in net.layers)
        return cls(engines, tuple(q.layer.rows for q in net.layers),
                   tuple(q.lo == 0 for q in net.layers))

    def check_plan(self, net: NetworkPlan) -> None:
        """Raise :class:`ConfigError` unless ``net`` runs on this chain."""
        if len(net.layers) != self.layers:
            raise ConfigError(f"the network has {len(net.layers)} layers, the chain "
                              f"{self.layers} engines")
        for i, (q, e) in enumerate(zip(net.layers, self.engines)):
            e.check_layer(q.layer, schedule(q.layer, e.lanes))
            if q.layer.rows != self.rows[i] or (q.lo == 0) != self.relu[i]:
                raise ConfigError(f"layer {q.layer.name!r} has {q.layer.rows} rows "
                                  f"{'with' if q.lo == 0 else 'without'} ReLU, the chain's "
                                  f"stage {i} {self.rows[i]} {'with' if self.relu[i] else 'without'}")

    def to_json(self) -> dict:
        return {"engines": [e.to_json() for e in self.engines], "rows": list(self.rows),
                "relu": list(self.relu)}

    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.blake2s(text.encode(), digest_size=8).hexdigest()


def _table(q: LayerQuant, sched: Schedule) -> dict:
    """Requantizer entries: one per output position (slot-major, lane-minor), then one
    per row without weights (those rows never leave an engine: their sum is 0)."""
    omap = sched.output_map().reshape(-1)
    empty = np.flatnonzero(q.layer.row_nnz == 0)
    dest = np.concatenate([np.maximum(omap, 0), empty])
    valid = np.concatenate([omap >= 0, np.ones(len(empty), bool)]).astype(np.int64)
    n = len(dest)
    first = np.zeros(n, np.int64)
    first[0] = 1
    return {"dest": dest, "bias": q.bias[dest] * valid, "mult": q.mult[dest] * valid,
            "shift": q.shift[dest] * valid, "valid": valid, "first": first}


def load_words(net: NetworkPlan, config: NetworkConfig) -> list:
    """The whole chain's load stream: per layer its engine's words, then its
    requantizer's table."""
    config.check_plan(net)
    n, words, targets = config.layers, [], []
    for i, (q, e) in enumerate(zip(net.layers, config.engines)):
        sched = schedule(q.layer, e.lanes)
        engine_words = layer_load_words(q.layer, e, sched)
        table = _table(q, sched)
        entries = pack_fields(config.requant_fields(i), table, len(table["dest"]))
        words += engine_words + entries
        targets += [i] * len(engine_words) + [n + i] * len(entries)
    first = [1] + [0] * (len(words) - 1)
    return pack_fields(config.load_fields, {"data": words, "target": targets, "first": first},
                       len(words))
