"""RUN replies of any size (protocol v5): an output longer than one frame comes back in
several, each tied to its RUN by the CRC echo and naming its first beat; a frame lost
or damaged on the way back costs one resend, and the result stays exact.

The first tests talk to the controller in Amaranth's simulator (exact retry counts);
the last ones to a board's whole device in Verilator over a pseudo-terminal, with a
512-row layer (the size the 1024-byte cap of protocol v4 refused).
"""

import numpy as np
import pytest

from conftest import random_layer
from darbgen.config import EngineConfig
from darbgen.hdl.device import Controller
from darbgen.hdl.protocol import (MAX_PAYLOAD, PART_BYTES, REPLY, Command, Sizes,
                                  parse_run_part, run_part)
from darbgen.host import Board, LinkError, Transport
from darbgen.host.framing import FrameParser
from darbgen.sim.golden import spmv_ref
from darbgen.sim.link_sim import SimulatedLink
from darbgen.sim.runner import simulator_available

SEED = 20261207
#: Simulated cycles a driver waits for a reply frame: a few times what the controller
#: needs to start one (a lost frame costs this much simulated time).
TIMEOUT = 5000


class ReplyTamper(Transport):
    """A line that drops or damages chosen RUN reply frames on their way to the host.

    ``pick(first, n)`` is asked about every RUN reply frame (``first``: the beat its part
    starts at; ``n``: RUN reply frames seen so far) and answers ``None`` (deliver it),
    ``"drop"`` or ``"flip"`` (one payload bit flipped: the host's CRC check refuses it).
    Frames are cut out of the byte stream with the host's own parser and re-encoded,
    byte for byte the same.
    """

    def __init__(self, inner, pick):
        self.inner, self.pick, self.baud = inner, pick, inner.baud
        self._parser = FrameParser()
        self.seen = 0
        self.tampered = []

    def write(self, data):
        self.inner.write(data)

    def read(self, timeout):
        out = b""
        for frame in self._parser.feed(self.inner.read(timeout)):
            raw = bytearray(frame.encode())
            if frame.command == Command.RUN.value | REPLY and frame.reply.status == 0:
                first = int.from_bytes(frame.reply.body[:2], "little")   # the part head
                action = self.pick(first, self.seen)
                self.seen += 1
                if action:
                    self.tampered.append((action, first))
                if action == "drop":
                    continue
                if action == "flip":
                    raw[-3] ^= 0x10                  # the last payload byte
            out += bytes(raw)
        return out

    def clock(self):
        return self.inner.clock()

    def close(self):
        self.inner.close()


def tall_layer(rng, rows=400, cols=8):
    """On one lane, 400 rows give 400 output beats of 3 bytes: two reply frames."""
    return random_layer(rng, rows, cols, [4, 8], name="tall")


def test_part_heads_round_trip():
    assert parse_run_part(run_part(340, 400) + bytes(6), 3) == (340, 400, bytes(6))
    with pytest.raises(ValueError, match=r"^a RUN reply body of 9 bytes is not a 4-byte part "
                                         r"head and whole 2-byte beats$"):
        parse_run_part(run_part(0, 9) + bytes(5), 2)
    with pytest.raises(ValueError, match=r"^a RUN reply part claims beats 8 to 9 of 9$"):
        parse_run_part(run_part(8, 9) + bytes(4), 2)
    with pytest.raises(ValueError, match=r"^a RUN reply body of 3 bytes"):
        parse_run_part(b"\x00\x00\x00", 1)


def simulated(layer, lanes=1):
    config = EngineConfig.for_layers([layer], lanes)
    link = SimulatedLink(config)
    sizes = Sizes.of(config)
    assert config.output_beats > sizes.y_frame_beats, "the output must take several frames"
    return link


@pytest.mark.parametrize("action,frame", [(None, None), ("drop", 1), ("flip", 0)])
def test_a_lost_or_damaged_reply_frame_costs_one_resend(rng, action, frame):
    layer = tall_layer(rng)
    link = simulated(layer)
    line = ReplyTamper(link, lambda first, n: action if n == frame else None)
    board = Board(line, timeout=link.seconds(TIMEOUT))
    assert board.load(layer).verified
    x = rng.integers(-128, 128, size=(2, layer.cols))
    assert np.array_equal(board.run(x), spmv_ref(layer, x))
    # 2 frames a vector, plus the resent RUN's frames when one was lost.
    assert board.retried == (action is not None) and line.seen == 4 + 2 * (action is not None)
    assert [a for a, _ in line.tampered] == ([action] if action else [])


def test_parts_from_two_attempts_make_one_output(rng):
    """Each attempt loses a different frame: the first attempt's part 0 and the resend's
    part 1 together are the whole output (a resent RUN gets the identical answer)."""
    layer = tall_layer(rng)
    link = simulated(layer)
    line = ReplyTamper(link, lambda first, n: "drop" if (n, first == 0) in
                       ((1, False), (2, True)) else None)
    board = Board(line, timeout=link.seconds(TIMEOUT))
    board.load(layer)
    x = rng.integers(-128, 128, size=(1, layer.cols))
    assert np.array_equal(board.run(x), spmv_ref(layer, x))
    assert board.retried == 1 and len(line.tampered) == 2


def test_every_frame_lost_gives_up_clearly(rng):
    layer = tall_layer(rng)
    link = simulated(layer)
    line = ReplyTamper(link, lambda first, n: "drop" if first else None)
    board = Board(line, timeout=link.seconds(TIMEOUT), retries=2)
    board.load(layer)
    with pytest.raises(LinkError, match=r"^no reply to RUN after 2 attempts"):
        board.run(np.zeros((1, layer.cols), dtype=np.int64))


def test_a_part_with_another_beat_count_is_refused(rng):
    """Parts of one reply must agree on the vector's beat count (a device that is wrong
    about it would otherwise assemble outputs of two lengths)."""
    layer = tall_layer(rng)
    link = simulated(layer)

    class Lies(ReplyTamper):
        def read(self, timeout):
            data = super().read(timeout)
            out = b""
            for f in FrameParser().feed(data):
                if f.command == Command.RUN.value | REPLY and f.payload[3:5] == b"\x00\x00":
                    body = f.payload[:5] + (int.from_bytes(f.payload[5:7], "little") - 1
                                            ).to_bytes(2, "little") + f.payload[7:]
                    f = type(f)(f.command, f.seq, body)
                out += f.encode()
            return out

    board = Board(Lies(link, lambda first, n: None), timeout=link.seconds(TIMEOUT))
    board.load(layer)
    with pytest.raises(LinkError, match=r"^the board's RUN reply names 400 output beats in "
                                        r"one part and 399 in another$"):
        board.run(np.zeros((1, layer.cols), dtype=np.int64))


# -- a board's whole device in Verilator --------------------------------------------------

verilator = pytest.mark.skipif(not simulator_available("verilator"),
                               reason="verilator is not installed")


@pytest.fixture(scope="module")
def tall_served():
    """A simulated iCEBreaker device (2 lanes) for a 512-row layer: 256 output beats of
    5 bytes, 1280 bytes of output, more than one frame carries."""
    from darbgen.boards import get_board
    from darbgen.boards.core import DEVICE_TOP, device, device_verilog
    from darbgen.sim.board_sim import BoardSim

    layer = random_layer(np.random.default_rng(SEED), 512, 16, [4, 8], name="tall512")
    board = get_board("icebreaker")
    dev = device(board, layer, 2)
    sizes = Sizes.of(dev.config)
    assert dev.config.output_beats * sizes.y_bytes > MAX_PAYLOAD - PART_BYTES
    with BoardSim(device_verilog(dev), DEVICE_TOP, dev.divisor) as sim:
        yield sim, layer, board.baud


def connect(sim, baud, pick=None, **kw):
    from darbgen.host import SerialTransport
    line = SerialTransport(sim.port, baud)
    return Board(line if pick is None else ReplyTamper(line, pick), **kw)


@verilator
def test_512_rows_run_exactly_on_the_board(tall_served):
    """Protocol v4 refused this layer ("a RUN frame needs 1283 payload bytes ... use more
    lanes"): now every output of every vector equals the golden model's; one weight
    changed would be seen."""
    sim, layer, baud = tall_served
    board = connect(sim, baud)
    assert board.load(layer).verified
    x = np.random.default_rng(SEED + 1).integers(-128, 128, size=(3, layer.cols))
    y = board.run(x)
    assert y.shape == (3, 512) and np.array_equal(y, spmv_ref(layer, x)), f"seed {SEED}"
    assert board.retried == 0
    values = layer.values.copy()
    values[-1] = values[-1] + 1 if values[-1] < 127 else values[-1] - 1
    changed = type(layer)(name="m", rows=layer.rows, cols=layer.cols,
                          block_sizes=layer.block_sizes, keep=layer.keep,
                          offsets=layer.offsets, values=values, scale=layer.scale,
                          weight_bits=8, method="darb")
    assert not np.array_equal(y, spmv_ref(changed, x))
    board.transport.close()


@verilator
@pytest.mark.parametrize("action", ["drop", "flip"])
def test_a_reply_frame_lost_on_the_board_line_is_recovered(tall_served, action):
    """The second frame of the first vector's reply is lost (or damaged) once: the host
    resends that RUN and completes the vector with the resend's frame; still exact."""
    sim, layer, baud = tall_served
    board = connect(sim, baud, lambda first, n: action if first and n < 2 else None,
                    timeout=0.5)
    board.load(layer)
    x = np.random.default_rng(SEED + 2).integers(-128, 128, size=(2, layer.cols))
    assert np.array_equal(board.run(x), spmv_ref(layer, x)), f"seed {SEED + 2}"
    y_frame_beats = Sizes.of(board.config).y_frame_beats
    assert board.transport.tampered == [(action, y_frame_beats)] and board.retried >= 1
    board.transport.close()
