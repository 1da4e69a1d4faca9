"""Host side: framing of the serial protocol (driver and transports to come). No torch."""

from .framing import Frame, FrameError, FrameParser, encode_frame

__all__ = ["Frame", "FrameError", "FrameParser", "encode_frame"]
