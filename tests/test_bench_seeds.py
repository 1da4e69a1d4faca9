"""bench/structured_bench.py and bench/sap_bench.py take ``--seed``: on digits with the
schedules cut to an epoch, the seed reaches the model, the data order and the output names
(seed 0 keeps the unsuffixed names), and the same seed gives the same numbers."""

import json
import sys
from pathlib import Path

import pytest
import torch

_BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(_BENCH))
import sap_bench  # noqa: E402  (bench/ is not a package)
import structured_bench  # noqa: E402

from darbgen.pruning.examples import digits_mlp, example_data  # noqa: E402
from darbgen.pruning.sap import sap  # noqa: E402
from darbgen.pruning.train import Dataset  # noqa: E402


def small_data(name, seed):
    """The example's own split, cut to 400 training and 200 test images (seconds)."""
    d = example_data(name, seed)
    return Dataset(d.x_train[:400], d.y_train[:400], d.x_test[:200], d.y_test[:200])


@pytest.fixture(autouse=True)
def _threads():
    # the benches set torch's thread count for their own process
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_structured(monkeypatch, tmp_path):
    setup = {**structured_bench.SETUPS["digits-cnn"], "epochs": 1, "ratios": (8,),
             "reg_epochs": 1, "retrain_epochs": 1, "optimizers": {"adam": 1e-3, "sgd": 0.02}}
    monkeypatch.setitem(structured_bench.SETUPS, "digits-cnn", setup)
    monkeypatch.setattr(structured_bench, "DOCS", tmp_path)
    monkeypatch.setattr(structured_bench, "example_data", small_data)
    return tmp_path


def test_structured_bench_seed(tiny_structured):
    # an SGD arm only: no conv2 goes to Verilator, which other tests cover
    argv = ["--blkrew-only", "--arms", "group_lasso:sgd:1e-4"]
    runs = {}
    for seed, name in ((0, "structured-bench.json"), (1, "structured-bench-seed1.json")):
        assert structured_bench.main(argv + ["--seed", str(seed)]) == 0
        out = json.loads((tiny_structured / name).read_text())
        assert out["seed"] == seed
        assert out["setup"]["arms"] == [["group_lasso", "sgd", 1e-4]]
        assert [(r["kind"], r["optimizer"], r["lambda"]) for r in out["blkrew"]] == \
            [("group_lasso", "sgd", 1e-4)]
        runs[seed] = out["accuracy_dense"], out["blkrew"][0]["accuracy"]
    assert runs[0] != runs[1], "another seed must give other numbers"


@pytest.mark.parametrize("arm, message", [
    ("lasso:sgd:1e-4", "a BLK-REW arm is reweighted|group_lasso:adam|sgd:LAMBDA, not "
                       "'lasso:sgd:1e-4'"),
    ("reweighted:sgd", "a BLK-REW arm is reweighted|group_lasso:adam|sgd:LAMBDA, not "
                       "'reweighted:sgd'"),
    ("reweighted:sgd:big", "the λ of arm 'reweighted:sgd:big' is not a number"),
])
def test_structured_bench_bad_arm(arm, message):
    with pytest.raises(ValueError) as err:
        structured_bench.main(["--arms", arm])
    assert str(err.value) == message


def test_sap_bench_seed(monkeypatch, tmp_path):
    setup = {**sap_bench.SETUPS["digits-mlp"], "iterations": 1, "epochs": 1,
             "runs": [("SAP(0.5,1)", sap(0.5, 1))], "darb_from": "SAP(0.5,1)"}
    monkeypatch.setitem(sap_bench.SETUPS, "digits-mlp", setup)
    monkeypatch.setattr(sap_bench, "DOCS", tmp_path)
    monkeypatch.setattr(sap_bench, "example_data", small_data)
    seen = []

    def recording(model_fn, data, criterion, **kw):
        # the real driver; records the seed and initial weights it was given
        seen.append((kw["seed"], model_fn()[0].weight.detach().clone()))
        return iterative_prune(model_fn, data, criterion, **kw)

    iterative_prune = sap_bench.iterative_prune
    monkeypatch.setattr(sap_bench, "iterative_prune", recording)
    assert sap_bench.main(["--seed", "2"]) == 0
    out = json.loads((tmp_path / "sap-bench-seed2.json").read_text())
    assert out["seed"] == 2 and out["sap_darb"]["engine_fc1"]["exact"]
    assert (tmp_path / "sap-seed2.png").exists()
    (seed, weight), = seen
    assert seed == 2
    assert torch.equal(weight, digits_mlp(hidden=(128, 256), seed=2)[0].weight)
    assert not torch.equal(weight, digits_mlp(hidden=(128, 256), seed=0)[0].weight)
