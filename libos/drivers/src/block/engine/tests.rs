//! The engine against a fake queue: pieces are recorded at submission and completed by the test, in any order
//! and with any result, as a device would; "interrupts" are calls of the queue's waker.

use super::*;
use crate::virtio::testing::{counter, poll_block as poll};

const SLOTS: usize = 6;
const MAX: usize = 1024;

/// A piece the fake device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    slot: usize,
    unit: u8,
    piece: Piece,
}

#[derive(Default)]
struct Fake {
    buffers: Vec<Vec<u8>>,
    /// Submitted, not yet taken by the test.
    submitted: Vec<Held>,
    /// Completed by the test, reaped at the next interrupt.
    completed: Vec<(usize, Result<(), BlockError>)>,
    /// A protocol violation the next reap reports.
    violation: Option<String>,
    room: bool,
    notifies: u32,
    halted: bool,
}

/// The queue the engine owns; the test reaches the same state through `BlockQueue::with_queue`.
struct FakeQueue(Fake);

impl Queue for FakeQueue {
    type Unit = u8;

    fn name(&self) -> &str {
        "fake queue 1"
    }

    fn slots(&self) -> usize {
        SLOTS
    }

    fn buffer(&mut self, slot: usize, len: usize) -> Result<&mut [u8], BlockError> {
        if len > MAX {
            return Err(BlockError::Io { device: "disk0".into(), sector: 0, detail: format!("no {len}-byte buffer") });
        }
        let b = &mut self.0.buffers[slot];
        if b.len() < len {
            b.resize(len, 0);
        }
        Ok(b)
    }

    fn has_room(&self, _op: Op) -> bool {
        self.0.room
    }

    fn submit(&mut self, slot: usize, unit: u8, piece: &Piece) -> Result<(), String> {
        if unit == 0xff {
            return Err(String::from("unit 255 cannot be addressed"));
        }
        self.0.submitted.push(Held { slot, unit, piece: *piece });
        Ok(())
    }

    fn notify(&mut self) {
        self.0.notifies += 1;
    }

    fn reap(&mut self, done: &mut Vec<(usize, Result<(), BlockError>)>) -> Result<(), String> {
        done.append(&mut self.0.completed);
        self.0.violation.take().map_or(Ok(()), Err)
    }

    fn halt(&mut self) {
        self.0.halted = true;
    }
}

fn info(flush: bool, read_only: bool) -> BlockInfo {
    BlockInfo { name: "disk0".into(), sector_size: 512, capacity: 64, read_only, flush, max_transfer: MAX }
}

fn queue() -> Arc<BlockQueue<FakeQueue>> {
    BlockQueue::new(FakeQueue(Fake { buffers: vec![Vec::new(); SLOTS], room: true, ..Fake::default() }))
}

fn disk(q: &Arc<BlockQueue<FakeQueue>>, flush: bool, read_only: bool) -> Arc<Disk<FakeQueue>> {
    Disk::new(q.clone(), info(flush, read_only), 3)
}

/// Takes what the device holds.
fn take(q: &BlockQueue<FakeQueue>) -> Vec<Held> {
    q.with_queue(|f| core::mem::take(&mut f.0.submitted))
}

/// Completes `h` as the device: a read fills the buffer with `fill`; then the interrupt.
fn complete(q: &Arc<BlockQueue<FakeQueue>>, h: &Held, result: Result<(), BlockError>, fill: u8) {
    q.with_queue(|f| {
        if h.piece.op == Op::Read {
            f.0.buffers[h.slot][..h.piece.len].fill(fill);
            assert!(f.0.buffers[h.slot].len() >= h.piece.len, "grown before submission");
        }
        f.0.completed.push((h.slot, result));
    });
    q.irq_waker().wake_by_ref();
}

#[test]
fn large_requests_split_and_keep_half_the_slots() {
    let q = queue();
    let d = disk(&q, true, false);
    let data: Vec<u8> = (0..5 * MAX).map(|i| i as u8).collect();
    let (c, w) = counter();
    let mut f = d.write(2, &data);
    assert!(poll(&mut f, &w).is_pending());
    let first = take(&q);
    assert_eq!(first.len(), SLOTS / 2, "at most half the slots per request");
    assert_eq!(q.with_queue(|f| f.0.notifies), 1, "one notification per batch");
    for (i, h) in first.iter().enumerate() {
        assert_eq!((h.unit, h.piece), (3, Piece { op: Op::Write, sector: 2 + 2 * i as u64, len: MAX }));
        assert_eq!(q.with_queue(|f| f.0.buffers[h.slot][..MAX].to_vec()), data[i * MAX..(i + 1) * MAX]);
    }
    // Another request still gets a slot while the large one holds half.
    let mut small = [0u8; 512];
    let (sc, sw) = counter();
    let mut g = d.read(60, &mut small);
    assert!(poll(&mut g, &sw).is_pending());
    let s = take(&q);
    assert_eq!(s.len(), 1);
    complete(&q, &s[0], Ok(()), 0xab);
    assert_eq!((sc.get(), c.get()), (1, 0), "only the completed request is woken");
    assert_eq!(poll(&mut g, &sw), Poll::Ready(Ok(())));
    drop(g);
    assert_eq!(small, [0xab; 512]);
    // Completing out of order; the rest is submitted after.
    for h in first.iter().rev() {
        complete(&q, h, Ok(()), 0);
    }
    assert!(poll(&mut f, &w).is_pending());
    let rest = take(&q);
    assert_eq!(rest.iter().map(|h| h.piece.sector).collect::<Vec<_>>(), [8, 10]);
    for h in &rest {
        complete(&q, h, Ok(()), 0);
    }
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
}

#[test]
fn reads_copy_out_only_on_success_and_errors_name_the_disk() {
    let q = queue();
    let d = disk(&q, true, false);
    let (_, w) = counter();
    let mut buf = vec![7u8; 2 * MAX];
    let mut f = d.read(0, &mut buf);
    assert!(poll(&mut f, &w).is_pending());
    let held = take(&q);
    let err = BlockError::Io { device: "disk0".into(), sector: 2, detail: "medium error".into() };
    complete(&q, &held[1], Err(err.clone()), 0xee);
    complete(&q, &held[0], Ok(()), 0x11);
    assert_eq!(poll(&mut f, &w), Poll::Ready(Err(err)));
    drop(f);
    assert!(buf[..MAX].iter().all(|&b| b == 0x11), "the piece that completed first was copied out");
    assert!(buf[MAX..].iter().all(|&b| b == 7), "a failed piece is never copied out");
    // The queue keeps working after a device error; every slot is free again.
    let mut one = [0u8; 512];
    let mut f = d.read(1, &mut one);
    assert!(poll(&mut f, &w).is_pending());
    let h = take(&q);
    complete(&q, &h[0], Ok(()), 5);
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
}

#[test]
fn dropped_requests_free_their_slots_on_completion() {
    let q = queue();
    let d = disk(&q, true, false);
    let (_, w) = counter();
    let mut a = vec![0u8; 3 * MAX];
    let mut f = d.read(0, &mut a);
    assert!(poll(&mut f, &w).is_pending());
    let mut b = vec![0u8; 3 * MAX];
    let mut g = d.read(10, &mut b);
    assert!(poll(&mut g, &w).is_pending());
    let held = take(&q);
    assert_eq!(held.len(), SLOTS);
    let (wc, ww) = counter();
    let mut c = [0u8; 512];
    let mut h = d.read(30, &mut c);
    assert!(poll(&mut h, &ww).is_pending(), "no slot free");
    drop(f);
    for x in &held[..3] {
        complete(&q, x, Ok(()), 1);
    }
    assert!(wc.get() >= 1, "a freed slot wakes the waiting request");
    assert!(poll(&mut h, &ww).is_pending());
    assert_eq!(take(&q).len(), 1);
    drop(g);
    drop(h);
}

#[test]
fn a_protocol_violation_breaks_the_queue_and_halts_the_device() {
    let q = queue();
    let d = disk(&q, true, false);
    let (c, w) = counter();
    let mut buf = [0u8; 512];
    let mut f = d.read(0, &mut buf);
    assert!(poll(&mut f, &w).is_pending());
    q.with_queue(|f| f.0.violation = Some("completion queue 1: command id 0x7 was never issued".into()));
    q.interrupt();
    assert_eq!(c.get(), 1, "the waiting request is woken to see the failure");
    let Poll::Ready(Err(e)) = poll(&mut f, &w) else { panic!("expected the protocol error") };
    drop(f);
    assert_eq!(e.to_string(), "fake queue 1: protocol violation: completion queue 1: command id 0x7 was never issued");
    assert!(q.with_queue(|f| f.0.halted));
    let mut again = [0u8; 512];
    assert_eq!(poll(&mut d.read(0, &mut again), &w), Poll::Ready(Err(e.clone())), "stays broken");
    assert_eq!(poll(&mut d.flush(), &w), Poll::Ready(Err(e)));
    // Completions for slots never lent are violations too.
    let q = queue();
    let d = disk(&q, true, false);
    q.with_queue(|f| f.0.completed.push((4, Ok(()))));
    q.interrupt();
    assert!(
        matches!(q.broken(), Some(BlockError::Protocol { detail, .. }) if detail.contains("slot 4, which is not lent"))
    );
    q.with_queue(|f| f.0.halted = false);
    let q2 = queue();
    q2.with_queue(|f| f.0.completed.push((99, Ok(()))));
    q2.interrupt();
    assert!(q2.broken().is_some_and(|e| e.to_string().contains("beyond the 6 slots")));
    drop(d);
    // A submission the queue refuses breaks it as well.
    let q3 = queue();
    let bad = Disk::new(q3.clone(), info(true, false), 0xff);
    let Poll::Ready(Err(e)) = poll(&mut bad.flush(), &w) else { panic!() };
    assert!(e.to_string().contains("unit 255 cannot be addressed"), "{e}");
}

#[test]
fn checks_flush_and_read_only() {
    let q = queue();
    let (_, w) = counter();
    let nocache = disk(&q, false, false);
    assert_eq!(poll(&mut nocache.flush(), &w), Poll::Ready(Ok(())), "no write cache: nothing to flush");
    assert!(take(&q).is_empty());
    let cached = disk(&q, true, false);
    let mut f = cached.flush();
    assert!(poll(&mut f, &w).is_pending());
    let h = take(&q);
    assert_eq!(h[0].piece, Piece { op: Op::Flush, sector: 0, len: 0 });
    complete(&q, &h[0], Ok(()), 0);
    assert_eq!(poll(&mut f, &w), Poll::Ready(Ok(())));
    drop(f);
    let ro = disk(&q, true, true);
    assert_eq!(
        poll(&mut ro.write(0, &[0; 512]), &w),
        Poll::Ready(Err(BlockError::ReadOnly { device: "disk0".into() }))
    );
    let mut b = [0u8; 100];
    assert!(matches!(poll(&mut ro.read(0, &mut b), &w), Poll::Ready(Err(BlockError::Misaligned { .. }))));
    let mut b = [0u8; 1024];
    assert!(matches!(poll(&mut ro.read(63, &mut b), &w), Poll::Ready(Err(BlockError::OutOfRange { .. }))));
    assert!(take(&q).is_empty(), "nothing reaches the device");
    // No room in the ring: the request waits without submitting.
    q.with_queue(|f| f.0.room = false);
    let mut b = [0u8; 512];
    let mut f = cached.read(0, &mut b);
    assert!(poll(&mut f, &w).is_pending());
    assert!(take(&q).is_empty());
    q.with_queue(|f| f.0.room = true);
    assert!(poll(&mut f, &w).is_pending());
    assert_eq!(take(&q).len(), 1);
    assert_eq!(cached.unit(), 3);
    drop(f);
    // No memory for a bounce buffer: that request fails, the queue does not break.
    let big = Disk::new(q.clone(), BlockInfo { max_transfer: 2 * MAX, ..info(true, false) }, 3);
    let mut b = vec![0u8; 2 * MAX];
    let Poll::Ready(Err(e)) = poll(&mut big.read(0, &mut b), &w) else { panic!() };
    assert!(e.to_string().contains("no 2048-byte buffer"), "{e}");
    assert_eq!(q.broken(), None);
    let mut b = [0u8; 512];
    let mut f = cached.read(0, &mut b);
    assert!(poll(&mut f, &w).is_pending(), "the slot went back to the free list");
    assert!(Arc::ptr_eq(cached.queue(), &q));
}
