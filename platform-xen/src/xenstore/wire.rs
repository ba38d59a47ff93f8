//! Xenstore wire format: a 16-byte `struct xsd_sockmsg` header (`type`, `req_id`, `tx_id`, `len`, little-endian
//! u32s) followed by `len` bytes of payload, mostly NUL-terminated strings. [`Header`] is a checked view over
//! received bytes; [`Message`] the owned representation with `parse`/`emit`; [`Decoder`] reassembles messages
//! from the byte stream the ring delivers.
//! Source: Xen `xen/include/public/io/xs_wire.h` (`enum xsd_sockmsg_type`, `struct xsd_sockmsg`,
//! `XENSTORE_PAYLOAD_MAX`, `xsd_errors`, `enum xs_watch_type`), `docs/misc/xenstore.txt`.
#![forbid(unsafe_code)]

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use libos::wire::{read_u32, write_u32, Field};

/// Header length (bytes).
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: the largest payload either side may send (bytes).
pub const PAYLOAD_MAX: usize = 4096;

/// `enum xsd_sockmsg_type` values this client sends or receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MsgType {
    /// `XS_DIRECTORY`: list a node's children.
    Directory = 1,
    /// `XS_READ`.
    Read = 2,
    /// `XS_WATCH`: payload `path\0token\0`.
    Watch = 4,
    /// `XS_UNWATCH`.
    Unwatch = 5,
    /// `XS_TRANSACTION_START`: reply is the transaction id as a decimal string.
    TransactionStart = 6,
    /// `XS_TRANSACTION_END`: payload `"T\0"` (commit) or `"F\0"` (abort).
    TransactionEnd = 7,
    /// `XS_GET_DOMAIN_PATH`.
    GetDomainPath = 10,
    /// `XS_WRITE`: payload `path\0value` (value not NUL-terminated).
    Write = 11,
    /// `XS_MKDIR`.
    Mkdir = 12,
    /// `XS_RM`.
    Rm = 13,
    /// `XS_WATCH_EVENT`: unsolicited; payload `path\0token\0`.
    WatchEvent = 15,
    /// `XS_ERROR`: payload is an errno name such as `"ENOENT\0"`.
    Error = 16,
}

impl MsgType {
    /// The type for a raw value, `None` for values this client never expects.
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Directory,
            2 => Self::Read,
            4 => Self::Watch,
            5 => Self::Unwatch,
            6 => Self::TransactionStart,
            7 => Self::TransactionEnd,
            10 => Self::GetDomainPath,
            11 => Self::Write,
            12 => Self::Mkdir,
            13 => Self::Rm,
            15 => Self::WatchEvent,
            16 => Self::Error,
            _ => return None,
        })
    }
}

/// A xenstore transaction id (`tx_id` of `struct xsd_sockmsg`): the reply to `XS_TRANSACTION_START`, carried by
/// every request inside the transaction; [`XBT_NIL`] is "no transaction".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct XsTxId(pub u32);

/// `XBT_NIL`: no transaction.
pub const XBT_NIL: XsTxId = XsTxId(0);

impl fmt::Display for XsTxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Malformed xenstore data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Fewer bytes than a header.
    Truncated {
        /// Bytes available.
        len: usize,
    },
    /// `len` above [`PAYLOAD_MAX`].
    PayloadTooLong {
        /// The header's `len`.
        len: u32,
    },
    /// A string in the payload is not NUL-terminated or not UTF-8.
    BadString {
        /// What was being parsed.
        what: &'static str,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { len } => write!(f, "xenstore message of {len} bytes is shorter than its header"),
            Self::PayloadTooLong { len } => {
                write!(f, "xenstore message payload of {len} bytes exceeds the {PAYLOAD_MAX}-byte maximum")
            }
            Self::BadString { what } => write!(f, "xenstore {what}: not a NUL-terminated UTF-8 string"),
        }
    }
}

/// Byte ranges of `struct xsd_sockmsg`.
mod field {
    use super::Field;
    pub const TYPE: Field = 0..4;
    pub const REQ_ID: Field = 4..8;
    pub const TX_ID: Field = 8..12;
    pub const LEN: Field = 12..16;
}

/// A checked view of a `struct xsd_sockmsg` header at the start of a buffer.
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
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let h = Self::new_unchecked(buffer);
        h.check_len()?;
        Ok(h)
    }

    /// Checks that the buffer holds a whole header and that `len` is within [`PAYLOAD_MAX`], so no accessor
    /// panics and the payload length is sane.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated { len: b.len() });
        }
        if self.len() as usize > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong { len: self.len() });
        }
        Ok(())
    }

    /// The buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// `type` (raw; see [`MsgType`]).
    pub fn msg_type(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::TYPE)
    }
    /// `req_id`, echoed in the reply.
    pub fn req_id(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::REQ_ID)
    }
    /// `tx_id`: the transaction, [`XBT_NIL`] for none.
    pub fn tx_id(&self) -> XsTxId {
        XsTxId(read_u32(self.buffer.as_ref(), field::TX_ID))
    }
    /// `len`: payload bytes following the header.
    pub fn len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::LEN)
    }
    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Sets `type`.
    pub fn set_msg_type(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::TYPE, v);
    }
    /// Sets `req_id`.
    pub fn set_req_id(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::REQ_ID, v);
    }
    /// Sets `tx_id`.
    pub fn set_tx_id(&mut self, v: XsTxId) {
        write_u32(self.buffer.as_mut(), field::TX_ID, v.0);
    }
    /// Sets `len`.
    pub fn set_len(&mut self, v: u32) {
        write_u32(self.buffer.as_mut(), field::LEN, v);
    }
}

/// A whole xenstore message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Raw `type`.
    pub msg_type: u32,
    /// `req_id`.
    pub req_id: u32,
    /// `tx_id`.
    pub tx_id: XsTxId,
    /// Payload (at most [`PAYLOAD_MAX`] bytes).
    pub payload: Vec<u8>,
}

impl Message {
    /// A request of `msg_type` built from NUL-terminated `strings` followed by raw `tail` bytes (the value of an
    /// `XS_WRITE`). Errors: [`WireError::PayloadTooLong`].
    pub fn request(
        msg_type: MsgType,
        req_id: u32,
        tx_id: XsTxId,
        strings: &[&str],
        tail: &[u8],
    ) -> Result<Self, WireError> {
        let len = strings.iter().map(|s| s.len() + 1).sum::<usize>() + tail.len();
        if len > PAYLOAD_MAX {
            return Err(WireError::PayloadTooLong { len: len as u32 });
        }
        let mut payload = Vec::with_capacity(len);
        for s in strings {
            payload.extend_from_slice(s.as_bytes());
            payload.push(0);
        }
        payload.extend_from_slice(tail);
        Ok(Self { msg_type: msg_type as u32, req_id, tx_id, payload })
    }

    /// Parses one message from the start of `bytes`; returns it and the bytes used, or `Ok(None)` when more
    /// bytes are needed. Errors: [`WireError::PayloadTooLong`].
    pub fn parse(bytes: &[u8]) -> Result<Option<(Self, usize)>, WireError> {
        if bytes.len() < HEADER_LEN {
            return Ok(None);
        }
        let h = Header::new_checked(bytes)?;
        let total = HEADER_LEN + h.len() as usize;
        if bytes.len() < total {
            return Ok(None);
        }
        let m = Self {
            msg_type: h.msg_type(),
            req_id: h.req_id(),
            tx_id: h.tx_id(),
            payload: bytes[HEADER_LEN..total].to_vec(),
        };
        Ok(Some((m, total)))
    }

    /// Appends the wire form (header + payload) to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut header = Header::new_unchecked([0u8; HEADER_LEN]);
        header.set_msg_type(self.msg_type);
        header.set_req_id(self.req_id);
        header.set_tx_id(self.tx_id);
        header.set_len(self.payload.len() as u32);
        out.extend_from_slice(&header.into_inner());
        out.extend_from_slice(&self.payload);
    }

    /// The payload as text: everything up to an optional trailing NUL, as UTF-8 (a read value, an error name, a
    /// transaction id). Errors: [`WireError::BadString`].
    pub fn text(&self) -> Result<&str, WireError> {
        let p = self.payload.strip_suffix(&[0]).unwrap_or(&self.payload);
        core::str::from_utf8(p).map_err(|_| WireError::BadString { what: "reply" })
    }

    /// The payload as a list of NUL-terminated strings (a directory listing, a watch event). An empty payload is
    /// an empty list. Errors: [`WireError::BadString`].
    pub fn strings(&self) -> Result<Vec<&str>, WireError> {
        if self.payload.is_empty() {
            return Ok(Vec::new());
        }
        let body = self.payload.strip_suffix(&[0]).ok_or(WireError::BadString { what: "string list" })?;
        body.split(|&b| b == 0)
            .map(|s| core::str::from_utf8(s).map_err(|_| WireError::BadString { what: "string list" }))
            .collect()
    }

    /// For an `XS_WATCH_EVENT`: `(path, token)`. Errors: [`WireError::BadString`] unless exactly two strings
    /// (a trailing empty string, sent by some daemons, is tolerated).
    pub fn watch_event(&self) -> Result<(String, String), WireError> {
        let s = self.strings()?;
        match s.as_slice() {
            [path, token] | [path, token, ""] => Ok((String::from(*path), String::from(*token))),
            _ => Err(WireError::BadString { what: "watch event" }),
        }
    }
}

/// Reassembles messages from a byte stream.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if any. Errors: [`WireError::PayloadTooLong`] (the stream cannot be resynced).
    pub fn next_message(&mut self) -> Result<Option<Message>, WireError> {
        match Message::parse(&self.buf)? {
            Some((m, used)) => {
                self.buf.drain(..used);
                Ok(Some(m))
            }
            None => Ok(None),
        }
    }

    /// Bytes held for an incomplete message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    #[test]
    fn header_view_and_round_trip() {
        let m = Message::request(MsgType::Write, 7, XsTxId(3), &["device/vif/0/state"], b"4").expect("fits");
        let mut wire = Vec::new();
        m.emit(&mut wire);
        assert_eq!(&wire[..4], &11u32.to_le_bytes());
        let h = Header::new_checked(&wire[..]).expect("header");
        assert_eq!((h.msg_type(), h.req_id(), h.tx_id(), h.len()), (11, 7, XsTxId(3), 20));
        assert!(!h.is_empty());
        let (back, used) = Message::parse(&wire).expect("valid").expect("complete");
        assert_eq!((back, used), (m, wire.len()));
        assert_eq!(MsgType::from_raw(11), Some(MsgType::Write));
        assert_eq!(MsgType::from_raw(3), None);
    }

    #[test]
    fn payload_accessors() {
        let dir = Message { msg_type: 1, req_id: 1, tx_id: XBT_NIL, payload: b"0\x001\x00".to_vec() };
        assert_eq!(dir.strings(), Ok(vec!["0", "1"]));
        let empty = Message { payload: Vec::new(), ..dir.clone() };
        assert_eq!(empty.strings(), Ok(vec![]));
        let unterminated = Message { payload: b"0\x001".to_vec(), ..dir.clone() };
        assert!(unterminated.strings().is_err());
        let bad_utf8 = Message { payload: vec![0xff, 0], ..dir.clone() };
        assert!(bad_utf8.strings().is_err() && bad_utf8.text().is_err());
        let read = Message { payload: b"00:16:3e:00:00:01".to_vec(), ..dir.clone() };
        assert_eq!(read.text(), Ok("00:16:3e:00:00:01"));
        let ev = Message { msg_type: 15, payload: b"control/shutdown\0tok\0".to_vec(), ..dir.clone() };
        assert_eq!(ev.watch_event(), Ok((String::from("control/shutdown"), String::from("tok"))));
        let bad_ev = Message { payload: b"only-path\0".to_vec(), ..ev };
        assert!(bad_ev.watch_event().is_err());
    }

    #[test]
    fn malformed_input() {
        assert_eq!(Header::new_checked(&[0u8; 15][..]).err(), Some(WireError::Truncated { len: 15 }));
        let mut wire = Vec::new();
        for v in [2u32, 1, 0, 4097] {
            wire.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(Message::parse(&wire), Err(WireError::PayloadTooLong { len: 4097 }));
        assert!(Message::request(MsgType::Write, 0, XBT_NIL, &["p"], &[0; 4095]).is_err());
        let e = std::format!("{}", WireError::PayloadTooLong { len: 4097 });
        assert!(e.contains("4097") && e.contains("4096"));
    }

    #[test]
    fn decoder_reassembles_split_and_joined_messages() {
        let mut wire = Vec::new();
        Message::request(MsgType::Read, 1, XBT_NIL, &["a"], b"").expect("fits").emit(&mut wire);
        Message::request(MsgType::Read, 2, XBT_NIL, &["bb"], b"").expect("fits").emit(&mut wire);
        let mut d = Decoder::new();
        for chunk in wire.chunks(5) {
            d.push(chunk);
        }
        assert_eq!(d.next_message().expect("ok").map(|m| m.req_id), Some(1));
        assert_eq!(d.next_message().expect("ok").map(|m| m.req_id), Some(2));
        assert_eq!(d.next_message(), Ok(None));
        d.push(&wire[..10]);
        assert_eq!(d.next_message(), Ok(None));
        assert_eq!(d.buffered(), 10);
    }
}
