"""The layer-sequenced processor: one engine reused for every layer of a network.

A chain (:class:`darbgen.network.NetworkConfig`) builds one engine per layer, each sized
to its layer. The processor (:class:`darbgen.hdl.processor.Processor`) has one set of
``lanes`` lanes whose memories hold the rows of *every* layer, a requantizer whose table
holds every layer's entries, and a *program*: one step per layer. A bitstream therefore
runs every network that fits its capacities, loaded at run time with :func:`load_words`.

Because every inference runs the steps in the same order, nothing needs a base address:

* lane ``l``'s header memory holds, per step, the headers of its rows in that layer
  (:func:`darbgen.packing.schedule`) followed by an *end marker* (a header with
  ``nnz = 0``, which no scheduled row has); its beat memory holds the rows' beats back
  to back. A step runs each lane up to its next marker; an inference rewinds them;
* the requantizer table holds each step's entries
  (:func:`darbgen.network.requant_entries`) back to back; a step's entries end where
  the program says (``table_end``);
* the requantizer writes a hidden step's results, element by element, straight into
  every lane's x memory: the next step's input. The last step's results (``mult = 1``,
  ``shift = 0``: the integer ``acc + bias``) go to a logit memory and leave as logits,
  one per beat.

Convolutions (and the Linear layer after one) are *gathered* steps, their feature maps
in a scratchpad: :mod:`darbgen.processor_conv`.

:class:`ProcessorConfig` is the contract: every width and capacity of the hardware, the
load words and the program encoding derive from it. Only numpy: no torch, no Amaranth.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from dataclasses import dataclass

import numpy as np

from .config import ConfigError, EngineConfig, _bits, layout_width
from .format import ceil_log2
from .network import OUTPUT_BITS, NetworkPlan, requant_entries, requant_fields
from .packing import pack_fields, schedule, unpack_fields
from .packing import load_words as layer_load_words
from .processor_conv import check_gather, conv_cycles, conv_layout, conv_steps
from .processor_conv import check_capacities as _check_gather_capacities
from .processor_conv import (conv_step_fields, gather_capacities, gather_fields,
                             gather_memories, gather_words, row_addresses)

__all__ = ["Target", "StepKind", "GatherTable", "ProcessorConfig", "BankRegion", "BANK_BITS",
           "bank_regions", "bank_memories", "gather_in_banks", "load_words", "image_cycles"]

#: Most program steps (a bound keeps the program memory from growing without limit).
MAX_STEPS = 256

#: Bits of one word of a lane's bank: an iCE40UP5K SB_SPRAM256KA is 16,384 x 16.
BANK_BITS = 16


class Target(enum.IntEnum):
    """Where a load word goes (its ``target`` field)."""

    LANES = 0           #: a lane's header or beat: the data is an engine load word
    TABLE = 1           #: a requantizer table entry
    PROGRAM = 2         #: a program step
    GATHER = 3          #: an im2col table entry (:class:`GatherTable` says which table)
    CELL = 4            #: an entry of the LSTM cell's table (darbgen.lstm.cell_table)


class StepKind(enum.IntEnum):
    """What a program step runs (its ``kind`` field)."""

    LINEAR = 0          #: the step's rows once, over the lanes' x
    CONV = 1            #: the step's rows once per position, over a patch gathered from the scratchpad
    LSTM = 2            #: an LSTM layer's step: the gate layer on the lanes, then the cell


class GatherTable(enum.IntEnum):
    """Which im2col table a :attr:`Target.GATHER` word writes (its ``table`` field);
    :mod:`darbgen.processor_conv` says what each holds."""

    POSITIONS = 0       #: per gathered position: patch base, write offset, skip
    COLUMNS = 1         #: per gathered column: its offset from the patch base
    POOLS = 2           #: per pool-window entry: its offset


@dataclass(frozen=True)
class ProcessorConfig:
    """Capacities of one generated processor.

    Parameters
    ----------
    engine : EngineConfig
        The lanes and their weight format. Its ``lane_depth`` and ``lane_rows`` are the
        weight beats and row headers one lane holds for *all* layers together (a row
        header per row plus one end marker per step); its ``max_cols`` is the
        activation depth: the widest layer input or output.
    lane_slots : int
        The most rows one lane runs in one step (its sum memory).
    table_depth : int
        Requantizer entries, all steps together.
    max_steps : int
        Program steps (layers).
    map_depth, gather_positions, gather_columns, gather_pools : int, optional
        The im2col gather of convolution steps (:mod:`darbgen.processor_conv`): scratchpad
        entries (feature maps), and entries of its position, column and pool-offset
        tables, all steps together. All 0 (the default): a processor without a
        gather, which runs Linear layers only.
    max_classes : int, optional
        Outputs of the last layer (the logit memory's depth); 0, the default, means the
        activation depth. A board sets it to spare block RAM (docs/processor.md).
    lstm_hidden : int
        Hidden units the LSTM cell holds (its gate activations and cell state); 0: the
        processor has no LSTM cell (:mod:`darbgen.processor_lstm`).
    lstm_table : int
        Entries of the LSTM cell's table (one per gate output position); 0 without a cell.

    Raises
    ------
    ConfigError
        A parameter is out of range; the message names it.
    """

    engine: EngineConfig
    lane_slots: int
    table_depth: int
    max_steps: int
    map_depth: int = 0
    gather_positions: int = 0
    gather_columns: int = 0
    gather_pools: int = 0
    max_classes: int = 0
    lstm_hidden: int = 0
    lstm_table: int = 0

    def __post_init__(self):
        if not isinstance(self.engine, EngineConfig):
            raise ConfigError(f"engine must be an EngineConfig, not {self.engine!r}")
        # Every capacity is an integer: the required ones positive, the optional ones
        # (default 0: the unit is absent) non-negative.
        for f in dataclasses.fields(self):
            if f.name == "engine":
                continue
            v, optional = getattr(self, f.name), f.default == 0
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 - optional:
                kind = "non-negative" if optional else "positive"
                raise ConfigError(f"{f.name} must be a {kind} integer, not {v!r}")
            object.__setattr__(self, f.name, int(v))
        _check_gather_capacities(self)
        if self.max_classes > self.act_depth:
            raise ConfigError(f"max_classes {self.max_classes} exceeds the activation depth "
                              f"{self.act_depth}")
        if (self.lstm_hidden == 0) != (self.lstm_table == 0):
            raise ConfigError(f"lstm_hidden and lstm_table must both be 0 (no LSTM cell) or "
                              f"both positive, not {self.lstm_hidden} and {self.lstm_table}")
        if self.lstm_hidden and self.engine.input_bits < 8:
            raise ConfigError(f"an LSTM cell needs 8-bit inputs to hold h, not "
                              f"{self.engine.input_bits}-bit")
        if 2 * self.lstm_hidden > self.act_depth:
            raise ConfigError(f"lstm_hidden {self.lstm_hidden} needs an activation depth of at "
                              f"least {2 * self.lstm_hidden} (x_t and h), not {self.act_depth}")
        if self.max_steps > MAX_STEPS:
            raise ConfigError(f"max_steps must be at most {MAX_STEPS}, not {self.max_steps}")
        if self.lane_slots > self.act_depth:
            raise ConfigError(f"lane_slots {self.lane_slots} exceeds the activation depth "
                              f"{self.act_depth} (a step has at most that many rows)")

    # -- capacities ---------------------------------------------------------------------

    @property
    def lanes(self) -> int:
        return self.engine.lanes

    @property
    def lane_depth(self) -> int:
        """Weight beats one lane holds (all layers)."""
        return self.engine.lane_depth

    @property
    def lane_rows(self) -> int:
        """Row headers one lane holds (all layers' rows plus one marker per step)."""
        return self.engine.lane_rows

    @property
    def act_depth(self) -> int:
        """Activations: the widest layer input or output."""
        return self.engine.max_cols

    @property
    def has_gather(self) -> bool:
        """Whether the processor runs convolution steps (it has an im2col gather)."""
        return self.map_depth > 0

    @property
    def map_bits(self) -> int:
        """Bits of a scratchpad address."""
        return max(1, ceil_log2(self.map_depth))

    @property
    def logit_depth(self) -> int:
        """Logits the last step may write: ``max_classes``, or the activation depth."""
        return self.max_classes or self.act_depth

    @property
    def capacity(self) -> int:
        """Kept weights the lanes hold when every lane is full."""
        return self.lanes * self.lane_depth

    @property
    def step_kinds(self) -> tuple:
        """Names of the kinds of step this processor runs (a unit whose capacity is 0 is
        absent, and so is its kind)."""
        return (("linear",) + (("conv",) if self.has_gather else ())
                + (("lstm",) if self.lstm_hidden else ()))

    # -- the streams, as a device core (darbgen.hdl.cores.ProcessorCore) ----------------

    @property
    def max_cols(self) -> int:
        """The widest input vector: the activation depth."""
        return self.act_depth

    @property
    def x_depth(self) -> int:
        """Input beats of the widest input vector (a network's own input may be shorter:
        the device marks its last beat)."""
        return self.engine.x_depth

    @property
    def output_beats(self) -> int:
        """Most output beats per vector: one logit per beat, the last step's rows."""
        return self.act_depth

    @property
    def memories(self) -> dict:
        """Every memory of the processor: name → ``(count, depth, width in bits)``.

        Per lane its weight ``beats``, row ``headers`` (with the end markers), its copy
        of the activations ``x`` and its row ``sums``; once, the requantizer ``table``,
        the ``program`` and the ``logits``. A lane's beat bank is one beat wide: on an
        iCE40UP5K one SB_SPRAM256KA (16k × 16) holds 16,384 beats of up to 16 bits
        (docs/processor.md).
        """
        e = self.engine
        from .processor_lstm import cell_memories
        return {"beats": (self.lanes, self.lane_depth, layout_width(e.beat_fields)),
                "headers": (self.lanes, self.lane_rows, layout_width(e.header_fields)),
                "x": (self.lanes, e.x_depth, e.input_width * e.input_bits),
                "sums": (self.lanes, self.lane_slots, e.acc_width),
                "table": (1, self.table_depth, layout_width(self.requant_fields)),
                "program": (1, self.max_steps, layout_width(self.step_fields)),
                "logits": (1, self.logit_depth, OUTPUT_BITS),
                **(gather_memories(self) if self.has_gather else {}), **cell_memories(self)}

    # -- layouts (LSB first) ------------------------------------------------------------

    @property
    def requant_fields(self) -> list:
        """One requantizer entry; ``dest`` is the row (an activation address)."""
        # With a gather, a destination may be a scratchpad address.
        return requant_fields(max(1, ceil_log2(self.act_depth),
                                  self.map_bits if self.has_gather else 0))

    @property
    def step_fields(self) -> list:
        """One program step: its ``kind`` (a :class:`StepKind`); a Linear layer of
        ``rows`` outputs whose lanes drain ``slots`` sum beats, whose requantizer entries
        end at ``table_end``, with a ReLU (``relu``: clamp at 0) or not; ``last`` marks
        the step whose outputs are the logits. ``first`` restarts the program. With a
        gather, the fields of :func:`darbgen.processor_conv.conv_step_fields` drive it;
        with an LSTM cell, a step also carries an LSTM layer's ``units``, ``inputs`` (the
        column of ``h``'s first unit) and cell format ``c_frac``
        (:mod:`darbgen.processor_lstm`)."""
        from .processor_lstm import lstm_step_fields
        return [("kind", ("u", 2)),
                ("rows", ("u", _bits(self.act_depth))), ("slots", ("u", _bits(self.lane_slots))),
                ("table_end", ("u", _bits(self.table_depth))), ("relu", ("u", 1)),
                ("last", ("u", 1)), ("first", ("u", 1)), *conv_step_fields(self),
                *lstm_step_fields(self)]

    @property
    def load_fields(self) -> list:
        """One load word: its :class:`Target` and that target's own word in ``data``."""
        from .processor_lstm import cell_fields
        data = max(layout_width(self.engine.load_fields), layout_width(self.requant_fields),
                   layout_width(self.step_fields),
                   *([layout_width(gather_fields(self))] if self.has_gather else []),
                   *([layout_width(cell_fields(self))] if self.lstm_hidden else []))
        return [("data", ("u", data)), ("target", ("u", _bits(max(Target)))),
                ("first", ("u", 1))]

    @property
    def input_fields(self) -> list:
        """One input beat: the engine's; with an LSTM cell also ``reset`` (the step
        starts from ``h = c = 0``; :func:`darbgen.processor_lstm.lstm_input_words`)."""
        return self.engine.input_fields + ([("reset", ("u", 1))] if self.lstm_hidden else [])

    @property
    def output_fields(self) -> list:
        """One output beat: one logit, rows in order, ``last`` on a vector's final row."""
        return [("y", ("s", OUTPUT_BITS)), ("last", ("u", 1))]

    # -- identity -----------------------------------------------------------------------

    def to_json(self) -> dict:
        # The optional capacities (default 0) only when set, so that a processor without
        # them keeps its JSON and digest.
        optional = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.default == 0 and getattr(self, f.name)}
        return {"engine": self.engine.to_json(), "lane_slots": self.lane_slots,
                "table_depth": self.table_depth, "max_steps": self.max_steps, **optional}

    def digest(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.blake2s(text.encode(), digest_size=8).hexdigest()

    # -- networks -----------------------------------------------------------------------

    @classmethod
    def for_plans(cls, plans, lanes: int = 4, *, input_width: int | None = None,
                  gates=()) -> "ProcessorConfig":
        """The smallest processor that runs each of ``plans`` (one at a time) and, given
        LSTM gate layers ``gates``, each of their steps (:mod:`darbgen.processor_lstm`)."""
        plans, gates = list(plans), list(gates)
        if not plans and not gates:
            raise ConfigError("need at least one network to size a processor")
        layers = [q.layer for net in plans for q in net.layers] + gates
        base = EngineConfig.for_layers(layers, lanes, input_width=input_width)
        needs = ([_needs([q.layer for q in net.layers], lanes) for net in plans]
                 + [_needs([g], lanes, lstm=True) for g in gates])
        engine = EngineConfig(
            lanes=lanes, shifts=base.shifts, max_keep=base.max_keep,
            max_row_nnz=base.max_row_nnz,
            max_cols=max(n["act"] for n in needs),
            lane_depth=max(int(n["beats"][-1].max()) for n in needs),
            lane_rows=max(int(n["headers"][-1].max()) for n in needs),
            weight_bits=base.weight_bits, input_bits=plans[0].input_bits if plans else 8,
            input_width=base.input_width)
        hidden = max([g.rows // 4 for g in gates], default=0)
        return cls(engine, lane_slots=max(max(n["slots"]) for n in needs),
                   table_depth=max([int(n["table"][-1]) for n in needs[:len(plans)]], default=1),
                   max_steps=max([len(net.layers) for net in plans] + [1]),
                   lstm_hidden=hidden,
                   lstm_table=max([int(n["table"][-1]) for n in needs[len(plans):]], default=0),
                   **gather_capacities(plans, base.input_width))

    def check_plan(self, net: NetworkPlan) -> None:
        """Raise :class:`ConfigError` unless ``net`` runs on this processor; the message
        names the layer, the lane and the capacity it exceeds."""
        e = self.engine
        if len(net.layers) > self.max_steps:
            raise ConfigError(f"the network has {len(net.layers)} layers, the processor runs "
                              f"at most {self.max_steps} steps")
        if net.input_bits != e.input_bits:
            raise ConfigError(f"the network takes {net.input_bits}-bit inputs, the processor "
                              f"{e.input_bits}-bit")
        check_gather(net, self)
        for q in net.layers:
            layer = q.layer
            where = f"layer {layer.name!r}"
            for what, n in (("inputs", layer.cols), ("outputs", layer.rows)):
                if n > self.act_depth:
                    raise ConfigError(f"{where} has {n:,} {what}, the processor's activations "
                                      f"hold {self.act_depth:,}")
            e.check_layer(layer)
        check_gather(net, self)
        final = net.layers[-1].layer
        if final.rows > self.logit_depth:
            raise ConfigError(f"layer {final.name!r} has {final.rows:,} outputs, the "
                              f"processor's logits hold {self.logit_depth:,}")
        need = _needs([q.layer for q in net.layers], self.lanes)
        for i, q in enumerate(net.layers):
            where = f"layer {q.layer.name!r}"
            if need["slots"][i] > self.lane_slots:
                raise ConfigError(f"{where} runs {need['slots'][i]:,} rows in one lane, the "
                                  f"processor's lanes hold {self.lane_slots:,} per layer")
            for key, what, cap in (("beats", "beats", self.lane_depth),
                                   ("headers", "row headers", self.lane_rows)):
                total = need[key][i]
                lane = int(np.argmax(total))
                if total[lane] > cap:
                    before = int(need[key][i - 1][lane]) if i else 0
                    tail = f" ({before:,} of them for the layers before it)" if before else ""
                    raise ConfigError(f"{where} needs {int(total[lane]):,} {what} in lane "
                                      f"{lane}{tail}, the processor holds {cap:,}")
            if need["table"][i] > self.table_depth:
                raise ConfigError(f"{where} needs {int(need['table'][i]):,} requantizer "
                                  f"entries, the processor holds {self.table_depth:,}")


@dataclass(frozen=True)
class BankRegion:
    """Where one memory lies in the lanes' banks (:func:`bank_regions`).

    Members
    -------
    first, words : int
        Its first word in each of its banks, and its depth.
    banks : tuple of int
        The lanes whose banks hold it; an entry's bits are split across them, the
        least significant share in the first.
    bits : int
        Bits of an entry in each of its banks (the last may hold fewer).
    rest : int
        Bits of an entry (the most significant) that the banks do not hold: a memory of
        their own, ``words`` deep (:func:`bank_memories`).
    """

    first: int
    words: int
    banks: tuple
    bits: int
    rest: int = 0

    @property
    def width(self) -> int:
        """Bits of an entry the banks hold."""
        return self.bits * len(self.banks)


def bank_regions(config: ProcessorConfig) -> dict:
    """The address map of the lanes' banks when the processor keeps its other memories
    behind the beats (an SB_SPRAM256KA per lane, docs/processor.md "Memory of the
    gather"): name → :class:`BankRegion`, in placing order, each region at the first
    word free in all of its banks.

    Who may use a bank when: the lanes' ``beats`` while they issue or load; the
    ``program`` as a step is fetched; the requantizer ``table`` while the requantizer
    runs (the lanes idle); the gather's tables and ``scratchpad`` while the gather or
    the input scatter runs, the scratchpad also while the requantizer writes a map, and
    the ``logits`` while the last step's requantizer writes them and as they are sent.
    The requantizer reads its table while it writes the scratchpad or the logits, so
    with a gather (and at least 3 lanes) those two have the last lane's bank to
    themselves (their entries' upper bits, beyond a bank word, in a memory of their
    own) and the table and the gather's tables share the others; the gather reads a
    column and a pool offset in the same cycle, so those lie in different banks.
    Without a gather (or with fewer lanes) the gather and the logits keep memories of
    their own. The program is placed if a step fits the lanes' words.
    """
    e = config.engine
    lanes = tuple(range(e.lanes))
    width = max(BANK_BITS, layout_width(e.beat_fields))
    gather = gather_in_banks(config)
    shared = lanes[:-1] if gather else lanes
    regions = {}

    def place(name, words, bits, banks):
        """Region ``name``: ``words`` entries of ``bits`` on the fewest of ``banks``
        that hold them, the rest in a memory of their own."""
        n = min(len(banks), -(-bits // width))
        share = min(width, -(-bits // n))
        first = max(top[b] for b in banks[:n])
        regions[name] = BankRegion(first, words, banks[:n], share, max(0, bits - share * n))
        for b in banks[:n]:
            top[b] = first + words

    # Every lane's own beats (not one entry split across the banks).
    regions["beats"] = BankRegion(0, config.lane_depth, lanes, layout_width(e.beat_fields))
    top = dict.fromkeys(lanes, config.lane_depth)
    step_bits = layout_width(config.step_fields)
    if step_bits <= width * len(lanes):
        place("program", config.max_steps, step_bits, lanes)
    # The stored entry has no `first` (it only restarts the table's write pointer).
    place("table", config.table_depth, layout_width(config.requant_fields) - 1, shared)
    if gather:
        a = config.map_bits
        place("scratchpad", config.map_depth, e.input_bits, lanes[-1:])
        place("logits", config.logit_depth, OUTPUT_BITS, lanes[-1:])
        place("positions", config.gather_positions, 2 * a + 1, shared)
        place("columns", config.gather_columns, a, shared[:1])
        place("pools", config.gather_pools, a, shared[-1:])
    return regions


def gather_in_banks(config: ProcessorConfig) -> bool:
    """Whether :func:`bank_regions` places the gather's memories in the banks: with a
    gather and at least 3 lanes (the scratchpad's bank, the columns', the pools')."""
    return config.has_gather and config.lanes >= 3


def bank_memories(config: ProcessorConfig) -> dict:
    """:attr:`ProcessorConfig.memories` as built with the banks holding
    :func:`bank_regions`: the lanes' ``banks`` (one per lane, as deep as its fullest)
    in place of the beats and of every memory a region holds, and ``NAME_rest`` for a
    region whose entries the banks hold only in part (their upper bits)."""
    regions = bank_regions(config)
    depth = max(r.first + r.words for r in regions.values())
    width = max(r.bits for r in regions.values())
    out = {"banks": (config.lanes, depth, width)}
    for name, memory in config.memories.items():
        if name not in regions:
            out[name] = memory
        elif regions[name].rest:
            out[f"{name}_rest"] = (1, regions[name].words, regions[name].rest)
    return out


def _needs(layers, lanes: int, *, lstm: bool = False) -> dict:
    """What ``layers`` (the steps of one program) fill at ``lanes`` lanes, cumulative:
    per layer the beats and row headers (markers included) per lane, the table entries;
    and per layer its rows per lane (``slots``) and the activation depth it needs (an
    LSTM gate layer's outputs go to the cell, not to the activations: ``lstm``)."""
    beats, headers, table, slots = [], [], [], []
    b, h, t = np.zeros(lanes, np.int64), np.zeros(lanes, np.int64), 0
    for layer in layers:
        sched = schedule(layer, lanes)
        b = b + sched.lane_beats
        h = h + sched.lane_counts + 1
        t += sched.slots * lanes + int((layer.row_nnz == 0).sum())
        beats.append(b)
        headers.append(h)
        table.append(t)
        slots.append(sched.slots)
    act = max(layer.cols if lstm else max(layer.cols, layer.rows) for layer in layers)
    return {"beats": beats, "headers": headers, "table": table, "slots": slots, "act": act}


def lane_words(layer, engine: EngineConfig, sched) -> list:
    """One step's engine load words for every lane: its rows' headers and beats, then
    each lane's end marker (no ``first``: the stream's first word sets it)."""
    e = engine
    words = unpack_fields(e.load_fields, layer_load_words(layer, e, sched))
    n = len(words["data"])
    markers = {"data": np.zeros(e.lanes, np.int64), "lane": np.arange(e.lanes),
               "header": np.ones(e.lanes, np.int64), "first": np.zeros(e.lanes, np.int64)}
    # One `first` for the whole stream: it rewinds every lane's write pointers.
    words["first"][:] = 0
    return pack_fields(e.load_fields, {k: np.concatenate([words[k], markers[k]])
                                       for k in words}, n + e.lanes)


def load_words(net: NetworkPlan, config: ProcessorConfig) -> list:
    """The processor's load stream for ``net``: every lane's headers (each step's
    followed by its end marker) and beats, then the requantizer table, then the
    program.

    Raises
    ------
    ConfigError
        ``net`` does not fit ``config`` (see :meth:`ProcessorConfig.check_plan`).
    """
    config.check_plan(net)
    e = config.engine
    lay = conv_layout(net, e.input_width)
    kinds = conv_steps(net, lay)
    lane_stream, entries, steps = [], [], []
    table_end = 0
    for i, q in enumerate(net.layers):
        sched = schedule(q.layer, e.lanes)
        lane_stream += lane_words(q.layer, e, sched)
        table = requant_entries(q, sched, row_addresses(net, lay, i))
        if q.final:
            # mult 1, shift 0: the requantizer passes `acc + bias` through (the logits).
            table["mult"], table["shift"] = table["valid"], np.zeros_like(table["shift"])
        count = len(table["dest"])
        table["first"] = np.zeros(count, np.int64)
        entries.append(table)
        table_end += count
        steps.append({"kind": int(StepKind.LINEAR), "rows": q.layer.rows,
                      "slots": sched.slots, "table_end": table_end,
                      "relu": int(q.lo == 0 and not q.final), "last": int(q.final),
                      "first": int(i == 0), **kinds[i]})
    lane_stream[0] |= _field_bit(e.load_fields, "first")
    table = {k: np.concatenate([t[k] for t in entries]) for k in entries[0]}
    table["first"][0] = 1
    table_words = pack_fields(config.requant_fields, table, table_end)
    step_words = pack_fields(config.step_fields, {k: [s[k] for s in steps] for k in steps[0]},
                             len(steps))
    gather = []
    if any(lay.gathered):
        g = gather_words(net, lay)
        gather = pack_fields(gather_fields(config), g, len(g["addr"]))
    return load_stream(config, [(Target.LANES, lane_stream), (Target.TABLE, table_words),
                                (Target.GATHER, gather), (Target.PROGRAM, step_words)])


def load_stream(config: ProcessorConfig, parts) -> list:
    """Load words from ``(target, that target's words)`` pairs, in order; the first
    word carries ``first``."""
    data = [w for _, words in parts for w in words]
    targets = [int(t) for t, words in parts for _ in words]
    first = [1] + [0] * (len(data) - 1)
    return pack_fields(config.load_fields, {"data": data, "target": targets, "first": first},
                       len(data))


def _field_bit(fields, name: str) -> int:
    """The mask of 1-bit field ``name`` in a packed word of ``fields``."""
    return pack_fields(fields, {name: [1]}, 1)[0]


def image_cycles(net: NetworkPlan, config: ProcessorConfig) -> int:
    """A generous bound on one image's cycles (for simulation time limits): every
    step's work, as if nothing overlapped."""
    work = 0
    lay = conv_layout(net, config.engine.input_width)
    work += 4 * lay.inputs
    for j, q in enumerate(net.layers):
        sched = schedule(q.layer, config.lanes)
        if lay.gathered[j]:
            work += conv_cycles(q, config.lanes, int(sched.lane_beats.max()), sched.slots)
            continue
        work += (int(sched.lane_beats.max()) + sched.slots * (config.lanes + 1)
                 + 3 * q.layer.rows + q.layer.cols + 32)
    return int(work)
