"""Amaranth layouts of the engine's stream payloads, derived from the config's field lists."""

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from ..config import EngineConfig

__all__ = ["to_shape", "to_layout", "beat_layout", "header_layout", "load_layout",
           "input_layout", "output_layout"]


def to_shape(shape):
    """A field shape of :mod:`darbgen.config` as an Amaranth shape."""
    if shape[0] == "array":
        return data.ArrayLayout(to_shape(shape[1]), shape[2])
    return signed(shape[1]) if shape[0] == "s" else unsigned(shape[1])


def to_layout(fields) -> data.StructLayout:
    """A field list as a ``data.StructLayout`` (fields LSB first, like the packer)."""
    return data.StructLayout({name: to_shape(shape) for name, shape in fields})


def beat_layout(c: EngineConfig):
    return to_layout(c.beat_fields)


def header_layout(c: EngineConfig):
    return to_layout(c.header_fields)


def load_layout(c: EngineConfig):
    return to_layout(c.load_fields)


def input_layout(c: EngineConfig):
    return to_layout(c.input_fields)


def output_layout(c: EngineConfig):
    return to_layout(c.output_fields)
