//! Hyper-V Dynamic Memory protocol messages: an 8-byte `dm_header` (`type` u16, `size` u16 — the whole message in
//! bytes —, `trans_id` u32) followed by the type's fixed fields and, for balloon, unballoon and hot-remove, an
//! array of `dm_mem_page_range` (u64: start page in bits 39:0, page count in bits 63:40). All little-endian and
//! packed. [`Header`] is the checked view; [`DmMessage`] the owned form with [`DmMessage::parse`] and
//! [`DmMessage::emit`].
//! Source: Linux `drivers/hv/hv_balloon.c` (`enum dm_message_type`, `struct dm_*`), QEMU
//! `include/hw/hyperv/dynmem-proto.h`.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use libos::mem::balloon::PageRange;
use libos::wire::{read_u16, read_u32, read_u64, write_u16, write_u32, write_u64, Field};

/// `dm_header` length (bytes).
pub const HEADER_LEN: usize = 8;

/// `dm_message_type` values.
pub mod msgtype {
    /// DM_ERROR.
    pub const ERROR: u16 = 0;
    /// DM_VERSION_REQUEST (guest to host).
    pub const VERSION_REQUEST: u16 = 1;
    /// DM_VERSION_RESPONSE.
    pub const VERSION_RESPONSE: u16 = 2;
    /// DM_CAPABILITIES_REPORT (guest to host).
    pub const CAPABILITIES_REPORT: u16 = 3;
    /// DM_CAPABILITIES_RESPONSE.
    pub const CAPABILITIES_RESPONSE: u16 = 4;
    /// DM_STATUS_REPORT (guest to host, no response).
    pub const STATUS_REPORT: u16 = 5;
    /// DM_BALLOON_REQUEST (host to guest).
    pub const BALLOON_REQUEST: u16 = 6;
    /// DM_BALLOON_RESPONSE.
    pub const BALLOON_RESPONSE: u16 = 7;
    /// DM_UNBALLOON_REQUEST (host to guest).
    pub const UNBALLOON_REQUEST: u16 = 8;
    /// DM_UNBALLOON_RESPONSE.
    pub const UNBALLOON_RESPONSE: u16 = 9;
    /// DM_MEM_HOT_ADD_REQUEST (host to guest).
    pub const HOT_ADD_REQUEST: u16 = 10;
    /// DM_MEM_HOT_ADD_RESPONSE.
    pub const HOT_ADD_RESPONSE: u16 = 11;
    /// DM_INFO_MESSAGE (host to guest, version 1.0).
    pub const INFO_MESSAGE: u16 = 12;
    /// DM_MEM_HOT_REMOVE_REQUEST (host to guest, version 2.0).
    pub const HOT_REMOVE_REQUEST: u16 = 13;
    /// DM_MEM_HOT_REMOVE_RESPONSE.
    pub const HOT_REMOVE_RESPONSE: u16 = 14;
}

/// Protocol versions, `major << 16 | minor` (`DYNMEM_PROTOCOL_VERSION_*`).
pub mod version {
    /// 0.3, Windows 7 (`DYNMEM_PROTOCOL_VERSION_1`).
    pub const WIN7: u32 = 3;
    /// 1.0, Windows 8 (`DYNMEM_PROTOCOL_VERSION_2`).
    pub const WIN8: u32 = 1 << 16;
    /// 2.0, Windows 10 (`DYNMEM_PROTOCOL_VERSION_3`): hot-remove requests.
    pub const WIN10: u32 = 2 << 16;
    /// Versions offered, newest first; the host accepts or refuses each.
    pub const ALL: [u32; 3] = [WIN10, WIN8, WIN7];

    /// `major.minor` text of a version.
    pub fn display(v: u32) -> alloc::string::String {
        alloc::format!("{}.{}", v >> 16, v & 0xffff)
    }
}

/// `dm_caps` bits (the capabilities report).
pub mod caps {
    /// bit 0: the guest balloons.
    pub const BALLOON: u64 = 1;
    /// bit 1: the guest hot-adds memory.
    pub const HOT_ADD: u64 = 1 << 1;
    /// bits 5:2: hot-add alignment, 2^n MiB.
    pub const HOT_ADD_ALIGNMENT_SHIFT: u32 = 2;
    /// bit 6: the guest hot-removes memory (version 2.0).
    pub const HOT_REMOVE: u64 = 1 << 6;
}

/// Bits of the capabilities response (`dm_capabilities_resp_msg`).
pub mod caps_response {
    /// bit 0: the host accepts the capabilities; when clear the guest must stop the service.
    pub const ACCEPTED: u64 = 1;
    /// bit 1: the host supports hot-remove.
    pub const HOT_REMOVE: u64 = 1 << 1;
    /// bit 2: the host does not want status reports.
    pub const SUPPRESS_PRESSURE_REPORTS: u64 = 1 << 2;
}

/// Largest page count one `dm_mem_page_range` holds (24 bits).
pub const RANGE_MAX_PAGES: u64 = (1 << 24) - 1;
/// Largest start page one `dm_mem_page_range` holds (40 bits).
pub const RANGE_MAX_START: u64 = (1 << 40) - 1;

/// Packs a range into a `dm_mem_page_range`. Errors: start or count do not fit their bits.
pub fn pack_range(r: &PageRange) -> Option<u64> {
    (r.start <= RANGE_MAX_START && r.count <= RANGE_MAX_PAGES).then_some(r.start | (r.count << 40))
}

/// Unpacks a `dm_mem_page_range`.
pub fn unpack_range(v: u64) -> PageRange {
    PageRange { start: v & RANGE_MAX_START, count: v >> 40 }
}

mod field {
    use super::Field;
    pub const TYPE: Field = 0..2;
    pub const SIZE: Field = 2..4;
    pub const TRANS_ID: Field = 4..8;
    /// `dm_version_request.version`, `dm_balloon.num_pages`, `dm_hot_add_response.page_count`,
    /// `dm_unballoon_request` flags, `dm_hot_remove.virtual_node`, `dm_info_msg.reserved`.
    pub const W0: Field = 8..12;
    /// `dm_version_request` flags, `dm_balloon_response` flags and count, `dm_unballoon_request.range_count`,
    /// `dm_hot_add_response.result`, `dm_hot_remove.page_count`, `dm_info_msg.info_size`.
    pub const W1: Field = 12..16;
    /// The u64 after the header: `is_accepted` words, `dm_caps`, `dm_status.num_avail`, `dm_hot_add.range`.
    pub const Q0: Field = 8..16;
    pub const Q1: Field = 16..24;
    pub const Q2: Field = 24..32;
    pub const Q3: Field = 32..40;
    pub const STATUS_PAGE_FILE_WRITES: Field = 40..44;
    pub const STATUS_IO_DIFF: Field = 44..48;
    pub const HOT_REMOVE_QOS: Field = 16..20;
    /// Where the range arrays of balloon and unballoon messages start.
    pub const RANGES: usize = 16;
    /// Where the range array of a hot-remove response starts.
    pub const HOT_REMOVE_RANGES: usize = 24;
}

/// Why a Dynamic Memory message could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmWireError {
    /// Fewer bytes than the header or the type's fixed part: `len` bytes, `need` needed.
    Truncated {
        /// The message type (0 when even the header is missing).
        msgtype: u16,
        /// Bytes present.
        len: usize,
        /// Bytes the layout needs.
        need: usize,
    },
    /// The header's `size` says the message runs past the packet (or is shorter than the header).
    BadSize {
        /// The message type.
        msgtype: u16,
        /// The header's size.
        size: u16,
        /// Bytes in the packet.
        len: usize,
    },
    /// The range count runs past the message.
    RangesPastEnd {
        /// The message type.
        msgtype: u16,
        /// The count the message states.
        count: u32,
        /// How many fit its size.
        fit: usize,
    },
    /// A message type this guest does not know.
    UnknownType(u16),
}

impl fmt::Display for DmWireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { msgtype, len, need } => {
                write!(f, "dynamic memory message type {msgtype}: {len} bytes, its layout needs {need}")
            }
            Self::BadSize { msgtype, size, len } => write!(
                f,
                "dynamic memory message type {msgtype}: header size {size} does not fit the {len}-byte packet"
            ),
            Self::RangesPastEnd { msgtype, count, fit } => {
                write!(f, "dynamic memory message type {msgtype}: {count} page ranges stated, {fit} fit its size")
            }
            Self::UnknownType(t) => write!(f, "dynamic memory message type {t} is unknown"),
        }
    }
}

/// The fixed length of each message type (bytes; ranges come after it).
pub fn fixed_len(msgtype: u16) -> Option<usize> {
    use msgtype::*;
    Some(match msgtype {
        UNBALLOON_RESPONSE => HEADER_LEN,
        VERSION_REQUEST
        | VERSION_RESPONSE
        | CAPABILITIES_RESPONSE
        | BALLOON_REQUEST
        | BALLOON_RESPONSE
        | UNBALLOON_REQUEST
        | HOT_ADD_REQUEST
        | HOT_ADD_RESPONSE
        | INFO_MESSAGE => 16,
        HOT_REMOVE_REQUEST | HOT_REMOVE_RESPONSE => 24,
        CAPABILITIES_REPORT => 32,
        STATUS_REPORT => 48,
        ERROR => HEADER_LEN,
        _ => return None,
    })
}

/// A checked view of a Dynamic Memory message: [`Header::new_checked`] proves the header, a `size` inside the
/// buffer, and the type's fixed part are present; [`Header::message`] is the message cut to its `size`.
#[derive(Clone, Copy, Debug)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, DmWireError> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Checks the header is whole, `size` lies inside the buffer, and the type's fixed fields are inside `size`.
    /// Errors: [`DmWireError::Truncated`], [`DmWireError::BadSize`], [`DmWireError::UnknownType`].
    pub fn check_len(&self) -> Result<(), DmWireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DmWireError::Truncated { msgtype: 0, len, need: HEADER_LEN });
        }
        let (ty, size) = (self.msgtype(), self.size());
        if usize::from(size) > len || usize::from(size) < HEADER_LEN {
            return Err(DmWireError::BadSize { msgtype: ty, size, len });
        }
        let need = fixed_len(ty).ok_or(DmWireError::UnknownType(ty))?;
        if usize::from(size) < need {
            return Err(DmWireError::Truncated { msgtype: ty, len: usize::from(size), need });
        }
        Ok(())
    }

    /// `type`.
    pub fn msgtype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TYPE)
    }

    /// `size`: the whole message including the header (bytes).
    pub fn size(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SIZE)
    }

    /// `trans_id`.
    pub fn trans_id(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TRANS_ID)
    }

    /// The message's bytes: the buffer cut to `size` (the packet may carry padding after it).
    pub fn message(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.size())]
    }
}

/// A Dynamic Memory message, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmMessage {
    /// DM_ERROR.
    Error,
    /// DM_VERSION_REQUEST (`dm_version_request`).
    VersionRequest {
        /// The version asked for, `major << 16 | minor`.
        version: u32,
        /// `is_last_attempt`: the guest asks for no older version after this one.
        last_attempt: bool,
    },
    /// DM_VERSION_RESPONSE (`dm_version_response`).
    VersionResponse {
        /// `is_accepted`.
        accepted: bool,
    },
    /// DM_CAPABILITIES_REPORT (`dm_capabilities`).
    CapabilitiesReport {
        /// [`caps`] bits.
        caps: u64,
        /// `min_page_cnt`: the fewest pages the guest runs with.
        min_page_count: u64,
        /// `max_page_number`: the highest page frame number the guest can use (`u64::MAX`: any).
        max_page_number: u64,
    },
    /// DM_CAPABILITIES_RESPONSE (`dm_capabilities_resp_msg`).
    CapabilitiesResponse {
        /// [`caps_response`] bits.
        flags: u64,
    },
    /// DM_STATUS_REPORT (`dm_status`), in pages.
    StatusReport {
        /// `num_avail`: pages free.
        num_avail: u64,
        /// `num_committed`: pages in use (what the host sizes the guest by).
        num_committed: u64,
        /// `page_file_size`: pages of page files (0: none).
        page_file_size: u64,
        /// `zero_free`: zeroed free pages.
        zero_free: u64,
        /// `page_file_writes`: pages written to page files.
        page_file_writes: u32,
        /// `io_diff`: file cache faults minus page reads.
        io_diff: u32,
    },
    /// DM_BALLOON_REQUEST (`dm_balloon`): the host asks for pages.
    BalloonRequest {
        /// `num_pages`.
        num_pages: u32,
    },
    /// DM_BALLOON_RESPONSE (`dm_balloon_response`): pages the guest gives.
    BalloonResponse {
        /// `more_pages`: another response of the transaction follows.
        more_pages: bool,
        /// `range_array`.
        ranges: Vec<PageRange>,
    },
    /// DM_UNBALLOON_REQUEST (`dm_unballoon_request`): pages the host returns.
    UnballoonRequest {
        /// `more_pages`: another request of the transaction follows.
        more_pages: bool,
        /// `range_array`.
        ranges: Vec<PageRange>,
    },
    /// DM_UNBALLOON_RESPONSE: sent after the last unballoon request of a transaction.
    UnballoonResponse,
    /// DM_MEM_HOT_ADD_REQUEST (`dm_hot_add`, from some hosts with the region after it).
    HotAddRequest {
        /// The memory the host adds.
        range: PageRange,
        /// The region it lies in, when the host sends one.
        region: Option<PageRange>,
    },
    /// DM_MEM_HOT_ADD_RESPONSE (`dm_hot_add_response`).
    HotAddResponse {
        /// `page_count`: pages added.
        page_count: u32,
        /// `result`: 1 success (with 0 pages: a permanent refusal), 0 a transient failure.
        result: u32,
    },
    /// DM_INFO_MESSAGE (`dm_info_msg`, version 1.0).
    Info {
        /// The `info` blob.
        info: Vec<u8>,
    },
    /// DM_MEM_HOT_REMOVE_REQUEST (`dm_hot_remove`, version 2.0).
    HotRemoveRequest {
        /// `virtual_node`.
        virtual_node: u32,
        /// `page_count`: pages the host wants removed.
        page_count: u32,
        /// `qos_flags` (`DM_REMOVE_QOS_*`).
        qos_flags: u32,
    },
    /// DM_MEM_HOT_REMOVE_RESPONSE (`dm_hot_remove_response`).
    HotRemoveResponse {
        /// `result`: 1 success, 0 failure.
        result: u32,
        /// `more_pages`: another response follows.
        more_pages: bool,
        /// `range_array`: the pages removed.
        ranges: Vec<PageRange>,
    },
}

/// Reads `count` ranges from `at` in `b`, after checking they fit. Errors: [`DmWireError::RangesPastEnd`].
fn ranges_at(b: &[u8], msgtype: u16, at: usize, count: u32) -> Result<Vec<PageRange>, DmWireError> {
    let fit = b.len().saturating_sub(at) / 8;
    if count as usize > fit {
        return Err(DmWireError::RangesPastEnd { msgtype, count, fit });
    }
    Ok((0..count as usize).map(|i| unpack_range(read_u64(b, at + i * 8..at + i * 8 + 8))).collect())
}

impl DmMessage {
    /// Parses a checked message (cut to its `size`). Errors: ranges past the end of the message.
    pub fn parse<T: AsRef<[u8]>>(h: &Header<T>) -> Result<Self, DmWireError> {
        use msgtype::*;
        let b = h.message();
        let ty = h.msgtype();
        let w0 = || read_u32(b, field::W0);
        let w1 = || read_u32(b, field::W1);
        let q = |f: Field| read_u64(b, f);
        Ok(match ty {
            ERROR => Self::Error,
            VERSION_REQUEST => Self::VersionRequest { version: w0(), last_attempt: w1() & 1 != 0 },
            VERSION_RESPONSE => Self::VersionResponse { accepted: q(field::Q0) & 1 != 0 },
            CAPABILITIES_REPORT => Self::CapabilitiesReport {
                caps: q(field::Q0),
                min_page_count: q(field::Q1),
                max_page_number: q(field::Q2),
            },
            CAPABILITIES_RESPONSE => Self::CapabilitiesResponse { flags: q(field::Q0) },
            STATUS_REPORT => Self::StatusReport {
                num_avail: q(field::Q0),
                num_committed: q(field::Q1),
                page_file_size: q(field::Q2),
                zero_free: q(field::Q3),
                page_file_writes: read_u32(b, field::STATUS_PAGE_FILE_WRITES),
                io_diff: read_u32(b, field::STATUS_IO_DIFF),
            },
            BALLOON_REQUEST => Self::BalloonRequest { num_pages: w0() },
            BALLOON_RESPONSE => {
                Self::BalloonResponse { more_pages: w1() & 1 != 0, ranges: ranges_at(b, ty, field::RANGES, w1() >> 1)? }
            }
            UNBALLOON_REQUEST => {
                Self::UnballoonRequest { more_pages: w0() & 1 != 0, ranges: ranges_at(b, ty, field::RANGES, w1())? }
            }
            UNBALLOON_RESPONSE => Self::UnballoonResponse,
            HOT_ADD_REQUEST => Self::HotAddRequest {
                range: unpack_range(q(field::Q0)),
                region: (b.len() >= field::Q1.end).then(|| unpack_range(q(field::Q1))),
            },
            HOT_ADD_RESPONSE => Self::HotAddResponse { page_count: w0(), result: w1() },
            INFO_MESSAGE => {
                let size = w1() as usize;
                let avail = b.len() - field::RANGES;
                if size > avail {
                    return Err(DmWireError::RangesPastEnd { msgtype: ty, count: w1(), fit: avail });
                }
                Self::Info { info: b[field::RANGES..field::RANGES + size].to_vec() }
            }
            HOT_REMOVE_REQUEST => Self::HotRemoveRequest {
                virtual_node: w0(),
                page_count: w1(),
                qos_flags: read_u32(b, field::HOT_REMOVE_QOS),
            },
            HOT_REMOVE_RESPONSE => Self::HotRemoveResponse {
                result: w0(),
                more_pages: q(field::Q1) & 1 != 0,
                ranges: ranges_at(b, ty, field::HOT_REMOVE_RANGES, w1())?,
            },
            other => return Err(DmWireError::UnknownType(other)),
        })
    }

    /// The `dm_message_type`.
    pub fn msgtype(&self) -> u16 {
        use msgtype::*;
        match self {
            Self::Error => ERROR,
            Self::VersionRequest { .. } => VERSION_REQUEST,
            Self::VersionResponse { .. } => VERSION_RESPONSE,
            Self::CapabilitiesReport { .. } => CAPABILITIES_REPORT,
            Self::CapabilitiesResponse { .. } => CAPABILITIES_RESPONSE,
            Self::StatusReport { .. } => STATUS_REPORT,
            Self::BalloonRequest { .. } => BALLOON_REQUEST,
            Self::BalloonResponse { .. } => BALLOON_RESPONSE,
            Self::UnballoonRequest { .. } => UNBALLOON_REQUEST,
            Self::UnballoonResponse => UNBALLOON_RESPONSE,
            Self::HotAddRequest { .. } => HOT_ADD_REQUEST,
            Self::HotAddResponse { .. } => HOT_ADD_RESPONSE,
            Self::Info { .. } => INFO_MESSAGE,
            Self::HotRemoveRequest { .. } => HOT_REMOVE_REQUEST,
            Self::HotRemoveResponse { .. } => HOT_REMOVE_RESPONSE,
        }
    }

    /// Bytes of the encoded message (its `size`).
    pub fn buffer_len(&self) -> usize {
        let fixed = fixed_len(self.msgtype()).unwrap_or(HEADER_LEN);
        match self {
            Self::BalloonResponse { ranges, .. } | Self::UnballoonRequest { ranges, .. } => fixed + 8 * ranges.len(),
            Self::HotRemoveResponse { ranges, .. } => fixed + 8 * ranges.len(),
            Self::HotAddRequest { region: Some(_), .. } => fixed + 8,
            Self::Info { info } => fixed + info.len(),
            _ => fixed,
        }
    }

    /// Encodes the message with `trans_id`. `None` when it does not fit a DM message (`size` is a u16) or a
    /// range does not fit a `dm_mem_page_range`.
    pub fn emit(&self, trans_id: u32) -> Option<Vec<u8>> {
        let len = self.buffer_len();
        let size = u16::try_from(len).ok()?;
        let mut v = vec![0u8; len];
        let b = &mut v[..];
        write_u16(b, field::TYPE, self.msgtype());
        write_u16(b, field::SIZE, size);
        write_u32(b, field::TRANS_ID, trans_id);
        let put_ranges = |b: &mut [u8], at: usize, ranges: &[PageRange]| -> Option<()> {
            for (i, r) in ranges.iter().enumerate() {
                write_u64(b, at + i * 8..at + i * 8 + 8, pack_range(r)?);
            }
            Some(())
        };
        let count = |ranges: &[PageRange]| u32::try_from(ranges.len()).ok();
        match self {
            Self::Error | Self::UnballoonResponse => {}
            Self::VersionRequest { version, last_attempt } => {
                write_u32(b, field::W0, *version);
                write_u32(b, field::W1, u32::from(*last_attempt));
            }
            Self::VersionResponse { accepted } => write_u64(b, field::Q0, u64::from(*accepted)),
            Self::CapabilitiesReport { caps, min_page_count, max_page_number } => {
                write_u64(b, field::Q0, *caps);
                write_u64(b, field::Q1, *min_page_count);
                write_u64(b, field::Q2, *max_page_number);
            }
            Self::CapabilitiesResponse { flags } => write_u64(b, field::Q0, *flags),
            Self::StatusReport { num_avail, num_committed, page_file_size, zero_free, page_file_writes, io_diff } => {
                write_u64(b, field::Q0, *num_avail);
                write_u64(b, field::Q1, *num_committed);
                write_u64(b, field::Q2, *page_file_size);
                write_u64(b, field::Q3, *zero_free);
                write_u32(b, field::STATUS_PAGE_FILE_WRITES, *page_file_writes);
                write_u32(b, field::STATUS_IO_DIFF, *io_diff);
            }
            Self::BalloonRequest { num_pages } => write_u32(b, field::W0, *num_pages),
            Self::BalloonResponse { more_pages, ranges } => {
                let n = count(ranges).filter(|&n| n < 1 << 31)?;
                write_u32(b, field::W1, u32::from(*more_pages) | (n << 1));
                put_ranges(b, field::RANGES, ranges)?;
            }
            Self::UnballoonRequest { more_pages, ranges } => {
                write_u32(b, field::W0, u32::from(*more_pages));
                write_u32(b, field::W1, count(ranges)?);
                put_ranges(b, field::RANGES, ranges)?;
            }
            Self::HotAddRequest { range, region } => {
                write_u64(b, field::Q0, pack_range(range)?);
                if let Some(r) = region {
                    write_u64(b, field::Q1, pack_range(r)?);
                }
            }
            Self::HotAddResponse { page_count, result } => {
                write_u32(b, field::W0, *page_count);
                write_u32(b, field::W1, *result);
            }
            Self::Info { info } => {
                write_u32(b, field::W1, u32::try_from(info.len()).ok()?);
                b[field::RANGES..].copy_from_slice(info);
            }
            Self::HotRemoveRequest { virtual_node, page_count, qos_flags } => {
                write_u32(b, field::W0, *virtual_node);
                write_u32(b, field::W1, *page_count);
                write_u32(b, field::HOT_REMOVE_QOS, *qos_flags);
            }
            Self::HotRemoveResponse { result, more_pages, ranges } => {
                write_u32(b, field::W0, *result);
                write_u32(b, field::W1, count(ranges)?);
                write_u64(b, field::Q1, u64::from(*more_pages));
                put_ranges(b, field::HOT_REMOVE_RANGES, ranges)?;
            }
        }
        Some(v)
    }
}

/// Parses a message received in a VMBus packet payload (which may be padded past the message's `size`): the
/// transaction id and the message. Errors: [`DmWireError`].
pub fn decode(payload: &[u8]) -> Result<(u32, DmMessage), DmWireError> {
    let h = Header::new_checked(payload)?;
    Ok((h.trans_id(), DmMessage::parse(&h)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, count: u64) -> PageRange {
        PageRange { start, count }
    }

    #[test]
    fn layouts_match_the_linux_structs() {
        // dm_version_request for 2.0, not the last attempt: type 1, size 16.
        let b = DmMessage::VersionRequest { version: version::WIN10, last_attempt: false }.emit(7).unwrap();
        assert_eq!(b, [1, 0, 16, 0, 7, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0]);
        // dm_capabilities: caps at 8, min_page_cnt at 16, max_page_number at 24; 32 bytes.
        let b = DmMessage::CapabilitiesReport { caps: caps::BALLOON, min_page_count: 0x100, max_page_number: u64::MAX }
            .emit(1)
            .unwrap();
        assert_eq!((b.len(), b[8], b[17], &b[24..32]), (32, 1, 1, &[0xff; 8][..]));
        // dm_status: 48 bytes.
        let s = DmMessage::StatusReport {
            num_avail: 1,
            num_committed: 2,
            page_file_size: 0,
            zero_free: 0,
            page_file_writes: 0,
            io_diff: 0,
        };
        assert_eq!(s.emit(3).unwrap().len(), 48);
        // dm_balloon_response: more_pages bit 0 and range_count bits 31:1 of the word at 12, ranges from 16.
        let b = DmMessage::BalloonResponse { more_pages: true, ranges: vec![r(0x1234, 512), r(0x2000, 1)] }
            .emit(9)
            .unwrap();
        assert_eq!(&b[0..4], &[7, 0, 32, 0]);
        assert_eq!(read_u32(&b, 12..16), 1 | (2 << 1));
        assert_eq!(read_u64(&b, 16..24), 0x1234 | (512 << 40));
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            DmMessage::Error,
            DmMessage::VersionRequest { version: version::WIN8, last_attempt: true },
            DmMessage::VersionResponse { accepted: true },
            DmMessage::CapabilitiesReport { caps: caps::BALLOON | (7 << 2), min_page_count: 4096, max_page_number: 1 },
            DmMessage::CapabilitiesResponse {
                flags: caps_response::ACCEPTED | caps_response::SUPPRESS_PRESSURE_REPORTS,
            },
            DmMessage::StatusReport {
                num_avail: 10,
                num_committed: 20,
                page_file_size: 30,
                zero_free: 40,
                page_file_writes: 50,
                io_diff: 60,
            },
            DmMessage::BalloonRequest { num_pages: 8192 },
            DmMessage::BalloonResponse { more_pages: false, ranges: vec![] },
            DmMessage::BalloonResponse { more_pages: true, ranges: vec![r(1, 2), r(RANGE_MAX_START, RANGE_MAX_PAGES)] },
            DmMessage::UnballoonRequest { more_pages: true, ranges: vec![r(0x4000, 4096)] },
            DmMessage::UnballoonResponse,
            DmMessage::HotAddRequest { range: r(0x100000, 32768), region: None },
            DmMessage::HotAddRequest { range: r(0x100000, 32768), region: Some(r(0x100000, 65536)) },
            DmMessage::HotAddResponse { page_count: 0, result: 1 },
            DmMessage::Info { info: vec![0, 0, 0, 0, 8, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8] },
            DmMessage::HotRemoveRequest { virtual_node: 0, page_count: 512, qos_flags: 3 },
            DmMessage::HotRemoveResponse { result: 0, more_pages: false, ranges: vec![r(5, 5)] },
        ];
        for m in msgs {
            let b = m.emit(42).unwrap();
            assert_eq!(decode(&b), Ok((42, m.clone())), "{m:?}");
            // A padded packet (VMBus payloads are 8-byte multiples) parses the same.
            let mut padded = b.clone();
            padded.extend_from_slice(&[0xee; 7]);
            assert_eq!(decode(&padded), Ok((42, m.clone())), "{m:?} padded");
            assert_eq!(decode(&padded).unwrap().1.emit(42).unwrap(), b, "parse → emit reproduces the bytes");
        }
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(decode(&[1, 0, 16]), Err(DmWireError::Truncated { msgtype: 0, len: 3, need: 8 }));
        // size past the packet.
        let mut b = DmMessage::BalloonRequest { num_pages: 1 }.emit(1).unwrap();
        write_u16(&mut b, 2..4, 200);
        assert_eq!(decode(&b), Err(DmWireError::BadSize { msgtype: 6, size: 200, len: 16 }));
        // size below the header.
        write_u16(&mut b, 2..4, 4);
        assert_eq!(decode(&b), Err(DmWireError::BadSize { msgtype: 6, size: 4, len: 16 }));
        // size below the type's fixed part.
        write_u16(&mut b, 2..4, 12);
        assert_eq!(decode(&b), Err(DmWireError::Truncated { msgtype: 6, len: 12, need: 16 }));
        // Unknown type.
        let mut u = DmMessage::UnballoonResponse.emit(1).unwrap();
        write_u16(&mut u, 0..2, 99);
        assert_eq!(decode(&u), Err(DmWireError::UnknownType(99)));
        // A range count larger than the message holds.
        let mut ur = DmMessage::UnballoonRequest { more_pages: false, ranges: vec![r(1, 1)] }.emit(1).unwrap();
        write_u32(&mut ur, 12..16, 1_000_000);
        assert_eq!(
            decode(&ur),
            Err(DmWireError::RangesPastEnd { msgtype: msgtype::UNBALLOON_REQUEST, count: 1_000_000, fit: 1 })
        );
        let mut info = DmMessage::Info { info: vec![1, 2] }.emit(1).unwrap();
        write_u32(&mut info, 12..16, 100);
        assert!(matches!(decode(&info), Err(DmWireError::RangesPastEnd { .. })));
        // Ranges that do not fit the 40/24-bit fields are not encoded.
        assert_eq!(DmMessage::BalloonResponse { more_pages: false, ranges: vec![r(1 << 40, 1)] }.emit(1), None);
        assert_eq!(DmMessage::BalloonResponse { more_pages: false, ranges: vec![r(1, 1 << 24)] }.emit(1), None);
        assert_eq!(DmMessage::BalloonResponse { more_pages: false, ranges: vec![r(0, 1); 8190] }.emit(1), None);
    }
}
