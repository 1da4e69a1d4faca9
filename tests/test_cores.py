"""One description per kind of device core (hdl/cores.py): IDENTIFY, the host's checks
and the registry that a new kind joins."""

import numpy as np
import pytest

from conftest import random_layer
from darbgen.config import EngineConfig
from darbgen.hdl import cores
from darbgen.hdl.protocol import IDENTIFY_FIELDS, identity_bytes, parse_identity
from darbgen.network import plan
from darbgen.packing import load_words, pack_fields, schedule
from darbgen.sim.golden import network_ref, spmv_ref


def test_identify_round_trips_every_kind(rng):
    from test_network import random_network

    layer = random_layer(rng, 6, 16, [2, 4])
    net = plan(random_network(rng, dims=(16, 12, 10)))
    for target, kind in ((layer, cores.EngineCore), (net, cores.NetworkCore)):
        config = cores.for_target(target, 2, 2)
        core = cores.describe(config)
        assert type(core) is kind and cores.target_kind(target) is kind
        body = identity_bytes(config, 12_000_000, 1_000_000)
        head = sum(n for _, n in IDENTIFY_FIELDS)
        assert body[head - 2:head] == bytes([kind.code, len(core.records())])
        assert parse_identity(body).config == config


def test_descriptions_run_their_targets(rng):
    """What the driver does with a description: load words, input beats, and outputs
    unpacked from the golden model's beats, for a layer and for a network."""
    layer = random_layer(rng, 7, 12, [2, 4])
    core = cores.describe(cores.for_target(layer, 2, 2))
    assert core.load_words(layer) == load_words(layer, core.config, schedule(layer, 2))
    assert (core.name(layer), core.outputs(layer), core.input_bits()) == ("layer 'layer'", 7, 8)
    x = rng.integers(-128, 128, size=layer.cols)
    assert len(core.input_words(np.pad(x, (0, core.config.max_cols - layer.cols)))) == \
        core.config.x_depth
    assert spmv_ref(layer, x[None]).shape == (1, core.outputs(layer))

    from test_network import random_network
    net = plan(random_network(rng, dims=(16, 12, 10)))
    ncore = cores.describe(cores.for_target(net, 2, 2))
    assert (ncore.name(net), ncore.outputs(net)) == ("the network", 10)
    logits = network_ref(net, rng.integers(-128, 128, size=(1, 16)))[0]
    beats = pack_fields(ncore.config.output_fields,
                        {"y": logits, "last": np.arange(10) == 9}, 10)
    assert np.array_equal(ncore.unpacker(net)(beats), logits)


def test_a_target_of_another_kind_is_refused_by_name(rng):
    from darbgen.config import ConfigError
    layer = random_layer(rng, 4, 8, [2])
    core = cores.describe(cores.for_target(layer, 2, 2))
    with pytest.raises(ConfigError, match=r"^layer 'wide' has 16 columns, the engine takes 8$"):
        core.check_target(random_layer(rng, 4, 16, [2], name="wide"))


def test_registry_errors():
    with pytest.raises(TypeError, match=r"^no device core is described by a dict$"):
        cores.describe({})
    with pytest.raises(TypeError, match=r"^no device core runs a str$"):
        cores.for_target("fc1", 2, 2)
    with pytest.raises(ValueError, match=r"^core 9 is none this host knows \(\[0, 1, 2\]\)$"):
        cores.kind_of(9)

    class Clash(cores.CoreDescription):
        code = 1
    with pytest.raises(ValueError, match=r"^core code 1 is taken by NetworkCore$"):
        cores.register(Clash)


def test_identify_of_an_unknown_core_is_refused(rng):
    config = EngineConfig.for_layers([random_layer(rng, 4, 8, [2])], 1)
    body = bytearray(identity_bytes(config, 12_000_000, 1_000_000))
    body[sum(n for _, n in IDENTIFY_FIELDS) - 2] = 7
    with pytest.raises(ValueError, match=r"^core 7 is none this host knows"):
        parse_identity(bytes(body))
    head = sum(n for _, n in IDENTIFY_FIELDS)
    body[head - 2:head] = bytes([0, 0])                     # an engine without its record
    with pytest.raises(ValueError, match=r"^IDENTIFY reply describes no valid core \(a single "
                                         r"engine\): one engine is described by one record, "
                                         r"not 0$"):
        parse_identity(bytes(body[:head]))
    with pytest.raises(ValueError, match=r"^IDENTIFY reply has 64 bytes, expected 19$"):
        parse_identity(bytes(body))


def test_a_new_kind_joins_by_registering(rng):
    """A third kind needs no change to the protocol, the controller or the driver: here
    a lone engine that IDENTIFY reports under its own code (its config class a subclass,
    so that the registry tells them apart)."""

    class LoneConfig(EngineConfig):
        pass

    @cores.register
    class LoneCore(cores.EngineCore):
        config_type = LoneConfig
        code = 200
        runs = "a lone engine"

        @classmethod
        def from_records(cls, records):
            e = super().from_records(records)
            return LoneConfig(**{k: getattr(e, k) for k in e.__dataclass_fields__})

    try:
        base = EngineConfig.for_layers([random_layer(rng, 4, 8, [2])], 1)
        config = LoneConfig(**{k: getattr(base, k) for k in base.__dataclass_fields__})
        parsed = parse_identity(identity_bytes(config, 12_000_000, 1_000_000)).config
        assert type(parsed) is LoneConfig and parsed == config
        assert cores.describe(config).runs == "a lone engine"
    finally:
        del cores.KINDS[200]
