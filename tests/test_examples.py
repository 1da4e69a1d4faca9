"""Built-in examples and their data."""

import pytest

from darbgen.pruning import examples
from darbgen.pruning.examples import FASHION_DIR, example_data

HAVE_FASHION = (FASHION_DIR / "train-images-idx3-ubyte.gz").exists()


def test_digits_split_is_stratified_and_seeded():
    a, b = example_data("digits-mlp", 0), example_data("digits-cnn", 0)
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    assert (a.x_test == b.x_test).all()
    assert set(a.y_test.tolist()) == set(range(10))


@pytest.mark.skipif(not HAVE_FASHION, reason="dataset-fashion-mnist is not installed")
def test_fashion_loads():
    data = example_data("fashion-mlp")
    assert data.x_train.shape == (60000, 784) and data.x_test.shape == (10000, 784)
    assert 0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1
    assert sorted(set(data.y_test.tolist())) == list(range(10))


def test_fashion_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(examples, "FASHION_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"^fashion-mlp needs Fashion-MNIST from Debian's "
                                         r"dataset-fashion-mnist package \(apt-get install "
                                         r"dataset-fashion-mnist\)"):
        example_data("fashion-mlp")


def test_unknown_example():
    with pytest.raises(ValueError, match=r"^unknown example 'cifar'; choose one of digits-mlp, "
                                         r"digits-cnn, fashion-mlp$"):
        example_data("cifar")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_FASHION, reason="dataset-fashion-mnist is not installed")
def test_fashion_mlp_darb():
    from darbgen.pruning import DARB
    from darbgen.pruning.examples import run_example
    result = run_example("fashion-mlp", DARB(ratio=16), progress=False)
    assert result.accuracy_dense > 0.85 and result.accuracy_quantized > 0.8
