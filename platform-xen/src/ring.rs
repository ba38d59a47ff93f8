//! The front end of a Xen shared I/O ring (`io/ring.h`): a one-page `sring` header (`req_prod`, `req_event`,
//! `rsp_prod`, `rsp_event`, 48 bytes of padding) followed by a power-of-two array of fixed-size slots that hold
//! requests (written by us) and responses (written by the backend) in place. Producer/consumer indices are
//! free-running `u32`s; the slot is `index & (size - 1)`.
//!
//! Our indices (`req_prod_pvt`, `rsp_cons`) are private and never read back from the page; the backend's
//! `rsp_prod` is checked against what we have outstanding before use, and each response is copied out of the
//! page exactly once. Source: Xen `xen/include/public/io/ring.h` (`DEFINE_RING_TYPES`, `__RING_SIZE`,
//! `SHARED_RING_INIT`, `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`, `RING_FINAL_CHECK_FOR_RESPONSES`).
#![forbid(unsafe_code)]

use crate::shared::{mb, wmb, SharedPage, PAGE_SIZE};
use alloc::sync::Arc;
use core::fmt;
use core::sync::atomic::Ordering;

pub mod slot;

/// Offset of `req_prod`.
const REQ_PROD: usize = 0;
/// Offset of `req_event`.
const REQ_EVENT: usize = 4;
/// Offset of `rsp_prod`.
const RSP_PROD: usize = 8;
/// Offset of `rsp_event`.
const RSP_EVENT: usize = 12;
/// Offset of the first slot (`offsetof(sring, ring)`).
pub const HEADER: usize = 64;

/// Slots in a one-page ring whose slot (the request/response union) is `slot_size` bytes: the largest power of
/// two that fits (`__RING_SIZE`). E.g. 256 for netif (12 and 8 bytes), 32 for blkif (112 bytes).
pub const fn ring_size(slot_size: usize) -> u32 {
    let n = (PAGE_SIZE - HEADER) / slot_size;
    if n == 0 {
        0
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

/// The backend broke the ring protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingError {
    /// The backend's `rsp_prod`.
    pub rsp_prod: u32,
    /// Our `rsp_cons`.
    pub rsp_cons: u32,
    /// Requests we have pushed.
    pub req_prod: u32,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "response producer index {} is not between our consumer index {} and our request producer index {}",
            self.rsp_prod, self.rsp_cons, self.req_prod
        )
    }
}

/// The front end of one ring of `SLOT`-byte slots.
pub struct FrontRing<const SLOT: usize> {
    page: Arc<SharedPage>,
    size: u32,
    req_prod_pvt: u32,
    /// Requests made visible to the backend (`req_prod` as we last wrote it).
    req_pushed: u32,
    rsp_cons: u32,
}

impl<const SLOT: usize> FrontRing<SLOT> {
    /// Initialises the shared header on `page` (`SHARED_RING_INIT`: producers 0, events 1) and returns the front
    /// end (`FRONT_RING_INIT`).
    pub fn new(page: Arc<SharedPage>) -> Self {
        page.fill(0, PAGE_SIZE, 0);
        page.u32_at(REQ_EVENT).store(1, Ordering::Relaxed);
        page.u32_at(RSP_EVENT).store(1, Ordering::Relaxed);
        wmb();
        Self { page, size: ring_size(SLOT), req_prod_pvt: 0, req_pushed: 0, rsp_cons: 0 }
    }

    /// Slots in the ring.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The ring page (to grant to the backend).
    pub fn page(&self) -> &Arc<SharedPage> {
        &self.page
    }

    /// Slots free for new requests (`RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        self.size - self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Our request producer index (`req_prod_pvt`): the ring index the next queued request takes.
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// Our response consumer index (`rsp_cons`): the ring index of the next response to consume.
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// Requests queued or pushed whose responses have not been consumed.
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes `request` (at most `SLOT` bytes; the rest of the slot is zeroed) into the next slot, not yet
    /// visible to the backend. Returns false when the ring is full.
    pub fn queue_request(&mut self, request: &[u8]) -> bool {
        if self.free_requests() == 0 || request.len() > SLOT {
            return false;
        }
        let off = HEADER + (self.req_prod_pvt & (self.size - 1)) as usize * SLOT;
        self.page.write(off, request);
        self.page.fill(off + request.len(), SLOT - request.len(), 0);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        true
    }

    /// Whether requests are queued but not pushed.
    pub fn has_unpushed(&self) -> bool {
        self.req_prod_pvt != self.req_pushed
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes the queued requests and returns whether the backend
    /// asked to be notified for them (its `req_event` lies within the newly pushed range).
    pub fn push_requests(&mut self) -> bool {
        let old = self.req_pushed;
        let new = self.req_prod_pvt;
        if old == new {
            return false;
        }
        wmb(); // requests before the producer index
        self.page.u32_at(REQ_PROD).store(new, Ordering::Release);
        self.req_pushed = new;
        mb(); // producer index before reading req_event
        let event = self.page.u32_at(REQ_EVENT).load(Ordering::Acquire);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// The backend's `rsp_prod`, checked: it must lie in `[rsp_cons, req_pushed]` (no response without a request).
    fn rsp_prod(&self) -> Result<u32, RingError> {
        let prod = self.page.u32_at(RSP_PROD).load(Ordering::Acquire);
        if prod.wrapping_sub(self.rsp_cons) > self.req_pushed.wrapping_sub(self.rsp_cons) {
            return Err(RingError { rsp_prod: prod, rsp_cons: self.rsp_cons, req_prod: self.req_pushed });
        }
        Ok(prod)
    }

    /// Copies the next unconsumed response out of the ring (once) and consumes it. Errors: a hostile
    /// `rsp_prod` ([`RingError`]).
    pub fn next_response(&mut self) -> Result<Option<[u8; SLOT]>, RingError> {
        let prod = self.rsp_prod()?;
        if prod == self.rsp_cons {
            return Ok(None);
        }
        let mut out = [0u8; SLOT];
        let off = HEADER + (self.rsp_cons & (self.size - 1)) as usize * SLOT;
        self.page.read(off, &mut out);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(out))
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: when nothing is unconsumed, asks for an event at the next response
    /// (`rsp_event = rsp_cons + 1`) and checks again to close the race. Returns whether responses are waiting.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.rsp_prod()? != self.rsp_cons {
            return Ok(true);
        }
        self.page.u32_at(RSP_EVENT).store(self.rsp_cons.wrapping_add(1), Ordering::Release);
        mb();
        Ok(self.rsp_prod()? != self.rsp_cons)
    }
}

/// A backend peer for tests, written from `ring.h`: consumes requests and produces responses on the same page.
/// A test-only host model: built for unit tests and with the `host-model` feature (the fuzz targets).
#[cfg(any(test, feature = "host-model"))]
pub mod backend {
    use super::*;

    /// The backend's end of a shared ring of `SLOT`-byte entries (`BACK_RING` in `ring.h`).
    pub struct BackRing<const SLOT: usize> {
        /// The shared ring page.
        pub page: Arc<SharedPage>,
        /// Entries in the ring (a power of two).
        pub size: u32,
        /// `req_cons`: the next request to consume.
        pub req_cons: u32,
        /// `rsp_prod_pvt`: responses queued but not yet published.
        pub rsp_prod_pvt: u32,
    }

    impl<const SLOT: usize> BackRing<SLOT> {
        /// `BACK_RING_INIT` over `page`.
        pub fn new(page: Arc<SharedPage>) -> Self {
            Self { page, size: ring_size(SLOT), req_cons: 0, rsp_prod_pvt: 0 }
        }

        /// The next request the frontend published, if any (`RING_COPY_REQUEST`).
        pub fn next_request(&mut self) -> Option<[u8; SLOT]> {
            let prod = self.page.u32_at(REQ_PROD).load(Ordering::Acquire);
            if prod == self.req_cons {
                return None;
            }
            let mut out = [0u8; SLOT];
            self.page.read(HEADER + (self.req_cons & (self.size - 1)) as usize * SLOT, &mut out);
            self.req_cons = self.req_cons.wrapping_add(1);
            Some(out)
        }

        /// Writes `rsp` into the next response slot without publishing it.
        pub fn queue_response(&mut self, rsp: &[u8]) {
            let off = HEADER + (self.rsp_prod_pvt & (self.size - 1)) as usize * SLOT;
            self.page.write(off, rsp);
            self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        }

        /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`.
        pub fn push_responses(&mut self) -> bool {
            let old = self.page.u32_at(RSP_PROD).load(Ordering::Acquire);
            let new = self.rsp_prod_pvt;
            self.page.u32_at(RSP_PROD).store(new, Ordering::Release);
            let event = self.page.u32_at(RSP_EVENT).load(Ordering::Acquire);
            new.wrapping_sub(event) < new.wrapping_sub(old)
        }

        /// Asks to be notified at the next request (`RING_FINAL_CHECK_FOR_REQUESTS`).
        pub fn want_next_request(&mut self) {
            self.page.u32_at(REQ_EVENT).store(self.req_cons.wrapping_add(1), Ordering::Release);
        }

        /// Writes a raw `rsp_prod` (hostile peers).
        pub fn set_rsp_prod(&mut self, v: u32) {
            self.page.u32_at(RSP_PROD).store(v, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::backend::BackRing;
    use super::*;

    #[test]
    fn ring_sizes_match_the_headers() {
        assert_eq!(ring_size(12), 256, "netif tx");
        assert_eq!(ring_size(8), 256, "netif rx");
        assert_eq!(ring_size(112), 32, "blkif");
        assert_eq!(ring_size(5000), 0);
    }

    #[test]
    fn requests_responses_and_notification_rules() {
        let page = Arc::new(SharedPage::new().expect("page"));
        let mut front = FrontRing::<8>::new(page.clone());
        let mut back = BackRing::<8>::new(page);
        assert_eq!((front.size(), front.free_requests()), (256, 256));
        assert!(front.queue_request(&[1, 2, 3]));
        assert!(!front.queue_request(&[0; 9]), "larger than a slot");
        // req_event starts at 1: the first push notifies.
        assert!(front.push_requests());
        assert!(!front.push_requests(), "nothing new");
        assert!(front.queue_request(&[4]));
        // The backend has not asked for more (req_event still 1): no notification.
        assert!(!front.push_requests());
        assert_eq!(back.next_request(), Some([1, 2, 3, 0, 0, 0, 0, 0]));
        assert_eq!(back.next_request().map(|r| r[0]), Some(4));
        assert_eq!(back.next_request(), None);
        back.want_next_request();
        assert!(front.queue_request(&[5]));
        assert!(front.push_requests(), "backend asked for the next one");
        assert_eq!(front.next_response(), Ok(None));
        back.queue_response(&[9; 8]);
        assert!(back.push_responses(), "rsp_event starts at 1");
        assert_eq!(front.next_response(), Ok(Some([9; 8])));
        assert_eq!(front.final_check_for_responses(), Ok(false));
        back.queue_response(&[8; 8]);
        assert!(back.push_responses(), "front asked for the next response");
        assert_eq!(front.final_check_for_responses(), Ok(true));
        assert_eq!(front.outstanding(), 2, "three requests pushed, one response consumed");
    }

    #[test]
    fn full_ring_and_index_wrap() {
        let page = Arc::new(SharedPage::new().expect("page"));
        let mut front = FrontRing::<112>::new(page.clone());
        let mut back = BackRing::<112>::new(page);
        for round in 0..300u32 {
            while front.queue_request(&round.to_le_bytes()) {}
            assert_eq!(front.free_requests(), 0);
            front.push_requests();
            while let Some(r) = back.next_request() {
                back.queue_response(&r);
            }
            back.push_responses();
            let mut n = 0;
            while let Some(r) = front.next_response().expect("valid") {
                assert_eq!(r[..4], round.to_le_bytes());
                n += 1;
            }
            assert_eq!(n, 32);
        }
    }

    #[test]
    fn hostile_response_producer_is_rejected() {
        let page = Arc::new(SharedPage::new().expect("page"));
        let mut front = FrontRing::<8>::new(page.clone());
        let mut back = BackRing::<8>::new(page);
        assert!(front.queue_request(&[1]));
        // Queued but not pushed: the backend may not answer it yet.
        back.set_rsp_prod(1);
        let e = front.next_response().unwrap_err();
        assert_eq!(e, RingError { rsp_prod: 1, rsp_cons: 0, req_prod: 0 });
        front.push_requests();
        assert!(front.next_response().expect("one response").is_some());
        // Far ahead, and behind (wrapped): both refused.
        back.set_rsp_prod(1000);
        assert!(front.next_response().is_err());
        back.set_rsp_prod(u32::MAX);
        assert!(front.final_check_for_responses().is_err());
        assert!(alloc::format!("{e}").contains("response producer index 1"));
    }
}
