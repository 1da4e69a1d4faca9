"""PLL parameters for the board targets: solved by formula, checked against the datasheets.

Each class holds one configuration (reference frequency and dividers), validates
it against the part's limits, reports the frequencies it produces and emits the
Amaranth ``Instance`` of the primitive. ``solve()`` searches the dividers the
same way the Project IceStorm / Project Trellis calculators do (``icepll``,
``ecppll``), so the chosen values match what those tools print; the tests pin
that agreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import Const, Instance

__all__ = ["ICE40PLL", "ECP5PLL"]


def _mhz(hz) -> str:
    return f"{float(hz) / 1e6:g} MHz"


@dataclass(frozen=True)
class ICE40PLL:
    """An iCE40 ``SB_PLL40_*`` in SIMPLE feedback mode.

    ``f_out = f_ref * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``; the limits are those of
    the iCE40 sysCLOCK PLL design guide (phase detector 10–133 MHz, VCO 533–1066 MHz,
    output 16–275 MHz).

    Parameters
    ----------
    ref_hz : int
        Reference (oscillator) frequency in Hz.
    divr, divf, divq : int
        Reference divider (0–15), feedback divider (0–127), output divider exponent (1–6).

    Raises
    ------
    ValueError
        A divider or a derived frequency is out of range.
    """

    ref_hz: int
    divr: int
    divf: int
    divq: int

    PFD_HZ = (10_000_000, 133_000_000)
    VCO_HZ = (533_000_000, 1_066_000_000)
    OUT_HZ = (16_000_000, 275_000_000)

    def __post_init__(self):
        for name, value, lo, hi in (("DIVR", self.divr, 0, 15), ("DIVF", self.divf, 0, 127),
                                    ("DIVQ", self.divq, 1, 6)):
            if not isinstance(value, int) or not lo <= value <= hi:
                raise ValueError(f"iCE40 PLL {name} must be an integer in {lo}..{hi}, not {value!r}")
        for name, value, (lo, hi) in (("phase detector", self.pfd_hz, self.PFD_HZ),
                                      ("VCO", self.vco_hz, self.VCO_HZ),
                                      ("output", self.out_hz, self.OUT_HZ)):
            if not lo <= value <= hi:
                raise ValueError(f"iCE40 PLL {name} frequency must be in {lo / 1e6:g}..{_mhz(hi)}, "
                                 f"not {_mhz(value)}")

    @property
    def pfd_hz(self) -> Fraction:
        """Phase-detector frequency, Hz."""
        return Fraction(self.ref_hz, self.divr + 1)

    @property
    def vco_hz(self) -> Fraction:
        """VCO frequency, Hz."""
        return self.pfd_hz * (self.divf + 1)

    @property
    def out_hz(self) -> Fraction:
        """Output frequency, Hz."""
        return self.vco_hz / 2 ** self.divq

    @property
    def filter_range(self) -> int:
        """Loop-filter setting for the phase-detector frequency (icepll's table)."""
        pfd = self.pfd_hz
        for limit, value in ((17e6, 1), (26e6, 2), (44e6, 3), (66e6, 4), (101e6, 5)):
            if pfd < limit:
                return value
        return 6

    @classmethod
    def solve(cls, ref_hz: int, out_hz: float) -> "ICE40PLL":
        """The legal configuration closest to ``out_hz``.

        Ties go to the first one in (DIVR, DIVF, DIVQ) order, as in ``icepll``.
        """
        best, best_err = None, None
        for divr in range(16):
            pfd = Fraction(ref_hz, divr + 1)
            if not cls.PFD_HZ[0] <= pfd <= cls.PFD_HZ[1]:
                continue
            for divf in range(128):
                vco = pfd * (divf + 1)
                if not cls.VCO_HZ[0] <= vco <= cls.VCO_HZ[1]:
                    continue
                for divq in range(1, 7):
                    out = vco / 2 ** divq
                    if not cls.OUT_HZ[0] <= out <= cls.OUT_HZ[1]:
                        continue
                    err = abs(out - Fraction(out_hz))
                    if best_err is None or err < best_err:
                        best, best_err = (divr, divf, divq), err
        if best is None:
            raise ValueError(f"iCE40 PLL cannot make {_mhz(out_hz)} from {_mhz(ref_hz)}")
        return cls(ref_hz, *best)

    def instance(self, *, ref, clk_out, locked, pad: bool) -> Instance:
        """The PLL primitive.

        Parameters
        ----------
        ref : Signal or IOValue
            Reference clock: a fabric signal for ``SB_PLL40_CORE``, the clock pin's
            I/O port for ``SB_PLL40_PAD``.
        clk_out, locked : Signal
            Driven with the global output clock and the lock indicator.
        pad : bool
            Use ``SB_PLL40_PAD`` (reference straight from the package pin).
        """
        return Instance(
            "SB_PLL40_PAD" if pad else "SB_PLL40_CORE",
            p_FEEDBACK_PATH="SIMPLE",
            p_DIVR=Const(self.divr, 4),
            p_DIVF=Const(self.divf, 7),
            p_DIVQ=Const(self.divq, 3),
            p_FILTER_RANGE=Const(self.filter_range, 3),
            **({"i_PACKAGEPIN": ref} if pad else {"i_REFERENCECLK": ref}),
            i_RESETB=Const(1),
            i_BYPASS=Const(0),
            # The GLOBAL output goes onto a global buffer; CORE would use fabric routing.
            o_PLLOUTGLOBAL=clk_out,
            o_LOCK=locked,
        )


@dataclass(frozen=True)
class ECP5PLL:
    """An ECP5 ``EHXPLLL`` with CLKOP as output and feedback.

    ``f_out = f_ref / CLKI_DIV * CLKFB_DIV``, ``f_vco = f_out * CLKOP_DIV``; limits as
    in ``ecppll`` (phase detector 3.125–400 MHz, VCO 400–800 MHz, output 10–400 MHz).

    Parameters
    ----------
    ref_hz : int
        Reference (oscillator) frequency in Hz.
    clki_div, clkfb_div, clkop_div : int
        Input divider (1–128), feedback divider (1–80), CLKOP divider (1–128).

    Raises
    ------
    ValueError
        A divider or a derived frequency is out of range.
    """

    ref_hz: int
    clki_div: int
    clkfb_div: int
    clkop_div: int

    PFD_HZ = (3_125_000, 400_000_000)
    VCO_HZ = (400_000_000, 800_000_000)
    OUT_HZ = (10_000_000, 400_000_000)

    def __post_init__(self):
        for name, value, hi in (("CLKI_DIV", self.clki_div, 128), ("CLKFB_DIV", self.clkfb_div, 80),
                                ("CLKOP_DIV", self.clkop_div, 128)):
            if not isinstance(value, int) or not 1 <= value <= hi:
                raise ValueError(f"ECP5 PLL {name} must be an integer in 1..{hi}, not {value!r}")
        for name, value, (lo, hi) in (("phase detector", self.pfd_hz, self.PFD_HZ),
                                      ("VCO", self.vco_hz, self.VCO_HZ),
                                      ("output", self.out_hz, self.OUT_HZ)):
            if not lo <= value <= hi:
                raise ValueError(f"ECP5 PLL {name} frequency must be in {lo / 1e6:g}..{_mhz(hi)}, "
                                 f"not {_mhz(value)}")

    @property
    def pfd_hz(self) -> Fraction:
        """Phase-detector frequency, Hz."""
        return Fraction(self.ref_hz, self.clki_div)

    @property
    def out_hz(self) -> Fraction:
        """Output (CLKOP) frequency, Hz."""
        return self.pfd_hz * self.clkfb_div

    @property
    def vco_hz(self) -> Fraction:
        """VCO frequency, Hz."""
        return self.out_hz * self.clkop_div

    @property
    def clkop_cphase(self) -> int:
        """Coarse phase of CLKOP: half a period, as ``ecppll`` writes it.

        CLKOP is also the feedback clock, so the loop cancels this shift; the value
        only keeps the instance identical to the calculator's output.
        """
        return (self.clkop_div - 1) // 2

    @classmethod
    def solve(cls, ref_hz: int, out_hz: float) -> "ECP5PLL":
        """The legal configuration closest to ``out_hz``.

        Ties go to the VCO frequency closest to 600 MHz, as in ``ecppll``.
        """
        target = Fraction(out_hz)
        best, best_key = None, None
        for clki_div in range(1, 129):
            pfd = Fraction(ref_hz, clki_div)
            if not cls.PFD_HZ[0] <= pfd <= cls.PFD_HZ[1]:
                continue
            for clkfb_div in range(1, 81):
                out = pfd * clkfb_div
                if not cls.OUT_HZ[0] <= out <= cls.OUT_HZ[1]:
                    continue
                # For a given output, only CLKOP_DIV moves the VCO: take the one nearest 600 MHz.
                lo = -(-cls.VCO_HZ[0] // out)
                hi = min(cls.VCO_HZ[1] // out, 128)
                if lo > hi:
                    continue
                clkop_div = min(max(round(600_000_000 / out), lo), hi)
                key = (abs(out - target), abs(out * clkop_div - 600_000_000))
                if best_key is None or key < best_key:
                    best, best_key = (clki_div, clkfb_div, int(clkop_div)), key
        if best is None:
            raise ValueError(f"ECP5 PLL cannot make {_mhz(out_hz)} from {_mhz(ref_hz)}")
        return cls(ref_hz, *best)

    def instance(self, *, ref, clk_out, locked) -> Instance:
        """The PLL primitive, driven by the fabric signal ``ref``."""
        return Instance(
            "EHXPLLL",
            # nextpnr reads these to derive and check the output clock.
            a_FREQUENCY_PIN_CLKI=f"{self.ref_hz / 1e6:g}",
            a_FREQUENCY_PIN_CLKOP=f"{float(self.out_hz) / 1e6:g}",
            # Loop-filter settings that ecppll (and Lattice's tools) emit.
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8",
            a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED",
            p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=self.clki_div,
            p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=self.clkop_div,
            p_CLKOP_CPHASE=self.clkop_cphase,
            p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=self.clkfb_div,
            i_RST=Const(0), i_STDBY=Const(0),
            i_CLKI=ref,
            i_CLKFB=clk_out,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1),
            i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0),
            o_CLKOP=clk_out,
            o_LOCK=locked,
        )
