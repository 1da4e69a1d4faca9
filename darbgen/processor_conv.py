"""Convolution steps of the layer-sequenced processor: its im2col gather, in integers.

A convolution runs on the processor's lanes as in the chain (:mod:`darbgen.conv`): one
matrix-vector product of the layer's rows (the filters) per output position, over
that position's patch. The processor keeps every feature map in one **scratchpad**:
the map in front of layer ``j`` (:class:`darbgen.conv.MapBuffer`: before pooling, with
the consumer's zero border) has its own *region* of it, the regions back to back in
layer order, so a region's border is never written and stays the zero it was cleared
to when the tables were loaded.

A *gathered* step (:attr:`~darbgen.processor.StepKind.CONV`) is a convolution or the
Linear layer after one (one position over the whole map). Per position ``p`` the
gather writes the patch into every lane's x memory, element ``e`` being the maximum
over the pool window ``d`` of ``scratchpad[base[p] + column[e] + pool[d]]``; the lanes
run the step's rows (replayed from the step's first header for every position); the
requantizer writes row ``f`` to ``dest[f] + offset[p]`` in the next region (dropped
where ``skip[p]``: a position no pool window uses), or into the lanes' x as a Linear
step does. Three tables hold those addresses, each read in order through the steps
(no base addresses, as the lanes' memories):

* ``POSITIONS``: first, if the network starts with a convolution, one entry per input
  element (``offset``: where the image's element goes; ``skip`` for the last beat's
  padding); then per gathered step one entry per position (``addr``: the patch base
  ``base[p]``, ``offset``/``skip``: where its outputs go);
* ``COLUMNS``: per gathered step its columns' offsets (``column[e]``);
* ``POOLS``: per gathered step the offsets of its producer's pool window (``pool[d]``).

Every address is absolute (a region's start included), so the hardware adds only
``base + column + pool`` and ``dest + offset``. The golden model does not use these
tables: a hardware run equal to it checks them too.

Only numpy: no torch, no Amaranth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ConfigError, _bits
from .network import NetworkPlan, _buffer

__all__ = ["GATHER_CAPACITIES", "ConvLayout", "conv_layout", "conv_step_fields",
           "gather_fields", "gather_memories", "gather_capacities", "check_gather",
           "gather_words", "check_scratchpad"]

#: The :class:`~darbgen.processor.ProcessorConfig` capacities of the gather.
GATHER_CAPACITIES = ("map_depth", "gather_positions", "gather_columns", "gather_pools")


@dataclass(frozen=True, eq=False)
class ConvLayout:
    """Where a network's feature maps and gather tables go (:func:`conv_layout`).

    Members
    -------
    gathered : list of bool
        Per layer, whether its step gathers its input from the scratchpad.
    buffers : list of (MapBuffer or None)
        Per layer, the map in front of it (gathered layers only).
    regions : list of int
        Per layer, the scratchpad address where its input map starts.
    inputs : int
        ``POSITIONS`` entries of the network's input image (0 unless it starts with a
        convolution): its beats' elements.
    positions, columns, pools, maps : list of int
        Per layer, what it and the layers before it fill: position, column and pool
        entries, and scratchpad entries.
    """

    gathered: list
    buffers: list
    regions: list
    inputs: int
    positions: list
    columns: list
    pools: list
    maps: list


def conv_layout(net: NetworkPlan, input_width: int) -> ConvLayout:
    """The gather's layout of ``net`` on a processor taking ``input_width`` elements
    per input beat."""
    n = len(net.layers)
    geoms = [q.layer.conv_geometry for q in net.layers]
    gathered = [g is not None or (j > 0 and geoms[j - 1] is not None) for j, g in enumerate(geoms)]
    buffers = [_buffer(net, j) if gathered[j] else None for j in range(n)]
    inputs = -(-net.cols // input_width) * input_width if gathered[0] else 0
    regions, positions, columns, pools, maps = [], [], [], [], []
    at, p, c, d = 0, inputs, 0, 0
    for j, buf in enumerate(buffers):
        regions.append(at)
        if buf is not None:
            at += buf.depth
            p += geoms[j].positions if geoms[j] is not None else 1
            c += net.layers[j].layer.cols
            d += buf.pool ** 2
        positions.append(p)
        columns.append(c)
        pools.append(d)
        maps.append(at)
    return ConvLayout(gathered, buffers, regions, inputs, positions, columns, pools, maps)


# -- the contract's pieces (ProcessorConfig reads them) ---------------------------------

def conv_step_fields(config) -> list:
    """A program step's gather fields: ``positions`` (1 for a gathered Linear layer),
    ``cols`` and ``pools`` (entries of the step in the column and pool tables) and
    ``to_map`` (its outputs go to the scratchpad, at ``dest + offset``); none without
    a gather."""
    if not config.has_gather:
        return []
    return [("positions", ("u", _bits(config.gather_positions))),
            ("cols", ("u", _bits(config.act_depth))),
            ("pools", ("u", _bits(config.gather_pools))), ("to_map", ("u", 1))]


def gather_fields(config) -> list:
    """One :attr:`~darbgen.processor.Target.GATHER` word: the table it writes
    (a :class:`~darbgen.processor.GatherTable`), an address, and for a position a
    write offset and ``skip``; ``first`` restarts all three tables and clears the
    scratchpad."""
    a = ("u", config.map_bits)
    return [("addr", a), ("offset", a), ("skip", ("u", 1)), ("table", ("u", 2)),
            ("first", ("u", 1))]


def position_fields(config) -> list:
    """One entry of the ``POSITIONS`` table as stored."""
    a = ("u", config.map_bits)
    return [("addr", a), ("offset", a), ("skip", ("u", 1))]


def gather_memories(config) -> dict:
    """The gather's memories: name → ``(count, depth, width in bits)``."""
    a = config.map_bits
    return {"scratchpad": (1, config.map_depth, config.engine.input_bits),
            "positions": (1, config.gather_positions, 2 * a + 1),
            "columns": (1, config.gather_columns, a),
            "pools": (1, config.gather_pools, a)}


def check_capacities(config) -> None:
    """Raise :class:`ConfigError` unless the gather capacities (non-negative integers,
    checked by the config) are all 0 (no gather) or all positive."""
    values = [getattr(config, name) for name in GATHER_CAPACITIES]
    if any(values) and not all(values):
        text = ", ".join(f"{n} {v}" for n, v in zip(GATHER_CAPACITIES, values))
        raise ConfigError(f"the gather capacities must be all 0 (no gather) or all "
                          f"positive, not {text}")


def gather_capacities(plans, input_width: int) -> dict:
    """The smallest gather capacities that run each of ``plans`` (all 0 if none of
    them has a convolution)."""
    layouts = [conv_layout(net, input_width) for net in plans]
    need = {"map_depth": max(lay.maps[-1] for lay in layouts),
            "gather_positions": max(lay.positions[-1] for lay in layouts),
            "gather_columns": max(lay.columns[-1] for lay in layouts),
            "gather_pools": max(lay.pools[-1] for lay in layouts)}
    return need if need["map_depth"] else {name: 0 for name in need}


def check_gather(net: NetworkPlan, config) -> None:
    """Raise :class:`ConfigError` unless ``net``'s feature maps and gather tables fit
    ``config``; the message names the first layer that does not fit."""
    lay = conv_layout(net, config.engine.input_width)
    for j, q in enumerate(net.layers):
        if not lay.gathered[j]:
            continue
        where = f"layer {q.layer.name!r}"
        if not config.has_gather:
            raise ConfigError(f"{where} is a convolution: this processor has no im2col "
                              "gather (map_depth 0), it runs Linear layers only")
        for key, what, cap in (("maps", "scratchpad entries", config.map_depth),
                               ("positions", "gather positions", config.gather_positions),
                               ("columns", "gather columns", config.gather_columns),
                               ("pools", "pool offsets", config.gather_pools)):
            total = getattr(lay, key)
            if total[j] > cap:
                before = total[j - 1] if j else (lay.inputs if key == "positions" else 0)
                tail = f" ({before:,} of them for the input and the layers before it)" \
                    if before else ""
                raise ConfigError(f"{where} needs {total[j]:,} {what}{tail}, the processor "
                                  f"holds {cap:,}")


# -- the load ---------------------------------------------------------------------------

def conv_steps(net: NetworkPlan, lay: ConvLayout) -> list:
    """Per layer, its step's ``kind`` and gather fields (a dict)."""
    from .processor import StepKind

    out = []
    for j, q in enumerate(net.layers):
        g = q.layer.conv_geometry
        to_map = j + 1 < len(net.layers) and lay.gathered[j + 1]
        if lay.gathered[j]:
            out.append({"kind": int(StepKind.CONV), "positions": 1 if g is None else g.positions,
                        "cols": q.layer.cols, "pools": lay.buffers[j].pool ** 2,
                        "to_map": int(to_map)})
        else:
            out.append({"kind": int(StepKind.LINEAR), "positions": 0, "cols": 0, "pools": 0,
                        "to_map": int(to_map)})
    return out


def row_addresses(net: NetworkPlan, lay: ConvLayout, i: int) -> np.ndarray | None:
    """Where step ``i``'s requantizer writes each row: the scratchpad address of a
    convolution's channel plane (plus the position's offset, on chip) or of a Linear
    layer's element in the next region; ``None`` when the next step takes its input in
    the lanes' x (the row itself)."""
    if i + 1 >= len(net.layers) or not lay.gathered[i + 1]:
        return None
    buf = lay.buffers[i + 1]
    local = buf.channel_bases() if net.layers[i].layer.conv_geometry is not None \
        else buf.element_addresses()
    return lay.regions[i + 1] + local


def gather_words(net: NetworkPlan, lay: ConvLayout) -> dict:
    """The gather's table entries for ``net`` (fields of :func:`gather_fields`, as
    arrays), tables in :class:`~darbgen.processor.GatherTable` order."""
    from .processor import GatherTable

    pos_addr, pos_off, pos_skip, columns, pools = [], [], [], [], []
    if lay.inputs:
        buf = lay.buffers[0]
        offsets = np.zeros(lay.inputs, np.int64)
        offsets[:net.cols] = lay.regions[0] + buf.element_addresses()
        skip = np.ones(lay.inputs, np.int64)
        skip[:net.cols] = 0
        pos_addr.append(np.zeros(lay.inputs, np.int64))
        pos_off.append(offsets)
        pos_skip.append(skip)
    for j, q in enumerate(net.layers):
        if not lay.gathered[j]:
            continue
        g, buf = q.layer.conv_geometry, lay.buffers[j]
        bases = lay.regions[j] + buf.patch_bases(g)
        offsets, skip = np.zeros(len(bases), np.int64), np.zeros(len(bases), bool)
        if j + 1 < len(net.layers) and lay.gathered[j + 1] and g is not None:
            offsets, skip = lay.buffers[j + 1].position_offsets(g.output_size)
        pos_addr.append(bases)
        pos_off.append(offsets)
        pos_skip.append(skip.astype(np.int64))
        cols = buf.column_offsets(g)
        assert len(cols) == q.layer.cols
        columns.append(cols)
        pools.append(buf.pool_offsets())
    sections = [(GatherTable.POSITIONS, np.concatenate(pos_addr), np.concatenate(pos_off),
                 np.concatenate(pos_skip)),
                (GatherTable.COLUMNS, np.concatenate(columns), None, None),
                (GatherTable.POOLS, np.concatenate(pools), None, None)]
    words = {k: [] for k in ("addr", "offset", "skip", "table")}
    for table, addr, offset, skip in sections:
        zeros = np.zeros(len(addr), np.int64)
        words["addr"].append(addr)
        words["offset"].append(zeros if offset is None else offset)
        words["skip"].append(zeros if skip is None else skip)
        words["table"].append(zeros + int(table))
    words = {k: np.concatenate(v).astype(np.int64) for k, v in words.items()}
    words["first"] = np.zeros(len(words["addr"]), np.int64)
    words["first"][0] = 1
    return words


def conv_cycles(q, lanes: int, beats: int, slots: int) -> int:
    """A generous bound on a gathered step's cycles (simulation limits)."""
    g = q.layer.conv_geometry
    positions = 1 if g is None else g.positions
    return positions * (beats + slots * (lanes + 1) + 3 * q.layer.rows
                        + 4 * q.layer.cols + 48)



def check_scratchpad(net: NetworkPlan, lay: ConvLayout, tables: dict | None = None) -> None:
    """Raise :class:`ConfigError` if, in one inference of ``net``, a gathered step reads a
    scratchpad entry before it is written, or writes an entry it reads.

    The check walks the tables (``tables``: fields of :func:`gather_words`, default
    ``net``'s own) in the order the sequencer uses them. The sequencer finishes every
    write of a step before the next step's first read (its FLUSH state), and a step's
    position ``p`` writes only after its lanes have read the patch of ``p``; so an entry
    is safe to read when this inference has written it before, or when no step ever
    writes it (a zero border, cleared at load). An entry written by a step and read by
    a later position of the same step would break the positions' independence.
    """
    g = gather_words(net, lay) if tables is None else tables
    from .processor import GatherTable

    def section(table):
        mine = g["table"] == table
        return g["addr"][mine], g["offset"][mine], g["skip"][mine]

    pos_addr, pos_off, pos_skip = section(GatherTable.POSITIONS)
    columns, pools = section(GatherTable.COLUMNS)[0], section(GatherTable.POOLS)[0]
    steps = conv_steps(net, lay)
    none = np.zeros(0, np.int64)
    image = pos_off[:lay.inputs][pos_skip[:lay.inputs] == 0]
    reads, writes = [], []
    p, c, d = lay.inputs, 0, 0
    for j, s in enumerate(steps):
        n = s["positions"] if lay.gathered[j] else 1
        off, skip = (pos_off[p:p + n], pos_skip[p:p + n]) if lay.gathered[j] else \
            (np.zeros(1, np.int64), np.zeros(1, np.int64))
        rows = row_addresses(net, lay, j)
        writes.append(none if rows is None else
                      (rows[None, :] + off[skip == 0, None]).reshape(-1))
        if lay.gathered[j]:
            patch = (columns[c:c + s["cols"], None] + pools[None, d:d + s["pools"]]).reshape(-1)
            reads.append((pos_addr[p:p + n, None] + patch[None, :]).reshape(-1))
            p, c, d = p + n, c + s["cols"], d + s["pools"]
        else:
            reads.append(none)
    ever = np.concatenate([image, *writes])
    for j, q in enumerate(net.layers):
        where = f"layer {q.layer.name!r}"
        before = image if j == 0 else writes[j - 1]
        stale = np.setdiff1d(np.intersect1d(reads[j], ever), before)
        if len(stale):
            raise ConfigError(f"{where} reads scratchpad entry {int(stale[0])} before this "
                              "inference writes it")
        both = np.intersect1d(reads[j], writes[j])
        if len(both):
            raise ConfigError(f"{where} writes scratchpad entry {int(both[0])}, which it "
                              "also reads")
