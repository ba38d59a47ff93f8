//! Synthetic timers (TLFS §12.4): STIMER0's configuration and count MSRs, and [`Stimer0`], stimer0 in direct mode
//! (§12.4.1: the expiry raises an APIC vector, no SynIC message) as libos's timer device
//! ([`libos::time::timer::TimerSource`]) in place of the LAPIC timer.
#![forbid(unsafe_code)]

use super::partition::Enlightenments;
use super::synic::SINT_COUNT;
use super::{HvError, HwAccess};
use alloc::sync::Arc;
use libos::hypervisor::{HvFeatures, HvPartitionPrivileges};

/// `HV_X64_MSR_STIMER0_CONFIG` (TLFS §12.4.1).
pub const MSR_STIMER0_CONFIG: u32 = 0x4000_00B0;
/// `HV_X64_MSR_STIMER0_COUNT` (TLFS §12.4.2): expiration time, reference time (100 ns) for one-shot timers.
pub const MSR_STIMER0_COUNT: u32 = 0x4000_00B1;
/// SynIC message type of a synthetic timer expiration (`HVMSG_TIMER_EXPIRED`, TLFS §12.4.3).
pub const HVMSG_TIMER_EXPIRED: u32 = 0x8000_0010;

/// STIMER_CONFIG bit 0: Enable.
pub const CONFIG_ENABLE: u64 = 1;
/// STIMER_CONFIG bit 3: AutoEnable (writing a non-zero count sets Enable).
pub const CONFIG_AUTO_ENABLE: u64 = 1 << 3;
/// STIMER_CONFIG bit 12: DirectMode (the expiry raises `ApicVector`, bits 11:4, instead of posting a message).
pub const CONFIG_DIRECT_MODE: u64 = 1 << 12;

/// STIMER0_CONFIG value (TLFS §12.4.1): enable (bit 0), one-shot, auto-enable (bit 3, so writing the count arms
/// it); with `direct_vector` the timer raises that APIC vector directly (bit 12, vector in bits 11:4, needs
/// `DirectSyntheticTimers`), else it posts `HVMSG_TIMER_EXPIRED` to SINT `sint` (bits 19:16).
pub fn stimer_config(direct_vector: Option<u8>, sint: u32) -> u64 {
    let base = CONFIG_ENABLE | CONFIG_AUTO_ENABLE;
    match direct_vector {
        Some(v) => base | CONFIG_DIRECT_MODE | (u64::from(v) << 4),
        None => base | (u64::from(sint % SINT_COUNT) << 16),
    }
}

/// Arms synthetic timer 0 to expire at reference time `deadline_100ns` (TLFS §12.4.2: a one-shot timer's count is
/// an absolute reference time). Errors: [`HvError::MissingPrivilege`] without AccessSyntheticTimerRegs.
pub fn arm_stimer0(hw: &dyn HwAccess, en: &Enlightenments, config: u64, deadline_100ns: u64) -> Result<(), HvError> {
    if !en.has(HvPartitionPrivileges::ACCESS_SYNTHETIC_TIMER_REGS) {
        return Err(HvError::MissingPrivilege { what: "synthetic timers", privilege: "AccessSyntheticTimerRegs" });
    }
    hw.wrmsr(MSR_STIMER0_CONFIG, config);
    hw.wrmsr(MSR_STIMER0_COUNT, deadline_100ns.max(1));
    Ok(())
}

/// Synthetic timer 0 in direct mode, one-shot with auto-enable: each deadline is one write of STIMER0_COUNT (an
/// absolute reference time, TLFS §12.4.2; a time in the past expires at once), 0 cancels it. The expiry raises
/// the APIC vector given to [`Stimer0::direct`] like any fixed interrupt (libos EOIs it).
pub struct Stimer0 {
    hw: Arc<dyn HwAccess>,
    vector: u8,
}

impl Stimer0 {
    /// Configures stimer0 for direct mode on `vector`, disabled until the first deadline. Errors:
    /// [`HvError::MissingPrivilege`] without AccessSyntheticTimerRegs, or without the DirectSyntheticTimers feature
    /// (then the caller keeps the LAPIC timer).
    pub fn direct(hw: Arc<dyn HwAccess>, en: &Enlightenments, vector: u8) -> Result<Self, HvError> {
        if !en.has(HvPartitionPrivileges::ACCESS_SYNTHETIC_TIMER_REGS) {
            return Err(HvError::MissingPrivilege { what: "synthetic timers", privilege: "AccessSyntheticTimerRegs" });
        }
        if !en.features.contains(HvFeatures::DIRECT_SYNTHETIC_TIMERS) {
            return Err(HvError::MissingPrivilege {
                what: "a direct-mode synthetic timer",
                privilege: "DirectSyntheticTimers",
            });
        }
        // Enable stays clear: the first non-zero count sets it (AutoEnable).
        hw.wrmsr(MSR_STIMER0_CONFIG, CONFIG_AUTO_ENABLE | CONFIG_DIRECT_MODE | (u64::from(vector) << 4));
        Ok(Self { hw, vector })
    }

    /// The APIC vector the expiry raises.
    pub fn vector(&self) -> u8 {
        self.vector
    }

    /// The STIMER0_COUNT value for uptime deadline `deadline_ns`: the reference time (100 ns units, rounded up so
    /// the timer never fires early) of that instant on the installed clock, at least 1 (0 would cancel).
    pub fn count_for(deadline_ns: u64) -> u64 {
        libos::time::clock_ns_at(deadline_ns).div_ceil(100).max(1)
    }
}

impl libos::time::timer::TimerSource for Stimer0 {
    fn arm(&self, deadline_ns: u64) {
        self.hw.wrmsr(MSR_STIMER0_COUNT, Self::count_for(deadline_ns));
    }

    fn disarm(&self) {
        self.hw.wrmsr(MSR_STIMER0_COUNT, 0);
    }

    fn name(&self) -> &'static str {
        "hyperv-stimer0 (direct mode)"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ws2022, RecordedHw};
    use super::*;

    #[test]
    fn stimer_config_and_arming() {
        let en = ws2022();
        assert_eq!(stimer_config(None, 0), 0b1001);
        assert_eq!(stimer_config(None, 3), 0b1001 | (3 << 16));
        assert_eq!(stimer_config(Some(0xf1), 0), 0b1001 | (1 << 12) | (0xf1 << 4));
        let hw = RecordedHw::default();
        arm_stimer0(&hw, &en, stimer_config(None, 0), 12345).unwrap();
        assert_eq!(*hw.writes.lock().unwrap(), vec![(MSR_STIMER0_CONFIG, 0b1001), (MSR_STIMER0_COUNT, 12345)]);
    }

    #[test]
    fn direct_stimer0_arms_with_one_count_write() {
        use libos::time::timer::TimerSource;
        let en = ws2022();
        let hw = Arc::new(RecordedHw::default());
        let t = Stimer0::direct(hw.clone(), &en, 0x31).unwrap();
        // Without an installed clock the origin is 0: uptime ns / 100, rounded up.
        t.arm(1_000_050);
        t.disarm();
        t.arm(0);
        assert_eq!(
            *hw.writes.lock().unwrap(),
            vec![
                (MSR_STIMER0_CONFIG, CONFIG_AUTO_ENABLE | CONFIG_DIRECT_MODE | (0x31 << 4)),
                (MSR_STIMER0_COUNT, 10_001),
                (MSR_STIMER0_COUNT, 0),
                (MSR_STIMER0_COUNT, 1),
            ]
        );
        assert_eq!(t.vector(), 0x31);
        let mut no_direct = en;
        no_direct.features = HvFeatures(no_direct.features.0 & !HvFeatures::DIRECT_SYNTHETIC_TIMERS.0);
        let e = Stimer0::direct(hw.clone(), &no_direct, 0x31).err().unwrap();
        assert!(e.to_string().contains("DirectSyntheticTimers"), "{e}");
    }
}
