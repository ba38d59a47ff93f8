//! Shared pieces of Zirvium's fuzz targets (`fuzz_targets/*.rs`): a cursor that turns fuzzer bytes into
//! values ([`Input`]), the HTTP driver and response checker ([`http`]), a filesystem walker ([`tree`]), and a blocking poll for the futures
//! the block drivers return ([`poll_with`]). Everything here runs on the host only.

pub mod boot;
pub mod http;
pub mod pages;
pub mod tree;

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

/// Reads values from the front of fuzzer input; past the end every read gives zeros (so any input is valid).
#[derive(Clone, Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// The next `N` bytes, zero-padded at the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    /// One byte (zero past the end).
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A little-endian u16 (zero past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian u32 (zero past the end).
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian u64 (zero past the end).
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A value below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.u16()) % n
    }

    /// A length-prefixed (one byte) slice.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u8());
        self.bytes(n)
    }
}

/// xorshift64 (Marsaglia 2003): deterministic split points and sizes derived from a fuzzer-chosen seed.
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Polls `f` with a no-op waker; while it is pending, runs `step` (the device model's next move) and polls again,
/// at most `steps` times. `None`: still pending (the caller drops it, as a task that gives up would).
pub fn poll_with<T>(f: impl Future<Output = T>, steps: usize, mut step: impl FnMut()) -> Option<T> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..=steps {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        step();
    }
    None
}

/// Runs `f` on a `'static` copy of `data` (for parsers that keep borrowing their input for the life of the
/// kernel, such as the command line and the initrd), then frees the copy.
///
/// # Safety
/// Nothing borrowed from the slice may outlive `f`: `f` must drop everything it built from it.
pub unsafe fn with_static<R>(data: &[u8], f: impl FnOnce(&'static [u8]) -> R) -> R {
    let raw: *mut [u8] = Box::into_raw(data.to_vec().into_boxed_slice());
    // SAFETY: `raw` is a live allocation until it is freed below; the caller keeps every borrow inside `f`.
    let r = f(unsafe { &*raw });
    // SAFETY: allocated by `Box::into_raw` above and no longer borrowed (the caller's promise).
    drop(unsafe { Box::from_raw(raw) });
    r
}

/// The disk pattern's period (bytes): byte `at` of the disk is `at * 13 % 251`.
const DISK_PERIOD: usize = 251;

/// Two periods of the disk pattern from byte 0: any run of at most one period starts inside the first.
static DISK_PATTERN: [u8; 2 * DISK_PERIOD] = {
    let mut p = [0u8; 2 * DISK_PERIOD];
    let mut i = 0;
    while i < p.len() {
        p[i] = (i * 13 % DISK_PERIOD) as u8;
        i += 1;
    }
    p
};

/// Disk contents of the block device models, `out.len()` bytes from byte `at` on: byte `at` of the disk is
/// `at * 13 % 251`. Copied from a table a period at a time (a division per byte was most of a device target's
/// execution).
pub fn disk_bytes(at: u64, out: &mut [u8]) {
    let from = (at % DISK_PERIOD as u64) as usize;
    for chunk in out.chunks_mut(DISK_PERIOD) {
        chunk.copy_from_slice(&DISK_PATTERN[from..from + chunk.len()]);
    }
}

/// Whether `buf` holds the disk contents ([`disk_bytes`]) from byte `at` on.
pub fn is_disk(at: u64, buf: &[u8]) -> bool {
    let from = (at % DISK_PERIOD as u64) as usize;
    buf.chunks(DISK_PERIOD).all(|chunk| chunk == &DISK_PATTERN[from..from + chunk.len()])
}

/// Event channel operations for the Xen front-end targets: sends succeed and do nothing (the fuzzer plays the
/// backend between driver calls instead of in the notification).
pub struct XenEvents;

impl platform_xen::evtchn::EventChannelOps for XenEvents {
    fn send(&self, _port: platform_xen::evtchn::EvtchnPort) -> Result<(), platform_xen::abi::XenErrno> {
        Ok(())
    }
    fn alloc_unbound(
        &self,
        _remote: platform_xen::abi::DomId,
    ) -> Result<platform_xen::evtchn::EvtchnPort, platform_xen::abi::XenErrno> {
        Ok(platform_xen::evtchn::EvtchnPort(9))
    }
    fn close(&self, _port: platform_xen::evtchn::EvtchnPort) -> Result<(), platform_xen::abi::XenErrno> {
        Ok(())
    }
}
