//! NVSP, the Network Virtual Service Protocol netvsc speaks with the host's netvsp over VMBus: version
//! negotiation, the NDIS version and configuration, receive and send buffer set-up, and the RNDIS packet carrier
//! messages. Each message is a `u32` type followed by the type's fields, little-endian and packed. Source: Linux
//! `drivers/net/hyperv/hyperv_net.h` (`struct nvsp_message`, `NVSP_MSG*_TYPE_*`, `NVSP_PROTOCOL_VERSION_*`) and
//! `drivers/net/hyperv/netvsc.c` (`negotiate_nvsp_ver`, `netvsc_init_buf`).
//!
//! [`Message`] is a checked view over the bytes (field ranges per message struct in a private `mod field`),
//! [`NvspMessage`] the owned form with [`NvspMessage::parse`] and [`NvspMessage::emit`].
#![forbid(unsafe_code)]

use crate::vmbus::GpadlHandle;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use libos::wire::{read_u16, read_u32, read_u64, write_u16, write_u32, write_u64, Field};

/// NVSP protocol versions, newest first as netvsc tries them (6.1, 6, 5, 4, 2 = "3.2", 1 = "2").
pub mod version {
    /// NVSP_PROTOCOL_VERSION_1.
    pub const V1: u32 = 2;
    /// NVSP_PROTOCOL_VERSION_2 (written 0x30002, "3.2"): NDIS config, chimney.
    pub const V2: u32 = 0x30002;
    /// NVSP_PROTOCOL_VERSION_4: VF association.
    pub const V4: u32 = 0x40000;
    /// NVSP_PROTOCOL_VERSION_5: sub-channels, indirection table, UDP checksum offload.
    pub const V5: u32 = 0x50000;
    /// NVSP_PROTOCOL_VERSION_6.
    pub const V6: u32 = 0x60000;
    /// NVSP_PROTOCOL_VERSION_61.
    pub const V61: u32 = 0x60001;
    /// Versions tried, newest first.
    pub const ALL: [u32; 6] = [V61, V6, V5, V4, V2, V1];

    /// Human-readable version (`6.1`, `3.2`, ...).
    pub fn display(v: u32) -> alloc::string::String {
        match v {
            V1 => "2".into(),
            V2 => "3.2".into(),
            _ => alloc::format!("{}.{}", v >> 16, v & 0xffff),
        }
    }
}

/// `NVSP_*_TYPE_*` message types used here.
pub mod msgtype {
    /// NVSP_MSG_TYPE_INIT.
    pub const INIT: u32 = 1;
    /// NVSP_MSG_TYPE_INIT_COMPLETE.
    pub const INIT_COMPLETE: u32 = 2;
    /// NVSP_MSG1_TYPE_SEND_NDIS_VER.
    pub const SEND_NDIS_VER: u32 = 100;
    /// NVSP_MSG1_TYPE_SEND_RECV_BUF.
    pub const SEND_RECV_BUF: u32 = 101;
    /// NVSP_MSG1_TYPE_SEND_RECV_BUF_COMPLETE.
    pub const SEND_RECV_BUF_COMPLETE: u32 = 102;
    /// NVSP_MSG1_TYPE_REVOKE_RECV_BUF.
    pub const REVOKE_RECV_BUF: u32 = 103;
    /// NVSP_MSG1_TYPE_SEND_SEND_BUF.
    pub const SEND_SEND_BUF: u32 = 104;
    /// NVSP_MSG1_TYPE_SEND_SEND_BUF_COMPLETE.
    pub const SEND_SEND_BUF_COMPLETE: u32 = 105;
    /// NVSP_MSG1_TYPE_REVOKE_SEND_BUF.
    pub const REVOKE_SEND_BUF: u32 = 106;
    /// NVSP_MSG1_TYPE_SEND_RNDIS_PKT.
    pub const SEND_RNDIS_PKT: u32 = 107;
    /// NVSP_MSG1_TYPE_SEND_RNDIS_PKT_COMPLETE.
    pub const SEND_RNDIS_PKT_COMPLETE: u32 = 108;
    /// NVSP_MSG2_TYPE_SEND_NDIS_CONFIG.
    pub const SEND_NDIS_CONFIG: u32 = 125;
    /// NVSP_MSG4_TYPE_SEND_VF_ASSOCIATION.
    pub const SEND_VF_ASSOCIATION: u32 = 128;
    /// NVSP_MSG4_TYPE_SWITCH_DATA_PATH.
    pub const SWITCH_DATA_PATH: u32 = 129;
    /// NVSP_MSG5_TYPE_SUBCHANNEL.
    pub const SUBCHANNEL: u32 = 133;
    /// NVSP_MSG5_TYPE_SEND_INDIRECTION_TABLE.
    pub const SEND_INDIRECTION_TABLE: u32 = 134;
}

/// `NVSP_STAT_SUCCESS`.
pub const STATUS_SUCCESS: u32 = 1;
/// `NVSP_STAT_FAIL`.
pub const STATUS_FAIL: u32 = 2;
/// RNDIS channel type of data packets (`channel_type` 0).
pub const CHANNEL_TYPE_DATA: u32 = 0;
/// RNDIS channel type of control messages (`channel_type` 1).
pub const CHANNEL_TYPE_CONTROL: u32 = 1;
/// `send_buf_section_index` meaning "not in the send buffer".
pub const NO_SECTION: u32 = 0xFFFF_FFFF;
/// Receive buffer id (`NETVSC_RECEIVE_BUFFER_ID`): the transfer page set id the host uses for it.
pub const RECEIVE_BUFFER_ID: u16 = 0xcafe;
/// Send buffer id (`NETVSC_SEND_BUFFER_ID`).
pub const SEND_BUFFER_ID: u16 = 0;
/// Size of `struct nvsp_message` (bytes): what netvsc sends for every message.
pub const MESSAGE_LEN: usize = 40;

/// `nvsp_2_vsc_capability` bits.
pub mod capability {
    /// IEEE 802.1Q tags in per-packet info.
    pub const IEEE8021Q: u64 = 1 << 3;
    /// Teaming (the host then sends link speed updates).
    pub const TEAMING: u64 = 1 << 5;
}

mod field {
    use super::Field;
    use core::ops::RangeFrom;

    /// `nvsp_message_header.msg_type`.
    pub const MSG_TYPE: Field = 0..4;

    /// `nvsp_message_init`.
    pub mod init {
        use super::Field;
        pub const MIN_PROTOCOL_VER: Field = 4..8;
        pub const MAX_PROTOCOL_VER: Field = 8..12;
    }

    /// `nvsp_message_init_complete`.
    pub mod init_complete {
        use super::Field;
        pub const NEGOTIATED_PROTOCOL_VER: Field = 4..8;
        pub const MAX_MDL_CHAIN_LEN: Field = 8..12;
        pub const STATUS: Field = 12..16;
    }

    /// `nvsp_1_message_send_ndis_version`.
    pub mod ndis_version {
        use super::Field;
        pub const MAJOR: Field = 4..8;
        pub const MINOR: Field = 8..12;
    }

    /// `nvsp_1_message_send_receive_buffer` and `nvsp_1_message_send_send_buffer`.
    pub mod buffer {
        use super::Field;
        pub const GPADL_HANDLE: Field = 4..8;
        pub const ID: Field = 8..10;
    }

    /// `nvsp_1_message_revoke_receive_buffer` and `nvsp_1_message_revoke_send_buffer`.
    pub mod revoke {
        use super::Field;
        pub const ID: Field = 4..6;
    }

    /// `nvsp_1_message_send_receive_buffer_complete`.
    pub mod recv_buf_complete {
        use super::{Field, RangeFrom};
        pub const STATUS: Field = 4..8;
        pub const NUM_SECTIONS: Field = 8..12;
        pub const SECTIONS: RangeFrom<usize> = 12..;
    }

    /// `nvsp_1_receive_buffer_section`, relative to the section.
    pub mod section {
        use super::Field;
        pub const OFFSET: Field = 0..4;
        pub const SUB_ALLOC_SIZE: Field = 4..8;
        pub const NUM_SUB_ALLOCS: Field = 8..12;
        pub const END_OFFSET: Field = 12..16;
        pub const LEN: usize = END_OFFSET.end;
    }

    /// `nvsp_1_message_send_send_buffer_complete`.
    pub mod send_buf_complete {
        use super::Field;
        pub const STATUS: Field = 4..8;
        pub const SECTION_SIZE: Field = 8..12;
    }

    /// `nvsp_1_message_send_rndis_packet`.
    pub mod rndis_packet {
        use super::Field;
        pub const CHANNEL_TYPE: Field = 4..8;
        pub const SECTION_INDEX: Field = 8..12;
        pub const SECTION_SIZE: Field = 12..16;
    }

    /// `nvsp_1_message_send_rndis_packet_complete`.
    pub mod rndis_packet_complete {
        use super::Field;
        pub const STATUS: Field = 4..8;
    }

    /// `nvsp_2_send_ndis_config` (a reserved u32 sits between `mtu` and `capability`).
    pub mod ndis_config {
        use super::Field;
        pub const MTU: Field = 4..8;
        pub const CAPABILITY: Field = 12..20;
    }

    /// `nvsp_4_send_vf_association`.
    pub mod vf_association {
        use super::Field;
        pub const ALLOCATED: Field = 4..8;
        pub const SERIAL: Field = 8..12;
    }

    /// `nvsp_5_send_indirect_table`.
    pub mod indirection_table {
        use super::Field;
        pub const COUNT: Field = 4..8;
        pub const OFFSET: Field = 8..12;
    }
}

/// Bytes of the fixed layout of message type `t` (the header alone for types this driver does not decode).
fn fixed_len(t: u32) -> usize {
    use msgtype::*;
    match t {
        INIT => field::init::MAX_PROTOCOL_VER.end,
        INIT_COMPLETE => field::init_complete::STATUS.end,
        SEND_NDIS_VER => field::ndis_version::MINOR.end,
        SEND_RECV_BUF | SEND_SEND_BUF => field::buffer::ID.end,
        SEND_RECV_BUF_COMPLETE => field::recv_buf_complete::SECTIONS.start,
        REVOKE_RECV_BUF | REVOKE_SEND_BUF => field::revoke::ID.end,
        SEND_SEND_BUF_COMPLETE => field::send_buf_complete::SECTION_SIZE.end,
        SEND_RNDIS_PKT => field::rndis_packet::SECTION_SIZE.end,
        SEND_RNDIS_PKT_COMPLETE => field::rndis_packet_complete::STATUS.end,
        SEND_NDIS_CONFIG => field::ndis_config::CAPABILITY.end,
        SEND_VF_ASSOCIATION => field::vf_association::SERIAL.end,
        SEND_INDIRECTION_TABLE => field::indirection_table::OFFSET.end,
        _ => field::MSG_TYPE.end,
    }
}

/// A receive buffer section (`nvsp_1_receive_buffer_section`): the host sub-allocates `num_sub_allocs` blocks of
/// `sub_alloc_size` bytes from `offset` to `end_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvSection {
    /// Start (bytes into the receive buffer).
    pub offset: u32,
    /// Size of each sub-allocation (bytes).
    pub sub_alloc_size: u32,
    /// Number of sub-allocations.
    pub num_sub_allocs: u32,
    /// End (bytes).
    pub end_offset: u32,
}

/// A parsed NVSP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvspMessage {
    /// INIT: the guest's version range.
    Init {
        /// `min_protocol_ver`: oldest NVSP version the guest accepts.
        min: u32,
        /// `max_protocol_ver`: newest NVSP version the guest accepts.
        max: u32,
    },
    /// INIT_COMPLETE.
    InitComplete {
        /// `negotiated_protocol_ver`: the NVSP version the host chose.
        negotiated: u32,
        /// `max_mdl_chain_len`: most page buffers (MDL entries) per packet.
        max_mdl_chain_len: u32,
        /// `status` of the NVSP message (`NVSP_STAT_*`).
        status: u32,
    },
    /// SEND_NDIS_VER.
    SendNdisVersion {
        /// `ndis_major_ver`: NDIS major version, e.g. 6.
        major: u32,
        /// `ndis_minor_ver`: NDIS minor version, e.g. 30.
        minor: u32,
    },
    /// SEND_RECV_BUF: the receive buffer's GPADL.
    SendReceiveBuffer {
        /// `gpadl_handle` of the receive buffer.
        gpadl: GpadlHandle,
        /// `id`: the transfer page set id the host will use ([`RECEIVE_BUFFER_ID`]).
        id: u16,
    },
    /// SEND_RECV_BUF_COMPLETE.
    SendReceiveBufferComplete {
        /// `status` of the NVSP message (`NVSP_STAT_*`).
        status: u32,
        /// `sections[num_sections]`: how the host carves the receive buffer.
        sections: Vec<RecvSection>,
    },
    /// REVOKE_RECV_BUF.
    RevokeReceiveBuffer {
        /// `id` of the receive buffer ([`RECEIVE_BUFFER_ID`]).
        id: u16,
    },
    /// SEND_SEND_BUF: the send buffer's GPADL.
    SendSendBuffer {
        /// `gpadl_handle` of the send buffer.
        gpadl: GpadlHandle,
        /// `id` of the send buffer ([`SEND_BUFFER_ID`]).
        id: u16,
    },
    /// SEND_SEND_BUF_COMPLETE with the host-chosen section size (bytes).
    SendSendBufferComplete {
        /// `status` of the NVSP message (`NVSP_STAT_*`).
        status: u32,
        /// `section_size`: bytes per send buffer section.
        section_size: u32,
    },
    /// REVOKE_SEND_BUF.
    RevokeSendBuffer {
        /// `id` of the send buffer ([`SEND_BUFFER_ID`]).
        id: u16,
    },
    /// SEND_RNDIS_PKT: an RNDIS message follows (in a send buffer section, page buffers or transfer pages).
    SendRndisPacket {
        /// `channel_type`: [`CHANNEL_TYPE_DATA`] or [`CHANNEL_TYPE_CONTROL`].
        channel_type: u32,
        /// `send_buf_section_index`: the send buffer section holding the message, or [`NO_SECTION`].
        section_index: u32,
        /// `send_buf_section_size`: bytes used in that section (0 with [`NO_SECTION`]).
        section_size: u32,
    },
    /// SEND_RNDIS_PKT_COMPLETE.
    SendRndisPacketComplete {
        /// `status` of the NVSP message (`NVSP_STAT_*`).
        status: u32,
    },
    /// SEND_NDIS_CONFIG: frame MTU (bytes, Ethernet header included) and capability bits.
    SendNdisConfig {
        /// `mtu` (bytes, Ethernet header included).
        mtu: u32,
        /// `capability` bits ([`capability`]).
        capability: u64,
    },
    /// SEND_VF_ASSOCIATION (host → guest, NVSP ≥ 4).
    VfAssociation {
        /// `allocated`: non-zero when the host allocated a VF for this NIC.
        allocated: u32,
        /// `serial`: the VF's serial number, matching its slot on the virtual PCI bus.
        serial: u32,
    },
    /// SEND_INDIRECTION_TABLE (host → guest, NVSP ≥ 5): sub-channel table, unused with one channel.
    SendIndirectionTable {
        /// `count`: indirection table entries.
        count: u32,
        /// `offset`: where the table starts (bytes from the start of the NVSP message).
        offset: u32,
    },
    /// Any other type (ignored, completed if asked).
    Other {
        /// `hdr.msg_type` (`NVSP_MSG*_TYPE_*`).
        msg_type: u32,
    },
}

/// Why an NVSP message is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvspError {
    /// Message type.
    pub msg_type: u32,
    /// Bytes present.
    pub len: usize,
    /// Bytes the type needs.
    pub need: usize,
}

impl fmt::Display for NvspError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NVSP message type {}: {} bytes, needs {}", self.msg_type, self.len, self.need)
    }
}

/// A checked view of an NVSP message (`struct nvsp_message`): [`Message::new_checked`] proves the header, the
/// type's fixed layout and (for a receive-buffer completion) every listed section are inside the buffer.
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
    pub fn new_checked(buffer: T) -> Result<Self, NvspError> {
        let m = Self::new_unchecked(buffer);
        m.check_len()?;
        Ok(m)
    }

    /// Checks the header, the type's fixed layout and the section array of a receive-buffer completion (a hostile
    /// `num_sections` cannot point past the buffer). Errors: [`NvspError`].
    pub fn check_len(&self) -> Result<(), NvspError> {
        let len = self.buffer.as_ref().len();
        let need = |n: usize, t: u32| if len < n { Err(NvspError { msg_type: t, len, need: n }) } else { Ok(()) };
        need(field::MSG_TYPE.end, 0)?;
        let t = self.msg_type();
        need(fixed_len(t), t)?;
        if t == msgtype::SEND_RECV_BUF_COMPLETE {
            let n = self.u32(field::recv_buf_complete::NUM_SECTIONS) as usize;
            let end = n
                .checked_mul(field::section::LEN)
                .and_then(|x| x.checked_add(field::recv_buf_complete::SECTIONS.start))
                .unwrap_or(usize::MAX);
            need(end, t)?;
        }
        Ok(())
    }

    fn u32(&self, f: Field) -> u32 {
        read_u32(self.buffer.as_ref(), f)
    }

    /// `msg_type` ([`msgtype`]).
    pub fn msg_type(&self) -> u32 {
        self.u32(field::MSG_TYPE)
    }

    /// Section `i` of a receive-buffer completion (`i < num_sections`, proven by the check).
    pub fn section(&self, i: usize) -> RecvSection {
        let at = field::recv_buf_complete::SECTIONS.start + i * field::section::LEN;
        let b = &self.buffer.as_ref()[at..at + field::section::LEN];
        RecvSection {
            offset: read_u32(b, field::section::OFFSET),
            sub_alloc_size: read_u32(b, field::section::SUB_ALLOC_SIZE),
            num_sub_allocs: read_u32(b, field::section::NUM_SUB_ALLOCS),
            end_offset: read_u32(b, field::section::END_OFFSET),
        }
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl NvspMessage {
    /// Parses the NVSP message at the start of `b`. Errors: [`NvspError`] when shorter than the type's layout.
    pub fn parse(b: &[u8]) -> Result<Self, NvspError> {
        let m = Message::new_checked(b)?;
        let u32_of = |f: Field| read_u32(b, f);
        let gpadl = || GpadlHandle(read_u32(b, field::buffer::GPADL_HANDLE));
        use msgtype::*;
        Ok(match m.msg_type() {
            INIT => {
                use field::init::*;
                Self::Init { min: u32_of(MIN_PROTOCOL_VER), max: u32_of(MAX_PROTOCOL_VER) }
            }
            INIT_COMPLETE => {
                use field::init_complete::*;
                Self::InitComplete {
                    negotiated: u32_of(NEGOTIATED_PROTOCOL_VER),
                    max_mdl_chain_len: u32_of(MAX_MDL_CHAIN_LEN),
                    status: u32_of(STATUS),
                }
            }
            SEND_NDIS_VER => Self::SendNdisVersion {
                major: u32_of(field::ndis_version::MAJOR),
                minor: u32_of(field::ndis_version::MINOR),
            },
            SEND_RECV_BUF => Self::SendReceiveBuffer { gpadl: gpadl(), id: read_u16(b, field::buffer::ID) },
            SEND_RECV_BUF_COMPLETE => {
                use field::recv_buf_complete::*;
                let n = u32_of(NUM_SECTIONS) as usize;
                Self::SendReceiveBufferComplete {
                    status: u32_of(STATUS),
                    sections: (0..n).map(|i| m.section(i)).collect(),
                }
            }
            REVOKE_RECV_BUF => Self::RevokeReceiveBuffer { id: read_u16(b, field::revoke::ID) },
            SEND_SEND_BUF => Self::SendSendBuffer { gpadl: gpadl(), id: read_u16(b, field::buffer::ID) },
            SEND_SEND_BUF_COMPLETE => {
                use field::send_buf_complete::*;
                Self::SendSendBufferComplete { status: u32_of(STATUS), section_size: u32_of(SECTION_SIZE) }
            }
            REVOKE_SEND_BUF => Self::RevokeSendBuffer { id: read_u16(b, field::revoke::ID) },
            SEND_RNDIS_PKT => {
                use field::rndis_packet::*;
                Self::SendRndisPacket {
                    channel_type: u32_of(CHANNEL_TYPE),
                    section_index: u32_of(SECTION_INDEX),
                    section_size: u32_of(SECTION_SIZE),
                }
            }
            SEND_RNDIS_PKT_COMPLETE => {
                Self::SendRndisPacketComplete { status: u32_of(field::rndis_packet_complete::STATUS) }
            }
            SEND_NDIS_CONFIG => {
                use field::ndis_config::*;
                Self::SendNdisConfig { mtu: u32_of(MTU), capability: read_u64(b, CAPABILITY) }
            }
            SEND_VF_ASSOCIATION => {
                use field::vf_association::*;
                Self::VfAssociation { allocated: u32_of(ALLOCATED), serial: u32_of(SERIAL) }
            }
            SEND_INDIRECTION_TABLE => {
                use field::indirection_table::*;
                Self::SendIndirectionTable { count: u32_of(COUNT), offset: u32_of(OFFSET) }
            }
            other => Self::Other { msg_type: other },
        })
    }

    /// The message type.
    pub fn msg_type(&self) -> u32 {
        use msgtype::*;
        match self {
            Self::Init { .. } => INIT,
            Self::InitComplete { .. } => INIT_COMPLETE,
            Self::SendNdisVersion { .. } => SEND_NDIS_VER,
            Self::SendReceiveBuffer { .. } => SEND_RECV_BUF,
            Self::SendReceiveBufferComplete { .. } => SEND_RECV_BUF_COMPLETE,
            Self::RevokeReceiveBuffer { .. } => REVOKE_RECV_BUF,
            Self::SendSendBuffer { .. } => SEND_SEND_BUF,
            Self::SendSendBufferComplete { .. } => SEND_SEND_BUF_COMPLETE,
            Self::RevokeSendBuffer { .. } => REVOKE_SEND_BUF,
            Self::SendRndisPacket { .. } => SEND_RNDIS_PKT,
            Self::SendRndisPacketComplete { .. } => SEND_RNDIS_PKT_COMPLETE,
            Self::SendNdisConfig { .. } => SEND_NDIS_CONFIG,
            Self::VfAssociation { .. } => SEND_VF_ASSOCIATION,
            Self::SendIndirectionTable { .. } => SEND_INDIRECTION_TABLE,
            Self::Other { msg_type } => *msg_type,
        }
    }

    /// Bytes of the encoding: [`MESSAGE_LEN`], or more for a receive-buffer completion with many sections.
    pub fn buffer_len(&self) -> usize {
        match self {
            Self::SendReceiveBufferComplete { sections, .. } => {
                (field::recv_buf_complete::SECTIONS.start + sections.len() * field::section::LEN).max(MESSAGE_LEN)
            }
            _ => MESSAGE_LEN,
        }
    }

    /// Encodes the message, padded to [`MESSAGE_LEN`] ([`NvspMessage::buffer_len`] bytes).
    pub fn emit(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.buffer_len()];
        let b = &mut v[..];
        write_u32(b, field::MSG_TYPE, self.msg_type());
        match self {
            Self::Init { min, max } => {
                write_u32(b, field::init::MIN_PROTOCOL_VER, *min);
                write_u32(b, field::init::MAX_PROTOCOL_VER, *max);
            }
            Self::InitComplete { negotiated, max_mdl_chain_len, status } => {
                use field::init_complete::*;
                write_u32(b, NEGOTIATED_PROTOCOL_VER, *negotiated);
                write_u32(b, MAX_MDL_CHAIN_LEN, *max_mdl_chain_len);
                write_u32(b, STATUS, *status);
            }
            Self::SendNdisVersion { major, minor } => {
                write_u32(b, field::ndis_version::MAJOR, *major);
                write_u32(b, field::ndis_version::MINOR, *minor);
            }
            Self::SendReceiveBuffer { gpadl, id } | Self::SendSendBuffer { gpadl, id } => {
                write_u32(b, field::buffer::GPADL_HANDLE, gpadl.0);
                write_u16(b, field::buffer::ID, *id);
            }
            Self::SendReceiveBufferComplete { status, sections } => {
                use field::recv_buf_complete::*;
                write_u32(b, STATUS, *status);
                write_u32(b, NUM_SECTIONS, sections.len() as u32);
                for (i, s) in sections.iter().enumerate() {
                    let at = SECTIONS.start + i * field::section::LEN;
                    let d = &mut b[at..at + field::section::LEN];
                    write_u32(d, field::section::OFFSET, s.offset);
                    write_u32(d, field::section::SUB_ALLOC_SIZE, s.sub_alloc_size);
                    write_u32(d, field::section::NUM_SUB_ALLOCS, s.num_sub_allocs);
                    write_u32(d, field::section::END_OFFSET, s.end_offset);
                }
            }
            Self::RevokeReceiveBuffer { id } | Self::RevokeSendBuffer { id } => write_u16(b, field::revoke::ID, *id),
            Self::SendSendBufferComplete { status, section_size } => {
                write_u32(b, field::send_buf_complete::STATUS, *status);
                write_u32(b, field::send_buf_complete::SECTION_SIZE, *section_size);
            }
            Self::SendRndisPacket { channel_type, section_index, section_size } => {
                use field::rndis_packet::*;
                write_u32(b, CHANNEL_TYPE, *channel_type);
                write_u32(b, SECTION_INDEX, *section_index);
                write_u32(b, SECTION_SIZE, *section_size);
            }
            Self::SendRndisPacketComplete { status } => write_u32(b, field::rndis_packet_complete::STATUS, *status),
            Self::SendNdisConfig { mtu, capability } => {
                write_u32(b, field::ndis_config::MTU, *mtu);
                write_u64(b, field::ndis_config::CAPABILITY, *capability);
            }
            Self::VfAssociation { allocated, serial } => {
                write_u32(b, field::vf_association::ALLOCATED, *allocated);
                write_u32(b, field::vf_association::SERIAL, *serial);
            }
            Self::SendIndirectionTable { count, offset } => {
                write_u32(b, field::indirection_table::COUNT, *count);
                write_u32(b, field::indirection_table::OFFSET, *offset);
            }
            Self::Other { .. } => {}
        }
        v
    }
}

/// The NDIS version netvsc announces for an NVSP version (Linux `negotiate_nvsp_ver`): 6.1 up to NVSP 4, 6.30
/// from NVSP 5.
pub fn ndis_version(nvsp: u32) -> (u32, u32) {
    if nvsp <= version::V4 {
        (6, 1)
    } else {
        (6, 30)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let msgs = [
            NvspMessage::Init { min: version::V61, max: version::V61 },
            NvspMessage::InitComplete { negotiated: version::V5, max_mdl_chain_len: 34, status: STATUS_SUCCESS },
            NvspMessage::SendNdisVersion { major: 6, minor: 30 },
            NvspMessage::SendReceiveBuffer { gpadl: GpadlHandle(0xe1e11), id: RECEIVE_BUFFER_ID },
            NvspMessage::SendReceiveBufferComplete {
                status: STATUS_SUCCESS,
                sections: vec![RecvSection {
                    offset: 0,
                    sub_alloc_size: 1728,
                    num_sub_allocs: 606,
                    end_offset: 1_047_168,
                }],
            },
            NvspMessage::SendSendBuffer { gpadl: GpadlHandle(0xe1e12), id: SEND_BUFFER_ID },
            NvspMessage::SendSendBufferComplete { status: STATUS_SUCCESS, section_size: 6144 },
            NvspMessage::SendRndisPacket { channel_type: CHANNEL_TYPE_DATA, section_index: 3, section_size: 98 },
            NvspMessage::SendRndisPacketComplete { status: STATUS_SUCCESS },
            NvspMessage::SendNdisConfig { mtu: 1514, capability: capability::IEEE8021Q | capability::TEAMING },
            NvspMessage::RevokeReceiveBuffer { id: RECEIVE_BUFFER_ID },
            NvspMessage::SendIndirectionTable { count: 16, offset: 12 },
            NvspMessage::VfAssociation { allocated: 1, serial: 7 },
            NvspMessage::RevokeSendBuffer { id: SEND_BUFFER_ID },
        ];
        for m in msgs {
            let b = m.emit();
            assert!(b.len() >= MESSAGE_LEN);
            let parsed = NvspMessage::parse(&b).unwrap();
            assert_eq!(parsed.emit(), b, "parse → emit reproduces the bytes");
            assert_eq!(parsed, m);
            // Each type refuses a buffer one byte short of its fixed layout.
            let need = fixed_len(m.msg_type());
            assert_eq!(
                NvspMessage::parse(&b[..need - 1]),
                Err(NvspError { msg_type: m.msg_type(), len: need - 1, need }),
                "{m:?}"
            );
        }
    }

    #[test]
    fn layout_matches_hyperv_net_h() {
        let b = NvspMessage::SendRndisPacket { channel_type: 1, section_index: NO_SECTION, section_size: 0 }.emit();
        assert_eq!(&b[..16], &[107, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        let b = NvspMessage::SendNdisConfig { mtu: 1514, capability: capability::IEEE8021Q }.emit();
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 1514);
        assert_eq!(b[12], 0b1000, "capability at offset 12, after mtu and reserved");
        assert_eq!(ndis_version(version::V4), (6, 1));
        assert_eq!(ndis_version(version::V61), (6, 30));
        assert_eq!(version::display(version::V2), "3.2");
        assert_eq!(version::display(version::V61), "6.1");
    }

    #[test]
    fn hostile_section_counts_are_rejected() {
        let mut b = NvspMessage::SendReceiveBufferComplete { status: 1, sections: vec![] }.emit();
        b[8..12].copy_from_slice(&0x1000_0000u32.to_le_bytes());
        assert!(NvspMessage::parse(&b).is_err());
        assert!(NvspMessage::parse(&[2, 0, 0, 0]).is_err());
        assert_eq!(NvspMessage::parse(&[200, 0, 0, 0]), Ok(NvspMessage::Other { msg_type: 200 }));
    }
}
