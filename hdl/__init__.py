"""Amaranth generator of the regular-block sparse matrix-vector engine (never imports torch)."""

from .decode import IndexDecoder
from .engine import Lane, SpMVEngine

__all__ = ["IndexDecoder", "Lane", "SpMVEngine"]
