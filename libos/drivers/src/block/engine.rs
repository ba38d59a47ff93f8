//! The request engine of the NVMe and virtio-scsi drivers: a [`BlockQueue`] owns a device-specific [`Queue`]
//! (an NVMe I/O queue pair, a virtio-scsi request virtqueue) and its request slots; a request splits into
//! pieces of at most the largest transfer, each lent to the device in one slot whose bounce buffer the driver
//! owns, so a future dropped while the device still owns its piece leaves the device writing driver memory,
//! never a freed caller buffer. Completions are reaped by the interrupt (the queue's waker), which wakes each
//! piece's task; a request keeps at most half the slots so a large one cannot starve the others.
//!
//! A protocol violation the queue reports (a completion for a command never issued, an index out of range, a
//! length past a buffer) breaks the queue for good: the device is halted (reset) so it stops touching lent
//! memory, every waiting request fails with [`BlockError::Protocol`] naming the device, queue and value, and lent
//! slots stay lent forever.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::{Arc, Weak};
use alloc::task::Wake;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use libos::dev::{BlockDevice, BlockError, BlockFuture, BlockInfo};
use libos::irq::critical;
use spin::Mutex;

/// What a piece does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes into the slot's buffer.
    Read,
    /// Write the first `len` bytes of the slot's buffer.
    Write,
    /// Empty the volatile write cache (no data).
    Flush,
}

impl Op {
    /// Name for errors.
    pub fn what(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
        }
    }
}

/// One piece of a request as the device queue issues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// What it does.
    pub op: Op,
    /// First logical sector (the unit's sector size; 0 for a flush).
    pub sector: u64,
    /// Data bytes (a multiple of the sector size, at most the largest transfer; 0 for a flush).
    pub len: usize,
}

/// The device side of a [`BlockQueue`]: one hardware queue, its request slots (numbered `0..slots()`, each
/// with a bounce buffer of at least the largest transfer) and the disks (units) addressed through it.
/// Every method is called with the queue's lock held and interrupts masked.
pub trait Queue: Send {
    /// Which disk a piece is for (an NVMe namespace, a SCSI target and LUN), as the queue addresses it.
    type Unit: Copy + Send + Sync + Unpin + 'static;

    /// Name of the device and queue for protocol errors, e.g. "nvme@pci:00:04.0 I/O queue 1".
    fn name(&self) -> &str;

    /// Number of request slots.
    fn slots(&self) -> usize;

    /// The bounce buffer of `slot`, grown to at least `len` bytes (allocated on first use, so slots cost memory
    /// only once used): the engine calls it before [`submit`](Self::submit) (copying a write's data in) and after
    /// the piece completed (copying a read's data out); never while the slot is lent. Errors: no memory for the
    /// buffer, as a [`BlockError`] naming the device (the request fails, the queue stays usable).
    fn buffer(&mut self, slot: usize, len: usize) -> Result<&mut [u8], BlockError>;

    /// Whether the device can take one more piece of `op` now (ring space).
    fn has_room(&self, op: Op) -> bool;

    /// Lends `slot` to the device for `piece` on `unit` (the data of a write is in its buffer). Errors: a
    /// protocol error's text; the engine breaks the queue.
    fn submit(&mut self, slot: usize, unit: Self::Unit, piece: &Piece) -> Result<(), String>;

    /// Tells the device about the pieces submitted since the last call (doorbell, notification).
    fn notify(&mut self);

    /// Acknowledges the device's interrupt, where its interrupts need it (edge-triggered virtio-mmio's
    /// InterruptACK); called on the interrupt path only, before [`reap`](Self::reap).
    fn acknowledge(&mut self) {}

    /// Collects the pieces the device completed as `(slot, result)`, retrying by itself what its protocol says
    /// to retry (e.g. UNIT ATTENTION). A device error is a [`BlockError`] naming the disk and sector; a protocol
    /// violation is `Err` with its text, after pushing what completed before it.
    fn reap(&mut self, done: &mut Vec<(usize, Result<(), BlockError>)>) -> Result<(), String>;

    /// Stops the device from using the queue and the memory lent to it (a controller or device reset); called
    /// once, on the first protocol violation.
    fn halt(&mut self);
}

/// Where a slot is.
enum Phase {
    /// Not lent; its buffer may be refilled.
    Free,
    /// Lent to the device.
    InFlight {
        /// The task waiting for it.
        waker: Option<Waker>,
        /// Its future was dropped: free the slot on completion instead of reporting.
        abandoned: bool,
    },
    /// Completed; the result waits for its future.
    Done(Result<(), BlockError>),
}

/// Everything behind the lock.
struct State<Q: Queue> {
    queue: Q,
    phases: Vec<Phase>,
    free: Vec<usize>,
    /// Futures waiting for a free slot.
    slot_waiters: Vec<Waker>,
    /// Set on the first protocol violation; every later request returns it.
    broken: Option<BlockError>,
}

impl<Q: Queue> State<Q> {
    /// Reaps completions into the slots and collects the wakers to wake.
    fn reap(&mut self, wake: &mut Vec<Waker>) {
        if self.broken.is_some() {
            return;
        }
        let mut done = Vec::new();
        let r = self.queue.reap(&mut done);
        let mut freed = false;
        for (slot, result) in done {
            match self.phases.get_mut(slot).map(|p| core::mem::replace(p, Phase::Free)) {
                Some(Phase::InFlight { abandoned: true, .. }) => {
                    self.free.push(slot);
                    freed = true;
                }
                Some(Phase::InFlight { waker, .. }) => {
                    self.phases[slot] = Phase::Done(result);
                    wake.extend(waker);
                }
                Some(other) => {
                    self.phases[slot] = other;
                    self.fail(format!("completion for request slot {slot}, which is not lent"), wake);
                    return;
                }
                None => {
                    self.fail(
                        format!("completion for request slot {slot}, beyond the {} slots", self.phases.len()),
                        wake,
                    );
                    return;
                }
            }
        }
        if let Err(detail) = r {
            self.fail(detail, wake);
            return;
        }
        if freed {
            wake.append(&mut self.slot_waiters);
        }
    }

    /// Returns `slot` to the free list and wakes the futures waiting for one.
    fn release(&mut self, slot: usize, wake: &mut Vec<Waker>) {
        self.phases[slot] = Phase::Free;
        self.free.push(slot);
        wake.append(&mut self.slot_waiters);
    }

    /// Breaks the queue: halts the device, records the error, wakes every waiting future.
    fn fail(&mut self, detail: String, wake: &mut Vec<Waker>) -> BlockError {
        let e = BlockError::Protocol { device: String::from(self.queue.name()), detail };
        log::error!("{e}");
        self.broken = Some(e.clone());
        self.queue.halt();
        for p in &mut self.phases {
            if let Phase::InFlight { waker, .. } = p {
                wake.extend(waker.take());
            }
        }
        wake.append(&mut self.slot_waiters);
        e
    }
}

/// One device queue and its request slots, shared by the disks behind it. Created as an `Arc`; its
/// [`irq_waker`](Self::irq_waker) reaps completions when the device interrupts.
pub struct BlockQueue<Q: Queue> {
    state: Mutex<State<Q>>,
}

/// The waker bound to the device's interrupt slot: an interrupt reaps the queue.
struct IrqWaker<Q: Queue>(Weak<BlockQueue<Q>>);

impl<Q: Queue + 'static> Wake for IrqWaker<Q> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(q) = self.0.upgrade() {
            q.interrupt();
        }
    }
}

impl<Q: Queue + 'static> BlockQueue<Q> {
    /// The engine over `queue`, all its slots free.
    pub fn new(queue: Q) -> Arc<Self> {
        let n = queue.slots();
        let state = State {
            queue,
            phases: (0..n).map(|_| Phase::Free).collect(),
            // Popped from the back: slot 0 first.
            free: (0..n).rev().collect(),
            slot_waiters: Vec::new(),
            broken: None,
        };
        Arc::new(Self { state: Mutex::new(state) })
    }

    /// The waker to bind to the device's interrupt: it reaps the queue and wakes the requests that completed.
    pub fn irq_waker(self: &Arc<Self>) -> Waker {
        Waker::from(Arc::new(IrqWaker(Arc::downgrade(self))))
    }

    /// The interrupt path: reaps completions, wakes the tasks whose pieces completed. Safe to call at any time.
    pub fn interrupt(&self) {
        let mut wake = Vec::new();
        self.with_state(|st| {
            st.queue.acknowledge();
            st.reap(&mut wake)
        });
        wake.into_iter().for_each(Waker::wake);
    }

    /// The error that broke the queue, if one did.
    pub fn broken(&self) -> Option<BlockError> {
        self.with_state(|st| st.broken.clone())
    }

    /// Runs `f` on the device queue (diagnostics, tests).
    pub fn with_queue<R>(&self, f: impl FnOnce(&mut Q) -> R) -> R {
        self.with_state(|st| f(&mut st.queue))
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State<Q>) -> R) -> R {
        critical(|| f(&mut self.state.lock()))
    }

    fn request<'a>(&'a self, info: &'a BlockInfo, unit: Q::Unit, op: Op, sector: u64, buf: Buf<'a>) -> BlockFuture<'a> {
        let total = match &buf {
            Buf::Read(b) => b.len(),
            Buf::Write(b) => b.len(),
            Buf::None => 0,
        };
        Box::pin(Request {
            queue: self,
            info,
            unit,
            op,
            sector,
            buf,
            total,
            next: 0,
            flush_sent: false,
            pieces: Vec::new(),
        })
    }
}

/// The caller's buffer of a request.
enum Buf<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
    None,
}

/// A piece of a request in flight: slot, offset of its data in the caller's buffer, length (bytes).
#[derive(Debug, Clone, Copy)]
struct Lent {
    slot: usize,
    offset: usize,
    len: usize,
}

/// The future of one read, write or flush: submits pieces while slots are free, copies completed reads out of
/// the bounce buffers, finishes when every piece has completed or at the first error.
struct Request<'a, Q: Queue> {
    queue: &'a BlockQueue<Q>,
    info: &'a BlockInfo,
    unit: Q::Unit,
    op: Op,
    /// First logical sector.
    sector: u64,
    buf: Buf<'a>,
    total: usize,
    /// Bytes handed to the device so far.
    next: usize,
    flush_sent: bool,
    pieces: Vec<Lent>,
}

impl<Q: Queue> Request<'_, Q> {
    fn more_to_submit(&self) -> bool {
        match self.op {
            Op::Flush => !self.flush_sent,
            Op::Read | Op::Write => self.next < self.total,
        }
    }

    fn step(&mut self, st: &mut State<Q>, waker: &Waker, wake: &mut Vec<Waker>) -> Poll<Result<(), BlockError>> {
        st.reap(wake);
        if let Some(e) = &st.broken {
            return Poll::Ready(Err(e.clone()));
        }
        let mut i = 0;
        while i < self.pieces.len() {
            let p = self.pieces[i];
            match &mut st.phases[p.slot] {
                Phase::InFlight { waker: w, .. } => {
                    if !w.as_ref().is_some_and(|old| old.will_wake(waker)) {
                        *w = Some(waker.clone());
                    }
                    i += 1;
                }
                Phase::Done(result) => {
                    let mut result = core::mem::replace(result, Ok(()));
                    if let (Ok(()), Buf::Read(buf)) = (&result, &mut self.buf) {
                        // The buffer was grown to `len` before submission, so this does not allocate.
                        result = st.queue.buffer(p.slot, p.len).map(|b| {
                            buf[p.offset..p.offset + p.len].copy_from_slice(&b[..p.len]);
                        });
                    }
                    st.release(p.slot, wake);
                    self.pieces.swap_remove(i);
                    result?;
                }
                Phase::Free => {
                    self.pieces.swap_remove(i);
                    let detail = format!("request slot {} was freed while its piece was in flight", p.slot);
                    return Poll::Ready(Err(BlockError::Protocol { device: String::from(st.queue.name()), detail }));
                }
            }
        }
        let ss = u64::from(self.info.sector_size);
        let max = self.info.max_transfer;
        let mut added = false;
        while self.more_to_submit() {
            // A request keeps at most half the slots, so a large one cannot starve the others.
            if !st.queue.has_room(self.op) || self.pieces.len() >= st.phases.len().div_ceil(2) {
                break;
            }
            let Some(slot) = st.free.pop() else { break };
            let len = max.min(self.total - self.next);
            let piece = Piece { op: self.op, sector: self.sector + (self.next as u64) / ss, len };
            let bounce = match st.queue.buffer(slot, len) {
                Ok(b) => b,
                Err(e) => {
                    st.free.push(slot);
                    return Poll::Ready(Err(e));
                }
            };
            if let Buf::Write(buf) = &self.buf {
                bounce[..len].copy_from_slice(&buf[self.next..self.next + len]);
            }
            if let Err(detail) = st.queue.submit(slot, self.unit, &piece) {
                st.free.push(slot);
                return Poll::Ready(Err(st.fail(detail, wake)));
            }
            st.phases[slot] = Phase::InFlight { waker: Some(waker.clone()), abandoned: false };
            self.pieces.push(Lent { slot, offset: self.next, len });
            self.next += len;
            self.flush_sent = true;
            added = true;
        }
        if added {
            st.queue.notify();
        }
        if self.more_to_submit() && !st.slot_waiters.iter().any(|w| w.will_wake(waker)) {
            st.slot_waiters.push(waker.clone());
        }
        if self.pieces.is_empty() && !self.more_to_submit() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl<Q: Queue + 'static> Future for Request<'_, Q> {
    type Output = Result<(), BlockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut wake = Vec::new();
        let r = this.queue.with_state(|st| this.step(st, cx.waker(), &mut wake));
        wake.into_iter().for_each(Waker::wake);
        r
    }
}

impl<Q: Queue> Drop for Request<'_, Q> {
    fn drop(&mut self) {
        if self.pieces.is_empty() {
            return;
        }
        let mut wake = Vec::new();
        critical(|| {
            let mut st = self.queue.state.lock();
            for p in self.pieces.drain(..) {
                match &mut st.phases[p.slot] {
                    Phase::InFlight { abandoned, waker } => {
                        *abandoned = true;
                        *waker = None;
                    }
                    Phase::Done(_) => st.release(p.slot, &mut wake),
                    Phase::Free => {}
                }
            }
        });
        wake.into_iter().for_each(Waker::wake);
    }
}

/// One disk behind a [`BlockQueue`] (an NVMe namespace, a SCSI logical unit): its geometry and address, and
/// the `BlockDevice` the file systems use.
pub struct Disk<Q: Queue> {
    queue: Arc<BlockQueue<Q>>,
    info: BlockInfo,
    unit: Q::Unit,
}

impl<Q: Queue + 'static> Disk<Q> {
    /// The disk `unit` of `queue` with `info` (its name, sector size, capacity, limits).
    pub fn new(queue: Arc<BlockQueue<Q>>, info: BlockInfo, unit: Q::Unit) -> Arc<Self> {
        Arc::new(Self { queue, info, unit })
    }

    /// The queue it shares.
    pub fn queue(&self) -> &Arc<BlockQueue<Q>> {
        &self.queue
    }

    /// Its address on the queue.
    pub fn unit(&self) -> Q::Unit {
        self.unit
    }

    fn check(&self, sector: u64, len: usize) -> Result<(), BlockError> {
        if let Some(e) = self.queue.broken() {
            return Err(e);
        }
        self.info.check(sector, len)
    }
}

impl<Q: Queue + 'static> BlockDevice for Disk<Q> {
    fn info(&self) -> &BlockInfo {
        &self.info
    }

    fn read<'a>(&'a self, sector: u64, buf: &'a mut [u8]) -> BlockFuture<'a> {
        if let Err(e) = self.check(sector, buf.len()) {
            return Box::pin(core::future::ready(Err(e)));
        }
        self.queue.request(&self.info, self.unit, Op::Read, sector, Buf::Read(buf))
    }

    fn write<'a>(&'a self, sector: u64, buf: &'a [u8]) -> BlockFuture<'a> {
        if self.info.read_only {
            return Box::pin(core::future::ready(Err(BlockError::ReadOnly { device: self.info.name.clone() })));
        }
        if let Err(e) = self.check(sector, buf.len()) {
            return Box::pin(core::future::ready(Err(e)));
        }
        self.queue.request(&self.info, self.unit, Op::Write, sector, Buf::Write(buf))
    }

    fn flush(&self) -> BlockFuture<'_> {
        if let Some(e) = self.queue.broken() {
            return Box::pin(core::future::ready(Err(e)));
        }
        if !self.info.flush {
            // No volatile write cache: completed writes are already durable.
            return Box::pin(core::future::ready(Ok(())));
        }
        self.queue.request(&self.info, self.unit, Op::Flush, 0, Buf::None)
    }
}

#[cfg(test)]
mod tests;
