"""Convolutions as matrix products (im2col): the one definition of every order involved.

A Conv2d layer is stored in its GEMM view, ``F × C·kh·kw``, flattened like torch's
``weight.reshape(F, -1)``: column ``e = (c·kh + i)·kw + j`` holds kernel tap ``(i, j)``
of input channel ``c``. The engine computes one sparse matrix-vector product per output
position ``p = oy·W_out + ox`` (row-major), over the *patch* of that position: element
``e`` of the patch is the input pixel ``(c, oy·sh − ph + i, ox·sw − pw + j)``, and 0
where that falls in the padding. Feature maps travel flattened channel-major
(``c·H·W + y·W + x``), which is torch's ``Flatten`` order.

What an artifact adds to a conv layer's 4-D ``shape`` is a :class:`ConvSpec`: the input
size ``(H, W)``, padding, stride, and the max-pool window that follows the activation
(torch's ``MaxPool2d(k)``: window and stride ``k``, no padding, trailing rows and
columns that do not fill a window dropped). :class:`ConvGeometry` derives every size.

For the network on chip (:mod:`darbgen.network`, :mod:`darbgen.hdl.conv`) a feature map
lives in an activation buffer with a zero border; :class:`MapBuffer` defines that
layout and the address tables with which the chip writes each result and gathers each
patch: ``address = base[position] + offset[column] + pool[d]``, the maximum over the
pool window ``d``. The golden model (:func:`im2col`, :func:`maxpool`) does not use
these tables, so a hardware run equal to it checks them too.

Only numpy: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

__all__ = ["ConvSpec", "ConvGeometry", "MapBuffer", "patch_index", "im2col", "maxpool"]


def _pair(value, name: str, minimum: int) -> tuple:
    """An int or a pair of ints, each at least ``minimum``, as a pair."""
    pair = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 for v in pair):
        raise TypeError(f"{name} must be an integer or a pair of integers, not {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")
    return tuple(int(v) for v in pair)


@dataclass(frozen=True)
class ConvSpec:
    """What a Conv2d layer's artifact entry adds to its ``(F, C, kh, kw)`` shape.

    Parameters
    ----------
    input_size : int or (int, int)
        Height and width ``(H, W)`` of the input feature maps.
    padding : int or (int, int)
        Zero padding ``(ph, pw)`` on each side.
    stride : int or (int, int)
        ``(sh, sw)``.
    pool : int
        Max-pool window (and stride) after the activation; 1 for none.

    Raises
    ------
    TypeError
        A field is not an integer (or a pair).
    ValueError
        A field is out of range.
    """

    input_size: tuple
    padding: tuple = (0, 0)
    stride: tuple = (1, 1)
    pool: int = 1

    def __post_init__(self):
        object.__setattr__(self, "input_size", _pair(self.input_size, "input_size", 1))
        object.__setattr__(self, "padding", _pair(self.padding, "padding", 0))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", 1))
        if not isinstance(self.pool, (int, np.integer)) or isinstance(self.pool, bool):
            raise TypeError(f"pool must be an integer, not {self.pool!r}")
        if self.pool < 1:
            raise ValueError(f"pool must be at least 1, not {self.pool}")
        object.__setattr__(self, "pool", int(self.pool))

    def to_json(self) -> dict:
        return {"input_size": list(self.input_size), "padding": list(self.padding),
                "stride": list(self.stride), "pool": self.pool}

    @classmethod
    def from_json(cls, d) -> "ConvSpec":
        """The spec of a manifest entry.

        Raises
        ------
        TypeError, ValueError
            Not an object with exactly these fields, or a bad field.
        """
        if not isinstance(d, dict):
            raise TypeError(f"must be an object, not {type(d).__name__}")
        fields = {"input_size", "padding", "stride", "pool"}
        if set(d) != fields:
            wrong = sorted(set(d) ^ fields)[0]
            raise ValueError(f"field {wrong!r} is {'missing' if wrong in fields else 'unknown'}")
        return cls(**d)


@dataclass(frozen=True)
class ConvGeometry:
    """Every size of a convolution: its :class:`ConvSpec` with the weight's 4-D shape.

    Raises
    ------
    ValueError
        The kernel does not fit the padded input, or the pool window not the output.
    """

    shape: tuple
    spec: ConvSpec

    def __post_init__(self):
        if len(self.shape) != 4:
            raise ValueError(f"a convolution's weight has 4 dimensions (F, C, kh, kw), "
                             f"not shape {tuple(self.shape)}")
        (h, w), (kh, kw) = self.spec.input_size, self.kernel
        ph, pw = self.spec.padding
        if kh > h + 2 * ph or kw > w + 2 * pw:
            raise ValueError(f"kernel {kh}×{kw} does not fit the {h}×{w} input padded by "
                             f"{ph}×{pw}")
        ho, wo = self.output_size
        if self.spec.pool > min(ho, wo):
            raise ValueError(f"pool {self.spec.pool} does not fit the {ho}×{wo} output")

    @property
    def filters(self) -> int:
        return self.shape[0]

    @property
    def channels(self) -> int:
        return self.shape[1]

    @property
    def kernel(self) -> tuple:
        return tuple(self.shape[2:])

    @property
    def input_shape(self) -> tuple:
        """``(C, H, W)`` of the input feature maps."""
        return (self.channels, *self.spec.input_size)

    @property
    def input_width(self) -> int:
        """Elements of the flattened input, ``C·H·W``."""
        return int(np.prod(self.input_shape))

    @property
    def output_size(self) -> tuple:
        """``(H_out, W_out)`` before pooling."""
        (h, w), (kh, kw) = self.spec.input_size, self.kernel
        (ph, pw), (sh, sw) = self.spec.padding, self.spec.stride
        return ((h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)

    @property
    def positions(self) -> int:
        """Output positions: one matrix-vector product each."""
        ho, wo = self.output_size
        return ho * wo

    @property
    def output_shape(self) -> tuple:
        """``(F, H_p, W_p)`` after pooling: what the next layer sees."""
        ho, wo = self.output_size
        return (self.filters, ho // self.spec.pool, wo // self.spec.pool)

    @property
    def output_width(self) -> int:
        """Elements of the flattened (pooled) output."""
        return int(np.prod(self.output_shape))


def patch_index(g: ConvGeometry) -> np.ndarray:
    """``(positions, C·kh·kw)`` indices into the flattened input: element ``e`` of the
    patch of position ``p``, or -1 where it falls in the padding."""
    c, h, w = g.input_shape
    kh, kw = g.kernel
    (ph, pw), (sh, sw) = g.spec.padding, g.spec.stride
    ho, wo = g.output_size
    oy, ox = np.divmod(np.arange(ho * wo), wo)
    ch, i, j = np.unravel_index(np.arange(c * kh * kw), (c, kh, kw))
    y = oy[:, None] * sh - ph + i[None, :]
    x = ox[:, None] * sw - pw + j[None, :]
    inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
    return np.where(inside, (ch[None, :] * h + y) * w + x, -1)


def im2col(x, g: ConvGeometry) -> np.ndarray:
    """Input feature maps → patches: ``(n, C·H·W)`` or ``(n, C, H, W)`` to
    ``(n, positions, C·kh·kw)`` (zeros in the padding), same dtype.

    Raises
    ------
    ValueError
        ``x`` does not hold ``n`` inputs of the layer's shape.
    """
    x = np.asarray(x)
    if x.ndim < 2 or x[0].size != g.input_width or x.ndim not in (2, 4) or \
            (x.ndim == 4 and x.shape[1:] != g.input_shape):
        raise ValueError(f"feature maps must be (n, {g.input_width}) or (n, "
                         f"{', '.join(map(str, g.input_shape))}), not shape {x.shape}")
    flat = np.concatenate([x.reshape(len(x), -1), np.zeros((len(x), 1), x.dtype)], axis=1)
    return flat[:, patch_index(g)]          # -1 picks the appended zero


def maxpool(y, pool: int) -> np.ndarray:
    """Max-pool ``(n, F, H, W)`` maps with window and stride ``pool``, trailing rows and
    columns that fill no window dropped (torch's ``MaxPool2d(pool)``)."""
    y = np.asarray(y)
    if pool == 1:
        return y
    n, f, h, w = y.shape
    hp, wp = h // pool, w // pool
    y = y[:, :, :hp * pool, :wp * pool].reshape(n, f, hp, pool, wp, pool)
    return y.max(axis=(3, 5))


@dataclass(frozen=True)
class MapBuffer:
    """The on-chip activation buffer between a producer and a consumer layer.

    It holds the producer's output *before pooling*, channel by channel, with a zero
    border of the consumer's padding (in pooled pixels, so ``padding · pool`` entries),
    so that every patch element is one address: no bounds checks on chip.

    Parameters
    ----------
    channels, height, width : int
        The map the consumer reads, after pooling: ``(C, H, W)``.
    pool : int
        The producer's max-pool window (1: none).
    padding : (int, int)
        The consumer's zero padding.
    """

    channels: int
    height: int
    width: int
    pool: int = 1
    padding: tuple = (0, 0)

    @property
    def row(self) -> int:
        """Entries per buffer row: ``(W + 2·pw) · pool``."""
        return (self.width + 2 * self.padding[1]) * self.pool

    @property
    def plane(self) -> int:
        """Entries per channel."""
        return (self.height + 2 * self.padding[0]) * self.pool * self.row

    @property
    def depth(self) -> int:
        return self.channels * self.plane

    def element_addresses(self) -> np.ndarray:
        """Where each element of the flattened (pooled-size) map goes: ``(C·H·W,)``.
        The producer is the network input or a Linear layer (``pool`` is 1)."""
        assert self.pool == 1, "a pooled map is written per position"
        c, y, x = np.unravel_index(np.arange(self.channels * self.height * self.width),
                                   (self.channels, self.height, self.width))
        return c * self.plane + (y + self.padding[0]) * self.row + x + self.padding[1]

    def channel_bases(self) -> np.ndarray:
        """A conv producer's address of channel ``f``'s plane, ``(C,)``."""
        return np.arange(self.channels) * self.plane

    def position_offsets(self, output_size) -> tuple[np.ndarray, np.ndarray]:
        """A conv producer's write offset of each output position (row-major over
        ``output_size``, before pooling) and whether it is dropped (outside every
        pool window)."""
        ho, wo = output_size
        oy, ox = np.divmod(np.arange(ho * wo), wo)
        (ph, pw), s = self.padding, self.pool
        keep = (oy < self.height * s) & (ox < self.width * s)
        return np.where(keep, (oy + ph * s) * self.row + ox + pw * s, 0), ~keep

    def patch_bases(self, g: ConvGeometry | None) -> np.ndarray:
        """Per consumer position, the address of its patch's first tap (channel 0,
        before the channel offset): ``(positions,)``. ``None``: a Linear consumer, one
        position over the whole map."""
        if g is None:
            return np.zeros(1, np.int64)
        ho, wo = g.output_size
        oy, ox = np.divmod(np.arange(ho * wo), wo)
        sh, sw = g.spec.stride
        return (oy * sh * self.row + ox * sw) * self.pool

    def column_offsets(self, g: ConvGeometry | None) -> np.ndarray:
        """Per consumer column ``e = (c, i, j)`` (GEMM order), its offset from the
        patch base. A Linear consumer's columns are the map's flattened elements."""
        kh, kw = (self.height, self.width) if g is None else g.kernel
        c, i, j = np.unravel_index(np.arange(self.channels * kh * kw), (self.channels, kh, kw))
        return c * self.plane + (i * self.row + j) * self.pool

    def pool_offsets(self) -> np.ndarray:
        """Offsets of the ``pool²`` pre-pool entries of one pooled pixel."""
        di, dj = np.divmod(np.arange(self.pool * self.pool), self.pool)
        return di * self.row + dj

    @classmethod
    def between(cls, producer: ConvGeometry | None, consumer: ConvGeometry | None,
                width: int) -> "MapBuffer":
        """The buffer feeding ``consumer`` (``None``: Linear, taking ``width`` inputs)
        from ``producer`` (``None``: the network input or a Linear layer)."""
        padding = (0, 0) if consumer is None else consumer.spec.padding
        if consumer is not None:
            c, h, w = consumer.input_shape
        elif producer is not None:
            c, h, w = producer.output_shape
        else:
            c, h, w = width, 1, 1
        return cls(c, h, w, 1 if producer is None else producer.spec.pool, padding)
