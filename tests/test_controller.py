"""The protocol controller in Amaranth's simulator, on byte streams (no UART)."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from conftest import random_layer
from darbgen.config import EngineConfig
from darbgen.hdl.device import Controller
from darbgen.hdl.protocol import (MAX_PAYLOAD, MAX_RUN_BEATS, OFFSET_BYTES, PART_BYTES,
                                  REPLY_HEAD_BYTES, Command, Sizes, Status, build_id,
                                  bytes_to_words, parse_identity, parse_run_part, parse_status,
                                  weights_crc, words_to_bytes)
from darbgen.host.framing import FrameParser, encode_frame
from darbgen.packing import input_words, load_words, schedule, unpack_outputs
from darbgen.sim.fuzz import guard_of
from darbgen.sim.golden import spmv_ref

CLOCK_HZ, BAUD = 12_000_000, 1_000_000


def exchange(ctl, requests, *, gap=0, backpressure=0.0, seed=0, max_cycles=400_000):
    """Send each request's bytes, then collect bytes until one frame parses; return
    it as a :class:`~darbgen.host.framing.Reply` (``None`` if the request was
    ``(bytes, False)``: no reply expected; a list of the replies if it was
    ``(bytes, n)``: n frames expected)."""
    rng = np.random.default_rng(seed)
    replies = []

    async def tb(ctx):
        parser = FrameParser()
        cycle = 0
        for req in requests:
            data, expect = (req, True) if isinstance(req, bytes) else req
            frames = expect if type(expect) is int else 1
            for b in data:
                ctx.set(ctl.rx.valid, 1)
                ctx.set(ctl.rx.payload, b)
                await ctx.tick()
                ctx.set(ctl.rx.valid, 0)
                for _ in range(gap):
                    await ctx.tick()
            got = []
            quiet = 0
            while len(got) < frames and cycle < max_cycles and (expect or quiet < 200):
                ready = rng.random() >= backpressure
                ctx.set(ctl.tx.ready, ready)
                await ctx.delay(1e-9)
                if ready and ctx.get(ctl.tx.valid):
                    got += parser.feed(bytes([ctx.get(ctl.tx.payload)]))
                    quiet = 0
                else:
                    quiet += 1
                await ctx.tick()
                cycle += 1
            assert all(f.reply is not None for f in got), f"not a reply: {got}"
            if expect is True or not expect:
                replies.append(got[0].reply if got else None)
            else:
                replies.append([f.reply for f in got])

    sim = Simulator(ctl)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    return replies


def parse_one(raw):
    (frame,) = FrameParser().feed(raw)
    return frame


def small_config(layer, lanes=2):
    return EngineConfig.for_layers([layer], lanes)


def make(config):
    return Controller(config, clock_hz=CLOCK_HZ, baud=BAUD, idle_cycles=50)


def load_frames(layer, config, chunk_words=None, seq0=1):
    sizes = Sizes.of(config)
    words = load_words(layer, config)
    chunk_words = chunk_words or sizes.chunk_words
    frames = []
    for i, at in enumerate(range(0, len(words), chunk_words)):
        payload = at.to_bytes(OFFSET_BYTES, "little") + \
            words_to_bytes(words[at:at + chunk_words], sizes.load_bits)
        frames.append(encode_frame(Command.LOAD_WEIGHTS, seq0 + i, payload))
    return words, frames


def run_frame(x, config, seq, weights=()):
    """RUN ``x``, meant for the load words ``weights``."""
    words = input_words(x, config, last=False)
    return encode_frame(Command.RUN, seq, guard_of(weights, Sizes.of(config)) +
                        words_to_bytes(words, Sizes.of(config).x_bits))


def decode_y(replies, config, sched):
    """The outputs in a RUN's reply frames (one, or a list), checking their parts."""
    sizes = Sizes.of(config)
    data, at = b"", 0
    for reply in replies if isinstance(replies, list) else [replies]:
        assert reply.status == Status.OK.value, reply
        first, beats, part = parse_run_part(reply.body, sizes.y_bytes)
        assert first == at and beats == sched.slots, (first, at, beats)
        data, at = data + part, at + len(part) // sizes.y_bytes
    assert at == sched.slots
    return unpack_outputs(bytes_to_words(data, sizes.y_bits), config, sched)


def test_identify_and_status(rng):
    layer = random_layer(rng, 6, 16, [2, 4])
    config = small_config(layer)
    requests = [encode_frame(Command.IDENTIFY, 9), encode_frame(Command.STATUS, 10)]
    ident, stat = exchange(make(config), requests)
    assert (ident.command, ident.seq, ident.status) == (Command.IDENTIFY.value, 9, 0)
    assert [ident.check, stat.check] == [int.from_bytes(r[-2:], "little") for r in requests]
    identity = parse_identity(ident.body)
    assert identity.config == config
    assert identity.build_id == build_id(config, CLOCK_HZ, BAUD) == identity.expected_build_id
    assert (identity.clock_hz, identity.baud) == (CLOCK_HZ, BAUD)
    fields = parse_status(stat.body)
    assert fields["frames"] == 2 and fields["words"] == 0 and fields["refused"] == 0


def test_load_and_run_exact(rng):
    layer = random_layer(rng, 7, 20, [2, 4, 8], keep=2)
    config = small_config(layer)
    sched = schedule(layer, config.lanes)
    words, frames = load_frames(layer, config, chunk_words=5)
    x = rng.integers(-128, 128, size=(2, layer.cols))
    replies = exchange(make(config), frames + [encode_frame(Command.STATUS, 50),
                                               run_frame(x[0], config, 51, words),
                                               run_frame(x[1], config, 52, words)],
                       backpressure=0.3, seed=3)
    assert all((r.status, r.body) == (0, b"") and r.answers(parse_one(f))
               for r, f in zip(replies, frames))
    fields = parse_status(replies[len(frames)].body)
    sizes = Sizes.of(config)
    assert fields["words"] == len(words)
    assert fields["weights_crc"] == weights_crc(words_to_bytes(words, sizes.load_bits))
    for i in range(2):
        y = decode_y(replies[len(frames) + 1 + i], config, sched)
        assert np.array_equal(y[0], spmv_ref(layer, x[i])), f"vector {i}"


def test_one_corrupted_weight_is_seen(rng):
    """The check can fail: one flipped weight byte changes the device's CRC-32."""
    layer = random_layer(rng, 5, 16, [4])
    config = small_config(layer)
    words, frames = load_frames(layer, config)
    sizes = Sizes.of(config)
    payload = bytearray(words_to_bytes(words, sizes.load_bits))
    payload[sizes.load_bytes * 3] ^= 0x01
    bad = encode_frame(Command.LOAD_WEIGHTS, 1, bytes(OFFSET_BYTES) + bytes(payload))
    _, stat = exchange(make(config), [bad, encode_frame(Command.STATUS, 2)])
    assert parse_status(stat.body)["weights_crc"] != \
        weights_crc(words_to_bytes(words, sizes.load_bits))


def test_refusals_never_touch_state(rng):
    layer = random_layer(rng, 5, 16, [4])
    config = small_config(layer)
    words, frames = load_frames(layer, config, chunk_words=4)
    flipped = bytearray(frames[1])
    flipped[9] ^= 0x40                                       # inside the payload
    huge = bytes([0xA5, Command.RUN.value, 3]) + (MAX_PAYLOAD + 1).to_bytes(2, "little")
    replies = exchange(make(config), [
        frames[0], bytes(flipped), frames[2],                # CRC NAK, then out of order
        frames[0],                                           # restart at 0
        (frames[0][:7], False),                              # truncated: dropped when idle
        frames[1], frames[1],                                # repeat: acked, not applied
        huge,                                                # length NAK at the header
        encode_frame(0x7F, 4),                               # unknown command
        encode_frame(Command.RUN, 5, b"\x00"),               # wrong RUN length
        encode_frame(Command.STATUS, 6)])
    status = [r.status if r else None for r in replies]
    assert status[:5] == [0, Status.NAK_CRC.value, Status.NAK_OFFSET.value, 0, None]
    assert status[5:10] == [0, 0, Status.NAK_LENGTH.value, Status.NAK_COMMAND.value,
                            Status.NAK_LENGTH.value]
    # A NAK_CRC echoes the CRC field as received; a frame refused at its header has none.
    assert replies[1].check == int.from_bytes(flipped[-2:], "little")
    assert replies[7].check == 0
    fields = parse_status(replies[-1].body)
    assert fields["words"] == 8                              # chunks 0 and 1, once each
    assert fields["refused"] == 3                            # CRC, truncated, length


def test_a_run_meant_for_other_weights_is_refused(rng):
    """RUN names the weights it is meant for; the device refuses it if it holds others
    (here: a load whose last word differs), runs nothing and keeps its weights."""
    layer = random_layer(rng, 6, 16, [2, 4])
    config = small_config(layer)
    sched = schedule(layer, config.lanes)
    words, frames = load_frames(layer, config)
    other = words[:-1] + [words[-1] ^ 1]
    x = rng.integers(-128, 128, size=layer.cols)
    replies = exchange(make(config), frames + [run_frame(x, config, 40, other),
                                               run_frame(x, config, 41, words[:-1]),
                                               run_frame(x, config, 42, words)])
    assert [(r.status, r.body) for r in replies[-3:-1]] == [(Status.NAK_WEIGHTS.value, b"")] * 2
    assert np.array_equal(decode_y(replies[-1], config, sched)[0], spmv_ref(layer, x))


def test_run_before_load_is_refused(rng):
    layer = random_layer(rng, 4, 8, [2])
    config = small_config(layer)
    (reply,) = exchange(make(config), [run_frame(np.zeros(8, int), config, 1)])
    assert (reply.status, reply.body) == (Status.NO_WEIGHTS.value, b"")


def test_run_reply_in_several_frames(rng):
    """An output longer than one frame (400 rows on one lane: 1200 bytes) comes back in
    frames that each echo the RUN's CRC and name their first beat; all but the last
    are full. A second RUN on the same weights is as exact (nothing left behind)."""
    layer = random_layer(rng, 400, 8, [4, 8])
    config = small_config(layer, lanes=1)
    sched = schedule(layer, config.lanes)
    sizes = Sizes.of(config)
    assert sched.slots * sizes.y_bytes > MAX_PAYLOAD - REPLY_HEAD_BYTES - PART_BYTES
    words, frames = load_frames(layer, config)
    x = rng.integers(-128, 128, size=(2, layer.cols))
    runs = [run_frame(x[i], config, 60 + i, words) for i in range(2)]
    replies = exchange(make(config), frames + [(runs[0], 2), (runs[1], 2)],
                       backpressure=0.3, seed=5, max_cycles=2_000_000)
    for i in range(2):
        parts = replies[len(frames) + i]
        assert [len(p.body) for p in parts] == [
            PART_BYTES + sizes.y_frame_beats * sizes.y_bytes,
            PART_BYTES + (sched.slots - sizes.y_frame_beats) * sizes.y_bytes]
        assert all(p.answers(parse_one(runs[i])) for p in parts)
        assert np.array_equal(decode_y(parts, config, sched)[0], spmv_ref(layer, x[i])), i


def test_link_limits_are_checked():
    wide = EngineConfig(lanes=1, shifts=(0,), max_keep=1, max_row_nnz=4, max_cols=2000,
                        lane_depth=4, lane_rows=4)
    with pytest.raises(ValueError, match=r"^a RUN request carries one input vector in one "
                                         r"frame: 2000 columns need 2008 payload bytes, the "
                                         r"link carries at most 1024$"):
        make(wide)
    tall = EngineConfig(lanes=1, shifts=(0,), max_keep=1, max_row_nnz=4, max_cols=4,
                        lane_depth=4, lane_rows=MAX_RUN_BEATS + 1)
    with pytest.raises(ValueError, match=r"^a RUN reply counts at most 65535 output beats, "
                                         r"this core makes 65536$"):
        make(tall)
