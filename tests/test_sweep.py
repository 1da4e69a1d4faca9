"""``darbgen sweep``: a real LocalCluster of 2 worker processes on tiny specs.

Caching (a second run runs nothing), a worker killed mid-task, a failing task and
spec errors. One cluster serves the module (starting one costs seconds).
"""

import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from darbgen.cli import main
from darbgen.sim.runner import simulator_available
from darbgen.sweep import load_spec, parse_spec, run_sweep, run_task

SEED = 20261207

# The workers cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.CRITICAL)
    with Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 16 × 32 float matrix (seeded) as a .npy source."""
    folder = tmp_path_factory.mktemp("source")
    w = np.random.default_rng(SEED).standard_normal((16, 32)).astype(np.float32)
    np.save(folder / "w.npy", w)
    return folder / "w.npy"


def write_spec(path: Path, source: Path, text: str):
    path.write_text(f'source = "{source}"\n' + text)
    return load_spec(path)


def test_grid_then_all_cache_hits(client, source, tmp_path):
    """3 methods × 2 ratios, prune only: N:M takes no ratio, so 5 points; a second run
    runs no task and reports the same figures."""
    spec = write_spec(tmp_path / "s.toml", source,
                      'steps = ["prune"]\nmethod = ["darb", "irregular", "nm"]\n'
                      'ratio = [4, 8]\nblock_sizes = [4]\n')
    out = tmp_path / "out"
    first = run_sweep(spec, out, client=client, progress=False)
    assert (first["points"], first["tasks"], first["fresh"], first["cached"],
            first["failed"]) == (5, 5, 5, 0, 0)
    rows = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["ratio"]) for r in rows] == [
        ("darb", 4), ("darb", 8), ("irregular", 4), ("irregular", 8), ("nm", None)]
    assert all(r["error"] is None and r["prune_cached"] is False for r in rows)
    # darb keeps one weight per block of 4 at most: the ratio caps at 4.
    assert [r["pruning_ratio"] for r in rows] == pytest.approx([4, 4, 4, 8, 2])
    for r in rows:
        record = json.loads((out / r["prune_key"] / "result.json").read_text())
        assert record["figures"]["nnz"] == r["nnz"]
        assert (out / r["prune_key"] / "model.darb").is_file()

    second = run_sweep(spec, out, client=client, progress=False)
    assert (second["fresh"], second["cached"], second["failed"]) == (0, 5, 0)
    again = json.loads((out / "results.json").read_text())
    assert all(r["prune_cached"] is True for r in again)
    strip = lambda rs: [{k: v for k, v in r.items() if not k.endswith("_cached")} for r in rs]
    assert strip(again) == strip(rows)
    csv = (out / "results.csv").read_text().splitlines()
    assert len(csv) == 6 and csv[0].startswith("method,ratio,block_sizes,lanes,board,")


def test_only_a_result_record_makes_a_task_finished(client, source, tmp_path):
    """A task folder without result.json (a sweep killed while writing) or with a record
    naming a file outside its folder is not finished: the task runs again."""
    spec = write_spec(tmp_path / "s.toml", source,
                      'steps = ["prune"]\nmethod = ["irregular"]\nratio = [2, 4, 8]\n')
    out = tmp_path / "out"
    run_sweep(spec, out, client=client, progress=False)
    a, b, c = json.loads((out / "results.json").read_text())
    (out / a["prune_key"] / "result.json").unlink()
    record = json.loads((out / b["prune_key"] / "result.json").read_text())
    record["files"] = ["../" + c["prune_key"] + "/model.darb"]
    (out / b["prune_key"] / "result.json").write_text(json.dumps(record))
    again = run_sweep(spec, out, client=client, progress=False)
    assert (again["fresh"], again["cached"]) == (2, 1)
    rows = json.loads((out / "results.json").read_text())
    assert [r["prune_cached"] for r in rows] == [False, False, True]
    assert [r["nnz"] for r in rows] == [a["nnz"], b["nnz"], c["nnz"]]


def test_failing_task_keeps_its_error(client, source, tmp_path):
    """A ratio below 1 fails its prune task; the sweep goes on and that row keeps the
    error (failures are not cached)."""
    spec = write_spec(tmp_path / "s.toml", source,
                      'steps = ["prune"]\nmethod = ["irregular"]\nratio = [0.5, 2]\n'
                      "retries = 0\n")
    summary = run_sweep(spec, tmp_path / "out", client=client, progress=False)
    assert (summary["points"], summary["fresh"], summary["failed"]) == (2, 1, 1)
    bad, good = json.loads((tmp_path / "out" / "results.json").read_text())
    assert bad["error"] == ("prune: ValueError: pruning ratio must be at least 1 "
                            "(dense size / kept weights), not 0.5")
    assert "nnz" not in bad and not (tmp_path / "out" / bad["prune_key"]).exists()
    assert good["error"] is None and good["pruning_ratio"] == pytest.approx(2)


def _task_killed_once(task, source, *, marker):
    """:func:`run_task`, but the first attempt at ratio 8 writes its worker's pid to
    ``marker`` and sleeps until the test kills that worker process."""
    marker = Path(marker)
    if task["options"].get("ratio") == 8 and not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(120)
        raise AssertionError("the worker was not killed")
    return run_task(task, source)


def test_worker_killed_mid_task(client, source, tmp_path):
    spec = write_spec(tmp_path / "s.toml", source,
                      'steps = ["prune"]\nmethod = ["irregular"]\nratio = [4, 8]\n'
                      "retries = 0\n")
    # Retries are off: only Dask's rescheduling after a worker's death can finish the task.
    marker = tmp_path / "pid"
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text():
                pid = int(marker.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        summary = run_sweep(spec, tmp_path / "out", client=client, progress=False,
                            task=functools.partial(_task_killed_once, marker=str(marker)))
    finally:
        thread.join()
    assert len(killed) == 1
    assert killed[0] not in client.run(os.getpid).values()
    assert (summary["points"], summary["fresh"], summary["failed"]) == (2, 2, 0)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["pruning_ratio"] for r in rows] == pytest.approx([4, 8])
    assert all(r["error"] is None for r in rows)


@pytest.mark.skipif(not simulator_available("verilator"), reason="Verilator not installed")
def test_prune_and_simulate(client, source, tmp_path):
    """Two points through Verilator: exact against the golden model (a wrong result fails
    the task), cycles and utilization in the rows, and a plot of MACs per cycle."""
    spec = write_spec(tmp_path / "s.toml", source,
                      'steps = ["prune", "simulate"]\nmethod = ["darb"]\nratio = [4]\n'
                      'lanes = [2, 4]\n[simulate]\ninputs = 3\n')
    summary = run_sweep(spec, tmp_path / "out", client=client, progress=False)
    # One prune task shared by both points.
    assert (summary["points"], summary["tasks"], summary["failed"]) == (2, 3, 0)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    assert rows[0]["prune_key"] == rows[1]["prune_key"]
    for row, lanes in zip(rows, (2, 4)):
        assert row["lanes"] == lanes and row["exact"] is True and row["vectors"] == 3
        assert row["cycles"] > 0 and 0 < row["utilization"] <= 1
        y = np.load(tmp_path / "out" / row["simulate_key"] / "y.npy")
        assert y.shape == (3, 16)
    assert rows[1]["cycles"] < rows[0]["cycles"]
    assert summary["plots"] == []            # a file source has no accuracy to plot


def test_eval_on_an_artifact_source(client, tmp_path):
    """A .darb source skips prune: each point's eval (the integer model on the digits test
    split) starts from the artifact as it is."""
    from dataclasses import replace

    from darbgen.format import Artifact

    w = np.random.default_rng(SEED).standard_normal((10, 64)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    assert main(["prune", str(tmp_path / "w.npy"), "--method", "irregular", "--ratio", "2",
                 "-o", str(tmp_path / "m.darb")]) == 0
    # A file source is not calibrated; eval needs the input step (the digits' 1/16).
    art = Artifact.load(tmp_path / "m.darb")
    Artifact([replace(art.layers[0], input_scale=1 / 16)], art.provenance).save(
        tmp_path / "m.darb")
    spec = write_spec(tmp_path / "s.toml", tmp_path / "m.darb",
                      'steps = ["eval"]\n[eval]\ndataset = "digits"\nlimit = 50\n')
    summary = run_sweep(spec, tmp_path / "out", client=client, progress=False)
    assert (summary["points"], summary["fresh"], summary["failed"]) == (1, 1, 0)
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())
    assert row["samples"] == 50 and 0 <= row["accuracy_int"] <= 1
    assert row["pruning_ratio"] == pytest.approx(2) and row["accuracy_hw"] is None
    assert [Path(p).name for p in summary["plots"]] == ["pareto-accuracy-ratio.png"]
    assert (tmp_path / "out" / "pareto-accuracy-ratio.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_prune_simulate_build(client, source, tmp_path):
    """One point through a real iCEBreaker build: fmax, LUTs and useful MAC/s in the row,
    and the plots that need a build."""
    spec = write_spec(tmp_path / "s.toml", source,
                      'steps = ["prune", "simulate", "build"]\nmethod = ["darb"]\n'
                      'ratio = [4]\nlanes = [2]\nboard = ["icebreaker"]\n')
    summary = run_sweep(spec, tmp_path / "out", client=client, progress=False)
    assert (summary["points"], summary["tasks"], summary["failed"]) == (1, 3, 0), summary
    (row,) = json.loads((tmp_path / "out" / "results.json").read_text())
    assert row["fmax_mhz"] > 0 and row["luts"] > 0 and row["build_seconds"] > 0
    # A build that misses the board clock (this one lands near 30 MHz) keeps its figures
    # but has no MAC/s: the bitstream would not run reliably at the clock.
    assert row["timing_met"] == (row["fmax_mhz"] >= row["clock_mhz"])
    if row["timing_met"]:
        assert row["useful_macs_per_s"] == pytest.approx(
            row["useful_macs_per_cycle"] * row["clock_mhz"] * 1e6)
    else:
        assert "useful_macs_per_s" not in row
    report = json.loads((tmp_path / "out" / row["build_key"] / "build" / "report.json")
                        .read_text())
    assert report["fmax_mhz"] == row["fmax_mhz"] and report["lanes"] == 2
    assert {Path(p).name for p in summary["plots"]} == {"fmax-lanes.png"} | (
        {"pareto-macs-luts.png"} if row["timing_met"] else set())


def test_sweep_cli(source, tmp_path, capsys):
    """The CLI on its own LocalCluster: one line of JSON last; exit 3 when a task failed."""
    spec = tmp_path / "s.toml"
    spec.write_text(f'source = "{source}"\nsteps = ["prune"]\nmethod = ["irregular"]\n'
                    "ratio = [2, 0.5]\nretries = 0\n")
    assert main(["sweep", str(spec), "-o", str(tmp_path / "out"), "--workers", "1"]) == 3
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["points"], summary["fresh"], summary["failed"]) == (2, 1, 1)



def test_sweep_cli_on_a_running_scheduler(client, source, tmp_path, capsys):
    """--scheduler ADDRESS: the tasks run on that cluster's workers."""
    spec = tmp_path / "s.toml"
    spec.write_text(f'source = "{source}"\nsteps = ["prune"]\nmethod = ["irregular"]\n'
                    "ratio = [2, 3]\n")
    address = client.scheduler.address
    assert main(["sweep", str(spec), "-o", str(tmp_path / "out"), "--scheduler", address]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["points"], summary["fresh"], summary["failed"]) == (2, 2, 0)


BAD_SPECS = [
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\nratio = ["x"]\n',
     r"^sweep spec: 'ratio' must be a non-empty list of numbers, not 'x'$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\nratio = 4\n',
     r"^sweep spec: 'ratio' must be a non-empty list of numbers, not 4$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darbb"]\n',
     r"^sweep spec: 'method' must be a non-empty list of methods from darb, .*, not 'darbb'$"),
    ('source = "digits-mlp"\nsteps = ["prune", "simulate"]\nmethod = ["darb"]\n'
     "lanes = [0]\n",
     r"^sweep spec: 'lanes' must be a non-empty list of positive integers, not 0$"),
    ('source = "digits-mlp"\nsteps = ["prune", "build"]\nmethod = ["darb"]\n'
     'board = ["de0"]\n',
     r"^sweep spec: 'board' must be a non-empty list of boards from .*, not 'de0'$"),
    ('source = "digits-mlp"\nsteps = ["prune", "build"]\nmethod = ["darb"]\n',
     r"^sweep spec: 'board' is required with the 'build' step$"),
    ('source = "digits-mlp"\nsteps = ["prune", "deploy"]\nmethod = ["darb"]\n',
     r"^sweep spec: 'steps' must be a non-empty list of steps from prune, eval, simulate, "
     r"build, not 'deploy'$"),
    ('source = "digits-mlp"\nsteps = []\n',
     r"^sweep spec: 'steps' must be a non-empty list of .*, not \[\]$"),
    ('source = "digits-mlp"\nsteps = ["simulate"]\n',
     r"^sweep spec: 'steps' must include 'prune' unless the source is a \.darb artifact"),
    ('source = "digits-mlp"\nsteps = ["prune"]\n',
     r"^sweep spec: 'method' is required with the 'prune' step$"),
    ('source = "nothing.npy"\nsteps = ["prune"]\nmethod = ["darb"]\n',
     r"^sweep spec: 'source' 'nothing.npy' is neither a built-in example \(digits-mlp.*\) "
     r"nor a file$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\nratios = [4]\n',
     r"^sweep spec: unknown field 'ratios'; the fields are source, steps, retries, method, "),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\n[prune]\nweight_bits = "8"\n',
     r"^sweep spec: 'prune.weight_bits' must be an integer, not '8'$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\n[simulate]\nlanes = 4\n',
     r"^sweep spec: unknown option 'lanes' in \[simulate\]; the options are layer, inputs, "),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\nratio = [' +
     ", ".join(map(str, range(1, 101))) + "]\nlanes = [" + ", ".join(map(str, range(1, 101)))
     + ']\nblock_sizes = [1, 2]\n',
     r"^sweep spec: the grid has 20000 points, more than 10000$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\nretries = -1\n',
     r"^sweep spec: 'retries' must be a non-negative integer, not -1$"),
    ('source = "digits-mlp"\nsteps = "prune"\n',
     r"^sweep spec: 'steps' must be a non-empty list of .*, not 'prune'$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\n[simulate]\ninputs = 0\n',
     r"^sweep spec: 'simulate.inputs' must be a positive integer, not 0$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\nprune = 3\n',
     r"^sweep spec: \[prune\] must be a table, not 3$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\n[eval]\non = "fpga"\n',
     r"^sweep spec: 'eval.on' must be one of golden, verilator, not 'fpga'$"),
    ('source = "digits-mlp"\nsteps = ["prune"]\nmethod = ["darb"]\n[simulate]\n'
     'simulator = "vcs"\n',
     r"^sweep spec: 'simulate.simulator' must be one of verilator, icarus, not 'vcs'$"),
    ("source = [1]\n", r"^sweep spec: 'source' must be a built-in example \(digits-mlp.*\) "
                       r"or a file, not \[1\]$"),
]


@pytest.mark.parametrize("text, message", BAD_SPECS)
def test_bad_spec_messages(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_spec(path)


def test_spec_file_errors(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("source = \n")
    with pytest.raises(ValueError, match=r"^sweep spec: .*bad\.toml: not valid TOML \("):
        load_spec(path)
    with pytest.raises(ValueError, match=r"^sweep spec: .*none\.toml: no such file$"):
        load_spec(tmp_path / "none.toml")
    # Special files are refused without being read (issue 16): a FIFO would hang.
    with pytest.raises(ValueError, match=r"^sweep spec: /dev/zero: is a character device, "
                                         r"not a sweep spec$"):
        load_spec("/dev/zero")
    os.mkfifo(tmp_path / "w.npy")
    fifo_spec = tmp_path / "fifo.toml"
    fifo_spec.write_text('source = "w.npy"\nsteps = ["prune"]\nmethod = ["darb"]\n')
    with pytest.raises(ValueError, match=r"^sweep spec: 'source': .*w\.npy: is a FIFO, not a "
                                         r"sweep source$"):
        load_spec(fifo_spec)
    # The CLI prints the same message on one line and exits 1, before starting a cluster.
    assert main(["sweep", str(path), "-o", str(tmp_path / "out")]) == 1
    assert "darbgen sweep: error: sweep spec: " in capsys.readouterr().err
    assert main(["sweep", str(path), "-o", str(tmp_path / "o2"), "--workers", "0"]) == 1
    assert "--workers must be a positive integer, not 0" in capsys.readouterr().err
    assert main(["sweep", str(path), "-o", str(tmp_path / "o2"), "--workers", "2",
                 "--scheduler", "tcp://127.0.0.1:1"]) == 1
    assert "--workers sizes a local cluster: drop it with --scheduler" in \
        capsys.readouterr().err


def test_example_spec_parses():
    """The documented example spec stays valid: 4 ratios × 3 lanes."""
    spec = load_spec(Path(__file__).parent.parent / "bench" / "sweeps" / "digits-mlp.toml")
    from darbgen.sweep import points
    assert len(points(spec)) == 12 and spec.steps == ("prune", "simulate")
    assert parse_spec({"source": "digits-mlp", "steps": ["prune"], "method": ["nm"]}).grid[
        "ratio"] == (None,)


def test_spec_errors_that_need_a_file(source, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(f'source = "{source}"\nsteps = ["prune", "eval"]\nmethod = ["darb"]\n')
    with pytest.raises(ValueError, match=r"^sweep spec: \[eval\] needs a 'dataset' for "
                                         r"source 'w.npy'$"):
        load_spec(path)
    (tmp_path / "m.darb").write_bytes(b"not checked before a task loads it")
    path.write_text('source = "m.darb"\nsteps = ["simulate"]\nratio = [4]\n')
    with pytest.raises(ValueError, match=r"^sweep spec: 'method', 'ratio' and 'block_sizes' "
                                         r"need the 'prune' step$"):
        load_spec(path)
    path.write_text('source = "m.darb"\nsteps = ["prune"]\nmethod = ["darb"]\n')
    with pytest.raises(ValueError, match=r"^sweep spec: 'steps' must include 'prune' unless "
                                         r"the source is a \.darb artifact, and cannot "
                                         r"include it when it is one$"):
        load_spec(path)
