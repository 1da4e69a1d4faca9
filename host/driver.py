"""The host driver: identify a board, stream a layer's weights to it, run vectors (no torch).

:class:`Board` talks :mod:`darbgen.hdl.protocol` over any
:class:`~darbgen.host.transport.Transport`. Each request is sent with a new
sequence number and retried with the same one after a NAK or a silence of
``timeout`` seconds; every command is idempotent on the device, so a retry is
always safe. Everything that travels is derived from the device's core config, an
:class:`~darbgen.config.EngineConfig` or a whole network's
:class:`~darbgen.network.NetworkConfig`: load words, input and output beats.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, EngineConfig
from ..format import SparseLayer
from ..hdl.protocol import (MAX_PAYLOAD, OFFSET_BYTES, PROTOCOL_VERSION, Command, Identity,
                            Sizes, Status, bytes_to_words, parse_identity, parse_status,
                            weights_crc, words_to_bytes)
from ..network import NetworkConfig, NetworkPlan
from ..network import load_words as network_load_words
from ..packing import input_words, load_words, schedule, unpack_fields, unpack_outputs
from .framing import FrameParser, encode_frame
from .transport import LinkError, Transport

__all__ = ["Board", "LinkTimeout", "NakError", "BuildMismatch", "WeightsMismatch",
           "LoadReport", "expected_config"]

_RETRY_STATUS = {Status.NAK_CRC.value, Status.NAK_LENGTH.value}


class LinkTimeout(LinkError):
    """The board did not answer, even after retries."""


class NakError(LinkError):
    """The board refused a request, even after retries."""


class BuildMismatch(LinkError):
    """The board's gateware was not built for this artifact (or this protocol)."""


class WeightsMismatch(LinkError):
    """The weights on the board differ from the artifact's after loading."""


def expected_config(target: SparseLayer | NetworkPlan, lanes: int,
                    input_width: int) -> EngineConfig | NetworkConfig:
    """The core ``darbgen build`` makes for a layer (one engine) or a whole network (a
    chain of engines) at a board's lanes and input width."""
    if isinstance(target, NetworkPlan):
        return NetworkConfig.for_plan(target, lanes, input_width=input_width)
    return EngineConfig.for_layers([target], lanes, input_width=input_width)


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
        Seconds of silence after which a request is retried.
    retries : int
        Attempts per request before giving up.
    progress : bool
        Show a progress bar while weights stream.
    """

    def __init__(self, transport: Transport, *, timeout: float = 1.0, retries: int = 8,
                 progress: bool = False):
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.progress = progress
        self.identity: Identity | None = None
        self.retried = 0                    # requests sent again (NAK or timeout)
        self._parser = FrameParser()
        self._seq = random.Random().randrange(256)  # a fresh session never repeats the last seq
        self._target = self._schedule = None

    # -- requests --------------------------------------------------------------------

    def request(self, command: Command, payload: bytes = b"") -> bytes:
        """Send one request; return its reply payload after the OK status byte.

        Raises
        ------
        LinkTimeout, NakError
        """
        self._seq = (self._seq + 1) & 0xFF
        frame = encode_frame(command, self._seq, payload)
        last = None
        for attempt in range(self.retries):
            if attempt:
                self.retried += 1
            self.transport.write(frame)
            reply = self._await(command, self._seq)
            if reply is None:
                last = "no reply"
                continue
            status = reply.payload[0] if reply.payload else None
            if status == Status.OK.value:
                return reply.payload[1:]
            if status in _RETRY_STATUS:
                last = Status(status).name
                continue
            name = Status(status).name if status in {s.value for s in Status} else status
            raise NakError(f"the board refused {command.name}: {name}")
        if last == "no reply":
            raise LinkTimeout(f"no reply to {command.name} after {self.retries} attempts "
                              f"({self.timeout} s of silence each)")
        raise NakError(f"the board refused {command.name} {self.retries} times ({last})")

    def _await(self, command: Command, seq: int):
        """The reply to ``(command, seq)``, or ``None`` after ``timeout`` s of silence."""
        while True:
            data = self.transport.read(self.timeout)
            if not data:
                return None
            for frame in self._parser.feed(data):
                if frame.command == command.value and frame.seq == seq and frame.payload:
                    return frame
            # Anything else (a stale reply, a NAK for line garbage) is ignored.

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

    def check(self, target: SparseLayer | NetworkPlan) -> None:
        """Raise :class:`BuildMismatch` unless the board's core can run ``target``, a
        layer (one engine) or a whole network (a chain of engines).

        A board built for one layer also runs any layer that fits its engine (block
        sizes, keep count, widths and lane memories); the message names the field
        that does not fit.
        """
        config = self.config
        network = isinstance(target, NetworkPlan)
        try:
            if network != isinstance(config, NetworkConfig):
                raise ConfigError(
                    f"the board runs {'a single engine' if network else 'a whole network'}; "
                    f"this is {'a whole network' if network else 'one layer'}")
            if network:
                config.check_plan(target)
            else:
                config.check_layer(target, schedule(target, config.lanes))
        except ConfigError as e:
            raise BuildMismatch(f"build ID mismatch: board build {self.identity.build_id.hex()} "
                                f"cannot run this {'network' if network else 'layer'}: {e}; "
                                "rebuild with `darbgen build`") from None

    def load(self, target: SparseLayer | NetworkPlan) -> LoadReport:
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
        if isinstance(target, NetworkPlan):
            name, sched = "network", None
            words = network_load_words(target, config)
        else:
            name, sched = target.name, schedule(target, config.lanes)
            words = load_words(target, config, sched)
        data = words_to_bytes(words, sizes.load_bits)
        step = sizes.chunk_words
        before = self.status()["cycles"]
        bar = _progress(len(data), self.progress, f"weights {name}")
        for at in range(0, len(words), step):
            chunk = words_to_bytes(words[at:at + step], sizes.load_bits)
            self.request(Command.LOAD_WEIGHTS, at.to_bytes(OFFSET_BYTES, "little") + chunk)
            bar.update(len(chunk))
        bar.close()
        after = self.status()
        seconds = ((after["cycles"] - before) % (1 << 32)) / self.identity.clock_hz
        efficiency = len(data) / seconds / (self.identity.baud / 10) if seconds else 0.0
        verified = after["words"] == len(words) and after["weights_crc"] == weights_crc(data)
        if not verified:
            raise WeightsMismatch(
                f"the board holds {after['words']} words with CRC-32 "
                f"{after['weights_crc']:08x}; {name} has {len(words)} words "
                f"with CRC-32 {weights_crc(data):08x}")
        self._target, self._schedule = target, sched
        return LoadReport(len(words), len(data), seconds, efficiency, verified)

    def run(self, x) -> np.ndarray:
        """Run input vectors ``x`` (``(n, cols)`` or ``(cols,)`` integers) on what was
        loaded; return ``(n, rows)`` int64: a layer's exact sums, or a network's logits."""
        if self._target is None:
            raise LinkError("load a layer or a network before running vectors")
        config, sizes = self.config, Sizes.of(self.config)
        network = isinstance(self._target, NetworkPlan)
        cols = self._target.cols
        x = np.atleast_2d(np.asarray(x))
        if x.ndim != 2 or x.shape[1] != cols:
            what = "the network" if network else f"layer {self._target.name!r}"
            raise ValueError(f"inputs must have {cols} columns for {what}, not shape {x.shape}")
        # The device takes whole vectors of the core's width: pad with zeros.
        padded = np.zeros((len(x), config.max_cols), dtype=np.int64)
        padded[:, :x.shape[1]] = x
        first = config.engines[0] if network else config
        out = []
        for vector in padded:
            payload = words_to_bytes(input_words(vector, first, last=False), sizes.x_bits)
            assert len(payload) <= MAX_PAYLOAD
            beats = bytes_to_words(self.request(Command.RUN, payload), sizes.y_bits)
            if network:
                out.append(unpack_fields(config.output_fields, beats)["y"])
            else:
                out.append(unpack_outputs(beats, config, self._schedule)[0])
        return np.stack(out)


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
