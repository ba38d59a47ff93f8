//! Remote NDIS messages as netvsc exchanges them with the host: INITIALIZE, QUERY, SET, INDICATE_STATUS,
//! KEEPALIVE and the data message `REMOTE_NDIS_PACKET_MSG` with per-packet information (checksum offload).
//! Every message starts with `msg_type` and `msg_len` (u32, little-endian); request and completion fields follow;
//! offsets in a message are relative to the byte after the 8-byte header. Source: Linux
//! `drivers/net/hyperv/hyperv_net.h` (`struct rndis_*`, `ndis_tcp_ip_checksum_info`, `ndis_offload`),
//! `drivers/net/hyperv/rndis_filter.c`, `include/linux/rndis.h` (message types, OIDs, status codes).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

/// Size of the RNDIS message header (`msg_type`, `msg_len`).
pub const HEADER_LEN: usize = 8;
/// Size of a data message header: the header plus `struct rndis_packet` (36 bytes).
pub const PACKET_HEADER_LEN: usize = 44;
/// Size of one per-packet-info entry with a 4-byte value (`rndis_per_packet_info` + u32).
pub const PPI_LEN: usize = 16;

/// RNDIS message types.
pub mod msgtype {
    /// REMOTE_NDIS_PACKET_MSG.
    pub const PACKET: u32 = 0x1;
    /// REMOTE_NDIS_INITIALIZE_MSG.
    pub const INIT: u32 = 0x2;
    /// REMOTE_NDIS_HALT_MSG.
    pub const HALT: u32 = 0x3;
    /// REMOTE_NDIS_QUERY_MSG.
    pub const QUERY: u32 = 0x4;
    /// REMOTE_NDIS_SET_MSG.
    pub const SET: u32 = 0x5;
    /// REMOTE_NDIS_INDICATE_STATUS_MSG.
    pub const INDICATE: u32 = 0x7;
    /// REMOTE_NDIS_KEEPALIVE_MSG.
    pub const KEEPALIVE: u32 = 0x8;
    /// Completion bit.
    pub const COMPLETION: u32 = 0x8000_0000;
    /// REMOTE_NDIS_INITIALIZE_CMPLT.
    pub const INIT_C: u32 = COMPLETION | INIT;
    /// REMOTE_NDIS_QUERY_CMPLT.
    pub const QUERY_C: u32 = COMPLETION | QUERY;
    /// REMOTE_NDIS_SET_CMPLT.
    pub const SET_C: u32 = COMPLETION | SET;
    /// REMOTE_NDIS_KEEPALIVE_CMPLT.
    pub const KEEPALIVE_C: u32 = COMPLETION | KEEPALIVE;
}

/// RNDIS/NDIS status codes.
pub mod status {
    /// RNDIS_STATUS_SUCCESS.
    pub const SUCCESS: u32 = 0;
    /// RNDIS_STATUS_FAILURE.
    pub const FAILURE: u32 = 0xC000_0001;
    /// RNDIS_STATUS_NOT_SUPPORTED.
    pub const NOT_SUPPORTED: u32 = 0xC000_00BB;
    /// RNDIS_STATUS_MEDIA_CONNECT (indication).
    pub const MEDIA_CONNECT: u32 = 0x4001_000B;
    /// RNDIS_STATUS_MEDIA_DISCONNECT (indication).
    pub const MEDIA_DISCONNECT: u32 = 0x4001_000C;
}

/// NDIS object identifiers used here.
pub mod oid {
    /// OID_GEN_MAXIMUM_FRAME_SIZE.
    pub const GEN_MAXIMUM_FRAME_SIZE: u32 = 0x0001_0106;
    /// OID_GEN_LINK_SPEED (100 bps units).
    pub const GEN_LINK_SPEED: u32 = 0x0001_0107;
    /// OID_GEN_CURRENT_PACKET_FILTER.
    pub const GEN_CURRENT_PACKET_FILTER: u32 = 0x0001_010E;
    /// OID_GEN_MEDIA_CONNECT_STATUS: 0 connected, 1 disconnected.
    pub const GEN_MEDIA_CONNECT_STATUS: u32 = 0x0001_0114;
    /// OID_802_3_PERMANENT_ADDRESS.
    pub const PERMANENT_ADDRESS: u32 = 0x0101_0101;
    /// OID_802_3_CURRENT_ADDRESS.
    pub const CURRENT_ADDRESS: u32 = 0x0101_0102;
    /// OID_TCP_OFFLOAD_PARAMETERS (set only).
    pub const TCP_OFFLOAD_PARAMETERS: u32 = 0xFC01_020C;
    /// OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES (query only).
    pub const TCP_OFFLOAD_HARDWARE_CAPABILITIES: u32 = 0xFC01_020D;
}

/// `NDIS_PACKET_TYPE_*` packet filter bits.
pub mod filter {
    /// Frames to our MAC.
    pub const DIRECTED: u32 = 0x1;
    /// All multicast.
    pub const ALL_MULTICAST: u32 = 0x4;
    /// Broadcast.
    pub const BROADCAST: u32 = 0x8;
    /// Promiscuous.
    pub const PROMISCUOUS: u32 = 0x20;
}

/// NDIS object header types and offload constants.
pub mod ndis {
    /// NDIS_OBJECT_TYPE_DEFAULT (offload parameters).
    pub const OBJECT_TYPE_DEFAULT: u8 = 0x80;
    /// NDIS_OBJECT_TYPE_OFFLOAD (hardware capabilities).
    pub const OBJECT_TYPE_OFFLOAD: u8 = 0xa7;
    /// `ndis_offload` size up to NDIS 6.0 (header, checksum, LSOv1, IPsecv1, LSOv2, flags).
    pub const OFFLOAD_SIZE_6_0: u16 = 112;
    /// `ndis_offload` size for NDIS 6.1 (adds IPsecv2).
    pub const OFFLOAD_SIZE_6_1: u16 = 144;
    /// `ndis_offload` size for NDIS 6.30 (adds RSC and encapsulation).
    pub const OFFLOAD_SIZE: u16 = 156;
    /// `NDIS_TXCSUM_CAP_TCP4 | NDIS_TXCSUM_CAP_TCP4OPT`.
    pub const TXCSUM_ALL_TCP4: u32 = 0x010 | 0x004;
    /// `NDIS_TXCSUM_CAP_UDP4`.
    pub const TXCSUM_UDP4: u32 = 0x040;
    /// `NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED`.
    pub const PARAM_TX_RX_DISABLED: u8 = 1;
    /// `NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED`.
    pub const PARAM_TX_RX_ENABLED: u8 = 4;
    /// Offload parameters size sent up to NVSP 4 (`VERSION_4_OFFLOAD_SIZE`).
    pub const OFFLOAD_PARAMS_SIZE_V4: u16 = 22;
    /// `sizeof(struct ndis_offload_params)` from NVSP 5.
    pub const OFFLOAD_PARAMS_SIZE: u16 = 28;
    /// `NDIS_OFFLOAD_PARAMETERS_REVISION_3`.
    pub const OFFLOAD_PARAMS_REVISION: u8 = 3;
}

/// Per-packet-info types (`enum ndis_per_pkt_info_type`).
pub mod ppi {
    /// TCPIP_CHKSUM_PKTINFO: `ndis_tcp_ip_checksum_info`.
    pub const TCPIP_CHKSUM: u32 = 0;
    /// IEEE_8021Q_INFO.
    pub const IEEE_8021Q: u32 = 6;
    /// NBL_HASH_VALUE.
    pub const NBL_HASH_VALUE: u32 = 8;
}

/// `ndis_tcp_ip_checksum_info` transmit bits.
pub mod csum {
    /// `transmit.is_ipv4`.
    pub const TX_IS_IPV4: u32 = 1 << 0;
    /// `transmit.tcp_checksum`.
    pub const TX_TCP: u32 = 1 << 2;
    /// `transmit.udp_checksum`.
    pub const TX_UDP: u32 = 1 << 3;
    /// `transmit.tcp_header_offset` shift (10 bits).
    pub const TX_HEADER_OFFSET_SHIFT: u32 = 16;
    /// `receive.tcp_checksum_failed`.
    pub const RX_TCP_FAILED: u32 = 1 << 0;
    /// `receive.udp_checksum_failed`.
    pub const RX_UDP_FAILED: u32 = 1 << 1;
}

/// Version requested in INITIALIZE (`RNDIS_MAJOR_VERSION`.`RNDIS_MINOR_VERSION`).
pub const RNDIS_VERSION: (u32, u32) = (1, 0);
/// `max_xfer_size` netvsc puts in INITIALIZE.
pub const MAX_XFER_SIZE: u32 = 0x4000;

/// Why an RNDIS message is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RndisError {
    /// Shorter than its layout or than `msg_len`.
    Truncated { msg_type: u32, len: usize, need: usize },
    /// An offset/length pair points outside the message.
    BadRange { what: &'static str, offset: u32, len: u32, msg_len: u32 },
}

impl fmt::Display for RndisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { msg_type, len, need } => {
                write!(f, "RNDIS message {msg_type:#x}: {len} bytes, needs {need}")
            }
            Self::BadRange { what, offset, len, msg_len } => {
                write!(f, "RNDIS {what}: {len} bytes at offset {offset} outside a {msg_len}-byte message")
            }
        }
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// A parsed RNDIS control message (data messages go through [`parse_packet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RndisMessage {
    /// INITIALIZE request.
    Initialize { req_id: u32, major: u32, minor: u32, max_xfer_size: u32 },
    /// INITIALIZE completion.
    InitializeComplete {
        req_id: u32,
        status: u32,
        major: u32,
        minor: u32,
        dev_flags: u32,
        medium: u32,
        max_pkt_per_msg: u32,
        max_xfer_size: u32,
        pkt_alignment_factor: u32,
    },
    /// QUERY request with its input buffer.
    Query { req_id: u32, oid: u32, info: Vec<u8> },
    /// QUERY completion with the information buffer.
    QueryComplete { req_id: u32, status: u32, info: Vec<u8> },
    /// SET request.
    Set { req_id: u32, oid: u32, info: Vec<u8> },
    /// SET completion.
    SetComplete { req_id: u32, status: u32 },
    /// INDICATE_STATUS (link changes).
    IndicateStatus { status: u32, info: Vec<u8> },
    /// KEEPALIVE request.
    Keepalive { req_id: u32 },
    /// KEEPALIVE completion.
    KeepaliveComplete { req_id: u32, status: u32 },
    /// A data message (see [`parse_packet`]).
    Packet,
    /// Another type.
    Other { msg_type: u32 },
}

impl RndisMessage {
    /// Parses one message from `b` (which may extend past `msg_len`). Errors: [`RndisError`].
    pub fn parse(b: &[u8]) -> Result<Self, RndisError> {
        if b.len() < HEADER_LEN {
            return Err(RndisError::Truncated { msg_type: 0, len: b.len(), need: HEADER_LEN });
        }
        let t = u32_at(b, 0);
        let msg_len = u32_at(b, 4);
        if (msg_len as usize) < HEADER_LEN || msg_len as usize > b.len() {
            return Err(RndisError::Truncated { msg_type: t, len: b.len(), need: msg_len as usize });
        }
        let b = &b[..msg_len as usize];
        let need = |n: usize| {
            if b.len() < n {
                Err(RndisError::Truncated { msg_type: t, len: b.len(), need: n })
            } else {
                Ok(())
            }
        };
        // An information buffer: offset relative to byte 8, must lie in the message.
        let info = |off_at: usize, len_at: usize, min_off: u32| -> Result<Vec<u8>, RndisError> {
            let len = u32_at(b, len_at);
            let off = u32_at(b, off_at);
            if len == 0 {
                return Ok(Vec::new());
            }
            let start = HEADER_LEN as u64 + u64::from(off);
            if off < min_off || start + u64::from(len) > b.len() as u64 {
                return Err(RndisError::BadRange { what: "information buffer", offset: off, len, msg_len });
            }
            Ok(b[start as usize..start as usize + len as usize].to_vec())
        };
        use msgtype::*;
        Ok(match t {
            PACKET => Self::Packet,
            INIT => {
                need(24)?;
                Self::Initialize {
                    req_id: u32_at(b, 8),
                    major: u32_at(b, 12),
                    minor: u32_at(b, 16),
                    max_xfer_size: u32_at(b, 20),
                }
            }
            INIT_C => {
                need(44)?;
                Self::InitializeComplete {
                    req_id: u32_at(b, 8),
                    status: u32_at(b, 12),
                    major: u32_at(b, 16),
                    minor: u32_at(b, 20),
                    dev_flags: u32_at(b, 24),
                    medium: u32_at(b, 28),
                    max_pkt_per_msg: u32_at(b, 32),
                    max_xfer_size: u32_at(b, 36),
                    pkt_alignment_factor: u32_at(b, 40),
                }
            }
            QUERY | SET => {
                need(28)?;
                let i = info(20, 16, 20)?;
                if t == QUERY {
                    Self::Query { req_id: u32_at(b, 8), oid: u32_at(b, 12), info: i }
                } else {
                    Self::Set { req_id: u32_at(b, 8), oid: u32_at(b, 12), info: i }
                }
            }
            QUERY_C => {
                need(24)?;
                Self::QueryComplete { req_id: u32_at(b, 8), status: u32_at(b, 12), info: info(20, 16, 16)? }
            }
            SET_C => {
                need(16)?;
                Self::SetComplete { req_id: u32_at(b, 8), status: u32_at(b, 12) }
            }
            INDICATE => {
                need(20)?;
                Self::IndicateStatus { status: u32_at(b, 8), info: info(16, 12, 12)? }
            }
            KEEPALIVE => {
                need(12)?;
                Self::Keepalive { req_id: u32_at(b, 8) }
            }
            KEEPALIVE_C => {
                need(16)?;
                Self::KeepaliveComplete { req_id: u32_at(b, 8), status: u32_at(b, 12) }
            }
            other => Self::Other { msg_type: other },
        })
    }

    /// Encodes the message (requests put the information buffer right after the fixed fields, as
    /// `rndis_filter.c` does).
    pub fn emit(&self) -> Vec<u8> {
        use msgtype::*;
        let (t, mut b) = match self {
            Self::Initialize { req_id, major, minor, max_xfer_size } => {
                let mut b = vec![0u8; 24];
                put32(&mut b, 8, *req_id);
                put32(&mut b, 12, *major);
                put32(&mut b, 16, *minor);
                put32(&mut b, 20, *max_xfer_size);
                (INIT, b)
            }
            Self::InitializeComplete {
                req_id,
                status,
                major,
                minor,
                dev_flags,
                medium,
                max_pkt_per_msg,
                max_xfer_size,
                pkt_alignment_factor,
            } => {
                let mut b = vec![0u8; 52];
                for (i, v) in [
                    *req_id,
                    *status,
                    *major,
                    *minor,
                    *dev_flags,
                    *medium,
                    *max_pkt_per_msg,
                    *max_xfer_size,
                    *pkt_alignment_factor,
                ]
                .iter()
                .enumerate()
                {
                    put32(&mut b, 8 + i * 4, *v);
                }
                (INIT_C, b)
            }
            Self::Query { req_id, oid, info } | Self::Set { req_id, oid, info } => {
                let mut b = vec![0u8; 28 + info.len()];
                put32(&mut b, 8, *req_id);
                put32(&mut b, 12, *oid);
                put32(&mut b, 16, info.len() as u32);
                put32(&mut b, 20, 20);
                b[28..].copy_from_slice(info);
                (if matches!(self, Self::Query { .. }) { QUERY } else { SET }, b)
            }
            Self::QueryComplete { req_id, status, info } => {
                let mut b = vec![0u8; 24 + info.len()];
                put32(&mut b, 8, *req_id);
                put32(&mut b, 12, *status);
                put32(&mut b, 16, info.len() as u32);
                put32(&mut b, 20, if info.is_empty() { 0 } else { 16 });
                b[24..].copy_from_slice(info);
                (QUERY_C, b)
            }
            Self::SetComplete { req_id, status } => {
                let mut b = vec![0u8; 16];
                put32(&mut b, 8, *req_id);
                put32(&mut b, 12, *status);
                (SET_C, b)
            }
            Self::IndicateStatus { status, info } => {
                let mut b = vec![0u8; 20 + info.len()];
                put32(&mut b, 8, *status);
                put32(&mut b, 12, info.len() as u32);
                put32(&mut b, 16, if info.is_empty() { 0 } else { 12 });
                b[20..].copy_from_slice(info);
                (INDICATE, b)
            }
            Self::Keepalive { req_id } => {
                let mut b = vec![0u8; 12];
                put32(&mut b, 8, *req_id);
                (KEEPALIVE, b)
            }
            Self::KeepaliveComplete { req_id, status } => {
                let mut b = vec![0u8; 16];
                put32(&mut b, 8, *req_id);
                put32(&mut b, 12, *status);
                (KEEPALIVE_C, b)
            }
            Self::Packet => (PACKET, vec![0u8; PACKET_HEADER_LEN]),
            Self::Other { msg_type } => (*msg_type, vec![0u8; 8]),
        };
        let len = b.len() as u32;
        put32(&mut b, 0, t);
        put32(&mut b, 4, len);
        b
    }

    /// The request id of a completion, if it has one.
    pub fn req_id(&self) -> Option<u32> {
        match self {
            Self::InitializeComplete { req_id, .. }
            | Self::QueryComplete { req_id, .. }
            | Self::SetComplete { req_id, .. }
            | Self::KeepaliveComplete { req_id, .. } => Some(*req_id),
            _ => None,
        }
    }
}

/// Where the frame and the per-packet information of a data message are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketInfo {
    /// The Ethernet frame (bytes of the message).
    pub data: Range<usize>,
    /// The message length (`msg_len`).
    pub msg_len: usize,
    /// `ndis_tcp_ip_checksum_info` value, when present.
    pub csum: Option<u32>,
    /// 802.1Q info, when present.
    pub vlan: Option<u32>,
}

/// Parses a `REMOTE_NDIS_PACKET_MSG` at the start of `b`, checking every offset and length against the message
/// (as `rndis_filter_receive_data` and `rndis_get_ppi` do). Errors: [`RndisError`].
pub fn parse_packet(b: &[u8]) -> Result<PacketInfo, RndisError> {
    if b.len() < PACKET_HEADER_LEN {
        return Err(RndisError::Truncated { msg_type: msgtype::PACKET, len: b.len(), need: PACKET_HEADER_LEN });
    }
    let msg_len = u32_at(b, 4);
    if (msg_len as usize) < PACKET_HEADER_LEN || msg_len as usize > b.len() {
        return Err(RndisError::Truncated { msg_type: msgtype::PACKET, len: b.len(), need: msg_len as usize });
    }
    let body = msg_len as u64 - HEADER_LEN as u64;
    let data_off = u32_at(b, 8);
    let data_len = u32_at(b, 12);
    if u64::from(data_off) + u64::from(data_len) > body || (data_off as usize) < PACKET_HEADER_LEN - HEADER_LEN {
        return Err(RndisError::BadRange { what: "packet data", offset: data_off, len: data_len, msg_len });
    }
    let ppi_off = u32_at(b, 28);
    let ppi_len = u32_at(b, 32);
    let mut csum = None;
    let mut vlan = None;
    if ppi_len != 0 {
        if (ppi_off as usize) < PACKET_HEADER_LEN - HEADER_LEN || u64::from(ppi_off) + u64::from(ppi_len) > body {
            return Err(RndisError::BadRange { what: "per-packet info", offset: ppi_off, len: ppi_len, msg_len });
        }
        let mut pos = HEADER_LEN + ppi_off as usize;
        let end = pos + ppi_len as usize;
        while pos + 12 <= end {
            let size = u32_at(b, pos) as usize;
            let ty = u32_at(b, pos + 4);
            let off = u32_at(b, pos + 8) as usize;
            if size < 12 || pos + size > end || off >= size {
                return Err(RndisError::BadRange {
                    what: "per-packet info entry",
                    offset: (pos - HEADER_LEN) as u32,
                    len: size as u32,
                    msg_len,
                });
            }
            let internal = ty & 0x8000_0000 != 0;
            if size - off >= 4 && !internal {
                let v = u32_at(b, pos + off);
                match ty & 0x7fff_ffff {
                    ppi::TCPIP_CHKSUM => csum = Some(v),
                    ppi::IEEE_8021Q => vlan = Some(v),
                    _ => {}
                }
            }
            pos += size;
        }
    }
    let start = HEADER_LEN + data_off as usize;
    Ok(PacketInfo { data: start..start + data_len as usize, msg_len: msg_len as usize, csum, vlan })
}

/// Writes a data message header for a frame of `frame_len` bytes with `ppis` (type, 4-byte value) into `buf`
/// (which must hold [`packet_header_len`] bytes); the frame goes right after. Returns the header length.
pub fn emit_packet_header(buf: &mut [u8], frame_len: usize, ppis: &[(u32, u32)]) -> usize {
    let hdr = packet_header_len(ppis.len());
    buf[..hdr].fill(0);
    put32(buf, 0, msgtype::PACKET);
    put32(buf, 4, (hdr + frame_len) as u32);
    put32(buf, 8, (hdr - HEADER_LEN) as u32);
    put32(buf, 12, frame_len as u32);
    if !ppis.is_empty() {
        put32(buf, 28, (PACKET_HEADER_LEN - HEADER_LEN) as u32);
        put32(buf, 32, (ppis.len() * PPI_LEN) as u32);
    }
    for (i, (ty, v)) in ppis.iter().enumerate() {
        let o = PACKET_HEADER_LEN + i * PPI_LEN;
        put32(buf, o, PPI_LEN as u32);
        put32(buf, o + 4, *ty);
        put32(buf, o + 8, 12);
        put32(buf, o + 12, *v);
    }
    hdr
}

/// Header length of a data message with `ppis` per-packet-info entries.
pub fn packet_header_len(ppis: usize) -> usize {
    PACKET_HEADER_LEN + ppis * PPI_LEN
}

/// The transmit checksum request for an Ethernet frame (`ndis_tcp_ip_checksum_info.transmit`): for IPv4 TCP or UDP
/// the L4 protocol bit, `is_ipv4`, and the L4 header offset; `None` for anything else (ARP, ICMP, fragments).
pub fn tx_checksum_info(frame: &[u8]) -> Option<u32> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = (ip[0] & 0xf) as usize * 4;
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if ip[0] >> 4 != 4 || ihl < 20 || frag & 0x3fff != 0 {
        return None;
    }
    let l4 = match ip[9] {
        6 => csum::TX_TCP,
        17 => csum::TX_UDP,
        _ => return None,
    };
    Some(csum::TX_IS_IPV4 | l4 | (((14 + ihl) as u32) << csum::TX_HEADER_OFFSET_SHIFT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip() {
        let msgs = [
            RndisMessage::Initialize { req_id: 1, major: 1, minor: 0, max_xfer_size: MAX_XFER_SIZE },
            RndisMessage::InitializeComplete {
                req_id: 1,
                status: status::SUCCESS,
                major: 1,
                minor: 0,
                dev_flags: 1,
                medium: 0,
                max_pkt_per_msg: 8,
                max_xfer_size: 0x4000,
                pkt_alignment_factor: 3,
            },
            RndisMessage::Query { req_id: 2, oid: oid::PERMANENT_ADDRESS, info: vec![] },
            RndisMessage::QueryComplete { req_id: 2, status: 0, info: vec![0, 0x15, 0x5d, 1, 2, 3] },
            RndisMessage::Set { req_id: 3, oid: oid::GEN_CURRENT_PACKET_FILTER, info: vec![0xd, 0, 0, 0] },
            RndisMessage::SetComplete { req_id: 3, status: 0 },
            RndisMessage::IndicateStatus { status: status::MEDIA_CONNECT, info: vec![] },
            RndisMessage::Keepalive { req_id: 4 },
            RndisMessage::KeepaliveComplete { req_id: 4, status: 0 },
        ];
        for m in msgs {
            let b = m.emit();
            assert_eq!(u32_at(&b, 4) as usize, b.len());
            assert_eq!(RndisMessage::parse(&b), Ok(m));
        }
        let q = RndisMessage::Query { req_id: 9, oid: oid::PERMANENT_ADDRESS, info: vec![] }.emit();
        assert_eq!(q.len(), 28, "RNDIS_MESSAGE_SIZE(struct rndis_query_request)");
        assert_eq!(u32_at(&q, 20), 20, "info_buf_offset = sizeof(struct rndis_query_request)");
    }

    #[test]
    fn hostile_info_buffers_are_rejected() {
        let mut b = RndisMessage::QueryComplete { req_id: 2, status: 0, info: vec![1, 2, 3, 4, 5, 6] }.emit();
        put32(&mut b, 16, 1000);
        assert!(matches!(RndisMessage::parse(&b), Err(RndisError::BadRange { what: "information buffer", .. })));
        let mut b = RndisMessage::SetComplete { req_id: 1, status: 0 }.emit();
        put32(&mut b, 4, 4096);
        assert!(matches!(RndisMessage::parse(&b), Err(RndisError::Truncated { .. })));
    }

    #[test]
    fn data_packet_with_checksum_ppi() {
        let frame = [0xabu8; 60];
        let mut buf = vec![0u8; packet_header_len(1) + frame.len()];
        let hdr = emit_packet_header(&mut buf, frame.len(), &[(ppi::TCPIP_CHKSUM, 0x0022_0005)]);
        assert_eq!(hdr, 60);
        buf[hdr..].copy_from_slice(&frame);
        let info = parse_packet(&buf).unwrap();
        assert_eq!(&buf[info.data.clone()], &frame[..]);
        assert_eq!(info.csum, Some(0x0022_0005));
        assert_eq!(info.msg_len, buf.len());
        let mut plain = vec![0u8; packet_header_len(0) + 10];
        emit_packet_header(&mut plain, 10, &[]);
        let i = parse_packet(&plain).unwrap();
        assert_eq!(i.data, 44..54);
        assert_eq!(i.csum, None);
    }

    #[test]
    fn hostile_data_packets_are_rejected() {
        let mut buf = vec![0u8; packet_header_len(1) + 60];
        emit_packet_header(&mut buf, 60, &[(ppi::TCPIP_CHKSUM, 1)]);
        let mut bad = buf.clone();
        put32(&mut bad, 12, 5000); // data_len past the message
        assert!(matches!(parse_packet(&bad), Err(RndisError::BadRange { what: "packet data", .. })));
        let mut bad = buf.clone();
        put32(&mut bad, 44, 0xffff); // PPI entry size
        assert!(matches!(parse_packet(&bad), Err(RndisError::BadRange { what: "per-packet info entry", .. })));
        let mut bad = buf.clone();
        put32(&mut bad, 8, 2); // data offset inside the header
        assert!(parse_packet(&bad).is_err());
        assert!(parse_packet(&buf[..20]).is_err());
    }

    #[test]
    fn checksum_request_for_tcp_and_udp() {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 6;
        assert_eq!(tx_checksum_info(&f), Some(csum::TX_IS_IPV4 | csum::TX_TCP | (34 << 16)));
        f[14 + 9] = 17;
        assert_eq!(tx_checksum_info(&f), Some(csum::TX_IS_IPV4 | csum::TX_UDP | (34 << 16)));
        f[14 + 9] = 1;
        assert_eq!(tx_checksum_info(&f), None);
        f[12] = 0x08;
        f[13] = 0x06;
        assert_eq!(tx_checksum_info(&f), None, "ARP");
    }
}
