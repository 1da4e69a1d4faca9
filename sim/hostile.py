"""A structure-aware hostile-input fuzzer (hypothesis; the ``dev`` extra), with counts.

:func:`fuzz_artifacts` builds artifacts field by field, from a valid random one
(:func:`~darbgen.sim.fuzz.random_artifact`), and applies 1 to 3 semantic mutations:

* ``size``: rows, cols, a block size or a keep count set to an overflowing value
  (2^31, 2^63, 2^64 - 1, ...), the arrays left as they were;
* ``type``: any manifest field replaced by a value of another type (``null``,
  ``[]``, ``{}``, a string, a bool, deep nesting);
* ``number``: a numeric manifest field set to NaN, ±infinity, 1e308 or 10^30;
* ``array``: an array member replaced by one of another dtype with extreme values
  (``uint64`` 2^64 - 1, ``int64`` extremes, NaN, 1e300), a lying ``.npy`` header, or a
  pickled object array whose unpickling would run a command;
* ``alias``: array references pointing at another member, at ``manifest.json``,
  outside the archive or at nothing;
* ``name``: layer names with terminal escape sequences, control characters,
  100,000 characters or a repeat.

Each artifact goes through :meth:`Artifact.load <darbgen.format.Artifact.load>` and
through the CLI (``inspect``, ``inspect --json``, ``dense``, ``eval``), in process.
:func:`fuzz_api` puts hostile values (the pools above, bytes, arrays of the wrong
dtype or rank, ``object()``) into every argument of every public entry point that takes
user values, one at a time: the cross product is about 2,200 calls.
:func:`fuzz_paths` hands the CLI hostile *paths*: special files (FIFO, ``/dev/zero``,
``/dev/urandom``, a directory, a symlink to a FIFO, a sparse file past the size
limit) as inputs, and as outputs the command's own input (by name, a symlink or a hard
link), ``/dev/null``, a FIFO, a directory or a missing directory.

Counted as failures, all of which must stay 0: ``security_holes`` (the command of a
pickle ran), ``crashes`` (an exception other than the documented errors escaped the
loader), ``hangs`` (past the time limit), ``silent_corruptions`` (an accepted artifact that
does not round-trip or whose golden model disagrees with its dense matrix; an input
or special file that changed), ``tracebacks`` (the CLI raised instead of printing one
line), ``warnings`` (a Python warning, e.g. numpy's ``RuntimeWarning``, reached the
user) and ``unclear_messages`` (an error without the file's name, on several lines,
or in a library's own words).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from ..format import MAX_ARTIFACT_BYTES, Artifact, ArtifactError
from .fuzz import (FuzzReport, _artifact_bytes, _json_paths, _members, _npy, _npy_with_header,
                   _time_limit, _Timeout, _usable, _zip, random_artifact)

__all__ = ["fuzz_artifacts", "fuzz_api", "fuzz_paths", "FAILURE_KEYS"]

#: The counts that must be 0.
FAILURE_KEYS = ("security_holes", "crashes", "hangs", "silent_corruptions", "tracebacks",
                "warnings", "unclear_messages")

_INTS = [0, -1, 2, 255, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**62, 2**63 - 1, 2**63,
         2**64 - 1, 2**64, -2**63, 10**30]
_FLOATS = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, -0.0, 1e30]
_OTHERS = [None, True, "", "x", "\x1b[2J", [], {}, [1, 2], {"a": 1}, [[[[[[[[1]]]]]]]]]
_NAMES = ["\x1b[2J\x1b[31mred", "tab\there", "new\nline", "bell\x07", "x" * 100_000,
          "\u202eevil", "l0"]

# What a message must not be: Python's or a library's own words about its internals.
_INTERNAL = re.compile(r"object has no attribute|not subscriptable|unhashable|invalid literal|"
                       r"unsupported operand|NoneType|positional argument|cannot convert|"
                       r"Python int too large|index \d+ is out of bounds|object is not "
                       r"iterable|list index|ufunc|safely coerced|could not be broadcast|"
                       r"truth value of an array|Traceback")


class _Payload:
    """Unpickling it would create ``marker``: the proof that a pickle executed."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _names_member(reference, members: dict) -> bool:
    return isinstance(reference, str) and reference in members


@st.composite
def _artifact_case(draw, marker: str):
    """(zip bytes, description) of an artifact built from a valid one by 1-3 mutations."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    members = dict(_members(_artifact_bytes(random_artifact(rng))))
    manifest = json.loads(members.pop("manifest.json"))
    layers = manifest["layers"]
    done = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["size", "type", "number", "array", "alias", "name"]))
        i = draw(st.integers(0, len(layers) - 1))
        layer = layers[i] if isinstance(layers[i], dict) else {}
        arrays = layer.get("arrays") if isinstance(layer.get("arrays"), dict) else {}
        if kind == "size":
            field = draw(st.sampled_from(["rows", "cols", "block_sizes", "keep", "shape"]))
            value = draw(st.sampled_from(_INTS))
            if field in ("rows", "cols"):
                layer[field] = value
                if draw(st.booleans()) and isinstance(layer.get("shape"), list):
                    layer["shape"] = [layer.get("rows"), layer.get("cols")]
            elif field == "shape":
                layer["shape"] = [layer.get("rows"), value, value]
            elif _names_member(arrays.get(field), members):
                n = draw(st.integers(0, 3))
                dtype = np.uint64 if value >= 0 else np.int64
                members[arrays[field]] = _npy(np.full(n or 1, min(value, 2**64 - 1),
                                                      dtype=dtype))
            done.append(f"size {field}={value}")
        elif kind in ("type", "number"):
            paths = [p for p in _json_paths(manifest) if p]
            path = draw(st.sampled_from(paths))
            pool = _OTHERS + _INTS[:4] if kind == "type" else _FLOATS + _INTS
            value = copy.deepcopy(draw(st.sampled_from(pool)))   # later edits must not
            parent = manifest                                     # change the pool
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
            done.append(f"{kind} {'/'.join(map(str, path))}={value!r:.40}")
        elif kind == "array" and any(_names_member(m, members) for m in arrays.values()):
            field = draw(st.sampled_from(sorted(f for f, m in arrays.items()
                                                if _names_member(m, members))))
            member = arrays[field]
            n = draw(st.integers(0, 12))
            how = draw(st.sampled_from(["uint64", "int64", "nan", "huge", "bool", "lie",
                                        "pickle", "0-d"]))
            if how == "uint64":
                data = _npy(np.full(n, 2**64 - 1, dtype=np.uint64))
            elif how == "int64":
                data = _npy(np.array([-2**63, 2**63 - 1] * n, dtype=np.int64))
            elif how == "nan":
                data = _npy(np.full(n, np.nan))
            elif how == "huge":
                data = _npy(np.full(n, 1e300))
            elif how == "bool":
                data = _npy(np.ones(n, dtype=bool))
            elif how == "lie":
                data = _npy_with_header({"descr": "<i8", "fortran_order": False,
                                         "shape": (draw(st.sampled_from(_INTS[4:12])),)},
                                        b"\0" * 8 * n)
            elif how == "pickle":
                data = _npy(np.array([_Payload(marker), None], dtype=object),
                            allow_pickle=True)
            else:
                data = _npy(np.int64(n))
            members[member] = data
            done.append(f"array {field}: {how}")
        elif kind == "alias" and arrays:
            field = draw(st.sampled_from(sorted(arrays)))
            others = sorted(members) + ["manifest.json", "../../etc/passwd", "/etc/passwd",
                                        "layers/9/values.npy", ""]
            arrays[field] = draw(st.sampled_from(others))
            done.append(f"alias {field}->{arrays[field]!r:.40}")
        elif kind == "name":
            layer["name"] = draw(st.sampled_from(_NAMES))
            done.append(f"name {layer['name'][:20]!r}")
    text = json.dumps(manifest)               # NaN and Infinity: JSON's extension tokens
    zipped = _zip([("manifest.json", text.encode())] + sorted(members.items()), rng)
    return zipped, "; ".join(done) or "unchanged"


def _clear(message: str) -> bool:
    """One line, in words of our own."""
    return "\n" not in message and not _INTERNAL.search(message)


def _judge(report: FuzzReport, where: str, call, documented, time_limit: float, *,
           clear=_clear):
    """``call()``'s result, counted ``accepted``; or ``None`` after a ``documented``
    error (counted ``rejected``, its message checked by ``clear``), a hang, a warning
    (raised as an error: a warning is a finding, not noise) or any other exception."""
    try:
        with _time_limit(time_limit), warnings.catch_warnings():
            warnings.simplefilter("error")
            result = call()
    except documented as e:
        report.count("rejected")
        if not clear(str(e)):
            report.fail("unclear_messages", f"{where}: {type(e).__name__}: {str(e)[:300]!r}")
        return None
    except _Timeout:
        report.fail("hangs", f"{where}: over {time_limit} s")
        return None
    except Warning as w:
        report.fail("warnings", f"{where}: {type(w).__name__}: {w}")
        return None
    except Exception as e:                  # noqa: BLE001 - the finding
        report.fail("crashes", f"{where}: {type(e).__name__}: {str(e)[:200]}")
        return None
    report.count("accepted")
    return result


def _cli(argv: list) -> tuple[int | None, str, str, BaseException | None]:
    """``darbgen argv`` in process: (status, stdout, stderr, exception that escaped)."""
    from ..cli import main

    out, err = io.StringIO(), io.StringIO()
    status, escaped = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in argv])
        except SystemExit as e:
            status = e.code
        except _Timeout:
            raise
        except BaseException as e:           # noqa: BLE001 - the finding
            escaped = e
    return status, out.getvalue(), err.getvalue(), escaped


def _check_cli(report: FuzzReport, argv: list, where: str, *, names=()) -> int | None:
    """Run a command and count what went wrong: a traceback, a warning, a message that
    is not one clear line, a control character on the terminal."""
    status, out, err, escaped = _cli(argv)
    command = str(argv[0])
    if escaped is not None:
        report.fail("tracebacks", f"{where}: darbgen {command} raised "
                                  f"{type(escaped).__name__}: {str(escaped)[:200]}")
        return None
    lines = err.strip().splitlines()
    if any("Warning" in line for line in lines):
        report.fail("warnings", f"{where}: darbgen {command} printed {err[:200]!r}")
    elif status not in (0, 1, 2):
        report.fail("tracebacks", f"{where}: darbgen {command} exited {status}")
    elif status != 0 and (len(lines) != 1 or not lines[0].startswith(f"darbgen {command}: ")
                          or not _clear(lines[0])):
        report.fail("unclear_messages", f"{where}: darbgen {command}: {err[:300]!r}")
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", out + err):
        report.fail("unclear_messages", f"{where}: darbgen {command} printed a control "
                                        "character")
    return status


def _check_artifact(report: FuzzReport, data: bytes, what: str, tmp: Path, marker: Path,
                    time_limit: float, rng) -> None:
    path = tmp / "input.darb"
    path.write_bytes(data)
    where = f"case {report.counts.get('inputs', 0)} ({what})"
    report.count("inputs")
    def load_and_use():
        loaded = Artifact.load(path)
        return loaded, _usable(loaded, rng)

    result = _judge(report, where, load_and_use, ArtifactError, time_limit,
                    clear=lambda m: m.startswith(f"{path}: ") and _clear(m))
    loaded = None if result is None else result[0]
    if result is not None and result[1] is not None:
        report.fail("silent_corruptions", f"{where}: accepted, but {result[1]}")
    try:
        with _time_limit(time_limit), warnings.catch_warnings():
            warnings.simplefilter("always")   # printed on stderr: _check_cli sees them
            _check_cli(report, ["inspect", path], where)
            _check_cli(report, ["inspect", "--json", path], where)
            name = loaded.layers[0].name if loaded is not None else "l0"
            out = tmp / "dense.npy"
            _check_cli(report, ["dense", path, "--layer", name, "-o", out], where)
            out.unlink(missing_ok=True)
            _check_cli(report, ["eval", path, "--dataset", "digits", "--limit", "3"], where)
    except _Timeout:
        report.fail("hangs", f"{where}: a command took over {time_limit} s")
    if marker.exists():
        report.fail("security_holes", f"{where}: a pickle in the artifact ran a command")
        marker.unlink()


def _run(strategy, check, examples: int, seed: int, budget: float | None):
    """Run ``check`` on ``examples`` draws of ``strategy`` (fewer when ``budget``
    seconds run out), reproducibly from ``seed``."""
    start = time.monotonic()

    @hypothesis_seed(seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case):
        if budget is None or time.monotonic() - start < budget:
            check(case)

    run()


def _new_report(name: str, seed: int) -> FuzzReport:
    report = FuzzReport(name, seed)
    for key in ("inputs",) + FAILURE_KEYS:
        report.counts[key] = 0
    return report


def fuzz_artifacts(examples: int, seed: int = 0, *, budget: float | None = None,
                   time_limit: float = 10.0) -> FuzzReport:
    """Hostile artifacts through the loader and the CLI; see the module docstring.

    Parameters
    ----------
    examples : int
        Artifacts to build.
    seed : int
        Seeds hypothesis and every random artifact: the same seed replays the run.
    budget : float, optional
        Seconds after which the remaining examples are skipped (the default suite's
        fixed time budget).
    time_limit : float
        Seconds after which one load or command counts as a hang.

    Returns
    -------
    FuzzReport
        ``inputs``, ``accepted``, ``rejected`` and the :data:`FAILURE_KEYS` counts.
    """
    report = _new_report("hostile artifacts", seed)
    start = time.monotonic()
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="darbgen-hostile-") as tmp:
        tmp = Path(tmp)
        marker = tmp / "pwned"
        _run(_artifact_case(str(marker)),
             lambda case: _check_artifact(report, *case, tmp, marker, time_limit, rng),
             examples, seed, budget)
    report.seconds = time.monotonic() - start
    return report


# -- the Python API ----------------------------------------------------------------------

_VALUES = _INTS + _FLOATS + _OTHERS + [b"x", (5,), (4, 2, 2), (0, 4), np.array([[1]]),
                                       np.array(["a"]), np.array([2**64 - 1], np.uint64),
                                       object()]


def _api_calls():
    """(name, call(value)) for every public entry point that takes user values; each
    call puts the value in one argument and valid values in the others."""
    from ..config import EngineConfig
    from ..format import SparseLayer, quantize
    from ..host import Board, SerialTransport
    from ..packing import schedule
    from ..pruning import masks
    from .golden import spmv_ref

    rng = np.random.default_rng(0)
    layer = random_artifact(rng).layers[0]
    w = rng.normal(size=(6, 16))
    fields = {f: getattr(layer, f) for f in (
        "name", "rows", "cols", "block_sizes", "keep", "offsets", "values", "scale",
        "weight_bits", "method", "params", "bias", "shape", "input_columns", "input_scale",
        "activation", "conv")}
    engine = dict(lanes=2, shifts=(1,), max_keep=1, max_row_nnz=8, max_cols=16,
                  lane_depth=8, lane_rows=4)
    calls = [(f"SparseLayer({f}=)", lambda v, f=f: SparseLayer(**{**fields, f: v}))
             for f in fields]
    calls += [(f"EngineConfig({f}=)", lambda v, f=f: EngineConfig(**{**engine, f: v}))
              for f in list(engine) + ["weight_bits", "input_bits", "input_width"]]
    calls += [
        ("Artifact(layers=)", lambda v: Artifact(v)),
        ("Artifact(provenance=)", lambda v: Artifact([layer], v)),
        ("Artifact.layer()", lambda v: Artifact([layer]).layer(v)),
        ("EngineConfig.for_layers(lanes=)", lambda v: EngineConfig.for_layers([layer], v)),
        ("schedule(lanes=)", lambda v: schedule(layer, v)),
        ("accumulator_width()", lambda v: layer.accumulator_width(v)),
        ("quantize(bits=)", lambda v: quantize(w, w > 0, v)),
        ("spmv_ref(x=)", lambda v: spmv_ref(layer, v)),
        ("spmv_ref(input_bits=)", lambda v: spmv_ref(layer, np.zeros((1, layer.cols), int),
                                                    v)),
        ("irregular_mask(ratio=)", lambda v: masks.irregular_mask(w, v)),
        ("darb_mask(ratio=)", lambda v: masks.darb_mask(w, v)),
        ("darb_mask(block_sizes=)", lambda v: masks.darb_mask(w, 4, v)),
        ("darb_mask(keep=)", lambda v: masks.darb_mask(w, 4, keep=v)),
        ("darb_mask(rule=)", lambda v: masks.darb_mask(w, 4, rule=v)),
        ("darb_mask(weight=)", lambda v: masks.darb_mask(v, 4)),
        ("bmwm_mask(block_size=)", lambda v: masks.bmwm_mask(w, v)),
        ("block_mask(block_shape=)", lambda v: masks.block_mask(w, 2, v)),
        ("nm_mask(n=)", lambda v: masks.nm_mask(w, v, 4)),
        ("nm_mask(m=)", lambda v: masks.nm_mask(w, 2, v)),
        ("Board(timeout=)", lambda v: Board(SerialTransport("loop://"), timeout=v)),
        ("Board(retries=)", lambda v: Board(SerialTransport("loop://"), retries=v)),
        ("Board(chunk_words=)", lambda v: Board(SerialTransport("loop://"), chunk_words=v)),
        ("Board(deadline=)", lambda v: Board(SerialTransport("loop://"), deadline=v)),
        ("Board(transport=)", lambda v: Board(v)),
        ("SerialTransport(url=)", lambda v: SerialTransport(v).close()),
        ("SerialTransport(baud=)", lambda v: SerialTransport("loop://", v).close()),
    ]
    return calls


def _check_api(report: FuzzReport, call, value, time_limit: float) -> None:
    from ..host import LinkError

    name, fn = call
    where = f"case {report.counts['inputs']} ({name} {value!r:.40})"
    report.count("inputs")
    _judge(report, where, lambda: fn(value), (ValueError, TypeError, LinkError), time_limit)


def fuzz_api(examples: int, seed: int = 0, *, budget: float | None = None,
             time_limit: float = 10.0) -> FuzzReport:
    """Hostile values through every public entry point that takes them (constructors,
    mask functions, the golden model, the driver and the transport): each call must
    return or raise ``ValueError``, ``TypeError`` or a domain error in words of its
    own, never ``MemoryError``, ``OverflowError``, ``KeyError``, ``AttributeError`` or
    a warning."""
    report = _new_report("hostile API values", seed)
    start = time.monotonic()
    calls = _api_calls()
    cases = st.tuples(st.sampled_from(calls), st.sampled_from(_VALUES))
    _run(cases, lambda case: _check_api(report, *case, time_limit), examples, seed, budget)
    report.seconds = time.monotonic() - start
    return report


# -- hostile paths ---------------------------------------------------------------------

_INPUT_KINDS = ("fifo", "dev_zero", "dev_urandom", "directory", "symlink_to_fifo",
                "sparse_huge", "missing")
_OUTPUT_KINDS = ("the_input", "symlink_to_input", "hard_link_to_input", "dot_path_to_input",
                 "dev_null", "fifo", "directory", "missing_directory", "symlink_to_fifo")
_COMMANDS = ("inspect", "dense", "prune", "prune-data", "eval", "eval-data", "simulate",
             "deploy")
#: The names a hostile input takes: each kind of source is read by its own reader.
_SUFFIXES = ("", ".darb", ".npy", ".onnx", ".pt2", ".pt", ".npz")


def _make_input(kind: str, tmp: Path, suffix: str = "") -> Path:
    if kind in ("fifo", "symlink_to_fifo"):
        fifo = tmp / f"fifo{suffix}"
        os.mkfifo(fifo)
        if kind == "fifo":
            return fifo
        (tmp / f"link{suffix}").symlink_to(fifo)
        return tmp / f"link{suffix}"
    if kind == "sparse_huge":
        path = tmp / f"huge{suffix}"
        with open(path, "wb") as f:
            f.truncate(2 * MAX_ARTIFACT_BYTES)    # sparse: costs no disk; past every limit
        return path
    return {"dev_zero": Path("/dev/zero"), "dev_urandom": Path("/dev/urandom"),
            "directory": tmp, "missing": tmp / "missing.darb"}[kind]


def _input_argv(command: str, path: Path, valid: dict) -> list:
    """A command line that reads ``path`` where it reads a file."""
    if command == "prune":
        return ["prune", path, "--method", "darb", "-o", valid["out"]]
    if command == "prune-data":
        return ["prune", valid["npy"], "--method", "darb", "--data", path, "-o", valid["out"]]
    if command == "eval-data":
        return ["eval", valid["artifact"], "--data", path]
    if command == "simulate":
        return ["simulate", valid["artifact"], "--inputs", path, "-o", valid["out"]]
    if command == "deploy":
        return ["deploy", path, "--port", "/dev/null", "--timeout", "0.1"]
    if command == "dense":
        return ["dense", path, "--layer", "l0", "-o", valid["out"]]
    if command == "eval":
        return ["eval", path, "--dataset", "digits"]
    return ["inspect", path]


def _make_output(kind: str, tmp: Path, source: Path) -> Path:
    if kind == "the_input":
        return source
    if kind == "symlink_to_input":
        (tmp / "out-link").symlink_to(source)
        return tmp / "out-link"
    if kind == "hard_link_to_input":
        os.link(source, tmp / "out-hard")
        return tmp / "out-hard"
    if kind == "dot_path_to_input":
        return source.parent / "." / ".." / source.parent.name / source.name
    if kind in ("fifo", "symlink_to_fifo"):
        return _make_input(kind, tmp)
    return {"dev_null": Path("/dev/null"), "directory": tmp,
            "missing_directory": tmp / "no" / "out"}[kind]


def _output_argv(command: str, out: Path, valid: dict) -> tuple[list, Path]:
    """A command line that writes ``out`` and the input it must not replace."""
    if command in ("prune", "prune-data", "inspect", "eval", "eval-data"):
        return ["prune", valid["npy"], "--method", "darb", "-o", out], valid["npy"]
    if command == "simulate":
        return ["simulate", valid["artifact"], "--inputs", valid["x"], "-o", out], valid["x"]
    if command == "deploy":
        return ["deploy", valid["artifact"], "--port", "/dev/null", "--inputs", valid["x"],
                "-o", out], valid["x"]
    return ["dense", valid["artifact"], "--layer", "l0", "-o", out], valid["artifact"]


def _snapshot(path: Path):
    st = os.lstat(path)
    return st.st_mode, st.st_ino, (path.read_bytes() if path.is_file() and
                                   st.st_size < 1 << 20 else None)


def _check_path(report: FuzzReport, case, time_limit: float) -> None:
    role, kind, command, suffix = case
    where = f"case {report.counts['inputs']} ({command}: {role} {kind}{suffix})"
    report.count("inputs")
    with tempfile.TemporaryDirectory(prefix="darbgen-paths-") as d:
        tmp = Path(d)
        valid = {"npy": tmp / "w.npy", "artifact": tmp / "a.darb", "x": tmp / "x.npy",
                 "out": tmp / "result"}
        rng = np.random.default_rng(report.counts["inputs"])
        np.save(valid["npy"], rng.normal(size=(6, 16)))
        random_artifact(rng).save(valid["artifact"])
        np.save(valid["x"], np.zeros((1, 3), np.int8))
        if role == "input":
            argv, protected = _input_argv(command, _make_input(kind, tmp, suffix), valid), None
        else:
            protected = _output_argv(command, tmp / "unused", valid)[1]
            argv = _output_argv(command, _make_output(kind, tmp, protected), valid)[0]
        before = {p: _snapshot(p) for p in tmp.rglob("*") if not p.is_dir() or p == tmp}
        special = [p for p in (Path("/dev/null"),) if p.exists()]
        devices = {p: _snapshot(p)[:2] for p in special}
        try:
            with _time_limit(time_limit):
                status = _check_cli(report, argv, where)
        except _Timeout:
            report.fail("hangs", f"{where}: darbgen {command} took over {time_limit} s")
            return
        if status == 0:
            report.fail("silent_corruptions", f"{where}: darbgen {command} accepted it")
        for p, snap in before.items():
            if p.exists() or p.is_symlink():
                if _snapshot(p) != snap:
                    report.fail("silent_corruptions", f"{where}: {p.name} changed")
            else:
                report.fail("silent_corruptions", f"{where}: {p.name} disappeared")
        if protected is not None and _snapshot(protected) != before.get(protected):
            report.fail("silent_corruptions", f"{where}: the input {protected.name} changed")
        if any(_snapshot(p)[:2] != devices[p] for p in special):
            report.fail("silent_corruptions", f"{where}: /dev/null was replaced")
        extra = {p for p in tmp.rglob("*")} - set(before)
        if extra:
            report.fail("silent_corruptions", f"{where}: left {sorted(p.name for p in extra)}")


def fuzz_paths(examples: int, seed: int = 0, *, budget: float | None = None,
               time_limit: float = 10.0) -> FuzzReport:
    """Hostile input and output paths through the CLI; see the module docstring.

    Every case must be refused with one clear line, in time, leaving every file (and
    ``/dev/null``) as it was and nothing new behind.
    """
    report = _new_report("hostile paths", seed)
    start = time.monotonic()
    cases = st.one_of(
        st.tuples(st.just("input"), st.sampled_from(_INPUT_KINDS), st.sampled_from(_COMMANDS),
                  st.sampled_from(_SUFFIXES)),
        st.tuples(st.just("output"), st.sampled_from(_OUTPUT_KINDS),
                  st.sampled_from(_COMMANDS), st.just("")))
    _run(cases, lambda case: _check_path(report, case, time_limit), examples, seed, budget)
    report.seconds = time.monotonic() - start
    return report
