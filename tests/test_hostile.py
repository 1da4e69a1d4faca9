"""Hostile input (issue 16), one regression per class that once executed, crashed, hung,
clobbered or silently changed something; the CLI's own cases are in test_cli_errors.py and
the structure-aware fuzzer in test_hostile_fuzz.py."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import darbgen.files as files
from darbgen.cli import format_table
from darbgen.config import ConfigError, EngineConfig
from darbgen.files import atomic_write, check_output, open_input, read_input
from darbgen.format import Artifact, ArtifactError, SparseLayer
from darbgen.hdl.protocol import REPLY, Command
from darbgen.host import Board, LinkTimeout, Transport
from darbgen.host.framing import Frame
from darbgen.network import plan

from conftest import random_layer

SEED = 20261207


# -- files -------------------------------------------------------------------------------

def test_special_files_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO"), ("/dev/zero", "a character device"),
                       (tmp_path, "a directory")):
        with pytest.raises(ValueError, match=rf"^{path}: is {kind}, not an artifact$"):
            read_input(path, what="an artifact")


def test_size_cap(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    with pytest.raises(ValueError, match=rf"^{big}: is 101 bytes, more than the 100 a file "
                                         "may have$"):
        open_input(big, max_bytes=100)
    assert read_input(big, max_bytes=101) == b"x" * 101


def test_output_checks(tmp_path):
    source = tmp_path / "w.npy"
    source.write_bytes(b"keep me")
    link = tmp_path / "link.npy"
    link.symlink_to(source)
    with pytest.raises(ValueError, match=r"is the command's input .*; write the output to "):
        check_output(link, [source])            # the same file by another name
    with pytest.raises(ValueError, match=r"^/dev/null: is a character device, not an output "
                                         r"file$"):
        check_output("/dev/null")
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'no'}: no such directory for the "
                                         "output$"):
        check_output(tmp_path / "no" / "y.npy")
    # Even root cannot create files in /proc: the check tries, so it fails before any work.
    with pytest.raises(ValueError, match=r"^/proc: cannot write the output there \(.*\)$"):
        check_output("/proc/y.npy")
    assert source.read_bytes() == b"keep me"
    check_output(tmp_path / "new.npy", [source])


def test_atomic_write_never_replaces_a_special_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"is a FIFO, not an output file$"):
        atomic_write(fifo, lambda f: f.write(b"data"))
    assert fifo.is_fifo() and sorted(os.listdir(tmp_path)) == ["fifo"]


@pytest.mark.parametrize("named", [True, False], ids=["linked", "copied"])
def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch, named):
    """Both ways of naming the finished file (a link of the unnamed file, or a copy
    where links are refused) put exactly the data in place and nothing else."""
    if not named:
        monkeypatch.setattr(files, "_give_name", lambda fd, name: False)
    out = tmp_path / "out.bin"
    atomic_write(out, lambda f: f.write(b"complete"))
    assert out.read_bytes() == b"complete"

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(out, fail)
    assert out.read_bytes() == b"complete" and os.listdir(tmp_path) == ["out.bin"]


def test_kill_9_leaves_no_temporary_file(tmp_path):
    """A writer killed mid-write leaves the old output and no hidden temporary file."""
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    script = ("import sys, time\nfrom darbgen.files import atomic_write\n"
              "def slow(f):\n    f.write(b'new' * 1000)\n    f.flush()\n"
              "    print('writing', flush=True)\n    time.sleep(60)\n"
              f"atomic_write({str(out)!r}, slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"writing\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


# -- the contract -------------------------------------------------------------------------

def test_engine_config_refuses_fractional_shifts():
    kw = dict(lanes=2, max_keep=1, max_row_nnz=8, max_cols=16, lane_depth=8, lane_rows=4)
    with pytest.raises(ConfigError, match=r"^shifts must be a tuple of integers, not "
                                          r"\(2\.7,\)$"):
        EngineConfig(shifts=(2.7,), **kw)
    with pytest.raises(ConfigError, match=r"^shifts must be a tuple of integers, not 3$"):
        EngineConfig(shifts=3, **kw)


def calibrated(rng, bias):
    layer = random_layer(rng, 4, 8, [2], name="fc")
    return SparseLayer(name="fc", rows=4, cols=8, block_sizes=layer.block_sizes,
                       keep=layer.keep, offsets=layer.offsets, values=layer.values,
                       scale=layer.scale, bias=bias, input_scale=1 / 16)


@pytest.mark.filterwarnings("error")     # numpy's RuntimeWarnings once came first
@pytest.mark.parametrize("bias, scales", [
    (np.array([0.0, 1e30, 0.0, 0.0]), (1.0, 1 / 16)),     # wrapped in the int64 cast
    (np.array([0.0, 1.0, 0.0, 0.0]), (1e-300, 1e-300)),   # a step of 0: 1 / 0 = inf
])
def test_huge_bias_is_refused_not_wrapped(bias, scales):
    """A 1e30 bias once wrapped in the int64 cast and passed the 32-bit check."""
    rng = np.random.default_rng(SEED)
    layer = calibrated(rng, bias)
    layer = SparseLayer(**{**{f: getattr(layer, f) for f in (
        "name", "rows", "cols", "block_sizes", "keep", "offsets", "values", "bias")},
        "scale": scales[0], "input_scale": scales[1]})
    with pytest.raises(ArtifactError, match=r"^layer 'fc': bias plus accumulator exceeds 32 "
                                            r"bits$"):
        plan(Artifact([layer]))


def test_save_refuses_what_load_would_refuse(tmp_path):
    rng = np.random.default_rng(SEED)
    out = tmp_path / "a.darb"
    for provenance in ({"accuracy": float("nan")}, {"seed": np.int64(3)}):
        with pytest.raises(ArtifactError, match=r"^the manifest \(provenance, params\) must "
                                                r"be plain JSON: "):
            Artifact([random_layer(rng, 4, 8, [2])], provenance).save(out)
    assert not out.exists()


def test_table_escapes_terminal_sequences():
    rng = np.random.default_rng(SEED)
    layer = random_layer(rng, 4, 8, [2], name="\x1b[2Jevil\x07")
    table = format_table(Artifact([layer], {"source": "\x1b]0;title\x07",
                                            "accuracy": {"dense": "high"}}), "a.darb")
    assert "\x1b" not in table and "\x07" not in table
    assert "\\x1b[2Jevil\\x07" in table and "accuracy: dense high" in table


# -- the link -----------------------------------------------------------------------------

class ForeignTraffic(Transport):
    """A line on which other traffic never stops: a valid STATUS reply for another
    request, and garbage, every few milliseconds; the board itself never answers."""

    def __init__(self):
        self.reply = Frame(Command.STATUS.value | REPLY, 7, bytes(16)).encode()

    def write(self, data):
        pass

    def read(self, timeout):
        time.sleep(min(timeout, 0.005))
        return self.reply + b"\x00garbage"


def test_foreign_traffic_does_not_keep_a_request_alive():
    """Deploy once ran 90 s under a STATUS flood: its timeout counted silence only."""
    board = Board(ForeignTraffic(), timeout=0.1, retries=3)
    start = time.monotonic()
    with pytest.raises(LinkTimeout, match=r"^no reply to IDENTIFY after 3 attempts "
                                          r"\(0\.1 s each\)$"):
        board.identify()
    assert time.monotonic() - start < 1.0


def test_session_deadline():
    board = Board(ForeignTraffic(), timeout=0.1, retries=100, deadline=0.35)
    start = time.monotonic()
    with pytest.raises(LinkTimeout, match=r"^IDENTIFY: the session's deadline of 0\.35 s "
                                          r"has passed$"):
        board.identify()
    assert time.monotonic() - start < 1.0
    with pytest.raises(ValueError, match=r"^deadline must be a positive number of seconds, "
                                         r"not inf$"):
        Board(ForeignTraffic(), deadline=float("inf"))


def test_simulate_an_empty_batch(tmp_path, capsys):
    """An empty X once got Y written and then an error; it is a valid, empty batch."""
    import json

    from darbgen.cli import main
    rng = np.random.default_rng(SEED)
    Artifact([random_layer(rng, 5, 12, [2, 4])]).save(tmp_path / "a.darb")
    np.save(tmp_path / "x.npy", np.zeros((0, 12), np.int8))
    assert main(["simulate", str(tmp_path / "a.darb"), "--inputs", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    assert y.shape == (0, 5) and y.dtype == np.int64
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["exact"] is True
