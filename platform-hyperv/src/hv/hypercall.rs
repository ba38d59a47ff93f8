//! The hypercall interface (TLFS §3): the guest OS identity and hypercall page MSRs that enable it (§3.13,
//! §3.14), the control value (§3.6: call code, fast flag, rep count) and the status codes every call returns
//! (Appendix B). The call itself goes through [`HwAccess::hypercall`] / [`HwAccess::hypercall_fast`].
#![forbid(unsafe_code)]

use super::partition::{Enlightenments, MSR_GUEST_OS_ID};
use super::{overlay_msr_value, HvError, HwAccess};
use core::fmt;
use libos::hypervisor::HvPartitionPrivileges;

/// `HV_X64_MSR_HYPERCALL` (TLFS §3.14): bit 0 enable, bit 1 locked, bits 63:12 the hypercall page's GPA page number.
pub const MSR_HYPERCALL: u32 = 0x4000_0001;

/// `HVCALL_POST_MESSAGE` (TLFS §11.10.1): memory input `HV_INPUT_POST_MESSAGE`.
pub const HVCALL_POST_MESSAGE: u16 = 0x005c;
/// `HVCALL_SIGNAL_EVENT` (TLFS §11.10.2): fast input, connection id (bits 31:0) and flag number (bits 47:32).
pub const HVCALL_SIGNAL_EVENT: u16 = 0x005d;
/// Hypercall control bit 16: register ("fast") calling convention (TLFS §3.7).
pub const HYPERCALL_FAST: u64 = 1 << 16;

/// Hypercall status codes (`HV_STATUS_*`, TLFS Appendix B), bits 15:0 of the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvStatus(pub u16);

impl HvStatus {
    /// `HV_STATUS_SUCCESS`.
    pub const SUCCESS: Self = Self(0);
    /// `HV_STATUS_INVALID_HYPERCALL_CODE`.
    pub const INVALID_HYPERCALL_CODE: Self = Self(2);
    /// `HV_STATUS_INVALID_HYPERCALL_INPUT`.
    pub const INVALID_HYPERCALL_INPUT: Self = Self(3);
    /// `HV_STATUS_INVALID_ALIGNMENT`.
    pub const INVALID_ALIGNMENT: Self = Self(4);
    /// `HV_STATUS_INVALID_PARAMETER`.
    pub const INVALID_PARAMETER: Self = Self(5);
    /// `HV_STATUS_ACCESS_DENIED`.
    pub const ACCESS_DENIED: Self = Self(6);
    /// `HV_STATUS_INSUFFICIENT_MEMORY`.
    pub const INSUFFICIENT_MEMORY: Self = Self(0xb);
    /// `HV_STATUS_INVALID_PORT_ID`.
    pub const INVALID_PORT_ID: Self = Self(0x11);
    /// `HV_STATUS_INVALID_CONNECTION_ID`: e.g. VMBus message connection 4 on a host older than VMBus 5.0.
    pub const INVALID_CONNECTION_ID: Self = Self(0x12);
    /// `HV_STATUS_INSUFFICIENT_BUFFERS`: the host's message queue is full; retry.
    pub const INSUFFICIENT_BUFFERS: Self = Self(0x13);

    /// The status of a hypercall result value.
    pub fn from_result(result: u64) -> Self {
        Self(result as u16)
    }

    /// Whether the call succeeded.
    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    fn name(self) -> &'static str {
        match self.0 {
            0 => "HV_STATUS_SUCCESS",
            2 => "HV_STATUS_INVALID_HYPERCALL_CODE",
            3 => "HV_STATUS_INVALID_HYPERCALL_INPUT",
            4 => "HV_STATUS_INVALID_ALIGNMENT",
            5 => "HV_STATUS_INVALID_PARAMETER",
            6 => "HV_STATUS_ACCESS_DENIED",
            0xb => "HV_STATUS_INSUFFICIENT_MEMORY",
            0x11 => "HV_STATUS_INVALID_PORT_ID",
            0x12 => "HV_STATUS_INVALID_CONNECTION_ID",
            0x13 => "HV_STATUS_INSUFFICIENT_BUFFERS",
            _ => "unknown status",
        }
    }
}

impl fmt::Display for HvStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.0)
    }
}

/// Builds a hypercall control value (TLFS §3.6): call code (bits 15:0), fast flag (bit 16), rep count (bits
/// 43:32).
pub fn hypercall_control(code: u16, fast: bool, rep_count: u16) -> u64 {
    u64::from(code) | if fast { HYPERCALL_FAST } else { 0 } | (u64::from(rep_count & 0xfff) << 32)
}

/// Enables the hypercall interface (TLFS §3.13–§3.14): writes the guest OS identity, then the hypercall MSR with the
/// page at `page_gpa`, and checks that the enable bit stuck. Errors: [`HvError::MissingPrivilege`] without
/// AccessHypercallMsrs, [`HvError::MsrNotAccepted`].
pub fn enable_hypercalls(hw: &dyn HwAccess, en: &Enlightenments, guest_id: u64, page_gpa: u64) -> Result<(), HvError> {
    if !en.has(HvPartitionPrivileges::ACCESS_HYPERCALL_MSRS) {
        return Err(HvError::MissingPrivilege { what: "the hypercall page", privilege: "AccessHypercallMsrs" });
    }
    // The hypercall MSR ignores writes while the guest OS ID is zero (TLFS §3.13).
    hw.wrmsr(MSR_GUEST_OS_ID, guest_id);
    let value = overlay_msr_value(hw.rdmsr(MSR_HYPERCALL), page_gpa);
    hw.wrmsr(MSR_HYPERCALL, value);
    let read = hw.rdmsr(MSR_HYPERCALL);
    if read & 1 == 0 {
        return Err(HvError::MsrNotAccepted { msr: MSR_HYPERCALL, wrote: value, read });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::partition::{guest_os_id, GUEST_OS_TYPE_ZIRVIUM};
    use super::super::testing::{ws2022, RecordedHw};
    use super::*;

    #[test]
    fn guest_os_id_is_written_before_the_hypercall_page() {
        let en = ws2022();
        let hw = RecordedHw::default();
        let id = guest_os_id(0, 1, 0);
        assert_eq!(id >> 63, 1);
        assert_eq!((id >> 56) & 0x7f, GUEST_OS_TYPE_ZIRVIUM);
        assert_eq!((id >> 16) & 0xffff_ffff, 0x100);
        enable_hypercalls(&hw, &en, id, 0x12_3000).unwrap();
        let w = hw.writes.lock().unwrap().clone();
        assert_eq!(w, vec![(MSR_GUEST_OS_ID, id), (MSR_HYPERCALL, 0x12_3001)]);
        let hw = RecordedHw { read_only: vec![MSR_HYPERCALL], ..Default::default() };
        let e = enable_hypercalls(&hw, &en, id, 0x12_3000).unwrap_err();
        assert_eq!(e, HvError::MsrNotAccepted { msr: MSR_HYPERCALL, wrote: 0x12_3001, read: 0 });
    }

    #[test]
    fn control_values() {
        assert_eq!(hypercall_control(HVCALL_SIGNAL_EVENT, true, 0), 0x1_005d);
        assert_eq!(hypercall_control(HVCALL_POST_MESSAGE, false, 3), (3 << 32) | 0x5c);
        assert_eq!(HvStatus(0x12).to_string(), "HV_STATUS_INVALID_CONNECTION_ID (0x12)");
    }
}
