"""The sparse-layer contract: construction, validation messages, derived quantities."""

import numpy as np
import pytest

from darbgen.format import (ArtifactError, SparseLayer, beat_dtype, ceil_log2, check_layout,
                            infer_layout, pack_beats, quantize, single_block_layout)

from conftest import random_layer


def small_layer(**over):
    # 2 rows × 10 cols. Row 0: b=4, k=1 (blocks 4,4,2); row 1: b=8, k=2 (blocks 8,2).
    fields = dict(name="fc", rows=2, cols=10, block_sizes=[4, 8], keep=[1, 2],
                  offsets=[3, 0, 1, 2, 7, 0, 1], values=[1, -2, 3, 4, 5, -128, 127],
                  scale=[0.5, 0.25])
    fields.update(over)
    return SparseLayer(**fields)


def test_derived_quantities():
    layer = small_layer()
    assert layer.row_nnz.tolist() == [3, 4]
    assert layer.nnz == 7
    assert layer.pruning_ratio == pytest.approx(20 / 7)
    # decode: col = (block << log2 b) | offset
    assert layer.columns.tolist() == [3, 4, 9, 2, 7, 8, 9]
    assert layer.entry_rows.tolist() == [0, 0, 0, 1, 1, 1, 1]
    # offsets: 3 entries × 2 bits + 4 × 3 bits; header: b varies (2 codes → 1 bit), k varies
    # (max 2 → 2 bits) = 3 bits per row.
    assert layer.header_bits() == 3
    assert layer.index_bits_per_nnz == pytest.approx((6 + 12 + 2 * 3) / 7)
    assert layer.accumulator_width(8) == 8 + 8 + 2
    assert layer.to_dense().tolist() == [
        [0, 0, 0, 1, -2, 0, 0, 0, 0, 3],
        [0, 0, 4, 0, 0, 0, 0, 5, -128, 127]]
    assert layer.to_dense().dtype == np.int8
    assert np.allclose(layer.dequantized()[1], layer.to_dense()[1] * 0.25)


def test_uniform_layer_has_no_header_and_dense_is_b1():
    dense = SparseLayer(name="d", rows=2, cols=3, block_sizes=[1, 1], keep=[1, 1],
                        offsets=[0] * 6, values=range(6), scale=1.0)
    assert dense.index_bits_per_nnz == 0
    assert dense.pruning_ratio == 1
    assert dense.is_uniform


def test_csr_like_layout_costs_csr_bits():
    mask = np.zeros((4, 100), bool)
    mask[0, [1, 50, 99]] = True
    mask[2, 7] = True
    b, k = single_block_layout(mask)
    assert b.tolist() == [128] * 4 and k.tolist() == [3, 0, 1, 0]
    layer = SparseLayer.encode("irr", np.ones((4, 100), int), mask, b, k, 1.0)
    # 7 column bits per entry (ceil log2 100) + a 2-bit row length per row
    assert layer.index_bits_per_nnz == pytest.approx((4 * 7 + 4 * 2) / 4)
    assert layer.columns.tolist() == [1, 50, 99, 7]


def test_accumulator_width_covers_extremes():
    # one row of 4 entries of -128 times inputs of -128: 4 · 2^14 = 2^16 needs 18 signed bits
    layer = SparseLayer(name="x", rows=1, cols=4, block_sizes=[1], keep=[1],
                        offsets=[0] * 4, values=[-128] * 4, scale=1.0)
    width = layer.accumulator_width(8)
    assert 4 * 128 * 128 <= (1 << (width - 1)) - 1
    assert width == 18


@pytest.mark.parametrize("over, error, message", [
    ({"block_sizes": [4, 6]}, ArtifactError,
     r"^layer 'fc': row 1: block size must be a power of 2, not 6$"),
    ({"block_sizes": [4]}, ArtifactError,
     r"^layer 'fc': field 'block_sizes' must have 2 entries \(one per row\), not 1$"),
    ({"keep": [1, 9]}, ArtifactError,
     r"^layer 'fc': row 1: keep must be between 0 and the block size 8, not 9$"),
    ({"offsets": [3, 0, 1, 2, 7, 0]}, ArtifactError,
     r"^layer 'fc': field 'offsets' has 6 entries, the layout needs 7$"),
    ({"offsets": [3, 0, 2, 2, 7, 0, 1]}, ArtifactError,
     r"^layer 'fc', row 0, block 2|^layer 'fc': row 0, block 2: offset 2 is outside"),
    ({"offsets": [3, 0, 1, 7, 2, 0, 1]}, ArtifactError,
     r"^layer 'fc': row 1, block 0: offsets must be distinct and ascending, got 7 then 2$"),
    ({"offsets": [3, 0, 1, 2, 2, 0, 1]}, ArtifactError,
     r"^layer 'fc': row 1, block 0: offsets must be distinct and ascending, got 2 then 2$"),
    ({"values": [1, -2, 3, 4, 5, -129, 127]}, ArtifactError,
     r"^layer 'fc': row 1: value -129 does not fit in 8 bits$"),
    ({"values": [1.0] * 7}, TypeError,
     r"^layer 'fc': field 'values' must hold integers, not float64$"),
    ({"scale": [0.5, 0.0]}, ArtifactError,
     r"^layer 'fc': field 'scale' must be finite and positive at row 1, not 0.0$"),
    ({"scale": [0.5, 0.1, 0.2]}, ArtifactError,
     r"^layer 'fc': field 'scale' must be a scalar or have shape \(2,\), not \(3,\)$"),
    ({"weight_bits": 17}, ArtifactError,
     r"^layer 'fc': weight_bits must be between 2 and 16, not 17$"),
    ({"rows": 0}, ArtifactError, r"^layer 'fc': rows must be between 1 and 1048576, not 0$"),
    # Hostile sizes (issue 16): each once overflowed int64 arithmetic or allocated
    # gigabytes before any check; now the contract's limits refuse them first.
    ({"cols": 1 << 63}, ArtifactError,
     r"^layer 'fc': cols must be between 1 and 1048576, not 9223372036854775808$"),
    ({"rows": 1 << 15, "cols": 1 << 15, "block_sizes": [1 << 15] * (1 << 15),
      "keep": [0] * ((1 << 15) - 1) + [1], "offsets": [0], "values": [1], "scale": 1.0},
     ArtifactError, r"^layer 'fc': 32768 × 32768 weights, more than the 67108864 \(at most "
                    r"1048576 columns\) a layer may have$"),
    ({"block_sizes": [4, 1 << 62], "keep": [1, 1 << 62]}, ArtifactError,
     r"^layer 'fc': row 1: block size must be at most 1048576, not 4611686018427387904$"),
    ({"values": np.array([1, 2, 3, 4, 5, 6, 2**64 - 1], dtype=np.uint64)}, ArtifactError,
     r"^layer 'fc': field 'values' holds 18446744073709551615, beyond any size or value"),
    ({"bias": np.array([0.0, 1e300])}, ArtifactError,
     r"^layer 'fc': field 'bias' must be finite float32 numbers$"),
    ({"cols": 2.5}, TypeError, r"^layer 'fc': cols must be an integer, not 2.5$"),
    ({"name": ""}, TypeError, r"^layer name must be a non-empty string, not ''$"),
    ({"keep": [0, 0], "offsets": [], "values": []}, ArtifactError,
     r"^layer 'fc': keeps no weights$"),
    ({"shape": (2, 3, 4)}, ArtifactError,
     r"^layer 'fc': field 'shape' \(2, 3, 4\) does not flatten to \(2, 10\)$"),
])
def test_construction_errors(over, error, message):
    with pytest.raises(error, match=message):
        small_layer(**over)


def test_offset_outside_partial_block():
    # row 0's last block holds columns 8, 9 only: offset 2 is outside it
    with pytest.raises(ArtifactError,
                       match=r"^layer 'fc': row 0, block 2: offset 2 is outside the block "
                             r"\(width 2\)$"):
        small_layer(offsets=[3, 0, 2, 2, 7, 0, 1])


def test_encode_round_trip(rng):
    layer = random_layer(rng, 17, 45, [2, 4, 16, 64], keep=2)
    again = SparseLayer.encode("again", layer.to_dense(), layer.mask(), layer.block_sizes,
                               layer.keep, layer.scale)
    assert np.array_equal(again.offsets, layer.offsets)
    assert np.array_equal(again.values, layer.values)


def test_encode_rejects_mask_breaking_layout():
    mask = np.zeros((2, 8), bool)
    mask[0, [0, 4]] = True
    mask[1, [0, 1, 5]] = True
    with pytest.raises(ArtifactError,
                       match=r"^layer 'w': row 1, block 0: keeps 2 weights, the layout needs 1$"):
        SparseLayer.encode("w", np.ones((2, 8), int), mask, [4, 4], [1, 1], 1.0)


def test_infer_layout(rng):
    layer = random_layer(rng, 30, 70, [2, 8, 32])
    b, k = infer_layout(layer.mask(), 1)
    # a b=32 row keeps 3 entries over 70 columns; so would no other size
    assert b.tolist() == layer.block_sizes.tolist()
    assert k.tolist() == [1] * 30
    bad = layer.mask().copy()
    bad[0, :] = False
    bad[0, :6] = True
    with pytest.raises(ArtifactError, match=r"^layer 'mask': row 0: keeps 6 weights, which no "):
        infer_layout(bad, 1)


def test_quantize_symmetric():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0]])
    mask = np.array([[True, True, False], [True, False, False]])
    q, scale = quantize(w, mask, 8)
    assert q.tolist() == [[64, -127, 0], [0, 0, 0]]
    assert scale.tolist() == [1.0 / 127, 1.0]
    q, scale = quantize(w, mask, 4, per_row=False)
    assert scale.shape == () and q.tolist() == [[4, -7, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match=r"^weight has non-finite values$"):
        quantize([[np.nan]], [[True]])
    with pytest.raises(ValueError, match=r"^weight bits must be an integer between 2 and 16, "
                                         r"not 1$"):
        quantize(w, mask, 1)


def test_pack_beats_is_canonical_stream():
    layer = small_layer()
    beats = pack_beats(layer)
    assert beats.dtype == beat_dtype(layer)
    assert beats.dtype["value"] == np.int8 and beats.dtype["offset"] == np.uint8
    assert beats["value"].tolist() == layer.values.tolist()
    assert beats["offset"].tolist() == layer.offsets.tolist()


def test_check_layout_names_bad_block_size():
    with pytest.raises(ArtifactError, match=r"^layer 'x': row 0: block size must be a power "
                                            r"of 2, not 3$"):
        check_layout("x", np.ones((1, 3), bool), [3], [3])


def test_ceil_log2():
    assert [ceil_log2(n) for n in (0, 1, 2, 3, 4, 5, 64, 65)] == [0, 0, 1, 2, 2, 3, 6, 7]


def test_compacted_layer_gathers_and_expands(rng):
    from darbgen.sim.golden import spmv_ref
    cols = np.array([1, 4, 5, 9])
    layer = SparseLayer.encode("c", rng.integers(-9, 9, size=(3, 4)), np.ones((3, 4), bool),
                               [1, 1, 1], [1, 1, 1], 1.0, shape=(3, 10), input_columns=cols)
    assert layer.input_width == 10 and layer.pruning_ratio == pytest.approx(30 / 12)
    full = layer.to_dense(expanded=True)
    assert full.shape == (3, 10) and not full[:, [0, 2, 3, 6, 7, 8]].any()
    x = rng.integers(-128, 128, size=(2, 10))
    assert np.array_equal(spmv_ref(layer, layer.gather(x)), x @ full.astype(np.int64).T)


@pytest.mark.parametrize("columns, shape, message", [
    ([1, 4, 4, 9], (3, 10), r"field 'input_columns' must be strictly increasing columns of "
                            r"the original 10$"),
    ([1, 4, 5, 10], (3, 10), r"field 'input_columns' must be strictly increasing"),
    ([1, 4, 5], (3, 10), r"field 'input_columns' must have 4 entries \(one per column\), "
                         r"not 3$"),
    ([0, 1, 2, 3], (4, 10), r"field 'shape' \(4, 10\) does not flatten to \(3, 10\)$"),
])
def test_compaction_errors(columns, shape, message):
    with pytest.raises(ArtifactError, match=message):
        SparseLayer.encode("c", np.ones((3, 4), int), np.ones((3, 4), bool), [1] * 3, [1] * 3,
                           1.0, shape=shape, input_columns=columns)
