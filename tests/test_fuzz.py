"""Fuzzing with counts: the artifact loader and the serial link (short runs; the long
ones are bench/fuzz_bench.py). Each fuzzer is also shown to find a planted fault."""

import io
import re
import zipfile

import numpy as np
import pytest

import darbgen.format
import darbgen.hdl.device
import darbgen.sim.link_sim
from darbgen.config import EngineConfig
from darbgen.hdl.link import FrameReceiver
from darbgen.hdl.protocol import Command
from darbgen.host import Board, Transport
from darbgen.host.framing import encode_frame
from darbgen.sim.fuzz import fuzz_link, fuzz_loader, valid_frames_in
from darbgen.sim.golden import spmv_ref
from darbgen.sim.link_sim import SimulatedLink

from conftest import random_layer

SEED = 20261121


def test_loader_fuzz_counts():
    report = fuzz_loader(1000, seed=SEED)
    c = report.counts
    assert c["inputs"] == 1000, report
    assert (c["hangs"], c["crashes"], c["silent_corruptions"], c["unclear_messages"]) == \
        (0, 0, 0, 0), report.failures
    assert c["rejected"] + c["accepted_intact"] + c["accepted_valid"] == 1000
    assert c["rejected"] > 700 and c["accepted_valid"] > 0 and c["accepted_intact"] > 0
    assert len(report.by_kind) == 8 and min(report.by_kind.values()) > 80, report.by_kind


def test_loader_fuzz_finds_a_loader_that_trusts_npy_headers(monkeypatch):
    """The check can fail: with plain np.load, which allocates whatever a damaged .npy
    header claims, the fuzzer sees MemoryError crashes."""
    monkeypatch.setattr(darbgen.format, "read_npy",
                        lambda data: np.load(io.BytesIO(data), allow_pickle=False))
    report = fuzz_loader(500, seed=0)
    assert report.counts["crashes"] > 0, report
    assert "MemoryError" in report.failures[0]


def test_link_fuzz_counts():
    """Random frames, flipped bits, truncations, replays and garbage against the
    controller in simulation, then the host driver over a noisy link: no hang, no
    silent corruption, every reply as the protocol model predicts."""
    report = fuzz_link(60, seed=SEED, host_sessions=1)
    c = report.counts
    assert c["inputs"] == 60 and c["host_sessions"] == 1, report
    assert (c["hangs"], c["crashes"], c["silent_corruptions"], c["protocol_mismatches"]) == \
        (0, 0, 0, 0), report.failures
    assert c["exact_runs"] > 0 and c["host_recovered"] == 1
    assert {"chunk", "run", "flip", "truncate", "replay", "random_frame", "garbage"} <= \
        set(report.by_kind), report.by_kind


class IgnoresCRC(FrameReceiver):
    """A receiver that forgets to check the CRC (the last assignment wins)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.d.sync += self.crc_ok.eq(1)
        return m


def test_link_fuzz_finds_a_receiver_that_ignores_the_crc(monkeypatch):
    monkeypatch.setattr(darbgen.hdl.device, "FrameReceiver", IgnoresCRC)
    report = fuzz_link(30, seed=0)
    assert report.counts["silent_corruptions"] > 0, report
    assert "answered OK" in report.failures[0]


def test_link_fuzz_finds_a_device_that_never_drops_a_broken_frame(monkeypatch):
    """Without the idle timeout, a truncated frame swallows the next requests."""
    monkeypatch.setattr(darbgen.sim.link_sim, "IDLE_BYTES", 1 << 20)
    report = fuzz_link(30, seed=0)
    assert report.counts["hangs"] > 0, report
    assert "no STATUS reply" in report.failures[0]


def test_host_driver_over_the_simulated_controller(rng):
    layer = random_layer(rng, 9, 20, [2, 4, 8], keep=2)
    link = SimulatedLink(EngineConfig.for_layers([layer], 2))
    board = Board(link, timeout=link.seconds(5000))
    assert board.load(layer).verified
    x = rng.integers(-128, 128, size=(2, layer.cols))
    assert np.array_equal(board.run(x), spmv_ref(layer, x))
    assert link.cycles > 0 and link.sent > 0 and link.received > 0


def test_simulated_link_checks_byte_cycles(rng):
    config = EngineConfig.for_layers([random_layer(rng, 2, 8, [2])], 1)
    with pytest.raises(ValueError, match=r"^byte_cycles must be a positive integer, not 0$"):
        SimulatedLink(config, byte_cycles=0)


def test_valid_frames_in():
    frame = encode_frame(Command.STATUS, 7, b"\xa5\x01")
    assert [(f.command, f.seq, f.payload) for f in valid_frames_in(b"\x00\xa5" + frame)] == \
        [(Command.STATUS.value, 7, b"\xa5\x01")]
    assert valid_frames_in(frame[:-1]) == []
    broken = bytearray(frame)
    broken[6] ^= 4
    assert valid_frames_in(bytes(broken)) == []


def test_a_lying_npy_header_is_refused_before_allocating(tmp_path, rng):
    """What the loader fuzz found: a header claiming 2^40 elements made np.load
    allocate first (MemoryError). The header is now checked against the data."""
    from darbgen.format import Artifact, ArtifactError, read_npy
    from darbgen.sim.fuzz import _npy_with_header

    lie = _npy_with_header({"descr": "|i1", "fortran_order": False, "shape": (1 << 40,)},
                           b"\x01\x02")
    with pytest.raises(ValueError, match=r"^the \.npy header claims shape \(1099511627776,\) "
                                         r"of int8 \(1099511627776 bytes\), but 2 bytes "
                                         r"follow it$"):
        read_npy(lie)
    good = tmp_path / "good.darb"
    Artifact([random_layer(rng, 4, 16, [4], name="fc")]).save(good)
    bad = tmp_path / "bad.darb"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            zout.writestr(name, lie if name == "layers/0/values.npy" else zin.read(name))
    with pytest.raises(ArtifactError, match=r"^.*bad\.darb: layer 'fc': field 'values': "
                                            r"unreadable array \(the \.npy header claims shape "
                                            r"\(1099511627776,\) of int8"):
        Artifact.load(bad)
    assert np.array_equal(read_npy(_npy(np.arange(5, dtype=np.int16))), np.arange(5))


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_an_empty_shape_is_refused(tmp_path, rng):
    """What the long loader fuzz found (1 input in 100,000): a manifest 'shape' of []
    raised IndexError instead of naming the field."""
    import json

    from darbgen.format import Artifact, ArtifactError

    good = tmp_path / "good.darb"
    Artifact([random_layer(rng, 4, 16, [4], name="fc")]).save(good)
    bad = tmp_path / "bad.darb"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "manifest.json":
                manifest = json.loads(data)
                manifest["layers"][0]["shape"] = []
                data = json.dumps(manifest).encode()
            zout.writestr(name, data)
    with pytest.raises(ArtifactError, match=r"^.*bad\.darb: layer 'fc': field 'shape' \(\) "
                                            r"does not flatten to \(4, 16\)$"):
        Artifact.load(bad)


@pytest.mark.parametrize("echo_checked", [True, False], ids=["v4", "seq-only"])
def test_a_replayed_run_with_the_awaited_seq_is_not_taken_for_the_reply(rng, monkeypatch,
                                                                        echo_checked):
    """What the link fuzz found (1 of 20 noisy host sessions on the Verilator board,
    protocol v3): an earlier RUN frame, replayed on the line with the same seq as the
    RUN the host now awaits, is answered first, and the host took that answer for its
    own. Since v4 a reply echoes its request's CRC, and the host drops the stale one;
    a host that ties replies by command and seq alone still gets the old outputs."""
    from darbgen.host.framing import Reply

    if not echo_checked:
        monkeypatch.setattr(Reply, "answers", lambda self, request:
                            (self.command, self.seq) == (request.command, request.seq))
    from darbgen.hdl.protocol import Sizes, words_to_bytes
    from darbgen.packing import input_words

    layer = random_layer(rng, 6, 16, [2, 4])
    config = EngineConfig.for_layers([layer], 2)
    link = SimulatedLink(config)
    board = Board(link, timeout=link.seconds(5000))
    board.load(layer)
    x = rng.integers(-128, 128, size=(2, layer.cols))
    seq = (board._seq + 1) & 0xFF                   # the seq of the next request
    old = encode_frame(Command.RUN, seq, board._guard + words_to_bytes(
        input_words(np.pad(x[0], (0, config.max_cols - layer.cols)), config, last=False),
        Sizes.of(config).x_bits))
    link.write(old)                                 # the replay reaches the device first
    y = board.run(x[1:])
    assert np.array_equal(y, spmv_ref(layer, x[1 if echo_checked else 0:][:1]))


class _Line(Transport):
    """A line in front of another transport, on that transport's clock."""

    def __init__(self, inner):
        self.inner, self.baud = inner, inner.baud

    def write(self, data):
        self.inner.write(data)

    def read(self, timeout):
        return self.inner.read(timeout)

    def clock(self):
        return self.inner.clock()


class _Loopback(_Line):
    """A line that echoes everything the host writes back to it (before the device's
    bytes), as a half-duplex adapter or a shorted pair would."""

    def __init__(self, inner):
        super().__init__(inner)
        self._echo = b""

    def write(self, data):
        self._echo += bytes(data)
        self.inner.write(data)

    def read(self, timeout):
        echo, self._echo = self._echo, b""
        return echo + self.inner.read(timeout)


def test_a_request_looped_back_is_not_taken_for_its_reply(rng):
    """A RUN request whose first payload byte is 0 (OK) reads like its own reply if
    only command and seq tie them; the REPLY bit and the CRC echo both refuse it."""
    layer = random_layer(rng, 6, 16, [2, 4])
    config = EngineConfig.for_layers([layer], 2)
    link = SimulatedLink(config)
    board = Board(_Loopback(link), timeout=link.seconds(5000))
    board.load(layer)
    x = rng.integers(-128, 128, size=(3, layer.cols))
    x[:, 0] = 0                                     # the request's payload starts with 0
    assert np.array_equal(board.run(x), spmv_ref(layer, x))
    assert board.retried == 0


def test_a_load_chunk_replayed_after_verification_is_caught_and_repaired(rng):
    """A replayed first chunk restarts the load (index 0), leaving the device with a
    truncated load after the host verified it: RUN names the verified weights, the
    device refuses it, and the driver loads again before running. Protocol v3 returned
    the truncated load's outputs without an error."""
    from darbgen.hdl.protocol import OFFSET_BYTES, Sizes, words_to_bytes
    from darbgen.packing import load_words, schedule

    layer = random_layer(rng, 32, 64, [2])
    config = EngineConfig.for_layers([layer], 2)
    link = SimulatedLink(config)
    board = Board(link, timeout=link.seconds(5000))
    report = board.load(layer)
    sizes = Sizes.of(config)
    words = load_words(layer, config, schedule(layer, config.lanes))
    assert len(words) > sizes.chunk_words, "the layer must take several chunks"
    first = encode_frame(Command.LOAD_WEIGHTS, 3, bytes(OFFSET_BYTES) +
                         words_to_bytes(words[:sizes.chunk_words], sizes.load_bits))
    link.write(first)                               # replayed after the verification
    x = rng.integers(-128, 128, size=(2, layer.cols))
    assert np.array_equal(board.run(x), spmv_ref(layer, x))
    assert board.status()["words"] == report.words == len(words)



class _ReplaysFirstWrite(_Line):
    """A line that delivers the first frame written once more, before write ``at``."""

    def __init__(self, inner, at):
        super().__init__(inner)
        self.at, self.writes = at, []

    def write(self, data):
        self.writes.append(bytes(data))
        if len(self.writes) == self.at + 1:
            self.inner.write(self.writes[1])        # writes[0] is STATUS; [1] chunk 0
        self.inner.write(data)


def test_a_load_restarted_by_a_replayed_first_chunk_is_loaded_again(rng):
    """Chunk 0 replayed in the middle of a load restarts it on the device; the next
    chunk is refused (NAK_OFFSET), and the driver starts over from chunk 0."""
    layer = random_layer(rng, 16, 32, [2, 4])
    link = SimulatedLink(EngineConfig.for_layers([layer], 2))
    line = _ReplaysFirstWrite(link, at=3)
    board = Board(line, timeout=link.seconds(5000), chunk_words=8)
    board.identify()
    line.writes.clear()
    assert board.load(layer).verified
    starts = [int.from_bytes(w[5:9], "little") for w in line.writes
              if w[1] == Command.LOAD_WEIGHTS.value]
    # (16 may go twice: the device drops bytes that arrive while it applies a frame)
    assert starts[:3] == [0, 8, 16] and 0 in starts[3:], starts
    assert starts[starts.index(0, 1):][:3] == [0, 8, 16], starts
    x = rng.integers(-128, 128, size=(2, layer.cols))
    assert np.array_equal(board.run(x), spmv_ref(layer, x))


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_board_checks_chunk_words(bad):
    with pytest.raises(ValueError, match=rf"^chunk_words must be a positive integer, not "
                                         rf"{re.escape(repr(bad))}$"):
        Board(None, chunk_words=bad)
