//! netfront against a netback peer written from `io/netif.h`: it maps grants through the grant table, consumes
//! requests and produces responses on the same pages, including hostile ones.
extern crate std;

use super::wire::{
    RxRequest, RxRequestRepr, TxRequest, TxRequestRepr, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, NETRXF_MORE_DATA,
    XEN_NETIF_GSO_TYPE_TCPV4,
};
use super::*;
use crate::abi::XenErrno;
use crate::gnttab::{GTF_PERMIT_ACCESS, GTF_READONLY};
use crate::ring::backend::BackRing;
use core::sync::atomic::{AtomicU32, Ordering};
use std::vec;

/// The event channel the tests' backend listens on.
const PORT: EvtchnPort = EvtchnPort(9);

#[derive(Default)]
struct Kicks(AtomicU32);

impl EventChannelOps for Kicks {
    fn send(&self, _port: EvtchnPort) -> Result<(), XenErrno> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn alloc_unbound(&self, _remote: DomId) -> Result<EvtchnPort, XenErrno> {
        Ok(PORT)
    }
    fn close(&self, _port: EvtchnPort) -> Result<(), XenErrno> {
        Ok(())
    }
}

struct Peer {
    grants: Arc<GrantTable>,
    tx: BackRing<TX_SLOT>,
    rx: BackRing<RX_SLOT>,
    kicks: Arc<Kicks>,
}

fn setup() -> (Netfront, Peer) {
    setup_with(offloads(true, true, false))
}

fn setup_with(offloads: NetOffloads) -> (Netfront, Peer) {
    let grants = Arc::new(GrantTable::new((0..2).map(|_| SharedPage::new().expect("page")).collect()));
    let rings = NetRings::new(&grants, DomId(0)).expect("rings");
    let pairs = rings.xenstore_pairs(PORT);
    let value = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.clone()).expect("key");
    assert_eq!(value("request-rx-copy"), "1");
    assert_eq!(value("event-channel"), "9");
    let tx_ref = GrantRef(value("tx-ring-ref").parse().expect("ref"));
    let rx_ref = GrantRef(value("rx-ring-ref").parse().expect("ref"));
    let peer_page = |r| {
        let (flags, domid, frame) = grants.entry_fields(r).expect("entry");
        assert_eq!((flags, domid), (GTF_PERMIT_ACCESS, 0), "ring pages are writable grants to dom0");
        let p = grants.granted_page(r).expect("granted");
        assert_eq!(u64::from(frame), p.frame());
        p
    };
    let tx = BackRing::new(peer_page(tx_ref));
    let rx = BackRing::new(peer_page(rx_ref));
    let kicks = Arc::new(Kicks::default());
    let mac = [0, 0x16, 0x3e, 0, 0, 1];
    let dev =
        Netfront::start(String::from("xen-vif0"), mac, rings, offloads, kicks.clone(), PORT, None).expect("start");
    (dev, Peer { grants, tx, rx, kicks })
}

impl Peer {
    /// netback transmit side: takes every TX request, returns the frames, answers each.
    fn take_tx(&mut self, status: i16) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while let Some(raw) = self.tx.next_request() {
            let req = tx_request(&raw);
            let (flags, _, _) = self.grants.entry_fields(req.gref).expect("entry");
            assert_eq!(flags, GTF_PERMIT_ACCESS | GTF_READONLY, "TX buffers are read-only grants");
            let page = self.grants.granted_page(req.gref).expect("granted");
            let mut data = vec![0u8; usize::from(req.size)];
            page.read(usize::from(req.offset), &mut data);
            out.push(data);
            self.tx.queue_response(&TxResponseRepr { id: req.id, status }.to_bytes());
        }
        self.tx.push_responses();
        out
    }

    /// netback transmit side for whole packets (`io/netif.h`, guest transmit): the first request's `size` is
    /// the packet's, extras follow it while `NETTXF_extra_info` / `XEN_NETIF_EXTRA_FLAG_MORE` say so, further
    /// fragments while `NETTXF_more_data` does, and the first fragment holds what the others do not. Answers
    /// every request (`NETIF_RSP_OKAY`) and every extra (`NETIF_RSP_NULL`) in ring order, as netback does.
    /// Returns (first request's flags, GSO extra, packet).
    fn take_packets(&mut self) -> Vec<(u16, Option<GsoExtraRepr>, Vec<u8>)> {
        let mut out = vec![];
        while let Some(raw) = self.tx.next_request() {
            let first = tx_request(&raw);
            let mut responses = vec![(first.id, NETIF_RSP_OKAY)];
            let mut gso = None;
            let mut extra = first.flags & NETTXF_EXTRA_INFO != 0;
            while extra {
                let raw = self.tx.next_request().expect("the announced extra");
                let e = ExtraInfo::new_checked(&raw[..]).expect("a whole extra");
                extra = e.flags() & XEN_NETIF_EXTRA_FLAG_MORE != 0;
                gso = GsoExtraRepr::parse(&e).or(gso);
                responses.push((0, NETIF_RSP_NULL));
            }
            let mut frags = vec![first];
            while frags.last().expect("one").flags & NETTXF_MORE_DATA != 0 {
                let r = tx_request(&self.tx.next_request().expect("the announced fragment"));
                responses.push((r.id, NETIF_RSP_OKAY));
                frags.push(r);
            }
            let rest: usize = frags[1..].iter().map(|r| usize::from(r.size)).sum();
            let mut data = vec![];
            for (i, r) in frags.iter().enumerate() {
                let len = if i == 0 { usize::from(r.size) - rest } else { usize::from(r.size) };
                assert!(usize::from(r.offset) + len <= PAGE_SIZE, "a fragment stays in its page");
                let mut d = vec![0u8; len];
                self.grants.granted_page(r.gref).expect("granted").read(usize::from(r.offset), &mut d);
                data.extend(d);
            }
            assert_eq!(data.len(), usize::from(first.size));
            for (id, status) in responses {
                self.tx.queue_response(&TxResponseRepr { id, status }.to_bytes());
            }
            out.push((first.flags, gso, data));
        }
        self.tx.push_responses();
        out
    }

    /// netback receive side: puts `frags` into consecutive posted buffers as one packet.
    fn deliver(&mut self, frags: &[&[u8]], extra: bool) {
        self.deliver_flagged(frags, extra, NETRXF_DATA_VALIDATED);
    }

    /// As [`deliver`](Self::deliver), the first fragment's checksum flags being `csum`.
    fn deliver_flagged(&mut self, frags: &[&[u8]], extra: bool, csum: u16) {
        for (i, f) in frags.iter().enumerate() {
            let req = rx_request(&self.rx.next_request().expect("a posted buffer"));
            let page = self.grants.granted_page(req.gref).expect("granted");
            page.write(16, f);
            let mut flags = if i == 0 { csum } else { 0 };
            if i + 1 < frags.len() {
                flags |= NETRXF_MORE_DATA;
            }
            if i == 0 && extra {
                flags |= NETRXF_EXTRA_INFO;
            }
            self.rx
                .queue_response(&RxResponseRepr { id: req.id, offset: 16, flags, status: f.len() as i16 }.to_bytes());
            if i == 0 && extra {
                self.rx.next_request().expect("a buffer for the extra slot");
                self.rx.queue_response(&[1, 0, 0, 0, 0, 0, 0, 0]); // GSO extra, no MORE flag
            }
        }
        self.rx.push_responses();
    }

    fn raw_rx(&mut self, rsp: RxResponseRepr) {
        self.rx.next_request().expect("posted");
        self.rx.queue_response(&rsp.to_bytes());
        self.rx.push_responses();
    }
}

fn rx_err(dev: &mut Netfront) -> DeviceError {
    match dev.receive() {
        Err(e) => e,
        Ok(_) => panic!("expected a receive error"),
    }
}

/// A TX request slot as netback reads it.
fn tx_request(raw: &[u8]) -> TxRequestRepr {
    TxRequestRepr::parse(&TxRequest::new_unchecked(raw)).expect("a whole netif_tx_request")
}

/// An RX request slot as netback reads it.
fn rx_request(raw: &[u8]) -> RxRequestRepr {
    RxRequestRepr::parse(&RxRequest::new_unchecked(raw)).expect("a whole netif_rx_request")
}

fn frame(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[test]
fn mac_addresses_parse_and_print() {
    assert_eq!(parse_mac("00:16:3e:0a:0B:ff"), Ok([0, 0x16, 0x3e, 0x0a, 0x0b, 0xff]));
    for bad in ["00:16:3e:0a:0b", "00:16:3e:0a:0b:ff:01", "0:16:3e:0a:0b:ff", "zz:16:3e:0a:0b:ff"] {
        assert!(parse_mac(bad).is_err(), "{bad}");
    }
    assert_eq!(std::format!("{}", MacText([0, 0x16, 0x3e, 0, 0, 1])), "00:16:3e:00:00:01");
}

#[test]
fn start_posts_every_receive_buffer_with_one_notification() {
    let (dev, mut peer) = setup();
    assert_eq!(peer.kicks.0.load(Ordering::SeqCst), 1);
    let mut ids = vec![];
    while let Some(r) = peer.rx.next_request() {
        let req = rx_request(&r);
        assert_eq!(peer.grants.entry_fields(req.gref).map(|e| e.0), Some(GTF_PERMIT_ACCESS));
        ids.push(req.id);
    }
    assert_eq!(ids, (0..256).collect::<Vec<u16>>());
    assert_eq!(dev.info().mtu, 1500);
}

#[test]
fn transmit_batches_one_notification_per_flush() {
    let (mut dev, mut peer) = setup();
    peer.tx.want_next_request();
    let before = peer.kicks.0.load(Ordering::SeqCst);
    for i in 0..10u8 {
        assert!(dev.can_transmit());
        dev.transmit(60 + usize::from(i), &mut |b| b.copy_from_slice(&frame(b.len(), i))).expect("queued");
    }
    assert_eq!(peer.kicks.0.load(Ordering::SeqCst), before, "nothing before flush");
    dev.flush().expect("flush");
    assert_eq!(peer.kicks.0.load(Ordering::SeqCst), before + 1, "one notification for ten frames");
    let got = peer.take_tx(NETIF_RSP_OKAY);
    assert_eq!(got.len(), 10);
    for (i, f) in got.iter().enumerate() {
        assert_eq!(*f, frame(60 + i, i as u8));
    }
    // Without a new req_event the next push does not notify.
    dev.transmit(60, &mut |b| b.fill(1)).expect("queued");
    dev.flush().expect("flush");
    assert_eq!(peer.kicks.0.load(Ordering::SeqCst), before + 1);
    assert_eq!(dev.stats().tx_frames, 11);
}

#[test]
fn transmit_ring_full_then_completions_free_it() {
    let (mut dev, mut peer) = setup();
    for _ in 0..RING_SLOTS {
        dev.transmit(100, &mut |b| b.fill(7)).expect("queued");
    }
    assert!(!dev.can_transmit());
    assert!(matches!(dev.transmit(100, &mut |_| {}), Err(DeviceError::Busy { .. })));
    assert!(matches!(dev.transmit(MAX_FRAME + 1, &mut |_| {}), Err(DeviceError::TooLarge { .. })));
    dev.flush().expect("flush");
    assert_eq!(peer.take_tx(-1).len(), RING_SLOTS);
    assert!(dev.can_transmit());
    assert_eq!(dev.stats().tx_errors, RING_SLOTS as u64);
}

#[test]
fn receive_single_multi_fragment_and_extra_info_packets() {
    let (mut dev, mut peer) = setup();
    assert!(dev.receive().expect("ok").is_none());
    let a = frame(1514, 1);
    peer.deliver(&[&a], false);
    let f = dev.receive().expect("ok").expect("frame");
    assert_eq!(f.frame(), &a[..]);
    dev.recycle(f).expect("recycle");
    let (p1, p2) = (frame(4000, 2), frame(900, 3));
    peer.deliver(&[&p1, &p2], true);
    let f = dev.receive().expect("ok").expect("frame");
    assert_eq!(f.frame(), [p1, p2].concat().as_slice());
    assert!(dev.receive().expect("ok").is_none());
    // Consumed slots are posted again at the next flush, so the ring never runs dry.
    dev.flush().expect("flush");
    for i in 0..600u32 {
        let x = frame(64, i as u8);
        peer.deliver(&[&x], false);
        assert_eq!(dev.receive().expect("ok").expect("frame").frame(), &x[..]);
        dev.flush().expect("flush");
    }
    assert_eq!(dev.stats().rx_frames, 602);
}

#[test]
fn error_responses_are_dropped_not_fatal() {
    let (mut dev, mut peer) = setup();
    peer.raw_rx(RxResponseRepr { id: 0, offset: 0, flags: 0, status: -2 });
    assert!(dev.receive().expect("ok").is_none());
    assert_eq!(dev.stats().rx_dropped, 1);
    let x = frame(100, 9);
    peer.deliver(&[&x], false);
    assert_eq!(dev.receive().expect("ok").expect("frame").frame(), &x[..]);
}

#[test]
fn hostile_rx_responses_break_the_device() {
    let (mut dev, mut peer) = setup();
    peer.raw_rx(RxResponseRepr { id: 5, offset: 0, flags: 0, status: 10 });
    let e = rx_err(&mut dev);
    assert_eq!(
        std::format!("{e}"),
        "xen-vif0: protocol violation: rx ring: response id 5 in slot 0 (request id was 0)"
    );
    assert_eq!(rx_err(&mut dev), e, "stays broken");
    assert_eq!(dev.flush().unwrap_err(), e);
    assert!(!dev.can_transmit());

    let (mut dev, mut peer) = setup();
    peer.raw_rx(RxResponseRepr { id: 0, offset: 4000, flags: 0, status: 200 });
    assert!(std::format!("{}", rx_err(&mut dev)).contains("crosses the page end"));

    let (mut dev, mut peer) = setup();
    peer.raw_rx(RxResponseRepr { id: 0, offset: 0, flags: NETRXF_EXTRA_INFO, status: 20 });
    assert!(std::format!("{}", rx_err(&mut dev)).contains("extra-info slot announced"));

    let (mut dev, mut peer) = setup();
    peer.rx.set_rsp_prod(300); // more responses than buffers posted
    assert!(std::format!("{}", rx_err(&mut dev)).contains("response producer index 300"));
}

#[test]
fn hostile_tx_responses_break_the_device() {
    let (mut dev, mut peer) = setup();
    dev.transmit(60, &mut |b| b.fill(0)).expect("queued");
    dev.flush().expect("flush");
    peer.tx.next_request().expect("request");
    peer.tx.queue_response(&TxResponseRepr { id: 200, status: 0 }.to_bytes());
    peer.tx.push_responses();
    let e = dev.flush().unwrap_err();
    assert!(std::format!("{e}").contains("tx ring: response for id 200 which is not in flight"));

    let (mut dev, mut peer) = setup();
    dev.transmit(60, &mut |b| b.fill(0)).expect("queued");
    dev.flush().expect("flush");
    let req = tx_request(&peer.tx.next_request().expect("request"));
    peer.tx.queue_response(&TxResponseRepr { id: req.id, status: NETIF_RSP_NULL }.to_bytes());
    peer.tx.push_responses();
    assert!(std::format!("{}", dev.flush().unwrap_err()).contains("status 1 for a data request"));
}

/// RFC 1071 sum of `data` folded to 16 bits (not complemented), plus `acc`.
fn ones_sum(data: &[u8], acc: u32) -> u16 {
    let mut s = data.chunks(2).fold(acc, |a, c| a + (u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0))));
    while s > 0xffff {
        s = (s >> 16) + (s & 0xffff);
    }
    s as u16
}

/// An Ethernet frame with a TCP segment over IPv4 (10.0.2.15 → 10.0.2.2) carrying `payload`.
fn tcp_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x52, 0x54, 0, 0x12, 0x34, 0x56, 0, 0x16, 0x3e, 0, 0, 1, 0x08, 0x00];
    let total = (40 + payload.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 2, 15, 10, 0, 2, 2]);
    f.extend_from_slice(&[0x1f, 0x90, 0xc0, 0x01, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0xaa, 0xbb, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The pseudo-header sum `tcp_frame` must carry in its checksum field for a blank checksum (RFC 793 §3.1).
fn pseudo_sum(frame: &[u8]) -> u16 {
    ones_sum(&frame[26..34], 6 + (frame.len() - 34) as u32)
}

#[test]
fn offloads_follow_the_backend_features() {
    let on = offloads(false, true, true);
    assert!(on.tx_checksum && on.tso4 && on.rx_checksum && on.rx_gso);
    assert!(!offloads(false, false, true).tso4, "GSO needs scatter-gather");
    let off = offloads(true, true, true);
    assert!(!off.tx_checksum && !off.tso4, "no checksum offload, no GSO");
    let (dev, _) = setup();
    assert!(!dev.info().offloads.tso4);
}

#[test]
fn frontend_asks_for_receive_offloads() {
    let grants = GrantTable::new((0..2).map(|_| SharedPage::new().expect("page")).collect());
    let pairs = NetRings::new(&grants, DomId(0)).expect("rings").xenstore_pairs(PORT);
    let value = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
    assert_eq!(value("feature-no-csum-offload"), Some("0"));
    assert_eq!(value("feature-gso-tcpv4"), Some("1"));
}

#[test]
fn transmit_checksum_offload_leaves_the_pseudo_header_sum() {
    let (mut dev, mut peer) = setup_with(offloads(false, true, false));
    let f = tcp_frame(b"hello");
    dev.transmit(f.len(), &mut |b| b.copy_from_slice(&f)).expect("queued");
    dev.transmit(60, &mut |b| b.fill(3)).expect("not TCP/UDP: sent as it is");
    dev.flush().expect("flush");
    let got = peer.take_packets();
    assert_eq!(got[0].0, NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED);
    assert_eq!(u16::from_be_bytes([got[0].2[50], got[0].2[51]]), pseudo_sum(&f));
    assert_eq!(got[0].2[..50], f[..50]);
    assert_eq!((got[1].0, got[1].2.clone()), (0, vec![3u8; 60]));
}

#[test]
fn gso_packets_span_pages_with_a_gso_extra() {
    let (mut dev, mut peer) = setup_with(offloads(false, true, true));
    assert_eq!(dev.transmit_slots(1), RING_SLOTS / MAX_GSO_SLOTS);
    let payload: Vec<u8> = (0..10 * 1448).map(|i| (i * 7) as u8).collect();
    let f = tcp_frame(&payload);
    let gso = Gso { kind: GsoKind::TcpV4, hdr_len: 54, mss: 1448 };
    dev.transmit_gso(f.clone(), gso).map_err(|(e, _)| e).expect("queued");
    let big = tcp_frame(&vec![1u8; XEN_NETIF_MAX_TX_SIZE - 53]);
    let (e, back) = dev.transmit_gso(big, gso).expect_err("over XEN_NETIF_MAX_TX_SIZE");
    assert!(matches!(e, DeviceError::TooLarge { max: XEN_NETIF_MAX_TX_SIZE, .. }) && !back.is_empty());
    let (e, _) = dev.transmit_gso(vec![0u8; 3000], gso).expect_err("not TCP");
    assert!(matches!(e, DeviceError::Protocol { .. }));
    dev.transmit(60, &mut |b| b.fill(5)).expect("a small frame after it");
    dev.flush().expect("flush");
    let got = peer.take_packets();
    assert_eq!(got.len(), 2);
    let (flags, extra, data) = &got[0];
    assert_eq!(*flags & (NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_EXTRA_INFO), 0x0b);
    assert_eq!(*extra, Some(GsoExtraRepr { size: 1448, gso_type: XEN_NETIF_GSO_TYPE_TCPV4, features: 0, more: false }));
    assert_eq!(data.len(), f.len());
    assert_eq!(u16::from_be_bytes([data[50], data[51]]), pseudo_sum(&f), "pseudo-header sum of the whole");
    assert_eq!(data[52..], f[52..]);
    assert_eq!(got[1].2, vec![5u8; 60]);
    // Every slot comes back: 4 data requests and one NULL response for the extra, then the small frame.
    dev.flush().expect("flush");
    assert_eq!(dev.transmit_slots(1), RING_SLOTS / MAX_GSO_SLOTS);
    assert_eq!((dev.stats().tx_frames, dev.stats().tx_gso_frames), (2, 1));
}

#[test]
fn ring_without_room_for_a_whole_gso_packet_is_busy() {
    let (mut dev, _peer) = setup_with(offloads(false, true, true));
    for _ in 0..RING_SLOTS - 3 {
        dev.transmit(60, &mut |b| b.fill(0)).expect("queued");
    }
    assert_eq!(dev.transmit_slots(1), 0);
    let f = tcp_frame(&[9u8; 3 * 4096]);
    let gso = Gso { kind: GsoKind::TcpV4, hdr_len: 54, mss: 1448 };
    let (e, back) = dev.transmit_gso(f.clone(), gso).expect_err("4 pages + 1 extra do not fit in 3 slots");
    assert!(matches!(e, DeviceError::Busy { .. }));
    assert_eq!(back, f, "handed back untouched");
}

#[test]
fn unexpected_null_responses_break_the_device() {
    let (mut dev, mut peer) = setup_with(offloads(false, true, true));
    let gso = Gso { kind: GsoKind::TcpV4, hdr_len: 54, mss: 1448 };
    dev.transmit_gso(tcp_frame(&[1u8; 5000]), gso).map_err(|(e, _)| e).expect("queued");
    dev.flush().expect("flush");
    let first = tx_request(&peer.tx.next_request().expect("request"));
    peer.tx.next_request().expect("extra");
    peer.tx.queue_response(&TxResponseRepr { id: first.id, status: NETIF_RSP_OKAY }.to_bytes());
    peer.tx.queue_response(&TxResponseRepr { id: 0, status: NETIF_RSP_OKAY }.to_bytes());
    peer.tx.push_responses();
    assert!(std::format!("{}", dev.flush().unwrap_err()).contains("status 0 for an extra-info slot"));
}

#[test]
fn receive_marks_validated_and_blank_checksums() {
    let (mut dev, mut peer) = setup_with(offloads(false, true, true));
    let x = frame(100, 1);
    for (csum, valid) in [(NETRXF_DATA_VALIDATED, true), (NETRXF_CSUM_BLANK, true), (0, false)] {
        peer.deliver_flagged(&[&x, &x], false, csum);
        let f = dev.receive().expect("ok").expect("frame");
        assert_eq!((f.len, f.checksum_valid), (200, valid), "flags {csum:#x}");
        dev.recycle(f).expect("recycle");
    }
    // A large packet the backend did not segment, in pages, with its GSO extra.
    let big = frame(20_000, 4);
    let chunks: Vec<&[u8]> = big.chunks(4000).collect();
    peer.deliver(&chunks, true);
    let f = dev.receive().expect("ok").expect("frame");
    assert_eq!(f.frame(), &big[..]);
}
