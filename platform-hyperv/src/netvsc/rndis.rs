//! Remote NDIS messages as netvsc exchanges them with the host: INITIALIZE, QUERY, SET, INDICATE_STATUS,
//! KEEPALIVE and the data message `REMOTE_NDIS_PACKET_MSG` with per-packet information (checksum offload, large
//! send offload v2).
//! Every message starts with `msg_type` and `msg_len` (u32, little-endian); request and completion fields follow;
//! offsets in a message are relative to the byte after the 8-byte header. Source: Linux
//! `drivers/net/hyperv/hyperv_net.h` (`struct rndis_*`, `ndis_tcp_ip_checksum_info`, `ndis_offload`),
//! `drivers/net/hyperv/rndis_filter.c`, `include/linux/rndis.h` (message types, OIDs, status codes). The NDIS
//! objects netvsc exchanges inside QUERY and SET (`ndis_object_header`, `ndis_offload`, `ndis_offload_params`)
//! and the Ethernet/IPv4 header fields the transmit checksum request needs (IEEE 802.3, RFC 791) are here too.
//!
//! [`Message`] (control messages) and [`PacketMessage`] (data messages) are checked views with field ranges in a
//! private `mod field`; [`RndisMessage`] and [`PacketInfo`] the owned forms.
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;
use libos::wire::{read_u16_be, read_u32, read_u8, write_u16, write_u32, write_u8, Field};

/// Size of the RNDIS message header (`msg_type`, `msg_len`).
pub const HEADER_LEN: usize = field::MSG_LEN.end;
/// Size of a data message header: the header plus `struct rndis_packet` (36 bytes).
pub const PACKET_HEADER_LEN: usize = field::packet::RESERVED.end;
/// Size of one per-packet-info entry with a 4-byte value (`rndis_per_packet_info` + u32).
pub const PPI_LEN: usize = field::ppi::VALUE.end;

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
    /// `NDIS_OFFLOAD_ENCAP_8023`: an encapsulation bit of `ndis_offload` (IEEE 802.3 frames).
    pub const OFFLOAD_ENCAP_8023: u32 = 2;
    /// `NDIS_OFFLOAD_LSOV2_DISABLED` (`ndis_offload_params.lso_v2_ipv4`).
    pub const LSOV2_DISABLED: u8 = 1;
    /// `NDIS_OFFLOAD_LSOV2_ENABLED`.
    pub const LSOV2_ENABLED: u8 = 2;
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
    /// TCP_LARGESEND_PKTINFO: `ndis_tcp_lso_info`.
    pub const TCP_LARGESEND: u32 = 2;
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
    /// `receive.tcp_checksum_succeeded`.
    pub const RX_TCP_SUCCEEDED: u32 = 1 << 3;
    /// `receive.udp_checksum_succeeded`.
    pub const RX_UDP_SUCCEEDED: u32 = 1 << 4;
}

/// `ndis_tcp_lso_info.lso_v2_transmit` bits.
pub mod lso {
    /// `mss` (bits 19:0).
    pub const MSS_MASK: u32 = 0xf_ffff;
    /// `tcp_header_offset` shift (10 bits).
    pub const HEADER_OFFSET_SHIFT: u32 = 20;
    /// `type` = `NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE` (bit 30).
    pub const TYPE_V2: u32 = 1 << 30;
    /// `ip_version` = `NDIS_TCP_LARGE_SEND_OFFLOAD_IPV6` (bit 31; 0 is IPv4).
    pub const IPV6: u32 = 1 << 31;
}

/// Version requested in INITIALIZE (`RNDIS_MAJOR_VERSION`.`RNDIS_MINOR_VERSION`).
pub const RNDIS_VERSION: (u32, u32) = (1, 0);
/// `max_xfer_size` netvsc puts in INITIALIZE.
pub const MAX_XFER_SIZE: u32 = 0x4000;

mod field {
    use super::Field;

    /// `rndis_message`: `msg_type`, `msg_len`.
    pub const MSG_TYPE: Field = 0..4;
    pub const MSG_LEN: Field = 4..8;
    /// `req_id` of every request and completion (all but INDICATE_STATUS and data messages).
    pub const REQ_ID: Field = 8..12;

    /// `rndis_initialize_request`.
    pub mod init {
        use super::Field;
        pub const MAJOR_VER: Field = 12..16;
        pub const MINOR_VER: Field = 16..20;
        pub const MAX_XFER_SIZE: Field = 20..24;
    }

    /// `rndis_initialize_complete`.
    pub mod init_complete {
        use super::Field;
        pub const STATUS: Field = 12..16;
        pub const MAJOR_VER: Field = 16..20;
        pub const MINOR_VER: Field = 20..24;
        pub const DEV_FLAGS: Field = 24..28;
        pub const MEDIUM: Field = 28..32;
        pub const MAX_PKT_PER_MSG: Field = 32..36;
        pub const MAX_XFER_SIZE: Field = 36..40;
        pub const PKT_ALIGNMENT_FACTOR: Field = 40..44;
        pub const AF_LIST_SIZE: Field = 48..52;
    }

    /// `rndis_query_request` and `rndis_set_request` (the information buffer follows `dev_vc_handle`).
    pub mod query {
        use super::Field;
        pub const OID: Field = 12..16;
        pub const INFO_BUFLEN: Field = 16..20;
        pub const INFO_BUF_OFFSET: Field = 20..24;
        pub const DEV_VC_HANDLE: Field = 24..28;
    }

    /// `rndis_query_complete`.
    pub mod query_complete {
        use super::Field;
        pub const STATUS: Field = 12..16;
        pub const INFO_BUFLEN: Field = 16..20;
        pub const INFO_BUF_OFFSET: Field = 20..24;
    }

    /// `rndis_set_complete` and `rndis_keepalive_complete`.
    pub mod complete {
        use super::Field;
        pub const STATUS: Field = 12..16;
    }

    /// `rndis_indicate_status`.
    pub mod indicate {
        use super::Field;
        pub const STATUS: Field = 8..12;
        pub const STATUS_BUFLEN: Field = 12..16;
        pub const STATUS_BUF_OFFSET: Field = 16..20;
    }

    /// `rndis_packet` (after the 8-byte header).
    pub mod packet {
        use super::Field;
        pub const DATA_OFFSET: Field = 8..12;
        pub const DATA_LEN: Field = 12..16;
        pub const PER_PKT_INFO_OFFSET: Field = 28..32;
        pub const PER_PKT_INFO_LEN: Field = 32..36;
        pub const RESERVED: Field = 40..44;
    }

    /// `rndis_per_packet_info` and, in the entries built here, its 4-byte value.
    pub mod ppi {
        use super::Field;
        pub const SIZE: Field = 0..4;
        /// Bits 30:0 type, bit 31 `internal`.
        pub const TYPE: Field = 4..8;
        pub const PPI_OFFSET: Field = 8..12;
        pub const VALUE: Field = 12..16;
    }

    /// `ndis_object_header`.
    pub mod ndis_header {
        use super::Field;
        pub const TYPE: Field = 0..1;
        pub const REVISION: Field = 1..2;
        pub const SIZE: Field = 2..4;
    }

    /// `ndis_offload.csum` (`ndis_csum_offload.ip4_txcsum`).
    pub mod offload {
        use super::Field;
        pub const IP4_TXCSUM: Field = 8..12;
        /// `ndis_offload.lsov2` (`ndis_lsov2_offload`): after the checksum (32 bytes), LSOv1 (16) and IPsecv1 (28).
        pub const LSOV2_IP4_ENCAP: Field = 80..84;
        pub const LSOV2_IP4_MAXSZ: Field = 84..88;
        pub const LSOV2_IP4_MINSG: Field = 88..92;
    }

    /// `ndis_offload_params`.
    pub mod offload_params {
        use super::Field;
        pub const IP_V4_CSUM: Field = 4..5;
        pub const TCP_IP_V4_CSUM: Field = 5..6;
        pub const UDP_IP_V4_CSUM: Field = 6..7;
        pub const LSO_V2_IPV4: Field = 11..12;
    }

    /// Ethernet II (IEEE 802.3 §3.2.6) and IPv4 (RFC 791 §3.1) header fields, big-endian.
    pub mod frame {
        use super::Field;
        pub const ETHERTYPE: Field = 12..14;
        pub const ETH_LEN: usize = ETHERTYPE.end;
        /// Relative to the IPv4 header: version (7:4) and IHL (3:0).
        pub const IP_VERSION_IHL: Field = 0..1;
        /// Flags (15:13) and fragment offset (12:0).
        pub const IP_FLAGS_FRAGMENT: Field = 6..8;
        pub const IP_PROTOCOL: Field = 9..10;
        pub const IP_MIN_LEN: usize = 20;
    }
}

/// Why an RNDIS message is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RndisError {
    /// Shorter than its layout or than `msg_len`.
    Truncated {
        /// `msg_type` of the message ([`msgtype`]).
        msg_type: u32,
        /// Bytes available.
        len: usize,
        /// Bytes the layout (or `msg_len`) needs.
        need: usize,
    },
    /// An offset/length pair points outside the message.
    BadRange {
        /// The buffer, e.g. "information buffer" or "packet data".
        what: &'static str,
        /// Its offset field (bytes from the end of the 8-byte message header).
        offset: u32,
        /// Its length field (bytes).
        len: u32,
        /// `msg_len` of the message (bytes).
        msg_len: u32,
    },
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

/// Bytes of the fixed layout the parser needs for message type `t` (the header alone for types not decoded).
fn fixed_len(t: u32) -> usize {
    use msgtype::*;
    match t {
        INIT => field::init::MAX_XFER_SIZE.end,
        INIT_C => field::init_complete::PKT_ALIGNMENT_FACTOR.end,
        QUERY | SET => field::query::DEV_VC_HANDLE.end,
        QUERY_C => field::query_complete::INFO_BUF_OFFSET.end,
        SET_C | KEEPALIVE_C => field::complete::STATUS.end,
        INDICATE => field::indicate::STATUS_BUF_OFFSET.end,
        KEEPALIVE => field::REQ_ID.end,
        _ => HEADER_LEN,
    }
}

/// A checked view of one RNDIS control message (`struct rndis_message`): [`Message::new_checked`] proves the
/// header, a `msg_len` inside the buffer, and the type's fixed layout inside `msg_len`.
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
    pub fn new_checked(buffer: T) -> Result<Self, RndisError> {
        let m = Self::new_unchecked(buffer);
        m.check_len()?;
        Ok(m)
    }

    /// Checks the header, `msg_len` (at least a header, at most the buffer) and the type's fixed layout within
    /// `msg_len`. Errors: [`RndisError::Truncated`].
    pub fn check_len(&self) -> Result<(), RndisError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(RndisError::Truncated { msg_type: 0, len, need: HEADER_LEN });
        }
        let (t, msg_len) = (self.msg_type(), self.msg_len() as usize);
        if msg_len < HEADER_LEN || msg_len > len {
            return Err(RndisError::Truncated { msg_type: t, len, need: msg_len });
        }
        let need = fixed_len(t);
        if msg_len < need {
            return Err(RndisError::Truncated { msg_type: t, len: msg_len, need });
        }
        Ok(())
    }

    /// `msg_type` ([`msgtype`]).
    pub fn msg_type(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MSG_TYPE)
    }

    /// `msg_len` (bytes, header included).
    pub fn msg_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::MSG_LEN)
    }

    /// The message's `msg_len` bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.msg_len() as usize]
    }

    /// An information buffer whose length and offset (relative to the byte after the header) are in fields
    /// `len_at` and `off_at`; an offset below `min_off` would overlap the fixed fields. Empty when the length is
    /// 0. Errors: [`RndisError::BadRange`] for a buffer outside the message.
    fn info(&self, off_at: Field, len_at: Field, min_off: u32) -> Result<&[u8], RndisError> {
        let b = self.as_bytes();
        let (len, off) = (read_u32(b, len_at), read_u32(b, off_at));
        if len == 0 {
            return Ok(&[]);
        }
        let start = HEADER_LEN as u64 + u64::from(off);
        if off < min_off || start + u64::from(len) > b.len() as u64 {
            return Err(RndisError::BadRange { what: "information buffer", offset: off, len, msg_len: self.msg_len() });
        }
        Ok(&b[start as usize..start as usize + len as usize])
    }
}

/// A parsed RNDIS control message (data messages go through [`parse_packet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RndisMessage {
    /// INITIALIZE request.
    Initialize {
        /// `req_id`, echoed in the completion.
        req_id: u32,
        /// `major_ver`: RNDIS major version (1).
        major: u32,
        /// `minor_ver`: RNDIS minor version (0).
        minor: u32,
        /// `max_xfer_size`: largest message the guest accepts (bytes).
        max_xfer_size: u32,
    },
    /// INITIALIZE completion.
    InitializeComplete {
        /// `req_id` of the request.
        req_id: u32,
        /// `status` (`RNDIS_STATUS_*`, see [`status`]).
        status: u32,
        /// `major_ver`: the device's RNDIS major version.
        major: u32,
        /// `minor_ver`: the device's RNDIS minor version.
        minor: u32,
        /// `dev_flags` (`RNDIS_DF_*`: connectionless or connection-oriented).
        dev_flags: u32,
        /// `medium` (`RNDIS_MEDIUM_*`; 0 = 802.3).
        medium: u32,
        /// `max_pkt_per_msg`: most data packets the device accepts in one message.
        max_pkt_per_msg: u32,
        /// `max_xfer_size`: largest message the device accepts (bytes).
        max_xfer_size: u32,
        /// `pkt_alignment_factor`: packets in one message align to 2^this bytes.
        pkt_alignment_factor: u32,
    },
    /// QUERY request with its input buffer.
    Query {
        /// `req_id`, echoed in the completion.
        req_id: u32,
        /// `oid`: the NDIS object queried ([`oid`]).
        oid: u32,
        /// The input buffer (`info_buflen` bytes at `info_buf_offset`).
        info: Vec<u8>,
    },
    /// QUERY completion with the information buffer.
    QueryComplete {
        /// `req_id` of the request.
        req_id: u32,
        /// `status` (`RNDIS_STATUS_*`, see [`status`]).
        status: u32,
        /// The information buffer (`info_buflen` bytes at `info_buf_offset`).
        info: Vec<u8>,
    },
    /// SET request.
    Set {
        /// `req_id`, echoed in the completion.
        req_id: u32,
        /// `oid`: the NDIS object set ([`oid`]).
        oid: u32,
        /// The new value (`info_buflen` bytes at `info_buf_offset`).
        info: Vec<u8>,
    },
    /// SET completion.
    SetComplete {
        /// `req_id` of the request.
        req_id: u32,
        /// `status` (`RNDIS_STATUS_*`, see [`status`]).
        status: u32,
    },
    /// INDICATE_STATUS (link changes).
    IndicateStatus {
        /// `status`: the indication, e.g. [`status::MEDIA_CONNECT`].
        status: u32,
        /// The status buffer (`status_buflen` bytes at `status_buf_offset`).
        info: Vec<u8>,
    },
    /// KEEPALIVE request.
    Keepalive {
        /// `req_id`, echoed in the completion.
        req_id: u32,
    },
    /// KEEPALIVE completion.
    KeepaliveComplete {
        /// `req_id` of the request.
        req_id: u32,
        /// `status` (`RNDIS_STATUS_*`, see [`status`]).
        status: u32,
    },
    /// A data message (see [`parse_packet`]).
    Packet,
    /// Another type.
    Other {
        /// `msg_type` of the message.
        msg_type: u32,
    },
}

/// The offset (relative to the byte after the header) at which requests and completions put their information
/// buffer: right after the fixed fields, as `rndis_filter.c` does.
fn info_offset(fixed_end: usize) -> u32 {
    (fixed_end - HEADER_LEN) as u32
}

impl RndisMessage {
    /// Parses one message from `b` (which may extend past `msg_len`). Errors: [`RndisError`].
    pub fn parse(b: &[u8]) -> Result<Self, RndisError> {
        let m = Message::new_checked(b)?;
        let b = m.as_bytes();
        let u = |f: Field| read_u32(b, f);
        // Only the types whose fixed layout has it (checked above) carry a request id: a header-only message of
        // another type is 8 bytes.
        let req_id = || u(field::REQ_ID);
        use msgtype::*;
        Ok(match m.msg_type() {
            PACKET => Self::Packet,
            INIT => {
                use field::init::*;
                Self::Initialize {
                    req_id: req_id(),
                    major: u(MAJOR_VER),
                    minor: u(MINOR_VER),
                    max_xfer_size: u(MAX_XFER_SIZE),
                }
            }
            INIT_C => {
                use field::init_complete::*;
                Self::InitializeComplete {
                    req_id: req_id(),
                    status: u(STATUS),
                    major: u(MAJOR_VER),
                    minor: u(MINOR_VER),
                    dev_flags: u(DEV_FLAGS),
                    medium: u(MEDIUM),
                    max_pkt_per_msg: u(MAX_PKT_PER_MSG),
                    max_xfer_size: u(MAX_XFER_SIZE),
                    pkt_alignment_factor: u(PKT_ALIGNMENT_FACTOR),
                }
            }
            t @ (QUERY | SET) => {
                use field::query::*;
                let info = m.info(INFO_BUF_OFFSET, INFO_BUFLEN, info_offset(fixed_len(t)))?.to_vec();
                if t == QUERY {
                    Self::Query { req_id: req_id(), oid: u(OID), info }
                } else {
                    Self::Set { req_id: req_id(), oid: u(OID), info }
                }
            }
            QUERY_C => {
                use field::query_complete::*;
                let info = m.info(INFO_BUF_OFFSET, INFO_BUFLEN, info_offset(fixed_len(QUERY_C)))?.to_vec();
                Self::QueryComplete { req_id: req_id(), status: u(STATUS), info }
            }
            SET_C => Self::SetComplete { req_id: req_id(), status: u(field::complete::STATUS) },
            INDICATE => {
                use field::indicate::*;
                let info = m.info(STATUS_BUF_OFFSET, STATUS_BUFLEN, info_offset(fixed_len(INDICATE)))?.to_vec();
                Self::IndicateStatus { status: u(STATUS), info }
            }
            KEEPALIVE => Self::Keepalive { req_id: req_id() },
            KEEPALIVE_C => Self::KeepaliveComplete { req_id: req_id(), status: u(field::complete::STATUS) },
            other => Self::Other { msg_type: other },
        })
    }

    /// The `msg_type` of the message.
    pub fn msg_type(&self) -> u32 {
        use msgtype::*;
        match self {
            Self::Initialize { .. } => INIT,
            Self::InitializeComplete { .. } => INIT_C,
            Self::Query { .. } => QUERY,
            Self::QueryComplete { .. } => QUERY_C,
            Self::Set { .. } => SET,
            Self::SetComplete { .. } => SET_C,
            Self::IndicateStatus { .. } => INDICATE,
            Self::Keepalive { .. } => KEEPALIVE,
            Self::KeepaliveComplete { .. } => KEEPALIVE_C,
            Self::Packet => PACKET,
            Self::Other { msg_type } => *msg_type,
        }
    }

    /// Encodes the message (requests put the information buffer right after the fixed fields, as
    /// `rndis_filter.c` does); `msg_len` is the encoding's length.
    pub fn emit(&self) -> Vec<u8> {
        // The fixed layout's end and the information buffer, if the type carries one.
        let (fixed, info): (usize, &[u8]) = match self {
            Self::Initialize { .. } => (field::init::MAX_XFER_SIZE.end, &[]),
            Self::InitializeComplete { .. } => (field::init_complete::AF_LIST_SIZE.end, &[]),
            Self::Query { info, .. } | Self::Set { info, .. } => (field::query::DEV_VC_HANDLE.end, info),
            Self::QueryComplete { info, .. } => (field::query_complete::INFO_BUF_OFFSET.end, info),
            Self::SetComplete { .. } | Self::KeepaliveComplete { .. } => (field::complete::STATUS.end, &[]),
            Self::IndicateStatus { info, .. } => (field::indicate::STATUS_BUF_OFFSET.end, info),
            Self::Keepalive { .. } => (field::REQ_ID.end, &[]),
            Self::Packet => (PACKET_HEADER_LEN, &[]),
            Self::Other { .. } => (HEADER_LEN, &[]),
        };
        let mut v = vec![0u8; fixed + info.len()];
        let b = &mut v[..];
        write_u32(b, field::MSG_TYPE, self.msg_type());
        write_u32(b, field::MSG_LEN, (fixed + info.len()) as u32);
        b[fixed..].copy_from_slice(info);
        // Completions with an empty information buffer leave its offset 0.
        let info_at = |b: &mut [u8], off: Field, len: Field, always: bool| {
            write_u32(b, len, info.len() as u32);
            write_u32(b, off, if always || !info.is_empty() { info_offset(fixed) } else { 0 });
        };
        match self {
            Self::Initialize { req_id, major, minor, max_xfer_size } => {
                use field::init::*;
                write_u32(b, field::REQ_ID, *req_id);
                write_u32(b, MAJOR_VER, *major);
                write_u32(b, MINOR_VER, *minor);
                write_u32(b, MAX_XFER_SIZE, *max_xfer_size);
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
                use field::init_complete::*;
                write_u32(b, field::REQ_ID, *req_id);
                write_u32(b, STATUS, *status);
                write_u32(b, MAJOR_VER, *major);
                write_u32(b, MINOR_VER, *minor);
                write_u32(b, DEV_FLAGS, *dev_flags);
                write_u32(b, MEDIUM, *medium);
                write_u32(b, MAX_PKT_PER_MSG, *max_pkt_per_msg);
                write_u32(b, MAX_XFER_SIZE, *max_xfer_size);
                write_u32(b, PKT_ALIGNMENT_FACTOR, *pkt_alignment_factor);
            }
            Self::Query { req_id, oid, .. } | Self::Set { req_id, oid, .. } => {
                use field::query::*;
                write_u32(b, field::REQ_ID, *req_id);
                write_u32(b, OID, *oid);
                info_at(b, INFO_BUF_OFFSET, INFO_BUFLEN, true);
            }
            Self::QueryComplete { req_id, status, .. } => {
                use field::query_complete::*;
                write_u32(b, field::REQ_ID, *req_id);
                write_u32(b, STATUS, *status);
                info_at(b, INFO_BUF_OFFSET, INFO_BUFLEN, false);
            }
            Self::SetComplete { req_id, status } | Self::KeepaliveComplete { req_id, status } => {
                write_u32(b, field::REQ_ID, *req_id);
                write_u32(b, field::complete::STATUS, *status);
            }
            Self::IndicateStatus { status, .. } => {
                use field::indicate::*;
                write_u32(b, STATUS, *status);
                info_at(b, STATUS_BUF_OFFSET, STATUS_BUFLEN, false);
            }
            Self::Keepalive { req_id } => write_u32(b, field::REQ_ID, *req_id),
            Self::Packet | Self::Other { .. } => {}
        }
        v
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

/// A checked view of a data message (`REMOTE_NDIS_PACKET_MSG`, `struct rndis_packet`): [`PacketMessage::new_checked`]
/// proves the header, `msg_len`, the frame and the per-packet-info area all lie inside the message, as
/// `rndis_filter_receive_data` does.
#[derive(Debug, Clone, Copy)]
pub struct PacketMessage<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> PacketMessage<T> {
    /// Wraps `buffer` without checks (accessors may panic on a short buffer).
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, RndisError> {
        let m = Self::new_unchecked(buffer);
        m.check_len()?;
        Ok(m)
    }

    fn u32(&self, f: Field) -> u32 {
        read_u32(self.buffer.as_ref(), f)
    }

    /// Checks the data message header, `msg_len`, and that the frame and the per-packet-info area lie in the
    /// message after the header. Errors: [`RndisError`].
    pub fn check_len(&self) -> Result<(), RndisError> {
        let len = self.buffer.as_ref().len();
        if len < PACKET_HEADER_LEN {
            return Err(RndisError::Truncated { msg_type: msgtype::PACKET, len, need: PACKET_HEADER_LEN });
        }
        let msg_len = self.msg_len();
        if (msg_len as usize) < PACKET_HEADER_LEN || msg_len as usize > len {
            return Err(RndisError::Truncated { msg_type: msgtype::PACKET, len, need: msg_len as usize });
        }
        let body = u64::from(msg_len) - HEADER_LEN as u64;
        let min_off = (PACKET_HEADER_LEN - HEADER_LEN) as u32;
        let (off, n) = (self.data_offset(), self.data_len());
        if u64::from(off) + u64::from(n) > body || off < min_off {
            return Err(RndisError::BadRange { what: "packet data", offset: off, len: n, msg_len });
        }
        let (off, n) = (self.u32(field::packet::PER_PKT_INFO_OFFSET), self.u32(field::packet::PER_PKT_INFO_LEN));
        if n != 0 && (off < min_off || u64::from(off) + u64::from(n) > body) {
            return Err(RndisError::BadRange { what: "per-packet info", offset: off, len: n, msg_len });
        }
        Ok(())
    }

    /// `msg_len` (bytes).
    pub fn msg_len(&self) -> u32 {
        self.u32(field::MSG_LEN)
    }

    /// `data_offset`: the frame's offset after the 8-byte header (bytes).
    pub fn data_offset(&self) -> u32 {
        self.u32(field::packet::DATA_OFFSET)
    }

    /// `data_len`: the frame's length (bytes).
    pub fn data_len(&self) -> u32 {
        self.u32(field::packet::DATA_LEN)
    }

    /// The frame's bytes within the message.
    pub fn data_range(&self) -> Range<usize> {
        let start = HEADER_LEN + self.data_offset() as usize;
        start..start + self.data_len() as usize
    }

    /// The per-packet-info area within the message (empty without per-packet info).
    pub fn ppi_range(&self) -> Range<usize> {
        let n = self.u32(field::packet::PER_PKT_INFO_LEN) as usize;
        if n == 0 {
            return 0..0;
        }
        let start = HEADER_LEN + self.u32(field::packet::PER_PKT_INFO_OFFSET) as usize;
        start..start + n
    }

    /// Calls `f(type, value)` for each non-internal per-packet-info entry with at least a 4-byte value, in order
    /// (`rndis_get_ppi`). Errors: [`RndisError::BadRange`] for an entry whose size or offset leaves the area.
    pub fn for_each_ppi(&self, mut f: impl FnMut(u32, u32)) -> Result<(), RndisError> {
        let b = self.buffer.as_ref();
        let area = self.ppi_range();
        let mut pos = area.start;
        while pos + field::ppi::VALUE.start <= area.end {
            let e = &b[pos..area.end];
            let size = read_u32(e, field::ppi::SIZE) as usize;
            let ty = read_u32(e, field::ppi::TYPE);
            let off = read_u32(e, field::ppi::PPI_OFFSET) as usize;
            if size < field::ppi::VALUE.start || size > e.len() || off >= size {
                return Err(RndisError::BadRange {
                    what: "per-packet info entry",
                    offset: (pos - HEADER_LEN) as u32,
                    len: size as u32,
                    msg_len: self.msg_len(),
                });
            }
            let internal = ty & 0x8000_0000 != 0;
            if size - off >= 4 && !internal {
                f(ty & 0x7fff_ffff, read_u32(e, off..off + 4));
            }
            pos += size;
        }
        Ok(())
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
    let m = PacketMessage::new_checked(b)?;
    let (mut csum, mut vlan) = (None, None);
    m.for_each_ppi(|ty, v| match ty {
        ppi::TCPIP_CHKSUM => csum = Some(v),
        ppi::IEEE_8021Q => vlan = Some(v),
        _ => {}
    })?;
    Ok(PacketInfo { data: m.data_range(), msg_len: m.msg_len() as usize, csum, vlan })
}

/// Writes a data message header for a frame of `frame_len` bytes with `ppis` (type, 4-byte value) into `buf`
/// (which must hold [`packet_header_len`] bytes); the frame goes right after. Returns the header length.
pub fn emit_packet_header(buf: &mut [u8], frame_len: usize, ppis: &[(u32, u32)]) -> usize {
    let hdr = packet_header_len(ppis.len());
    let b = &mut buf[..hdr];
    b.fill(0);
    write_u32(b, field::MSG_TYPE, msgtype::PACKET);
    write_u32(b, field::MSG_LEN, (hdr + frame_len) as u32);
    write_u32(b, field::packet::DATA_OFFSET, (hdr - HEADER_LEN) as u32);
    write_u32(b, field::packet::DATA_LEN, frame_len as u32);
    if !ppis.is_empty() {
        write_u32(b, field::packet::PER_PKT_INFO_OFFSET, (PACKET_HEADER_LEN - HEADER_LEN) as u32);
        write_u32(b, field::packet::PER_PKT_INFO_LEN, (ppis.len() * PPI_LEN) as u32);
    }
    for (i, (ty, v)) in ppis.iter().enumerate() {
        let e = &mut b[PACKET_HEADER_LEN + i * PPI_LEN..PACKET_HEADER_LEN + (i + 1) * PPI_LEN];
        write_u32(e, field::ppi::SIZE, PPI_LEN as u32);
        write_u32(e, field::ppi::TYPE, *ty);
        write_u32(e, field::ppi::PPI_OFFSET, field::ppi::VALUE.start as u32);
        write_u32(e, field::ppi::VALUE, *v);
    }
    hdr
}

/// Header length of a data message with `ppis` per-packet-info entries.
pub fn packet_header_len(ppis: usize) -> usize {
    PACKET_HEADER_LEN + ppis * PPI_LEN
}

/// The message type of the RNDIS message at the start of `b` (what a receive range carries), `None` when `b` is
/// shorter than the type field.
pub fn peek_msg_type(b: &[u8]) -> Option<u32> {
    libos::wire::get_u32(b, field::MSG_TYPE.start)
}

/// The OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES query input: an `ndis_offload` of [`ndis::OFFLOAD_SIZE`] bytes whose
/// header says type `NDIS_OBJECT_TYPE_OFFLOAD`, revision 3 (`rndis_query_hwcaps`).
pub fn offload_caps_query() -> Vec<u8> {
    let mut q = vec![0u8; ndis::OFFLOAD_SIZE as usize];
    write_u8(&mut q, field::ndis_header::TYPE, ndis::OBJECT_TYPE_OFFLOAD);
    write_u8(&mut q, field::ndis_header::REVISION, 3);
    write_u16(&mut q, field::ndis_header::SIZE, ndis::OFFLOAD_SIZE);
    q
}

/// `ndis_csum_offload.ip4_txcsum` of the host's `ndis_offload` answer, `None` when the object is shorter than
/// NDIS 6.0's ([`ndis::OFFLOAD_SIZE_6_0`]), not of type `NDIS_OBJECT_TYPE_OFFLOAD` or of revision 0.
pub fn offload_caps_ip4_txcsum(caps: &[u8]) -> Option<u32> {
    if caps.len() < ndis::OFFLOAD_SIZE_6_0 as usize
        || read_u8(caps, field::ndis_header::TYPE) != ndis::OBJECT_TYPE_OFFLOAD
        || read_u8(caps, field::ndis_header::REVISION) < 1
    {
        return None;
    }
    Some(read_u32(caps, field::offload::IP4_TXCSUM))
}

/// `ndis_offload.lsov2` for IPv4 of the host's answer when it segments 802.3 frames
/// (`ip4_encap & NDIS_OFFLOAD_ENCAP_8023`): (`ip4_maxsz`, the largest frame in bytes; `ip4_minsg`, the fewest
/// segments a large send must have). `None` for an object [`offload_caps_ip4_txcsum`] refuses or without LSOv2.
pub fn offload_caps_lsov2_ip4(caps: &[u8]) -> Option<(u32, u32)> {
    offload_caps_ip4_txcsum(caps)?;
    let encap = read_u32(caps, field::offload::LSOV2_IP4_ENCAP);
    (encap & ndis::OFFLOAD_ENCAP_8023 != 0)
        .then(|| (read_u32(caps, field::offload::LSOV2_IP4_MAXSZ), read_u32(caps, field::offload::LSOV2_IP4_MINSG)))
}

/// The `ndis_tcp_lso_info` value of an IPv4 large send (`lso_v2_transmit`): `mss` bytes of TCP payload per
/// segment, the TCP header at `tcp_header_offset` bytes into the frame.
pub fn lso_v2_info(mss: u16, tcp_header_offset: u16) -> u32 {
    lso::TYPE_V2 | (u32::from(tcp_header_offset) & 0x3ff) << lso::HEADER_OFFSET_SHIFT | (u32::from(mss) & lso::MSS_MASK)
}

/// The OID_TCP_OFFLOAD_PARAMETERS set input (`ndis_offload_params`, revision 3, [`ndis::OFFLOAD_PARAMS_SIZE`]
/// bytes) with the IPv4 header, TCP and UDP checksum settings (`NDIS_OFFLOAD_PARAMETERS_*`) and IPv4 LSOv2
/// (`NDIS_OFFLOAD_LSOV2_*`).
pub fn offload_params(ip: u8, tcp: u8, udp: u8, lso_v2_ipv4: u8) -> Vec<u8> {
    let size = ndis::OFFLOAD_PARAMS_SIZE;
    let mut p = vec![0u8; size as usize];
    write_u8(&mut p, field::ndis_header::TYPE, ndis::OBJECT_TYPE_DEFAULT);
    write_u8(&mut p, field::ndis_header::REVISION, ndis::OFFLOAD_PARAMS_REVISION);
    write_u16(&mut p, field::ndis_header::SIZE, size);
    write_u8(&mut p, field::offload_params::IP_V4_CSUM, ip);
    write_u8(&mut p, field::offload_params::TCP_IP_V4_CSUM, tcp);
    write_u8(&mut p, field::offload_params::UDP_IP_V4_CSUM, udp);
    write_u8(&mut p, field::offload_params::LSO_V2_IPV4, lso_v2_ipv4);
    p
}

/// The transmit checksum request for an Ethernet frame (`ndis_tcp_ip_checksum_info.transmit`): for IPv4 TCP or UDP
/// the L4 protocol bit, `is_ipv4`, and the L4 header offset; `None` for anything else (ARP, ICMP, fragments).
pub fn tx_checksum_info(frame: &[u8]) -> Option<u32> {
    use field::frame::*;
    if frame.len() < ETH_LEN + IP_MIN_LEN || read_u16_be(frame, ETHERTYPE) != 0x0800 {
        return None;
    }
    let ip = &frame[ETH_LEN..];
    let version_ihl = read_u8(ip, IP_VERSION_IHL);
    let ihl = (version_ihl & 0xf) as usize * 4;
    let frag = read_u16_be(ip, IP_FLAGS_FRAGMENT);
    if version_ihl >> 4 != 4 || ihl < IP_MIN_LEN || frag & 0x3fff != 0 {
        return None;
    }
    let l4 = match read_u8(ip, IP_PROTOCOL) {
        6 => csum::TX_TCP,
        17 => csum::TX_UDP,
        _ => return None,
    };
    Some(csum::TX_IS_IPV4 | l4 | (((ETH_LEN + ihl) as u32) << csum::TX_HEADER_OFFSET_SHIFT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_of(b: &[u8], at: usize) -> u32 {
        read_u32(b, at..at + 4)
    }

    fn put32(b: &mut [u8], at: usize, v: u32) {
        write_u32(b, at..at + 4, v)
    }

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
            assert_eq!(u32_of(&b, 4) as usize, b.len());
            let parsed = RndisMessage::parse(&b).unwrap();
            assert_eq!(parsed.emit(), b, "parse → emit reproduces the bytes");
            assert_eq!(parsed, m);
            // Each type refuses a message one byte short of its fixed layout.
            let need = fixed_len(m.msg_type());
            let mut short = b[..need - 1].to_vec();
            put32(&mut short, 4, (need - 1) as u32);
            assert_eq!(
                RndisMessage::parse(&short),
                Err(RndisError::Truncated { msg_type: m.msg_type(), len: need - 1, need }),
                "{m:?}"
            );
        }
        let q = RndisMessage::Query { req_id: 9, oid: oid::PERMANENT_ADDRESS, info: vec![] }.emit();
        assert_eq!(q.len(), 28, "RNDIS_MESSAGE_SIZE(struct rndis_query_request)");
        assert_eq!(u32_of(&q, 20), 20, "info_buf_offset = sizeof(struct rndis_query_request)");
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
    fn header_only_messages_of_other_types_parse() {
        // Found by the rndis fuzz target: an 8-byte message of a type without a request id read past its end.
        let b = [0x0a, 0, 0, 0xb0, 8, 0, 0, 0];
        assert_eq!(RndisMessage::parse(&b).unwrap(), RndisMessage::Other { msg_type: 0xb000_000a });
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
        let mut bad = buf.clone();
        put32(&mut bad, 32, 5000); // per-packet info past the message
        assert!(matches!(parse_packet(&bad), Err(RndisError::BadRange { what: "per-packet info", .. })));
    }

    #[test]
    fn ndis_offload_objects() {
        let q = offload_caps_query();
        assert_eq!(q.len(), 156);
        assert_eq!(&q[..4], &[0xa7, 3, 156, 0]);
        let mut caps = q.clone();
        put32(&mut caps, 8, ndis::TXCSUM_ALL_TCP4 | ndis::TXCSUM_UDP4);
        assert_eq!(offload_caps_ip4_txcsum(&caps), Some(0x54));
        assert_eq!(offload_caps_ip4_txcsum(&caps[..100]), None, "shorter than NDIS 6.0's ndis_offload");
        caps[0] = 0x80;
        assert_eq!(offload_caps_ip4_txcsum(&caps), None, "wrong object type");
        assert_eq!(offload_caps_lsov2_ip4(&caps), None, "refused object");
        caps[0] = 0xa7;
        assert_eq!(offload_caps_lsov2_ip4(&caps), None, "no LSOv2 for 802.3");
        put32(&mut caps, 80, ndis::OFFLOAD_ENCAP_8023);
        put32(&mut caps, 84, 62_780);
        put32(&mut caps, 88, 2);
        assert_eq!(offload_caps_lsov2_ip4(&caps), Some((62_780, 2)));
        let p = offload_params(
            ndis::PARAM_TX_RX_DISABLED,
            ndis::PARAM_TX_RX_ENABLED,
            ndis::PARAM_TX_RX_ENABLED,
            ndis::LSOV2_ENABLED,
        );
        assert_eq!(&p[..12], &[0x80, 3, 28, 0, 1, 4, 4, 0, 0, 0, 0, 2]);
        assert_eq!(p.len(), 28);
        // lso_v2_transmit: mss 20 bits, tcp_header_offset 10 bits, type V2, ip_version IPv4.
        assert_eq!(lso_v2_info(1460, 34), 0x4000_0000 | 34 << 20 | 1460);
        assert_eq!(peek_msg_type(&[1, 0, 0, 0]), Some(msgtype::PACKET));
        assert_eq!(peek_msg_type(&[1, 0]), None);
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
