//! netfront against a netback peer written from `io/netif.h`: it maps grants through the grant table, consumes
//! requests and produces responses on the same pages, including hostile ones.
extern crate std;

use super::wire::{RxRequest, RxRequestRepr, TxRequest, TxRequestRepr, NETRXF_DATA_VALIDATED, NETRXF_MORE_DATA};
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
    let dev = Netfront::start(String::from("xen-vif0"), [0, 0x16, 0x3e, 0, 0, 1], rings, kicks.clone(), PORT, None)
        .expect("start");
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

    /// netback receive side: puts `frags` into consecutive posted buffers as one packet.
    fn deliver(&mut self, frags: &[&[u8]], extra: bool) {
        for (i, f) in frags.iter().enumerate() {
            let req = rx_request(&self.rx.next_request().expect("a posted buffer"));
            let page = self.grants.granted_page(req.gref).expect("granted");
            page.write(16, f);
            let mut flags = NETRXF_DATA_VALIDATED;
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
