"""Device cores, each described once: what the protocol, the device and the host need.

A board's device is UART + protocol controller + a *core*: one engine for a layer
(:class:`~darbgen.config.EngineConfig`), a chain of engines for a whole network
(:class:`~darbgen.network.NetworkConfig`), the layer-sequenced processor that runs
every network that fits it (:class:`~darbgen.processor.ProcessorConfig`), or another
kind. Everything that differs
between kinds is a member of the kind's :class:`CoreDescription`; the controller, the
IDENTIFY reply and the host driver ask :func:`describe` instead of branching on the
config's type. The streams themselves (load words, input and output beats) are already
described by every config's ``load_fields``, ``input_fields``, ``output_fields``,
``x_depth``, ``output_beats`` and ``max_cols``, and its ``digest()`` names it.

A new kind of core subclasses :class:`CoreDescription` with :func:`register`::

    @register
    class ProcessorCore(CoreDescription):
        config_type = ProcessorConfig
        code = 2                               # its IDENTIFY core byte
        runs = "a layer-sequenced processor"
        ...
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar

import numpy as np

from ..config import ConfigError, EngineConfig
from ..format import SparseLayer
from ..network import NetworkConfig, NetworkPlan, plan
from ..network import load_words as network_load_words
from ..packing import (input_words, load_words, pack_fields, schedule, unpack_fields,
                       unpack_outputs)
from ..processor import ProcessorConfig
from ..processor import load_words as processor_load_words
from ..processor_lstm import (LSTMPlan, check_lstm, is_lstm, lstm_input_words, lstm_load_words,
                              lstm_plan, unpack_lstm_outputs)

__all__ = ["CoreDescription", "register", "describe", "kind_of", "target_kind", "for_target",
           "KINDS", "ENGINE_FIELDS", "CAPACITY_FIELDS", "run_fields", "EngineCore",
           "NetworkCore", "ProcessorCore"]

_CONFIG_FIELDS = [f.name for f in dataclasses.fields(EngineConfig)]

#: One engine of an IDENTIFY reply: the EngineConfig fields in their own order (``shifts``
#: as a bit mask), then the layer's output rows and ReLU flag (0 for a lone engine).
ENGINE_FIELDS = [(name, 4) for name in _CONFIG_FIELDS] + [("rows", 4), ("relu", 1)]

#: The registered kinds, by their IDENTIFY core byte.
KINDS: dict[int, type[CoreDescription]] = {}


class CoreDescription:
    """One kind of device core, described for the protocol, the device and the host.

    Subclasses set the class members and implement the methods; an instance describes
    one ``config`` of :attr:`config_type`.

    Members
    -------
    config_type : type
        The config class this kind describes.
    code : int
        Its byte in the IDENTIFY reply (``core``).
    runs : str
        What a board with this core runs, for messages ("a single engine").
    target_type : type
        What it runs: the kind of artifact part :meth:`for_target` builds a core for.
    target_text, target_noun : str
        That target, for messages ("one layer", "layer").
    record_fields : list of (str, int)
        One IDENTIFY record: field names and byte counts (little-endian).
    """

    config_type: ClassVar[type]
    code: ClassVar[int]
    runs: ClassVar[str]
    target_type: ClassVar[type]
    target_text: ClassVar[str]
    target_noun: ClassVar[str]
    record_fields: ClassVar[list] = ENGINE_FIELDS

    def __init__(self, config):
        self.config = config

    # -- identity ------------------------------------------------------------------

    def records(self) -> list[dict]:
        """The IDENTIFY records that describe the config (integers by field name).

        Raises
        ------
        ValueError
            IDENTIFY cannot describe this config.
        """
        raise NotImplementedError

    @classmethod
    def from_records(cls, records: list[dict]):
        """The config that :meth:`records` described.

        Raises
        ------
        ConfigError
            The records describe no valid config of this kind.
        """
        raise NotImplementedError

    # -- hardware ------------------------------------------------------------------

    def hardware(self):
        """The core's gateware: a component with ``load``, ``x`` and ``y`` streams and a
        ``slots`` output (output beats per vector of what is loaded, 0 when nothing is)."""
        raise NotImplementedError

    # -- what it runs --------------------------------------------------------------

    @classmethod
    def for_target(cls, target, lanes: int, input_width: int):
        """The config ``darbgen build`` makes to run ``target`` (a :attr:`target_type`)."""
        raise NotImplementedError

    def check_target(self, target) -> None:
        """Raise :class:`~darbgen.config.ConfigError` naming the field unless ``target``
        runs on this core."""
        raise NotImplementedError

    def name(self, target) -> str:
        """``target`` in messages ("layer 'fc1'", "the network")."""
        raise NotImplementedError

    def load_words(self, target) -> list:
        """``target``'s load words for this core."""
        raise NotImplementedError

    def input_bits(self) -> int:
        """Bits of one element of the input vector."""
        raise NotImplementedError

    def input_words(self, x, target=None, reset: bool = False) -> list:
        """The input beats of one vector ``x`` of ``target`` (its ``cols`` integers), as
        RUN sends them (:func:`run_fields`: the device marks the
        last beat itself); ``reset``: a time step of an LSTM that starts from
        ``h = c = 0``."""
        raise NotImplementedError

    def input_beats_range(self) -> tuple[int, int]:
        """The fewest and the most input beats one RUN may carry: by default exactly
        ``x_depth`` (the core takes whole vectors of its width)."""
        return self.config.x_depth, self.config.x_depth

    @classmethod
    def default_target(cls, artifact):
        """What this kind runs of ``artifact`` when nothing more is said: its first layer,
        or its whole network."""
        raise NotImplementedError

    def capacity(self) -> dict | None:
        """What the core holds, for reports (``None``: it is sized to one target)."""
        return None

    def outputs(self, target) -> int:
        """Outputs per vector of ``target``."""
        raise NotImplementedError

    def unpacker(self, target) -> Callable[[list], np.ndarray]:
        """A function from one vector's output beats (integers) to its outputs."""
        raise NotImplementedError


def register(kind: type[CoreDescription]) -> type[CoreDescription]:
    """Make ``kind`` known to :func:`describe`, :func:`kind_of` and :func:`for_target`
    (a class decorator)."""
    if kind.code in KINDS and KINDS[kind.code] is not kind:
        raise ValueError(f"core code {kind.code} is taken by {KINDS[kind.code].__name__}")
    KINDS[kind.code] = kind
    return kind


def describe(config) -> CoreDescription:
    """The description of ``config``, a device core's config.

    Raises
    ------
    TypeError
        ``config`` is of no registered kind.
    """
    for kind in KINDS.values():
        if type(config) is kind.config_type:
            return kind(config)
    raise TypeError(f"no device core is described by a {type(config).__name__}")


def kind_of(code: int) -> type[CoreDescription]:
    """The kind whose IDENTIFY core byte is ``code``.

    Raises
    ------
    ValueError
        No registered kind has it.
    """
    if code not in KINDS:
        raise ValueError(f"core {code} is none this host knows ({sorted(KINDS)})")
    return KINDS[code]


def for_target(target, lanes: int, input_width: int):
    """The config ``darbgen build`` makes for ``target`` (a layer, a whole network, ...)
    at ``lanes`` lanes and ``input_width`` input elements per x word.

    Raises
    ------
    TypeError
        No registered kind runs such a target.
    """
    return target_kind(target).for_target(target, lanes, input_width)


def target_kind(target) -> type[CoreDescription]:
    """The kind of core ``darbgen build`` makes for ``target``.

    Raises
    ------
    TypeError
        No registered kind runs such a target.
    """
    for kind in KINDS.values():
        if isinstance(target, kind.target_type):
            return kind
    raise TypeError(f"no device core runs a {type(target).__name__}")


def run_fields(config) -> list:
    """What a RUN carries of each input beat of a core's ``config``: every input field but
    ``last`` (the device marks a vector's last beat itself), in their order: the
    elements ``x``, and with an LSTM cell the step's ``reset``."""
    return [f for f in config.input_fields if f[0] != "last"]


def _logits(fields) -> Callable[[list], np.ndarray]:
    """One vector's logits from its output beats (one logit per beat)."""
    return lambda beats: np.asarray(unpack_fields(fields, beats)["y"])


def _padded(x, cols: int) -> np.ndarray:
    """``x`` zero-padded to ``cols`` elements: a chain or an engine takes whole vectors."""
    out = np.zeros(cols, dtype=np.int64)
    out[:len(x)] = x
    return out


def _engine_record(engine: EngineConfig, rows: int = 0, relu: bool = False) -> dict:
    values = {name: getattr(engine, name) for name in _CONFIG_FIELDS}
    values["shifts"] = sum(1 << s for s in engine.shifts)
    return {**values, "rows": rows, "relu": int(relu)}


def _engine_of(record: dict) -> EngineConfig:
    cfg = {name: record[name] for name in _CONFIG_FIELDS}
    cfg["shifts"] = [s for s in range(32) if record["shifts"] >> s & 1]
    return EngineConfig.from_json(cfg)


@register
class EngineCore(CoreDescription):
    """One SpMV engine (:class:`~darbgen.hdl.engine.SpMVEngine`) for one layer."""

    config_type = EngineConfig
    code = 0
    runs = "a single engine"
    target_type = SparseLayer
    target_text = "one layer"
    target_noun = "layer"

    def records(self):
        return [_engine_record(self.config)]

    @classmethod
    def from_records(cls, records):
        if len(records) != 1:
            raise ConfigError(f"one engine is described by one record, not {len(records)}")
        return _engine_of(records[0])

    def hardware(self):
        from .engine import SpMVEngine
        return SpMVEngine(self.config)

    @classmethod
    def for_target(cls, target, lanes, input_width):
        return EngineConfig.for_layers([target], lanes, input_width=input_width)

    def check_target(self, target):
        self.config.check_layer(target, schedule(target, self.config.lanes))

    def name(self, target):
        return f"layer {target.name!r}"

    def load_words(self, target):
        return load_words(target, self.config, schedule(target, self.config.lanes))

    def input_bits(self):
        return self.config.input_bits

    def input_words(self, x, target=None, reset=False):
        return input_words(_padded(x, self.config.max_cols), self.config, last=False)

    @classmethod
    def default_target(cls, artifact):
        return artifact.layers[0]

    def outputs(self, target):
        return target.rows

    def unpacker(self, target):
        sched = schedule(target, self.config.lanes)
        return lambda beats: unpack_outputs(beats, self.config, sched)[0]


class _WholeNetwork(CoreDescription):
    """What every core that runs a whole network (:class:`~darbgen.network.NetworkPlan`)
    does alike: the plan's checks, its logits out one per beat."""

    target_type = NetworkPlan
    target_text = "a whole network"
    target_noun = "network"

    def check_target(self, target):
        self.config.check_plan(target)

    def name(self, target):
        return "the network"

    @classmethod
    def default_target(cls, artifact):
        return plan(artifact)

    def outputs(self, target):
        return target.classes

    def unpacker(self, target):
        return _logits(self.config.output_fields)


@register
class NetworkCore(_WholeNetwork):
    """A chain of engines with requantizers (:class:`~darbgen.hdl.network.Network`) for a
    whole network."""

    config_type = NetworkConfig
    code = 1
    runs = "a whole network"

    def records(self):
        c = self.config
        if c.has_gathers:
            raise ValueError("a convolutional network (im2col gathers) runs in simulation "
                             "only (darbgen eval --on verilator): IDENTIFY does not describe "
                             "gathers yet")
        return [_engine_record(e, rows, relu) for e, rows, relu in zip(c.engines, c.rows, c.relu)]

    @classmethod
    def from_records(cls, records):
        return NetworkConfig([_engine_of(r) for r in records], [r["rows"] for r in records],
                             [bool(r["relu"]) for r in records])

    def hardware(self):
        from .network import Network
        return Network(self.config)

    @classmethod
    def for_target(cls, target, lanes, input_width):
        return NetworkConfig.for_plan(target, lanes, input_width=input_width)

    def load_words(self, target):
        return network_load_words(target, self.config)

    def input_bits(self):
        return self.config.engines[0].input_bits

    def input_words(self, x, target=None, reset=False):
        return input_words(_padded(x, self.config.max_cols), self.config.engines[0],
                           last=False)


#: The capacities of a processor in its IDENTIFY record, after its engine's fields:
#: every :class:`~darbgen.processor.ProcessorConfig` field but ``engine``, 4 bytes each,
#: so that a capacity added to the contract travels without a change here.
CAPACITY_FIELDS = [(f.name, 4) for f in dataclasses.fields(ProcessorConfig)
                   if f.name != "engine"]


@register
class ProcessorCore(_WholeNetwork):
    """The layer-sequenced processor (:class:`~darbgen.hdl.processor.Processor`): one set
    of lanes that runs every network that fits its capacities, loaded at run time.

    IDENTIFY describes it in one record: its engine's fields, then its capacities
    (:data:`CAPACITY_FIELDS`). A RUN carries the network's own input (``cols``
    elements), not the activation depth.
    """

    config_type = ProcessorConfig
    code = 2
    runs = "the layer-sequenced processor"
    #: A whole network, or an LSTM layer's time step (with an LSTM cell).
    target_type = (NetworkPlan, LSTMPlan)
    record_fields = [(name, 4) for name in _CONFIG_FIELDS] + CAPACITY_FIELDS

    def records(self):
        c = self.config
        record = _engine_record(c.engine)
        del record["rows"], record["relu"]
        return [{**record, **{name: getattr(c, name) for name, _ in CAPACITY_FIELDS}}]

    @classmethod
    def from_records(cls, records):
        if len(records) != 1:
            raise ConfigError(f"a processor is described by one record, not {len(records)}")
        record = records[0]
        engine = _engine_of(record)
        return ProcessorConfig(engine, **{name: record[name] for name, _ in CAPACITY_FIELDS})

    def hardware(self):
        from .processor_core import CoreProcessor
        return CoreProcessor(self.config)

    @classmethod
    def for_target(cls, target, lanes, input_width):
        if isinstance(target, LSTMPlan):
            return ProcessorConfig.for_plans([], lanes, input_width=input_width,
                                             gates=[target.gate])
        return ProcessorConfig.for_plans([target], lanes, input_width=input_width)

    def check_target(self, target):
        if isinstance(target, LSTMPlan):
            check_lstm(target.gate, target.params, self.config)
        else:
            super().check_target(target)

    def name(self, target):
        if isinstance(target, LSTMPlan):
            return f"the LSTM step {target.name!r}"
        return super().name(target)

    @classmethod
    def default_target(cls, artifact):
        """An LSTM artifact's step (:func:`~darbgen.processor_lstm.lstm_plan`), else the
        whole network."""
        return lstm_plan(artifact) if is_lstm(artifact) else super().default_target(artifact)

    def outputs(self, target):
        return target.outputs if isinstance(target, LSTMPlan) else super().outputs(target)

    def unpacker(self, target):
        if isinstance(target, LSTMPlan):
            def step(beats):
                h, c = unpack_lstm_outputs(beats, self.config, target.hidden)
                return np.concatenate([h[0], c[0]])
            return step
        return super().unpacker(target)

    def load_words(self, target):
        if isinstance(target, LSTMPlan):
            return lstm_load_words(target.gate, target.params, self.config)
        return processor_load_words(target, self.config)

    def input_bits(self):
        return self.config.engine.input_bits

    def input_words(self, x, target=None, reset=False):
        if isinstance(target, LSTMPlan):
            # One step per RUN: the driver checks that its sequence starts with a reset.
            words = lstm_input_words(np.atleast_2d(x), [reset], self.config, target.gate,
                                     continues=True)
            fields = run_fields(self.config)
            return pack_fields(fields, unpack_fields(self.config.input_fields, words),
                               len(words))
        return input_words(x, self.config.engine, last=False)

    def input_beats_range(self):
        return 1, self.config.x_depth

    def capacity(self):
        """Kept weights (every lane full), activations, lanes, program steps, the step
        kinds and the memories' other capacities."""
        c = self.config
        return {"weights": c.capacity, "activations": c.act_depth, "lanes": c.lanes,
                "steps": c.max_steps, "step_kinds": list(c.step_kinds),
                **{name: getattr(c, name) for name, _ in CAPACITY_FIELDS}}
