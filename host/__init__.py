"""Host side: serial transports, framing, the board driver and programming. No torch."""

from .driver import (Board, BuildMismatch, LinkTimeout, LoadReport, NakError,
                     WeightsMismatch, expected_config)
from .framing import Frame, FrameError, FrameParser, encode_frame
from .program import program
from .transport import LinkError, SerialTransport, Transport

__all__ = ["Board", "BuildMismatch", "LinkTimeout", "LoadReport", "NakError",
           "WeightsMismatch", "expected_config", "Frame", "FrameError", "FrameParser",
           "encode_frame", "program", "LinkError", "SerialTransport", "Transport"]
