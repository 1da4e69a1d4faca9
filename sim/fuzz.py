"""Adversarial harnesses with counts: the artifact loader and the serial link (no torch).

Both fuzzers are seeded and report what they tried and what went wrong as a
:class:`FuzzReport`; the suite runs them briefly and asserts that nothing did,
``bench/fuzz_bench.py`` runs them long and records the figures in ``docs/``.

:func:`fuzz_loader` feeds :meth:`Artifact.load <darbgen.format.Artifact.load>`
random files and mutations of valid artifacts: byte-level damage (bit flips,
overwritten runs, truncation, insertions and deletions) and structure-aware edits
inside a well-formed zip (manifest fields replaced, removed or added, arrays of
another dtype, shape or content, lying ``.npy`` headers, members dropped,
duplicated, renamed or swapped). Each input must end in one of two ways:

* rejected with an :class:`~darbgen.format.ArtifactError` whose message starts
  with the file's path, or
* accepted, and then usable: for byte-level damage the content must equal the
  original's (damage confined to bytes that carry nothing, such as timestamps);
  for structure-aware edits, which keep the zip's own checks valid, the artifact
  must round-trip through save and load, and the golden model must run on every
  layer and agree with its dense matrix.

Anything else is counted: ``crashes`` (another exception), ``hangs`` (a load
longer than ``time_limit``) and ``silent_corruptions`` (an acceptance that breaks
the rules above).

:func:`fuzz_link` attacks the protocol controller (:class:`~darbgen.hdl.device.Controller`,
the gateware behind every board's UART): by default in Amaranth's simulator through
:class:`~darbgen.sim.link_sim.SimulatedLink` (:func:`simulated_target`), or as a
board's whole device in Verilator behind a pseudo-terminal (:func:`board_target`).
It sends one *input* at a time, each followed by a clean ``STATUS`` (retried after
silence) that must be answered:

* ``chunk``: the next correct ``LOAD_WEIGHTS`` chunk of a layer;
* ``run``: a correct ``RUN`` (outputs checked exactly while the layer is loaded);
* ``flip``: a correct frame with 1 to 3 flipped bits anywhere (SOF, header,
  payload, CRC);
* ``truncate``: a correct frame cut short, then silence;
* ``replay``: an earlier valid frame again, byte for byte (same seq);
* ``random_frame``: a frame with a valid CRC and random command, seq, length and
  payload (``LOAD_WEIGHTS`` at offsets 0, the current count or anywhere, ``RUN`` of
  the right or a wrong length, unknown commands, lengths past ``MAX_PAYLOAD``);
* ``garbage``: random bytes, often with a SOF and a header that claims a long
  payload.

A reference model of the protocol (:class:`ProtocolModel`) predicts every valid
frame's reply and the weights the device must hold; corrupted inputs (``flip``,
``truncate``, ``garbage``) must change nothing and never be answered ``OK``
(inputs that happen to contain a frame with a valid CRC, a 2^-16 event, are
redrawn and counted as ``crc_collisions_redrawn``). Counted: ``hangs`` (the
clean ``STATUS`` unanswered after retries), ``silent_corruptions`` (the device's
word count or weights CRC-32 differs from the model's, a corrupted frame was
answered ``OK``, or a ``RUN`` of the loaded layer returned other outputs than the
golden model) and ``protocol_mismatches`` (a reply other than the model's).

``host_sessions`` more runs put the real host driver (:class:`~darbgen.host.driver.Board`)
behind a :class:`NoisyTransport` (flipped bits both ways, truncated, dropped,
duplicated and replayed frames, garbage between frames): each session identifies,
loads a layer and runs vectors, up to three attempts; it must end with outputs equal
to the golden model (``host_recovered``) or a :class:`~darbgen.host.transport.LinkError`
(``host_gave_up``), never with wrong outputs and never exceed its cycle budget.
"""

from __future__ import annotations

import io
import json
import math
import signal
import tempfile
import threading
import time
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import EngineConfig
from ..format import Artifact, ArtifactError, SparseLayer
from ..hdl.device import APPLY_BYTE_CYCLES
from ..hdl.protocol import (GUARD_BYTES, HEADER_BYTES, IDLE_BYTES, MAX_PAYLOAD, OFFSET_BYTES,
                            PART_BYTES, REPLY, SOF, STATUS_FIELDS, Command, Sizes, Status,
                            bytes_to_words, crc16, identity_bytes, parse_run_part, run_guard,
                            weights_crc, words_to_bytes)
from ..host.driver import Board
from ..host.framing import Frame, FrameParser, Reply, encode_frame
from ..host.transport import LinkError, Transport
from ..packing import input_words, load_words, schedule, unpack_fields, unpack_outputs
from .golden import spmv_ref
from .link_sim import SimulatedLink

__all__ = ["FuzzReport", "random_artifact", "fuzz_loader", "ProtocolModel", "NoisyTransport",
           "LinkTarget", "simulated_target", "board_target", "fuzz_link", "valid_frames_in"]

_MAX_FAILURES = 20           # failure descriptions kept in a report


@dataclass
class FuzzReport:
    """What a fuzzer tried and what went wrong.

    Members
    -------
    name : str
        Which fuzzer.
    seed : int
        The seed of the run: the same seed replays the same inputs.
    counts : dict
        Named counts; ``inputs`` is always there, and ``hangs``, ``crashes`` and
        ``silent_corruptions`` are the ones that must be 0.
    by_kind : dict
        Inputs per mutation or event kind (and, for host sessions, ``host <error>``:
        the errors with which attempts failed).
    failures : list of str
        The first failures, each naming its input number, kind and seed.
    seconds : float
        Wall-clock time of the run.
    """

    name: str
    seed: int
    counts: dict = field(default_factory=dict)
    by_kind: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def fail(self, key: str, message: str) -> None:
        """Count a failure under ``key`` and keep its description."""
        self.count(key)
        if len(self.failures) < _MAX_FAILURES:
            self.failures.append(f"{key}: {message} (seed {self.seed})")

    @property
    def bad(self) -> int:
        """Hangs, crashes and silent corruptions: what must be 0."""
        return sum(self.counts.get(k, 0) for k in ("hangs", "crashes", "silent_corruptions"))

    def to_json(self) -> dict:
        return {"name": self.name, "seed": self.seed, "counts": dict(sorted(self.counts.items())),
                "by_kind": dict(sorted(self.by_kind.items())), "failures": list(self.failures),
                "seconds": round(self.seconds, 1)}

    def __str__(self) -> str:
        c = self.counts
        return (f"{self.name} (seed {self.seed}): {c.get('inputs', 0)} inputs, "
                f"{c.get('hangs', 0)} hangs, {c.get('crashes', 0)} crashes, "
                f"{c.get('silent_corruptions', 0)} silent corruptions in {self.seconds:.1f} s")


# == the artifact loader ==============================================================

def random_artifact(rng: np.random.Generator) -> Artifact:
    """A random valid artifact of 1 to 3 small layers that uses every optional field
    somewhere: per-layer scales, bias, conv shapes, compacted columns, input scales,
    activations, block size 1 (dense rows) and keep counts above 1."""
    layers = []
    for i in range(int(rng.integers(1, 4))):
        rows, cols = int(rng.integers(1, 10)), int(rng.integers(2, 40))
        b = rng.choice([1, 2, 4, 8, 16], size=rows)
        k = np.array([int(rng.integers(1, min(bi, 3) + 1)) for bi in b])
        offsets = []
        for r in range(rows):
            for start in range(0, cols, b[r]):
                width = min(b[r], cols - start)
                offsets.extend(np.sort(rng.choice(width, size=min(k[r], width), replace=False)))
        bits = int(rng.choice([2, 4, 8, 12, 16]))
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        values = rng.integers(lo, hi + 1, size=len(offsets))
        extra = {}
        if rng.random() < 0.5:
            extra["bias"] = rng.normal(size=rows)
        if rng.random() < 0.3:
            extra["input_scale"] = float(rng.uniform(0.01, 1))
            extra["activation"] = str(rng.choice(["none", "relu"]))
        if rng.random() < 0.3:
            width = cols + int(rng.integers(1, 20))
            extra["input_columns"] = np.sort(rng.choice(width, size=cols, replace=False))
            extra["shape"] = (rows, width)
        elif cols % 9 == 0 and rng.random() < 0.5:
            extra["shape"] = (rows, cols // 9, 3, 3)
        scale = rng.uniform(0.01, 0.1, size=rows) if rng.random() < 0.7 else \
            float(rng.uniform(0.01, 0.1))
        layers.append(SparseLayer(name=f"l{i}", rows=rows, cols=cols, block_sizes=b, keep=k,
                                  offsets=np.asarray(offsets, dtype=np.int64), values=values,
                                  scale=scale, weight_bits=bits, method="darb",
                                  params={"ratio": float(rng.uniform(1, 16))}, **extra))
    return Artifact(layers, {"source": "fuzz", "seed": int(rng.integers(1 << 30)),
                             "accuracy": {"dense": float(rng.random())}})


def _artifact_bytes(artifact: Artifact) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.darb"
        artifact.save(path)
        return path.read_bytes()


def _members(data: bytes) -> list:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(info.filename, z.read(info)) for info in z.infolist()]


def _zip(members, rng) -> bytes:
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if rng.random() < 0.7 else zipfile.ZIP_STORED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # duplicate names are a mutation
        with zipfile.ZipFile(buf, "w", compression=method) as z:
            for name, data in members:
                z.writestr(name, data)
    return buf.getvalue()


def _npy(arr, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, **kw)
    return buf.getvalue()


_EDGE_VALUES = [None, True, False, 0, -1, 1, 2, 3, 255, 2 ** 31, 2 ** 32 + 1, 2 ** 63,
                -2 ** 63, 10 ** 30, 0.5, -0.0, 1e308, float("nan"), float("inf"),
                float("-inf"), "", "x", "relu", "row", "layer", "layers/0/values.npy",
                "../../etc/passwd", "\u00e9\u0000", [], {}, [1, 2], [0], {"a": 1}]


def _json_paths(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, path + (i,))


def _mutate_manifest(manifest: dict, rng) -> tuple[dict, str]:
    paths = [p for p in _json_paths(manifest) if p]
    path = paths[int(rng.integers(len(paths)))]
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    key, old = path[-1], parent[path[-1]]
    op = str(rng.choice(["delete", "replace", "perturb", "add", "copy"]))
    if op == "delete":
        del parent[key]
    elif op == "replace":
        parent[key] = _EDGE_VALUES[int(rng.integers(len(_EDGE_VALUES)))]
    elif op == "perturb" and isinstance(old, (int, float)) and not isinstance(old, bool):
        parent[key] = [old + 1, old - 1, -old, old * 2, old * 1000, 0, old + 0.5][
            int(rng.integers(7))]
    elif op == "perturb" and isinstance(old, str):
        parent[key] = old[:-1] if rng.random() < 0.5 else old + "0"
    elif op == "add":
        target = parent[key] if isinstance(parent[key], dict) else parent
        if isinstance(target, dict):
            target[str(rng.choice(["extra", "conv", "bias", "scale_per", "input_scale"]))] = \
                _EDGE_VALUES[int(rng.integers(len(_EDGE_VALUES)))]
        else:
            target.append(target[0] if target else 0)
    else:                                   # another value of the manifest here
        other = paths[int(rng.integers(len(paths)))]
        value = manifest
        for k in other:
            value = value[k]
        parent[key] = json.loads(json.dumps(value))
    return manifest, f"manifest {op} {'/'.join(map(str, path))}"


_DTYPES = ["i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", ">i4", ">u2", "f2", "f4", "f8",
           "?", "c8", "U3", "S2", "M8[s]", "V4"]


def _npy_with_header(header: dict, body: bytes) -> bytes:
    """A .npy file with an arbitrary (possibly lying) header."""
    text = repr(header)
    pad = 64 - (10 + len(text) + 1) % 64
    text = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


def _mutate_array(data: bytes, rng) -> tuple[bytes, str]:
    arr = np.load(io.BytesIO(data), allow_pickle=False)
    op = str(rng.choice(["dtype", "shape", "value", "lie", "bytes", "pickle", "fortran"]))
    if op == "dtype":
        dt = str(rng.choice(_DTYPES))
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                out = arr.astype(dt)
            except (TypeError, ValueError):
                out = np.zeros(arr.shape, dt)
        return _npy(out), f"array dtype {dt}"
    if op == "shape":
        choice = int(rng.integers(6))
        flat = arr.reshape(-1)
        out = [flat.reshape(-1, 1), flat.reshape(1, -1), flat[:max(0, flat.size - 1)],
               np.concatenate([flat, flat[:1]]) if flat.size else np.zeros(3, arr.dtype),
               flat[:0], np.asarray(flat[0] if flat.size else 0)][choice]
        return _npy(out), f"array shape {out.shape}"
    if op == "value":
        out = arr.copy()
        if out.size:
            flat = out.reshape(-1)
            i = int(rng.integers(flat.size))
            if flat.dtype.kind in "iu":
                info = np.iinfo(flat.dtype)
                drawn = int(rng.integers(info.min, info.max, endpoint=True))
                flat[i] = [info.min, info.max, 0, flat[i] ^ 1, drawn][int(rng.integers(5))]
            elif flat.dtype.kind == "f":
                flat[i] = [np.nan, np.inf, -np.inf, 0.0, -1.0, 1e300 if flat.itemsize > 4 else
                           3e38][int(rng.integers(6))]
        return _npy(out), "array value"
    if op == "lie":
        body = data[len(data) - arr.nbytes:] if arr.nbytes else b""
        shape = [(1 << 40,), (1 << 62,), (arr.size + 1,), (0,), (2, 1 << 33), ()][
            int(rng.integers(6))]
        return _npy_with_header({"descr": arr.dtype.str, "fortran_order": False,
                                 "shape": shape}, body), f"npy header claims shape {shape}"
    if op == "bytes":
        cut = int(rng.integers(0, len(data)))
        return [data[:cut], b"\x93NUMPY", rng.bytes(int(rng.integers(0, 64)))][
            int(rng.integers(3))], "array bytes"
    if op == "pickle":
        return _npy(np.array([arr, None], dtype=object), allow_pickle=True), "array of objects"
    return _npy(np.asfortranarray(np.atleast_2d(arr).T)), "array fortran 2-D"


def _mutate_members(members: list, rng) -> tuple[list, str]:
    members = list(members)
    i = int(rng.integers(len(members)))
    op = str(rng.choice(["drop", "duplicate", "rename", "swap", "extra"]))
    name, data = members[i]
    if op == "drop":
        del members[i]
    elif op == "duplicate":
        members.append((name, members[int(rng.integers(len(members)))][1]))
    elif op == "rename":
        members[i] = (name + ("x" if rng.random() < 0.5 else "/"), data)
    elif op == "swap":
        j = int(rng.integers(len(members)))
        members[i], members[j] = (name, members[j][1]), (members[j][0], data)
    else:
        members.append((f"layers/{int(rng.integers(4))}/extra.npy", _npy(np.arange(3))))
    return members, f"member {op} {name}"


_BYTE_KINDS = ("bit_flips", "byte_runs", "truncate", "splice")
_STRUCT_KINDS = ("manifest", "array", "members")
_LOADER_KINDS = _BYTE_KINDS + _STRUCT_KINDS + ("random_file",)


def _mutate(base: bytes, kind: str, rng) -> tuple[bytes, str]:
    data = bytearray(base)
    if kind == "bit_flips":
        n = int(rng.integers(1, 9))
        for _ in range(n):
            data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        return bytes(data), f"{n} bit flips"
    if kind == "byte_runs":
        at, n = int(rng.integers(len(data))), int(rng.integers(1, 17))
        data[at:at + n] = rng.bytes(n)[:len(data) - at]
        return bytes(data), f"{n} bytes overwritten at {at}"
    if kind == "truncate":
        cut = int(rng.integers(len(data)))
        return bytes(data[:cut]), f"truncated to {cut} bytes"
    if kind == "splice":
        at, n = int(rng.integers(len(data))), int(rng.integers(1, 17))
        if rng.random() < 0.5:
            return bytes(data[:at] + data[at + n:]), f"{n} bytes deleted at {at}"
        return bytes(data[:at]) + rng.bytes(n) + bytes(data[at:]), f"{n} bytes inserted at {at}"
    if kind == "random_file":
        body = rng.bytes(int(rng.integers(0, 4096)))
        prefix = [b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"][int(rng.integers(4))]
        return prefix + body, f"random file of {len(prefix) + len(body)} bytes"
    members = _members(base)
    if kind == "manifest":
        names = [n for n, _ in members]
        i = names.index("manifest.json")
        manifest, what = _mutate_manifest(json.loads(members[i][1]), rng)
        members[i] = ("manifest.json", json.dumps(manifest).encode())
        return _zip(members, rng), what
    if kind == "array":
        arrays = [i for i, (n, _) in enumerate(members) if n.endswith(".npy")]
        i = arrays[int(rng.integers(len(arrays)))]
        data2, what = _mutate_array(members[i][1], rng)
        members[i] = (members[i][0], data2)
        return _zip(members, rng), f"{members[i][0]}: {what}"
    members, what = _mutate_members(members, rng)
    return _zip(members, rng), what


class _Timeout(BaseException):
    """A load ran past its time limit (BaseException: the loader must not catch it)."""


@contextmanager
def _time_limit(seconds: float):
    """Interrupt the block after ``seconds`` (main thread only; elsewhere, no limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _same_content(a: Artifact, b: Artifact) -> bool:
    if a.manifest() != b.manifest() or len(a.layers) != len(b.layers):
        return False
    for x, y in zip(a.layers, b.layers):
        for f in ("block_sizes", "keep", "offsets", "values", "scale", "bias", "input_columns"):
            u, v = getattr(x, f), getattr(y, f)
            if (u is None) != (v is None) or (u is not None and not np.array_equal(u, v)):
                return False
    return True


def _usable(artifact: Artifact, rng) -> str | None:
    """Why an accepted artifact is unusable, or ``None``: it must round-trip through
    save and load, and the golden model must agree with the dense matrix."""
    try:
        again = Artifact.load(_save_tmp(artifact))
        if not _same_content(artifact, again):
            return "it does not survive a save and load"
        for layer in artifact.layers:
            x = rng.integers(-128, 128, size=(2, layer.cols))
            dense = layer.to_dense().astype(np.int64)
            if not np.array_equal(spmv_ref(layer, x), x @ dense.T):
                return f"layer {layer.name!r}: golden model and dense matrix differ"
            figures = (layer.pruning_ratio, layer.index_bits_per_nnz, layer.accumulator_width())
            if not all(math.isfinite(v) for v in figures):
                return f"layer {layer.name!r}: derived figures {figures} are not finite"
    except Exception as e:                 # noqa: BLE001 - any failure is the finding
        return f"using it raised {type(e).__name__}: {e}"
    return None


def _save_tmp(artifact: Artifact) -> Path:
    path = Path(tempfile.mkdtemp(prefix="darbgen-fuzz-")) / "again.darb"
    artifact.save(path)
    return path


def fuzz_loader(inputs: int, seed: int = 0, *, time_limit: float = 5.0,
                bases: int = 6) -> FuzzReport:
    """Load ``inputs`` random and mutated files; count what happened.

    Parameters
    ----------
    inputs : int
        Files to try.
    seed : int
        Seeds the base artifacts and every mutation.
    time_limit : float
        Seconds after which a load counts as a hang (enforced with ``SIGALRM`` in the
        main thread).
    bases : int
        Valid artifacts that the mutations start from.

    Returns
    -------
    FuzzReport
        Counts ``inputs``, ``rejected``, ``accepted_intact`` (byte damage in bytes that
        carry nothing), ``accepted_valid`` (a structure edit that is itself a valid
        artifact), ``crashes``, ``hangs``, ``silent_corruptions`` and
        ``unclear_messages`` (an error that does not start with the file's path); and
        ``max_load_seconds``.
    """
    rng = np.random.default_rng(seed)
    report = FuzzReport("artifact loader", seed)
    start = time.monotonic()
    originals = [random_artifact(rng) for _ in range(bases)]
    raw = [_artifact_bytes(a) for a in originals]
    for key in ("inputs", "rejected", "accepted_intact", "accepted_valid", "crashes", "hangs",
                "silent_corruptions", "unclear_messages"):
        report.counts[key] = 0
    slowest = 0.0
    with tempfile.TemporaryDirectory(prefix="darbgen-fuzz-") as tmp:
        path = Path(tmp) / "input.darb"
        for n in range(inputs):
            kind = _LOADER_KINDS[int(rng.integers(len(_LOADER_KINDS)))]
            b = int(rng.integers(bases))
            data, what = _mutate(raw[b], kind, rng)
            path.write_bytes(data)
            report.count("inputs")
            report.by_kind[kind] = report.by_kind.get(kind, 0) + 1
            where = f"input {n} ({kind}: {what})"
            t0 = time.monotonic()
            try:
                with _time_limit(time_limit), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    loaded = Artifact.load(path)
            except ArtifactError as e:
                report.count("rejected")
                message = str(e)
                if not message.startswith(f"{path}: ") or "\n" in message:
                    report.fail("unclear_messages", f"{where}: {message!r}")
                continue
            except _Timeout:
                report.fail("hangs", f"{where}: load took over {time_limit} s")
                continue
            except Exception as e:          # noqa: BLE001 - any other exception is a crash
                report.fail("crashes", f"{where}: {type(e).__name__}: {e}")
                continue
            finally:
                slowest = max(slowest, time.monotonic() - t0)
            if kind in _BYTE_KINDS or kind == "random_file":
                if kind != "random_file" and _same_content(originals[b], loaded):
                    report.count("accepted_intact")
                else:
                    report.fail("silent_corruptions", f"{where}: accepted with other content")
                continue
            why = _usable(loaded, rng)
            if why is None:
                report.count("accepted_valid")
            else:
                report.fail("silent_corruptions", f"{where}: accepted, but {why}")
    report.counts["max_load_ms"] = round(slowest * 1000)
    report.seconds = time.monotonic() - start
    return report


# == the serial link ====================================================================

def valid_frames_in(data: bytes) -> list:
    """Every frame with a valid CRC that starts at any SOF byte of ``data`` and ends
    inside it: what a receiver that hunts from every byte could possibly accept."""
    found = []
    for i in range(len(data)):
        if data[i] != SOF or i + HEADER_BYTES > len(data):
            continue
        length = int.from_bytes(data[i + 3:i + 5], "little")
        end = i + HEADER_BYTES + length + 2
        if length > MAX_PAYLOAD or end > len(data):
            continue
        body = bytes(data[i + 1:i + HEADER_BYTES + length])
        if crc16(body) == int.from_bytes(data[end - 2:end], "little"):
            found.append(Frame(body[0], body[1], body[4:]))
    return found


def guard_of(words: list[int], sizes: Sizes) -> bytes:
    """The RUN guard of ``words`` (load words of a core with stream ``sizes``)."""
    return run_guard(len(words), weights_crc(words_to_bytes(words, sizes.load_bits)))


def _raw_frame(command: int, seq: int, payload: bytes, length: int | None = None) -> bytes:
    """A frame with a valid CRC; ``length`` may lie (past MAX_PAYLOAD: header only)."""
    length = len(payload) if length is None else length
    body = bytes([command, seq]) + length.to_bytes(2, "little") + payload
    return bytes([SOF]) + body + crc16(body).to_bytes(2, "little")


class ProtocolModel:
    """What a correct device answers to each valid frame, and the weights it holds.

    The rules of :mod:`darbgen.hdl.protocol`: ``LOAD_WEIGHTS`` at index 0 restarts
    the load, at the word count extends it, as a repeat of the chunk just applied
    (index + words == count) is acknowledged without effect, else ``NAK_OFFSET``;
    a short or ragged chunk is ``NAK_LENGTH``. ``RUN`` needs exactly the input
    beats' bytes and at least one row loaded (the engine's ``slots``: the most
    header words in one lane since the load restarted).

    Parameters
    ----------
    config : EngineConfig
    clock_hz, baud : int
        Those of the device (its IDENTIFY reply).
    """

    def __init__(self, config: EngineConfig, clock_hz: int, baud: int):
        self.config = config
        self.sizes = Sizes.of(config)
        self.identity = identity_bytes(config, clock_hz, baud)
        self.words: list[int] = []
        self._row_bits = max(1, math.ceil(math.log2(config.lane_rows + 1)))

    @property
    def slots(self) -> int:
        """Output beats per vector of what is loaded (as the engine counts them)."""
        if not self.words:
            return 0
        fields = unpack_fields(self.config.load_fields, self.words)
        rows = [0] * self.config.lanes
        for lane, header in zip(fields["lane"], fields["header"]):
            if header and lane < self.config.lanes:
                rows[lane] = (rows[lane] + 1) % (1 << self._row_bits)
        return max(rows)

    def predict(self, frame: Frame) -> tuple[int, int | None]:
        """Apply one valid frame; return its reply status and the length of the reply's
        body (``None`` when the length is not predicted)."""
        cmd, payload = frame.command, frame.payload
        if cmd == Command.IDENTIFY.value:
            return Status.OK.value, len(self.identity)
        if cmd == Command.STATUS.value:
            return Status.OK.value, None
        if cmd == Command.LOAD_WEIGHTS.value:
            n, ragged = divmod(len(payload) - OFFSET_BYTES, self.sizes.load_bytes)
            if len(payload) < OFFSET_BYTES + self.sizes.load_bytes or ragged:
                return Status.NAK_LENGTH.value, 0
            offset = int.from_bytes(payload[:OFFSET_BYTES], "little")
            chunk = bytes_to_words(payload[OFFSET_BYTES:], self.sizes.load_bits)
            if offset == 0:
                self.words = chunk
            elif offset == len(self.words):
                self.words = self.words + chunk
            elif offset + n != len(self.words):
                return Status.NAK_OFFSET.value, 0
            return Status.OK.value, 0
        if cmd == Command.RUN.value:
            if len(payload) != GUARD_BYTES + self.config.x_depth * self.sizes.x_bytes:
                return Status.NAK_LENGTH.value, 0
            slots = self.slots
            if slots == 0:
                return Status.NO_WEIGHTS.value, 0
            if payload[:GUARD_BYTES] != self.guard:
                return Status.NAK_WEIGHTS.value, 0
            # The first reply frame: its part head and as many beats as fit.
            return Status.OK.value, PART_BYTES + min(slots, self.sizes.y_frame_beats) * \
                self.sizes.y_bytes
        return Status.NAK_COMMAND.value, 0

    @property
    def guard(self) -> bytes:
        """The RUN guard that names the weights held."""
        return guard_of(self.words, self.sizes)

    def status_matches(self, reply: Reply) -> bool:
        """A STATUS reply's word count and weights CRC-32 are the model's."""
        return len(reply.body) == sum(n for _, n in STATUS_FIELDS) and \
            reply.body[:GUARD_BYTES] == self.guard      # the guard is STATUS's head


class _Hang(Exception):
    """A host session ran past its budget of reads."""


class NoisyTransport(Transport):
    """A damaged link in front of another transport.

    Per write: with probability ``p`` random bytes go first, a bit flips; with
    ``p / 2`` an earlier frame is replayed first, an earlier frame goes first restamped
    with this one's seq (its CRC made valid again: what a 1-in-256 replay looks like),
    the frame is truncated, dropped or sent twice. Per byte read, ``p / 300`` flips a
    bit. After ``budget`` reads the next one raises (a host that never stops reading
    is hung).
    """

    def __init__(self, inner: Transport, rng, p: float = 0.15, budget: int = 5000):
        self.inner, self.rng, self.p = inner, rng, p
        self.baud = inner.baud
        self.events = 0
        self._history: list[bytes] = []
        self._reads_left = budget

    def _chance(self, q):
        if self.rng.random() < q:
            self.events += 1
            return True
        return False

    def write(self, data):
        data = bytearray(data)
        if self._history and self._chance(self.p / 2):
            self.inner.write(self._history[int(self.rng.integers(len(self._history)))])
        if self._history and self._chance(self.p / 2):
            old = self._history[int(self.rng.integers(len(self._history)))]
            self.inner.write(encode_frame(old[1], data[2], old[HEADER_BYTES:-2]))
        self._history = (self._history + [bytes(data)])[-32:]
        if self._chance(self.p):
            self.inner.write(self.rng.bytes(int(self.rng.integers(1, 24))))
        if self._chance(self.p):
            data[int(self.rng.integers(len(data)))] ^= 1 << int(self.rng.integers(8))
        if self._chance(self.p / 2):
            data = data[:int(self.rng.integers(1, len(data)))]
        if self._chance(self.p / 2):
            return                                      # lost on the line
        self.inner.write(bytes(data))
        if self._chance(self.p / 2):
            self.inner.write(bytes(data))               # duplicated

    def read(self, timeout):
        self._reads_left -= 1
        if self._reads_left < 0:
            raise _Hang("the host kept reading past its budget of reads")
        data = bytearray(self.inner.read(timeout))
        for i in range(len(data)):
            if self._chance(self.p / 300):
                data[i] ^= 1 << int(self.rng.integers(8))
        return bytes(data)

    def clock(self):
        return self.inner.clock()


@dataclass
class LinkTarget:
    """A device to fuzz, behind a transport.

    Members
    -------
    name : str
    open : callable
        ``open()`` starts a fresh device (closing any previous one) and returns its
        :class:`~darbgen.host.transport.Transport`.
    config : EngineConfig
        The device's core.
    clock_hz, baud : int
        What it reports in IDENTIFY.
    quiet : float
        Seconds of silence after which the device has surely dropped a broken frame
        (more than ``IDLE_BYTES`` byte times).
    patience : float
        Seconds to wait for the reply to a valid frame.
    apply_byte : float
        Seconds the device may take a payload byte before it replies to a frame it
        took for valid (APPLY): added to ``quiet`` after a corrupted input, whose
        reply from a device that misses the corruption must still be seen.
    close : callable, optional
        Stops the device for good.
    """

    name: str
    open: object
    config: EngineConfig
    clock_hz: int
    baud: int
    quiet: float
    patience: float
    close: object = None
    apply_byte: float = 0.0


def simulated_target(config: EngineConfig, byte_cycles: int = 2) -> LinkTarget:
    """The protocol controller in Amaranth's simulator (:class:`SimulatedLink`)."""
    clock_hz, baud = SimulatedLink.CLOCK_HZ, SimulatedLink.BAUD
    return LinkTarget(
        "Amaranth-simulated controller", lambda: SimulatedLink(config, byte_cycles=byte_cycles),
        config, clock_hz, baud,
        # A broken frame is dropped after IDLE_BYTES byte times; a valid frame's reply
        # starts at most about one buffer read (MAX_PAYLOAD cycles) after it ended.
        quiet=(IDLE_BYTES * byte_cycles + 64) / clock_hz,
        patience=(2 * MAX_PAYLOAD * byte_cycles + 1000) / clock_hz,
        apply_byte=APPLY_BYTE_CYCLES / clock_hz)


def board_target(layer: SparseLayer, board: str = "icebreaker", lanes: int = 2, *,
                 quiet: float = 0.05, patience: float = 2.0) -> LinkTarget:
    """A board's whole device (UART + controller + engine, the bitstream's RTL) in
    Verilator, behind a pseudo-terminal (:class:`~darbgen.sim.board_sim.BoardSim`),
    for ``layer`` at ``lanes`` lanes. Timeouts are wall-clock seconds: ``quiet``
    must exceed ``IDLE_BYTES`` byte times of the simulated board."""
    from ..boards import get_board
    from ..boards.core import DEVICE_TOP, device, device_verilog
    from ..host.transport import SerialTransport
    from .board_sim import BoardSim

    spec = get_board(board)
    dev = device(spec, layer, lanes)
    verilog = device_verilog(dev)
    state = {}

    def close():
        if state:
            state.pop("link").close()
            state.pop("sim").close()

    def open_():
        close()
        sim = BoardSim(verilog, DEVICE_TOP, dev.divisor)
        sim.start()
        state.update(sim=sim, link=SerialTransport(sim.port, spec.baud))
        return state["link"]

    return LinkTarget(f"{spec.name} device in Verilator over a pseudo-terminal", open_,
                      dev.config, spec.clock_hz, spec.baud, quiet, patience, close)


def _fuzz_layer(rng) -> SparseLayer:
    """The layer the link fuzz loads: small (fast to simulate), several chunks."""
    rows, cols = 12, 24
    b = rng.choice([2, 4, 8], size=rows)
    k = np.array([int(rng.integers(1, 3)) for _ in range(rows)])
    offsets = []
    for r in range(rows):
        for _ in range(0, cols, b[r]):
            offsets.extend(np.sort(rng.choice(b[r], size=k[r], replace=False)))
    return SparseLayer(name="fuzz", rows=rows, cols=cols, block_sizes=b, keep=k,
                       offsets=np.asarray(offsets),
                       values=rng.integers(-128, 128, size=len(offsets)),
                       scale=np.full(rows, 0.05), method="darb")


def _variant(layer: SparseLayer, rng) -> SparseLayer:
    """Some of ``layer``'s rows with fresh weights: it fits the same engine."""
    rows = np.sort(rng.choice(layer.rows, size=int(rng.integers(1, layer.rows + 1)),
                              replace=False))
    starts = layer.row_starts
    idx = np.concatenate([np.arange(starts[r], starts[r + 1]) for r in rows])
    return SparseLayer(name="variant", rows=len(rows), cols=layer.cols,
                       block_sizes=layer.block_sizes[rows], keep=layer.keep[rows],
                       offsets=layer.offsets[idx], values=rng.integers(-128, 128, size=idx.size),
                       scale=layer.scale[rows], method="darb")


class _LinkFuzzer:
    """State of one :func:`fuzz_link` run (see there)."""

    KINDS = ("chunk", "run", "flip", "truncate", "replay", "random_frame", "garbage")
    WEIGHTS = (0.2, 0.1, 0.2, 0.12, 0.12, 0.14, 0.12)

    def __init__(self, report, rng, layer, target: LinkTarget, chunk_words):
        self.report, self.rng, self.layer, self.target = report, rng, layer, target
        self.config = target.config
        self.sizes = Sizes.of(self.config)
        self.sched = schedule(layer, self.config.lanes)
        self.words = load_words(layer, self.config, self.sched)
        self.chunk_words = chunk_words
        self.seq = int(rng.integers(256))
        self.history: list[bytes] = []
        self.link = None
        self.cycles = 0                     # simulated cycles of earlier devices
        self.fresh_device()

    def fresh_device(self):
        self.cycles += getattr(self.link, "cycles", 0)
        self.link = self.target.open()
        self.model = ProtocolModel(self.config, self.target.clock_hz, self.target.baud)

    def next_seq(self):
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    # -- exchanges -----------------------------------------------------------------

    def send(self, data: bytes, wait_for=None, patience=None) -> list[Reply]:
        """Send ``data``; collect replies until one to ``wait_for`` ((command, seq))
        has arrived and the line is quiet, or until it is quiet for ``patience``
        (waiting for a reply) or ``quiet`` seconds. A frame from the device that is no
        reply is a protocol mismatch."""
        parser = FrameParser()
        self.link.write(data)
        frames = []
        while True:
            if wait_for is None:
                # until any frame in progress is dropped, or applied and answered
                timeout = self.target.quiet + len(data) * self.target.apply_byte
            elif any((f.command, f.seq) == wait_for for f in frames):
                timeout = self.target.quiet / 4     # whatever else may follow the reply
            else:
                timeout = patience or self.target.patience
            got = self.link.read(timeout)
            if not got:
                return frames
            for frame in parser.feed(got):
                if frame.reply is None:
                    self.report.fail("protocol_mismatches", f"the device sent a frame that "
                                     f"is no reply: {frame}")
                else:
                    frames.append(frame.reply)

    def status(self, attempts: int = 4):
        """A clean STATUS, retried; its reply frame or ``None``. A retry waits for
        ``quiet`` first, so that a frame the device is still receiving is dropped."""
        for i in range(attempts):
            if i:
                self.link.read(self.target.quiet)
            request = Frame(Command.STATUS.value, self.next_seq(), b"")
            # STATUS is answered at once: waiting 2 * quiet for it is plenty.
            for r in self.send(request.encode(), (request.command, request.seq),
                               patience=2 * self.target.quiet):
                if r.answers(request) and r.status == Status.OK.value:
                    return r
        return None

    # -- inputs --------------------------------------------------------------------

    def chunk_frame(self):
        """The next chunk of the layer's load; once it is complete, mostly the last
        chunk again (a repeat, acknowledged without effect), else chunk 0 (a restart)."""
        have = self.model.words
        if have == self.words and self.rng.random() < 0.75:
            at = (len(have) - 1) // self.chunk_words * self.chunk_words
        elif have == self.words[:len(have)] and len(have) < len(self.words):
            at = len(have) - len(have) % self.chunk_words
        else:
            at = 0
        payload = at.to_bytes(OFFSET_BYTES, "little") + \
            words_to_bytes(self.words[at:at + self.chunk_words], self.sizes.load_bits)
        return encode_frame(Command.LOAD_WEIGHTS, self.next_seq(), payload)

    def run_frame(self, x):
        """RUN ``x``, meant for the layer's weights or (as often) for those held."""
        guard = guard_of(self.words, self.sizes) if self.rng.random() < 0.5 else self.model.guard
        payload = words_to_bytes(input_words(x, self.config, last=False), self.sizes.x_bits)
        return encode_frame(Command.RUN, self.next_seq(), guard + payload)

    def clean_frame(self):
        """A correct frame of any command (for flips and truncations)."""
        pick = int(self.rng.integers(4))
        if pick == 0:
            return self.chunk_frame()
        if pick == 1:
            return self.run_frame(self.rng.integers(-128, 128, size=self.layer.cols))
        return encode_frame([Command.STATUS, Command.IDENTIFY][pick - 2], self.next_seq())

    def random_frame(self):
        rng = self.rng
        pick = int(rng.integers(6))
        seq = int(rng.integers(256))
        if pick == 0:                           # a load chunk at some index, random words
            n = int(rng.integers(1, self.sizes.chunk_words + 1))
            have = len(self.model.words)
            at = [max(0, have - n), int(rng.integers(1 << 32)), have, 0][
                int(rng.choice(4, p=[0.35, 0.35, 0.2, 0.1]))]
            ragged = int(rng.integers(-1, 2)) if rng.random() < 0.2 else 0
            size = min(n * self.sizes.load_bytes + ragged, MAX_PAYLOAD - OFFSET_BYTES)
            return _raw_frame(Command.LOAD_WEIGHTS.value, seq,
                              at.to_bytes(OFFSET_BYTES, "little") + rng.bytes(max(0, size)))
        if pick == 1:                           # RUN, right or wrong length and guard
            n = GUARD_BYTES + self.config.x_depth * self.sizes.x_bytes + \
                [0, 0, 1, -1][int(rng.integers(4))]
            payload = rng.bytes(max(0, n))
            if rng.random() < 0.5:
                payload = (self.model.guard + payload[GUARD_BYTES:])[:len(payload)]
            return _raw_frame(Command.RUN.value, seq, payload)
        if pick == 2:                           # a length past MAX_PAYLOAD: header only
            length = int(rng.integers(MAX_PAYLOAD + 1, 1 << 16))
            return _raw_frame(int(rng.integers(256)), seq, b"", length)[:HEADER_BYTES]
        command = int(rng.integers(256)) if pick == 3 else \
            [c.value for c in Command][int(rng.integers(len(Command)))]
        return _raw_frame(command, seq, rng.bytes(int(rng.integers(0, 64))))

    def corrupted(self, kind):
        """Bytes of a corrupted input with no valid frame inside (redrawn if needed)."""
        for _ in range(100):
            if kind == "flip":
                data = bytearray(self.clean_frame())
                for _ in range(int(self.rng.integers(1, 4))):
                    data[int(self.rng.integers(len(data)))] ^= 1 << int(self.rng.integers(8))
            elif kind == "truncate":
                frame = self.clean_frame()
                data = frame[:int(self.rng.integers(1, len(frame)))]
            else:
                data = bytearray(self.rng.bytes(int(self.rng.integers(1, 80))))
                if self.rng.random() < 0.5:             # a header that claims a payload
                    at = int(self.rng.integers(len(data)))
                    length = int(self.rng.integers(0, MAX_PAYLOAD + 1))
                    data[at:at] = bytes([SOF, int(self.rng.integers(256)),
                                         int(self.rng.integers(256))]) + \
                        length.to_bytes(2, "little")
            if not valid_frames_in(bytes(data)):
                return bytes(data)
            self.report.count("crc_collisions_redrawn")
        raise AssertionError("could not draw a corrupted input without a valid frame")

    # -- one input -------------------------------------------------------------------

    def step(self, n):
        kind = self.KINDS[int(self.rng.choice(len(self.KINDS), p=self.WEIGHTS))]
        if kind == "replay" and not self.history:
            kind = "chunk"
        self.report.by_kind[kind] = self.report.by_kind.get(kind, 0) + 1
        self.report.count("inputs")
        where = f"input {n} ({kind})"
        x = None
        if kind in ("flip", "truncate", "garbage"):
            data = self.corrupted(kind)
        elif kind == "replay":
            data = self.history[int(self.rng.integers(len(self.history)))]
        elif kind == "run":
            x = self.rng.integers(-128, 128, size=self.layer.cols)
            data = self.run_frame(x)
        elif kind == "random_frame":
            data = self.random_frame()
        else:
            data = self.chunk_frame()
        self.report.count("bytes", len(data))
        frames = [] if kind in ("flip", "truncate", "garbage") else valid_frames_in(data)[:1]
        if not frames:                          # corrupted, or a header past MAX_PAYLOAD
            self._check_corrupted(data, where)
        else:
            if kind != "replay":
                self.history = (self.history + [data])[-64:]
            self._check_valid(data, frames[0], x, where)
        # The device must answer a clean STATUS and hold exactly the model's weights.
        reply = self.status()
        if reply is None:
            self.report.fail("hangs", f"{where}: no STATUS reply after 4 attempts "
                             f"(input {data[:24].hex()}...)")
            self.fresh_device()
        elif not self.model.status_matches(reply):
            self.report.fail("silent_corruptions", f"{where}: the device holds other weights "
                             f"than the model after {data[:24].hex()}...")
            self.fresh_device()

    def _check_corrupted(self, data, where):
        long_header = len(data) == HEADER_BYTES and data[0] == SOF and \
            int.from_bytes(data[3:5], "little") > MAX_PAYLOAD
        replies = self.send(data, (data[1] & ~REPLY, data[2]) if long_header else None)
        for r in replies:
            if r.status == Status.OK.value:
                self.report.fail("silent_corruptions", f"{where}: a corrupted input was "
                                 f"answered OK: {data.hex()}")
        # A frame refused at its header has no CRC field: its NAK echoes 0.
        if long_header and not any((r.status, r.check, r.body) == (Status.NAK_LENGTH.value, 0, b"")
                                   for r in replies):
            self.report.fail("protocol_mismatches", f"{where}: no NAK_LENGTH for a length "
                             f"past MAX_PAYLOAD: {data.hex()}")

    def _check_valid(self, data, frame, x, where):
        status, length = self.model.predict(frame)
        key = (frame.command & ~REPLY, frame.seq)      # a reply's command has REPLY cleared
        replies = [r for r in self.send(data, key) if (r.command, r.seq) == key]
        if len(replies) != 1:
            self.report.fail("protocol_mismatches", f"{where}: {len(replies)} replies to a "
                             f"valid frame {data[:16].hex()}...")
            return
        reply = replies[0]
        if not reply.answers(frame):
            self.report.fail("protocol_mismatches", f"{where}: the reply echoes CRC "
                             f"{reply.check:04x}, the request's is {frame.check:04x}")
        elif reply.status != status or (length is not None and len(reply.body) != length):
            self.report.fail("protocol_mismatches",
                             f"{where}: reply status {reply.status}, body {reply.body[:8].hex()} "
                             f"({len(reply.body)} bytes); the model says status {status} "
                             f"({length} bytes)")
        elif frame.command == Command.IDENTIFY.value and reply.body != self.model.identity:
            self.report.fail("protocol_mismatches", f"{where}: wrong IDENTIFY reply")
        elif x is not None and status == Status.OK.value and self.model.words == self.words:
            # The fuzz layer's output fits one reply frame: the part of beats 0 to slots.
            first, count, data = parse_run_part(reply.body, self.sizes.y_bytes)
            if (first, count) != (0, self.sched.slots):
                self.report.fail("protocol_mismatches", f"{where}: a RUN reply part names "
                                 f"beats from {first} of {count}, not 0 of {self.sched.slots}")
                return
            y = unpack_outputs(bytes_to_words(data, self.sizes.y_bits), self.config,
                               self.sched)[0]
            if np.array_equal(y, spmv_ref(self.layer, x)):
                self.report.count("exact_runs")
            else:
                self.report.fail("silent_corruptions", f"{where}: RUN returned other outputs "
                                 "than the golden model")

    def host_session(self, n, p):
        """The real driver over a noisy link: load a layer, run vectors, up to 3 tries."""
        layer = _variant(self.layer, self.rng) if self.rng.random() < 0.7 else self.layer
        x = self.rng.integers(-128, 128, size=(3, layer.cols))
        noisy = NoisyTransport(self.link, self.rng, p=p)
        self.report.count("host_sessions")
        recovered = False
        for _ in range(3):
            # 8 retries, the default; small chunks, so that a replayed first chunk
            # can restart a load that took several
            board = Board(noisy, timeout=self.target.patience, chunk_words=self.chunk_words)
            board._seq = int(self.rng.integers(256))    # reproducible; any start is valid
            try:
                board.identify()
                board.load(layer)
                y = board.run(x)
            except LinkError as e:
                self.report.count("host_attempts_failed")
                self.report.by_kind[f"host {type(e).__name__}"] = \
                    self.report.by_kind.get(f"host {type(e).__name__}", 0) + 1
                continue
            except _Hang as e:
                self.report.fail("hangs", f"host session {n}: {e}")
                break
            except Exception as e:          # noqa: BLE001 - anything else is a crash
                self.report.fail("crashes", f"host session {n}: {type(e).__name__}: {e}")
                break
            finally:
                self.report.count("host_retries", board.retried)
            golden = spmv_ref(layer, x)
            if np.array_equal(y, golden):
                self.report.count("host_recovered")
                recovered = True
            else:
                # A stale reply (another vector's outputs) would mean the host took the
                # answer to a replayed RUN for its own: protocol v3's open finding.
                stale = [(i, j) for i in range(len(x)) for j in range(len(x))
                         if i != j and not np.array_equal(y[i], golden[i])
                         and np.array_equal(y[i], golden[j])]
                self.report.fail("silent_corruptions", f"host session {n}: outputs differ "
                                 "from the golden model" + "".join(
                                     f"; vector {i} got vector {j}'s outputs" for i, j in stale))
            break
        else:
            self.report.count("host_gave_up")
        self.report.count("noise_events", noisy.events)
        if not recovered:
            # The host gave up (a clear error): the device must still answer a clean
            # link. What it holds is unknown, so the model starts over on a fresh one.
            self.link.read(self.target.quiet)
            if self.status() is None:
                self.report.fail("hangs", f"host session {n}: no STATUS reply after the "
                                 "host gave up")
            self.fresh_device()
            return
        # The device must hold what the host verified (it said so by CRC-32).
        self.link.read(self.target.quiet)   # let the noise's leftovers be dropped
        self.model.words = load_words(layer, self.config, schedule(layer, self.config.lanes))
        reply = self.status()
        if reply is None or not self.model.status_matches(reply):
            self.report.fail("silent_corruptions", f"host session {n}: the device holds "
                             "other weights than the host verified")
            self.fresh_device()


def fuzz_link(inputs: int, seed: int = 0, *, host_sessions: int = 0, noise=(0.15, 0.5),
              target=None, layer: SparseLayer | None = None, chunk_words: int = 32) -> FuzzReport:
    """Attack the protocol controller; count what happened.

    Parameters
    ----------
    inputs : int
        Adversarial inputs (frames, damaged frames, garbage), each followed by a clean
        STATUS.
    seed : int
        Seeds the layer, every input and the noise.
    host_sessions : int
        Runs of the host driver over a :class:`NoisyTransport` after the inputs.
    noise : float or sequence of float
        The noisy transport's ``p``, or values the sessions take in turn (at 0.5 the
        host sometimes gives up an attempt and must start over).
    target : callable, optional
        ``target(layer)`` returns the :class:`LinkTarget` to fuzz; by default the
        controller in Amaranth's simulator with 2 lanes (:func:`simulated_target`).
    layer : SparseLayer, optional
        The layer to load (default: a random 12 × 24 DARB layer).
    chunk_words : int
        Load words per correct chunk.

    Returns
    -------
    FuzzReport
        Counts ``inputs``, ``bytes``, ``hangs``, ``silent_corruptions``, ``crashes``,
        ``protocol_mismatches``, ``exact_runs``, ``crc_collisions_redrawn``,
        ``sim_cycles`` (a simulated controller's clock cycles) and, with host sessions,
        ``host_sessions``, ``host_recovered``, ``host_gave_up``, ``host_attempts_failed``,
        ``host_retries``, ``noise_events``.
    """
    rng = np.random.default_rng(seed)
    layer = layer if layer is not None else _fuzz_layer(rng)
    link_target = (target or (lambda l: simulated_target(EngineConfig.for_layers([l], 2))))(layer)
    report = FuzzReport(f"serial link ({link_target.name})", seed)
    for key in ("inputs", "bytes", "hangs", "crashes", "silent_corruptions",
                "protocol_mismatches", "exact_runs", "crc_collisions_redrawn"):
        report.counts[key] = 0
    start = time.monotonic()
    fuzzer = _LinkFuzzer(report, rng, layer, link_target, chunk_words)
    try:
        for n in range(inputs):
            fuzzer.step(n)
        if host_sessions:
            for key in ("host_sessions", "host_recovered", "host_gave_up",
                        "host_attempts_failed", "host_retries", "noise_events"):
                report.counts[key] = 0
        for n in range(host_sessions):
            levels = noise if isinstance(noise, (tuple, list)) else (noise,)
            fuzzer.host_session(n, levels[n % len(levels)])
    finally:
        fuzzer.link.close()
        if link_target.close:
            link_target.close()
    if hasattr(fuzzer.link, "cycles"):
        report.counts["sim_cycles"] = fuzzer.cycles + fuzzer.link.cycles
    report.seconds = time.monotonic() - start
    return report
