//! Bookkeeping of buffers lent to a virtqueue: which buffer sits behind which descriptor head ("token"),
//! and the transmit buffer pool. A used-ring entry naming a token we did not lend is a device protocol
//! error, never an out-of-bounds access. Source: virtio 1.2 §2.7.8 (the used ring's `id` is the head of a
//! descriptor chain the driver made available).
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

/// A token that does not match the lending records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Token beyond the queue size.
    OutOfRange {
        /// The token (descriptor chain head index).
        token: u16,
        /// The virtqueue's size (descriptors).
        queue_size: usize,
    },
    /// A buffer is already lent under this token (the queue handed out a head twice).
    InUse {
        /// The token (descriptor chain head index).
        token: u16,
    },
    /// No buffer is lent under this token.
    NotLent {
        /// The token (descriptor chain head index), e.g. a used-ring `id`.
        token: u16,
    },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutOfRange { token, queue_size } => {
                write!(f, "descriptor id {token} is beyond the queue size {queue_size}")
            }
            Self::InUse { token } => write!(f, "descriptor id {token} is already in flight"),
            Self::NotLent { token } => write!(f, "descriptor id {token} was not made available by the driver"),
        }
    }
}

/// Values (buffers or buffer indices) lent to the device, indexed by descriptor head.
#[derive(Debug)]
pub struct InFlight<T> {
    slots: Vec<Option<T>>,
    count: usize,
}

impl<T> InFlight<T> {
    /// An empty table for a queue of `queue_size` descriptors.
    pub fn new(queue_size: usize) -> Self {
        Self { slots: (0..queue_size).map(|_| None).collect(), count: 0 }
    }

    /// Records `value` as lent under `token`. Errors: [`PoolError::OutOfRange`], [`PoolError::InUse`]; the
    /// value is handed back with the error so the caller keeps it.
    pub fn insert(&mut self, token: u16, value: T) -> Result<(), (PoolError, T)> {
        let queue_size = self.slots.len();
        match self.slots.get_mut(usize::from(token)) {
            None => Err((PoolError::OutOfRange { token, queue_size }, value)),
            Some(Some(_)) => Err((PoolError::InUse { token }, value)),
            Some(slot) => {
                *slot = Some(value);
                self.count += 1;
                Ok(())
            }
        }
    }

    /// The value lent under `token`. Errors: [`PoolError::OutOfRange`], [`PoolError::NotLent`].
    pub fn get(&self, token: u16) -> Result<&T, PoolError> {
        match self.slots.get(usize::from(token)) {
            None => Err(PoolError::OutOfRange { token, queue_size: self.slots.len() }),
            Some(v) => v.as_ref().ok_or(PoolError::NotLent { token }),
        }
    }

    /// Takes back the value lent under `token`. Errors: as [`get`](Self::get).
    pub fn take(&mut self, token: u16) -> Result<T, PoolError> {
        let queue_size = self.slots.len();
        let v = self
            .slots
            .get_mut(usize::from(token))
            .ok_or(PoolError::OutOfRange { token, queue_size })?
            .take()
            .ok_or(PoolError::NotLent { token })?;
        self.count -= 1;
        Ok(v)
    }

    /// Number of values lent.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether nothing is lent.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Transmit buffers: up to `capacity` buffers of `buf_len` bytes, allocated on first use, each either free
/// or lent to the device under a token with the length that was queued.
#[derive(Debug)]
pub struct TxPool {
    buffers: Vec<Vec<u8>>,
    free: Vec<usize>,
    capacity: usize,
    buf_len: usize,
    lent: InFlight<(usize, usize)>,
}

impl TxPool {
    /// A pool for a queue of `queue_size` descriptors, with at most `buffers` buffers (at most `queue_size`) of
    /// `buf_len` bytes, allocated as they are first needed.
    pub fn new(queue_size: usize, buffers: usize, buf_len: usize) -> Self {
        let capacity = buffers.min(queue_size);
        Self { buffers: Vec::new(), free: Vec::new(), capacity, buf_len, lent: InFlight::new(queue_size) }
    }

    /// Size of each buffer (bytes).
    pub fn buf_len(&self) -> usize {
        self.buf_len
    }

    /// Takes a free buffer (allocating one while below capacity); `None` when all are lent, or when memory is
    /// critical (`libos::mem::pressure`) or the heap cannot spare a new one (the frame waits as if all were lent,
    /// rather than the VM ending).
    pub fn take_free(&mut self) -> Option<usize> {
        if let Some(i) = self.free.pop() {
            return Some(i);
        }
        if self.buffers.len() < self.capacity
            && libos::mem::pressure::current() < libos::mem::pressure::Pressure::Critical
        {
            return self.allocate();
        }
        None
    }

    /// One more buffer, its index; `None` when the heap cannot spare it.
    fn allocate(&mut self) -> Option<usize> {
        let buf = libos::mem::try_zeroed(self.buf_len)?;
        self.buffers.try_reserve(1).ok()?;
        self.buffers.push(buf);
        Some(self.buffers.len() - 1)
    }

    /// Allocates up to `n` buffers now (within the capacity), so the first frames never wait for an allocation
    /// that memory pressure refuses later: at the smallest `-m`, the listening socket made for a SYN took the
    /// last bytes above the critical mark and the SYN-ACK found no buffer. A buffer the heap cannot spare is left
    /// for [`take_free`](Self::take_free) to try again.
    pub fn preallocate(&mut self, n: usize) {
        while self.buffers.len() < self.capacity.min(n) {
            let Some(i) = self.allocate() else { return };
            self.free.push(i);
        }
    }

    /// Returns a buffer taken with [`take_free`](Self::take_free) but not lent.
    pub fn put_back(&mut self, index: usize) {
        self.free.push(index);
    }

    /// Buffers free or still to be allocated.
    pub fn free_count(&self) -> usize {
        self.free.len() + (self.capacity - self.buffers.len())
    }

    /// Whether a buffer is free or can still be allocated.
    pub fn has_free(&self) -> bool {
        !self.free.is_empty() || self.buffers.len() < self.capacity
    }

    /// Buffer `index`, whole.
    pub fn buffer_mut(&mut self, index: usize) -> &mut [u8] {
        &mut self.buffers[index]
    }

    /// The first `len` bytes of buffer `index` (what was queued).
    pub fn queued(&self, index: usize, len: usize) -> &[u8] {
        &self.buffers[index][..len]
    }

    /// Records buffer `index` as lent under `token` with `len` bytes queued. Errors: [`PoolError`]; the
    /// buffer stays taken (the caller puts it back or treats the queue as broken).
    pub fn lend(&mut self, token: u16, index: usize, len: usize) -> Result<(), PoolError> {
        self.lent.insert(token, (index, len)).map_err(|(e, _)| e)
    }

    /// The `(buffer index, queued length)` lent under `token`, still lent. Errors: [`PoolError`].
    pub fn lent(&self, token: u16) -> Result<(usize, usize), PoolError> {
        self.lent.get(token).copied()
    }

    /// Ends the loan under `token`: the buffer becomes free again. Errors: [`PoolError`].
    pub fn complete(&mut self, token: u16) -> Result<(), PoolError> {
        let (index, _) = self.lent.take(token)?;
        self.free.push(index);
        Ok(())
    }

    /// Number of buffers lent to the device.
    pub fn in_flight(&self) -> usize {
        self.lent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_rejects_bad_tokens() {
        let mut t = InFlight::new(4);
        assert_eq!(t.insert(1, "a"), Ok(()));
        assert_eq!(t.insert(1, "b"), Err((PoolError::InUse { token: 1 }, "b")));
        assert_eq!(t.insert(4, "c"), Err((PoolError::OutOfRange { token: 4, queue_size: 4 }, "c")));
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(1), Ok(&"a"));
        assert_eq!(t.take(0), Err(PoolError::NotLent { token: 0 }));
        assert_eq!(t.take(0xffff), Err(PoolError::OutOfRange { token: 0xffff, queue_size: 4 }));
        assert_eq!(t.take(1), Ok("a"));
        assert_eq!(t.take(1), Err(PoolError::NotLent { token: 1 }));
        assert!(t.is_empty());
    }

    #[test]
    fn tx_pool_lifecycle() {
        let mut p = TxPool::new(2, 2, 64);
        let a = p.take_free().unwrap();
        let b = p.take_free().unwrap();
        assert_ne!(a, b);
        assert_eq!(p.take_free(), None, "capacity is the queue size");
        assert!(!p.has_free());
        p.buffer_mut(a)[..3].copy_from_slice(b"abc");
        p.lend(7, a, 3).unwrap_err(); // token beyond queue size 2
        p.lend(0, a, 3).unwrap();
        assert_eq!(p.lend(0, b, 5), Err(PoolError::InUse { token: 0 }));
        p.put_back(b);
        assert!(p.has_free());
        assert_eq!(p.lent(0), Ok((a, 3)));
        assert_eq!(p.queued(a, 3), b"abc");
        assert_eq!(p.in_flight(), 1);
        assert_eq!(p.complete(1), Err(PoolError::NotLent { token: 1 }));
        p.complete(0).unwrap();
        assert_eq!(p.in_flight(), 0);
        let mut got = [p.take_free().unwrap(), p.take_free().unwrap()];
        got.sort();
        assert_eq!(got, [0, 1], "both buffers reused, none allocated anew");
        assert_eq!(p.take_free(), None);
        assert_eq!(p.buf_len(), 64);
    }

    #[test]
    fn preallocated_buffers_are_there_before_any_frame() {
        let mut p = TxPool::new(8, 4, 64);
        p.preallocate(2);
        assert_eq!((p.buffers.len(), p.free.len()), (2, 2), "allocated and free");
        p.preallocate(10);
        assert_eq!(p.buffers.len(), 4, "never beyond the capacity");
        let mut got = [0; 4].map(|_| p.take_free().unwrap());
        got.sort();
        assert_eq!(got, [0, 1, 2, 3], "handed out without allocating");
        assert_eq!(p.take_free(), None);
    }
}
