"""Board targets: registry, PLL and UART arithmetic, error messages, the nextpnr log
parser, the reset sequencer, and real builds (one iCEBreaker bitstream in the default
suite; ECP5 and failure cases marked slow)."""

import gc
import json
import re
import warnings
from contextlib import contextmanager

import pytest
from amaranth.hdl import Module, Signal, UnusedElaboratable
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

import darbgen.boards as boards
from darbgen.boards import (BOARDS, ECP5PLL, ICE40PLL, Board, BoardTop, BuildError, ClockTiming,
                            ResetSequencer, TimingError, build, get_board, parse_nextpnr_log)


class Loopback(wiring.Component):
    """The tiny core: rx through three flip-flops to tx (idle high)."""

    rx: In(1)
    tx: Out(1, init=1)

    def elaborate(self, platform):
        m = Module()
        a, b = Signal(init=1), Signal(init=1)
        m.d.sync += [a.eq(self.rx), b.eq(a), self.tx.eq(b)]
        return m


@contextmanager
def never_elaborated():
    """For tests that make elaboratables on purpose and never elaborate them: collect
    them here, so Amaranth's unused-elaboratable warning does not fire in a later test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        yield
        gc.collect()


def test_all_names_resolve():
    for name in boards.__all__:
        assert hasattr(boards, name), name


# --- registry ---------------------------------------------------------------------------

def test_registry_names():
    assert list(BOARDS) == ["icebreaker", "ulx3s", "arty-a7"]
    for name, board in BOARDS.items():
        assert get_board(name) is board and board.name == name


def test_unknown_board_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"^unknown board 'x'; choose from icebreaker, ulx3s, "
                                         r"arty-a7$"):
        get_board("x")


@pytest.mark.parametrize("name, device, mhz, lanes, open_flow, suffix", [
    ("icebreaker", "iCE40UP5K-SG48", 30, 4, True, ".bin"),
    ("ulx3s", "LFE5U-85F-6BG381C", 60, 16, True, ".bit"),
    ("arty-a7", "XC7A35TICSG324-1L", 100, 16, False, None),
])
def test_board_fields(name, device, mhz, lanes, open_flow, suffix):
    board = get_board(name)
    assert (board.device, board.target_mhz, board.default_lanes, board.open_flow,
            board.bitstream_suffix, board.baud) == (device, mhz, lanes, open_flow, suffix, 1_000_000)
    assert board.clock_hz == mhz * 1_000_000
    platform = board.platform()
    # The device string names the platform's part and package.
    flat = device.lower().replace("-", "")
    assert platform.device.lower().replace("-", "") in flat and platform.package.lower() in flat


def test_icebreaker_pll_matches_icepll():
    board = get_board("icebreaker")
    pll = board.pll_config
    assert board.osc_hz == 12_000_000
    # yowasp-icepll -i 12 -o 30: DIVR 0, DIVF 79, DIVQ 5, FILTER_RANGE 1, VCO 960 MHz.
    assert (pll.divr, pll.divf, pll.divq, pll.filter_range) == (0, 79, 5, 1)
    assert pll.vco_hz == 960_000_000 and pll.out_hz == 30_000_000
    assert board.synth_opts == "-dsp"
    assert (board.bram_blocks, board.dsp_blocks) == (30, 8)


def test_ulx3s_pll_matches_ecppll():
    board = get_board("ulx3s")
    pll = board.pll_config
    assert board.osc_hz == 25_000_000
    # yowasp-ecppll -i 25 -o 60: CLKI_DIV 5, CLKFB_DIV 12, CLKOP_DIV 10, CPHASE 4, VCO 600 MHz.
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div, pll.clkop_cphase) == (5, 12, 10, 4)
    assert pll.vco_hz == 600_000_000 and pll.out_hz == 60_000_000


def test_arty_runs_from_its_oscillator():
    board = get_board("arty-a7")
    assert board.pll_config is None and board.clock_hz == board.osc_hz == 100_000_000


# Output of yowasp-icepll -i <ref> -o 60 (DIVR, DIVF, DIVQ, FILTER_RANGE).
@pytest.mark.parametrize("ref_mhz, expected", [
    (12, (0, 79, 4, 1)), (20, (0, 47, 4, 2)), (30, (0, 31, 4, 3)),
    (50, (4, 95, 4, 1)), (80, (0, 11, 4, 5)), (120, (0, 7, 4, 6)),
])
def test_ice40_solver_agrees_with_icepll(ref_mhz, expected):
    pll = ICE40PLL.solve(ref_mhz * 1_000_000, 60e6)
    assert (pll.divr, pll.divf, pll.divq, pll.filter_range) == expected


# Output of yowasp-ecppll -i 25 -o <out> (CLKI_DIV, CLKFB_DIV, CLKOP_DIV).
@pytest.mark.parametrize("out_mhz, expected", [
    (50, (1, 2, 12)), (100, (1, 4, 6)), (75, (1, 3, 8)), (33, (3, 4, 18)), (90, (5, 18, 7)),
])
def test_ecp5_solver_agrees_with_ecppll(out_mhz, expected):
    pll = ECP5PLL.solve(25_000_000, out_mhz * 1e6)
    assert (pll.clki_div, pll.clkfb_div, pll.clkop_div) == expected


def test_pll_limits_are_checked():
    with pytest.raises(ValueError, match=r"^iCE40 PLL VCO frequency must be in 533\.\.1066 MHz, "
                                         r"not 132 MHz$"):
        ICE40PLL(12_000_000, 0, 10, 1)
    with pytest.raises(ValueError, match=r"^iCE40 PLL DIVQ must be an integer in 1\.\.6, not 0$"):
        ICE40PLL(12_000_000, 0, 79, 0)
    with pytest.raises(ValueError, match=r"^ECP5 PLL VCO frequency must be in 400\.\.800 MHz, "
                                         r"not 60 MHz$"):
        ECP5PLL(25_000_000, 5, 12, 1)


def test_replace_solves_the_pll_again():
    board = get_board("icebreaker").replace(target_mhz=24)
    assert board.clock_hz == 24_000_000 and board.name == "icebreaker"
    assert get_board("icebreaker").clock_hz == 30_000_000


def test_impossible_clock_is_refused():
    with pytest.raises(ValueError, match=r"^Board 'arty-a7' cannot run at 50 MHz: without a PLL "
                                         r"it runs at 100 MHz$"):
        get_board("arty-a7").replace(target_mhz=50)


def test_board_fields_are_checked():
    with pytest.raises(ValueError, match=r"^default_lanes must be a positive integer, not 0$"):
        get_board("ulx3s").replace(default_lanes=0)


# --- UART divisor -----------------------------------------------------------------------

@pytest.mark.parametrize("name, divisor", [("icebreaker", 30), ("ulx3s", 60), ("arty-a7", 100)])
def test_default_uart_divisor(name, divisor):
    assert get_board(name).uart_divisor() == divisor


def test_uart_divisor_rounds():
    board = get_board("icebreaker")
    assert board.uart_divisor(115_200) == 260      # 30e6 / 115200 = 260.4
    assert board.uart_divisor(921_600) == 33       # 1.4% off: allowed


def test_uart_divisor_too_small():
    with pytest.raises(ValueError, match=r"^Baud rate 10000000 is too fast for board 'icebreaker' "
                                         r"\(30 MHz clock\): the UART divisor would be 3, it must "
                                         r"be at least 4$"):
        get_board("icebreaker").uart_divisor(10_000_000)


def test_uart_divisor_rate_error():
    with pytest.raises(ValueError, match=r"^Baud rate 4000000 is 6\.2% off on board 'icebreaker' "
                                         r"\(30 MHz clock\) with divisor 8; at most 2% is "
                                         r"allowed$"):
        get_board("icebreaker").uart_divisor(4_000_000)


def test_uart_divisor_bad_baud():
    with pytest.raises(ValueError, match=r"^Baud rate must be a positive integer, not 0$"):
        get_board("ulx3s").uart_divisor(0)


# --- wrapper ----------------------------------------------------------------------------

def test_board_top_checks_the_core_signature():
    class Wide(wiring.Component):
        rx: In(8)
        tx: Out(1)

        def elaborate(self, platform):
            return Module()

    with never_elaborated():
        with pytest.raises(TypeError, match=r"^Core must be a wiring.Component with signature "
                                            r"\{'rx': In\(1\), 'tx': Out\(1\)\}, not "):
            BoardTop(get_board("icebreaker"), Wide())
        with pytest.raises(TypeError, match=r"^Board must be a darbgen.boards.Board, not "
                                            r"'ulx3s'$"):
            BoardTop("ulx3s", Loopback())
        BoardTop(get_board("icebreaker"), Loopback())   # tx idling high is fine


def test_reset_sequencer_waits_for_lock_then_delay():
    dut = ResetSequencer(5)
    trace = []

    async def tb(ctx):
        for cycle in range(30):
            ctx.set(dut.locked, 3 <= cycle < 20 or cycle >= 22)
            await ctx.tick()
            trace.append(ctx.get(dut.ready))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(tb)
    sim.run()
    # trace[i] is ready after clock edge i. Lock rises before edge 3; the two synchronizer
    # stages pass it on at edge 4, edges 5-9 count to 5 and edge 10 raises ready. Lock lost
    # before edge 20 drops ready at edge 22; relocking at 22 raises it again at edge 29.
    assert trace == [0] * 10 + [1] * 12 + [0] * 7 + [1]


def test_reset_sequencer_checks_delay():
    with never_elaborated(), pytest.raises(ValueError, match=r"^Delay must be a positive "
                                                           r"integer, not 0$"):
        ResetSequencer(0)


# --- nextpnr log parser -------------------------------------------------------------------

ICE40_LOG = """\
Info: constraining clock net 'sync_clk' to 30.00 MHz
Info: Device utilisation:
Info: \t         ICESTORM_LC:    2988/   5280    56%
Info: \t        ICESTORM_RAM:       7/     30    23%
Info: \t               SB_IO:       3/     39     7%
Info: \t        ICESTORM_PLL:       1/      1   100%
Info: \t        ICESTORM_DSP:       8/      8   100%

Info: Placed 6 cells based on constraints.
Info: Max frequency for clock 'clk': 36.80 MHz (PASS at 30.00 MHz)
Info: Max frequency for clock 'clk12_0__io': 200.00 MHz (PASS at 12.00 MHz)

Info: Max delay <async>     -> posedge clk: 6.08 ns
Info: Max frequency for clock 'clk': 34.36 MHz (PASS at 30.00 MHz)
Info: Max frequency for clock 'clk12_0__io': 180.10 MHz (PASS at 12.00 MHz)
"""

ECP5_LOG = """\
Info: Logic utilisation before packing:
Info:     Total LUT4s:        22/83640     0%
Info: Device utilisation:
Info: \t          TRELLIS_IO:       3/    365     0%
Info: \t             EHXPLLL:       1/      4    25%
Info: \t          TRELLIS_FF:      18/  83640     0%
Info: \t        TRELLIS_COMB:      28/  83640     0%
Info: Placed 4 cells based on constraints.
Info: Max frequency for clock '$glbnet$clk': 195.73 MHz (PASS at 60.00 MHz)
Warning: Max frequency for clock '$glbnet$clk': 55.12 MHz (FAIL at 60.00 MHz)
"""


def test_parse_ice40_log():
    log = parse_nextpnr_log(ICE40_LOG)
    assert log.resources == {
        "ICESTORM_LC": {"used": 2988, "available": 5280},
        "ICESTORM_RAM": {"used": 7, "available": 30},
        "SB_IO": {"used": 3, "available": 39},
        "ICESTORM_PLL": {"used": 1, "available": 1},
        "ICESTORM_DSP": {"used": 8, "available": 8},
    }
    # The last figure of each clock is the post-route one.
    assert log.clocks == {"clk": ClockTiming(34.36, 30.0), "clk12_0__io": ClockTiming(180.1, 12.0)}
    assert log.fmax_for(30) == 34.36
    assert log.fmax_for(12) == 180.1
    assert log.fmax_for(50) is None


def test_parse_ecp5_log_with_failing_clock():
    log = parse_nextpnr_log(ECP5_LOG)
    assert list(log.resources) == ["TRELLIS_IO", "EHXPLLL", "TRELLIS_FF", "TRELLIS_COMB"]
    assert log.resources["TRELLIS_COMB"] == {"used": 28, "available": 83640}
    assert log.fmax_for(60) == 55.12


def test_parse_rounded_constraint():
    # nextpnr works in whole picoseconds: a 150 MHz constraint is reported as 150.01 MHz.
    log = parse_nextpnr_log("Warning: Max frequency for clock 'clk': 94.71 MHz "
                            "(FAIL at 150.01 MHz)\nInfo: Max frequency for clock 'x': 9.00 MHz "
                            "(PASS at 1.00 MHz)\n")
    assert log.fmax_for(150) == 94.71


def test_parse_empty_log():
    log = parse_nextpnr_log("")
    assert log.resources == {} and log.clocks == {} and log.fmax_for(30) is None


# --- builds -----------------------------------------------------------------------------

def test_build_icebreaker(tmp_path):
    report = build(Loopback(), "icebreaker", tmp_path, extra_report={"build_id": "cafe"})
    assert (tmp_path / "top.bin").stat().st_size > 100_000
    assert (tmp_path / "nextpnr.log").exists()
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert report["board"] == "icebreaker" and report["device"] == "iCE40UP5K-SG48"
    assert report["lanes"] == 4 and report["target_mhz"] == 30 and report["build_id"] == "cafe"
    assert report["fmax_mhz"] >= 30 and report["generate_only"] is False
    assert report["resources"]["ICESTORM_PLL"] == {"used": 1, "available": 1}
    assert 0 < report["resources"]["ICESTORM_LC"]["used"] < 100
    assert report["resources"]["ICESTORM_LC"]["available"] == 5280
    assert "constraining clock net 'sync_clk' to 30.00 MHz" in (tmp_path / "nextpnr.log").read_text()


def test_generate_arty(tmp_path):
    report = build(Loopback(), get_board("arty-a7"), tmp_path, lanes=4)
    for name in ("top.v", "top.xdc", "top.tcl"):
        assert (tmp_path / name).exists(), name
    assert "create_clock" in (tmp_path / "top.xdc").read_text()
    assert report["generate_only"] is True and report["fmax_mhz"] is None
    assert report["lanes"] == 4 and report["resources"] == {}
    assert json.loads((tmp_path / "report.json").read_text()) == report


def test_plan_only_for_an_open_flow_board(tmp_path):
    report = build(Loopback(), "icebreaker", tmp_path, do_build=False)
    for name in ("top.il", "top.ys", "top.pcf", "build_top.sh"):
        assert (tmp_path / name).exists(), name
    assert "synth_ice40 -dsp" in (tmp_path / "top.ys").read_text()
    assert "--timing-allow-fail" not in (tmp_path / "build_top.sh").read_text()
    assert "set_frequency sync_clk 30.0" in (tmp_path / "top.pcf").read_text()
    assert report["generate_only"] is True and report["fmax_mhz"] is None
    assert report["bitstream"] is None and not (tmp_path / "top.bin").exists()


def test_extra_report_cannot_replace_fields(tmp_path):
    with never_elaborated(), pytest.raises(ValueError, match=r"^extra_report must not replace "
                                                           r"report fields, not fmax_mhz$"):
        build(Loopback(), "icebreaker", tmp_path, extra_report={"fmax_mhz": 1e9})


def test_build_checks_lanes(tmp_path):
    with never_elaborated(), pytest.raises(ValueError, match=r"^Lanes must be a positive "
                                                           r"integer, not 0$"):
        build(Loopback(), "icebreaker", tmp_path, lanes=0)


def test_build_unknown_board(tmp_path):
    with never_elaborated(), pytest.raises(ValueError, match=r"^unknown board 'icestick'"):
        build(Loopback(), "icestick", tmp_path)


def test_missing_tool_is_a_build_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NEXTPNR_ICE40", str(tmp_path / "no-such-nextpnr"))
    with pytest.raises(BuildError, match=r"^Cannot build for board 'icebreaker': nextpnr-ice40 "
                                         r"not found; install darbgen\[fpga\]"):
        build(Loopback(), "icebreaker", tmp_path)


def test_failing_tool_is_a_build_error_with_the_log(tmp_path, monkeypatch):
    fake = tmp_path / "fake-nextpnr"
    fake.write_text("#!/bin/sh\necho 'ERROR: the placer gave up' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NEXTPNR_ICE40", str(fake))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")   # from an earlier build
    with pytest.raises(BuildError) as info:
        build(Loopback(), "icebreaker", tmp_path / "out")
    message = str(info.value)
    assert re.match(r"^Build for board 'icebreaker' failed \(exit code 3\); last lines of the "
                    r"log:\n", message)
    assert message.endswith("ERROR: the placer gave up")
    assert (tmp_path / "out" / "build.log").exists()
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.slow
def test_build_ulx3s(tmp_path):
    report = build(Loopback(), "ulx3s", tmp_path)
    assert (tmp_path / "top.bit").stat().st_size > 100_000
    assert report["device"] == "LFE5U-85F-6BG381C" and report["lanes"] == 16
    assert report["fmax_mhz"] >= 60
    assert report["resources"]["EHXPLLL"] == {"used": 1, "available": 4}
    assert report["resources"]["TRELLIS_COMB"]["available"] == 83640


@pytest.mark.slow
def test_missed_timing_writes_the_report_then_raises(tmp_path):
    board = get_board("icebreaker").replace(target_mhz=150)   # the loopback makes ~100 MHz
    assert isinstance(board, Board) and board.clock_hz == 150_000_000
    with pytest.raises(TimingError, match=r"^Board 'icebreaker' misses timing: sync clock fmax "
                                          r"[0-9.]+ MHz is below the 150 MHz target$"):
        build(Loopback(), board, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["target_mhz"] == 150 and report["fmax_mhz"] < 150
    assert (tmp_path / "top.bin").exists()


# -- the MAC ceiling core (bench/mac_ceiling.py) ------------------------------------------

def test_mac_array_core():
    """The bare MAC array fits a board top and elaborates to one multiply per MAC."""
    from amaranth.back import verilog

    from darbgen.boards.ceiling import MACArray

    text = verilog.convert(MACArray(3), name="macs")
    assert len(re.findall(r"\$signed\(a\d+\) \*", text)) == 3
    with never_elaborated():
        BoardTop(get_board("icebreaker"), MACArray(8))  # the core signature: rx in, tx out
        with pytest.raises(ValueError, match=r"^macs must be a positive integer, not 0$"):
            MACArray(0)
        with pytest.raises(ValueError, match=r"^acc_width must be an integer of at least 16 "
                                             r"\(an int8 × int8 product\), not 8$"):
            MACArray(4, acc_width=8)
