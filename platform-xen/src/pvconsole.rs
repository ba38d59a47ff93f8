//! The Xen PV console: the `out` ring of `struct xencons_interface` on the page named by
//! `HVM_PARAM_CONSOLE_PFN`, drained by xenconsoled in dom0 (to `xl console` and its log) after a notification on
//! `HVM_PARAM_CONSOLE_EVTCHN`. Used as a console sink; input is not read.
//! Source: Xen `xen/include/public/io/console.h` (`in[1024]`, `out[2048]`, `in_cons`, `in_prod`, `out_cons`,
//! `out_prod`, `MASK_XENCONS_IDX`), `hvm/params.h`.
#![forbid(unsafe_code)]

use crate::shared::{wmb, SharedPage};
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::Ordering;

/// Size of the `in` ring (bytes).
pub const IN_SIZE: usize = 1024;
/// Size of the `out` ring (bytes).
pub const OUT_SIZE: usize = 2048;
/// Offset of `out`.
const OUT: usize = IN_SIZE;
/// Offset of `out_cons` (after `in`, `out`, `in_cons`, `in_prod`).
const OUT_CONS: usize = IN_SIZE + OUT_SIZE + 8;
/// Offset of `out_prod`.
const OUT_PROD: usize = OUT_CONS + 4;

/// The console daemon broke the ring protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingError {
    /// `out_prod` we wrote.
    pub prod: u32,
    /// `out_cons` the daemon wrote.
    pub cons: u32,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PV console: out_cons {} is not within {} bytes behind out_prod {}; console disabled",
            self.cons, OUT_SIZE, self.prod
        )
    }
}

/// Producer side of the console's `out` ring. The producer index is kept privately (never read back from the
/// shared page); only `out_cons` comes from the other side and is checked.
pub struct ConsoleRing {
    page: Arc<SharedPage>,
    prod: u32,
    broken: Option<RingError>,
}

impl ConsoleRing {
    /// Takes over the ring page, continuing from the `out_prod` it holds (the toolstack starts it at 0).
    pub fn new(page: Arc<SharedPage>) -> Self {
        let prod = page.u32_at(OUT_PROD).load(Ordering::Acquire);
        Self { page, prod, broken: None }
    }

    /// Bytes written but not yet consumed by the daemon. Errors: a hostile `out_cons`.
    pub fn unconsumed(&mut self) -> Result<usize, RingError> {
        if let Some(e) = self.broken {
            return Err(e);
        }
        let cons = self.page.u32_at(OUT_CONS).load(Ordering::Acquire);
        let used = self.prod.wrapping_sub(cons) as usize;
        if used > OUT_SIZE {
            let e = RingError { prod: self.prod, cons };
            self.broken = Some(e);
            return Err(e);
        }
        Ok(used)
    }

    /// Copies as much of `data` as fits into the ring and publishes it; returns the bytes taken (0 when full).
    /// Errors: a hostile `out_cons` (the ring is then never written again).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, RingError> {
        let space = OUT_SIZE - self.unconsumed()?;
        let n = space.min(data.len());
        for (i, &b) in data[..n].iter().enumerate() {
            let idx = self.prod.wrapping_add(i as u32) as usize & (OUT_SIZE - 1);
            self.page.write(OUT + idx, &[b]);
        }
        if n > 0 {
            wmb(); // the daemon sees the bytes before the new producer index
            self.prod = self.prod.wrapping_add(n as u32);
            self.page.u32_at(OUT_PROD).store(self.prod, Ordering::Release);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(page: &SharedPage, out: &mut alloc::vec::Vec<u8>) {
        let prod = page.u32_at(OUT_PROD).load(Ordering::Acquire);
        let mut cons = page.u32_at(OUT_CONS).load(Ordering::Acquire);
        while cons != prod {
            let mut b = [0u8];
            page.read(OUT + (cons as usize & (OUT_SIZE - 1)), &mut b);
            out.push(b[0]);
            cons = cons.wrapping_add(1);
        }
        page.u32_at(OUT_CONS).store(cons, Ordering::Release);
    }

    #[test]
    fn writes_wrap_and_stop_when_full() {
        let page = Arc::new(SharedPage::new().expect("page"));
        // Start near the u32 wrap to exercise index arithmetic.
        page.u32_at(OUT_PROD).store(u32::MAX - 5, Ordering::Relaxed);
        page.u32_at(OUT_CONS).store(u32::MAX - 5, Ordering::Relaxed);
        let peer = page.clone();
        let mut ring = ConsoleRing::new(page);
        let text: alloc::vec::Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(ring.write(&text), Ok(OUT_SIZE));
        assert_eq!(ring.write(b"x"), Ok(0), "full");
        let mut got = alloc::vec::Vec::new();
        drain(&peer, &mut got);
        assert_eq!(ring.write(&text[OUT_SIZE..]), Ok(3000 - OUT_SIZE));
        drain(&peer, &mut got);
        assert_eq!(got, text);
        assert_eq!(ring.unconsumed(), Ok(0));
    }

    #[test]
    fn hostile_consumer_index_disables_the_ring() {
        let page = Arc::new(SharedPage::new().expect("page"));
        let peer = page.clone();
        let mut ring = ConsoleRing::new(page);
        assert_eq!(ring.write(b"hello"), Ok(5));
        peer.u32_at(OUT_CONS).store(100, Ordering::Release); // ahead of what we produced
        let e = ring.write(b"more").unwrap_err();
        assert_eq!(e, RingError { prod: 5, cons: 100 });
        peer.u32_at(OUT_CONS).store(5, Ordering::Release);
        assert_eq!(ring.write(b"more"), Err(e), "stays disabled");
        assert!(alloc::format!("{e}").contains("console disabled"));
    }
}
