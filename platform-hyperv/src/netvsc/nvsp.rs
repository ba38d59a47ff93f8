//! NVSP, the Network Virtual Service Protocol netvsc speaks with the host's netvsp over VMBus: version
//! negotiation, the NDIS version and configuration, receive and send buffer set-up, and the RNDIS packet carrier
//! messages. Each message is a `u32` type followed by the type's fields, little-endian and packed. Source: Linux
//! `drivers/net/hyperv/hyperv_net.h` (`struct nvsp_message`, `NVSP_MSG*_TYPE_*`, `NVSP_PROTOCOL_VERSION_*`) and
//! `drivers/net/hyperv/netvsc.c` (`negotiate_nvsp_ver`, `netvsc_init_buf`).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

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
    Init { min: u32, max: u32 },
    /// INIT_COMPLETE.
    InitComplete { negotiated: u32, max_mdl_chain_len: u32, status: u32 },
    /// SEND_NDIS_VER.
    SendNdisVersion { major: u32, minor: u32 },
    /// SEND_RECV_BUF: the receive buffer's GPADL.
    SendReceiveBuffer { gpadl: u32, id: u16 },
    /// SEND_RECV_BUF_COMPLETE.
    SendReceiveBufferComplete { status: u32, sections: Vec<RecvSection> },
    /// REVOKE_RECV_BUF.
    RevokeReceiveBuffer { id: u16 },
    /// SEND_SEND_BUF: the send buffer's GPADL.
    SendSendBuffer { gpadl: u32, id: u16 },
    /// SEND_SEND_BUF_COMPLETE with the host-chosen section size (bytes).
    SendSendBufferComplete { status: u32, section_size: u32 },
    /// REVOKE_SEND_BUF.
    RevokeSendBuffer { id: u16 },
    /// SEND_RNDIS_PKT: an RNDIS message follows (in a send buffer section, page buffers or transfer pages).
    SendRndisPacket { channel_type: u32, section_index: u32, section_size: u32 },
    /// SEND_RNDIS_PKT_COMPLETE.
    SendRndisPacketComplete { status: u32 },
    /// SEND_NDIS_CONFIG: frame MTU (bytes, Ethernet header included) and capability bits.
    SendNdisConfig { mtu: u32, capability: u64 },
    /// SEND_VF_ASSOCIATION (host → guest, NVSP ≥ 4).
    VfAssociation { allocated: u32, serial: u32 },
    /// SEND_INDIRECTION_TABLE (host → guest, NVSP ≥ 5): sub-channel table, unused with one channel.
    SendIndirectionTable { count: u32, offset: u32 },
    /// Any other type (ignored, completed if asked).
    Other { msg_type: u32 },
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

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

impl NvspMessage {
    /// Parses the NVSP message at the start of `b`. Errors: [`NvspError`] when shorter than the type's layout.
    pub fn parse(b: &[u8]) -> Result<Self, NvspError> {
        let need =
            |n: usize, t: u32| if b.len() < n { Err(NvspError { msg_type: t, len: b.len(), need: n }) } else { Ok(()) };
        need(4, 0)?;
        use msgtype::*;
        let t = u32_at(b, 0);
        Ok(match t {
            INIT => {
                need(12, t)?;
                Self::Init { min: u32_at(b, 4), max: u32_at(b, 8) }
            }
            INIT_COMPLETE => {
                need(16, t)?;
                Self::InitComplete { negotiated: u32_at(b, 4), max_mdl_chain_len: u32_at(b, 8), status: u32_at(b, 12) }
            }
            SEND_NDIS_VER => {
                need(12, t)?;
                Self::SendNdisVersion { major: u32_at(b, 4), minor: u32_at(b, 8) }
            }
            SEND_RECV_BUF => {
                need(10, t)?;
                Self::SendReceiveBuffer { gpadl: u32_at(b, 4), id: u16_at(b, 8) }
            }
            SEND_RECV_BUF_COMPLETE => {
                need(12, t)?;
                let n = u32_at(b, 8) as usize;
                let end = n.checked_mul(16).and_then(|x| x.checked_add(12)).unwrap_or(usize::MAX);
                need(end, t)?;
                let sections = (0..n)
                    .map(|i| {
                        let o = 12 + i * 16;
                        RecvSection {
                            offset: u32_at(b, o),
                            sub_alloc_size: u32_at(b, o + 4),
                            num_sub_allocs: u32_at(b, o + 8),
                            end_offset: u32_at(b, o + 12),
                        }
                    })
                    .collect();
                Self::SendReceiveBufferComplete { status: u32_at(b, 4), sections }
            }
            REVOKE_RECV_BUF => {
                need(6, t)?;
                Self::RevokeReceiveBuffer { id: u16_at(b, 4) }
            }
            SEND_SEND_BUF => {
                need(10, t)?;
                Self::SendSendBuffer { gpadl: u32_at(b, 4), id: u16_at(b, 8) }
            }
            SEND_SEND_BUF_COMPLETE => {
                need(12, t)?;
                Self::SendSendBufferComplete { status: u32_at(b, 4), section_size: u32_at(b, 8) }
            }
            REVOKE_SEND_BUF => {
                need(6, t)?;
                Self::RevokeSendBuffer { id: u16_at(b, 4) }
            }
            SEND_RNDIS_PKT => {
                need(16, t)?;
                Self::SendRndisPacket {
                    channel_type: u32_at(b, 4),
                    section_index: u32_at(b, 8),
                    section_size: u32_at(b, 12),
                }
            }
            SEND_RNDIS_PKT_COMPLETE => {
                need(8, t)?;
                Self::SendRndisPacketComplete { status: u32_at(b, 4) }
            }
            SEND_NDIS_CONFIG => {
                need(20, t)?;
                let cap = u64::from(u32_at(b, 12)) | (u64::from(u32_at(b, 16)) << 32);
                Self::SendNdisConfig { mtu: u32_at(b, 4), capability: cap }
            }
            SEND_VF_ASSOCIATION => {
                need(12, t)?;
                Self::VfAssociation { allocated: u32_at(b, 4), serial: u32_at(b, 8) }
            }
            SEND_INDIRECTION_TABLE => {
                need(12, t)?;
                Self::SendIndirectionTable { count: u32_at(b, 4), offset: u32_at(b, 8) }
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

    /// Encodes the message, padded to [`MESSAGE_LEN`] (longer only for a receive-buffer completion with many
    /// sections).
    pub fn emit(&self) -> Vec<u8> {
        let mut b = vec![0u8; MESSAGE_LEN];
        let put32 = |b: &mut Vec<u8>, o: usize, v: u32| {
            if b.len() < o + 4 {
                b.resize(o + 4, 0);
            }
            b[o..o + 4].copy_from_slice(&v.to_le_bytes());
        };
        let put16 = |b: &mut Vec<u8>, o: usize, v: u16| b[o..o + 2].copy_from_slice(&v.to_le_bytes());
        put32(&mut b, 0, self.msg_type());
        match self {
            Self::Init { min, max } => {
                put32(&mut b, 4, *min);
                put32(&mut b, 8, *max);
            }
            Self::InitComplete { negotiated, max_mdl_chain_len, status } => {
                put32(&mut b, 4, *negotiated);
                put32(&mut b, 8, *max_mdl_chain_len);
                put32(&mut b, 12, *status);
            }
            Self::SendNdisVersion { major, minor } => {
                put32(&mut b, 4, *major);
                put32(&mut b, 8, *minor);
            }
            Self::SendReceiveBuffer { gpadl, id } | Self::SendSendBuffer { gpadl, id } => {
                put32(&mut b, 4, *gpadl);
                put16(&mut b, 8, *id);
            }
            Self::SendReceiveBufferComplete { status, sections } => {
                put32(&mut b, 4, *status);
                put32(&mut b, 8, sections.len() as u32);
                for (i, s) in sections.iter().enumerate() {
                    let o = 12 + i * 16;
                    put32(&mut b, o, s.offset);
                    put32(&mut b, o + 4, s.sub_alloc_size);
                    put32(&mut b, o + 8, s.num_sub_allocs);
                    put32(&mut b, o + 12, s.end_offset);
                }
            }
            Self::RevokeReceiveBuffer { id } | Self::RevokeSendBuffer { id } => put16(&mut b, 4, *id),
            Self::SendSendBufferComplete { status, section_size } => {
                put32(&mut b, 4, *status);
                put32(&mut b, 8, *section_size);
            }
            Self::SendRndisPacket { channel_type, section_index, section_size } => {
                put32(&mut b, 4, *channel_type);
                put32(&mut b, 8, *section_index);
                put32(&mut b, 12, *section_size);
            }
            Self::SendRndisPacketComplete { status } => put32(&mut b, 4, *status),
            Self::SendNdisConfig { mtu, capability } => {
                put32(&mut b, 4, *mtu);
                put32(&mut b, 12, *capability as u32);
                put32(&mut b, 16, (*capability >> 32) as u32);
            }
            Self::VfAssociation { allocated, serial } => {
                put32(&mut b, 4, *allocated);
                put32(&mut b, 8, *serial);
            }
            Self::SendIndirectionTable { count, offset } => {
                put32(&mut b, 4, *count);
                put32(&mut b, 8, *offset);
            }
            Self::Other { .. } => {}
        }
        b
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
            NvspMessage::SendReceiveBuffer { gpadl: 0xe1e11, id: RECEIVE_BUFFER_ID },
            NvspMessage::SendReceiveBufferComplete {
                status: STATUS_SUCCESS,
                sections: vec![RecvSection {
                    offset: 0,
                    sub_alloc_size: 1728,
                    num_sub_allocs: 606,
                    end_offset: 1_047_168,
                }],
            },
            NvspMessage::SendSendBuffer { gpadl: 0xe1e12, id: SEND_BUFFER_ID },
            NvspMessage::SendSendBufferComplete { status: STATUS_SUCCESS, section_size: 6144 },
            NvspMessage::SendRndisPacket { channel_type: CHANNEL_TYPE_DATA, section_index: 3, section_size: 98 },
            NvspMessage::SendRndisPacketComplete { status: STATUS_SUCCESS },
            NvspMessage::SendNdisConfig { mtu: 1514, capability: capability::IEEE8021Q | capability::TEAMING },
            NvspMessage::RevokeReceiveBuffer { id: RECEIVE_BUFFER_ID },
            NvspMessage::SendIndirectionTable { count: 16, offset: 12 },
        ];
        for m in msgs {
            let b = m.emit();
            assert!(b.len() >= MESSAGE_LEN);
            assert_eq!(NvspMessage::parse(&b), Ok(m));
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
