//! virtio-scsi structures: the configuration space (`struct virtio_scsi_config`), the request header
//! (`virtio_scsi_req_cmd`'s device-readable part: LUN, tag, task attribute, CDB), the response
//! (`virtio_scsi_resp_cmd`: sense length, residual, status qualifier, status, response, sense) and the event
//! (`struct virtio_scsi_event`), as checked views with owned `Repr`s. Little-endian; the CDB and sense inside are
//! SCSI's (big-endian, `crate::scsi`). Source: virtio 1.2 §5.6.4 (configuration layout), §5.6.6.1 (request
//! queues: the LUN field, response values), §5.6.6.3 (event queue).
#![forbid(unsafe_code)]

use crate::scsi::Lun;
use core::fmt;
use libos::wire::{read_u16, read_u32, read_u64, read_u8, write_u16, write_u32, write_u64, write_u8};

/// `VIRTIO_SCSI_F_INOUT`: requests with both data-out and data-in buffers.
pub const F_INOUT: u64 = 1 << 0;
/// `VIRTIO_SCSI_F_HOTPLUG`: the device reports hot-plug and hot-unplug on the event queue.
pub const F_HOTPLUG: u64 = 1 << 1;
/// `VIRTIO_SCSI_F_CHANGE`: the device reports parameter changes (e.g. capacity) on the event queue.
pub const F_CHANGE: u64 = 1 << 2;
/// `VIRTIO_SCSI_F_T10_PI`: protection information.
pub const F_T10_PI: u64 = 1 << 3;

/// Bytes of the configuration space the driver reads.
pub const CONFIG_LEN: usize = 36;
/// Default CDB size the device expects (bytes).
pub const CDB_SIZE_DEFAULT: u32 = 32;
/// Default sense buffer size (bytes).
pub const SENSE_SIZE_DEFAULT: u32 = 96;
/// Bytes of `virtio_scsi_req_cmd` before the CDB.
pub const REQ_HEADER: usize = 19;
/// Bytes of `virtio_scsi_resp_cmd` before the sense buffer.
pub const RESP_HEADER: usize = 12;
/// Bytes of `struct virtio_scsi_event`.
pub const EVENT_LEN: usize = 16;
/// `VIRTIO_SCSI_S_SIMPLE` task attribute.
pub const TASK_SIMPLE: u8 = 0;

mod field {
    pub mod config {
        use libos::wire::Field;
        pub const NUM_QUEUES: Field = 0..4;
        pub const SEG_MAX: Field = 4..8;
        pub const MAX_SECTORS: Field = 8..12;
        pub const CMD_PER_LUN: Field = 12..16;
        pub const EVENT_INFO_SIZE: Field = 16..20;
        pub const SENSE_SIZE: Field = 20..24;
        pub const CDB_SIZE: Field = 24..28;
        pub const MAX_CHANNEL: Field = 28..30;
        pub const MAX_TARGET: Field = 30..32;
        pub const MAX_LUN: Field = 32..36;
    }

    pub mod req {
        use libos::wire::Field;
        pub const LUN: Field = 0..8;
        pub const ID: Field = 8..16;
        pub const TASK_ATTR: Field = 16..17;
        pub const PRIO: Field = 17..18;
        pub const CRN: Field = 18..19;
        pub const CDB: usize = 19;
    }

    pub mod resp {
        use libos::wire::Field;
        pub const SENSE_LEN: Field = 0..4;
        pub const RESIDUAL: Field = 4..8;
        pub const STATUS_QUALIFIER: Field = 8..10;
        pub const STATUS: Field = 10..11;
        pub const RESPONSE: Field = 11..12;
        pub const SENSE: usize = 12;
    }

    pub mod event {
        use libos::wire::Field;
        pub const EVENT: Field = 0..4;
        pub const LUN: Field = 4..12;
        pub const REASON: Field = 12..16;
    }
}

/// The configuration fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConfigRepr {
    /// Request queues.
    pub num_queues: u32,
    /// Most data segments per request.
    pub seg_max: u32,
    /// Largest transfer hint, in 512-byte sectors.
    pub max_sectors: u32,
    /// Most requests in flight per LUN (a hint).
    pub cmd_per_lun: u32,
    /// Bytes of an event buffer.
    pub event_info_size: u32,
    /// Bytes of the sense buffer in responses.
    pub sense_size: u32,
    /// Bytes of the CDB in requests.
    pub cdb_size: u32,
    /// Largest channel (0).
    pub max_channel: u16,
    /// Largest target.
    pub max_target: u16,
    /// Largest LUN.
    pub max_lun: u32,
}

impl ConfigRepr {
    /// Decodes the configuration space bytes. `None` when shorter than [`CONFIG_LEN`].
    pub fn parse(b: &[u8]) -> Option<Self> {
        let b: &[u8; CONFIG_LEN] = b.get(..CONFIG_LEN)?.try_into().ok()?;
        Some(Self::from_array(b))
    }

    /// Decodes the configuration space's [`CONFIG_LEN`] bytes.
    pub fn from_array(b: &[u8; CONFIG_LEN]) -> Self {
        use field::config::*;
        Self {
            num_queues: read_u32(b, NUM_QUEUES),
            seg_max: read_u32(b, SEG_MAX),
            max_sectors: read_u32(b, MAX_SECTORS),
            cmd_per_lun: read_u32(b, CMD_PER_LUN),
            event_info_size: read_u32(b, EVENT_INFO_SIZE),
            sense_size: read_u32(b, SENSE_SIZE),
            cdb_size: read_u32(b, CDB_SIZE),
            max_channel: read_u16(b, MAX_CHANNEL),
            max_target: read_u16(b, MAX_TARGET),
            max_lun: read_u32(b, MAX_LUN),
        }
    }

    /// The bytes (for device models).
    pub fn to_bytes(&self) -> [u8; CONFIG_LEN] {
        use field::config::*;
        let mut b = [0u8; CONFIG_LEN];
        write_u32(&mut b, NUM_QUEUES, self.num_queues);
        write_u32(&mut b, SEG_MAX, self.seg_max);
        write_u32(&mut b, MAX_SECTORS, self.max_sectors);
        write_u32(&mut b, CMD_PER_LUN, self.cmd_per_lun);
        write_u32(&mut b, EVENT_INFO_SIZE, self.event_info_size);
        write_u32(&mut b, SENSE_SIZE, self.sense_size);
        write_u32(&mut b, CDB_SIZE, self.cdb_size);
        write_u16(&mut b, MAX_CHANNEL, self.max_channel);
        write_u16(&mut b, MAX_TARGET, self.max_target);
        write_u32(&mut b, MAX_LUN, self.max_lun);
        b
    }

    /// Offsets of the configuration's 32-bit words (bytes): the transport reads it a word at a time
    /// (4-byte alignment is all virtio guarantees, §4.2.2.2), the words make the bytes [`parse`](Self::parse)
    /// decodes.
    pub const WORDS: [usize; CONFIG_LEN / 4] = [0, 4, 8, 12, 16, 20, 24, 28, 32];
}

/// The 8-byte virtio-scsi LUN field: `1`, the target, the single-level LUN in flat space format, zeros
/// (§5.6.6.1).
pub fn lun_field(target: u8, lun: Lun) -> [u8; 8] {
    let [a, b] = lun.flat();
    [1, target, a, b, 0, 0, 0, 0]
}

/// The target and LUN of a LUN field, `None` unless byte 0 is 1 and bytes 4..8 are zero; the LUN decodes the
/// way QEMU does (the low 14 bits of bytes 2..4).
pub fn parse_lun_field(b: [u8; 8]) -> Option<(u8, Lun)> {
    if b[0] != 1 || b[4..] != [0; 4] {
        return None;
    }
    Lun::new(u16::from_be_bytes([b[2], b[3]]) & 0x3fff).map(|l| (b[1], l))
}

/// A request header: the device-readable part of `virtio_scsi_req_cmd` before any data-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReqRepr {
    /// Target.
    pub target: u8,
    /// LUN.
    pub lun: Lun,
    /// The command's tag (`id`), echoed by task management; unique among outstanding commands.
    pub id: u64,
    /// The CDB, zero padded to the device's `cdb_size`.
    pub cdb: [u8; crate::scsi::cdb::MAX_LEN],
}

/// A request header too short, or with a LUN field the driver does not build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHeader {
    /// Bytes present.
    pub len: usize,
}

impl ReqRepr {
    /// Writes the header into `b` (its length is [`REQ_HEADER`] + cdb_size; the CDB is truncated to it).
    pub fn emit(&self, b: &mut [u8]) {
        use field::req::*;
        b.fill(0);
        b[LUN].copy_from_slice(&lun_field(self.target, self.lun));
        write_u64(b, ID, self.id);
        write_u8(b, TASK_ATTR, TASK_SIMPLE);
        write_u8(b, PRIO, 0);
        write_u8(b, CRN, 0);
        let n = (b.len() - CDB).min(self.cdb.len());
        b[CDB..CDB + n].copy_from_slice(&self.cdb[..n]);
    }

    /// Decodes a header (for device models). Errors: [`BadHeader`] when shorter than the header plus 16
    /// bytes of CDB, or with a LUN field that is not target/flat LUN.
    pub fn parse(b: &[u8]) -> Result<Self, BadHeader> {
        use field::req::*;
        let bad = BadHeader { len: b.len() };
        if b.len() < CDB + crate::scsi::cdb::MAX_LEN {
            return Err(bad);
        }
        let mut lun = [0u8; 8];
        lun.copy_from_slice(&b[LUN]);
        let (target, lun) = parse_lun_field(lun).ok_or(bad)?;
        let mut cdb = [0u8; crate::scsi::cdb::MAX_LEN];
        let n = cdb.len();
        cdb.copy_from_slice(&b[CDB..CDB + n]);
        Ok(Self { target, lun, id: read_u64(b, ID), cdb })
    }
}

/// `virtio_scsi_resp_cmd.response` values (§5.6.6.1).
pub mod response {
    /// VIRTIO_SCSI_S_OK: the command completed; see the status.
    pub const OK: u8 = 0;
    /// VIRTIO_SCSI_S_OVERRUN.
    pub const OVERRUN: u8 = 1;
    /// VIRTIO_SCSI_S_ABORTED.
    pub const ABORTED: u8 = 2;
    /// VIRTIO_SCSI_S_BAD_TARGET: no such target.
    pub const BAD_TARGET: u8 = 3;
    /// VIRTIO_SCSI_S_RESET.
    pub const RESET: u8 = 4;
    /// VIRTIO_SCSI_S_BUSY.
    pub const BUSY: u8 = 5;
    /// VIRTIO_SCSI_S_TRANSPORT_FAILURE.
    pub const TRANSPORT_FAILURE: u8 = 6;
    /// VIRTIO_SCSI_S_TARGET_FAILURE.
    pub const TARGET_FAILURE: u8 = 7;
    /// VIRTIO_SCSI_S_NEXUS_FAILURE.
    pub const NEXUS_FAILURE: u8 = 8;
    /// VIRTIO_SCSI_S_FAILURE.
    pub const FAILURE: u8 = 9;

    /// The value's name, `None` for values the specification does not define.
    pub fn name(v: u8) -> Option<&'static str> {
        Some(match v {
            OK => "VIRTIO_SCSI_S_OK",
            OVERRUN => "VIRTIO_SCSI_S_OVERRUN",
            ABORTED => "VIRTIO_SCSI_S_ABORTED",
            BAD_TARGET => "VIRTIO_SCSI_S_BAD_TARGET",
            RESET => "VIRTIO_SCSI_S_RESET",
            BUSY => "VIRTIO_SCSI_S_BUSY",
            TRANSPORT_FAILURE => "VIRTIO_SCSI_S_TRANSPORT_FAILURE",
            TARGET_FAILURE => "VIRTIO_SCSI_S_TARGET_FAILURE",
            NEXUS_FAILURE => "VIRTIO_SCSI_S_NEXUS_FAILURE",
            FAILURE => "VIRTIO_SCSI_S_FAILURE",
            _ => return None,
        })
    }
}

/// The fixed fields of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespRepr {
    /// Bytes of sense data written.
    pub sense_len: u32,
    /// Bytes of the data buffer not transferred.
    pub residual: u32,
    /// Status qualifier.
    pub status_qualifier: u16,
    /// SCSI status.
    pub status: u8,
    /// Transport [`response`].
    pub response: u8,
}

impl RespRepr {
    /// Decodes the fixed fields. `None` when shorter than [`RESP_HEADER`].
    pub fn parse(b: &[u8]) -> Option<Self> {
        use field::resp::*;
        (b.len() >= RESP_HEADER).then(|| Self {
            sense_len: read_u32(b, SENSE_LEN),
            residual: read_u32(b, RESIDUAL),
            status_qualifier: read_u16(b, STATUS_QUALIFIER),
            status: read_u8(b, STATUS),
            response: read_u8(b, RESPONSE),
        })
    }

    /// Writes the fixed fields and `sense` after them (for device models); `b` holds them.
    pub fn emit(&self, b: &mut [u8], sense: &[u8]) {
        use field::resp::*;
        write_u32(b, SENSE_LEN, self.sense_len);
        write_u32(b, RESIDUAL, self.residual);
        write_u16(b, STATUS_QUALIFIER, self.status_qualifier);
        write_u8(b, STATUS, self.status);
        write_u8(b, RESPONSE, self.response);
        b[SENSE..SENSE + sense.len()].copy_from_slice(sense);
    }
}

/// `virtio_scsi_event.event` values (§5.6.6.3).
pub mod event {
    /// VIRTIO_SCSI_T_NO_EVENT.
    pub const NO_EVENT: u32 = 0;
    /// VIRTIO_SCSI_T_TRANSPORT_RESET: a LUN was added (reason RESCAN) or removed (REMOVED).
    pub const TRANSPORT_RESET: u32 = 1;
    /// VIRTIO_SCSI_T_ASYNC_NOTIFY.
    pub const ASYNC_NOTIFY: u32 = 2;
    /// VIRTIO_SCSI_T_PARAM_CHANGE: a LUN's parameters changed (reason: ASC | ASCQ << 8).
    pub const PARAM_CHANGE: u32 = 3;
    /// VIRTIO_SCSI_T_EVENTS_MISSED: set when the device dropped events for want of buffers.
    pub const EVENTS_MISSED: u32 = 0x8000_0000;
}

/// An event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRepr {
    /// Event type, with [`event::EVENTS_MISSED`] possibly set.
    pub event: u32,
    /// The LUN field.
    pub lun: [u8; 8],
    /// Reason.
    pub reason: u32,
}

impl EventRepr {
    /// Decodes an event. `None` when shorter than [`EVENT_LEN`].
    pub fn parse(b: &[u8]) -> Option<Self> {
        use field::event::*;
        (b.len() >= EVENT_LEN).then(|| {
            let mut lun = [0u8; 8];
            lun.copy_from_slice(&b[LUN]);
            Self { event: read_u32(b, EVENT), lun, reason: read_u32(b, REASON) }
        })
    }

    /// The bytes (for device models).
    pub fn to_bytes(&self) -> [u8; EVENT_LEN] {
        use field::event::*;
        let mut b = [0u8; EVENT_LEN];
        write_u32(&mut b, EVENT, self.event);
        b[LUN].copy_from_slice(&self.lun);
        write_u32(&mut b, REASON, self.reason);
        b
    }
}

impl fmt::Display for EventRepr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.event & !event::EVENTS_MISSED {
            event::NO_EVENT => "no event",
            event::TRANSPORT_RESET => match self.reason {
                0 => "transport reset (LUN added: rescan)",
                1 => "transport reset (LUN removed)",
                _ => "transport reset",
            },
            event::ASYNC_NOTIFY => "asynchronous notification",
            event::PARAM_CHANGE => "parameter change",
            _ => "unknown event",
        };
        write!(f, "{what} (event {:#x} reason {:#x})", self.event, self.reason)?;
        if let Some((t, l)) = parse_lun_field(self.lun) {
            write!(f, " at target {t} LUN {l}")?;
        }
        if self.event & event::EVENTS_MISSED != 0 {
            f.write_str(", events were missed")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scsi::Command;

    #[test]
    fn config_layout() {
        let c = ConfigRepr {
            num_queues: 1,
            seg_max: 126,
            max_sectors: 0xFFFF,
            cmd_per_lun: 128,
            event_info_size: 16,
            sense_size: 96,
            cdb_size: 32,
            max_channel: 0,
            max_target: 255,
            max_lun: 16383,
        };
        let b = c.to_bytes();
        assert_eq!(&b[20..28], &[96, 0, 0, 0, 32, 0, 0, 0]);
        assert_eq!(&b[30..36], &[255, 0, 0xff, 0x3f, 0, 0]);
        assert_eq!(ConfigRepr::parse(&b), Some(c));
        assert_eq!(ConfigRepr::parse(&b[..35]), None);
    }

    #[test]
    fn request_header_and_lun_field() {
        let mut cdb = [0u8; 16];
        Command::Read16 { lba: 5, blocks: 1, fua: false }.emit(&mut cdb);
        let r = ReqRepr { target: 2, lun: Lun::new(0x123).unwrap(), id: 0xabcd, cdb };
        let mut b = [0xeeu8; REQ_HEADER + 32];
        r.emit(&mut b);
        assert_eq!(&b[..8], &[1, 2, 0x41, 0x23, 0, 0, 0, 0]);
        assert_eq!(&b[8..10], &[0xcd, 0xab]);
        assert_eq!(b[19], 0x88);
        assert!(b[35..].iter().all(|&x| x == 0), "CDB padded with zeros");
        assert_eq!(ReqRepr::parse(&b), Ok(r));
        assert_eq!(ReqRepr::parse(&b[..34]), Err(BadHeader { len: 34 }));
        b[0] = 2;
        assert!(ReqRepr::parse(&b).is_err());
        assert_eq!(parse_lun_field([1, 0, 0x40, 7, 0, 0, 0, 0]), Some((0, Lun::new(7).unwrap())));
        assert_eq!(parse_lun_field([1, 0, 0, 7, 0, 0, 0, 1]), None);
    }

    #[test]
    fn response_and_event() {
        let r = RespRepr { sense_len: 18, residual: 512, status_qualifier: 0, status: 2, response: response::OK };
        let mut b = [0u8; RESP_HEADER + 96];
        r.emit(&mut b, &[0x70; 18]);
        assert_eq!(&b[..12], &[18, 0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 0]);
        assert_eq!(b[12], 0x70);
        assert_eq!(RespRepr::parse(&b), Some(r));
        assert_eq!(RespRepr::parse(&b[..11]), None);
        assert_eq!(response::name(3), Some("VIRTIO_SCSI_S_BAD_TARGET"));
        assert_eq!(response::name(42), None);
        let e = EventRepr {
            event: event::TRANSPORT_RESET | event::EVENTS_MISSED,
            lun: lun_field(0, Lun::new(1).unwrap()),
            reason: 1,
        };
        assert_eq!(EventRepr::parse(&e.to_bytes()), Some(e));
        assert_eq!(
            e.to_string(),
            "transport reset (LUN removed) (event 0x80000001 reason 0x1) at target 0 LUN 1, events were missed"
        );
    }
}
