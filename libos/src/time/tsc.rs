//! TSC frequency and tick↔ns conversion: CPUID leaf 15H (TSC/crystal ratio) and 16H (nominal frequency) from
//! Intel SDM Vol. 2A "CPUID—CPU Identification", the hypervisor timing leaf 0x4000_0010, calibration against the
//! 8254 PIT channel 2 (Intel 82C54 datasheet; ISA PC port 61h), and the invariant TSC bit (CPUID 8000_0007H EDX
//! bit 8, Intel SDM Vol. 3B §18.17.1 "Invariant TSC").
//!
//! Pure logic: CPUID values come through [`CpuidSource`], TSC and PIT readings are passed in by the caller.

use core::fmt;

use crate::hypervisor::{CpuidSource, TimingInfo};

/// CPUID leaf 0: EAX = highest basic leaf.
pub const CPUID_MAX_BASIC_LEAF: u32 = 0x0;
/// CPUID leaf 15H: EAX = denominator, EBX = numerator of the TSC/crystal ratio, ECX = crystal frequency in Hz
/// (0 when not enumerated). Source: Intel SDM Vol. 2A, CPUID leaf 15H.
pub const CPUID_TSC_CRYSTAL_LEAF: u32 = 0x15;
/// CPUID leaf 16H: `EAX[15:0]` = processor base frequency in MHz. Source: Intel SDM Vol. 2A, CPUID leaf 16H.
pub const CPUID_FREQUENCY_LEAF: u32 = 0x16;
/// CPUID leaf 8000_0000H: EAX = highest extended leaf.
pub const CPUID_MAX_EXTENDED_LEAF: u32 = 0x8000_0000;
/// CPUID leaf 8000_0007H (advanced power management). Source: Intel SDM Vol. 2A; AMD APM Vol. 3.
pub const CPUID_ADVANCED_POWER_MANAGEMENT_LEAF: u32 = 0x8000_0007;
/// CPUID.8000_0007H:EDX bit 8: the TSC runs at a constant rate in all ACPI P-, C- and T-states.
pub const CPUID_80000007_EDX_INVARIANT_TSC: u32 = 1 << 8;

/// Lowest TSC frequency a calibration is believed, in Hz (1 MHz).
pub const MIN_PLAUSIBLE_HZ: u64 = 1_000_000;
/// Highest TSC frequency a calibration is believed, in Hz (100 GHz).
pub const MAX_PLAUSIBLE_HZ: u64 = 100_000_000_000;

/// Input clock of the 8254 PIT in Hz (14.31818 MHz / 12, rounded as Linux `PIT_TICK_RATE` and QEMU `PIT_FREQ`).
pub const PIT_HZ: u64 = 1_193_182;
/// I/O port of PIT channel 2's counter.
pub const PIT_CHANNEL2_PORT: u16 = 0x42;
/// I/O port of the PIT mode/command register.
pub const PIT_COMMAND_PORT: u16 = 0x43;
/// PIT command: channel 2, access low byte then high byte, mode 0 (interrupt on terminal count), binary.
pub const PIT_CMD_CHANNEL2_MODE0_LOHI: u8 = 0b1011_0000;
/// I/O port 61h ("port B"): channel 2 gate, speaker enable, channel 2 output.
pub const PORT_B: u16 = 0x61;
/// Port 61h bit 0: PIT channel 2 gate (counting enabled).
pub const PORT_B_TIMER2_GATE: u8 = 1 << 0;
/// Port 61h bit 1: speaker data enable (kept off while calibrating).
pub const PORT_B_SPEAKER_ENABLE: u8 = 1 << 1;
/// Port 61h bit 5 (read): PIT channel 2 output; in mode 0 it goes high when the count reaches 0.
pub const PORT_B_TIMER2_OUTPUT: u8 = 1 << 5;
/// Longest window [`pit_reload_for_ms`] accepts: 54 ms (the 16-bit counter holds 65535 ticks = 54.9 ms).
pub const PIT_MAX_WINDOW_MS: u32 = 54;

/// Nanoseconds per second.
const NSEC_PER_SEC: u64 = 1_000_000_000;

/// Errors from the TSC helpers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A frequency of 0 Hz was given.
    ZeroFrequency,
    /// The calibration reference window was 0 ns long.
    ZeroReference,
    /// The calibration gave a frequency outside [`MIN_PLAUSIBLE_HZ`]..=[`MAX_PLAUSIBLE_HZ`].
    Implausible {
        /// The computed frequency in Hz.
        hz: u64,
    },
    /// The PIT window must be 1..=[`PIT_MAX_WINDOW_MS`] ms.
    PitWindow {
        /// The window asked for, in ms.
        ms: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ZeroFrequency => f.write_str("TSC frequency of 0 Hz"),
            Error::ZeroReference => f.write_str("TSC calibration reference window is 0 ns long"),
            Error::Implausible { hz } => write!(
                f,
                "TSC calibration gave {hz} Hz, outside {MIN_PLAUSIBLE_HZ}..={MAX_PLAUSIBLE_HZ} Hz; the reference \
                 timer or the TSC readings are wrong"
            ),
            Error::PitWindow { ms } => {
                write!(f, "PIT calibration window of {ms} ms is not in 1..={PIT_MAX_WINDOW_MS} ms")
            }
        }
    }
}

/// Where a TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrequencySource {
    /// Hypervisor timing leaf 0x4000_0010 EAX (kHz).
    HypervisorTimingLeaf,
    /// CPUID leaf 15H: crystal Hz · numerator / denominator.
    Cpuid15,
}

/// A TSC frequency and its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscFrequency {
    /// Ticks per second.
    pub hz: u64,
    /// Where it came from.
    pub source: FrequencySource,
}

/// TSC frequency in Hz from CPUID leaf 15H registers `[eax, ebx, ecx, edx]`: `ecx · ebx / eax`. `None` when the
/// ratio (EAX or EBX) or the crystal frequency (ECX) is 0 — crystal frequencies are not guessed from the
/// processor model. Source: Intel SDM Vol. 2A, CPUID leaf 15H ("TSC frequency = ECX * EBX / EAX").
pub fn hz_from_cpuid_15(regs: [u32; 4]) -> Option<u64> {
    let [denominator, numerator, crystal_hz, _] = regs;
    if denominator == 0 || numerator == 0 || crystal_hz == 0 {
        return None;
    }
    Some(u64::from(crystal_hz) * u64::from(numerator) / u64::from(denominator))
}

/// Processor base (nominal) frequency in Hz from CPUID leaf 16H registers: `EAX[15:0]` MHz · 10^6; `None` when 0.
/// Intel documents it as the nominal frequency, not necessarily the TSC rate: use it as a plausibility hint, not
/// as the TSC frequency. Source: Intel SDM Vol. 2A, CPUID leaf 16H.
pub fn nominal_hz_from_cpuid_16(regs: [u32; 4]) -> Option<u64> {
    let mhz = regs[0] & 0xffff;
    (mhz != 0).then(|| u64::from(mhz) * 1_000_000)
}

/// TSC frequency in Hz from the hypervisor timing leaf (kHz · 1000); `None` when 0.
pub fn hz_from_timing_leaf(timing: TimingInfo) -> Option<u64> {
    (timing.tsc_khz != 0).then(|| u64::from(timing.tsc_khz) * 1000)
}

/// The TSC frequency from exact sources, best first: the hypervisor timing leaf (`timing`, from
/// `Detection::timing()`; it reflects TSC scaling by the hypervisor), then CPUID leaf 15H when the processor
/// enumerates it (highest basic leaf ≥ 15H) with a crystal frequency. `None` when neither is available: then
/// use the pvclock scale or calibrate.
pub fn frequency_from_cpuid<C: CpuidSource + ?Sized>(cpu: &C, timing: Option<TimingInfo>) -> Option<TscFrequency> {
    if let Some(hz) = timing.and_then(hz_from_timing_leaf) {
        return Some(TscFrequency { hz, source: FrequencySource::HypervisorTimingLeaf });
    }
    let [max_basic, ..] = cpu.cpuid(CPUID_MAX_BASIC_LEAF, 0);
    if max_basic < CPUID_TSC_CRYSTAL_LEAF {
        return None;
    }
    hz_from_cpuid_15(cpu.cpuid(CPUID_TSC_CRYSTAL_LEAF, 0))
        .map(|hz| TscFrequency { hz, source: FrequencySource::Cpuid15 })
}

/// Processor base frequency from CPUID leaf 16H when enumerated (highest basic leaf ≥ 16H); see
/// [`nominal_hz_from_cpuid_16`].
pub fn nominal_hz_from_cpuid<C: CpuidSource + ?Sized>(cpu: &C) -> Option<u64> {
    let [max_basic, ..] = cpu.cpuid(CPUID_MAX_BASIC_LEAF, 0);
    if max_basic < CPUID_FREQUENCY_LEAF {
        return None;
    }
    nominal_hz_from_cpuid_16(cpu.cpuid(CPUID_FREQUENCY_LEAF, 0))
}

/// Whether the TSC is invariant (CPUID.8000_0007H:EDX bit 8), checking that the leaf is enumerated first.
/// Source: Intel SDM Vol. 3B §18.17.1; AMD APM Vol. 3, CPUID Fn8000_0007 EDX "TscInvariant".
pub fn invariant_tsc<C: CpuidSource + ?Sized>(cpu: &C) -> bool {
    let [max_extended, ..] = cpu.cpuid(CPUID_MAX_EXTENDED_LEAF, 0);
    max_extended >= CPUID_ADVANCED_POWER_MANAGEMENT_LEAF
        && invariant_tsc_from_edx(cpu.cpuid(CPUID_ADVANCED_POWER_MANAGEMENT_LEAF, 0)[3])
}

/// Whether EDX of CPUID leaf 8000_0007H has the invariant TSC bit.
pub fn invariant_tsc_from_edx(edx: u32) -> bool {
    edx & CPUID_80000007_EDX_INVARIANT_TSC != 0
}

/// TSC frequency in Hz from a calibration: `tsc_delta` ticks counted over a reference window of `reference_ns`
/// (e.g. [`pit_window_ns`] of the PIT reload used). Errors when the window is 0 or the result is outside
/// [`MIN_PLAUSIBLE_HZ`]..=[`MAX_PLAUSIBLE_HZ`].
pub fn calibrate_hz(tsc_delta: u64, reference_ns: u64) -> Result<u64, Error> {
    if reference_ns == 0 {
        return Err(Error::ZeroReference);
    }
    let hz = u128::from(tsc_delta) * u128::from(NSEC_PER_SEC) / u128::from(reference_ns);
    let hz = u64::try_from(hz).unwrap_or(u64::MAX);
    if !(MIN_PLAUSIBLE_HZ..=MAX_PLAUSIBLE_HZ).contains(&hz) {
        return Err(Error::Implausible { hz });
    }
    Ok(hz)
}

/// PIT channel 2 reload value for a calibration window of `ms` milliseconds: `PIT_HZ · ms / 1000`, rounded.
/// Errors unless `ms` is 1..=[`PIT_MAX_WINDOW_MS`]. Use [`pit_window_ns`] of the result as the exact reference.
pub fn pit_reload_for_ms(ms: u32) -> Result<u16, Error> {
    if ms == 0 || ms > PIT_MAX_WINDOW_MS {
        return Err(Error::PitWindow { ms });
    }
    let reload = (PIT_HZ * u64::from(ms) + 500) / 1000;
    // ms <= 54 gives at most 64_432, below 65_536.
    u16::try_from(reload).map_err(|_| Error::PitWindow { ms })
}

/// Length in ns of `reload` PIT ticks (the window a mode-0 count of `reload` measures; the 8254 adds up to one
/// tick, 838 ns, while loading the count).
pub fn pit_window_ns(reload: u16) -> u64 {
    u64::from(reload) * NSEC_PER_SEC / PIT_HZ
}

/// Port 61h value that opens the channel 2 gate with the speaker off, from the value read.
pub fn port_b_gate_on(port_b: u8) -> u8 {
    (port_b & !PORT_B_SPEAKER_ENABLE) | PORT_B_TIMER2_GATE
}

/// `x · num / den` as a 64-bit multiplier and a shift: `mul / 2^shift` is `num / den` rounded up, exact to 2^-63
/// relative, so whole-number results come out exact and others within 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Factor {
    mul: u64,
    shift: u32,
}

impl Factor {
    /// The largest-precision `mul = ceil((num << shift) / den)` that fits in 64 bits. `num` and `den` must be
    /// non-zero.
    fn new(num: u64, den: u64) -> Factor {
        let bits = |x: u64| 64 - x.leading_zeros();
        // With this shift (num << shift) / den is in [2^63, 2^65); at most one step down makes it fit. num << shift
        // has 64 + bits(den) <= 128 bits, and shift <= 127.
        let mut shift = 64 + bits(den) - bits(num);
        loop {
            let mul = (u128::from(num) << shift).div_ceil(u128::from(den));
            match u64::try_from(mul) {
                Ok(mul) => return Factor { mul, shift },
                Err(_) => shift -= 1,
            }
        }
    }

    /// `x · num / den`, exact for whole-number results and otherwise at most 1 above the value rounded down;
    /// saturating at `u64::MAX`.
    fn apply(self, x: u64) -> u64 {
        let product = (u128::from(x) * u128::from(self.mul)) >> self.shift;
        u64::try_from(product).unwrap_or(u64::MAX)
    }
}

/// Converts TSC ticks to ns and back for a fixed frequency with a 64-bit multiplier and shift and 128-bit
/// intermediates: whole-number results are exact and others within 1 ns / 1 tick of the exact value rounded down,
/// over the whole `u64` range (ten years of uptime at 5 GHz is 1.6·10^18 ticks); results beyond `u64::MAX`
/// saturate instead of overflowing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscScale {
    hz: u64,
    to_ns: Factor,
    to_ticks: Factor,
}

impl TscScale {
    /// A scale for a TSC running at `hz` ticks per second. Errors with [`Error::ZeroFrequency`] for 0.
    pub fn new(hz: u64) -> Result<Self, Error> {
        if hz == 0 {
            return Err(Error::ZeroFrequency);
        }
        Ok(TscScale { hz, to_ns: Factor::new(NSEC_PER_SEC, hz), to_ticks: Factor::new(hz, NSEC_PER_SEC) })
    }

    /// The frequency in Hz.
    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// Ticks → ns (see the type's accuracy note).
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        self.to_ns.apply(ticks)
    }

    /// ns → ticks (see the type's accuracy note).
    pub fn ns_to_ticks(&self, ns: u64) -> u64 {
        self.to_ticks.apply(ns)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::hypervisor::recorded::QEMU_KVM;
    use crate::hypervisor::RecordedCpuid;

    /// Recorded under QEMU 10.0.2 `-accel tcg -cpu max`: highest basic leaf 0xd, so leaves 15H/16H return the
    /// data of leaf 0xd and must not be read as TSC information.
    const QEMU_TCG_MAX: &[(u32, u32, [u32; 4])] = &[
        (0x0000_0000, 0, [0x0000_000d, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (0x0000_0015, 0, [0x0000_021f, 0x0000_0240, 0x0000_0a88, 0]),
        (0x0000_0016, 0, [0x0000_021f, 0x0000_0240, 0x0000_0a88, 0]),
        (0x8000_0000, 0, [0x8000_000a, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
        (0x8000_0007, 0, [0, 0, 0, 0]),
    ];

    #[test]
    fn frequency_from_recorded_kvm_timing_leaf() {
        let cpu = RecordedCpuid { leaves: QEMU_KVM };
        let timing = crate::hypervisor::detect(&cpu).timing();
        assert_eq!(
            frequency_from_cpuid(&cpu, timing),
            Some(TscFrequency { hz: 2_445_432_000, source: FrequencySource::HypervisorTimingLeaf })
        );
        assert_eq!(frequency_from_cpuid(&cpu, None), None, "max basic leaf 0xd: no leaf 15H");
        assert!(invariant_tsc(&cpu));
    }

    #[test]
    fn tcg_leaves_past_the_maximum_are_not_trusted() {
        let cpu = RecordedCpuid { leaves: QEMU_TCG_MAX };
        assert_eq!(frequency_from_cpuid(&cpu, None), None);
        assert_eq!(nominal_hz_from_cpuid(&cpu), None);
        assert!(!invariant_tsc(&cpu));
    }

    #[test]
    fn cpuid_15_and_16() {
        // Intel SDM example shape: 24 MHz crystal, ratio 188/2 -> 2.256 GHz.
        let leaves = [
            (0x0, 0, [0x16, 0x756e_6547, 0x6c65_746e, 0x4965_6e69]),
            (0x15, 0, [2, 188, 24_000_000, 0]),
            (0x16, 0, [2300, 4600, 100, 0]),
        ];
        let cpu = RecordedCpuid { leaves: &leaves };
        assert_eq!(
            frequency_from_cpuid(&cpu, None),
            Some(TscFrequency { hz: 2_256_000_000, source: FrequencySource::Cpuid15 })
        );
        assert_eq!(nominal_hz_from_cpuid(&cpu), Some(2_300_000_000));
        // A timing leaf wins over leaf 15H.
        let timing = TimingInfo { tsc_khz: 2_256_001, lapic_bus_khz: 1_000_000 };
        assert_eq!(frequency_from_cpuid(&cpu, Some(timing)).map(|f| f.hz), Some(2_256_001_000));
        // A timing leaf reporting 0 kHz is skipped.
        let zero = TimingInfo { tsc_khz: 0, lapic_bus_khz: 0 };
        assert_eq!(frequency_from_cpuid(&cpu, Some(zero)).map(|f| f.source), Some(FrequencySource::Cpuid15));

        // Crystal not enumerated (ECX = 0): not guessed.
        assert_eq!(hz_from_cpuid_15([2, 188, 0, 0]), None);
        assert_eq!(hz_from_cpuid_15([0, 188, 24_000_000, 0]), None);
        assert_eq!(hz_from_cpuid_15([2, 0, 24_000_000, 0]), None);
        assert_eq!(hz_from_cpuid_15([u32::MAX, u32::MAX, u32::MAX, 0]), Some(u64::from(u32::MAX)));
        assert_eq!(nominal_hz_from_cpuid_16([0xffff_0000, 0, 0, 0]), None, "only EAX[15:0]");
    }

    #[test]
    fn calibration() {
        // 2.5 GHz TSC over a 10 ms PIT window.
        let reload = pit_reload_for_ms(10).expect("10 ms");
        assert_eq!(reload, 11_932);
        let window = pit_window_ns(reload);
        assert_eq!(window, 10_000_150);
        let delta = 2_500_000_000u64 * window / NSEC_PER_SEC;
        let hz = calibrate_hz(delta, window).expect("plausible");
        assert!(hz.abs_diff(2_500_000_000) <= 1_000, "{hz}");
        assert_eq!(calibrate_hz(1, 0), Err(Error::ZeroReference));
        assert_eq!(calibrate_hz(0, 10_000_000), Err(Error::Implausible { hz: 0 }));
        assert_eq!(calibrate_hz(u64::MAX, 1), Err(Error::Implausible { hz: u64::MAX }));
        assert_eq!(calibrate_hz(1_000_000_001, 10_000_000), Err(Error::Implausible { hz: 100_000_000_100 }));
    }

    #[test]
    fn pit_reload_limits() {
        assert_eq!(pit_reload_for_ms(1), Ok(1_193));
        assert_eq!(pit_reload_for_ms(PIT_MAX_WINDOW_MS), Ok(64_432));
        assert_eq!(pit_reload_for_ms(0), Err(Error::PitWindow { ms: 0 }));
        assert_eq!(pit_reload_for_ms(55), Err(Error::PitWindow { ms: 55 }));
        assert_eq!(pit_window_ns(u16::MAX), 54_924_563);
        assert_eq!(port_b_gate_on(0b0010_0010), 0b0010_0001);
        assert_eq!(
            std::format!("{}", Error::PitWindow { ms: 55 }),
            "PIT calibration window of 55 ms is not in 1..=54 ms"
        );
    }

    /// `x · num / den` rounded down, computed exactly for checking.
    fn exact(x: u64, num: u64, den: u64) -> u128 {
        u128::from(x) * u128::from(num) / u128::from(den)
    }

    #[test]
    fn ten_years_at_5_ghz() {
        let scale = TscScale::new(5_000_000_000).expect("scale");
        let ten_years_ns: u64 = 10 * 36_525 * 86_400 / 100 * NSEC_PER_SEC; // 10 · 365.25 days
        let ten_years_ticks = ten_years_ns * 5;
        assert_eq!(ten_years_ticks, 1_577_880_000_000_000_000);
        assert_eq!(scale.ticks_to_ns(ten_years_ticks), ten_years_ns);
        assert_eq!(scale.ns_to_ticks(ten_years_ns), ten_years_ticks);
        assert_eq!(scale.ticks_to_ns(ten_years_ticks + 4), ten_years_ns);
        assert_eq!(scale.ticks_to_ns(ten_years_ticks + 5), ten_years_ns + 1);
    }

    #[test]
    fn scale_is_within_one_unit_everywhere() {
        let frequencies = [
            1u64,
            1_000_000,
            PIT_HZ,
            999_999_999,
            1_000_000_000,
            2_445_432_000,
            2_500_000_000,
            5_000_000_000,
            100_000_000_000,
        ];
        let samples = [0u64, 1, 7, 999, 1_000_000_007, 1 << 32, (1 << 40) + 3, 1 << 62, u64::MAX / 3, u64::MAX];
        for hz in frequencies {
            let scale = TscScale::new(hz).expect("scale");
            assert_eq!(scale.hz(), hz);
            for x in samples {
                let ns = exact(x, NSEC_PER_SEC, hz);
                let got = scale.ticks_to_ns(x);
                if ns > u128::from(u64::MAX) {
                    assert_eq!(got, u64::MAX, "{hz} Hz, {x} ticks saturates");
                } else {
                    assert!(ns.abs_diff(u128::from(got)) <= 1, "{hz} Hz, {x} ticks: {got} vs {ns}");
                }
                let ticks = exact(x, hz, NSEC_PER_SEC);
                let got = scale.ns_to_ticks(x);
                if ticks > u128::from(u64::MAX) {
                    assert_eq!(got, u64::MAX, "{hz} Hz, {x} ns saturates");
                } else {
                    assert!(ticks.abs_diff(u128::from(got)) <= 1, "{hz} Hz, {x} ns: {got} vs {ticks}");
                }
            }
        }
        assert_eq!(TscScale::new(0), Err(Error::ZeroFrequency));
        assert_eq!(TscScale::new(u64::MAX).map(|s| s.ticks_to_ns(u64::MAX)), Ok(NSEC_PER_SEC));
    }
}
