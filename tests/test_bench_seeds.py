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


def test_structured_bench_arm_without_its_optimizer():
    with pytest.raises(ValueError) as err:
        structured_bench.main(["--arms", "reweighted:sgd:1e-5"])
    assert str(err.value) == "digits-cnn runs BLK-REW with adam, not sgd"


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


def test_fashion_seeds_spread(tmp_path):
    """bench/fashion_seeds.py on two hand-made seeds: per-seed values, paired differences
    and the t-interval, and each seed's other-λ files merged in."""
    import fashion_seeds as fs

    def structured(seed, shift, rows):
        return {"seed": seed, "accuracy_dense": 0.86 + shift, "word_length": [],
                "blkrew": [{"kind": k, "optimizer": o, "lambda": lam, "ratio": 8,
                            "accuracy": 0.70 + shift + 0.01 * i}
                           for i, (k, o, lam) in enumerate(rows)],
                "structured": [{"granularity": "kernel", "setting": "keep=0.3",
                                "selector": sel, "conv_pruned": 0.7, "accuracy": acc + shift,
                                "layers": [{"accuracy_pruned": acc - 0.1}]}
                               for sel, acc in (("particle", 0.83), ("magnitude", 0.82))]}
    name = "structured-bench-fashion-lenet5"
    (tmp_path / f"{name}.json").write_text(json.dumps(structured(0, 0.0, fs.ARMS[2:])))
    small = structured(0, 0.0, fs.ARMS[:2])
    (tmp_path / f"{name}-small-lambda.json").write_text(json.dumps(small))
    (tmp_path / f"{name}-seed1.json").write_text(json.dumps(structured(1, 0.02, fs.ARMS)))
    grid = structured(1, 0.0, [("reweighted", "adam", 1e-4)])
    (tmp_path / f"{name}-grid-seed1.json").write_text(json.dumps(grid))
    runs = fs.load_seeds(name, tmp_path, extra=("small-lambda", "grid"))
    assert list(runs) == [0, 1] and [len(r["blkrew"]) for r in runs.values()] == [4, 5]
    b = fs.blkrew(runs)
    # seed 0: reweighted arms 0.70, 0.71 (small-lambda file); group lasso 0.70, 0.71
    assert b["arms"]["reweighted sgd λ=1e-05"]["per_seed"] == {0: 0.71, 1: pytest.approx(0.73)}
    d = b["differences"]["reweighted - group lasso, adam"]
    assert d["per_seed"] == {0: 0.0, 1: pytest.approx(-0.02)}
    assert d["mean"] == pytest.approx(-0.01) and d["half"] == pytest.approx(12.706 * 0.01, 1e-4)
    a = fs.anwar(runs)
    assert a["rows"]["kernel keep=0.3 particle"]["loss_points"]["per_seed"] == \
        {0: pytest.approx(3.0), 1: pytest.approx(3.0)}
    assert a["particle_minus_magnitude"]["kernel keep=0.3"]["accuracy"]["mean"] == \
        pytest.approx(0.01)
    log = [{"iteration": i, "remaining": 0.8 ** i, "accuracy": 0.85 - 0.01 * i,
            "pqi_0.5_1": p} for i, p in enumerate((0.16, 0.05, 0.03, 0.2))]
    f = fs.sap_figures(log)
    assert (f["pqi_min"], f["pqi_min_iteration"], f["pqi_end"]) == (0.03, 2, 0.2)
    assert f["rise"] == pytest.approx(0.2 / 0.03) and f["loss_points_end"] == pytest.approx(3)
