"""Built-in examples and their data.

The Fashion-MNIST tests need Debian's dataset-fashion-mnist, which the project's set-up
installs (``make data``, run by ``make test`` and so by CI): without it they fail with the
set-up instruction instead of skipping.
"""

import numpy as np
import pytest
import torch

from darbgen.pruning import examples
from darbgen.pruning.examples import EXAMPLES, FASHION_DIR, example_data


@pytest.fixture(scope="module")
def fashion():
    """Fashion-MNIST, or a failure that says how to install it."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"Fashion-MNIST is missing from {FASHION_DIR}: run `make data` as root "
                    "(apt-get install dataset-fashion-mnist)", pytrace=False)
    return example_data("fashion-lenet300")


def test_digits_split_is_stratified_and_seeded():
    a, b = example_data("digits-mlp", 0), example_data("digits-cnn", 0)
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert (a.x_test == b.x_test).all()
    assert set(a.y_test.tolist()) == set(range(10))


def test_fashion_loads(fashion):
    data = fashion
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert 0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1
    assert sorted(set(data.y_test.tolist())) == list(range(10))


def test_fashion_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(examples, "FASHION_DIR", tmp_path)
    for name in ("fashion-mlp", "fashion-lenet300", "fashion-lenet5"):
        with pytest.raises(ValueError, match=r"^the fashion-\* examples need Fashion-MNIST from "
                                             r"Debian's dataset-fashion-mnist package \(apt-get "
                                             r"install dataset-fashion-mnist, or `make data` as "
                                             r"root\); .* has no data$"):
            example_data(name)


def test_unknown_example():
    with pytest.raises(ValueError, match=r"^unknown example 'cifar'; choose one of digits-mlp, "
                                         r"digits-cnn, fashion-mlp, fashion-lenet300, "
                                         r"fashion-lenet5$"):
        example_data("cifar")


@pytest.mark.parametrize("name, shapes", [
    ("fashion-lenet300", [(300, 784), (100, 300), (10, 100)]),
    ("fashion-lenet5", [(6, 25), (16, 150), (120, 256), (84, 120), (10, 84)]),
])
def test_fashion_examples_construction(name, shapes):
    from darbgen.pruning.methods import prunable_layers
    model = EXAMPLES[name](seed=0)
    assert [layer.weight().shape for layer in prunable_layers(model)] == shapes
    assert model(torch.zeros(3, 784)).shape == (3, 10)
    # seeded: the same seed gives the same weights, another seed others
    again, other = EXAMPLES[name](seed=0), EXAMPLES[name](seed=1)
    first = next(iter(model.state_dict().values()))
    assert torch.equal(first, next(iter(again.state_dict().values())))
    assert not torch.equal(first, next(iter(other.state_dict().values())))


@pytest.fixture
def one_thread():
    """One torch thread: on the shared 2-core machine two ran 3x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["fashion-lenet300", "fashion-lenet5"])
def test_fashion_example_prunes_to_an_integer_network(fashion, one_thread, name):
    """A short run on 1024 training and 300 test images, seed 0: the pruned artifact
    runs as an integer network (golden model) and agrees with the float model."""
    from darbgen.network import plan
    from darbgen.pruning import DARB
    from darbgen.pruning.examples import prune_trained
    from darbgen.pruning.train import Dataset, train
    from darbgen.format import Artifact
    from darbgen.sim.golden import network_ref

    torch.manual_seed(0)
    data = Dataset(fashion.x_train[:1024], fashion.y_train[:1024], fashion.x_test[:300],
                   fashion.y_test[:300])
    model = EXAMPLES[name](seed=0)
    acc = train(model, data, epochs=3, lr=3e-3, batch_size=64, seed=0, progress=False)
    assert acc > 0.5, f"seed 0: dense accuracy {acc}"
    out = prune_trained(model, data, DARB(ratio=4), seed=0, finetune_epochs=1, steps=2,
                        batch_size=64)
    net = plan(Artifact(out["layers"], {}))
    x = data.x_test.double().numpy()
    predicted = net.predict(network_ref(net, net.quantize_input(x)))
    acc_int = float((predicted == data.y_test.numpy()).mean())
    assert abs(acc_int - out["accuracy_quantized"]) < 0.05, (acc_int, out)
    assert out["accuracy_quantized"] > 0.5, out


@pytest.mark.slow
def test_fashion_mlp_darb(fashion):
    from darbgen.pruning import DARB
    from darbgen.pruning.examples import run_example
    result = run_example("fashion-mlp", DARB(ratio=16), progress=False)
    assert result.accuracy_dense > 0.85 and result.accuracy_quantized > 0.8
