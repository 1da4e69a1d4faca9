"""The torch pruning methods: torch.nn.utils.prune compatibility, layer kinds, fine-tuning."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from darbgen.format import check_layout
from darbgen.pruning import (BMWM, DARB, NM, Block, Irregular, export_layer, make_method,
                             prunable_layers)
from darbgen.pruning.train import Dataset, train

METHODS = [DARB(ratio=8), BMWM(8), NM(2, 4), Block(ratio=4, block_shape=(2, 4)), Irregular(8)]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_apply_creates_mask_buffer_and_remove_makes_it_permanent(method):
    torch.manual_seed(0)
    fc = nn.Linear(48, 20)
    type(method).apply(fc, "weight", **method.params())
    assert "weight_mask" in dict(fc.named_buffers())
    assert "weight_orig" in dict(fc.named_parameters())
    mask = fc.weight_mask.bool().numpy()
    assert np.array_equal(fc.weight.detach().numpy() != 0, mask)
    b, k = method.layout(mask)
    check_layout(method.name, mask, b, k)
    prune.remove(fc, "weight")
    assert not hasattr(fc, "weight_mask")
    assert np.array_equal(fc.weight.detach().numpy() != 0, mask)


def test_custom_from_mask_and_export():
    torch.manual_seed(0)
    fc = nn.Linear(32, 8)
    mask = BMWM(4).mask_2d(fc.weight.detach().numpy())
    prune.custom_from_mask(fc, "weight", torch.from_numpy(mask))
    layer = export_layer(next(prunable_layers(fc)), BMWM(4))
    assert layer.block_sizes.tolist() == [4] * 8 and layer.nnz == 64
    assert layer.bias.shape == (8,)


def test_stacked_methods_replace_the_mask():
    torch.manual_seed(0)
    fc = nn.Linear(64, 16)
    DARB.apply(fc, "weight", ratio=4)
    first = fc.weight_mask.clone()
    DARB.apply(fc, "weight", ratio=16)
    assert int(fc.weight_mask.sum()) == 64
    assert not (fc.weight_mask.bool() & ~first.bool()).any()   # pruned stays pruned here


def test_conv_gemm_view():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3)
    layer = next(prunable_layers(conv))
    assert layer.weight().shape == (6, 36) and layer.shape() == (6, 4, 3, 3)
    mask = layer.prune(BMWM(8))
    assert conv.weight_mask.shape == (6, 4, 3, 3)
    sparse = export_layer(layer, BMWM(8))
    assert sparse.shape == (6, 4, 3, 3) and sparse.cols == 36
    assert np.array_equal(sparse.mask(), mask)


def test_lstm_gates_pruned_jointly_and_forward_uses_masks():
    torch.manual_seed(0)
    lstm = nn.LSTM(10, 8, num_layers=2)
    layers = list(prunable_layers(lstm))
    assert [l.name for l in layers] == ["layer0.l0", "layer0.l1"]
    assert layers[0].weight().shape == (32, 18)           # [W_ih | W_hh], one row per gate unit
    mask = layers[0].prune(DARB(ratio=4))
    assert np.array_equal(lstm.weight_ih_l0_mask.bool().numpy(), mask[:, :10])
    assert np.array_equal(lstm.weight_hh_l0_mask.bool().numpy(), mask[:, 10:])
    x = torch.randn(5, 3, 10)
    ref = nn.LSTM(10, 8, num_layers=2)
    with torch.no_grad():
        for name, p in ref.named_parameters():
            p.copy_(getattr(lstm, name))                  # the masked effective weights
    assert torch.allclose(lstm(x)[0], ref(x)[0])
    sparse = export_layer(layers[0], DARB(ratio=4))
    assert sparse.rows == 32 and sparse.cols == 18
    assert np.allclose(sparse.bias, (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy(),
                       atol=1e-6)


def test_masked_finetuning_keeps_pruned_weights_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    layers = list(prunable_layers(model))
    masks = [layer.prune(DARB(ratio=4)) for layer in layers]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=gen)
    y = torch.randint(0, 4, (64,), generator=gen)
    before = [layer.weight() for layer in layers]
    train(model, Dataset(x, y, x, y), epochs=3, progress=False)
    for layer, mask, w0 in zip(layers, masks, before):
        w = layer.weight()
        assert (w[~mask] == 0).all()
        assert not np.allclose(w[mask], w0[mask])         # kept weights did train


def test_make_method_errors():
    with pytest.raises(ValueError, match=r"^unknown pruning method 'xyz'; choose one of darb, "
                                         r"bmwm, block, nm, irregular$"):
        make_method("xyz")
    with pytest.raises(ValueError, match=r"^block size must be a power of 2, not 12$"):
        BMWM(12)
    with pytest.raises(ValueError, match=r"^keep must be between 1 and the block size 2, not 3$"):
        DARB(block_sizes=(2, 4), keep=3)


def test_schedules_grow_towards_the_target():
    ratios = [m.ratio for m in DARB(ratio=16).schedule(4)]
    assert ratios == pytest.approx([2, 4, 8, 16])
    assert [m.block_size for m in BMWM(16).schedule(4)] == [2, 4, 8, 16]
    assert len(NM(2, 4).schedule(3)) == 1
