//! netfront (`platform_xen::netfront::Netfront`) against a netback that may misbehave: the fuzzer interleaves
//! honest packet deliveries and TX completions, raw response slots (`netif_rx_response`, `netif_tx_response`,
//! xen/include/public/io/netif.h), arbitrary `rsp_prod` values and raw bytes in the RX buffer pages with the
//! driver's receive, transmit and flush. Invariants: no panic; frames are at most `MAX_RX_PACKET` bytes; once
//! the driver reports a protocol violation it stays disabled; while the backend is honest every delivered
//! packet arrives whole and in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libos::dev::{DeviceError, NetDevice};
use platform_xen::abi::DomId;
use platform_xen::evtchn::EvtchnPort;
use platform_xen::gnttab::{GrantRef, GrantTable};
use platform_xen::netfront::wire::{
    RxRequest, RxRequestRepr, RxResponseRepr, TxRequest, TxRequestRepr, TxResponseRepr, NETRXF_MORE_DATA, RX_SLOT,
    TX_SLOT,
};
use platform_xen::netfront::{offloads, NetRings, Netfront, MAX_RX_PACKET};
use platform_xen::ring::backend::BackRing;
use platform_xen::shared::{SharedPage, PAGE_SIZE};
use std::collections::VecDeque;
use std::sync::Arc;
use zirvium_fuzz::pages::PageCache;
use zirvium_fuzz::{Input, XenEvents};

/// Hundreds of shared pages per input: keep freed ones for the next input instead of going through glibc.
#[global_allocator]
static ALLOC: PageCache = PageCache::new();

fuzz_target!(|data: &[u8]| {
    let grants = Arc::new(GrantTable::new((0..2).map(|_| SharedPage::new().expect("page")).collect()));
    let rings = NetRings::new(&grants, DomId(0)).expect("rings");
    let port = EvtchnPort(9);
    let pairs = rings.xenstore_pairs(port);
    let gref = |k: &str| GrantRef(pairs.iter().find(|(key, _)| *key == k).unwrap().1.parse().unwrap());
    let mut tx = BackRing::<TX_SLOT>::new(grants.granted_page(gref("tx-ring-ref")).unwrap());
    let mut rx = BackRing::<RX_SLOT>::new(grants.granted_page(gref("rx-ring-ref")).unwrap());
    // A backend without checksum offload, scatter-gather or GSO: transmit stays one slot per frame (the checks
    // below), receive still accepts the backend's checksum marks and GSO extra slots.
    let offloads = offloads(true, false, false);
    let mac = [0, 0x16, 0x3e, 0, 0, 1];
    let Ok(mut dev) = Netfront::start(String::from("xen-vif0"), mac, rings, offloads, Arc::new(XenEvents), port, None)
    else {
        return;
    };
    let mut honest = true;
    let mut broken = false;
    let mut delivered: VecDeque<Vec<u8>> = VecDeque::new();
    let mut tx_requests: Vec<TxRequestRepr> = Vec::new();
    let mut input = Input::new(data);
    while !input.is_empty() {
        match input.u8() % 10 {
            0 => {
                // One packet of up to three fragments into posted buffers.
                let want = 1 + input.below(3);
                let reqs: Vec<RxRequestRepr> =
                    (0..want).map_while(|_| rx.next_request()).map(|raw| rx_request(&raw)).collect();
                let mut packet = Vec::new();
                for (i, req) in reqs.iter().enumerate() {
                    let frag = input.chunk();
                    let Some(page) = grants.granted_page(req.gref) else {
                        // Only once this model broke the ring itself: a response it queued with no request to
                        // answer (action 1) lands in a slot the guest fills with a request later, and is read back
                        // as one.
                        assert!(!honest, "an honest backend read an RX request naming no granted buffer: {req:?}");
                        continue;
                    };
                    page.write(16, frag);
                    packet.extend_from_slice(frag);
                    let flags = if i + 1 < reqs.len() { NETRXF_MORE_DATA } else { 0 };
                    rx.queue_response(
                        &RxResponseRepr { id: req.id, offset: 16, flags, status: frag.len() as i16 }.to_bytes(),
                    );
                }
                if !packet.is_empty() {
                    delivered.push_back(packet);
                }
                rx.push_responses();
            }
            1 => {
                honest = false;
                let _ = rx.next_request();
                rx.queue_response(&input.array::<RX_SLOT>());
                rx.push_responses();
            }
            2 => {
                honest = false;
                rx.set_rsp_prod(input.u32());
            }
            3 => {
                let len = input.below(2000);
                let byte = input.u8();
                match dev.transmit(len, &mut |b| b.fill(byte)) {
                    Ok(()) | Err(DeviceError::Busy { .. } | DeviceError::TooLarge { .. }) => {}
                    Err(e) => assert!(!honest || broken, "transmit failed with an honest backend: {e}"),
                }
            }
            4 => {
                while let Some(raw) = tx.next_request() {
                    let r = TxRequestRepr::parse(&TxRequest::new_unchecked(&raw[..])).expect("a whole slot");
                    tx_requests.push(r);
                }
                let status = input.u8();
                for r in tx_requests.drain(..) {
                    let (id, status) = if status & 0x80 != 0 {
                        honest = false;
                        (input.u16(), input.u16() as i16)
                    } else {
                        (r.id, -i16::from(status & 1))
                    };
                    tx.queue_response(&TxResponseRepr { id, status }.to_bytes());
                }
                tx.push_responses();
            }
            5 => {
                honest = false;
                tx.set_rsp_prod(input.u32());
            }
            6 | 7 => match dev.receive() {
                Ok(Some(f)) => {
                    assert!(!broken, "a disabled device delivered a frame");
                    assert!(f.frame().len() <= MAX_RX_PACKET && !f.frame().is_empty());
                    if honest {
                        assert_eq!(Some(f.frame().to_vec()), delivered.pop_front(), "packets lost or changed");
                    }
                    let _ = dev.recycle(f);
                }
                Ok(None) => assert!(!broken, "a disabled device reported no error"),
                Err(e) => {
                    assert!(!honest, "an honest backend broke the device: {e}");
                    broken = true;
                }
            },
            8 => {
                if dev.flush().is_err() {
                    assert!(!honest, "flush failed with an honest backend");
                    broken = true;
                }
                let _ = dev.can_transmit();
                // The net stack asks for one slot per open merged frame plus two.
                let _ = dev.transmit_slots(1 + input.below(10));
            }
            _ => {
                honest = false;
                // Raw bytes into whatever RX buffer the next posted request names.
                if let Some(raw) = rx.next_request() {
                    let req = rx_request(&raw);
                    if let Some(page) = grants.granted_page(req.gref) {
                        let off = input.below(PAGE_SIZE);
                        let bytes = input.chunk();
                        page.write(off, &bytes[..bytes.len().min(PAGE_SIZE - off)]);
                    }
                    rx.queue_response(
                        &RxResponseRepr {
                            id: req.id,
                            offset: input.u16(),
                            flags: input.u16(),
                            status: input.u16() as i16,
                        }
                        .to_bytes(),
                    );
                    rx.push_responses();
                }
            }
        }
    }
    let _ = dev.stats();
});

/// An RX request slot as netback reads it (the slot is `RX_SLOT` bytes: parsing cannot be short).
fn rx_request(raw: &[u8; RX_SLOT]) -> RxRequestRepr {
    RxRequestRepr::parse(&RxRequest::new_unchecked(&raw[..])).expect("a whole slot")
}
