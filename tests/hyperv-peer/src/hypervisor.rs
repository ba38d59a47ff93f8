//! The hypervisor half of the model: the synthetic MSRs (guest OS ID and hypercall page, TLFS §3.13; reference
//! counter and TSC page, §12.3 and §12.7; VP index; SynIC SCONTROL/SIMP/SIEFP/SINT2/EOM, §11.8), the two
//! hypercalls VMBus uses (HvPostMessage and HvSignalEvent, §11.10), message delivery into the SINT 2 slot of the
//! SIMP page with MessagePending and EOM (§11.9), event flags in the SIEFP page, and the CPUID leaves a guest
//! sees (§2.4). Ports (which connection ids exist) belong to the VMBus server, which the hypercalls ask.

use crate::bytes::{rd32, wr32, wr64};
use crate::{lock, Shared};
use platform_hyperv::hv::HwAccess;
use platform_hyperv::mem::host::HostMemory;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

const MSR_GUEST_OS_ID: u32 = 0x4000_0000;
const MSR_HYPERCALL: u32 = 0x4000_0001;
const MSR_VP_INDEX: u32 = 0x4000_0002;
const MSR_TIME_REF_COUNT: u32 = 0x4000_0020;
const MSR_REFERENCE_TSC: u32 = 0x4000_0021;
const MSR_TSC_FREQUENCY: u32 = 0x4000_0022;
const MSR_SCONTROL: u32 = 0x4000_0080;
const MSR_SIEFP: u32 = 0x4000_0082;
const MSR_SIMP: u32 = 0x4000_0083;
const MSR_EOM: u32 = 0x4000_0084;
const MSR_SINT2: u32 = 0x4000_0092;
const HVCALL_POST_MESSAGE: u64 = 0x5c;
const HVCALL_SIGNAL_EVENT: u64 = 0x5d;
const HV_STATUS_INVALID_HYPERCALL_CODE: u64 = 2;
const HV_STATUS_INVALID_HYPERCALL_INPUT: u64 = 3;
const HV_STATUS_INVALID_PARAMETER: u64 = 5;
const HV_STATUS_INVALID_CONNECTION_ID: u64 = 0x12;
/// The SINT VMBus uses.
pub(crate) const SINT: usize = 2;
/// TSC frequency of the model (ticks per second): the TSC is nanoseconds since the host started.
const TSC_HZ: u64 = 1_000_000_000;

/// The partition as the hypervisor keeps it: synthetic MSR values, the SynIC overlay pages the guest enabled and
/// the messages waiting for the SINT 2 slot.
#[derive(Default)]
pub(crate) struct Partition {
    msrs: HashMap<u32, u64>,
    simp: Option<u64>,
    siefp: Option<u64>,
    to_guest: VecDeque<Vec<u8>>,
}

impl Partition {
    /// Queues a message (a SynIC message payload) for the guest's SINT 2 slot, its size rounded up to 8 bytes with
    /// zeros as QEMU's VMBus server posts them (`VMBUS_MESSAGE_SIZE_ALIGN`): the guest must take each message by
    /// its type's layout, not by the slot's payload size.
    pub fn post(&mut self, mut payload: Vec<u8>) {
        payload.resize(payload.len().next_multiple_of(8), 0);
        self.to_guest.push_back(payload);
    }

    /// Sets event flag `flag` of SINT 2 in the guest's SIEFP page (when enabled).
    pub fn set_event_flag(&self, mem: &HostMemory, flag: u32) {
        let Some(siefp) = self.siefp else { return };
        let off = SINT * 256 + (flag as usize / 64) * 8;
        if let Some((r, base)) = mem.lookup(siefp) {
            let _ = r.fetch_or_u64(base + off, 1 << (flag % 64));
        }
    }

    /// Whether any SINT 2 event flag is set (the guest has not scanned them yet).
    pub fn event_flags_pending(&self, mem: &HostMemory) -> bool {
        let Some((region, base)) = self.siefp.and_then(|gpa| mem.lookup(gpa)) else { return false };
        (0..32).any(|w| region.load_u64(base + SINT * 256 + w * 8).unwrap_or(0) != 0)
    }

    /// Puts the next queued message into the SINT 2 slot when it is free. Returns whether to interrupt.
    pub fn deliver(&mut self, mem: &HostMemory) -> bool {
        let (Some(simp), Some(_)) = (self.simp, self.to_guest.front()) else { return false };
        // Messages reach the guest only through an enabled SynIC with SINT 2 unmasked (TLFS §11.8).
        let scontrol = self.msrs.get(&MSR_SCONTROL).copied().unwrap_or(0);
        let sint = self.msrs.get(&MSR_SINT2).copied().unwrap_or(1 << 16);
        if scontrol & 1 == 0 || sint & (1 << 16) != 0 || sint & 0xff < 16 {
            return false;
        }
        let slot = simp + (SINT * 256) as u64;
        let mut ty = [0u8; 4];
        if mem.read_gpa(slot, &mut ty).is_err() || u32::from_le_bytes(ty) != 0 {
            return false;
        }
        let Some(m) = self.to_guest.pop_front() else { return false };
        let mut raw = [0u8; 256];
        wr32(&mut raw, 0, 1);
        raw[4] = m.len().min(240) as u8;
        raw[5] = u8::from(!self.to_guest.is_empty());
        raw[16..16 + m.len().min(240)].copy_from_slice(&m[..m.len().min(240)]);
        // Payload first, type last: the guest reads the type to see a message.
        let _ = mem.write_gpa(slot + 4, &raw[4..]);
        let _ = mem.write_gpa(slot, &raw[..4]);
        true
    }
}

/// CPUID leaves of this host as a guest sees them (Hyper-V 10.0 build 20348 with the privileges VMBus and the
/// reference TSC page need).
pub(crate) fn cpuid() -> Vec<(u32, u32, [u32; 4])> {
    let s = b"Microsoft Hv";
    vec![
        (1, 0, [0, 0, 1 << 31, 0]),
        (0x4000_0000, 0, [0x4000_0005, rd32(s, 0), rd32(s, 4), rd32(s, 8)]),
        (0x4000_0001, 0, [u32::from_le_bytes(*b"Hv#1"), 0, 0, 0]),
        (0x4000_0002, 0, [20348, 10 << 16, 0, 0]),
        (0x4000_0003, 0, [0xae7f, 0x3b8030, 0, 0xe0bed7b2]),
        (0x4000_0004, 0, [0x64e24, 0xfff, 0, 0]),
        (0x4000_0005, 0, [240, 1024, 0, 0]),
    ]
}

/// Raises the guest's SynIC interrupt (when a line is connected).
pub(crate) fn raise(shared: &Shared) {
    let line = lock(&shared.line).clone();
    if let Some(l) = line {
        l.raise();
    }
}

/// The hypervisor side of [`HwAccess`].
pub(crate) struct Hypervisor {
    pub shared: Arc<Shared>,
}

impl HwAccess for Hypervisor {
    fn rdmsr(&self, msr: u32) -> u64 {
        let st = lock(&self.shared.st);
        match msr {
            MSR_TIME_REF_COUNT => self.shared.start.elapsed().as_nanos() as u64 / 100,
            MSR_TSC_FREQUENCY => TSC_HZ,
            MSR_VP_INDEX => 0,
            m => st.hv.msrs.get(&m).copied().unwrap_or(0),
        }
    }

    fn wrmsr(&self, msr: u32, value: u64) {
        let mut guard = lock(&self.shared.st);
        let st = &mut *guard;
        let hv = &mut st.hv;
        let mut interrupt = false;
        match msr {
            MSR_HYPERCALL => {
                // TLFS §3.13: the hypercall page cannot be enabled before the guest OS identity is set.
                if hv.msrs.get(&MSR_GUEST_OS_ID).copied().unwrap_or(0) == 0 {
                    st.errors.push("hypercall MSR written before the guest OS ID".into());
                    return;
                }
                hv.msrs.insert(msr, value);
            }
            MSR_REFERENCE_TSC => {
                hv.msrs.insert(msr, value);
                if value & 1 != 0 {
                    // TscScale: 100 ns per 100 TSC ticks → scale = 2^64 / 100.
                    let mut p = [0u8; 24];
                    wr32(&mut p, 0, 1);
                    wr64(&mut p, 8, ((1u128 << 64) / 100) as u64);
                    wr64(&mut p, 16, 0);
                    let _ = self.shared.mem.write_gpa(value & !0xfff, &p);
                }
            }
            MSR_SIMP => {
                hv.msrs.insert(msr, value);
                hv.simp = (value & 1 != 0).then_some(value & !0xfff);
            }
            MSR_SIEFP => {
                hv.msrs.insert(msr, value);
                hv.siefp = (value & 1 != 0).then_some(value & !0xfff);
            }
            MSR_EOM => interrupt = hv.deliver(&self.shared.mem),
            m => {
                hv.msrs.insert(m, value);
            }
        }
        drop(guard);
        if interrupt {
            raise(&self.shared);
        }
    }

    fn hypercall(&self, control: u64, input_gpa: u64, _output_gpa: u64) -> u64 {
        let mut st = lock(&self.shared.st);
        if st.hv.msrs.get(&MSR_HYPERCALL).copied().unwrap_or(0) & 1 == 0 {
            st.errors.push("hypercall before the hypercall page was enabled".into());
            return HV_STATUS_INVALID_HYPERCALL_CODE;
        }
        if control & 0xffff != HVCALL_POST_MESSAGE || control & (1 << 16) != 0 {
            return HV_STATUS_INVALID_HYPERCALL_CODE;
        }
        if !input_gpa.is_multiple_of(8) {
            return HV_STATUS_INVALID_HYPERCALL_INPUT;
        }
        // HV_INPUT_POST_MESSAGE: connection id, reserved, message type, payload size, payload.
        let mut input = [0u8; 256];
        if self.shared.mem.read_gpa(input_gpa, &mut input).is_err() {
            return HV_STATUS_INVALID_HYPERCALL_INPUT;
        }
        let conn = rd32(&input, 0);
        let size = rd32(&input, 12) as usize;
        if rd32(&input, 8) != 1 || !(8..=240).contains(&size) {
            return HV_STATUS_INVALID_PARAMETER;
        }
        let msg = input[16..16 + size].to_vec();
        if !st.bus.message_port_open(conn, &msg) {
            let ty = rd32(&msg, 0);
            st.events.push(format!("post message type {ty} on invalid connection {conn}"));
            return HV_STATUS_INVALID_CONNECTION_ID;
        }
        st.bus.posted(conn, msg);
        drop(st);
        self.shared.cv.notify_all();
        0
    }

    fn hypercall_fast(&self, control: u64, input: u64) -> u64 {
        if control & 0xffff != HVCALL_SIGNAL_EVENT || control & (1 << 16) == 0 {
            return HV_STATUS_INVALID_HYPERCALL_CODE;
        }
        let conn = input as u32;
        let mut st = lock(&self.shared.st);
        if !st.bus.signaled(conn) {
            return HV_STATUS_INVALID_CONNECTION_ID;
        }
        drop(st);
        self.shared.cv.notify_all();
        0
    }

    fn rdtsc(&self) -> u64 {
        self.shared.start.elapsed().as_nanos() as u64
    }
}
