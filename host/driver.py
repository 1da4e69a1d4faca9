"""The host driver: identify a board, stream a layer's weights to it, run vectors (no torch).

:class:`Board` talks :mod:`darbgen.hdl.protocol` over any
:class:`~darbgen.host.transport.Transport`. Each request is sent with a new
sequence number and retried with the same one after a NAK or a silence of
``timeout`` seconds; every command is idempotent on the device, so a retry is
always safe. A RUN's reply may come in several frames: the host gathers them by
the beats they name, across retries (a resent RUN is the same request, answered
identically), until the vector's output is whole. Everything that travels is
derived from the device's core config through its description
(:mod:`darbgen.hdl.cores`): load words, input and output beats.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, EngineConfig
from ..format import SparseLayer
from ..hdl import cores
from ..hdl.protocol import (GUARD_BYTES, MAX_PAYLOAD, OFFSET_BYTES, PROTOCOL_VERSION, Command, Identity,
                            Sizes, Status, bytes_to_words, parse_identity, parse_run_part,
                            parse_status, run_guard, weights_crc, words_to_bytes)
from ..network import NetworkConfig, NetworkPlan
from ..processor_lstm import LSTMPlan
from .framing import Frame, FrameParser, Reply
from .transport import LinkError, Transport

__all__ = ["Board", "LinkTimeout", "NakError", "BuildMismatch", "WeightsMismatch",
           "LoadReport", "expected_config"]

_RETRY_STATUS = {Status.NAK_CRC.value, Status.NAK_LENGTH.value}


class LinkTimeout(LinkError):
    """The board did not answer, even after retries."""


class NakError(LinkError):
    """The board refused a request, even after retries.

    Members
    -------
    status : int or None
        The :class:`~darbgen.hdl.protocol.Status` of the last refusal.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class BuildMismatch(LinkError):
    """The board's gateware was not built for this artifact (or this protocol)."""


class WeightsMismatch(LinkError):
    """The weights on the board differ from the artifact's after loading."""


def expected_config(target: SparseLayer | NetworkPlan, lanes: int,
                    input_width: int) -> EngineConfig | NetworkConfig:
    """The core ``darbgen build`` makes for a layer (one engine), a whole network (a
    chain of engines) or another target of a registered kind of core
    (:func:`darbgen.hdl.cores.for_target`) at a board's lanes and input width."""
    return cores.for_target(target, lanes, input_width)


@dataclass(frozen=True)
class LoadReport:
    """What streaming one layer's weights took."""

    words: int
    payload_bytes: int
    line_seconds: float         # by the device's own clock
    link_efficiency: float      # payload bytes/s ÷ line rate (baud / 10 for 8N1)
    verified: bool


class Board:
    """A board (or simulated board) behind a transport.

    Parameters
    ----------
    transport : Transport
    timeout : float
        Seconds an attempt waits for its reply before the request is sent again. Other
        traffic on the line does not extend it, so a request gives up after
        ``retries × timeout`` seconds however busy the line; only each new frame of a
        RUN's reply (beats not seen before) gives its attempt another ``timeout``.
    retries : int
        Attempts per request before giving up.
    progress : bool
        Show a progress bar while weights stream.
    chunk_words : int, optional
        Load words per LOAD_WEIGHTS frame (default: as many as fit in one); on a
        noisy line, a smaller frame loses less to each resend.
    deadline : float, optional
        Seconds from now after which every request fails with :class:`LinkTimeout`:
        a bound on the whole session, however many requests it makes.
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, retries: int = 8,
                 progress: bool = False, chunk_words: int | None = None,
                 deadline: float | None = None):
        if chunk_words is not None and (isinstance(chunk_words, bool) or
                                        not isinstance(chunk_words, int) or chunk_words < 1):
            raise ValueError(f"chunk_words must be a positive integer, not {chunk_words!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            raise ValueError(f"retries must be a positive integer, not {retries!r}")
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if value is not None and (isinstance(value, bool) or
                                      not isinstance(value, (int, float)) or
                                      not (math.isfinite(value) and value > 0)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if not isinstance(transport, Transport):
            raise TypeError(f"transport must be a Transport, not {transport!r}")
        self.chunk_words = chunk_words
        self._session_end = None if deadline is None else transport.clock() + deadline
        self.deadline = deadline
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.progress = progress
        self.identity: Identity | None = None
        self.retried = 0                    # requests sent again (NAK or timeout)
        self._parser = FrameParser()
        self._frames = deque()              # parsed, not yet looked at (a RUN's next parts)
        self._seq = random.Random().randrange(256)  # a fresh session never repeats the last seq
        self._target = self._unpack = self._guard = None

    # -- requests --------------------------------------------------------------------

    def request(self, command: Command, payload: bytes = b"", *,
                y_bytes: int | None = None) -> bytes:
        """Send one request; return its reply's body (after an OK status).

        Parameters
        ----------
        command : Command
        payload : bytes
        y_bytes : int, optional
            Bytes per output beat, for a RUN: its reply comes in parts, and the result
            is their beats in order, however many frames they took.

        Raises
        ------
        LinkTimeout, NakError
        """
        self._seq = (self._seq + 1) & 0xFF
        request = Frame(command.value, self._seq, bytes(payload))
        frame = request.encode()                        # its CRC is kept for the replies
        parts = None if y_bytes is None else _Parts(y_bytes)
        last = None
        for attempt in range(self.retries):
            if attempt:
                self.retried += 1
            end = self._attempt_end(command)
            self.transport.write(frame)
            while (reply := self._await(request, end)) is not None:
                if reply.status != Status.OK.value:
                    break
                if parts is None:
                    return reply.body
                seen = len(parts)
                if parts.add(reply.body):
                    return parts.data
                if len(parts) > seen:       # new beats: the next frame gets a whole timeout
                    end = self._attempt_end(command)
            if reply is None:
                last = "no reply"
                continue
            if reply.status in _RETRY_STATUS:
                last = Status(reply.status).name
                continue
            name = Status(reply.status).name if reply.status in {s.value for s in Status} \
                else reply.status
            raise NakError(f"the board refused {command.name}: {name}", reply.status)
        if last == "no reply":
            raise LinkTimeout(f"no reply to {command.name} after {self.retries} attempts "
                              f"({self.timeout} s each)")
        raise NakError(f"the board refused {command.name} {self.retries} times ({last})",
                       Status[last].value)

    def _attempt_end(self, command: Command) -> float:
        """When a wait for a reply frame starting now gives up (transport clock)."""
        now = self.transport.clock()
        if self._session_end is None:
            return now + self.timeout
        if now >= self._session_end:
            raise LinkTimeout(f"{command.name}: the session's deadline of "
                              f"{self.deadline} s has passed")
        return min(now + self.timeout, self._session_end)

    def _await(self, request: Frame, deadline: float) -> Reply | None:
        """The reply to ``request``, or ``None`` when none came by ``deadline`` (on the
        transport's clock), whatever else arrived.

        A reply must echo the request's CRC: the answer to an older request replayed
        on the line with the same seq echoes another and is dropped. A NAK_CRC or
        NAK_LENGTH for the awaited command and seq is taken whatever it echoes (the
        device echoes the CRC field as received, which may be the damaged part): all
        it causes is a resend, which is always safe.
        """
        while self._frames or (left := deadline - self.transport.clock()) > 0:
            if not self._frames:        # frames parsed but not yet looked at go first
                self._frames.extend(self._parser.feed(self.transport.read(left)))
            while self._frames:
                reply = self._frames.popleft().reply
                if reply is None or (reply.command, reply.seq) != (request.command, request.seq):
                    continue        # a request looped back, a stale reply, a NAK for garbage
                if reply.answers(request) or reply.status in _RETRY_STATUS:
                    return reply
        return None

    # -- operations ------------------------------------------------------------------

    def identify(self) -> Identity:
        """Ask the board who it is.

        Raises
        ------
        BuildMismatch
            Another protocol version, or a build ID that does not match the board's
            own description.
        """
        identity = parse_identity(self.request(Command.IDENTIFY))
        if identity.version != PROTOCOL_VERSION:
            raise BuildMismatch(f"the board speaks protocol version {identity.version}, "
                                f"this host {PROTOCOL_VERSION}")
        if identity.build_id != identity.expected_build_id:
            raise BuildMismatch(f"the board's build ID {identity.build_id.hex()} does not "
                                f"match its configuration ({identity.expected_build_id.hex()})")
        self.identity = identity
        return identity

    def status(self) -> dict:
        """The board's counters: words loaded, their CRC-32, frames, refused, cycles."""
        return parse_status(self.request(Command.STATUS))

    @property
    def config(self) -> EngineConfig | NetworkConfig:
        if self.identity is None:
            self.identify()
        return self.identity.config

    def check(self, target: SparseLayer | NetworkPlan | LSTMPlan) -> None:
        """Raise :class:`BuildMismatch` unless the board's core can run ``target``, a
        layer (one engine), a whole network (a chain of engines) or an LSTM step (a
        processor with an LSTM cell).

        A board built for one layer also runs any layer that fits its engine (block
        sizes, keep count, widths and lane memories), and a processor any network or
        LSTM step that fits its capacities and whose input fits one RUN frame; the
        message names the field, layer or capacity that does not fit.
        """
        core = cores.describe(self.config)
        lstm = isinstance(target, LSTMPlan)
        try:
            if not isinstance(target, core.target_type):
                raise ConfigError(f"the board runs {core.runs}; this is "
                                  + ("an LSTM step" if lstm else
                                     cores.target_kind(target).target_text))
            core.check_target(target)
            _check_run_frame(core, target)
        except ConfigError as e:
            noun = "LSTM step" if lstm else cores.target_kind(target).target_noun
            raise BuildMismatch(f"build ID mismatch: board build {self.identity.build_id.hex()} "
                                f"cannot run this {noun}: {e}; "
                                "rebuild with `darbgen build`") from None

    def load(self, target: SparseLayer | NetworkPlan | LSTMPlan) -> LoadReport:
        """Stream the weights of ``target`` (a layer, or a whole network with its
        requantizer tables) to the board, then verify them.

        Raises
        ------
        BuildMismatch
            The board was not built for ``target``.
        WeightsMismatch
            The board's word count or CRC-32 differs from the artifact's.
        """
        self.check(target)
        config = self.config
        sizes = Sizes.of(config)
        core = cores.describe(config)
        name = core.name(target)
        words = core.load_words(target)
        data = words_to_bytes(words, sizes.load_bits)
        step = min(self.chunk_words or sizes.chunk_words, sizes.chunk_words)
        before = self.status()["cycles"]
        bar = _progress(len(data), self.progress, f"weights {name}")
        at = restarts = 0
        while at < len(words):
            chunk = words_to_bytes(words[at:at + step], sizes.load_bits)
            try:
                self.request(Command.LOAD_WEIGHTS, at.to_bytes(OFFSET_BYTES, "little") + chunk)
            except NakError as e:
                # The load on the board no longer ends where this one does (a first chunk
                # replayed on the line restarted it): start again from the first chunk.
                if e.status != Status.NAK_OFFSET.value or restarts == self.retries:
                    raise
                restarts += 1
                bar.update(-at * sizes.load_bytes)
                at = 0
                continue
            bar.update(len(chunk))
            at += step
        bar.close()
        after = self.status()
        seconds = ((after["cycles"] - before) % (1 << 32)) / self.identity.clock_hz
        efficiency = len(data) / seconds / (self.identity.baud / 10) if seconds else 0.0
        crc = weights_crc(data)
        guard = run_guard(len(words), crc)
        # STATUS starts with the RUN guard's fields: the board holds what a RUN names.
        verified = run_guard(after["words"], after["weights_crc"]) == guard
        if not verified:
            raise WeightsMismatch(
                f"the board holds {after['words']} words with CRC-32 "
                f"{after['weights_crc']:08x}; {name} has {len(words)} words "
                f"with CRC-32 {crc:08x}")
        self._target, self._unpack, self._guard = target, core.unpacker(target), guard
        return LoadReport(len(words), len(data), seconds, efficiency, verified)

    def run(self, x, reset=None) -> np.ndarray:
        """Run input vectors ``x`` (``(n, cols)`` or ``(cols,)`` integers) on what was
        loaded; return ``(n, rows)`` int64: a layer's exact sums, or a network's logits.

        An LSTM step (:class:`~darbgen.processor_lstm.LSTMPlan`) runs ``x`` as time steps,
        each returning ``[h_t | c_t]`` (``2 · hidden`` values); ``reset`` (``(n,)`` bools,
        default: only the first step) marks the steps that start from ``h = c = 0``. The
        board keeps ``h`` and ``c`` between RUNs.

        Each RUN names the weights :meth:`load` verified; if the board holds others by
        then (a load chunk replayed on the line, another host, a reset), it refuses
        the RUN, and the weights are loaded again once before the vector is retried.

        Raises
        ------
        WeightsMismatch
            The board still holds other weights after loading them again.
        ValueError
            ``reset`` is given for what is no LSTM step, or does not mark the first step
            (an LSTM's state on the board is not the host's to continue).
        """
        if self._target is None:
            raise LinkError("load a layer or a network before running vectors")
        config, sizes = self.config, Sizes.of(self.config)
        core = cores.describe(config)
        cols = self._target.cols
        x = np.atleast_2d(np.asarray(x))
        what = core.name(self._target)
        if x.ndim != 2 or x.shape[1] != cols:
            raise ValueError(f"inputs must have {cols} columns for {what}, not shape {x.shape}")
        if x.dtype.kind not in "iu":       # a float would be truncated on the way to the link
            raise TypeError(f"inputs must be integers, not {x.dtype}")
        bits = core.input_bits()
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if x.size and (x.min() < lo or x.max() > hi):
            raise ValueError(f"inputs for {what} must be between {lo} and {hi} "
                             f"({bits}-bit), not {x.min()}..{x.max()}")
        steps = _resets(self._target, reset, len(x))
        if not len(x):                     # an empty batch: nothing to send
            return np.zeros((0, core.outputs(self._target)), dtype=np.int64)
        out = []
        for vector, r in zip(x, steps):
            x_bytes = words_to_bytes(core.input_words(vector, self._target, reset=r),
                                     sizes.x_bits)
            out.append(self._unpack(bytes_to_words(self._run_one(x_bytes), sizes.y_bits)))
        return np.stack(out)

    def _run_one(self, x_bytes: bytes) -> bytes:
        """RUN one vector's input bytes on the verified weights; its output bytes."""
        for reload in (False, True):
            if reload:
                self.load(self._target)
            payload = self._guard + x_bytes
            assert len(payload) <= MAX_PAYLOAD
            try:
                return self.request(Command.RUN, payload,
                                    y_bytes=Sizes.of(self.config).y_bytes)
            except NakError as e:
                if e.status != Status.NAK_WEIGHTS.value:
                    raise
        raise WeightsMismatch("the board ran no vector on the verified weights, even after "
                              "loading them again")


def _resets(target, reset, n: int) -> np.ndarray:
    """The reset flag of each of ``n`` vectors run on ``target`` (see :meth:`Board.run`)."""
    if not isinstance(target, LSTMPlan):
        if reset is not None:
            raise ValueError(f"reset is for the time steps of an LSTM, not for "
                             f"{type(target).__name__}")
        return np.zeros(n, bool)
    if reset is None:
        reset = np.arange(n) == 0
    reset = np.asarray(reset)
    if reset.shape != (n,) or reset.dtype != bool:
        raise ValueError(f"reset must be {n} booleans, one per step, not {reset.dtype} of "
                         f"shape {reset.shape}")
    if n and not reset[0]:
        raise ValueError("the first step must reset the state")
    return reset


def _check_run_frame(core: cores.CoreDescription, target) -> None:
    """Raise :class:`ConfigError` unless one input vector of ``target`` fits a RUN frame
    and has as many beats as the core takes (an LSTM step's longest: one that resets)."""
    beats = len(core.input_words(np.zeros(target.cols, dtype=np.int64), target, reset=True))
    need = GUARD_BYTES + beats * Sizes.of(core.config).x_bytes
    lo, hi = core.input_beats_range()
    if need > MAX_PAYLOAD:
        raise ConfigError(f"{core.name(target)}'s {target.cols:,} inputs need {need:,} bytes "
                          f"in one RUN frame, a frame carries at most {MAX_PAYLOAD:,}")
    if not lo <= beats <= hi:
        raise ConfigError(f"{core.name(target)}'s {target.cols:,} inputs make {beats} input "
                          f"beats, the board takes {lo} to {hi}")


class _Parts:
    """The frames of one RUN's reply, gathered by the beats they name (from any attempt:
    a resent RUN is the same request and gets the same answer)."""

    def __init__(self, y_bytes: int):
        self.y_bytes = y_bytes
        self.beats = None
        self._parts = {}                 # first beat -> its bytes

    def add(self, body: bytes) -> bool:
        """Take one reply frame's body; True once every beat has arrived.

        Raises
        ------
        LinkError
            The body is no RUN reply part, or names another beat count than earlier
            parts of the same reply.
        """
        try:
            first, beats, data = parse_run_part(body, self.y_bytes)
        except ValueError as e:
            raise LinkError(f"the board's RUN reply is malformed: {e}") from None
        if self.beats not in (None, beats):
            raise LinkError(f"the board's RUN reply names {beats} output beats in one part "
                            f"and {self.beats} in another")
        self.beats = beats
        if data:
            self._parts[first] = data
        return self._whole() is not None

    def __len__(self) -> int:
        """Parts held."""
        return len(self._parts)

    def _whole(self) -> bytes | None:
        out, at = [], 0
        while at < self.beats and (data := self._parts.get(at)) is not None:
            out.append(data)
            at += len(data) // self.y_bytes
        return b"".join(out) if at == self.beats else None

    @property
    def data(self) -> bytes:
        """Every beat's bytes, in order (once :meth:`add` returned True)."""
        return self._whole()


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress(total: int, show: bool, desc: str):
    if not show:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)
