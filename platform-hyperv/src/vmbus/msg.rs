//! VMBus channel management messages, carried as SynIC message payloads (at most 240 bytes) between the guest and
//! the host's VMBus server. Source: Linux `include/linux/hyperv.h` (`enum vmbus_channel_message_type`,
//! `struct vmbus_channel_*`, all `__packed`, little-endian) and `drivers/hv/channel_mgmt.c`.
//!
//! [`MessageView`] is a checked view over the bytes (the header and the type's fixed layout, field ranges in a
//! private `mod field` per message struct), [`ChannelMessage`] the owned form with [`ChannelMessage::parse`] and
//! [`ChannelMessage::emit`].
#![forbid(unsafe_code)]

use super::guid::Guid;
use super::{GpadlHandle, RelId};
use crate::hv::synic::{ConnectionId, MESSAGE_PAYLOAD_MAX};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use libos::wire::{read_u16, read_u32, read_u64, read_u8, write_u16, write_u32, write_u64, write_u8, Field};

/// SynIC message type of VMBus channel messages (`HVMSG_...` value 1, the `message_type` argument of
/// `hv_post_message` in Linux).
pub const VMBUS_MESSAGE_TYPE: u32 = 1;
/// Message connection id for hosts before VMBus 5.0 (`VMBUS_MESSAGE_CONNECTION_ID`).
pub const MESSAGE_CONNECTION_ID: ConnectionId = ConnectionId(1);
/// Message connection id of InitiateContact for VMBus ≥ 5.0 (`VMBUS_MESSAGE_CONNECTION_ID_4`); later messages use
/// the id from the version response.
pub const MESSAGE_CONNECTION_ID_4: ConnectionId = ConnectionId(4);
/// The SINT VMBus messages and channel events arrive on (`VMBUS_MESSAGE_SINT`).
pub const VMBUS_MESSAGE_SINT: u32 = 2;

/// `CHANNELMSG_*` message types.
pub mod msgtype {
    /// CHANNELMSG_OFFERCHANNEL.
    pub const OFFER_CHANNEL: u32 = 1;
    /// CHANNELMSG_RESCIND_CHANNELOFFER.
    pub const RESCIND_CHANNEL_OFFER: u32 = 2;
    /// CHANNELMSG_REQUESTOFFERS.
    pub const REQUEST_OFFERS: u32 = 3;
    /// CHANNELMSG_ALLOFFERS_DELIVERED.
    pub const ALL_OFFERS_DELIVERED: u32 = 4;
    /// CHANNELMSG_OPENCHANNEL.
    pub const OPEN_CHANNEL: u32 = 5;
    /// CHANNELMSG_OPENCHANNEL_RESULT.
    pub const OPEN_CHANNEL_RESULT: u32 = 6;
    /// CHANNELMSG_CLOSECHANNEL.
    pub const CLOSE_CHANNEL: u32 = 7;
    /// CHANNELMSG_GPADL_HEADER.
    pub const GPADL_HEADER: u32 = 8;
    /// CHANNELMSG_GPADL_BODY.
    pub const GPADL_BODY: u32 = 9;
    /// CHANNELMSG_GPADL_CREATED.
    pub const GPADL_CREATED: u32 = 10;
    /// CHANNELMSG_GPADL_TEARDOWN.
    pub const GPADL_TEARDOWN: u32 = 11;
    /// CHANNELMSG_GPADL_TORNDOWN.
    pub const GPADL_TORNDOWN: u32 = 12;
    /// CHANNELMSG_RELID_RELEASED.
    pub const RELID_RELEASED: u32 = 13;
    /// CHANNELMSG_INITIATE_CONTACT.
    pub const INITIATE_CONTACT: u32 = 14;
    /// CHANNELMSG_VERSION_RESPONSE.
    pub const VERSION_RESPONSE: u32 = 15;
    /// CHANNELMSG_UNLOAD.
    pub const UNLOAD: u32 = 16;
    /// CHANNELMSG_UNLOAD_RESPONSE.
    pub const UNLOAD_RESPONSE: u32 = 17;
}

/// VMBus protocol versions, `major << 16 | minor` (`VERSION_*` in `hyperv.h`).
pub mod version {
    /// 2.4, Windows 8 / Server 2012 (`VERSION_WIN8`): the oldest version driven here.
    pub const WIN8: u32 = 2 << 16 | 4;
    /// 3.0, Windows 8.1 / Server 2012 R2.
    pub const WIN8_1: u32 = 3 << 16;
    /// 4.0, Windows 10.
    pub const WIN10: u32 = 4 << 16;
    /// 4.1, Windows 10 RS3.
    pub const WIN10_V4_1: u32 = 4 << 16 | 1;
    /// 5.0: message connection id from the version response, SINT in InitiateContact.
    pub const WIN10_V5: u32 = 5 << 16;
    /// 5.1, Windows 10 RS4.
    pub const WIN10_V5_1: u32 = 5 << 16 | 1;
    /// 5.2, Windows Server 2019.
    pub const WIN10_V5_2: u32 = 5 << 16 | 2;
    /// 5.3, Windows Server 2022.
    pub const WIN10_V5_3: u32 = 5 << 16 | 3;
    /// 6.0 ("Copper").
    pub const WIN_COPPER: u32 = 6 << 16;
    /// Versions offered in InitiateContact, newest first; the host accepts only an exact match.
    pub const ALL: [u32; 9] =
        [WIN_COPPER, WIN10_V5_3, WIN10_V5_2, WIN10_V5_1, WIN10_V5, WIN10_V4_1, WIN10, WIN8_1, WIN8];

    /// `major.minor` text of a version.
    pub fn display(v: u32) -> alloc::string::String {
        alloc::format!("{}.{}", v >> 16, v & 0xffff)
    }
}

mod field {
    use super::Field;
    use core::ops::RangeFrom;

    /// `vmbus_channel_message_header.msgtype` (the u32 after it is padding).
    pub const MSGTYPE: Field = 0..4;
    /// `child_relid` of the messages that name only a channel (rescind, close, relid released).
    pub const CHILD_RELID: Field = 8..12;

    /// `vmbus_channel_offer_channel` (with the embedded `vmbus_channel_offer`).
    pub mod offer {
        use super::Field;
        pub const IF_TYPE: Field = 8..24;
        pub const IF_INSTANCE: Field = 24..40;
        pub const CHN_FLAGS: Field = 56..58;
        pub const MMIO_MEGABYTES: Field = 58..60;
        pub const USER_DEF: Field = 60..180;
        pub const SUB_CHANNEL_INDEX: Field = 180..182;
        pub const CHILD_RELID: Field = 184..188;
        pub const MONITOR_ID: Field = 188..189;
        /// Bit 0: `monitor_allocated`.
        pub const MONITOR_ALLOCATED: Field = 189..190;
        /// Bit 0: `is_dedicated_interrupt`.
        pub const DEDICATED_INTERRUPT: Field = 190..192;
        pub const CONNECTION_ID: Field = 192..196;
    }

    /// `vmbus_channel_open_channel`.
    pub mod open {
        use super::Field;
        pub const CHILD_RELID: Field = 8..12;
        pub const OPENID: Field = 12..16;
        pub const RING_GPADL: Field = 16..20;
        pub const TARGET_VP: Field = 20..24;
        pub const DOWNSTREAM_PAGE_OFFSET: Field = 24..28;
        pub const USER_DATA: Field = 28..148;
    }

    /// `vmbus_channel_open_result`.
    pub mod open_result {
        use super::Field;
        pub const CHILD_RELID: Field = 8..12;
        pub const OPENID: Field = 12..16;
        pub const STATUS: Field = 16..20;
    }

    /// `vmbus_channel_gpadl_header` with one `gpa_range`.
    pub mod gpadl_header {
        use super::{Field, RangeFrom};
        pub const CHILD_RELID: Field = 8..12;
        pub const GPADL: Field = 12..16;
        pub const RANGE_BUFLEN: Field = 16..18;
        pub const RANGE_COUNT: Field = 18..20;
        pub const BYTE_COUNT: Field = 20..24;
        pub const BYTE_OFFSET: Field = 24..28;
        pub const PFNS: RangeFrom<usize> = 28..;
    }

    /// `vmbus_channel_gpadl_body`.
    pub mod gpadl_body {
        use super::{Field, RangeFrom};
        pub const MSGNUMBER: Field = 8..12;
        pub const GPADL: Field = 12..16;
        pub const PFNS: RangeFrom<usize> = 16..;
    }

    /// `vmbus_channel_gpadl_created` (and the teardown request's first two fields).
    pub mod gpadl_created {
        use super::Field;
        pub const CHILD_RELID: Field = 8..12;
        pub const GPADL: Field = 12..16;
        pub const STATUS: Field = 16..20;
    }

    /// `vmbus_channel_gpadl_torndown`.
    pub mod gpadl_torndown {
        use super::Field;
        pub const GPADL: Field = 8..12;
    }

    /// `vmbus_channel_initiate_contact`.
    pub mod initiate_contact {
        use super::Field;
        pub const VERSION: Field = 8..12;
        pub const TARGET_VCPU: Field = 12..16;
        pub const INTERRUPT_PAGE_OR_SINT: Field = 16..24;
        pub const MONITOR_PAGE1: Field = 24..32;
        pub const MONITOR_PAGE2: Field = 32..40;
    }

    /// `vmbus_channel_version_response` (the pre-5.0 `vmbus_channel_version_supported` ends after byte 8).
    pub mod version_response {
        use super::Field;
        pub const VERSION_SUPPORTED: Field = 8..9;
        pub const CONNECTION_STATE: Field = 9..10;
        pub const MSG_CONN_ID: Field = 12..16;
    }
}

/// Size of `vmbus_channel_message_header` (bytes): `msgtype` u32 and padding u32.
pub const HEADER_LEN: usize = 8;
/// Size of `vmbus_channel_offer_channel` (bytes).
pub const OFFER_LEN: usize = field::offer::CONNECTION_ID.end;
/// Size of `vmbus_channel_open_channel` (bytes).
pub const OPEN_CHANNEL_LEN: usize = field::open::USER_DATA.end;
/// User-defined bytes in an offer and in OpenChannel (`MAX_USER_DEFINED_BYTES`).
pub const USER_DEFINED_LEN: usize = 120;
/// Size of `vmbus_channel_initiate_contact` (bytes).
pub const INITIATE_CONTACT_LEN: usize = field::initiate_contact::MONITOR_PAGE2.end;
/// Size of `vmbus_channel_version_response` (bytes).
pub const VERSION_RESPONSE_LEN: usize = field::version_response::MSG_CONN_ID.end;
/// Fixed part of `vmbus_channel_gpadl_header` plus one `gpa_range` header (bytes).
pub const GPADL_HEADER_FIXED: usize = field::gpadl_header::PFNS.start;
/// Fixed part of `vmbus_channel_gpadl_body` (bytes).
pub const GPADL_BODY_FIXED: usize = field::gpadl_body::PFNS.start;
/// PFNs that fit a GpadlHeader message: (240 − 28) / 8.
pub const GPADL_HEADER_PFNS: usize = (MESSAGE_PAYLOAD_MAX - GPADL_HEADER_FIXED) / 8;
/// PFNs that fit a GpadlBody message: (240 − 16) / 8.
pub const GPADL_BODY_PFNS: usize = (MESSAGE_PAYLOAD_MAX - GPADL_BODY_FIXED) / 8;

/// Why a channel message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgError {
    /// Shorter than its type's fixed layout.
    Truncated {
        /// `msgtype` of the message (`CHANNELMSG_*`).
        msgtype: u32,
        /// Bytes available.
        len: usize,
        /// Bytes its layout needs.
        need: usize,
    },
    /// A message type this guest does not know (or a guest-to-host type arriving at the guest).
    UnknownType(u32),
    /// A field holds an impossible value.
    BadField {
        /// `msgtype` of the message (`CHANNELMSG_*`).
        msgtype: u32,
        /// The field, e.g. "rangecount".
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

impl fmt::Display for MsgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { msgtype, len, need } => {
                write!(f, "vmbus message type {msgtype}: {len} bytes, its layout needs {need}")
            }
            Self::UnknownType(t) => write!(f, "vmbus message type {t} is unknown"),
            Self::BadField { msgtype, field, value } => {
                write!(f, "vmbus message type {msgtype}: bad {field} {value:#x}")
            }
        }
    }
}

/// Minimum length (bytes) of each message type.
pub fn min_len(msgtype: u32) -> Option<usize> {
    use msgtype::*;
    Some(match msgtype {
        OFFER_CHANNEL => OFFER_LEN,
        RESCIND_CHANNEL_OFFER | CLOSE_CHANNEL | RELID_RELEASED => field::CHILD_RELID.end,
        GPADL_TORNDOWN => field::gpadl_torndown::GPADL.end,
        REQUEST_OFFERS | ALL_OFFERS_DELIVERED | UNLOAD | UNLOAD_RESPONSE => HEADER_LEN,
        OPEN_CHANNEL => OPEN_CHANNEL_LEN,
        OPEN_CHANNEL_RESULT => field::open_result::STATUS.end,
        GPADL_CREATED => field::gpadl_created::STATUS.end,
        GPADL_HEADER => GPADL_HEADER_FIXED,
        GPADL_BODY => GPADL_BODY_FIXED,
        GPADL_TEARDOWN => field::gpadl_created::GPADL.end,
        INITIATE_CONTACT => INITIATE_CONTACT_LEN,
        // Hosts before 5.0 may send the short `vmbus_channel_version_supported` (9 bytes).
        VERSION_RESPONSE => field::version_response::VERSION_SUPPORTED.end,
        _ => return None,
    })
}

/// A checked view of a channel message: [`MessageView::new_checked`] proves the header and the type's fixed part
/// are present, so no field of that type's layout lies past the buffer.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MessageView<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len). Errors: [`MsgError::Truncated`],
    /// [`MsgError::UnknownType`].
    pub fn new_checked(buffer: T) -> Result<Self, MsgError> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// Checks that the header and the fixed layout of the message's type are present. Errors:
    /// [`MsgError::Truncated`], [`MsgError::UnknownType`].
    pub fn check_len(&self) -> Result<(), MsgError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(MsgError::Truncated { msgtype: 0, len, need: HEADER_LEN });
        }
        let ty = self.msgtype();
        let need = min_len(ty).ok_or(MsgError::UnknownType(ty))?;
        if len < need {
            return Err(MsgError::Truncated { msgtype: ty, len, need });
        }
        Ok(())
    }

    /// `msgtype`.
    pub fn msgtype(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MSGTYPE)
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A channel offer (`vmbus_channel_offer_channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Device class (`if_type`).
    pub if_type: Guid,
    /// Device instance (`if_instance`).
    pub if_instance: Guid,
    /// Server flags (`chn_flags`).
    pub chn_flags: u16,
    /// MMIO space the device wants (MiB).
    pub mmio_megabytes: u16,
    /// Device-specific user data (`u.std.user_def`).
    pub user_def: [u8; USER_DEFINED_LEN],
    /// 0 for a primary channel, else the sub-channel index.
    pub sub_channel_index: u16,
    /// The channel's relative id (`child_relid`): names it in later messages and is its event flag number.
    pub child_relid: RelId,
    /// Monitor id for monitored notification.
    pub monitor_id: u8,
    /// `monitor_allocated` bit.
    pub monitor_allocated: bool,
    /// `is_dedicated_interrupt` bit: when set the guest must not set the relid bit in the interrupt page.
    pub dedicated_interrupt: bool,
    /// Connection id for HvSignalEvent to the host.
    pub connection_id: ConnectionId,
}

/// InitiateContact (`vmbus_channel_initiate_contact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitiateContact {
    /// Requested protocol version.
    pub version: u32,
    /// VP index the host should send messages to.
    pub target_vcpu: u32,
    /// Before 5.0: the interrupt page's GPA. From 5.0: byte 0 = message SINT, byte 1 = VTL (the union in
    /// `hyperv.h`).
    pub interrupt_page_or_sint: u64,
    /// Monitor page 1 GPA (host to guest).
    pub monitor_page1: u64,
    /// Monitor page 2 GPA (guest to host).
    pub monitor_page2: u64,
}

/// The first message of a GPADL (`vmbus_channel_gpadl_header`) with one `gpa_range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpadlHeader {
    /// Channel the GPADL belongs to.
    pub child_relid: RelId,
    /// Guest-chosen GPADL handle.
    pub gpadl: GpadlHandle,
    /// `range_buflen`: bytes of all ranges (8 + 8 × total PFNs for one range).
    pub range_buflen: u16,
    /// `rangecount` (1 here).
    pub range_count: u16,
    /// Range length (bytes).
    pub byte_count: u32,
    /// Offset of the data in the first page (bytes).
    pub byte_offset: u32,
    /// The PFNs carried in this message (the rest follow in GpadlBody messages).
    pub pfns: Vec<u64>,
}

/// A continuation of a GPADL's PFN list (`vmbus_channel_gpadl_body`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpadlBody {
    /// `msgnumber` (Linux leaves it 0).
    pub msgnumber: u32,
    /// GPADL handle.
    pub gpadl: GpadlHandle,
    /// PFNs.
    pub pfns: Vec<u64>,
}

/// OpenChannel (`vmbus_channel_open_channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenChannel {
    /// Channel.
    pub child_relid: RelId,
    /// Guest-chosen id echoed in the result.
    pub open_id: u32,
    /// GPADL of both ring buffers.
    pub ring_gpadl: GpadlHandle,
    /// VP for host-to-guest interrupts.
    pub target_vp: u32,
    /// Page offset of the host-to-guest (downstream) ring in the GPADL.
    pub downstream_page_offset: u32,
    /// User data for the device (zero for netvsc and storvsc).
    pub user_data: [u8; USER_DEFINED_LEN],
}

/// A parsed channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    /// CHANNELMSG_OFFERCHANNEL.
    OfferChannel(Offer),
    /// CHANNELMSG_RESCIND_CHANNELOFFER.
    RescindOffer {
        /// `child_relid` of the rescinded channel.
        child_relid: RelId,
    },
    /// CHANNELMSG_REQUESTOFFERS.
    RequestOffers,
    /// CHANNELMSG_ALLOFFERS_DELIVERED.
    AllOffersDelivered,
    /// CHANNELMSG_OPENCHANNEL.
    OpenChannel(OpenChannel),
    /// CHANNELMSG_OPENCHANNEL_RESULT (status 0 = success).
    OpenResult {
        /// `child_relid` of the channel.
        child_relid: RelId,
        /// `openid`, echoed from CHANNELMSG_OPENCHANNEL.
        open_id: u32,
        /// `status` (0 = success).
        status: u32,
    },
    /// CHANNELMSG_CLOSECHANNEL.
    CloseChannel {
        /// `child_relid` of the channel.
        child_relid: RelId,
    },
    /// CHANNELMSG_GPADL_HEADER.
    GpadlHeader(GpadlHeader),
    /// CHANNELMSG_GPADL_BODY.
    GpadlBody(GpadlBody),
    /// CHANNELMSG_GPADL_CREATED (status 0 = success).
    GpadlCreated {
        /// `child_relid` of the channel.
        child_relid: RelId,
        /// `gpadl`: the handle the guest chose.
        gpadl: GpadlHandle,
        /// `creation_status` (0 = success).
        status: u32,
    },
    /// CHANNELMSG_GPADL_TEARDOWN.
    GpadlTeardown {
        /// `child_relid` of the channel.
        child_relid: RelId,
        /// `gpadl`: the handle to tear down.
        gpadl: GpadlHandle,
    },
    /// CHANNELMSG_GPADL_TORNDOWN.
    GpadlTorndown {
        /// `gpadl`: the handle torn down.
        gpadl: GpadlHandle,
    },
    /// CHANNELMSG_RELID_RELEASED.
    RelidReleased {
        /// `child_relid` the host released.
        child_relid: RelId,
    },
    /// CHANNELMSG_INITIATE_CONTACT.
    InitiateContact(InitiateContact),
    /// CHANNELMSG_VERSION_RESPONSE: `msg_conn_id` is 0 when the host sent the short pre-5.0 form.
    VersionResponse {
        /// `version_supported`: the host accepts the version of CHANNELMSG_INITIATE_CONTACT.
        version_supported: bool,
        /// `connection_state` (0 on success).
        connection_state: u8,
        /// `msg_conn_id`: the connection id for later messages (VMBus ≥ 5.0).
        msg_conn_id: ConnectionId,
    },
    /// CHANNELMSG_UNLOAD.
    Unload,
    /// CHANNELMSG_UNLOAD_RESPONSE.
    UnloadResponse,
}

/// The `N` bytes of `f` in `b` as an array (`f` is `N` long and inside `b`, proven by the view's check).
fn array<const N: usize>(b: &[u8], f: Field) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[f]);
    out
}

/// The little-endian u64s of `b` from `at` on (whole words only).
fn pfns_from(b: &[u8], at: usize) -> Vec<u64> {
    b[at..].chunks_exact(8).map(|c| read_u64(c, 0..8)).collect()
}

impl ChannelMessage {
    /// Parses `bytes`. Errors: [`MsgError`] for short, unknown or inconsistent messages.
    pub fn parse(bytes: &[u8]) -> Result<Self, MsgError> {
        use msgtype::*;
        let v = MessageView::new_checked(bytes)?;
        let b = v.as_bytes();
        let ty = v.msgtype();
        let relid = |f: Field| RelId(read_u32(b, f));
        let gpadl = |f: Field| GpadlHandle(read_u32(b, f));
        Ok(match ty {
            OFFER_CHANNEL => {
                use field::offer::*;
                Self::OfferChannel(Offer {
                    if_type: Guid(array(b, IF_TYPE)),
                    if_instance: Guid(array(b, IF_INSTANCE)),
                    chn_flags: read_u16(b, CHN_FLAGS),
                    mmio_megabytes: read_u16(b, MMIO_MEGABYTES),
                    user_def: array(b, USER_DEF),
                    sub_channel_index: read_u16(b, SUB_CHANNEL_INDEX),
                    child_relid: relid(CHILD_RELID),
                    monitor_id: read_u8(b, MONITOR_ID),
                    monitor_allocated: read_u8(b, MONITOR_ALLOCATED) & 1 != 0,
                    dedicated_interrupt: read_u16(b, DEDICATED_INTERRUPT) & 1 != 0,
                    connection_id: ConnectionId(read_u32(b, CONNECTION_ID)),
                })
            }
            RESCIND_CHANNEL_OFFER => Self::RescindOffer { child_relid: relid(field::CHILD_RELID) },
            REQUEST_OFFERS => Self::RequestOffers,
            ALL_OFFERS_DELIVERED => Self::AllOffersDelivered,
            OPEN_CHANNEL => {
                use field::open::*;
                Self::OpenChannel(OpenChannel {
                    child_relid: relid(CHILD_RELID),
                    open_id: read_u32(b, OPENID),
                    ring_gpadl: gpadl(RING_GPADL),
                    target_vp: read_u32(b, TARGET_VP),
                    downstream_page_offset: read_u32(b, DOWNSTREAM_PAGE_OFFSET),
                    user_data: array(b, USER_DATA),
                })
            }
            OPEN_CHANNEL_RESULT => {
                use field::open_result::*;
                Self::OpenResult {
                    child_relid: relid(CHILD_RELID),
                    open_id: read_u32(b, OPENID),
                    status: read_u32(b, STATUS),
                }
            }
            CLOSE_CHANNEL => Self::CloseChannel { child_relid: relid(field::CHILD_RELID) },
            GPADL_HEADER => {
                use field::gpadl_header::*;
                let range_count = read_u16(b, RANGE_COUNT);
                if range_count != 1 {
                    return Err(MsgError::BadField { msgtype: ty, field: "rangecount", value: range_count.into() });
                }
                Self::GpadlHeader(GpadlHeader {
                    child_relid: relid(CHILD_RELID),
                    gpadl: gpadl(GPADL),
                    range_buflen: read_u16(b, RANGE_BUFLEN),
                    range_count,
                    byte_count: read_u32(b, BYTE_COUNT),
                    byte_offset: read_u32(b, BYTE_OFFSET),
                    pfns: pfns_from(b, PFNS.start),
                })
            }
            GPADL_BODY => {
                use field::gpadl_body::*;
                Self::GpadlBody(GpadlBody {
                    msgnumber: read_u32(b, MSGNUMBER),
                    gpadl: gpadl(GPADL),
                    pfns: pfns_from(b, PFNS.start),
                })
            }
            GPADL_CREATED => {
                use field::gpadl_created::*;
                Self::GpadlCreated { child_relid: relid(CHILD_RELID), gpadl: gpadl(GPADL), status: read_u32(b, STATUS) }
            }
            GPADL_TEARDOWN => {
                use field::gpadl_created::*;
                Self::GpadlTeardown { child_relid: relid(CHILD_RELID), gpadl: gpadl(GPADL) }
            }
            GPADL_TORNDOWN => Self::GpadlTorndown { gpadl: gpadl(field::gpadl_torndown::GPADL) },
            RELID_RELEASED => Self::RelidReleased { child_relid: relid(field::CHILD_RELID) },
            INITIATE_CONTACT => {
                use field::initiate_contact::*;
                Self::InitiateContact(InitiateContact {
                    version: read_u32(b, VERSION),
                    target_vcpu: read_u32(b, TARGET_VCPU),
                    interrupt_page_or_sint: read_u64(b, INTERRUPT_PAGE_OR_SINT),
                    monitor_page1: read_u64(b, MONITOR_PAGE1),
                    monitor_page2: read_u64(b, MONITOR_PAGE2),
                })
            }
            VERSION_RESPONSE => {
                use field::version_response::*;
                let has = |f: &Field| b.len() >= f.end;
                Self::VersionResponse {
                    version_supported: read_u8(b, VERSION_SUPPORTED) != 0,
                    connection_state: if has(&CONNECTION_STATE) { read_u8(b, CONNECTION_STATE) } else { 0 },
                    msg_conn_id: ConnectionId(if has(&MSG_CONN_ID) { read_u32(b, MSG_CONN_ID) } else { 0 }),
                }
            }
            UNLOAD => Self::Unload,
            UNLOAD_RESPONSE => Self::UnloadResponse,
            other => return Err(MsgError::UnknownType(other)),
        })
    }

    /// The `CHANNELMSG_*` type.
    pub fn msgtype(&self) -> u32 {
        use msgtype::*;
        match self {
            Self::OfferChannel(_) => OFFER_CHANNEL,
            Self::RescindOffer { .. } => RESCIND_CHANNEL_OFFER,
            Self::RequestOffers => REQUEST_OFFERS,
            Self::AllOffersDelivered => ALL_OFFERS_DELIVERED,
            Self::OpenChannel(_) => OPEN_CHANNEL,
            Self::OpenResult { .. } => OPEN_CHANNEL_RESULT,
            Self::CloseChannel { .. } => CLOSE_CHANNEL,
            Self::GpadlHeader(_) => GPADL_HEADER,
            Self::GpadlBody(_) => GPADL_BODY,
            Self::GpadlCreated { .. } => GPADL_CREATED,
            Self::GpadlTeardown { .. } => GPADL_TEARDOWN,
            Self::GpadlTorndown { .. } => GPADL_TORNDOWN,
            Self::RelidReleased { .. } => RELID_RELEASED,
            Self::InitiateContact(_) => INITIATE_CONTACT,
            Self::VersionResponse { .. } => VERSION_RESPONSE,
            Self::Unload => UNLOAD,
            Self::UnloadResponse => UNLOAD_RESPONSE,
        }
    }

    /// Bytes of the encoded message: the type's fixed layout (the full 16-byte version response) plus the PFNs of
    /// GPADL messages.
    pub fn buffer_len(&self) -> usize {
        match self {
            Self::GpadlHeader(h) => GPADL_HEADER_FIXED + 8 * h.pfns.len(),
            Self::GpadlBody(body) => GPADL_BODY_FIXED + 8 * body.pfns.len(),
            Self::VersionResponse { .. } => VERSION_RESPONSE_LEN,
            // Every other type's fixed layout is its minimum length.
            m => min_len(m.msgtype()).unwrap_or(HEADER_LEN),
        }
    }

    /// Encodes the message in its exact `__packed` layout ([`ChannelMessage::buffer_len`] bytes; at most 240 for
    /// GPADL messages built by [`gpadl_messages`]).
    pub fn emit(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.buffer_len()];
        let b = &mut v[..];
        write_u32(b, field::MSGTYPE, self.msgtype());
        let put_pfns = |b: &mut [u8], at: usize, pfns: &[u64]| {
            for (i, p) in pfns.iter().enumerate() {
                write_u64(b, at + i * 8..at + i * 8 + 8, *p);
            }
        };
        match self {
            Self::OfferChannel(o) => {
                use field::offer::*;
                b[IF_TYPE].copy_from_slice(&o.if_type.0);
                b[IF_INSTANCE].copy_from_slice(&o.if_instance.0);
                write_u16(b, CHN_FLAGS, o.chn_flags);
                write_u16(b, MMIO_MEGABYTES, o.mmio_megabytes);
                b[USER_DEF].copy_from_slice(&o.user_def);
                write_u16(b, SUB_CHANNEL_INDEX, o.sub_channel_index);
                write_u32(b, CHILD_RELID, o.child_relid.0);
                write_u8(b, MONITOR_ID, o.monitor_id);
                write_u8(b, MONITOR_ALLOCATED, u8::from(o.monitor_allocated));
                write_u16(b, DEDICATED_INTERRUPT, u16::from(o.dedicated_interrupt));
                write_u32(b, CONNECTION_ID, o.connection_id.0);
            }
            Self::RescindOffer { child_relid }
            | Self::CloseChannel { child_relid }
            | Self::RelidReleased { child_relid } => write_u32(b, field::CHILD_RELID, child_relid.0),
            Self::RequestOffers | Self::AllOffersDelivered | Self::Unload | Self::UnloadResponse => {}
            Self::OpenChannel(o) => {
                use field::open::*;
                write_u32(b, CHILD_RELID, o.child_relid.0);
                write_u32(b, OPENID, o.open_id);
                write_u32(b, RING_GPADL, o.ring_gpadl.0);
                write_u32(b, TARGET_VP, o.target_vp);
                write_u32(b, DOWNSTREAM_PAGE_OFFSET, o.downstream_page_offset);
                b[USER_DATA].copy_from_slice(&o.user_data);
            }
            Self::OpenResult { child_relid, open_id, status } => {
                use field::open_result::*;
                write_u32(b, CHILD_RELID, child_relid.0);
                write_u32(b, OPENID, *open_id);
                write_u32(b, STATUS, *status);
            }
            Self::GpadlHeader(h) => {
                use field::gpadl_header::*;
                write_u32(b, CHILD_RELID, h.child_relid.0);
                write_u32(b, GPADL, h.gpadl.0);
                write_u16(b, RANGE_BUFLEN, h.range_buflen);
                write_u16(b, RANGE_COUNT, h.range_count);
                write_u32(b, BYTE_COUNT, h.byte_count);
                write_u32(b, BYTE_OFFSET, h.byte_offset);
                put_pfns(b, PFNS.start, &h.pfns);
            }
            Self::GpadlBody(body) => {
                use field::gpadl_body::*;
                write_u32(b, MSGNUMBER, body.msgnumber);
                write_u32(b, GPADL, body.gpadl.0);
                put_pfns(b, PFNS.start, &body.pfns);
            }
            Self::GpadlCreated { child_relid, gpadl, status } => {
                use field::gpadl_created::*;
                write_u32(b, CHILD_RELID, child_relid.0);
                write_u32(b, GPADL, gpadl.0);
                write_u32(b, STATUS, *status);
            }
            Self::GpadlTeardown { child_relid, gpadl } => {
                use field::gpadl_created::*;
                write_u32(b, CHILD_RELID, child_relid.0);
                write_u32(b, GPADL, gpadl.0);
            }
            Self::GpadlTorndown { gpadl } => write_u32(b, field::gpadl_torndown::GPADL, gpadl.0),
            Self::InitiateContact(c) => {
                use field::initiate_contact::*;
                write_u32(b, VERSION, c.version);
                write_u32(b, TARGET_VCPU, c.target_vcpu);
                write_u64(b, INTERRUPT_PAGE_OR_SINT, c.interrupt_page_or_sint);
                write_u64(b, MONITOR_PAGE1, c.monitor_page1);
                write_u64(b, MONITOR_PAGE2, c.monitor_page2);
            }
            Self::VersionResponse { version_supported, connection_state, msg_conn_id } => {
                use field::version_response::*;
                write_u8(b, VERSION_SUPPORTED, u8::from(*version_supported));
                write_u8(b, CONNECTION_STATE, *connection_state);
                write_u32(b, MSG_CONN_ID, msg_conn_id.0);
            }
        }
        v
    }
}

/// The messages that establish a GPADL over `pfns` covering `byte_count` bytes: one GpadlHeader with the first
/// [`GPADL_HEADER_PFNS`] PFNs and GpadlBody messages of up to [`GPADL_BODY_PFNS`] each (Linux
/// `create_gpadl_header`). Errors: [`MsgError::BadField`] when the range does not fit `range_buflen` (u16), i.e.
/// more than 8190 pages.
pub fn gpadl_messages(
    child_relid: RelId,
    gpadl: GpadlHandle,
    pfns: &[u64],
    byte_count: u32,
) -> Result<Vec<ChannelMessage>, MsgError> {
    let range_buflen = u16::try_from(8 + 8 * pfns.len()).map_err(|_| MsgError::BadField {
        msgtype: msgtype::GPADL_HEADER,
        field: "range_buflen",
        value: (8 + 8 * pfns.len()) as u64,
    })?;
    let first = pfns.len().min(GPADL_HEADER_PFNS);
    let mut out = vec![ChannelMessage::GpadlHeader(GpadlHeader {
        child_relid,
        gpadl,
        range_buflen,
        range_count: 1,
        byte_count,
        byte_offset: 0,
        pfns: pfns[..first].to_vec(),
    })];
    for chunk in pfns[first..].chunks(GPADL_BODY_PFNS) {
        out.push(ChannelMessage::GpadlBody(GpadlBody { msgnumber: 0, gpadl, pfns: chunk.to_vec() }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmbus::guid;

    fn offer() -> Offer {
        let mut user_def = [0u8; USER_DEFINED_LEN];
        user_def[0] = 0xaa;
        Offer {
            if_type: guid::NIC,
            if_instance: Guid([7; 16]),
            chn_flags: 0x2,
            mmio_megabytes: 0,
            user_def,
            sub_channel_index: 0,
            child_relid: RelId(14),
            monitor_id: 3,
            monitor_allocated: true,
            dedicated_interrupt: false,
            connection_id: ConnectionId(0x2000 + 14),
        }
    }

    #[test]
    fn offer_layout_round_trips() {
        let m = ChannelMessage::OfferChannel(offer());
        let b = m.emit();
        assert_eq!(b.len(), OFFER_LEN);
        assert_eq!(&b[0..4], &[1, 0, 0, 0]);
        assert_eq!(&b[8..24], guid::NIC.bytes());
        assert_eq!(u32::from_le_bytes(b[184..188].try_into().unwrap()), 14, "child_relid at 184");
        assert_eq!(b[188], 3);
        assert_eq!(b[189], 1);
        assert_eq!(u32::from_le_bytes(b[192..196].try_into().unwrap()), 0x200e, "connection_id at 192");
        assert_eq!(ChannelMessage::parse(&b), Ok(m));
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            ChannelMessage::RescindOffer { child_relid: RelId(5) },
            ChannelMessage::RequestOffers,
            ChannelMessage::AllOffersDelivered,
            ChannelMessage::OpenChannel(OpenChannel {
                child_relid: RelId(1),
                open_id: 1,
                ring_gpadl: GpadlHandle(0xe1e10),
                target_vp: 0,
                downstream_page_offset: 16,
                user_data: [0; USER_DEFINED_LEN],
            }),
            ChannelMessage::OpenResult { child_relid: RelId(1), open_id: 1, status: 0 },
            ChannelMessage::CloseChannel { child_relid: RelId(1) },
            ChannelMessage::GpadlCreated { child_relid: RelId(1), gpadl: GpadlHandle(9), status: 0 },
            ChannelMessage::GpadlTeardown { child_relid: RelId(1), gpadl: GpadlHandle(9) },
            ChannelMessage::GpadlTorndown { gpadl: GpadlHandle(9) },
            ChannelMessage::RelidReleased { child_relid: RelId(1) },
            ChannelMessage::InitiateContact(InitiateContact {
                version: version::WIN10_V5_3,
                target_vcpu: 0,
                interrupt_page_or_sint: 2,
                monitor_page1: 0x1000,
                monitor_page2: 0x2000,
            }),
            ChannelMessage::VersionResponse {
                version_supported: true,
                connection_state: 0,
                msg_conn_id: ConnectionId(4),
            },
            ChannelMessage::Unload,
            ChannelMessage::UnloadResponse,
        ];
        for m in msgs {
            let b = m.emit();
            assert_eq!(b.len(), min_len(m.msgtype()).unwrap().max(if m.msgtype() == 15 { 16 } else { 0 }), "{m:?}");
            let parsed = ChannelMessage::parse(&b).unwrap();
            assert_eq!(parsed.emit(), b, "parse → emit reproduces the bytes");
            assert_eq!(parsed, m);
            // Every type refuses a buffer one byte short of its fixed layout.
            let need = min_len(m.msgtype()).unwrap();
            assert_eq!(
                ChannelMessage::parse(&b[..need - 1]),
                Err(MsgError::Truncated {
                    msgtype: if need > HEADER_LEN { m.msgtype() } else { 0 },
                    len: need - 1,
                    need
                }),
                "{m:?}"
            );
        }
        assert_eq!(
            ChannelMessage::InitiateContact(InitiateContact {
                version: 0,
                target_vcpu: 0,
                interrupt_page_or_sint: 0,
                monitor_page1: 0,
                monitor_page2: 0
            })
            .emit()
            .len(),
            INITIATE_CONTACT_LEN
        );
    }

    #[test]
    fn malformed_messages_are_rejected() {
        assert_eq!(ChannelMessage::parse(&[1, 0, 0]), Err(MsgError::Truncated { msgtype: 0, len: 3, need: 8 }));
        let mut b = ChannelMessage::OfferChannel(offer()).emit();
        b.truncate(100);
        assert_eq!(ChannelMessage::parse(&b), Err(MsgError::Truncated { msgtype: 1, len: 100, need: OFFER_LEN }));
        assert_eq!(ChannelMessage::parse(&[99, 0, 0, 0, 0, 0, 0, 0]), Err(MsgError::UnknownType(99)));
        let short_version = [15, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(
            ChannelMessage::parse(&short_version),
            Ok(ChannelMessage::VersionResponse {
                version_supported: true,
                connection_state: 0,
                msg_conn_id: ConnectionId(0)
            })
        );
        let mut h = gpadl_messages(RelId(1), GpadlHandle(2), &[1, 2, 3], 3 * 4096).unwrap()[0].emit();
        h[18] = 2;
        assert!(matches!(ChannelMessage::parse(&h), Err(MsgError::BadField { field: "rangecount", .. })));
    }

    #[test]
    fn gpadl_splits_into_header_and_bodies() {
        let pfns: Vec<u64> = (100..100 + 256).collect();
        let msgs = gpadl_messages(RelId(7), GpadlHandle(0xe1e10), &pfns, 256 * 4096).unwrap();
        assert_eq!(GPADL_HEADER_PFNS, 26);
        assert_eq!(GPADL_BODY_PFNS, 28);
        assert_eq!(msgs.len(), 1 + (256 - 26usize).div_ceil(28));
        let mut all = vec![];
        for (i, m) in msgs.iter().enumerate() {
            let b = m.emit();
            assert!(b.len() <= MESSAGE_PAYLOAD_MAX, "message {i} is {} bytes", b.len());
            match ChannelMessage::parse(&b).unwrap() {
                ChannelMessage::GpadlHeader(h) => {
                    assert_eq!(i, 0);
                    assert_eq!(h.range_buflen as usize, 8 + 8 * 256);
                    assert_eq!(h.byte_count, 256 * 4096);
                    all.extend(h.pfns);
                }
                ChannelMessage::GpadlBody(body) => {
                    assert_eq!(body.gpadl, GpadlHandle(0xe1e10));
                    all.extend(body.pfns);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(all, pfns);
        assert!(gpadl_messages(RelId(1), GpadlHandle(1), &vec![0; 9000], 0).is_err());
    }

    #[test]
    fn version_list_is_newest_first() {
        assert_eq!(version::ALL[0], 0x6_0000);
        assert_eq!(*version::ALL.last().unwrap(), 0x2_0004);
        assert!(version::ALL.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(version::display(version::WIN10_V5_3), "5.3");
    }
}
