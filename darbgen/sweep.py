"""Design-space sweeps on Dask: ``darbgen sweep SPEC.toml -o DIR``.

A spec (TOML) names a source and lists of values; their product is the grid of
points, and each point runs the steps the spec asks for. Each step of a point is
one Dask task keyed by the content hash of its inputs (the source's bytes or the
built-in example's name, the step's options, the upstream task's key and darbgen's
version), so points that share a pruned artifact share its ``prune`` task, and a
task whose result sits under ``DIR/<hash>/`` is never run again.

Tasks are pure functions of their key: a worker gets the source's bytes (or the
artifact's) with the task, works in a temporary directory and returns its figures
and output files; the client writes them under ``DIR/<hash>/``, ``result.json``
last, each file atomically. A worker needs darbgen (the same version) and the
tools of its steps, but no shared file system. Scheduling, retries, rescheduling
after a worker dies and the dashboard are Dask's.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import itertools
import json
import logging
import math
import os
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .files import atomic_write, read_input

__all__ = ["GRID_FIELDS", "STEPS", "MAX_POINTS", "Spec", "load_spec", "parse_spec", "points",
           "run_task", "run_sweep", "write_results", "plot_results"]

#: The lists a spec may give; their product is the grid.
GRID_FIELDS = ("method", "ratio", "block_sizes", "lanes", "board")
#: The steps a point may run, in the order they run.
STEPS = ("prune", "eval", "simulate", "build")
#: A bound on the grid, checked before it is expanded (a spec is a user file).
MAX_POINTS = 10_000

# Fixed options per step ([prune], [eval], ... tables): name -> type check.
_INT, _NUMBER, _STR, _PAIR = "an integer", "a number", "a string", "a list of two numbers"
_OPTIONS = {
    "prune": {"weight_bits": _INT, "seed": _INT, "keep": _INT, "iterations": _INT,
              "stride": _INT, "eta_r": _NUMBER, "gamma": _NUMBER, "beta": _NUMBER,
              "lam": _NUMBER, "keep_fraction": _NUMBER, "pq": _PAIR, "scope": _STR,
              "penalty": _STR, "granularity": _STR, "selector": _STR},
    "eval": {"dataset": _STR, "on": _STR, "limit": _INT},
    "simulate": {"layer": _STR, "inputs": _INT, "seed": _INT, "simulator": _STR},
    "build": {"layer": _STR},
}
_TOP_FIELDS = ("source", "steps", "retries") + GRID_FIELDS + tuple(_OPTIONS)
# The data set each built-in example is evaluated on.
_EXAMPLE_DATASETS = {"digits-mlp": "digits", "digits-cnn": "digits"}
_ARTIFACT = "model.darb"
_RESULT = "result.json"


def _fail(message: str):
    raise ValueError(f"sweep spec: {message}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(name: str, v, kind: str):
    ok = {_INT: isinstance(v, int) and not isinstance(v, bool), _NUMBER: _is_number(v),
          _STR: isinstance(v, str),
          _PAIR: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v))}[kind]
    if not ok:
        _fail(f"{name!r} must be {kind}, not {v!r}")
    return tuple(v) if kind == _PAIR else v


def _list_of(name: str, values, check, what: str) -> tuple:
    if not isinstance(values, list) or not values or not all(map(check, values)):
        bad = values if not isinstance(values, list) or not values else \
            next(v for v in values if not check(v))
        _fail(f"{name!r} must be a non-empty list of {what}, not {bad!r}")
    return tuple(values)


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _block_value(v) -> bool:
    return _positive_int(v) or (isinstance(v, list) and bool(v) and all(map(_positive_int, v)))


@dataclass(frozen=True)
class Spec:
    """A parsed, validated sweep spec.

    Members
    -------
    source : str
        A built-in example's name, or the source file's name (no directory).
    source_bytes : bytes or None
        The source file's content, shipped with each ``prune`` task (``None`` for an
        example).
    steps : tuple of str
        In :data:`STEPS` order.
    grid : dict
        Field of :data:`GRID_FIELDS` → tuple of values (``(None,)`` when not given).
    options : dict
        Step → its fixed options.
    retries : int
        Dask retries of a task that raised.
    """

    source: str
    source_bytes: bytes | None
    steps: tuple
    grid: dict
    options: dict = field(default_factory=dict)
    retries: int = 1

    @property
    def source_digest(self) -> str:
        if self.source_bytes is None:
            return f"example:{self.source}"
        return "sha256:" + hashlib.sha256(self.source_bytes).hexdigest()


def load_spec(path) -> Spec:
    """Read and validate the sweep spec at ``path`` (a source path is relative to it).

    Raises
    ------
    ValueError
        Not TOML, or a field is missing or wrong; the message names the field.
    """
    path = Path(path)
    try:
        text = read_input(path, max_bytes=1 << 20, what="a sweep spec").decode()
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        _fail(f"{path}: not valid TOML ({e})")
    except ValueError as e:                    # not a regular file, or too large
        _fail(str(e))
    return parse_spec(data, path.parent)


def parse_spec(data: dict, base_dir=".") -> Spec:
    """Validate a spec's parsed TOML; see :func:`load_spec`."""
    from .boards import BOARDS
    from .cli import METHOD_NAMES
    from .pruning.examples import EXAMPLES

    unknown = sorted(set(data) - set(_TOP_FIELDS))
    if unknown:
        _fail(f"unknown field {unknown[0]!r}; the fields are {', '.join(_TOP_FIELDS)}")
    source = data.get("source")
    if not isinstance(source, str) or not source:
        _fail(f"'source' must be a built-in example ({', '.join(EXAMPLES)}) or a file, "
              f"not {source!r}")
    steps = data.get("steps")
    _list_of("steps", steps, lambda s: s in STEPS, f"steps from {', '.join(STEPS)}")
    if len(set(steps)) != len(steps):
        _fail(f"'steps' lists a step twice: {steps!r}")
    steps = tuple(s for s in STEPS if s in steps)

    source_bytes = None
    if source not in EXAMPLES:
        file = Path(base_dir) / source
        if not file.exists():
            _fail(f"'source' {source!r} is neither a built-in example ({', '.join(EXAMPLES)}) "
                  f"nor a file")
        try:
            source_bytes = read_input(file, what="a sweep source")
        except ValueError as e:                # not a regular file, or too large
            _fail(f"'source': {e}")
        source = file.name
    is_artifact = source.endswith(".darb")
    if ("prune" in steps) == is_artifact:
        _fail("'steps' must include 'prune' unless the source is a .darb artifact, and "
              "cannot include it when it is one")

    checks = {
        "method": (lambda v: v in METHOD_NAMES, f"methods from {', '.join(METHOD_NAMES)}"),
        "ratio": (lambda v: _is_number(v), "numbers"),
        "block_sizes": (_block_value, "positive integers or lists of them"),
        "lanes": (_positive_int, "positive integers"),
        "board": (lambda v: v in BOARDS, f"boards from {', '.join(BOARDS)}"),
    }
    grid = {}
    for name in GRID_FIELDS:
        grid[name] = _list_of(name, data[name], *checks[name]) if name in data else (None,)
        grid[name] = tuple(tuple(v) if isinstance(v, list) else v for v in grid[name])
    if "prune" in steps and grid["method"] == (None,):
        _fail("'method' is required with the 'prune' step")
    if is_artifact and any(grid[f] != (None,) for f in ("method", "ratio", "block_sizes")):
        _fail("'method', 'ratio' and 'block_sizes' need the 'prune' step")
    if "build" in steps and grid["board"] == (None,):
        _fail("'board' is required with the 'build' step")
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_POINTS:
        _fail(f"the grid has {size} points, more than {MAX_POINTS}")

    options = {}
    for step, allowed in _OPTIONS.items():
        table = data.get(step, {})
        if not isinstance(table, dict):
            _fail(f"[{step}] must be a table, not {table!r}")
        for key, value in table.items():
            if key not in allowed:
                _fail(f"unknown option {key!r} in [{step}]; the options are "
                      f"{', '.join(allowed)}")
            _check(f"{step}.{key}", value, allowed[key])
        options[step] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in table.items()}
    for step, name, choices in (("eval", "on", ("golden", "verilator")),
                                ("simulate", "simulator", ("verilator", "icarus"))):
        if options[step].get(name, choices[0]) not in choices:
            _fail(f"'{step}.{name}' must be one of {', '.join(choices)}, not "
                  f"{options[step][name]!r}")
    if options["simulate"].get("inputs", 1) < 1:
        _fail(f"'simulate.inputs' must be a positive integer, not {options['simulate']['inputs']}")
    if "eval" in steps and "dataset" not in options["eval"] and source not in _EXAMPLE_DATASETS:
        _fail(f"[eval] needs a 'dataset' for source {source!r}")
    retries = data.get("retries", 1)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        _fail(f"'retries' must be a non-negative integer, not {retries!r}")
    return Spec(source, source_bytes, steps, grid, options, retries)


# -- the grid and its tasks ---------------------------------------------------------

def points(spec: Spec) -> list[dict]:
    """The grid's distinct points: each a dict of :data:`GRID_FIELDS`, with ``None``
    where a field does not apply (a ratio for N:M, lanes without a step that uses them)."""
    from .cli import method_takes

    uses_lanes = {"simulate", "build"} & set(spec.steps) or \
        ("eval" in spec.steps and spec.options["eval"].get("on") == "verilator")
    seen, out = set(), []
    for values in itertools.product(*(spec.grid[f] for f in GRID_FIELDS)):
        point = dict(zip(GRID_FIELDS, values))
        if point["method"] is not None:
            takes = method_takes(point["method"])
            if "ratio" not in takes:
                point["ratio"] = None
            if not takes & {"block_size", "block_sizes"}:
                point["block_sizes"] = None
        if not uses_lanes:
            point["lanes"] = None
        if "build" not in spec.steps:
            point["board"] = None
        key = json.dumps(point, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(point)
    return out


def _digest(inputs: dict) -> str:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _tasks(spec: Spec, point: dict) -> list[dict]:
    """The tasks of one point in order: each ``{"step", "key", "options", "after"}``,
    ``after`` the key of the task whose artifact it takes (``None`` for the first)."""
    out, upstream = [], None
    for step in spec.steps:
        opts = dict(spec.options[step])
        if step == "prune":
            opts.update({f: point[f] for f in ("method", "ratio", "block_sizes")})
        if step in ("simulate", "build") or (step == "eval" and opts.get("on") == "verilator"):
            opts["lanes"] = point["lanes"]
        if step == "build":
            opts["board"] = point["board"]
        inputs = {"step": step, "options": opts, "after": upstream, "darbgen": __version__}
        if upstream is None:
            inputs["source"] = spec.source_digest
        key = _digest(inputs)
        out.append({"step": step, "key": key, "options": opts, "after": upstream,
                    "source": spec.source})
        if step == "prune":
            upstream = key
    return out


# -- the steps (run on a worker) ----------------------------------------------------

def _step_prune(task: dict, source: Path | str, work: Path):
    from .cli import build_parser, method_takes, prune_artifact

    opts = dict(task["options"])
    block = opts.pop("block_sizes")
    block = None if block is None else (block if isinstance(block, tuple) else (block,))
    takes = method_takes(opts["method"])
    if "block_sizes" in takes:
        opts["block_sizes"] = block
    elif "block_size" in takes:
        opts["block_size"] = block
    if opts.get("pq") is not None:
        opts["pq"] = tuple(opts["pq"])
    # `prune`'s own defaults, then the task's options: the same semantics and checks as
    # the CLI. (-o is required by the parser; prune_artifact writes nothing.)
    args = build_parser().parse_args(["prune", str(source), "--method", opts["method"],
                                      "-o", "unused"])
    for name, value in opts.items():
        setattr(args, name, value)
    artifact = prune_artifact(args)
    artifact.provenance["source"] = task["source"]
    artifact.save(work / _ARTIFACT)
    kept = sum(layer.nnz for layer in artifact.layers)
    total = sum(layer.rows * layer.input_width for layer in artifact.layers)
    figures = {"nnz": kept, "pruning_ratio": total / kept}
    figures.update({f"accuracy_{k}": v for k, v in
                    artifact.provenance.get("accuracy", {}).items()})
    return figures, [_ARTIFACT]


def _split_seed(artifact) -> int:
    return int(artifact.provenance.get("training", {}).get("split_seed", 0))


def _step_eval(task: dict, artifact_path: Path, work: Path):
    from .cli import evaluate
    from .format import Artifact

    opts = task["options"]
    artifact = Artifact.load(artifact_path)
    dataset = opts.get("dataset") or _EXAMPLE_DATASETS[task["source"]]
    result, cycles = evaluate(artifact, dataset, on=opts.get("on", "golden"),
                              limit=opts.get("limit"), lanes=opts.get("lanes") or 4)
    if task["after"] is not None:           # prune's figure, counted as prune counts it
        result.pop("pruning_ratio")
    result["eval_cycles"] = cycles
    return result, []


def _inputs(task: dict, artifact, layer):
    """The fixed input vectors of a ``simulate`` task: a built-in example's first layer
    gets the test split (as ``eval`` quantizes it); any other layer, seeded random int8."""
    import numpy as np

    opts = task["options"]
    n = opts.get("inputs", 64)
    if task["source"] in _EXAMPLE_DATASETS and layer is artifact.layers[0]:
        from .datasets import test_split
        from .network import plan

        x = plan(artifact).quantize_input(
            test_split(_EXAMPLE_DATASETS[task["source"]], _split_seed(artifact))[0][:n])
        return layer.gather(x) if x.shape[1] == layer.input_width != layer.cols else x
    rng = np.random.default_rng(opts.get("seed", 0))
    return rng.integers(-128, 128, size=(n, layer.cols), dtype=np.int8)


def _step_simulate(task: dict, artifact_path: Path, work: Path):
    import numpy as np

    from .cli import simulate
    from .format import Artifact

    opts = task["options"]
    artifact = Artifact.load(artifact_path)
    layer = artifact.layer(opts["layer"]) if opts.get("layer") else artifact.layers[0]
    x = _inputs(task, artifact, layer)
    y, summary = simulate(layer, x, lanes=opts["lanes"] or 8,
                          simulator=opts.get("simulator", "verilator"))
    atomic_write(work / "y.npy", lambda f: np.save(f, y, allow_pickle=False))
    if not summary["exact"]:
        raise RuntimeError(f"simulate: layer {layer.name!r} differs from the golden model")
    return {"layer": layer.name, "layer_nnz": summary["nnz"], "vectors": len(x),
            "cycles": summary["cycles"], "cycles_per_vector": summary["cycles"] / len(x),
            "utilization": summary["utilization"], "exact": True,
            "simulator": summary["simulator"]}, ["y.npy"]


# The LUT count of a build, by the cell nextpnr reports for each family.
_LUT_CELLS = ("ICESTORM_LC", "TRELLIS_COMB")


def _step_build(task: dict, artifact_path: Path, work: Path):
    from .boards.build import TimingError
    from .cli import build_board
    from .format import Artifact

    opts = task["options"]
    artifact = Artifact.load(artifact_path)
    # A design point is an engine sized to one layer (not the board's processor).
    args = argparse.Namespace(board=opts["board"], lanes=opts["lanes"], network=False,
                              layer=opts.get("layer") or artifact.layers[0].name)
    out = work / "build"
    try:
        report = build_board(args, artifact, out)
        timing_met = True
    except TimingError:              # the report is written; the row says timing failed
        report = json.loads((out / "report.json").read_text())
        timing_met = False
    resources = report["resources"]
    luts = next((resources[c]["used"] for c in _LUT_CELLS if c in resources), None)
    files = sorted(str(p.relative_to(work)) for p in out.iterdir() if p.is_file())
    return {"fmax_mhz": report["fmax_mhz"], "target_mhz": report["target_mhz"],
            "clock_mhz": report["clock_mhz"],
            "timing_met": timing_met, "luts": luts, "resources": resources,
            "build_seconds": report["build_seconds"], "build_lanes": report["lanes"]}, files


_STEP_FUNCTIONS = {"prune": _step_prune, "eval": _step_eval, "simulate": _step_simulate,
                   "build": _step_build}


def run_task(task: dict, source: tuple | dict) -> dict:
    """Run one task in a temporary directory: the function each Dask task calls.

    Parameters
    ----------
    task : dict
        One of the point's tasks (step, key, options).
    source : tuple or dict
        ``(file name, bytes)`` of the source, or the upstream ``prune`` task's result,
        whose files hold the artifact.

    Returns
    -------
    dict
        ``{"key", "step", "options", "figures", "files": {name: bytes}, "seconds"}``.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="darbgen-sweep-") as tmp:
        work = Path(tmp)
        if isinstance(source, dict):
            name, data = _ARTIFACT, source["files"][_ARTIFACT]
        else:
            name, data = source
        path = None
        if data is not None:
            (work / "in").mkdir()
            path = work / "in" / name
            path.write_bytes(data)
        elif task["step"] == "prune":
            path = task["source"]         # a built-in example's name
        figures, files = _STEP_FUNCTIONS[task["step"]](task, path, work)
        blobs = {f: (work / f).read_bytes() for f in files}
    return {"key": task["key"], "step": task["step"], "options": task["options"],
            "figures": figures, "files": blobs,
            "seconds": round(time.monotonic() - started, 3)}


# -- the client side ----------------------------------------------------------------

def _save(out: Path, result: dict) -> None:
    """Write a finished task under ``out/<key>/``: its files, then ``result.json`` (so
    a task is finished exactly when its result record exists)."""
    folder = out / result["key"]
    folder.mkdir(exist_ok=True)
    for name, data in result["files"].items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f, d=data: f.write(d))
    record = {k: v for k, v in result.items() if k != "files"}
    record["files"] = sorted(result["files"])
    record["darbgen"] = __version__
    atomic_write(folder / _RESULT, lambda f: f.write(json.dumps(record, indent=1).encode()))


def _cached(out: Path, key: str) -> dict | None:
    """A finished task's result (its files read back), or ``None``."""
    folder = out / key
    try:
        record = json.loads((folder / _RESULT).read_text())
        names = record["files"]
        # Only files inside the task's folder (the record is a file like any other).
        if any(Path(n).is_absolute() or ".." in Path(n).parts for n in names):
            return None
        record["files"] = {name: (folder / name).read_bytes() for name in names}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def _client(scheduler: str | None, workers: int | None):
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        return Client(scheduler), None
    # A failed task's error goes into its row; the workers need not log its traceback.
    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                           processes=True, silence_logs=logging.CRITICAL)
    return Client(cluster), cluster


def run_sweep(spec: Spec, out, *, client=None, scheduler: str | None = None,
              workers: int | None = None, progress: bool = True, task=run_task) -> dict:
    """Run every point of ``spec`` on Dask and write ``out/results.{csv,json}`` and plots.

    Parameters
    ----------
    spec : Spec
    out : path-like
        The output directory: ``<hash>/`` per task, results and plots.
    client : dask.distributed.Client, optional
        Use this client; else one to ``scheduler``, else a new ``LocalCluster`` of
        ``workers`` single-threaded processes (default: this machine's cores).
    progress : bool
        Show a progress bar (tqdm) over finished tasks.
    task : callable
        The function each Dask task runs (:func:`run_task`; tests wrap it).

    Returns
    -------
    dict
        ``points``, ``tasks``, ``fresh`` (tasks run), ``cached``, ``failed``, the
        result files' paths and the plots' paths.
    """
    from dask.distributed import as_completed
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: is a file, not an output directory")
    out.mkdir(parents=True, exist_ok=True)
    grid = points(spec)
    point_tasks = [_tasks(spec, p) for p in grid]
    unique = {t["key"]: t for tasks in point_tasks for t in tasks}

    results, errors, futures = {}, {}, {}
    for key in unique:
        cached = _cached(out, key)
        if cached is not None:
            results[key] = dict(cached, cached=True)
    # No cluster when every task is cached.
    own = client is None and len(results) < len(unique)
    cluster = None
    if own:
        client, cluster = _client(scheduler, workers)
        if progress:
            print(f"sweep: {len(unique) - len(results)} task(s) to run, Dask dashboard at "
                  f"{client.dashboard_link}", file=sys.stderr)
    try:
        for key, t in unique.items():          # upstream tasks come first in each point
            if key in results:
                continue
            if t["after"] is None:
                upstream = (spec.source, spec.source_bytes)
            elif t["after"] in results:
                upstream = results[t["after"]]
            else:
                upstream = futures[t["after"]]
            futures[key] = client.submit(task, t, upstream, key=f"darbgen-{t['step']}-{key}",
                                         pure=False, retries=spec.retries)
        bar = tqdm(total=len(futures), desc="sweep", unit="task", disable=not progress)
        for future in as_completed(list(futures.values())) if futures else ():
            key = future.key.rsplit("-", 1)[1]
            if future.status == "finished":
                result = future.result()
                _save(out, result)
                results[key] = dict(result, cached=False)
            else:
                e = future.exception()
                errors[key] = f"{type(e).__name__}: {e}"
            bar.update()
        bar.close()
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()

    rows = [_row(p, tasks, results, errors) for p, tasks in zip(grid, point_tasks)]
    files = write_results(rows, out)
    plots = plot_results(rows, out)
    return {"points": len(rows), "tasks": len(unique),
            "fresh": sum(not r["cached"] for r in results.values()),
            "cached": sum(r["cached"] for r in results.values()), "failed": len(errors),
            **files, "plots": [str(p) for p in plots]}


def _row(point: dict, tasks: list, results: dict, errors: dict) -> dict:
    """One point's row: its grid values, then every figure its steps produced."""
    row = {f: (list(v) if isinstance(v, tuple) else v) for f, v in point.items()}
    problems = []
    for t in tasks:
        row[f"{t['step']}_key"] = t["key"]
        if t["key"] in results:
            r = results[t["key"]]
            row[f"{t['step']}_cached"] = r["cached"]
            row[f"{t['step']}_seconds"] = r["seconds"]
            row.update(r["figures"])
        else:
            problems.append(f"{t['step']}: {errors.get(t['key'], 'not run')}")
    # At the clock the bitstream runs at (the board's), not at fmax.
    if "cycles" in row and row.get("timing_met"):
        row["useful_macs_per_s"] = row["layer_nnz"] * row["vectors"] / row["cycles"] \
            * row["clock_mhz"] * 1e6
    if "cycles" in row:
        row["useful_macs_per_cycle"] = row["layer_nnz"] * row["vectors"] / row["cycles"]
    row["error"] = "; ".join(problems) or None
    return row


def write_results(rows: list[dict], out) -> dict:
    """Write ``results.json`` (rows as they are) and ``results.csv`` (one column per
    figure; nested values such as ``resources`` as JSON text)."""
    out = Path(out)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = json.dumps(rows, indent=1)
    atomic_write(out / "results.json", lambda f: f.write(text.encode()))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                         for k, v in row.items()})
    atomic_write(out / "results.csv", lambda f: f.write(buf.getvalue().encode()))
    return {"results_csv": str(out / "results.csv"), "results_json": str(out / "results.json")}


def _pareto(points_xy, maximize_x: bool):
    """The points no other point beats on both axes (y is maximized)."""
    best, front = -math.inf, []
    for x, y in sorted(points_xy, key=lambda p: (-p[0] if maximize_x else p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return sorted(front)


def _accuracy(row: dict):
    """The most hardware-like accuracy a row has."""
    for k in ("accuracy_hw", "accuracy_int", "accuracy_quantized", "accuracy_pruned"):
        if row.get(k) is not None:
            return k, row[k]
    return None, None


_LABELS = {"accuracy_hw": "test accuracy on the simulated hardware",
           "accuracy_int": "test accuracy of the integer model",
           "accuracy_quantized": "test accuracy, int8 weights",
           "accuracy_pruned": "test accuracy, pruned float model",
           "useful_macs_per_s": "useful MAC/s (kept weights, at the board clock)",
           "fmax_mhz": "fmax (MHz)"}

# The plots: file, x, y, x label, whether larger x is better on the Pareto front (``None``:
# no front), the field whose values get one colour each, and a log2 x axis.
_PLOTS = (
    ("pareto-accuracy-ratio.png", "pruning_ratio", _accuracy, "pruning ratio (dense / kept)",
     True, "method", True),
    ("pareto-accuracy-cycles.png", "cycles_per_vector", _accuracy,
     "simulated cycles per input vector (one layer)", False, "lanes", True),
    ("pareto-macs-luts.png", "luts", "useful_macs_per_s",
     "LUTs (iCE40 logic cells, ECP5 LUT4s)", False, "board", False),
    ("fmax-lanes.png", "lanes", "fmax_mhz", "lanes", None, "board", False),
)


def plot_results(rows: list[dict], out) -> list[Path]:
    """Draw the plots whose figures the rows have (PNG under ``out``): accuracy vs ratio,
    accuracy vs simulated cycles and useful MAC/s vs LUTs with their Pareto fronts, and
    fmax vs lanes; a point per row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    for name, xk, yk, xlabel, larger_x, group, log_x in _PLOTS:
        data = []
        for row in rows:
            label, y = yk(row) if callable(yk) else (yk, row.get(yk))
            if row.get(xk) is not None and y is not None:
                data.append((row.get(group), row[xk], y, label))
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for value in dict.fromkeys(d[0] for d in data):
            xs, ys = zip(*[(d[1], d[2]) for d in data if d[0] == value])
            ax.scatter(xs, ys, label=(value or "artifact") if group == "method"
                       else f"{group} {value}")
        if larger_x is not None:
            front = _pareto([(d[1], d[2]) for d in data], larger_x)
            ax.plot(*zip(*front), "k--", linewidth=1, label="Pareto front")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_LABELS.get(data[0][3], data[0][3]))
        if log_x:
            ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = Path(out) / name
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write(path, lambda f: f.write(buf.getvalue()))
        drawn.append(path)
    return drawn
