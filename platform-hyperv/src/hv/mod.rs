//! Hyper-V enlightenments from the Top-Level Functional Specification (TLFS v6.0b), one file per feature:
//! partition identity, privileges and the VP index ([`partition`], §2.4, §3.13, §7.8), the hypercall page and
//! calling convention ([`hypercall`], §3), the partition reference clock and reference TSC page ([`clock`],
//! §12.3, §12.7), the synthetic interrupt controller with its messages, event flags, HvPostMessage and
//! HvSignalEvent ([`synic`], §11) and synthetic timers ([`stimer`], §12.4). Constants are also in Linux
//! `include/hyperv/hvgdk_mini.h` (`HV_X64_MSR_*`, `HVCALL_*`, `HV_STATUS_*`).
//!
//! Sans-I/O: MSRs, hypercalls and the TSC go through [`HwAccess`]; the bare target implements it with `rdmsr`,
//! `wrmsr` and a call into the hypercall page (`crate::hw`, the crate's only `unsafe`), host tests with recorded
//! values, and the `hyperv` test peer with a model of the hypervisor.
#![forbid(unsafe_code)]

pub mod clock;
pub mod hypercall;
pub mod partition;
pub mod stimer;
pub mod synic;
#[cfg(test)]
pub(crate) mod testing;

use crate::mem::MemError;
use core::fmt;

pub use clock::{ClockKind, ReferenceClock};
pub use hypercall::{enable_hypercalls, HvStatus};
pub use partition::{describe, guest_os_id, tsc_frequency, vp_index, Enlightenments};
pub use synic::{ConnectionId, Synic};

/// The ways to reach the hypervisor: MSRs, hypercalls and the TSC. Implemented by the bare-metal edge
/// (`crate::hw`), by recorded values in unit tests and by the host model in the `hyperv` test peer.
pub trait HwAccess: Send + Sync {
    /// Reads a synthetic MSR.
    fn rdmsr(&self, msr: u32) -> u64;
    /// Writes a synthetic MSR.
    fn wrmsr(&self, msr: u32, value: u64);
    /// A memory-based hypercall (TLFS §3.6): `control` (code, flags, rep counts), input and output page GPAs
    /// (8-byte aligned, not crossing a page). Returns the result value (status in bits 15:0).
    fn hypercall(&self, control: u64, input_gpa: u64, output_gpa: u64) -> u64;
    /// A fast (register) hypercall with one 8-byte input (TLFS §3.7). Returns the result value.
    fn hypercall_fast(&self, control: u64, input: u64) -> u64;
    /// The virtual processor's TSC (ticks).
    fn rdtsc(&self) -> u64;
}

/// Why an enlightenment could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HvError {
    /// The partition lacks a privilege the feature needs (CPUID 0x4000_0003 EAX/EBX).
    MissingPrivilege {
        /// The feature, e.g. "the hypercall page".
        what: &'static str,
        /// The missing privilege bit's TLFS name, e.g. "AccessHypercallMsrs".
        privilege: &'static str,
    },
    /// The hypervisor did not take an MSR value: wrote `wrote`, read back `read`.
    MsrNotAccepted {
        /// The MSR index, e.g. `HV_X64_MSR_HYPERCALL` (0x4000_0001).
        msr: u32,
        /// The value written.
        wrote: u64,
        /// The value read back.
        read: u64,
    },
    /// The reference TSC page is not valid (sequence 0): the caller falls back to the reference counter.
    TscPageInvalid,
    /// A shared page access failed.
    Memory(MemError),
    /// A hypercall failed.
    Hypercall {
        /// The hypercall, e.g. "HvPostMessage".
        call: &'static str,
        /// The result value's status (`HV_STATUS_*`).
        status: HvStatus,
    },
    /// A structure the hypervisor shares (a SynIC message slot, a hypercall input) is shorter than its layout.
    Truncated {
        /// The structure, e.g. "SynIC message slot".
        what: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes its layout needs.
        need: usize,
    },
}

impl fmt::Display for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingPrivilege { what, privilege } => {
                write!(f, "hyper-v: {what} needs the {privilege} partition privilege, which this partition lacks")
            }
            Self::MsrNotAccepted { msr, wrote, read } => {
                write!(f, "hyper-v: MSR {msr:#x} did not take {wrote:#x} (reads back {read:#x})")
            }
            Self::TscPageInvalid => write!(f, "hyper-v: reference TSC page is invalid (sequence 0)"),
            Self::Memory(e) => write!(f, "hyper-v: shared page: {e}"),
            Self::Hypercall { call, status } => write!(f, "hyper-v: hypercall {call} failed: {status}"),
            Self::Truncated { what, len, need } => write!(f, "hyper-v: {what} of {len} bytes, its layout needs {need}"),
        }
    }
}

impl From<MemError> for HvError {
    fn from(e: MemError) -> Self {
        Self::Memory(e)
    }
}

/// The MSR value that enables an overlay page at `gpa` (hypercall, reference TSC, SIMP and SIEFP MSRs all use bit
/// 0 = enable and bits 63:12 = GPA page number; TLFS §3.13, §11.8.4, §11.8.5, §12.7.1), keeping the reserved
/// bits 11:1 of `current`.
pub fn overlay_msr_value(current: u64, gpa: u64) -> u64 {
    (gpa & !0xfff) | (current & 0xffe) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_values_keep_reserved_bits() {
        assert_eq!(overlay_msr_value(0, 0xabc_d000), 0xabc_d001);
        assert_eq!(overlay_msr_value(0xffff_f002, 0x1000), 0x1003, "lock bit kept, old page dropped");
    }
}
