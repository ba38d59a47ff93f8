//! blkfront (`platform_xen::blkfront::Blkfront`) against a blkback that may misbehave: the geometry comes from
//! the fuzzer; each read, write or flush is polled while the fuzzer plays the backend — honest service of the
//! queued requests (direct and indirect, xen/include/public/io/blkif.h), raw response slots, responses with a
//! wrong id, operation or status, arbitrary `rsp_prod` — and is abandoned if it does not complete. Invariants:
//! no panic; once the driver reports a protocol violation every later request fails; while the backend is
//! honest every request succeeds and reads return the disk's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libos::dev::{BlockDevice, BlockError};
use platform_xen::abi::DomId;
use platform_xen::blkfront::wire::{
    Request, RequestRepr, ResponseRepr, Segment, SegmentRepr, OP_INDIRECT, OP_READ, RSP_OKAY, SEGMENT_LEN, SLOT,
};
use platform_xen::blkfront::{BlkRing, Blkfront, Geometry};
use platform_xen::evtchn::EvtchnPort;
use platform_xen::gnttab::GrantTable;
use platform_xen::ring::backend::BackRing;
use platform_xen::shared::{SharedPage, PAGE_SIZE};
use std::sync::Arc;
use zirvium_fuzz::{disk_bytes, is_disk, poll_with, Input, XenEvents};

struct Backend<'a> {
    grants: &'a GrantTable,
    ring: BackRing<SLOT>,
    honest: bool,
}

impl Backend<'_> {
    fn segments(&self, req: &RequestRepr) -> Vec<SegmentRepr> {
        match req {
            RequestRepr::Direct { segments, .. } => segments.clone(),
            RequestRepr::Indirect { nr_segments, indirect_grefs, .. } => {
                let page = self.grants.granted_page(indirect_grefs[0]).expect("indirect page granted");
                (0..usize::from(*nr_segments))
                    .map(|i| {
                        let mut b = [0u8; SEGMENT_LEN];
                        page.read(i * SEGMENT_LEN, &mut b);
                        SegmentRepr::parse(&Segment::new_unchecked(&b[..])).expect("segment is SEGMENT_LEN bytes")
                    })
                    .collect()
            }
        }
    }

    /// Answers every queued request as blkback would (reads fill the pages from the disk pattern).
    fn serve(&mut self) {
        while let Some(raw) = self.ring.next_request() {
            let req = parse_request(&raw);
            let (op, wire_op, id, sector) = match &req {
                RequestRepr::Direct { operation, id, sector, .. } => (*operation, *operation, *id, *sector),
                RequestRepr::Indirect { indirect_op, id, sector, .. } => (*indirect_op, OP_INDIRECT, *id, *sector),
            };
            let mut at = sector * 512;
            for s in self.segments(&req) {
                let page = self.grants.granted_page(s.gref).expect("segment page granted");
                assert!(s.first_sect <= s.last_sect && s.last_sect < 8, "segment {s:?} outside its page");
                let off = usize::from(s.first_sect) * 512;
                let n = (usize::from(s.last_sect) - usize::from(s.first_sect) + 1) * 512;
                if op == OP_READ {
                    let mut bytes = [0u8; PAGE_SIZE];
                    disk_bytes(at, &mut bytes[..n]);
                    page.write(off, &bytes[..n]);
                }
                at += n as u64;
            }
            self.ring.queue_response(&ResponseRepr { id, operation: wire_op, status: RSP_OKAY }.to_bytes());
        }
        self.ring.push_responses();
    }

    fn act(&mut self, input: &mut Input<'_>) {
        match input.u8() % 6 {
            0..=2 => self.serve(),
            3 => {
                self.honest = false;
                let _ = self.ring.next_request();
                self.ring.queue_response(&input.array::<16>());
                self.ring.push_responses();
            }
            4 => {
                self.honest = false;
                if let Some(raw) = self.ring.next_request() {
                    let id = match parse_request(&raw) {
                        RequestRepr::Direct { id, .. } | RequestRepr::Indirect { id, .. } => id,
                    };
                    let r = ResponseRepr {
                        id: id ^ u64::from(input.u8() & 3) << (input.u8() % 64),
                        operation: input.u8(),
                        status: input.u16() as i16,
                    };
                    self.ring.queue_response(&r.to_bytes());
                    self.ring.push_responses();
                }
            }
            _ => {
                self.honest = false;
                self.ring.set_rsp_prod(input.u32());
            }
        }
    }
}

/// A request slot as blkback reads it (the slot is `SLOT` bytes: parsing cannot be short).
fn parse_request(raw: &[u8; SLOT]) -> RequestRepr {
    RequestRepr::parse(&Request::new_unchecked(&raw[..])).expect("a whole slot")
}

/// The device model's next move: the fuzzer's choice, or honest service once the input is used up.
fn step(backend: &mut Backend<'_>, input: &mut Input<'_>) {
    if input.is_empty() {
        backend.serve();
    } else {
        backend.act(input);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let g = input.u8();
    let geometry = Geometry {
        sectors: u64::from(input.u16()) + 1,
        sector_size: if g & 1 == 0 { 512 } else { 4096 },
        read_only: g & 2 != 0,
        flush_cache: g & 4 != 0,
        barrier: g & 8 != 0,
        max_indirect_segments: if g & 16 != 0 { 32 } else { 0 },
    };
    if geometry.check().is_err() {
        return;
    }
    let table = Box::into_raw(Box::new(GrantTable::new((0..2).map(|_| SharedPage::new().expect("page")).collect())));
    // SAFETY: freed below, after the driver (the only holder of this reference) is dropped.
    let grants: &'static GrantTable = unsafe { &*table };
    run(grants, geometry, &mut input);
    // SAFETY: allocated by Box::into_raw above; `run` dropped everything that borrowed it.
    drop(unsafe { Box::from_raw(table) });
});

fn run(grants: &'static GrantTable, geometry: Geometry, input: &mut Input<'_>) {
    let ring = BlkRing::new(grants, DomId(0)).expect("ring");
    let page = grants.granted_page(ring.gref).expect("ring page granted");
    let (backend, port) = (DomId(0), EvtchnPort(9));
    let dev = Blkfront::start(
        String::from("xen-vbd0"),
        51712,
        geometry,
        ring,
        grants,
        backend,
        Arc::new(XenEvents),
        port,
        None,
    );
    let mut backend = Backend { grants, ring: BackRing::new(page), honest: true };
    let sector_size = u64::from(dev.info().sector_size);
    let mut broken = false;
    while !input.is_empty() {
        let op = input.u8();
        let sector = u64::from(input.u16()) % (dev.info().capacity + 2);
        let count = 1 + usize::from(input.u8() % 24);
        let steps = 1 + usize::from(input.u8() % 8);
        let len = count * sector_size as usize;
        let result = match op % 3 {
            0 => {
                let mut buf = vec![0u8; len];
                let r = poll_with(dev.read(sector, &mut buf), steps, || step(&mut backend, input));
                if let Some(Ok(())) = r {
                    if backend.honest {
                        let start = sector * sector_size;
                        assert!(is_disk(start, &buf), "read returned wrong bytes");
                    }
                }
                r
            }
            1 => poll_with(dev.write(sector, &vec![0x5a; len]), steps, || step(&mut backend, input)),
            _ => poll_with(dev.flush(), steps, || step(&mut backend, input)),
        };
        match result {
            // A flush without a flush feature never reaches the ring.
            Some(Ok(())) => {
                assert!(!broken || (op % 3 == 2 && !dev.info().flush), "a disabled device completed a request")
            }
            Some(Err(BlockError::Protocol { .. })) => {
                assert!(!backend.honest, "an honest backend broke the device");
                broken = true;
            }
            Some(Err(e)) => {
                let _ = e.to_string();
            }
            None => {}
        }
    }
    drop(dev);
}
