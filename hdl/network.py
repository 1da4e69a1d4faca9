"""A whole network on chip: a chain of engines with a requantizer after each.

:class:`Requantizer` takes one engine's output beats (one sum per lane, in the
engine's slot order), adds each row's integer bias, requantizes with the row's
multiplier and shift (:func:`darbgen.quant.requant`, rounding half up), clamps (at 0
after a ReLU) and scatters the results to their rows; once a vector is complete it
streams the activations in column order into the next engine. After the last layer
it streams the integer logits (``acc + bias``) out, one row per beat.

Its table holds one entry per output position (``dest`` row, bias, multiplier,
shift, ``valid``), in the order the engine emits them, then one entry per row that has
no weights: those never leave an engine, so they are applied with a zero sum. The host
writes the tables with :func:`darbgen.network.load_words`.

:class:`Network` is the chain; its ``load``, ``x`` and ``y`` streams have the shape of
an engine's (``y`` carries one logit per beat), so the same testbench drives both.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect

from ..network import OUTPUT_BITS, NetworkConfig
from .engine import SpMVEngine
from .layouts import output_layout, to_layout

__all__ = ["Requantizer", "Network"]

# Cycles from issuing a table position to its result being written (table read, bias
# add, multiply, rounding add; the shift and clamp go straight into the write).
_PIPELINE_DEPTH = 4


def requant_table(m: Module, load, positions: int, entry_l, name: str = "table",
                  attrs: dict | None = None):
    """A requantizer's table of ``positions`` entries of layout ``entry_l``, written in
    order from ``load`` (``first`` restarts it). Returns its read port and the count of
    entries written. ``name`` names the memory (a second table in the same module);
    ``attrs`` are the memory's synthesis attributes."""
    # At least 2 words: a 1-word memory's 0-bit address is `wire [-1:0]` in Verilog.
    m.submodules[name] = table = memory.Memory(shape=entry_l, depth=max(positions, 2),
                                               init=[], attrs=attrs)
    table_wr, table_rd = table.write_port(), table.read_port()
    loaded = Signal(range(positions + 1))          # entries written since `first`
    at = Mux(load.payload.first, 0, loaded)
    m.d.comb += [load.ready.eq(1), table_wr.addr.eq(at),
                 table_wr.data.eq(load.payload), table_wr.en.eq(load.valid)]
    with m.If(load.valid):
        m.d.sync += loaded.eq(at + 1)
    return table_rd, loaded


def requant_pipeline(m: Module, entry, issue, acc, acc_width: int, final: bool, lo: int, hi: int,
                     base=None, skip=None, tag=None, clamp_stage: bool = False, clamp=None):
    """The requantization of :func:`darbgen.quant.requant`, pipelined: ``entry`` is the
    table entry read in the cycle after ``issue`` with the sum ``acc``. Returns the
    write enable, destination and clamped result, ``_PIPELINE_DEPTH`` cycles later.
    ``base`` (added to ``entry.dest``) and ``skip`` (drops the write) come with
    ``entry``: an output position's offset in an activation buffer. ``tag`` (a value
    of ``entry``'s cycle) replaces the destination: the LSTM cell's ``(unit, gate)``.
    ``clamp_stage`` registers the shifted value before the clamp and the clamped result
    (two cycles more): with bounds chosen at run time, the shift and the clamp in one
    cycle limited the iCE40 processor to 19.6 MHz, the clamp and the write of its result
    to 29.3 MHz. ``clamp`` (with ``clamp_stage``, in place of ``lo`` and ``hi``) maps the
    shifted value to the result (:func:`saturate`)."""
    s1_valid, s1_acc = Signal(), Signal(signed(acc_width))
    m.d.sync += [s1_valid.eq(issue), s1_acc.eq(acc)]
    v_bits = max(acc_width, len(entry.bias)) + 1
    # The multiplier's operands and product have no reset (the valid bits do): Yosys packs
    # them into the iCE40 DSPs instead of logic cells.
    s2_ok, s2_v = Signal(), Signal(signed(v_bits), reset_less=True)
    p_bits = v_bits + (0 if final else len(entry.mult) + 1)
    # A shift of p_bits already rounds every product to 0, as any larger one does
    # (|p| < 2^(p_bits-2)): saturating it keeps the rounding term inside s3_half.
    shift_max = min(p_bits, (1 << len(entry.shift)) - 1)
    s2_mult = Signal.like(entry.mult, reset_less=True)
    s2_shift = Signal(range(shift_max + 1))
    if tag is None:
        s2_dest = Signal.like(entry.dest)
        tag = entry.dest if base is None else entry.dest + base
    else:
        s2_dest = Signal(len(tag))
    ok = s1_valid & entry.valid if skip is None else s1_valid & entry.valid & ~skip
    m.d.sync += [s2_ok.eq(ok), s2_v.eq(s1_acc + entry.bias), s2_mult.eq(entry.mult),
                 s2_shift.eq(Mux(entry.shift > shift_max, shift_max, entry.shift)),
                 s2_dest.eq(tag)]
    s3_ok, s3_shift, s3_dest = Signal(), Signal.like(s2_shift), Signal.like(s2_dest)
    s3_p = Signal(signed(p_bits), reset_less=True)
    m.d.sync += [s3_ok.eq(s2_ok), s3_shift.eq(s2_shift), s3_dest.eq(s2_dest),
                 s3_p.eq(s2_v if final else s2_v * s2_mult)]
    if clamp_stage and not final:
        # darbgen.quant.round_shift rounds after the shift: floor((p + 2^(s-1)) / 2^s)
        # = floor((floor(2p / 2^s) + 1) / 2), also for s = 0. Shifting first needs no
        # half-LSB term (a 49-bit decoder and register, ~100 iCE40 logic cells).
        s4_ok, s4_dest = Signal(), Signal.like(s3_dest)
        s4_t = Signal(signed(p_bits + 1))
        m.d.sync += [s4_ok.eq(s3_ok), s4_dest.eq(s3_dest), s4_t.eq((s3_p << 1) >> s3_shift)]
        s5_ok, s5_dest, s5_scaled = Signal(), Signal.like(s4_dest), Signal(signed(p_bits + 1))
        m.d.sync += [s5_ok.eq(s4_ok), s5_dest.eq(s4_dest), s5_scaled.eq((s4_t + 1) >> 1)]
        return _clamp_stage(m, s5_ok, s5_dest, s5_scaled, lo, hi, clamp)
    s3_half = Signal(p_bits)
    # The rounding of darbgen.quant.round_shift: half an LSB of the shift.
    m.d.sync += s3_half.eq(0 if final else (Const(1, 1) << s2_shift)[1:])
    # The add and the shift-and-clamp get a stage each: together with the multiply
    # in one cycle they limited a 16-lane chain on ECP5 to 51.6 MHz.
    s4_ok, s4_shift, s4_dest = Signal(), Signal.like(s3_shift), Signal.like(s3_dest)
    s4_sum = Signal(signed(p_bits + 1))
    m.d.sync += [s4_ok.eq(s3_ok), s4_shift.eq(s3_shift), s4_dest.eq(s3_dest),
                 s4_sum.eq(s3_p + s3_half)]
    scaled = s4_sum if final else s4_sum >> s4_shift
    if clamp_stage:
        s5_ok, s5_dest, s5_scaled = Signal(), Signal.like(s4_dest), Signal.like(s4_sum)
        m.d.sync += [s5_ok.eq(s4_ok), s5_dest.eq(s4_dest), s5_scaled.eq(scaled)]
        return _clamp_stage(m, s5_ok, s5_dest, s5_scaled, lo, hi, clamp)
    result = Mux(scaled < lo, lo, Mux(scaled > hi, hi, scaled))
    return s4_ok, s4_dest, result


def _clamp_stage(m: Module, ok, dest, scaled, lo, hi, clamp=None):
    """``scaled`` clamped to ``[lo, hi]`` (or ``clamp(scaled)``), registered with ``ok``
    and ``dest``."""
    if clamp is None:
        result = Mux(scaled < lo, lo, Mux(scaled > hi, hi, scaled))
        s6_result = Signal(signed(max(len(Value.cast(lo)), len(Value.cast(hi))) + 1))
    else:
        result = clamp(scaled)
        s6_result = Signal(Value.cast(result).shape())
    s6_ok, s6_dest = Signal(), Signal.like(dest)
    m.d.sync += [s6_ok.eq(ok), s6_dest.eq(dest), s6_result.eq(result)]
    return s6_ok, s6_dest, s6_result


def saturate(value, bits: int, floor0=0):
    """Signed ``value`` clamped to the signed ``bits``-bit range, or with ``floor0`` to
    ``[0, 2^(bits-1) - 1]``. It fits when its bits from ``bits - 1`` up are all equal: no
    comparator of its full width (two carry chains of 50 cells in the iCE40 processor's
    requantizer)."""
    v = Value.cast(value)
    top, neg = v[bits - 1:], v[-1]
    fits = top.all() | ~top.any()
    below = Mux(floor0, Const(0, signed(bits)), Const(-1 << (bits - 1), signed(bits)))
    return Mux(neg & floor0, 0, Mux(fits, v[:bits].as_signed(),
                                    Mux(neg, below, Const((1 << (bits - 1)) - 1, signed(bits)))))


def requant_states(m: Module, y, beat, lane, k, issue, acc, lanes: int, loaded, tail_done,
                   can_take=None, gapless=False, in_place=False):
    """The FILL, APPLY and TAIL states of a requantizer's FSM (inside ``with m.FSM()``).

    FILL takes an engine output beat from ``y`` (when ``can_take``, if given), APPLY
    issues its ``lanes`` sums to the pipeline, one table position ``k`` per cycle, and
    after a vector's last beat TAIL issues sum 0 for the positions up to ``loaded``
    (rows without weights). ``tail_done()`` then adds the branches that end TAIL: it
    is called right after TAIL's ``with m.If(k < loaded)``, so it continues that chain
    with ``m.Elif``/``m.Else``. ``gapless`` takes the next beat in APPLY's last cycle
    instead of passing through FILL (the LSTM cell: a cycle per beat saved).
    ``in_place`` (with ``gapless``, ``beat`` unused) reads the sums from ``y``'s payload
    and takes the beat in APPLY's last cycle: for a producer that holds its payload
    until it is taken and sends a vector's next beat in the cycle after (the
    processor's lanes' sum memories). Same cycles, without a copy of the beat (105
    flip-flops on the iCE40 processor).
    """
    with m.State("FILL"):
        if in_place:
            take = y.valid
        elif can_take is None:
            m.d.comb += y.ready.eq(1)
            take = y.valid
        else:
            m.d.comb += y.ready.eq(can_take)
            take = y.valid & can_take
        with m.If(take):
            m.d.sync += lane.eq(0)
            if not in_place:
                m.d.sync += beat.eq(y.payload)
            m.next = "APPLY"
    with m.State("APPLY"):
        src = y.payload if in_place else beat
        m.d.comb += [issue.eq(1), acc.eq(src.y[lane])]
        m.d.sync += [k.eq(k + 1), lane.eq(lane + 1)]
        with m.If(lane == lanes - 1):
            if in_place:
                m.d.comb += y.ready.eq(1)
                m.d.sync += lane.eq(0)
            with m.If(src.last):
                m.next = "TAIL"
            with m.Else():
                if in_place:
                    pass                # the next beat is in y's payload from the next cycle
                elif gapless:
                    # Take the next beat now: the engine drains one per cycle.
                    m.d.comb += y.ready.eq(1)
                    with m.If(y.valid):
                        m.d.sync += [beat.eq(y.payload), lane.eq(0)]
                    with m.Else():
                        m.next = "FILL"
                else:
                    m.next = "FILL"
    with m.State("TAIL"):
        # Rows without weights: their sum is 0.
        m.d.comb += [issue.eq(k < loaded), acc.eq(0)]
        with m.If(k < loaded):
            m.d.sync += k.eq(k + 1)
        tail_done()


class Requantizer(wiring.Component):
    """Requantize engine ``index``'s outputs into the next engine's inputs (or logits).

    Parameters
    ----------
    config : NetworkConfig
    index : int
        The layer whose engine feeds this requantizer.

    Members
    -------
    load : In(stream.Signature(requant_fields))
        Table entries (always ready); ``first`` restarts the table.
    y : In(stream.Signature(output_layout(engine)))
        The engine's output beats.
    out : Out(stream.Signature(...))
        The next engine's input beats, or for the last layer ``{y, last}`` logits.
    """

    def __init__(self, config: NetworkConfig, index: int):
        self._config, self._index = config, index
        self._final = index == config.layers - 1
        src = config.engines[index]
        out_fields = config.output_fields if self._final else config.engines[index + 1].input_fields
        super().__init__({
            "load": In(stream.Signature(to_layout(config.requant_fields(index)))),
            "y": In(stream.Signature(output_layout(src))),
            "out": Out(stream.Signature(to_layout(out_fields))),
        })

    def elaborate(self, platform):
        m = Module()
        c, i, final = self._config, self._index, self._final
        src = c.engines[i]
        if final:
            per_word, words, elem = 1, c.rows[i], signed(OUTPUT_BITS)
            lo, hi = -(1 << (OUTPUT_BITS - 1)), (1 << (OUTPUT_BITS - 1)) - 1
        else:
            dst = c.engines[i + 1]
            per_word, words, elem = dst.input_width, dst.x_depth, signed(dst.input_bits)
            hi = (1 << (dst.input_bits - 1)) - 1
            lo = 0 if c.relu[i] else -hi - 1
        positions = c.positions(i)
        m.submodules.act = act = memory.Memory(shape=elem, depth=per_word * words, init=[])
        act_wr, act_rd = act.write_port(), act.read_port()
        table_rd, loaded = requant_table(m, self.load, positions, to_layout(c.requant_fields(i)))

        # -- apply: one table position per cycle, pipelined ------------------------------
        beat = Signal.like(self.y.payload)
        lane = Signal(range(src.lanes))
        k = Signal(range(positions + 1))
        issue = Signal()
        acc = Signal(signed(src.acc_width))
        m.d.comb += table_rd.addr.eq(k)
        s4_ok, s4_dest, result = requant_pipeline(m, table_rd.data, issue, acc, src.acc_width,
                                                  final, lo, hi)
        m.d.comb += [act_wr.en.eq(s4_ok), act_wr.addr.eq(s4_dest), act_wr.data.eq(result)]

        # -- emit: the activations in column order, `per_word` per beat ----------------
        e = Signal(range(per_word * words + 1))
        slot = Signal(range(max(per_word, 2)))             # never zero-width
        w = Signal(range(words + 1))
        pending, pending_slot = Signal(), Signal.like(slot)
        word = Signal(elem.width * per_word)
        m.d.sync += pending.eq(0)
        with m.If(pending):
            m.d.sync += word.word_select(pending_slot, elem.width).eq(act_rd.data)
        m.d.comb += act_rd.addr.eq(e)
        last_word = w == words - 1
        if final:
            m.d.comb += [self.out.payload.y.eq(word), self.out.payload.last.eq(last_word)]
        else:
            m.d.comb += [self.out.payload.x.as_value().eq(word),
                         self.out.payload.last.eq(last_word)]

        flush = Signal(range(_PIPELINE_DEPTH + 1))

        def tail_done():
            with m.Else():
                m.d.sync += flush.eq(_PIPELINE_DEPTH)
                m.next = "FLUSH"

        with m.FSM():
            requant_states(m, self.y, beat, lane, k, issue, acc, src.lanes, loaded, tail_done)
            with m.State("FLUSH"):
                m.d.sync += flush.eq(flush - 1)
                with m.If(flush == 1):
                    m.d.sync += [e.eq(0), slot.eq(0), w.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.sync += [pending.eq(1), pending_slot.eq(slot), e.eq(e + 1)]
                with m.If(slot == per_word - 1):
                    m.d.sync += slot.eq(0)
                    m.next = "SEND"
                with m.Else():
                    m.d.sync += slot.eq(slot + 1)
            with m.State("SEND"):
                m.d.comb += self.out.valid.eq(~pending)
                with m.If(self.out.valid & self.out.ready):
                    m.d.sync += w.eq(w + 1)
                    with m.If(last_word):
                        m.d.sync += k.eq(0)
                        m.next = "FILL"
                    with m.Else():
                        m.next = "READ"
        return m


class Network(wiring.Component):
    """The chain: engine → requantizer → engine → … → requantizer (logits).

    Parameters
    ----------
    config : NetworkConfig

    Members
    -------
    load : In(stream.Signature(load_fields))
        Words of :func:`darbgen.network.load_words` (always ready): ``target`` picks the
        engine (``0..n-1``) or requantizer (``n..2n-1``) that takes ``data``.
    x : In(stream.Signature(input_layout(engine 0)))
    y : Out(stream.Signature(output_fields))
        One integer logit per beat, rows in order, ``last`` on each vector's final row.
    slots : Out
        Output beats per vector (the last layer's rows) once every engine holds
        weights, else 0 (like :attr:`SpMVEngine.slots`).
    """

    def __init__(self, config: NetworkConfig):
        self._config = config
        super().__init__({
            "load": In(stream.Signature(to_layout(config.load_fields))),
            "x": In(stream.Signature(to_layout(config.input_fields))),
            "y": Out(stream.Signature(to_layout(config.output_fields))),
            "slots": Out(range(config.rows[-1] + 1)),
        })

    @property
    def config(self) -> NetworkConfig:
        return self._config

    def elaborate(self, platform):
        from .conv import InputGather, MapRequantizer

        m = Module()
        c = self._config
        engines = [SpMVEngine(e) for e in c.engines]
        requants = [MapRequantizer(c, i) if c.map_stage(i) else Requantizer(c, i)
                    for i in range(c.layers)]
        for i, (e, r) in enumerate(zip(engines, requants)):
            m.submodules[f"engine{i}"] = e
            m.submodules[f"requant{i}"] = r
            connect(m, e.y, r.y)
        gather_loads = []
        if c.gathers[0] is not None:
            m.submodules.input_gather = first = InputGather(c)
            connect(m, wiring.flipped(self.x), first.x)
            connect(m, first.out, engines[0].x)
            gather_loads.append(first.load)
        else:
            connect(m, wiring.flipped(self.x), engines[0].x)
        for r, e in zip(requants, engines[1:]):
            connect(m, r.out, e.x)
        connect(m, requants[-1].out, wiring.flipped(self.y))
        gather_loads += [r.gather_load for r in requants if isinstance(r, MapRequantizer)]

        loaded = Cat(*(e.slots != 0 for e in engines)).all()
        m.d.sync += self.slots.eq(Mux(loaded, c.rows[-1], 0))

        # Load words are registered before they fan out to every engine's lanes: the
        # route from the controller's buffer across the chip limited ECP5 to 54.9 MHz.
        m.d.comb += self.load.ready.eq(1)
        valid, word = Signal(), Signal.like(self.load.payload)
        m.d.sync += [valid.eq(self.load.valid), word.eq(self.load.payload)]
        ports = [target.load for target in engines + requants]
        if c.has_gathers:           # gather j is target 2n + j (see NetworkConfig.targets)
            feeds = iter(gather_loads)
            ports += [None if g is None else next(feeds) for g in c.gathers]
        for t, port in enumerate(ports):
            if port is None:
                continue
            m.d.comb += [port.valid.eq(valid & (word.target == t)),
                         port.payload.eq(word.data[:len(port.payload.as_value())])]
        return m
