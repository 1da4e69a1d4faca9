"""Whole networks in integers: the requantization contract and the chain of engines.

An artifact whose layers form a chain (each layer's rows are the next one's columns)
and carry an ``input_scale`` runs end to end in integers:

* layer ``L`` computes ``acc = Wq @ x`` exactly (the engine), then adds its integer bias
  ``bias_q = round(bias / (scale_w * s_in))``, halves away from zero
  (:func:`darbgen.quant.round_half_away`, the rule of every network's integers);
* a hidden layer requantizes to the next layer's int8 input with a per-row integer
  multiplier and shift (:func:`darbgen.quant.requant`), rounding half up::

      q = clamp((v * mult + 2**(shift - 1)) >> shift, lo, hi),   v = acc + bias_q

  where ``mult / 2**shift`` approximates ``scale_w * s_in / s_next``
  (:func:`darbgen.quant.fixed_point`: ``mult`` has ``MULT_BITS`` bits, its top bit set) and ``lo = 0`` after a ReLU, else ``-128``;
* the last layer's output is ``v`` itself: integer logits; the class is the argmax of
  ``v · s_w · s_in`` (:meth:`NetworkPlan.predict`: rows have their own weight scales).

A convolution (a layer with :class:`~darbgen.conv.ConvSpec`) is the same matrix applied
at every output position to that position's im2col patch (:mod:`darbgen.conv`); its rows
are the output channels, so the bias and the requantization are per channel. After the
activation its max-pool (if any) takes the maximum of the requantized integers, and the
next layer reads the map flattened channel-major, like torch's ``Flatten``.

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
from .conv import MapBuffer
from .format import Artifact, ArtifactError, SparseLayer, ceil_log2
from .packing import Schedule, pack_fields, schedule
from .packing import load_words as layer_load_words
from .quant import MULT_BITS, fixed_point, float_bias, round_half_away

__all__ = ["SHIFT_BITS", "BIAS_BITS", "OUTPUT_BITS", "LayerQuant", "NetworkPlan",
           "GatherConfig", "NetworkConfig", "plan", "load_words", "requant_fields",
           "requant_entries", "input_width",
           "output_width", "image_cycles"]

#: Width of a per-row right shift (1 .. 2**SHIFT_BITS - 1).
SHIFT_BITS = 6
#: Integer bias width (signed).
BIAS_BITS = 32
#: Width of the final layer's integer logits (signed).
OUTPUT_BITS = 32


def input_width(layer: SparseLayer) -> int:
    """Elements a layer takes from the previous one: its columns, or a convolution's
    whole flattened input map."""
    g = layer.conv_geometry
    return layer.cols if g is None else g.input_width


def output_width(layer: SparseLayer) -> int:
    """Elements a layer hands to the next one: its rows, or a convolution's flattened,
    pooled output map."""
    g = layer.conv_geometry
    return layer.rows if g is None else g.output_width


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
        """Width of the network's input vector (a convolution's flattened input map)."""
        return input_width(self.layers[0].layer)

    def predict(self, logits) -> np.ndarray:
        """The classes of integer logits ``(n, classes)``: the argmax of the dequantized
        logits ``v · s_w · s_in``. Each row has its own weight scale ``s_w``, so the
        argmax of the integers themselves is not the class."""
        last = self.layers[-1].layer
        step = np.broadcast_to(last.scale, (last.rows,)) * last.input_scale
        return np.argmax(np.asarray(logits, dtype=np.float64) * step, axis=-1)

    def quantize_input(self, x) -> np.ndarray:
        """Float inputs → the network's signed ``input_bits`` integers (round, clamp)."""
        lim = (1 << (self.input_bits - 1)) - 1
        return np.clip(np.round(np.asarray(x, dtype=np.float64) / self.input_scale),
                       -lim - 1, lim).astype(np.int64)


def _shape_text(shape) -> str:
    return "×".join(map(str, shape))


def _check_link(layer: SparseLayer, nxt: SparseLayer) -> None:
    """Raise :class:`ArtifactError` unless ``layer``'s output is what ``nxt`` takes."""
    where = f"layer {layer.name!r}"
    out, g, h = output_width(layer), layer.conv_geometry, nxt.conv_geometry
    if g is not None and h is not None and g.output_shape != h.input_shape:
        raise ArtifactError(f"{where} produces {_shape_text(g.output_shape)} maps but the next "
                            f"layer {nxt.name!r} takes {_shape_text(h.input_shape)}")
    if out != input_width(nxt):
        what = f"{_shape_text(g.output_shape)} = {out} outputs" if g else f"{out} outputs"
        raise ArtifactError(f"{where} has {what} but the next layer {nxt.name!r} takes "
                            f"{input_width(nxt)} inputs")


def _fixed_point(ratio: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~darbgen.quant.fixed_point` of ``ratio``, refused (naming the row) where
    the multiplier and the shift field cannot express it."""
    def refuse(bad):
        if bad.any():
            row = int(np.argmax(bad))
            raise ArtifactError(f"{where}: row {row} rescales by {ratio[row]:.3g}, outside "
                                f"what a {MULT_BITS}-bit multiplier and a {SHIFT_BITS}-bit "
                                "shift express")

    # Before fixed_point, so no infinity reaches its frexp and no cast wraps.
    refuse(~(np.isfinite(ratio) & (ratio > 2.0 ** -(1 << SHIFT_BITS))
             & (ratio < 2.0 ** MULT_BITS)))
    mult, shift = fixed_point(ratio)
    refuse((shift < 1) | (shift >= 1 << SHIFT_BITS))
    return mult, shift


def plan(artifact: Artifact, input_bits: int = 8) -> NetworkPlan:
    """The integer network of ``artifact``: its layers in order, each with the integers
    that turn its accumulators into the next layer's inputs.

    Raises
    ------
    ArtifactError
        The layers do not chain (outputs ≠ next inputs), a layer lacks ``input_scale``,
        a convolution lacks its geometry or ends the network, or ``bias`` cannot be
        expressed; the message names the layer.
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
        if len(layer.shape) != 2 and layer.conv is None:
            raise ArtifactError(f"layer {layer.name!r} has shape {layer.shape} but no 'conv' "
                                "geometry (input size, padding, stride, pool): whole-network "
                                "runs take Linear layers and convolutions with their geometry "
                                "(darbgen prune records it for the built-in examples)")
    if layers[-1].conv is not None:
        raise ArtifactError(f"the last layer {layers[-1].name!r} is a convolution: a network "
                            "ends in a Linear layer, whose rows are the logits")
    out = []
    for i, layer in enumerate(layers):
        where = f"layer {layer.name!r}"
        final = i == len(layers) - 1
        if not final:
            _check_link(layer, layers[i + 1])
        step = np.broadcast_to(layer.scale, (layer.rows,)) * layer.input_scale
        with np.errstate(all="ignore"):         # an infinite quotient is refused below
            bias_q = round_half_away(float_bias(layer) / step)
        acc_max = (1 << (layer.accumulator_width(input_bits) - 1))
        # Checked as floats, before the cast: a cast of 1e30 to int64 wraps silently.
        if not (np.abs(bias_q) < (1 << (BIAS_BITS - 1)) - acc_max).all():
            raise ArtifactError(f"{where}: bias plus accumulator exceeds {BIAS_BITS} bits")
        bias = bias_q.astype(np.int64)
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

def requant_fields(dest_bits: int) -> list:
    """One requantizer table entry whose ``dest`` (a row or a buffer address) has
    ``dest_bits`` bits; ``first`` restarts the table."""
    return [("dest", ("u", dest_bits)), ("bias", ("s", BIAS_BITS)), ("mult", ("u", MULT_BITS)),
            ("shift", ("u", SHIFT_BITS)), ("valid", ("u", 1)), ("first", ("u", 1))]


@dataclass(frozen=True)
class GatherConfig:
    """The im2col stage in front of an engine: an activation buffer
    (:class:`~darbgen.conv.MapBuffer`) and the address tables that write it and gather
    the engine's input vectors from it.

    Parameters
    ----------
    sources : int
        Write-address entries: one per element of the network's input (the stage in
        front of engine 0), else one per output position of the previous layer.
    positions : int
        Input vectors per image into the engine (a convolution's output positions).
    pool_reads : int
        Buffer entries whose maximum makes one element (the previous layer's pool²).
    depth : int
        Activation buffer entries.

    Raises
    ------
    ConfigError
        A field is not a positive integer.
    """

    sources: int
    positions: int
    pool_reads: int
    depth: int

    def __post_init__(self):
        for name in ("sources", "positions", "pool_reads", "depth"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"gather {name} must be a positive integer, not {v!r}")
            object.__setattr__(self, name, int(v))

    @property
    def addr_bits(self) -> int:
        return max(1, ceil_log2(self.depth))

    @property
    def fields(self) -> list:
        """One table entry: a buffer address (or a part of one) and, for a write
        offset, ``skip`` (a position no pool window uses)."""
        return [("addr", ("u", self.addr_bits)), ("skip", ("u", 1)), ("first", ("u", 1))]

    def to_json(self) -> dict:
        return {"sources": self.sources, "positions": self.positions,
                "pool_reads": self.pool_reads, "depth": self.depth}


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
    gathers : tuple of (GatherConfig or None), optional
        Per engine, the im2col stage that builds its input vectors (convolutions and the
        layer after one); ``None`` where the previous requantizer (or the ``x`` stream)
        feeds the engine directly. Default: none (a chain of Linear layers).
    """

    engines: tuple
    rows: tuple
    relu: tuple
    gathers: tuple | None = None

    def __post_init__(self):
        object.__setattr__(self, "engines", tuple(self.engines))
        object.__setattr__(self, "rows", tuple(int(r) for r in self.rows))
        object.__setattr__(self, "relu", tuple(bool(r) for r in self.relu))
        n = len(self.engines)
        if n < 1 or len(self.rows) != n or len(self.relu) != n:
            raise ConfigError(f"a network needs one engine, row count and relu flag per layer, "
                              f"not {n}, {len(self.rows)} and {len(self.relu)}")
        gathers = (None,) * n if self.gathers is None else tuple(self.gathers)
        if len(gathers) != n or not all(g is None or isinstance(g, GatherConfig)
                                        for g in gathers):
            raise ConfigError(f"gathers must be {n} GatherConfig or None entries, one per "
                              f"engine, not {self.gathers!r}")
        object.__setattr__(self, "gathers", gathers)
        for i, (e, nxt) in enumerate(zip(self.engines, self.engines[1:])):
            if gathers[i + 1] is None and nxt.max_cols < self.rows[i]:
                raise ConfigError(f"engine {i + 1} takes {nxt.max_cols} inputs, layer {i} "
                                  f"produces {self.rows[i]}")
            if nxt.input_bits != e.input_bits:
                raise ConfigError("every engine of a network takes the same input width")
        if gathers[-1] is not None and gathers[-1].positions != 1:
            raise ConfigError("the last engine runs one vector per image (its rows are the "
                              f"logits), not {gathers[-1].positions}")

    @property
    def has_gathers(self) -> bool:
        """Whether the chain has im2col stages (a convolutional network)."""
        return any(g is not None for g in self.gathers)

    @property
    def layers(self) -> int:
        return len(self.engines)

    @property
    def lanes(self) -> int:
        """Multipliers of the widest engine."""
        return max(e.lanes for e in self.engines)

    @property
    def max_cols(self) -> int:
        """Width of the network's input vector (engine 0's, or its gather's input map)."""
        g = self.gathers[0]
        return self.engines[0].max_cols if g is None else g.sources

    @property
    def x_depth(self) -> int:
        """Input beats per image."""
        return -(-self.max_cols // self.engines[0].input_width)

    @property
    def output_beats(self) -> int:
        """Output beats per vector: one logit per row of the last layer."""
        return self.rows[-1]

    def positions(self, i: int) -> int:
        """Table entries of requantizer ``i``: every output position, plus every row."""
        e = self.engines[i]
        return e.lanes * e.lane_rows + self.rows[i]

    def map_stage(self, i: int) -> bool:
        """Whether requantizer ``i`` writes an activation buffer for a gather (its
        ``dest`` is then a buffer address, not a row)."""
        return i + 1 < self.layers and self.gathers[i + 1] is not None

    def requant_fields(self, i: int) -> list:
        """One entry of requantizer ``i``'s table (``first`` restarts the table)."""
        dest = self.gathers[i + 1].addr_bits if self.map_stage(i) else max(1, ceil_log2(self.rows[i]))
        return requant_fields(dest)

    def gather_sections(self, j: int) -> tuple:
        """Entries of gather ``j``'s table, in load order: write offsets (``sources``),
        patch bases (``positions``), column offsets (engine ``j``'s ``max_cols``), pool
        offsets (``pool_reads``)."""
        g = self.gathers[j]
        return (g.sources, g.positions, self.engines[j].max_cols, g.pool_reads)

    @property
    def targets(self) -> int:
        """Load targets: engines ``0..n-1``, then requantizers ``n..2n-1``, then (with
        gathers) gather ``j`` at ``2n + j``."""
        return (3 if self.has_gathers else 2) * self.layers

    @property
    def load_fields(self) -> list:
        """One load word: a target's own word in ``data``. ``first`` marks a load's first
        word, like an engine's; the chain needs no more, because each target's own
        first word (set by :func:`load_words`) restarts it."""
        widths = [layout_width(e.load_fields) for e in self.engines]
        widths += [layout_width(self.requant_fields(i)) for i in range(self.layers)]
        widths += [layout_width(g.fields) for g in self.gathers if g is not None]
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
                   tuple(q.lo == 0 for q in net.layers), _gathers(net))

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
        for j, (need, have) in enumerate(zip(_gathers(net), self.gathers)):
            name = net.layers[j].layer.name
            if (need is None) != (have is None):
                raise ConfigError(f"layer {name!r} {'needs' if need else 'takes no'} an im2col "
                                  f"gather, the chain's stage {j} {'has' if have else 'has none'}")
            if need is not None and (need.sources, need.positions, need.pool_reads) != \
                    (have.sources, have.positions, have.pool_reads):
                raise ConfigError(f"layer {name!r} needs a gather of {need.sources} sources, "
                                  f"{need.positions} positions and {need.pool_reads} pool reads, "
                                  f"the chain's stage {j} has {have.sources}, {have.positions} "
                                  f"and {have.pool_reads}")
            if need is not None and need.depth > have.depth:
                raise ConfigError(f"layer {name!r} needs {need.depth} buffer entries, the "
                                  f"chain's stage {j} holds {have.depth}")

    def to_json(self) -> dict:
        d = {"engines": [e.to_json() for e in self.engines], "rows": list(self.rows),
             "relu": list(self.relu)}
        if self.has_gathers:            # a Linear chain's JSON (and digest) stays as it was
            d["gathers"] = [None if g is None else g.to_json() for g in self.gathers]
        return d

    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.blake2s(text.encode(), digest_size=8).hexdigest()


def _gathers(net: NetworkPlan) -> tuple:
    """Per layer, the gather its engine needs (see :class:`GatherConfig`), or ``None``."""
    geoms = [q.layer.conv_geometry for q in net.layers]
    out = []
    for j, g in enumerate(geoms):
        prev = geoms[j - 1] if j else None
        if g is None and prev is None:
            out.append(None)
            continue
        buf = _buffer(net, j)
        sources = net.cols if j == 0 else (1 if prev is None else prev.positions)
        out.append(GatherConfig(sources, 1 if g is None else g.positions,
                                1 if prev is None else prev.spec.pool ** 2, buf.depth))
    return tuple(out)


def _buffer(net: NetworkPlan, j: int) -> MapBuffer:
    """The activation buffer in front of layer ``j``."""
    prev = net.layers[j - 1].layer.conv_geometry if j else None
    layer = net.layers[j].layer
    return MapBuffer.between(prev, layer.conv_geometry, input_width(layer))


def _gather_table(net: NetworkPlan, config: NetworkConfig, j: int) -> list:
    """Gather ``j``'s table entries (packed), sections in :meth:`NetworkConfig.gather_sections`
    order; column offsets past the layer's columns are 0 (the engine never reads them)."""
    buf, layer = _buffer(net, j), net.layers[j].layer
    prev = net.layers[j - 1].layer.conv_geometry if j else None
    skip = np.zeros(0, np.int64)
    if j == 0:
        sources = buf.element_addresses()
    elif prev is None:
        sources = np.zeros(1, np.int64)        # a Linear producer: its rows carry addresses
    else:
        sources, skip = buf.position_offsets(prev.output_size)
    columns = np.zeros(config.engines[j].max_cols, np.int64)
    columns[:layer.cols] = buf.column_offsets(layer.conv_geometry)
    sections = [sources, buf.patch_bases(layer.conv_geometry), columns, buf.pool_offsets()]
    assert tuple(map(len, sections)) == config.gather_sections(j)
    addr = np.concatenate(sections)
    flags = np.zeros(len(addr), np.int64)
    flags[:len(skip)] = skip
    first = np.zeros(len(addr), np.int64)
    first[0] = 1
    return pack_fields(config.gathers[j].fields, {"addr": addr, "skip": flags, "first": first},
                       len(addr))


def _row_addresses(net: NetworkPlan, i: int) -> np.ndarray:
    """Where requantizer ``i`` writes each row in the buffer of gather ``i + 1``: a
    convolution's channel planes (plus the position's offset, on chip), or a Linear
    layer's flattened elements."""
    buf = _buffer(net, i + 1)
    if net.layers[i].layer.conv_geometry is not None:
        return buf.channel_bases()
    return buf.element_addresses()


def requant_entries(q: LayerQuant, sched: Schedule, addresses: np.ndarray | None = None) -> dict:
    """Requantizer entries: one per output position (slot-major, lane-minor), then one
    per row without weights (those rows never leave an engine: their sum is 0).
    ``dest`` is the row, or its buffer address from ``addresses``."""
    omap = sched.output_map().reshape(-1)
    empty = np.flatnonzero(q.layer.row_nnz == 0)
    dest = np.concatenate([np.maximum(omap, 0), empty])
    valid = np.concatenate([omap >= 0, np.ones(len(empty), bool)]).astype(np.int64)
    n = len(dest)
    first = np.zeros(n, np.int64)
    first[0] = 1
    where = dest if addresses is None else addresses[dest] * valid
    return {"dest": where, "bias": q.bias[dest] * valid, "mult": q.mult[dest] * valid,
            "shift": q.shift[dest] * valid, "valid": valid, "first": first}


def load_words(net: NetworkPlan, config: NetworkConfig) -> list:
    """The whole chain's load stream: per layer its gather's table (if any), its
    engine's words, then its requantizer's table."""
    config.check_plan(net)
    n, words, targets = config.layers, [], []
    for i, (q, e) in enumerate(zip(net.layers, config.engines)):
        if config.gathers[i] is not None:
            entries = _gather_table(net, config, i)
            words += entries
            targets += [2 * n + i] * len(entries)
        sched = schedule(q.layer, e.lanes)
        engine_words = layer_load_words(q.layer, e, sched)
        table = requant_entries(q, sched, _row_addresses(net, i) if config.map_stage(i) else None)
        entries = pack_fields(config.requant_fields(i), table, len(table["dest"]))
        words += engine_words + entries
        targets += [i] * len(engine_words) + [n + i] * len(entries)
    first = [1] + [0] * (len(words) - 1)
    return pack_fields(config.load_fields, {"data": words, "target": targets, "first": first},
                       len(words))


def image_cycles(net: NetworkPlan, config: NetworkConfig) -> int:
    """A generous bound on one image's cycles through the chain (for simulation time
    limits): every stage's work, as if nothing overlapped."""
    work = 0
    for q, e, g in zip(net.layers, config.engines, config.gathers):
        positions = 1 if g is None else g.positions
        per_vector = schedule(q.layer, e.lanes).lane_beats.max() + q.layer.rows + e.max_cols
        work += positions * per_vector
        if g is not None:
            work += g.sources + positions * e.x_depth * g.pool_reads
    return int(work)
