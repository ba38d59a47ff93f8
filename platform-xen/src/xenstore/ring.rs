//! The xenstore ring page (`struct xenstore_domain_interface`): a 1 KiB request ring we produce into and a
//! 1 KiB response ring xenstored produces into, each with free-running u32 indices. Our own indices (`req_prod`,
//! `rsp_cons`) are private copies; the daemon's (`req_cons`, `rsp_prod`) are checked on every read.
//! Source: Xen `xen/include/public/io/xs_wire.h` (`XENSTORE_RING_SIZE`, `MASK_XENSTORE_IDX`, field order),
//! `docs/misc/xenstore-ring.txt`.
#![forbid(unsafe_code)]

use crate::shared::{mb, SharedPage};
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::Ordering;

/// `XENSTORE_RING_SIZE` (bytes per direction).
pub const RING_SIZE: usize = 1024;
const REQ: usize = 0;
const RSP: usize = RING_SIZE;
const REQ_CONS: usize = 2 * RING_SIZE;
const REQ_PROD: usize = REQ_CONS + 4;
const RSP_CONS: usize = REQ_CONS + 8;
const RSP_PROD: usize = REQ_CONS + 12;

/// xenstored broke the ring protocol (`XENSTORE_ERROR_RINGIDX` in the header's terms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingIndexError {
    /// Which ring: "request" or "response".
    pub ring: &'static str,
    /// Producer index.
    pub prod: u32,
    /// Consumer index.
    pub cons: u32,
}

impl fmt::Display for RingIndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "xenstore {} ring indices prod {} cons {} are inconsistent (consumer ahead, or more than {RING_SIZE} bytes behind)",
            self.ring, self.prod, self.cons
        )
    }
}

/// Our end of the xenstore ring page.
pub struct XsRing {
    page: Arc<SharedPage>,
    req_prod: u32,
    /// The daemon's `req_cons` as last seen: it only moves forward, up to `req_prod`.
    req_cons_seen: u32,
    rsp_cons: u32,
}

impl XsRing {
    /// Takes over the ring page, continuing from the indices it holds.
    pub fn new(page: Arc<SharedPage>) -> Self {
        let req_prod = page.u32_at(REQ_PROD).load(Ordering::Acquire);
        let req_cons_seen = page.u32_at(REQ_CONS).load(Ordering::Acquire);
        let rsp_cons = page.u32_at(RSP_CONS).load(Ordering::Acquire);
        Self { page, req_prod, req_cons_seen, rsp_cons }
    }

    /// Copies as much of `data` as fits into the request ring and publishes it; returns the bytes taken.
    /// Errors: [`RingIndexError`] when `req_cons` moved backwards or past our producer.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, RingIndexError> {
        let cons = self.page.u32_at(REQ_CONS).load(Ordering::Acquire);
        if cons.wrapping_sub(self.req_cons_seen) > self.req_prod.wrapping_sub(self.req_cons_seen) {
            return Err(RingIndexError { ring: "request", prod: self.req_prod, cons });
        }
        self.req_cons_seen = cons;
        let used = self.req_prod.wrapping_sub(cons) as usize;
        let n = (RING_SIZE - used).min(data.len());
        for (i, &b) in data[..n].iter().enumerate() {
            let idx = self.req_prod.wrapping_add(i as u32) as usize & (RING_SIZE - 1);
            self.page.write(REQ + idx, &[b]);
        }
        if n > 0 {
            mb(); // data before the producer index
            self.req_prod = self.req_prod.wrapping_add(n as u32);
            self.page.u32_at(REQ_PROD).store(self.req_prod, Ordering::Release);
        }
        Ok(n)
    }

    /// Copies available response bytes into `buf` (each byte read once) and consumes them; returns the count.
    /// Errors: [`RingIndexError`] when `rsp_prod` is more than a ring's size ahead of our consumer.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingIndexError> {
        let prod = self.page.u32_at(RSP_PROD).load(Ordering::Acquire);
        let avail = prod.wrapping_sub(self.rsp_cons) as usize;
        if avail > RING_SIZE {
            return Err(RingIndexError { ring: "response", prod, cons: self.rsp_cons });
        }
        let n = avail.min(buf.len());
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let idx = self.rsp_cons.wrapping_add(i as u32) as usize & (RING_SIZE - 1);
            let mut one = [0u8];
            self.page.read(RSP + idx, &mut one);
            *b = one[0];
        }
        if n > 0 {
            mb(); // bytes read before the daemon may overwrite them
            self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
            self.page.u32_at(RSP_CONS).store(self.rsp_cons, Ordering::Release);
        }
        Ok(n)
    }
}

/// The daemon side of the ring page, for tests: reads requests, writes responses.
#[cfg(test)]
pub(crate) mod daemon {
    use super::*;

    pub struct DaemonRing {
        pub page: Arc<SharedPage>,
    }

    impl DaemonRing {
        pub fn read_requests(&self) -> alloc::vec::Vec<u8> {
            let prod = self.page.u32_at(REQ_PROD).load(Ordering::Acquire);
            let mut cons = self.page.u32_at(REQ_CONS).load(Ordering::Acquire);
            let mut out = alloc::vec::Vec::new();
            while cons != prod {
                let mut b = [0u8];
                self.page.read(REQ + (cons as usize & (RING_SIZE - 1)), &mut b);
                out.push(b[0]);
                cons = cons.wrapping_add(1);
            }
            self.page.u32_at(REQ_CONS).store(cons, Ordering::Release);
            out
        }

        /// Writes as much of `data` as fits; returns the bytes written.
        pub fn write_responses(&self, data: &[u8]) -> usize {
            let cons = self.page.u32_at(RSP_CONS).load(Ordering::Acquire);
            let mut prod = self.page.u32_at(RSP_PROD).load(Ordering::Acquire);
            let mut n = 0;
            while n < data.len() && (prod.wrapping_sub(cons) as usize) < RING_SIZE {
                self.page.write(RSP + (prod as usize & (RING_SIZE - 1)), &data[n..n + 1]);
                prod = prod.wrapping_add(1);
                n += 1;
            }
            self.page.u32_at(RSP_PROD).store(prod, Ordering::Release);
            n
        }

        pub fn set_rsp_prod(&self, v: u32) {
            self.page.u32_at(RSP_PROD).store(v, Ordering::Release);
        }

        pub fn set_req_cons(&self, v: u32) {
            self.page.u32_at(REQ_CONS).store(v, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::daemon::DaemonRing;
    use super::*;

    #[test]
    fn bytes_cross_both_rings_with_wrap() {
        let page = Arc::new(SharedPage::new().expect("page"));
        let d = DaemonRing { page: page.clone() };
        let mut r = XsRing::new(page);
        let data: alloc::vec::Vec<u8> = (0..1500u32).map(|i| i as u8).collect();
        assert_eq!(r.write(&data), Ok(RING_SIZE));
        assert_eq!(r.write(&data), Ok(0), "full");
        let got = d.read_requests();
        assert_eq!(got, data[..RING_SIZE]);
        assert_eq!(r.write(&data[RING_SIZE..]), Ok(1500 - RING_SIZE));
        assert_eq!(d.read_requests(), data[RING_SIZE..]);
        assert_eq!(d.write_responses(&data), RING_SIZE);
        let mut buf = [0u8; 700];
        assert_eq!(r.read(&mut buf), Ok(700));
        assert_eq!(buf[..], data[..700]);
        assert_eq!(d.write_responses(&data[RING_SIZE..]), 476);
        let mut rest = [0u8; 2000];
        assert_eq!(r.read(&mut rest), Ok(RING_SIZE - 700 + 476));
    }

    #[test]
    fn hostile_indices() {
        let page = Arc::new(SharedPage::new().expect("page"));
        let d = DaemonRing { page: page.clone() };
        let mut r = XsRing::new(page);
        d.set_rsp_prod(2000);
        let mut buf = [0u8; 10];
        assert_eq!(r.read(&mut buf), Err(RingIndexError { ring: "response", prod: 2000, cons: 0 }));
        d.set_rsp_prod(0);
        d.set_req_cons(u32::MAX - 3); // "consumed" bytes we never produced
        assert_eq!(r.write(b"x").unwrap_err().ring, "request");
        assert!(alloc::format!("{}", RingIndexError { ring: "request", prod: 0, cons: 9 }).contains("inconsistent"));
    }
}
