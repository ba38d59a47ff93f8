//! blkfront against a blkback peer written from `io/blkif.h`: it runs inside the event-channel notification,
//! maps segments through the grant table (direct and indirect), reads and writes an in-memory disk, and can be
//! told to misbehave.
extern crate std;

use super::wire::{Request, RequestRepr, ResponseRepr, Segment, SegmentRepr, OP_READ, RSP_ERROR};
use super::*;
use crate::abi::XenErrno;
use crate::ring::backend::BackRing;
use crate::xenstore::daemon::block_on;
use std::vec;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Misbehave {
    None,
    WrongId,
    WrongOp,
    Status(i16),
    /// Answer nothing (requests stay in flight).
    Silent,
}

struct Blkback {
    grants: &'static GrantTable,
    ring: Mutex<BackRing<SLOT>>,
    disk: Mutex<Vec<u8>>,
    mode: Mutex<Misbehave>,
    log: Mutex<Vec<RequestRepr>>,
}

impl Blkback {
    fn segments_of(&self, req: &RequestRepr) -> Vec<SegmentRepr> {
        match req {
            RequestRepr::Direct { segments, .. } => segments.clone(),
            RequestRepr::Indirect { nr_segments, indirect_grefs, .. } => {
                let page = self.grants.granted_page(indirect_grefs[0]).expect("indirect page granted");
                (0..usize::from(*nr_segments))
                    .map(|i| {
                        let mut b = [0u8; SEGMENT_LEN];
                        page.read(i * SEGMENT_LEN, &mut b);
                        SegmentRepr::parse(&Segment::new_unchecked(&b[..])).expect("a whole segment")
                    })
                    .collect()
            }
        }
    }

    fn serve(&self) {
        let mut ring = self.ring.lock();
        let mode = *self.mode.lock();
        while let Some(raw) = ring.next_request() {
            let req = RequestRepr::parse(&Request::new_unchecked(&raw[..])).expect("a whole slot");
            self.log.lock().push(req.clone());
            if mode == Misbehave::Silent {
                continue;
            }
            let (op, wire_op, id, sector) = match &req {
                RequestRepr::Direct { operation, id, sector, .. } => (*operation, *operation, *id, *sector),
                RequestRepr::Indirect { indirect_op, id, sector, .. } => (*indirect_op, OP_INDIRECT, *id, *sector),
            };
            let mut at = sector as usize * 512;
            for s in self.segments_of(&req) {
                let page = self.grants.granted_page(s.gref).expect("segment page granted");
                let off = usize::from(s.first_sect) * 512;
                let n = (usize::from(s.last_sect) - usize::from(s.first_sect) + 1) * 512;
                let mut disk = self.disk.lock();
                match op {
                    OP_READ => page.write(off, &disk[at..at + n]),
                    OP_WRITE => page.read(off, &mut disk[at..at + n]),
                    _ => {}
                }
                at += n;
            }
            let rsp = match mode {
                Misbehave::WrongId => ResponseRepr { id: id + 100, operation: wire_op, status: 0 },
                Misbehave::WrongOp => ResponseRepr { id, operation: 9, status: 0 },
                Misbehave::Status(s) => ResponseRepr { id, operation: wire_op, status: s },
                _ => ResponseRepr { id, operation: wire_op, status: RSP_OKAY },
            };
            ring.queue_response(&rsp.to_bytes());
        }
        // RING_FINAL_CHECK_FOR_REQUESTS: ask to be notified of the next request.
        ring.want_next_request();
        ring.push_responses();
    }
}

/// The event channel the tests' backend listens on.
const PORT: EvtchnPort = EvtchnPort(5);

struct Events(Arc<Blkback>);

impl EventChannelOps for Events {
    fn send(&self, _port: EvtchnPort) -> Result<(), XenErrno> {
        self.0.serve();
        Ok(())
    }
    fn alloc_unbound(&self, _remote: DomId) -> Result<EvtchnPort, XenErrno> {
        Ok(PORT)
    }
    fn close(&self, _port: EvtchnPort) -> Result<(), XenErrno> {
        Ok(())
    }
}

fn geometry(max_indirect: u32) -> Geometry {
    Geometry {
        sectors: 2048,
        sector_size: 512,
        read_only: false,
        flush_cache: true,
        barrier: false,
        max_indirect_segments: max_indirect,
    }
}

fn setup(g: Geometry) -> (Blkfront, Arc<Blkback>) {
    let grants: &'static GrantTable =
        Box::leak(Box::new(GrantTable::new((0..2).map(|_| SharedPage::new().expect("page")).collect())));
    let ring = BlkRing::new(grants, DomId(0)).expect("ring");
    let pairs = ring.xenstore_pairs(PORT);
    assert_eq!(pairs[2], ("protocol", String::from("x86_64-abi")));
    let gref = GrantRef(pairs[0].1.parse().expect("ring-ref"));
    let back = Arc::new(Blkback {
        grants,
        ring: Mutex::new(BackRing::new(grants.granted_page(gref).expect("ring granted"))),
        disk: Mutex::new((0..g.sectors as usize * g.sector_size as usize).map(|i| (i / 512) as u8).collect()),
        mode: Mutex::new(Misbehave::None),
        log: Mutex::new(vec![]),
    });
    let dev = Blkfront::start(
        String::from("xen-vbd51712"),
        51712u32 as u16,
        g,
        ring,
        grants,
        DomId(0),
        Arc::new(Events(back.clone())),
        PORT,
        None,
    );
    (dev, back)
}

#[test]
fn geometry_checks() {
    assert!(geometry(0).check().is_ok());
    assert_eq!(geometry(0).segments_per_request(), 11);
    assert_eq!(geometry(8).segments_per_request(), 11);
    assert_eq!(geometry(256).segments_per_request(), 32);
    assert_eq!(geometry(16).segments_per_request(), 16);
    let bad = Geometry { sector_size: 1000, ..geometry(0) };
    assert!(std::format!("{}", bad.check().unwrap_err()).contains("sector-size 1000"));
    assert!(Geometry { sectors: u64::MAX, ..geometry(0) }.check().is_err());
}

#[test]
fn read_write_flush_direct() {
    let (dev, back) = setup(geometry(0));
    assert_eq!(dev.info().max_transfer, 11 * 4096);
    assert!(dev.info().flush);
    let mut buf = vec![0u8; 3 * 512];
    block_on(dev.read(5, &mut buf)).expect("read");
    assert!(buf.chunks(512).enumerate().all(|(i, c)| c.iter().all(|&b| b == 5 + i as u8)));
    let data: Vec<u8> = (0..100 * 512).map(|i| (i * 7) as u8).collect();
    block_on(dev.write(100, &data)).expect("write");
    assert_eq!(back.disk.lock()[100 * 512..200 * 512], data[..]);
    // 100 sectors = 50 KiB = 13 pages: split into 11 + 2 pages.
    let sizes: Vec<usize> = back
        .log
        .lock()
        .iter()
        .skip(1)
        .map(|r| match r {
            RequestRepr::Direct { segments, .. } => segments.len(),
            RequestRepr::Indirect { .. } => 0,
        })
        .collect();
    assert_eq!(sizes, [11, 2]);
    let mut back_read = vec![0u8; data.len()];
    block_on(dev.read(100, &mut back_read)).expect("read back");
    assert_eq!(back_read, data);
    block_on(dev.flush()).expect("flush");
    assert!(matches!(back.log.lock().last(), Some(RequestRepr::Direct { operation: OP_FLUSH_DISKCACHE, .. })));
}

#[test]
fn indirect_descriptors_when_offered() {
    let (dev, back) = setup(geometry(256));
    assert_eq!(dev.info().max_transfer, 32 * 4096);
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    block_on(dev.write(8, &data)).expect("write");
    assert!(matches!(back.log.lock()[0], RequestRepr::Indirect { nr_segments: 16, indirect_op: OP_WRITE, .. }));
    assert_eq!(back.disk.lock()[8 * 512..8 * 512 + data.len()], data[..]);
    let mut r = vec![0u8; data.len()];
    block_on(dev.read(8, &mut r)).expect("read");
    assert_eq!(r, data);
}

#[test]
fn errors_from_the_backend_and_the_caller() {
    let (dev, back) = setup(geometry(0));
    let mut buf = vec![0u8; 512];
    assert!(matches!(block_on(dev.read(2048, &mut buf)), Err(BlockError::OutOfRange { .. })));
    assert!(matches!(block_on(dev.read(0, &mut buf[..100])), Err(BlockError::Misaligned { .. })));
    *back.mode.lock() = Misbehave::Status(RSP_ERROR);
    let e = block_on(dev.read(9, &mut buf)).unwrap_err();
    assert_eq!(std::format!("{e}"), "xen-vbd51712: I/O error at sector 9: backend status -1");
    *back.mode.lock() = Misbehave::Status(RSP_EOPNOTSUPP);
    assert!(matches!(block_on(dev.flush()), Err(BlockError::Unsupported { what: "flush", .. })));
    *back.mode.lock() = Misbehave::None;
    block_on(dev.read(9, &mut buf)).expect("still usable after I/O errors");

    let (ro, _) = setup(Geometry { read_only: true, ..geometry(0) });
    assert!(matches!(block_on(ro.write(0, &buf)), Err(BlockError::ReadOnly { .. })));
    let (noflush, back) = setup(Geometry { flush_cache: false, ..geometry(0) });
    assert!(!noflush.info().flush);
    block_on(noflush.flush()).expect("no cache, nothing to flush");
    assert!(back.log.lock().is_empty());
}

#[test]
fn hostile_responses_break_the_device() {
    for (mode, text) in [
        (Misbehave::WrongId, "response id 100 is not a request slot"),
        (Misbehave::WrongOp, "response operation 9 for request 0 of operation 0"),
    ] {
        let (dev, back) = setup(geometry(0));
        *back.mode.lock() = mode;
        let mut buf = vec![0u8; 512];
        let e = block_on(dev.read(0, &mut buf)).unwrap_err();
        assert!(std::format!("{e}").contains(text), "{e}");
        *back.mode.lock() = Misbehave::None;
        assert_eq!(block_on(dev.read(0, &mut buf)).unwrap_err(), e, "stays broken");
    }
    let (dev, back) = setup(geometry(0));
    back.ring.lock().set_rsp_prod(40);
    let mut buf = vec![0u8; 512];
    assert!(matches!(block_on(dev.read(0, &mut buf)), Err(BlockError::Protocol { .. })));
}

#[test]
fn several_requests_in_flight_complete_out_of_order() {
    let (dev, back) = setup(geometry(0));
    *back.mode.lock() = Misbehave::Silent;
    let waker = core::task::Waker::noop();
    let mut cx = core::task::Context::from_waker(waker);
    let (mut a, mut b) = (vec![0u8; 512], vec![0u8; 1024]);
    let mut fa = dev.read(10, &mut a);
    let mut fb = dev.read(20, &mut b);
    assert!(fa.as_mut().poll(&mut cx).is_pending());
    assert!(fb.as_mut().poll(&mut cx).is_pending());
    let reqs: Vec<RequestRepr> = back.log.lock().clone();
    assert_eq!(reqs.len(), 2);
    // Answer the second one first.
    {
        let mut ring = back.ring.lock();
        for r in reqs.iter().rev() {
            let RequestRepr::Direct { id, sector, segments, .. } = r else { panic!("direct") };
            for (i, s) in segments.iter().enumerate() {
                let page = back.grants.granted_page(s.gref).expect("granted");
                let n = (usize::from(s.last_sect) + 1) * 512;
                let at = (*sector as usize + i * 8) * 512;
                page.write(0, &back.disk.lock()[at..at + n]);
            }
            ring.queue_response(&ResponseRepr { id: *id, operation: OP_READ, status: 0 }.to_bytes());
        }
        ring.push_responses();
    }
    assert!(fb.as_mut().poll(&mut cx).is_ready());
    assert!(fa.as_mut().poll(&mut cx).is_ready());
    drop((fa, fb));
    assert!(a.iter().all(|&x| x == 10));
    assert!(b[..512].iter().all(|&x| x == 20) && b[512..].iter().all(|&x| x == 21));
}

#[test]
fn abandoned_requests_keep_their_pages_until_answered() {
    let (dev, back) = setup(geometry(0));
    *back.mode.lock() = Misbehave::Silent;
    let waker = core::task::Waker::noop();
    let mut cx = core::task::Context::from_waker(waker);
    let mut buf = vec![0u8; 512];
    {
        let mut f = dev.read(1, &mut buf);
        assert!(f.as_mut().poll(&mut cx).is_pending());
    } // dropped while in flight
    assert_eq!(dev.core.lock().pool.len(), 0, "the in-flight page is not reused");
    *back.mode.lock() = Misbehave::None;
    back.ring.lock().queue_response(&ResponseRepr { id: 0, operation: OP_READ, status: 0 }.to_bytes());
    back.ring.lock().push_responses();
    block_on(dev.read(3, &mut buf)).expect("read");
    assert!(buf.iter().all(|&x| x == 3));
    assert_eq!(dev.core.lock().pool_total, 1, "the abandoned page came back to the pool");
}
