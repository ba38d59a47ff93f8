//! VMBus channel management messages, carried as SynIC message payloads (at most 240 bytes) between the guest and
//! the host's VMBus server. Source: Linux `include/linux/hyperv.h` (`enum vmbus_channel_message_type`,
//! `struct vmbus_channel_*`, all `__packed`, little-endian) and `drivers/hv/channel_mgmt.c`.
//!
//! [`MessageView`] is a checked view over the bytes (the header and the type's minimum length), [`ChannelMessage`]
//! the parsed form with [`ChannelMessage::parse`] and [`ChannelMessage::emit`].

use super::guid::Guid;
use crate::hv::MESSAGE_PAYLOAD_MAX;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// SynIC message type of VMBus channel messages (`HVMSG_...` value 1, the `message_type` argument of
/// `hv_post_message` in Linux).
pub const VMBUS_MESSAGE_TYPE: u32 = 1;
/// Message connection id for hosts before VMBus 5.0 (`VMBUS_MESSAGE_CONNECTION_ID`).
pub const MESSAGE_CONNECTION_ID: u32 = 1;
/// Message connection id of InitiateContact for VMBus ≥ 5.0 (`VMBUS_MESSAGE_CONNECTION_ID_4`); later messages use
/// the id from the version response.
pub const MESSAGE_CONNECTION_ID_4: u32 = 4;
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

/// Size of `vmbus_channel_message_header` (bytes): `msgtype` u32 and padding u32.
pub const HEADER_LEN: usize = 8;
/// Size of `vmbus_channel_offer_channel` (bytes).
pub const OFFER_LEN: usize = 196;
/// Size of `vmbus_channel_open_channel` (bytes).
pub const OPEN_CHANNEL_LEN: usize = 148;
/// User-defined bytes in an offer and in OpenChannel (`MAX_USER_DEFINED_BYTES`).
pub const USER_DEFINED_LEN: usize = 120;
/// Size of `vmbus_channel_initiate_contact` (bytes).
pub const INITIATE_CONTACT_LEN: usize = 40;
/// Fixed part of `vmbus_channel_gpadl_header` plus one `gpa_range` header (bytes).
pub const GPADL_HEADER_FIXED: usize = 28;
/// Fixed part of `vmbus_channel_gpadl_body` (bytes).
pub const GPADL_BODY_FIXED: usize = 16;
/// PFNs that fit a GpadlHeader message: (240 − 28) / 8.
pub const GPADL_HEADER_PFNS: usize = (MESSAGE_PAYLOAD_MAX - GPADL_HEADER_FIXED) / 8;
/// PFNs that fit a GpadlBody message: (240 − 16) / 8.
pub const GPADL_BODY_PFNS: usize = (MESSAGE_PAYLOAD_MAX - GPADL_BODY_FIXED) / 8;

/// Why a channel message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgError {
    /// Shorter than its type's fixed layout.
    Truncated { msgtype: u32, len: usize, need: usize },
    /// A message type this guest does not know (or a guest-to-host type arriving at the guest).
    UnknownType(u32),
    /// A field holds an impossible value.
    BadField { msgtype: u32, field: &'static str, value: u64 },
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
        RESCIND_CHANNEL_OFFER | CLOSE_CHANNEL | RELID_RELEASED | GPADL_TORNDOWN => 12,
        REQUEST_OFFERS | ALL_OFFERS_DELIVERED | UNLOAD | UNLOAD_RESPONSE => HEADER_LEN,
        OPEN_CHANNEL => OPEN_CHANNEL_LEN,
        OPEN_CHANNEL_RESULT | GPADL_CREATED => 20,
        GPADL_HEADER => GPADL_HEADER_FIXED,
        GPADL_BODY => GPADL_BODY_FIXED,
        GPADL_TEARDOWN => 16,
        INITIATE_CONTACT => INITIATE_CONTACT_LEN,
        // Hosts before 5.0 may send the short `vmbus_channel_version_supported` (9 bytes).
        VERSION_RESPONSE => 9,
        _ => return None,
    })
}

/// A checked view of a channel message: [`MessageView::new_checked`] proves the header and the type's fixed part
/// are present, so no accessor can read past the buffer.
pub struct MessageView<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> MessageView<T> {
    /// Wraps `buf` after checking its length against its type. Errors: [`MsgError::Truncated`],
    /// [`MsgError::UnknownType`].
    pub fn new_checked(buf: T) -> Result<Self, MsgError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(MsgError::Truncated { msgtype: 0, len: b.len(), need: HEADER_LEN });
        }
        let ty = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let need = min_len(ty).ok_or(MsgError::UnknownType(ty))?;
        if b.len() < need {
            return Err(MsgError::Truncated { msgtype: ty, len: b.len(), need });
        }
        Ok(Self { buf })
    }

    /// `msgtype`.
    pub fn msgtype(&self) -> u32 {
        self.u32_at(0)
    }

    fn u32_at(&self, off: usize) -> u32 {
        let b = self.buf.as_ref();
        u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
    }

    fn u16_at(&self, off: usize) -> u16 {
        let b = self.buf.as_ref();
        u16::from_le_bytes([b[off], b[off + 1]])
    }

    fn u64_at(&self, off: usize) -> u64 {
        let b = self.buf.as_ref();
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[off..off + 8]);
        u64::from_le_bytes(x)
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
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
    pub child_relid: u32,
    /// Monitor id for monitored notification.
    pub monitor_id: u8,
    /// `monitor_allocated` bit.
    pub monitor_allocated: bool,
    /// `is_dedicated_interrupt` bit: when set the guest must not set the relid bit in the interrupt page.
    pub dedicated_interrupt: bool,
    /// Connection id for HvSignalEvent to the host.
    pub connection_id: u32,
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
    pub child_relid: u32,
    /// Guest-chosen GPADL handle.
    pub gpadl: u32,
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
    pub gpadl: u32,
    /// PFNs.
    pub pfns: Vec<u64>,
}

/// OpenChannel (`vmbus_channel_open_channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenChannel {
    /// Channel.
    pub child_relid: u32,
    /// Guest-chosen id echoed in the result.
    pub open_id: u32,
    /// GPADL of both ring buffers.
    pub ring_gpadl: u32,
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
    RescindOffer { child_relid: u32 },
    /// CHANNELMSG_REQUESTOFFERS.
    RequestOffers,
    /// CHANNELMSG_ALLOFFERS_DELIVERED.
    AllOffersDelivered,
    /// CHANNELMSG_OPENCHANNEL.
    OpenChannel(OpenChannel),
    /// CHANNELMSG_OPENCHANNEL_RESULT (status 0 = success).
    OpenResult { child_relid: u32, open_id: u32, status: u32 },
    /// CHANNELMSG_CLOSECHANNEL.
    CloseChannel { child_relid: u32 },
    /// CHANNELMSG_GPADL_HEADER.
    GpadlHeader(GpadlHeader),
    /// CHANNELMSG_GPADL_BODY.
    GpadlBody(GpadlBody),
    /// CHANNELMSG_GPADL_CREATED (status 0 = success).
    GpadlCreated { child_relid: u32, gpadl: u32, status: u32 },
    /// CHANNELMSG_GPADL_TEARDOWN.
    GpadlTeardown { child_relid: u32, gpadl: u32 },
    /// CHANNELMSG_GPADL_TORNDOWN.
    GpadlTorndown { gpadl: u32 },
    /// CHANNELMSG_RELID_RELEASED.
    RelidReleased { child_relid: u32 },
    /// CHANNELMSG_INITIATE_CONTACT.
    InitiateContact(InitiateContact),
    /// CHANNELMSG_VERSION_RESPONSE: `msg_conn_id` is 0 when the host sent the short pre-5.0 form.
    VersionResponse { version_supported: bool, connection_state: u8, msg_conn_id: u32 },
    /// CHANNELMSG_UNLOAD.
    Unload,
    /// CHANNELMSG_UNLOAD_RESPONSE.
    UnloadResponse,
}

impl ChannelMessage {
    /// Parses `bytes`. Errors: [`MsgError`] for short, unknown or inconsistent messages.
    pub fn parse(bytes: &[u8]) -> Result<Self, MsgError> {
        use msgtype::*;
        let v = MessageView::new_checked(bytes)?;
        let ty = v.msgtype();
        Ok(match ty {
            OFFER_CHANNEL => {
                let b = v.as_bytes();
                let mut if_type = [0u8; 16];
                if_type.copy_from_slice(&b[8..24]);
                let mut if_instance = [0u8; 16];
                if_instance.copy_from_slice(&b[24..40]);
                let mut user_def = [0u8; USER_DEFINED_LEN];
                user_def.copy_from_slice(&b[60..180]);
                Self::OfferChannel(Offer {
                    if_type: Guid(if_type),
                    if_instance: Guid(if_instance),
                    chn_flags: v.u16_at(56),
                    mmio_megabytes: v.u16_at(58),
                    user_def,
                    sub_channel_index: v.u16_at(180),
                    child_relid: v.u32_at(184),
                    monitor_id: b[188],
                    monitor_allocated: b[189] & 1 != 0,
                    dedicated_interrupt: v.u16_at(190) & 1 != 0,
                    connection_id: v.u32_at(192),
                })
            }
            RESCIND_CHANNEL_OFFER => Self::RescindOffer { child_relid: v.u32_at(8) },
            REQUEST_OFFERS => Self::RequestOffers,
            ALL_OFFERS_DELIVERED => Self::AllOffersDelivered,
            OPEN_CHANNEL => {
                let mut user_data = [0u8; USER_DEFINED_LEN];
                user_data.copy_from_slice(&v.as_bytes()[28..148]);
                Self::OpenChannel(OpenChannel {
                    child_relid: v.u32_at(8),
                    open_id: v.u32_at(12),
                    ring_gpadl: v.u32_at(16),
                    target_vp: v.u32_at(20),
                    downstream_page_offset: v.u32_at(24),
                    user_data,
                })
            }
            OPEN_CHANNEL_RESULT => {
                Self::OpenResult { child_relid: v.u32_at(8), open_id: v.u32_at(12), status: v.u32_at(16) }
            }
            CLOSE_CHANNEL => Self::CloseChannel { child_relid: v.u32_at(8) },
            GPADL_HEADER => {
                let range_buflen = v.u16_at(16);
                let range_count = v.u16_at(18);
                let n = (bytes.len() - GPADL_HEADER_FIXED) / 8;
                let pfns = (0..n).map(|i| v.u64_at(GPADL_HEADER_FIXED + i * 8)).collect();
                if range_count != 1 {
                    return Err(MsgError::BadField { msgtype: ty, field: "rangecount", value: range_count.into() });
                }
                Self::GpadlHeader(GpadlHeader {
                    child_relid: v.u32_at(8),
                    gpadl: v.u32_at(12),
                    range_buflen,
                    range_count,
                    byte_count: v.u32_at(20),
                    byte_offset: v.u32_at(24),
                    pfns,
                })
            }
            GPADL_BODY => {
                let n = (bytes.len() - GPADL_BODY_FIXED) / 8;
                let pfns = (0..n).map(|i| v.u64_at(GPADL_BODY_FIXED + i * 8)).collect();
                Self::GpadlBody(GpadlBody { msgnumber: v.u32_at(8), gpadl: v.u32_at(12), pfns })
            }
            GPADL_CREATED => Self::GpadlCreated { child_relid: v.u32_at(8), gpadl: v.u32_at(12), status: v.u32_at(16) },
            GPADL_TEARDOWN => Self::GpadlTeardown { child_relid: v.u32_at(8), gpadl: v.u32_at(12) },
            GPADL_TORNDOWN => Self::GpadlTorndown { gpadl: v.u32_at(8) },
            RELID_RELEASED => Self::RelidReleased { child_relid: v.u32_at(8) },
            INITIATE_CONTACT => Self::InitiateContact(InitiateContact {
                version: v.u32_at(8),
                target_vcpu: v.u32_at(12),
                interrupt_page_or_sint: v.u64_at(16),
                monitor_page1: v.u64_at(24),
                monitor_page2: v.u64_at(32),
            }),
            VERSION_RESPONSE => {
                let b = v.as_bytes();
                let connection_state = b.get(9).copied().unwrap_or(0);
                let msg_conn_id = if b.len() >= 16 { v.u32_at(12) } else { 0 };
                Self::VersionResponse { version_supported: b[8] != 0, connection_state, msg_conn_id }
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

    /// Encodes the message (the exact `__packed` layout; at most 240 bytes for GPADL messages built by
    /// [`gpadl_messages`]).
    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.msgtype().to_le_bytes());
        let p32 = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
        let p16 = |b: &mut Vec<u8>, v: u16| b.extend_from_slice(&v.to_le_bytes());
        let p64 = |b: &mut Vec<u8>, v: u64| b.extend_from_slice(&v.to_le_bytes());
        match self {
            Self::OfferChannel(o) => {
                b.extend_from_slice(&o.if_type.0);
                b.extend_from_slice(&o.if_instance.0);
                p64(&mut b, 0);
                p64(&mut b, 0);
                p16(&mut b, o.chn_flags);
                p16(&mut b, o.mmio_megabytes);
                b.extend_from_slice(&o.user_def);
                p16(&mut b, o.sub_channel_index);
                p16(&mut b, 0);
                p32(&mut b, o.child_relid);
                b.push(o.monitor_id);
                b.push(u8::from(o.monitor_allocated));
                p16(&mut b, u16::from(o.dedicated_interrupt));
                p32(&mut b, o.connection_id);
            }
            Self::RescindOffer { child_relid }
            | Self::CloseChannel { child_relid }
            | Self::RelidReleased { child_relid } => p32(&mut b, *child_relid),
            Self::RequestOffers | Self::AllOffersDelivered | Self::Unload | Self::UnloadResponse => {}
            Self::OpenChannel(o) => {
                p32(&mut b, o.child_relid);
                p32(&mut b, o.open_id);
                p32(&mut b, o.ring_gpadl);
                p32(&mut b, o.target_vp);
                p32(&mut b, o.downstream_page_offset);
                b.extend_from_slice(&o.user_data);
            }
            Self::OpenResult { child_relid, open_id, status } => {
                p32(&mut b, *child_relid);
                p32(&mut b, *open_id);
                p32(&mut b, *status);
            }
            Self::GpadlHeader(h) => {
                p32(&mut b, h.child_relid);
                p32(&mut b, h.gpadl);
                p16(&mut b, h.range_buflen);
                p16(&mut b, h.range_count);
                p32(&mut b, h.byte_count);
                p32(&mut b, h.byte_offset);
                for p in &h.pfns {
                    p64(&mut b, *p);
                }
            }
            Self::GpadlBody(body) => {
                p32(&mut b, body.msgnumber);
                p32(&mut b, body.gpadl);
                for p in &body.pfns {
                    p64(&mut b, *p);
                }
            }
            Self::GpadlCreated { child_relid, gpadl, status } => {
                p32(&mut b, *child_relid);
                p32(&mut b, *gpadl);
                p32(&mut b, *status);
            }
            Self::GpadlTeardown { child_relid, gpadl } => {
                p32(&mut b, *child_relid);
                p32(&mut b, *gpadl);
            }
            Self::GpadlTorndown { gpadl } => p32(&mut b, *gpadl),
            Self::InitiateContact(c) => {
                p32(&mut b, c.version);
                p32(&mut b, c.target_vcpu);
                p64(&mut b, c.interrupt_page_or_sint);
                p64(&mut b, c.monitor_page1);
                p64(&mut b, c.monitor_page2);
            }
            Self::VersionResponse { version_supported, connection_state, msg_conn_id } => {
                b.push(u8::from(*version_supported));
                b.push(*connection_state);
                p16(&mut b, 0);
                p32(&mut b, *msg_conn_id);
            }
        }
        b
    }
}

/// The messages that establish a GPADL over `pfns` covering `byte_count` bytes: one GpadlHeader with the first
/// [`GPADL_HEADER_PFNS`] PFNs and GpadlBody messages of up to [`GPADL_BODY_PFNS`] each (Linux
/// `create_gpadl_header`). Errors: [`MsgError::BadField`] when the range does not fit `range_buflen` (u16), i.e.
/// more than 8190 pages.
pub fn gpadl_messages(
    child_relid: u32,
    gpadl: u32,
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
            child_relid: 14,
            monitor_id: 3,
            monitor_allocated: true,
            dedicated_interrupt: false,
            connection_id: 0x2000 + 14,
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
            ChannelMessage::RescindOffer { child_relid: 5 },
            ChannelMessage::RequestOffers,
            ChannelMessage::AllOffersDelivered,
            ChannelMessage::OpenChannel(OpenChannel {
                child_relid: 1,
                open_id: 1,
                ring_gpadl: 0xe1e10,
                target_vp: 0,
                downstream_page_offset: 16,
                user_data: [0; USER_DEFINED_LEN],
            }),
            ChannelMessage::OpenResult { child_relid: 1, open_id: 1, status: 0 },
            ChannelMessage::CloseChannel { child_relid: 1 },
            ChannelMessage::GpadlCreated { child_relid: 1, gpadl: 9, status: 0 },
            ChannelMessage::GpadlTeardown { child_relid: 1, gpadl: 9 },
            ChannelMessage::GpadlTorndown { gpadl: 9 },
            ChannelMessage::RelidReleased { child_relid: 1 },
            ChannelMessage::InitiateContact(InitiateContact {
                version: version::WIN10_V5_3,
                target_vcpu: 0,
                interrupt_page_or_sint: 2,
                monitor_page1: 0x1000,
                monitor_page2: 0x2000,
            }),
            ChannelMessage::VersionResponse { version_supported: true, connection_state: 0, msg_conn_id: 4 },
            ChannelMessage::Unload,
            ChannelMessage::UnloadResponse,
        ];
        for m in msgs {
            let b = m.emit();
            assert_eq!(b.len(), min_len(m.msgtype()).unwrap().max(if m.msgtype() == 15 { 16 } else { 0 }), "{m:?}");
            assert_eq!(ChannelMessage::parse(&b), Ok(m));
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
            Ok(ChannelMessage::VersionResponse { version_supported: true, connection_state: 0, msg_conn_id: 0 })
        );
        let mut h = gpadl_messages(1, 2, &[1, 2, 3], 3 * 4096).unwrap()[0].emit();
        h[18] = 2;
        assert!(matches!(ChannelMessage::parse(&h), Err(MsgError::BadField { field: "rangecount", .. })));
    }

    #[test]
    fn gpadl_splits_into_header_and_bodies() {
        let pfns: Vec<u64> = (100..100 + 256).collect();
        let msgs = gpadl_messages(7, 0xe1e10, &pfns, 256 * 4096).unwrap();
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
                    assert_eq!(body.gpadl, 0xe1e10);
                    all.extend(body.pfns);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(all, pfns);
        assert!(gpadl_messages(1, 1, &vec![0; 9000], 0).is_err());
    }

    #[test]
    fn version_list_is_newest_first() {
        assert_eq!(version::ALL[0], 0x6_0000);
        assert_eq!(*version::ALL.last().unwrap(), 0x2_0004);
        assert!(version::ALL.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(version::display(version::WIN10_V5_3), "5.3");
    }
}
