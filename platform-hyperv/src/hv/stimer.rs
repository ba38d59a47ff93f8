//! Synthetic timers (TLFS §12.4): STIMER0's configuration and count MSRs. libos drives the LAPIC timer; stimer0
//! stays available for a libos timer hook.
#![forbid(unsafe_code)]

use super::partition::Enlightenments;
use super::synic::SINT_COUNT;
use super::{HvError, HwAccess};
use libos::hypervisor::HvPartitionPrivileges;

/// `HV_X64_MSR_STIMER0_CONFIG` (TLFS §12.4.1).
pub const MSR_STIMER0_CONFIG: u32 = 0x4000_00B0;
/// `HV_X64_MSR_STIMER0_COUNT` (TLFS §12.4.2): expiration time, reference time (100 ns) for one-shot timers.
pub const MSR_STIMER0_COUNT: u32 = 0x4000_00B1;
/// SynIC message type of a synthetic timer expiration (`HVMSG_TIMER_EXPIRED`, TLFS §12.4.3).
pub const HVMSG_TIMER_EXPIRED: u32 = 0x8000_0010;

/// STIMER0_CONFIG value (TLFS §12.4.1): enable (bit 0), one-shot, auto-enable (bit 3, so writing the count arms
/// it); with `direct_vector` the timer raises that APIC vector directly (bit 12, vector in bits 11:4, needs
/// `DirectSyntheticTimers`), else it posts `HVMSG_TIMER_EXPIRED` to SINT `sint` (bits 19:16).
pub fn stimer_config(direct_vector: Option<u8>, sint: u32) -> u64 {
    let base = 1 | (1 << 3);
    match direct_vector {
        Some(v) => base | (1 << 12) | (u64::from(v) << 4),
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
}
