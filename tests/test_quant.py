"""The integer rules every network shares (darbgen.quant): float-to-integer rounding
halves away from zero, the requantizer's shift halves up, and the MLP/CNN plan and the
LSTM's parameters both derive their integers with them."""

from dataclasses import replace

import numpy as np
import pytest

from conftest import random_layer
from darbgen.format import Artifact
from darbgen.lstm_format import X_ONE, Z_FRAC, derive_params
from darbgen.network import plan
from darbgen.quant import MULT_BITS, fixed_point, requant, round_half_away

#: Exact halves and their neighbours, with the integer each must become.
HALVES = [(2.5, 3), (-2.5, -3), (0.5, 1), (-0.5, -1), (1.5, 2), (-1.5, -2), (3.0, 3),
          (0.49999999999999994, 0), (-0.49999999999999994, 0), (2.4999, 2), (-2.5001, -3)]


@pytest.mark.parametrize("x, expected", HALVES)
def test_round_half_away_on_halves(x, expected):
    assert round_half_away(x) == expected
    assert round_half_away(-x) == -expected                # sign-symmetric


def test_round_half_away_passes_infinities_and_large_values():
    big = 2.0 ** 60 + 2.0 ** 8
    assert round_half_away([np.inf, -np.inf, big, -big]).tolist() == [np.inf, -np.inf, big, -big]


def test_fixed_point_rounds_the_mantissa_half_away_and_carries():
    # 16384.5 / 2^15 is an exact float: the mantissa's half rounds up to 16385.
    mult, shift = fixed_point([16384.5 / 2 ** 15, 3 * 2.0 ** -20, 1 - 2.0 ** -20])
    assert mult.tolist() == [16385, 3 << 13, 1 << 14]
    assert shift.tolist() == [15, 33, 14]                  # 1 - 2^-20 carries to 2^14 / 2^14
    assert ((mult >= 1 << (MULT_BITS - 1)) & (mult < 1 << MULT_BITS)).all()


def test_requant_shift_halves_go_up_for_either_sign():
    assert requant([3, -3, 5, -5], 1, 1, -128, 127).tolist() == [2, -1, 3, -2]
    assert requant([1 << 20], 1, 63, -128, 127).tolist() == [0]


# -- one rule for every network: crafted layers whose bias and multiplier are exact halves

#: Biases in accumulator units: exact halves of both signs, and the integers they become.
BIAS_UNITS = np.array([2.5, -2.5, 0.5, -0.5, 1.5, -1.5, 7.0, -7.0])
BIAS_INTS = [3, -3, 1, -1, 2, -2, 7, -7]
#: A rescale factor whose 15-bit mantissa is an exact half (16384.5 · 2^-15).
RATIO = 16384.5 / 2 ** 15


def test_network_plan_rounds_bias_and_multiplier_half_away(rng):
    rows = BIAS_UNITS.size
    # step = scale · input_scale = RATIO / 2, and the next layer's input step is 1/2.
    first = replace(random_layer(rng, rows, 6, [2], name="fc1"), scale=np.full(rows, RATIO),
                    input_scale=0.5, activation="relu", bias=BIAS_UNITS * RATIO / 2)
    last = replace(random_layer(rng, 3, rows, [2], name="fc2"), input_scale=0.5)
    q = plan(Artifact([first, last], {"source": "crafted"})).layers[0]
    assert q.bias.tolist() == BIAS_INTS
    assert q.mult.tolist() == [16385] * rows and q.shift.tolist() == [15] * rows


def test_lstm_params_round_bias_and_multiplier_half_away(rng):
    hidden = BIAS_UNITS.size // 4
    # The gate's requantization factor is scale · 2^7 / 127 = RATIO.
    scale = RATIO * X_ONE / (1 << Z_FRAC)
    gate = replace(random_layer(rng, 4 * hidden, 5 + hidden, [2], name="lstm.l0"),
                   scale=np.full(4 * hidden, scale), bias=BIAS_UNITS * scale / X_ONE)
    params = derive_params(gate, c_frac=10)
    assert params.bias.tolist() == BIAS_INTS
    assert params.mult.tolist() == [16385] * 4 * hidden
    assert params.shift.tolist() == [15] * 4 * hidden
