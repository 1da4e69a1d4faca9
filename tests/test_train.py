"""Training helpers: optimizers, per-layer methods and the progressive schedule's length."""

import numpy as np
import pytest
import torch

from darbgen.pruning.methods import NM, DARB, Irregular, prunable_layers
from darbgen.pruning.train import Dataset, per_layer, progressive_prune, train


def tiny(seed=0):
    """A 16-8-3 MLP and 64 random samples (seeded)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 16, generator=g), torch.randint(0, 3, (64,), generator=g)
    return model, Dataset(x, y, x, y)


def test_sgd_and_adam_train_differently():
    a, data = tiny()
    b, _ = tiny()
    train(a, data, epochs=1, seed=0, progress=False, optimizer="adam")
    train(b, data, epochs=1, seed=0, progress=False, optimizer="sgd", lr=0.05)
    assert not torch.equal(a[0].weight, b[0].weight)


def test_unknown_optimizer():
    model, data = tiny()
    with pytest.raises(ValueError, match=r"^unknown optimizer 'rmsprop'; choose one of adam, sgd$"):
        train(model, data, epochs=1, optimizer="rmsprop", progress=False)


def test_per_layer_methods():
    model, _ = tiny()
    layers = list(prunable_layers(model))
    m = DARB(ratio=4)
    assert per_layer(m, layers) == [m, m]
    two = [Irregular(ratio=4), Irregular(ratio=2)]
    assert per_layer(two, layers) == two
    with pytest.raises(ValueError, match=r"^per-layer pruning needs one method per prunable "
                                         r"layer \(2: 0, 2\), not 1$"):
        per_layer([m], layers)


def test_every_method_gets_the_same_fine_tuning_steps():
    """N:M has a one-step schedule: it is repeated, so it fine-tunes ``steps`` times like a
    ratio schedule does; per-layer methods are logged per layer."""
    model, _ = tiny()
    layers = list(prunable_layers(model))
    calls = []
    log = progressive_prune(layers, NM(1, 4), 3, lambda step: calls.append(step) or 0.5)
    assert calls == [0, 1, 2] and [r["params"] for r in log] == [{"n": 1, "m": 4}] * 3
    assert log[-1]["pruning_ratio"] == pytest.approx(4.0)
    model, _ = tiny()
    layers = list(prunable_layers(model))
    log = progressive_prune(layers, [Irregular(ratio=4), Irregular(ratio=2)], 2, lambda s: 0.0)
    assert [p["ratio"] for p in log[-1]["params"]] == [4, 2]
    assert [int(l.mask().sum()) for l in layers] == [32, 12]
    assert log[-1]["pruning_ratio"] == pytest.approx((128 + 24) / (32 + 12))
    assert np.isclose(log[0]["params"][0]["ratio"], 2.0)      # sqrt(4): the geometric step
