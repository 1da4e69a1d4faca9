"""EngineConfig and packing: the contract every stream is derived from."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from darbgen.config import ConfigError, EngineConfig, layout_width
from darbgen.packing import (input_words, load_words, pack_fields, schedule, unpack_fields,
                             unpack_outputs)

from conftest import random_layer


def config(**over):
    base = dict(lanes=4, shifts=(1, 2, 3), max_keep=2, max_row_nnz=40, max_cols=64,
                lane_depth=100, lane_rows=10)
    base.update(over)
    return EngineConfig(**base)


def test_derived_widths():
    c = config()
    assert c.offset_bits == 3 and c.col_bits == 6 and c.x_depth == 8
    assert c.acc_width == 8 + 8 + 6
    assert layout_width(c.beat_fields) == 8 + 3
    assert layout_width(c.output_fields) == 4 * c.acc_width + 1
    assert EngineConfig.from_json(c.to_json()) == c
    assert c.digest() == config().digest() != config(lanes=8).digest()


@pytest.mark.parametrize("over, message", [
    ({"lanes": 0}, r"^lanes must be a positive integer, not 0$"),
    ({"shifts": ()}, r"^shifts must be distinct log2 block sizes between 0 and 20, not \(\)$"),
    ({"shifts": (2, 2)}, r"^shifts must be distinct"),
    ({"input_width": 6}, r"^input_width must be a power of 2, not 6$"),
    ({"weight_bits": 1}, r"^weight_bits must be an integer between 2 and 16, not 1$"),
    ({"max_keep": 9}, r"^max_keep 9 exceeds the largest block size 8$"),
])
def test_config_errors(over, message):
    with pytest.raises(ConfigError, match=message):
        config(**over)


def test_check_layer_messages(rng):
    layer = random_layer(rng, 5, 64, [2, 8])
    c = config()
    c.check_layer(layer)
    with pytest.raises(ConfigError, match=r"^layer 'layer' has 64 columns, the engine takes 32$"):
        config(max_cols=32).check_layer(layer)
    with pytest.raises(ConfigError, match=r"^layer 'layer' needs \d+ beats and \d+ rows in a "
                                          r"lane, the engine holds 4 and 10$"):
        config(lane_depth=4).check_layer(layer, schedule(layer, 4))


@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 9))
def test_schedule_covers_each_row_once_and_balances(seed, rows, lanes):
    rng = np.random.default_rng(seed)
    layer = random_layer(rng, rows, 50, [1, 2, 8, 64])
    s = schedule(layer, lanes)
    assigned = np.concatenate(s.lane_row_lists)
    assert sorted(assigned.tolist()) == list(range(rows))
    assert s.lane_beats.sum() == layer.nnz
    # LPT: the busiest lane exceeds the least busy by at most one row's work
    assert s.lane_beats.max() - s.lane_beats.min() <= layer.row_nnz.max()
    omap = s.output_map()
    assert sorted(omap[omap >= 0].tolist()) == list(range(rows))


@given(st.data())
def test_pack_unpack_round_trip(data):
    fields = [("a", ("s", 5)), ("b", ("u", 3)), ("c", ("array", ("s", 7), 3)), ("d", ("u", 1))]
    n = data.draw(st.integers(1, 20))
    cols = {"a": data.draw(st.lists(st.integers(-16, 15), min_size=n, max_size=n)),
            "b": data.draw(st.lists(st.integers(0, 7), min_size=n, max_size=n)),
            "c": data.draw(st.lists(st.lists(st.integers(-64, 63), min_size=3, max_size=3),
                                    min_size=n, max_size=n)),
            "d": data.draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))}
    words = pack_fields(fields, cols, n)
    assert all(0 <= w < 1 << layout_width(fields) for w in words)
    back = unpack_fields(fields, words)
    for k, v in cols.items():
        assert back[k].tolist() == v


def test_pack_rejects_out_of_range():
    with pytest.raises(ValueError, match=r"^value out of range for a s4 field$"):
        pack_fields([("a", ("s", 4))], {"a": [8]}, 1)


def test_input_words_pad_and_flag_last():
    c = config(input_width=4)
    words = input_words(np.arange(-5, 5).reshape(1, 10), c)
    f = unpack_fields(c.input_fields, words)
    assert f["x"].reshape(-1).tolist() == list(range(-5, 5)) + [0, 0]
    assert f["last"].tolist() == [0, 0, 1]


def test_load_words_start_with_first_and_route_lanes(rng):
    layer = random_layer(rng, 6, 30, [2, 4])
    c = EngineConfig.for_layers([layer], lanes=3)
    f = unpack_fields(c.load_fields, load_words(layer, c))
    assert f["first"].tolist() == [1] + [0] * (len(f["first"]) - 1)
    assert (f["header"] == 1).sum() == 6 and (f["header"] == 0).sum() == layer.nnz
    assert set(f["lane"].tolist()) == {0, 1, 2}


def test_unpack_outputs_checks_framing(rng):
    layer = random_layer(rng, 5, 20, [4])
    c = EngineConfig.for_layers([layer], lanes=2)
    s = schedule(layer, 2)
    good = pack_fields(c.output_fields, {"y": np.zeros((s.slots, 2), int),
                                         "last": [0] * (s.slots - 1) + [1]}, s.slots)
    assert unpack_outputs(good, c, s).shape == (1, 5)
    with pytest.raises(ValueError, match=r"are not a whole number of vectors"):
        unpack_outputs(good[:-1], c, s)
    bad = pack_fields(c.output_fields, {"y": np.zeros((s.slots, 2), int),
                                        "last": [1] * s.slots}, s.slots)
    with pytest.raises(ValueError, match=r"^output 'last' flags do not mark the end of each "
                                         r"vector$"):
        unpack_outputs(bad, c, s)
