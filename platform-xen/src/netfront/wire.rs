//! netif wire formats: the TX ring's `netif_tx_request` / `netif_tx_response`, the RX ring's `netif_rx_request`
//! / `netif_rx_response`, and the `netif_extra_info` slots that may follow an RX response. Each is a checked
//! view over bytes with an owned form that parses and emits it (`TxRequest` / [`TxRequestRepr`], ...); extra
//! info is only skipped, so it has a view alone.
//! Source: Xen `xen/include/public/io/netif.h` (`struct netif_tx_request`, `struct netif_tx_response`,
//! `struct netif_rx_request`, `struct netif_rx_response`, `struct netif_extra_info`, `NETTXF_*`, `NETRXF_*`,
//! `XEN_NETIF_EXTRA_FLAG_*`, `NETIF_RSP_*`).
#![forbid(unsafe_code)]

use crate::gnttab::GrantRef;
use crate::ring::slot::{self, ShortBuffer, SlotLayout, SlotView};
use libos::wire::{read_u16, read_u32, read_u8, write_u16, write_u32, write_u8};

/// TX ring slot size (`netif_tx_request`, 12 bytes; the response is smaller).
pub const TX_SLOT: usize = 12;
/// RX ring slot size (`netif_rx_request` / `netif_rx_response` / `netif_extra_info`, 8 bytes).
pub const RX_SLOT: usize = 8;
/// Size of `struct netif_tx_response` (bytes).
pub const TX_RESPONSE_LEN: usize = 4;

/// `NETTXF_more_data`: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_data_validated`: the checksum was verified (or the packet was generated locally).
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank`: the checksum field holds only the pseudo-header sum.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_more_data`: the packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`: a `netif_extra_info` follows in the next slot.
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1;
/// `NETIF_RSP_NULL`: the response to an auxiliary (extra-info) request.
pub const NETIF_RSP_NULL: i16 = 1;
/// `NETIF_RSP_OKAY`.
pub const NETIF_RSP_OKAY: i16 = 0;

/// Byte ranges of the netif structures.
mod field {
    use libos::wire::Field;

    // struct netif_tx_request.
    pub const TX_GREF: Field = 0..4;
    pub const TX_OFFSET: Field = 4..6;
    pub const TX_FLAGS: Field = 6..8;
    pub const TX_ID: Field = 8..10;
    pub const TX_SIZE: Field = 10..12;

    // struct netif_tx_response.
    pub const TX_RSP_ID: Field = 0..2;
    pub const TX_RSP_STATUS: Field = 2..4;

    // struct netif_rx_request.
    pub const RX_ID: Field = 0..2;
    pub const RX_GREF: Field = 4..8;

    // struct netif_rx_response.
    pub const RX_RSP_ID: Field = 0..2;
    pub const RX_RSP_OFFSET: Field = 2..4;
    pub const RX_RSP_FLAGS: Field = 4..6;
    pub const RX_RSP_STATUS: Field = 6..8;

    // struct netif_extra_info.
    pub const EXTRA_TYPE: Field = 0..1;
    pub const EXTRA_FLAGS: Field = 1..2;
}

/// `struct netif_tx_request` (a [`SlotLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum NetifTxRequest {}

impl SlotLayout for NetifTxRequest {
    const NAME: &'static str = "netif_tx_request";
    const LEN: usize = TX_SLOT;
}

/// A checked view of a `struct netif_tx_request`.
pub type TxRequest<T> = SlotView<NetifTxRequest, T>;

impl<T: AsRef<[u8]>> TxRequest<T> {
    /// `gref`: the grant of the page holding the data.
    pub fn gref(&self) -> GrantRef {
        GrantRef(read_u32(self.bytes(), field::TX_GREF))
    }
    /// `offset` of the data in the page (bytes).
    pub fn offset(&self) -> u16 {
        read_u16(self.bytes(), field::TX_OFFSET)
    }
    /// `flags` (`NETTXF_*`).
    pub fn flags(&self) -> u16 {
        read_u16(self.bytes(), field::TX_FLAGS)
    }
    /// `id`, echoed in the response.
    pub fn id(&self) -> u16 {
        read_u16(self.bytes(), field::TX_ID)
    }
    /// `size` (bytes; the first fragment's is the whole packet's).
    pub fn size(&self) -> u16 {
        read_u16(self.bytes(), field::TX_SIZE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TxRequest<T> {
    /// Sets `gref`.
    pub fn set_gref(&mut self, v: GrantRef) {
        write_u32(self.bytes_mut(), field::TX_GREF, v.0);
    }
    /// Sets `offset`.
    pub fn set_offset(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::TX_OFFSET, v);
    }
    /// Sets `flags`.
    pub fn set_flags(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::TX_FLAGS, v);
    }
    /// Sets `id`.
    pub fn set_id(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::TX_ID, v);
    }
    /// Sets `size`.
    pub fn set_size(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::TX_SIZE, v);
    }
}

/// `struct netif_tx_response` (a [`SlotLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum NetifTxResponse {}

impl SlotLayout for NetifTxResponse {
    const NAME: &'static str = "netif_tx_response";
    const LEN: usize = TX_RESPONSE_LEN;
}

/// A checked view of a `struct netif_tx_response` (at the start of a TX slot).
pub type TxResponse<T> = SlotView<NetifTxResponse, T>;

impl<T: AsRef<[u8]>> TxResponse<T> {
    /// `id` of the request answered.
    pub fn id(&self) -> u16 {
        read_u16(self.bytes(), field::TX_RSP_ID)
    }
    /// `status` (`NETIF_RSP_*`).
    pub fn status(&self) -> i16 {
        read_u16(self.bytes(), field::TX_RSP_STATUS) as i16
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TxResponse<T> {
    /// Sets `id`.
    pub fn set_id(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::TX_RSP_ID, v);
    }
    /// Sets `status`.
    pub fn set_status(&mut self, v: i16) {
        write_u16(self.bytes_mut(), field::TX_RSP_STATUS, v as u16);
    }
}

/// `struct netif_rx_request` (a [`SlotLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum NetifRxRequest {}

impl SlotLayout for NetifRxRequest {
    const NAME: &'static str = "netif_rx_request";
    const LEN: usize = RX_SLOT;
}

/// A checked view of a `struct netif_rx_request`.
pub type RxRequest<T> = SlotView<NetifRxRequest, T>;

impl<T: AsRef<[u8]>> RxRequest<T> {
    /// `id`, echoed in the response.
    pub fn id(&self) -> u16 {
        read_u16(self.bytes(), field::RX_ID)
    }
    /// `gref`: the grant of the (writable) page to receive into.
    pub fn gref(&self) -> GrantRef {
        GrantRef(read_u32(self.bytes(), field::RX_GREF))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RxRequest<T> {
    /// Sets `id`.
    pub fn set_id(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::RX_ID, v);
    }
    /// Sets `gref`.
    pub fn set_gref(&mut self, v: GrantRef) {
        write_u32(self.bytes_mut(), field::RX_GREF, v.0);
    }
}

/// `struct netif_rx_response` (a [`SlotLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum NetifRxResponse {}

impl SlotLayout for NetifRxResponse {
    const NAME: &'static str = "netif_rx_response";
    const LEN: usize = RX_SLOT;
}

/// A checked view of a `struct netif_rx_response`.
pub type RxResponse<T> = SlotView<NetifRxResponse, T>;

impl<T: AsRef<[u8]>> RxResponse<T> {
    /// `id` of the request answered.
    pub fn id(&self) -> u16 {
        read_u16(self.bytes(), field::RX_RSP_ID)
    }
    /// `offset` of the data in the page (bytes).
    pub fn offset(&self) -> u16 {
        read_u16(self.bytes(), field::RX_RSP_OFFSET)
    }
    /// `flags` (`NETRXF_*`).
    pub fn flags(&self) -> u16 {
        read_u16(self.bytes(), field::RX_RSP_FLAGS)
    }
    /// `status`: negative, a `NETIF_RSP_*` error; otherwise the fragment's length (bytes).
    pub fn status(&self) -> i16 {
        read_u16(self.bytes(), field::RX_RSP_STATUS) as i16
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RxResponse<T> {
    /// Sets `id`.
    pub fn set_id(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::RX_RSP_ID, v);
    }
    /// Sets `offset`.
    pub fn set_offset(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::RX_RSP_OFFSET, v);
    }
    /// Sets `flags`.
    pub fn set_flags(&mut self, v: u16) {
        write_u16(self.bytes_mut(), field::RX_RSP_FLAGS, v);
    }
    /// Sets `status`.
    pub fn set_status(&mut self, v: i16) {
        write_u16(self.bytes_mut(), field::RX_RSP_STATUS, v as u16);
    }
}

/// `struct netif_extra_info` (a [`SlotLayout`]).
#[derive(Clone, Copy, Debug)]
pub enum NetifExtraInfo {}

impl SlotLayout for NetifExtraInfo {
    const NAME: &'static str = "netif_extra_info";
    const LEN: usize = RX_SLOT;
}

/// A checked view of a `struct netif_extra_info` (an RX slot after a response with `NETRXF_extra_info`).
pub type ExtraInfo<T> = SlotView<NetifExtraInfo, T>;

impl<T: AsRef<[u8]>> ExtraInfo<T> {
    /// `type` (`XEN_NETIF_EXTRA_TYPE_*`).
    pub fn extra_type(&self) -> u8 {
        read_u8(self.bytes(), field::EXTRA_TYPE)
    }
    /// `flags` (`XEN_NETIF_EXTRA_FLAG_*`).
    pub fn flags(&self) -> u8 {
        read_u8(self.bytes(), field::EXTRA_FLAGS)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ExtraInfo<T> {
    /// Sets `type`.
    pub fn set_extra_type(&mut self, v: u8) {
        write_u8(self.bytes_mut(), field::EXTRA_TYPE, v);
    }
    /// Sets `flags`.
    pub fn set_flags(&mut self, v: u8) {
        write_u8(self.bytes_mut(), field::EXTRA_FLAGS, v);
    }
}

/// A transmit request: one fragment of a packet in a granted page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxRequestRepr {
    /// Grant of the page holding the data.
    pub gref: GrantRef,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Packet size (first fragment: the whole packet).
    pub size: u16,
}

impl TxRequestRepr {
    /// Reads a request (backend peers). Errors: [`ShortBuffer`].
    pub fn parse<T: AsRef<[u8]>>(r: &TxRequest<T>) -> Result<Self, ShortBuffer> {
        r.check_len()?;
        Ok(Self { gref: r.gref(), offset: r.offset(), flags: r.flags(), id: r.id(), size: r.size() })
    }

    /// Writes the request into `r`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut TxRequest<T>) {
        r.set_gref(self.gref);
        r.set_offset(self.offset);
        r.set_flags(self.flags);
        r.set_id(self.id);
        r.set_size(self.size);
    }

    /// The 12-byte wire form.
    pub fn to_bytes(&self) -> [u8; TX_SLOT] {
        slot::to_bytes(|r| self.emit(r))
    }
}

/// A transmit response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxResponseRepr {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

impl TxResponseRepr {
    /// Reads a response (a slot copied out of the ring). Errors: [`ShortBuffer`].
    pub fn parse<T: AsRef<[u8]>>(r: &TxResponse<T>) -> Result<Self, ShortBuffer> {
        r.check_len()?;
        Ok(Self { id: r.id(), status: r.status() })
    }

    /// Writes the response into `r` (backend peers).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut TxResponse<T>) {
        r.set_id(self.id);
        r.set_status(self.status);
    }

    /// The wire form in a 12-byte TX slot (backend peers).
    pub fn to_bytes(&self) -> [u8; TX_SLOT] {
        slot::to_bytes(|r| self.emit(r))
    }
}

/// A receive request: a buffer page the backend may copy a fragment into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxRequestRepr {
    /// Echoed in the response.
    pub id: u16,
    /// Grant of the (writable) page to receive into.
    pub gref: GrantRef,
}

impl RxRequestRepr {
    /// Reads a request (backend peers). Errors: [`ShortBuffer`].
    pub fn parse<T: AsRef<[u8]>>(r: &RxRequest<T>) -> Result<Self, ShortBuffer> {
        r.check_len()?;
        Ok(Self { id: r.id(), gref: r.gref() })
    }

    /// Writes the request into `r`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut RxRequest<T>) {
        r.set_id(self.id);
        r.set_gref(self.gref);
    }

    /// The 8-byte wire form.
    pub fn to_bytes(&self) -> [u8; RX_SLOT] {
        slot::to_bytes(|r| self.emit(r))
    }
}

/// A receive response: one fragment of a packet, or an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxResponseRepr {
    /// The request's id.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Negative: `NETIF_RSP_*` error; otherwise the fragment's length in bytes.
    pub status: i16,
}

impl RxResponseRepr {
    /// Reads a response (a slot copied out of the ring). Errors: [`ShortBuffer`].
    pub fn parse<T: AsRef<[u8]>>(r: &RxResponse<T>) -> Result<Self, ShortBuffer> {
        r.check_len()?;
        Ok(Self { id: r.id(), offset: r.offset(), flags: r.flags(), status: r.status() })
    }

    /// Writes the response into `r` (backend peers).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, r: &mut RxResponse<T>) {
        r.set_id(self.id);
        r.set_offset(self.offset);
        r.set_flags(self.flags);
        r.set_status(self.status);
    }

    /// The 8-byte wire form (backend peers).
    pub fn to_bytes(&self) -> [u8; RX_SLOT] {
        slot::to_bytes(|r| self.emit(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip() {
        let t = TxRequestRepr { gref: GrantRef(0x1234_5678), offset: 2, flags: NETTXF_MORE_DATA, id: 7, size: 1514 };
        assert_eq!(TxRequestRepr::parse(&TxRequest::new_unchecked(&t.to_bytes()[..])), Ok(t));
        assert_eq!(t.to_bytes(), [0x78, 0x56, 0x34, 0x12, 2, 0, 4, 0, 7, 0, 0xea, 0x05]);
        let r = RxResponseRepr { id: 3, offset: 10, flags: NETRXF_MORE_DATA, status: -2 };
        assert_eq!(RxResponseRepr::parse(&RxResponse::new_unchecked(&r.to_bytes()[..])), Ok(r));
        assert_eq!(r.to_bytes()[6..8], [0xfe, 0xff]);
        let q = RxRequestRepr { id: 255, gref: GrantRef(99) };
        assert_eq!(q.to_bytes(), [255, 0, 0, 0, 99, 0, 0, 0]);
        assert_eq!(RxRequestRepr::parse(&RxRequest::new_unchecked(&q.to_bytes()[..])), Ok(q));
        let tr = TxResponseRepr { id: 1, status: -1 };
        assert_eq!(TxResponseRepr::parse(&TxResponse::new_unchecked(&tr.to_bytes()[..])).map(|r| r.status), Ok(-1));
    }

    #[test]
    fn extra_info_flags() {
        let mut b = [0u8; RX_SLOT];
        let mut e = ExtraInfo::new_unchecked(&mut b[..]);
        e.set_extra_type(1);
        e.set_flags(XEN_NETIF_EXTRA_FLAG_MORE);
        assert_eq!(b[..2], [1, XEN_NETIF_EXTRA_FLAG_MORE]);
        let e = ExtraInfo::new_checked(&b[..]).expect("slot");
        assert_eq!((e.extra_type(), e.flags()), (1, XEN_NETIF_EXTRA_FLAG_MORE));
    }

    #[test]
    fn short_buffers_are_refused() {
        let b = [0u8; TX_SLOT];
        assert_eq!(
            TxRequest::new_checked(&b[..11]).err(),
            Some(ShortBuffer { what: "netif_tx_request", len: 11, need: TX_SLOT })
        );
        assert!(TxResponseRepr::parse(&TxResponse::new_unchecked(&b[..3])).is_err());
        assert!(RxRequest::new_checked(&b[..7]).is_err());
        assert!(RxResponseRepr::parse(&RxResponse::new_unchecked(&b[..7])).is_err());
        assert!(ExtraInfo::new_checked(&b[..1]).is_err());
        assert!(TxResponse::new_checked(&b[..4]).is_ok());
    }
}
