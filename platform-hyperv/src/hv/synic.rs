//! The synthetic interrupt controller (TLFS §11): the SCONTROL, SIMP, SIEFP, SINTx and EOM MSRs (§11.8), the
//! per-SINT message slots (`HV_MESSAGE`, §11.9) and event flags, and the two hypercalls that send to the host:
//! HvPostMessage (`HV_INPUT_POST_MESSAGE`, §11.10.1) and HvSignalEvent (§11.10.2). Message slots and the
//! post-message input are checked views ([`Message`], [`PostMessageInput`]) in the crate's wire idiom.
#![forbid(unsafe_code)]

use super::hypercall::{hypercall_control, HvStatus, HVCALL_POST_MESSAGE, HVCALL_SIGNAL_EVENT};
use super::partition::Enlightenments;
use super::{overlay_msr_value, HvError, HwAccess};
use crate::mem::{MemError, Region};
use alloc::vec::Vec;
use core::fmt;
use libos::hypervisor::HvPartitionPrivileges;
use libos::wire::{read_u32, read_u8, write_u32, write_u8, Field, Rest};

/// `HV_X64_MSR_SCONTROL` (TLFS §11.8.1): bit 0 enables the SynIC.
pub const MSR_SCONTROL: u32 = 0x4000_0080;
/// `HV_X64_MSR_SVERSION` (TLFS §11.8.2): SynIC version (1).
pub const MSR_SVERSION: u32 = 0x4000_0081;
/// `HV_X64_MSR_SIEFP` (TLFS §11.8.4): bit 0 enable, bits 63:12 the event-flags page's GPA page number.
pub const MSR_SIEFP: u32 = 0x4000_0082;
/// `HV_X64_MSR_SIMP` (TLFS §11.8.5): bit 0 enable, bits 63:12 the message page's GPA page number.
pub const MSR_SIMP: u32 = 0x4000_0083;
/// `HV_X64_MSR_EOM` (TLFS §11.8.6): writing any value asks the hypervisor to redeliver a pending message.
pub const MSR_EOM: u32 = 0x4000_0084;
/// `HV_X64_MSR_SINT0` (TLFS §11.8.7); SINTx is `MSR_SINT0 + x`.
pub const MSR_SINT0: u32 = 0x4000_0090;

/// Number of synthetic interrupt sources per virtual processor (TLFS §11.1).
pub const SINT_COUNT: u32 = 16;
/// Size of one SynIC message slot (bytes): 16-byte header plus 240-byte payload (TLFS §11.9, `HV_MESSAGE`).
pub const MESSAGE_SIZE: usize = 256;
/// Maximum SynIC message payload (bytes, `HV_MESSAGE_PAYLOAD_BYTE_COUNT`).
pub const MESSAGE_PAYLOAD_MAX: usize = 240;
/// Event flags per SINT in the SIEFP page (`HV_EVENT_FLAGS_COUNT`, 256 bytes).
pub const EVENT_FLAGS_COUNT: usize = 2048;
/// SynIC message type: slot empty (`HVMSG_NONE`).
pub const HVMSG_NONE: u32 = 0;
/// `HV_MESSAGE` flags bit 0 (`MessagePending`): another message waits; write EOM after freeing the slot.
pub const MESSAGE_FLAG_PENDING: u8 = 1;
/// Size of `HV_INPUT_POST_MESSAGE` (bytes): connection id, reserved, message type, payload size, 240-byte payload.
pub const POST_MESSAGE_INPUT_SIZE: usize = 16 + MESSAGE_PAYLOAD_MAX;

/// SINTx bit 16: masked.
pub const SINT_MASKED: u64 = 1 << 16;
/// SINTx bit 17: auto-EOI (the hypervisor EOIs the LAPIC).
pub const SINT_AUTO_EOI: u64 = 1 << 17;

/// A connection id (`HV_CONNECTION_ID`, TLFS §11.10): names the host port a posted message or a signalled event
/// goes to (VMBus: the message connection, or a channel's `connection_id` from its offer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConnectionId(pub u32);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::LowerHex for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

mod field {
    use super::{Field, Rest};
    // HV_MESSAGE (TLFS §11.9): HV_MESSAGE_HEADER, then the payload.
    pub const MESSAGE_TYPE: Field = 0..4;
    pub const PAYLOAD_SIZE: Field = 4..5;
    pub const MESSAGE_FLAGS: Field = 5..6;
    pub const RESERVED: Field = 6..8;
    pub const SENDER: Field = 8..16;
    pub const PAYLOAD: Rest = 16..;

    // HV_INPUT_POST_MESSAGE (TLFS §11.10.1).
    pub const POST_CONNECTION_ID: Field = 0..4;
    pub const POST_MESSAGE_TYPE: Field = 8..12;
    pub const POST_PAYLOAD_SIZE: Field = 12..16;
    pub const POST_PAYLOAD: Rest = 16..;
}

/// A checked view of one SynIC message slot (`HV_MESSAGE`, TLFS §11.9): `MessageType` (u32 at 0), `PayloadSize`
/// (u8 at 4), `MessageFlags` (u8 at 5), sender/port (u64 at 8), 240 payload bytes at 16.
#[derive(Debug, Clone, Copy)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, HvError> {
        let m = Self::new_unchecked(buffer);
        m.check_len()?;
        Ok(m)
    }

    /// Checks that the buffer holds a whole slot ([`MESSAGE_SIZE`] bytes). Errors: [`HvError::Truncated`].
    pub fn check_len(&self) -> Result<(), HvError> {
        let len = self.buffer.as_ref().len();
        if len < MESSAGE_SIZE {
            return Err(HvError::Truncated { what: "SynIC message slot", len, need: MESSAGE_SIZE });
        }
        Ok(())
    }

    /// `MessageType` ([`HVMSG_NONE`] for a free slot).
    pub fn message_type(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MESSAGE_TYPE)
    }

    /// `PayloadSize` as written (bytes; may exceed 240 in a hostile slot, see [`Message::payload`]).
    pub fn payload_size(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::PAYLOAD_SIZE)
    }

    /// Whether `MessageFlags.MessagePending` is set.
    pub fn message_pending(&self) -> bool {
        read_u8(self.buffer.as_ref(), field::MESSAGE_FLAGS) & MESSAGE_FLAG_PENDING != 0
    }

    /// The payload: `PayloadSize` bytes, clamped to the 240-byte slot.
    pub fn payload(&self) -> &[u8] {
        let n = usize::from(self.payload_size()).min(MESSAGE_PAYLOAD_MAX);
        &self.buffer.as_ref()[field::PAYLOAD][..n]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Message<T> {
    /// Sets `MessageType`.
    pub fn set_message_type(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::MESSAGE_TYPE, v)
    }

    /// Sets `PayloadSize` (bytes).
    pub fn set_payload_size(&mut self, v: u8) {
        write_u8(self.buffer.as_mut(), field::PAYLOAD_SIZE, v)
    }

    /// Sets `MessageFlags` (only `MessagePending` is defined).
    pub fn set_message_pending(&mut self, pending: bool) {
        write_u8(self.buffer.as_mut(), field::MESSAGE_FLAGS, if pending { MESSAGE_FLAG_PENDING } else { 0 })
    }

    /// Clears the reserved bytes and the sender/port field.
    pub fn clear_sender(&mut self) {
        let b = self.buffer.as_mut();
        b[field::RESERVED].fill(0);
        b[field::SENDER].fill(0);
    }

    /// The whole 240-byte payload area.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD][..MESSAGE_PAYLOAD_MAX]
    }
}

/// A SynIC message (the owned form of a [`Message`] slot).
#[derive(Clone, PartialEq, Eq)]
pub struct SynicMessage {
    /// Message type (1 for VMBus channel messages; `HVMSG_TIMER_EXPIRED`; ...).
    pub message_type: u32,
    /// Payload bytes (at most 240; a larger `PayloadSize` is clamped).
    pub payload: Vec<u8>,
}

impl fmt::Debug for SynicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SynicMessage {{ type: {:#x}, {} bytes }}", self.message_type, self.payload.len())
    }
}

impl SynicMessage {
    /// Parses a message slot; a `PayloadSize` over 240 (hostile or corrupt) is clamped to the slot.
    pub fn parse<T: AsRef<[u8]>>(m: &Message<T>) -> Self {
        Self { message_type: m.message_type(), payload: m.payload().to_vec() }
    }

    /// Encodes the message into slot `m` (what the hypervisor writes), with `MessagePending` = `pending`; a
    /// payload over 240 bytes is cut to the slot.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, m: &mut Message<T>, pending: bool) {
        let n = self.payload.len().min(MESSAGE_PAYLOAD_MAX);
        m.set_message_type(self.message_type);
        m.set_payload_size(n as u8);
        m.set_message_pending(pending);
        m.clear_sender();
        let p = m.payload_mut();
        p[..n].copy_from_slice(&self.payload[..n]);
        p[n..].fill(0);
    }
}

/// A checked view of the HvPostMessage input page (`HV_INPUT_POST_MESSAGE`, TLFS §11.10.1): `ConnectionId` (u32
/// at 0), reserved u32, `MessageType` (u32 at 8), `PayloadSize` (u32 at 12), 240 payload bytes at 16.
#[derive(Debug, Clone, Copy)]
pub struct PostMessageInput<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PostMessageInput<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking it holds [`POST_MESSAGE_INPUT_SIZE`] bytes. Errors: [`HvError::Truncated`].
    pub fn new_checked(buffer: T) -> Result<Self, HvError> {
        let len = buffer.as_ref().len();
        if len < POST_MESSAGE_INPUT_SIZE {
            return Err(HvError::Truncated { what: "HV_INPUT_POST_MESSAGE", len, need: POST_MESSAGE_INPUT_SIZE });
        }
        Ok(Self::new_unchecked(buffer))
    }

    /// `ConnectionId`.
    pub fn connection_id(&self) -> ConnectionId {
        ConnectionId(read_u32(self.buffer.as_ref(), field::POST_CONNECTION_ID))
    }

    /// `MessageType`.
    pub fn message_type(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::POST_MESSAGE_TYPE)
    }

    /// `PayloadSize` (bytes, as written).
    pub fn payload_size(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::POST_PAYLOAD_SIZE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> PostMessageInput<T> {
    /// Fills the input: connection, message type and `payload` (at most 240 bytes, checked by the caller), the
    /// rest of the payload area zeroed.
    pub fn fill(&mut self, connection_id: ConnectionId, message_type: u32, payload: &[u8]) {
        let b = self.buffer.as_mut();
        b[..POST_MESSAGE_INPUT_SIZE].fill(0);
        write_u32(b, field::POST_CONNECTION_ID, connection_id.0);
        write_u32(b, field::POST_MESSAGE_TYPE, message_type);
        write_u32(b, field::POST_PAYLOAD_SIZE, payload.len() as u32);
        b[field::POST_PAYLOAD][..payload.len()].copy_from_slice(payload);
    }
}

/// The SynIC pages of one virtual processor: the message page (SIMP, 16 slots of [`MESSAGE_SIZE`]) and the event
/// flags page (SIEFP, 16 × 256 bytes of flags).
#[derive(Clone, Debug)]
pub struct Synic {
    /// SIMP page.
    pub simp: Region,
    /// SIEFP page.
    pub siefp: Region,
}

/// SINT register value (TLFS §11.8.7): vector in bits 7:0, masked bit 16, auto-EOI bit 17; other bits of `current`
/// are kept.
pub fn sint_value(current: u64, vector: u8, auto_eoi: bool) -> u64 {
    let mut v = (current & !0xff & !SINT_MASKED & !SINT_AUTO_EOI) | u64::from(vector);
    if auto_eoi {
        v |= SINT_AUTO_EOI;
    }
    v
}

impl Synic {
    /// Enables the SynIC (TLFS §11.8, in Linux `hv_synic_enable_regs` order): SIMP and SIEFP overlays, SINT `sint`
    /// unmasked on `vector` without auto-EOI, then SCONTROL. Errors: [`HvError::MissingPrivilege`] without
    /// AccessSynicRegs, [`HvError::MsrNotAccepted`] when an enable bit does not stick.
    pub fn enable(
        hw: &dyn HwAccess,
        en: &Enlightenments,
        simp: Region,
        siefp: Region,
        sint: u32,
        vector: u8,
    ) -> Result<Self, HvError> {
        if !en.has(HvPartitionPrivileges::ACCESS_SYNIC_REGS) {
            return Err(HvError::MissingPrivilege { what: "the SynIC", privilege: "AccessSynicRegs" });
        }
        for (msr, gpa) in [(MSR_SIMP, simp.gpa()), (MSR_SIEFP, siefp.gpa())] {
            let v = overlay_msr_value(hw.rdmsr(msr), gpa);
            hw.wrmsr(msr, v);
            let read = hw.rdmsr(msr);
            if read & 1 == 0 || read & !0xfff != gpa {
                return Err(HvError::MsrNotAccepted { msr, wrote: v, read });
            }
        }
        let msr = MSR_SINT0 + (sint % SINT_COUNT);
        // No auto-EOI even where the host recommends it: libos's interrupt dispatcher EOIs every device vector, and
        // a second EOI would retire another in-service interrupt.
        hw.wrmsr(msr, sint_value(hw.rdmsr(msr), vector, false));
        let sc = hw.rdmsr(MSR_SCONTROL) | 1;
        hw.wrmsr(MSR_SCONTROL, sc);
        Ok(Self { simp, siefp })
    }

    /// Byte offset of SINT `sint`'s message slot in the SIMP page.
    pub fn slot_offset(sint: u32) -> usize {
        (sint % SINT_COUNT) as usize * MESSAGE_SIZE
    }

    /// Byte offset of SINT `sint`'s event flags in the SIEFP page.
    pub fn flags_offset(sint: u32) -> usize {
        (sint % SINT_COUNT) as usize * (EVENT_FLAGS_COUNT / 8)
    }

    /// Takes the message in SINT `sint`'s slot, if any: copies it out, frees the slot (type = `HVMSG_NONE`), and,
    /// when the hypervisor flagged another message pending, writes EOM so it is delivered (TLFS §11.9.3).
    /// Errors: a shared page access failed.
    pub fn take_message(&self, hw: &dyn HwAccess, sint: u32) -> Result<Option<SynicMessage>, MemError> {
        let base = Self::slot_offset(sint);
        let ty = self.simp.load_u32(base + field::MESSAGE_TYPE.start)?;
        if ty == HVMSG_NONE {
            return Ok(None);
        }
        let mut raw = [0u8; MESSAGE_SIZE];
        self.simp.read(base, &mut raw)?;
        let msg = SynicMessage::parse(&Message::new_unchecked(&raw[..]));
        self.simp.store_u32(base + field::MESSAGE_TYPE.start, HVMSG_NONE)?;
        // The type store must be visible before the flags are read: the hypervisor sets MessagePending only while
        // the slot is full (TLFS §11.9.3).
        crate::mem::full_barrier();
        let mut flags = [0u8; 1];
        self.simp.read(base + field::MESSAGE_FLAGS.start, &mut flags)?;
        if flags[0] & MESSAGE_FLAG_PENDING != 0 {
            hw.wrmsr(MSR_EOM, 0);
        }
        Ok(Some(msg))
    }

    /// Scans and clears SINT `sint`'s event flags, calling `f` with each set flag number (bit index, which for
    /// VMBus ≥ 2.4 is a channel's relid). Flag 0 is reported too; VMBus callers ignore it.
    pub fn scan_event_flags(&self, sint: u32, mut f: impl FnMut(u32)) -> Result<(), MemError> {
        let base = Self::flags_offset(sint);
        for w in 0..EVENT_FLAGS_COUNT / 64 {
            let off = base + w * 8;
            if self.siefp.load_u64(off)? == 0 {
                continue;
            }
            let mut bits = self.siefp.swap_u64(off, 0)?;
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                f(w as u32 * 64 + b);
            }
        }
        Ok(())
    }
}

/// Posts `payload` as a message of `message_type` to `connection_id` with HvPostMessage (TLFS §11.10.1), using
/// `input` (one page) as the hypercall input page. Returns the hypercall status: [`HvStatus::INVALID_PARAMETER`]
/// for a payload over 240 bytes without calling the hypervisor. Errors: shared page failures.
pub fn post_message(
    hw: &dyn HwAccess,
    input: &Region,
    connection_id: ConnectionId,
    message_type: u32,
    payload: &[u8],
) -> Result<HvStatus, HvError> {
    if payload.len() > MESSAGE_PAYLOAD_MAX {
        return Ok(HvStatus::INVALID_PARAMETER);
    }
    let mut buf = [0u8; POST_MESSAGE_INPUT_SIZE];
    PostMessageInput::new_unchecked(&mut buf[..]).fill(connection_id, message_type, payload);
    input.write(0, &buf)?;
    let r = hw.hypercall(hypercall_control(HVCALL_POST_MESSAGE, false, 0), input.gpa(), 0);
    Ok(HvStatus::from_result(r))
}

/// Signals event flag `flag` of `connection_id` with the fast HvSignalEvent hypercall (TLFS §11.10.2: connection
/// id in bits 31:0 of the input, flag number in bits 47:32). Returns the status.
pub fn signal_event(hw: &dyn HwAccess, connection_id: ConnectionId, flag: u16) -> HvStatus {
    let input = u64::from(connection_id.0) | (u64::from(flag) << 32);
    HvStatus::from_result(hw.hypercall_fast(hypercall_control(HVCALL_SIGNAL_EVENT, true, 0), input))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{ws2022, RecordedHw};
    use super::*;
    use crate::mem::host::HostMemory;
    use crate::mem::Dma;
    use alloc::vec;

    fn slot(m: &SynicMessage, pending: bool) -> [u8; MESSAGE_SIZE] {
        let mut raw = [0u8; MESSAGE_SIZE];
        m.emit(&mut Message::new_unchecked(&mut raw[..]), pending);
        raw
    }

    #[test]
    fn sint_values() {
        assert_eq!(sint_value(1 << 16, 0x40, false), 0x40);
        assert_eq!(sint_value(0, 0x41, true), 0x41 | SINT_AUTO_EOI);
    }

    #[test]
    fn message_slot_round_trips_and_clamps_hostile_sizes() {
        let m = SynicMessage { message_type: 1, payload: vec![15, 0, 0, 0, 0, 0, 0, 0, 1] };
        let raw = slot(&m, true);
        let v = Message::new_checked(&raw[..]).unwrap();
        assert_eq!((v.message_type(), v.payload_size(), v.message_pending()), (1, 9, true));
        assert_eq!(SynicMessage::parse(&v), m);
        let mut again = [0xffu8; MESSAGE_SIZE];
        SynicMessage::parse(&v).emit(&mut Message::new_unchecked(&mut again[..]), true);
        assert_eq!(again, raw, "parse → emit reproduces the slot");
        // A hostile payload size is clamped to the slot.
        let mut raw = slot(&m, false);
        raw[4] = 255;
        assert_eq!(SynicMessage::parse(&Message::new_checked(&raw[..]).unwrap()).payload.len(), MESSAGE_PAYLOAD_MAX);
        assert_eq!(
            Message::new_checked(&raw[..100]).unwrap_err(),
            HvError::Truncated { what: "SynIC message slot", len: 100, need: MESSAGE_SIZE }
        );
    }

    #[test]
    fn synic_enable_order_and_messages() {
        let en = ws2022();
        let mem = HostMemory::new();
        let simp = mem.alloc(1).unwrap();
        let siefp = mem.alloc(1).unwrap();
        let hw = RecordedHw::default();
        hw.msrs.lock().unwrap().insert(MSR_SINT0 + 2, SINT_MASKED);
        let s = Synic::enable(&hw, &en, simp.clone(), siefp.clone(), 2, 0x30).unwrap();
        let w: Vec<u32> = hw.writes.lock().unwrap().iter().map(|(m, _)| *m).collect();
        assert_eq!(w, vec![MSR_SIMP, MSR_SIEFP, MSR_SINT0 + 2, MSR_SCONTROL]);
        assert_eq!(hw.rdmsr(MSR_SINT0 + 2), 0x30, "unmasked, vector 0x30, no auto-EOI");
        assert_eq!(hw.rdmsr(MSR_SCONTROL), 1);

        assert_eq!(s.take_message(&hw, 2).unwrap(), None);
        let m = SynicMessage { message_type: 1, payload: vec![15, 0, 0, 0, 0, 0, 0, 0, 1] };
        simp.write(Synic::slot_offset(2), &slot(&m, true)).unwrap();
        assert_eq!(s.take_message(&hw, 2).unwrap(), Some(m.clone()));
        assert_eq!(simp.load_u32(Synic::slot_offset(2)).unwrap(), HVMSG_NONE);
        assert_eq!(hw.writes.lock().unwrap().last(), Some(&(MSR_EOM, 0)), "pending flag → EOM");

        siefp.fetch_or_u64(Synic::flags_offset(2), (1 << 3) | 1).unwrap();
        siefp.fetch_or_u64(Synic::flags_offset(2) + 8, 1 << 1).unwrap();
        let mut seen = vec![];
        s.scan_event_flags(2, |b| seen.push(b)).unwrap();
        assert_eq!(seen, vec![0, 3, 65]);
        let mut again = vec![];
        s.scan_event_flags(2, |b| again.push(b)).unwrap();
        assert!(again.is_empty(), "flags are cleared when taken");
    }

    #[test]
    fn synic_refusing_the_simp_page_is_an_error() {
        let en = ws2022();
        let mem = HostMemory::new();
        let hw = RecordedHw { read_only: vec![MSR_SIMP], ..Default::default() };
        let e = Synic::enable(&hw, &en, mem.alloc(1).unwrap(), mem.alloc(1).unwrap(), 2, 0x30).unwrap_err();
        assert!(matches!(e, HvError::MsrNotAccepted { msr: MSR_SIMP, .. }), "{e}");
    }

    #[test]
    fn post_message_and_signal_event_encoding() {
        let mem = HostMemory::new();
        let input = mem.alloc(1).unwrap();
        let hw = RecordedHw::default();
        let st = post_message(&hw, &input, ConnectionId(4), 1, &[14, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert!(st.is_success());
        assert_eq!(hw.hypercalls.lock().unwrap()[0], (0x5c, input.gpa()));
        assert_eq!(input.read_u32(0).unwrap(), 4);
        assert_eq!(input.read_u32(8).unwrap(), 1);
        assert_eq!(input.read_u32(12).unwrap(), 8);
        let mut page = [0u8; POST_MESSAGE_INPUT_SIZE];
        input.read(0, &mut page).unwrap();
        let v = PostMessageInput::new_checked(&page[..]).unwrap();
        assert_eq!((v.connection_id(), v.message_type(), v.payload_size()), (ConnectionId(4), 1, 8));
        assert!(PostMessageInput::new_checked(&page[..16]).is_err());
        assert_eq!(post_message(&hw, &input, ConnectionId(4), 1, &[0; 241]).unwrap(), HvStatus::INVALID_PARAMETER);
        assert!(signal_event(&hw, ConnectionId(0x2005), 0).is_success());
        assert_eq!(hw.hypercalls.lock().unwrap()[1], (0x1_005d, 0x2005));
    }
}
